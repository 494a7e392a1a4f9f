"""Crash safety: a writer process killed with SIGKILL in the middle of a stream of
appends loses no acknowledged entry and leaves a ledger that verifies and carries on.

The writer is a real subprocess (``crash_writer.py``) on a real home, over SQLite and
over PostgreSQL (a schema of its own per test, named through the environment).
"""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import psycopg
import pytest
from psycopg import sql

from proctor.config import DATABASE_SCHEMA_ENV, DATABASE_URL_ENV
from proctor.home import Home, init
from proctor.ledger import entries, merkle
from proctor.ledger.verify import Report, verify_ledger
from proctor.storage.interface import Store

from .conftest import Cli
from .crash_writer import KIND, fields_digest

pytestmark = pytest.mark.slow

WRITER = Path(__file__).with_name("crash_writer.py")
PG_URL = os.environ.get(
    "PROCTOR_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
ORIGIN = "proctor.test/crash"
SCHEDULE = {"checkpoint_every": "100", "checkpoint_interval": "0.5"}
"""Checkpoints often enough that the writer is killed after some were signed."""
THREADS = 8
WAIT = 15.0
"""Seconds to wait for the writer's acknowledgements before giving up."""


@dataclass(frozen=True)
class Ack:
    """One acknowledged entry, as the writer printed it."""

    index: int
    leaf_hash: str
    digest: str


class AckReader:
    """Collect the writer's acknowledgement lines on a thread of its own."""

    def __init__(self, stream: IO[str]) -> None:
        self.acks: list[Ack] = []
        self._stream = stream
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        # A line is one write of under PIPE_BUF bytes, so it is never torn; a line
        # without its newline could only come from a writer that died mid-write.
        for line in self._stream:
            if not line.endswith("\n"):
                break
            index, leaf_hash, digest = line.split()
            with self._changed:
                self.acks.append(Ack(int(index), leaf_hash, digest))
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    def wait_for(self, count: int, timeout: float) -> bool:
        """Wait until ``count`` acknowledgements arrived; False on timeout or EOF."""
        with self._changed:
            return (
                self._changed.wait_for(
                    lambda: len(self.acks) >= count or not self._thread.is_alive(),
                    timeout,
                )
                and len(self.acks) >= count
            )

    def finish(self) -> list[Ack]:
        """Read what the dead writer left in the pipe and return every ack."""
        self._thread.join(WAIT)

        return list(self.acks)


@pytest.fixture
def postgres_schema(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A fresh PostgreSQL schema for this test, set as the ledger's URL and schema."""
    schema = f"proctor_crash_{uuid.uuid4().hex[:12]}"
    try:
        admin = psycopg.connect(PG_URL, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        pytest.fail(f"postgresql test server unreachable at {PG_URL}: {exc}")
    monkeypatch.setenv(DATABASE_URL_ENV, PG_URL)
    monkeypatch.setenv(DATABASE_SCHEMA_ENV, schema)
    with admin:
        try:
            yield schema
        finally:
            admin.execute(
                sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(
                    sql.Identifier(schema)
                )
            )


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def crash_home(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Home:
    """A fresh home on each backend that signs a checkpoint every 100 entries."""
    if request.param == "postgres":
        request.getfixturevalue("postgres_schema")
    else:
        monkeypatch.delenv(DATABASE_URL_ENV, raising=False)
    home = init(Home(tmp_path / "home"), origin=ORIGIN)
    text = home.config_file.read_text(encoding="utf-8")
    for key, value in SCHEDULE.items():
        text, found = re.subn(rf"^{key} = .*$", f"{key} = {value}", text, flags=re.M)
        assert found == 1, f"{key} not in the home's proctor.toml"
    home.config_file.write_text(text, encoding="utf-8")

    return home


def start_writer(home: Home, log: IO[str]) -> subprocess.Popen[str]:
    """Start the writer process on ``home``; its stderr goes to ``log``.

    It inherits this process's environment, PROCTOR_DATABASE_URL and _SCHEMA included.
    """
    return subprocess.Popen(
        [sys.executable, str(WRITER), str(home.path), str(THREADS)],
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
    )


def has_checkpoint(home: Home) -> bool:
    """Whether the live ledger holds a signed checkpoint yet."""
    with closing(home.open_store()) as store:
        return store.latest_checkpoint() is not None


def kill_mid_stream(home: Home, tmp_path: Path, seed: int) -> list[Ack]:
    """Run the writer, SIGKILL it at a moment drawn from ``seed``, return its acks."""
    rng = random.Random(seed)
    target = rng.randrange(300, 900)
    with (tmp_path / "writer.err").open("w+") as log:
        writer = start_writer(home, log)
        assert writer.stdout is not None
        reader = AckReader(writer.stdout)
        try:
            ready = reader.wait_for(target, WAIT)
            while ready and not has_checkpoint(home):
                ready = reader.wait_for(len(reader.acks) + 50, WAIT)
            # Kill just after a fresh ack, while the next batches are in flight.
            ready = ready and reader.wait_for(
                len(reader.acks) + rng.randint(1, 50), WAIT
            )
            time.sleep(rng.uniform(0, 0.002))
        finally:
            writer.send_signal(signal.SIGKILL)
            writer.wait(WAIT)
        acks = reader.finish()
        writer.stdout.close()
        log.seek(0)
        assert ready, f"writer stopped after {len(acks)} acks: {log.read()[-2000:]}"

    assert writer.returncode == -signal.SIGKILL
    return acks


def check_acknowledged(store: Store, acks: list[Ack]) -> None:
    """Every acknowledged entry is stored at its index with the same content."""
    size = store.size()
    for ack in acks:
        assert ack.index < size, f"acknowledged entry {ack.index} is lost"
        data = store.entry(ack.index)
        entry = entries.decode(data)
        fields = {k: v for k, v in entry.items() if k not in entries.ENVELOPE}

        assert merkle.leaf_hash(data).hex() == ack.leaf_hash
        assert (entry["index"], entry["type"]) == (ack.index, KIND)
        assert fields_digest(fields) == ack.digest


def check_dense(store: Store) -> None:
    """The stored indexes run from 0 to the size with no gap or repeat."""
    indexes = [entries.decode(data)["index"] for data in store.entries()]

    assert indexes == list(range(store.size()))


def verify_home(home: Home) -> Report:
    """Verify the home's whole ledger offline with its public key."""
    with closing(home.open_store()) as store:
        return verify_ledger(store, [home.verifier()], origin=ORIGIN)


def append_more(home: Home, count: int) -> list[int]:
    """Append ``count`` entries through a new Ledger from four threads."""
    ledger = home.open_ledger()
    try:
        with ThreadPoolExecutor(4) as pool:
            receipts = pool.map(
                lambda step: ledger.append("test.after", {"step": step}), range(count)
            )
            indexes = [receipt.index for receipt in receipts]
    finally:
        ledger.close()
        ledger.store.close()

    return indexes


class TestSigkillMidStream:
    @pytest.mark.parametrize("seed", [1, 2, 3])
    def test_no_acknowledged_entry_is_lost(
        self, crash_home: Home, tmp_path: Path, cli: Cli, seed: int
    ) -> None:
        """After SIGKILL every ack is stored, the ledger verifies and carries on."""
        acks = kill_mid_stream(crash_home, tmp_path, seed)
        with closing(crash_home.open_store()) as store:
            check_acknowledged(store, acks)
            check_dense(store)
            size = store.size()
        report = verify_home(crash_home)
        result = cli("verify", "--home", str(crash_home.path))

        assert len({ack.index for ack in acks}) == len(acks) >= 300
        assert report.size == size
        assert report.checkpoints >= 1, "no automatic checkpoint before the kill"
        assert result.code == 0, result.err
        assert f"OK: {size} entries verified" in result.out

        indexes = append_more(crash_home, 40)
        after = verify_home(crash_home)

        assert sorted(indexes) == list(range(size, size + 40))
        assert after.size == size + 40
        assert after.signed_size == size + 40, "close signs what is left"
