"""Fixtures shared by every test: where the conformance vectors live."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from hypothesis import HealthCheck, settings

from proctor.home import Home, init

REPO = Path(__file__).resolve().parents[1]

# Properties are judged by what they assert, never by the clock: on a loaded
# two-core machine, generating examples can be slow without anything being wrong.
settings.register_profile(
    "proctor", deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile("proctor")


@pytest.fixture(scope="session")
def vectors() -> Path:
    """The shared conformance vectors; a missing folder fails the run, never skips."""
    folder = Path(os.environ.get("PROCTOR_VECTORS", REPO.parent / "shared" / "vectors"))
    if not (folder / "README.md").is_file():
        pytest.fail(f"conformance vectors not found at {folder}; set PROCTOR_VECTORS")
    return folder


POSTGRES_URL = os.environ.get(
    "PROCTOR_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test"
)


@pytest.fixture
def postgres_schema() -> Iterator[tuple[str, str]]:
    """A fresh schema name on the real PostgreSQL server, dropped afterwards.

    Fails, never skips, when the server cannot be reached.
    """
    try:
        admin = psycopg.connect(POSTGRES_URL, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        pytest.fail(f"PostgreSQL is unreachable at {POSTGRES_URL}: {exc}")
    schema = f"proctor_test_{secrets.token_hex(6)}"
    try:
        yield POSTGRES_URL, schema
    finally:
        admin.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        admin.close()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_home(request: pytest.FixtureRequest, tmp_path: Path) -> Home:
    """A fresh home on SQLite, and again on PostgreSQL in its own schema."""
    home = init(Home(tmp_path / "home"), origin="proctor.test/home")
    if request.param == "postgres":
        url, schema = request.getfixturevalue("postgres_schema")
        text = home.config_file.read_text(encoding="utf-8")
        table = f'[ledger]\ndatabase_url = "{url}"\ndatabase_schema = "{schema}"\n'
        home.config_file.write_text(text.replace("[ledger]\n", table, 1))
        home.open_store().close()
    return home
