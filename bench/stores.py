"""The stores the ledger benchmarks run on: throwaway ones that count transactions, and
large valid ledgers built once and cached (SQLite files under bench/out/, PostgreSQL
schemas kept in the test database)."""

from __future__ import annotations

import os
import sys
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from bench.report import OUT
from proctor.ledger import entries, merkle
from proctor.ledger.checkpoint import Checkpoint, sign_checkpoint
from proctor.ledger.note import Signer
from proctor.storage.interface import Batch, Store, StoredCheckpoint
from proctor.storage.postgres import PostgresStore
from proctor.storage.sqlite import SqliteStore

PG_URL = os.environ.get(
    "PROCTOR_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
ORIGIN = "bench.proctor.test/ledger"
KIND = "decision"
CHECKPOINT_EVERY = 1000
FORMAT = "v1"
"""Bump when ``decision`` changes, so cached ledgers are built again."""


def decision(number: int) -> dict[str, Any]:
    """Return the fields of a realistic decision entry (about 580 bytes encoded)."""
    return {
        "task": f"tsk_{number % 9973:08d}",
        "agent": "agent:invoice-bot",
        "user": "alice@example.com",
        "action": "http.request",
        "decision": "allow",
        "policies": ["pol_payments_small", "pol_vendor_allowlist", "pol_hours"],
        "request": {
            "method": "POST",
            "url": f"https://api.example.com/v1/payments?ref={number}",
            "headers": {
                "content-type": "application/json",
                "user-agent": "invoice-bot/1.4",
                "idempotency-key": f"{number:032x}",
            },
            "body": '{"amount":12000,"currency":"EUR","vendor":"acme-gmbh",'
            '"invoice":"INV-2026-0042"}',
        },
    }


@dataclass
class Tally:
    """How many transactions and entries a store committed."""

    batches: int = 0
    entries: int = 0

    def snapshot(self) -> tuple[int, int]:
        return self.batches, self.entries


class CountingSqliteStore(SqliteStore):
    """A SQLite store that tallies its append transactions."""

    tally: Tally

    def append(self, batch: Batch) -> None:
        super().append(batch)
        self.tally.batches += 1
        self.tally.entries += len(batch.entries)


class CountingPostgresStore(PostgresStore):
    """A PostgreSQL store that tallies its append transactions."""

    tally: Tally

    def append(self, batch: Batch) -> None:
        super().append(batch)
        self.tally.batches += 1
        self.tally.entries += len(batch.entries)


def postgres_reachable() -> str | None:
    """Return why the PostgreSQL server cannot be used, or None when it can."""
    try:
        psycopg.connect(PG_URL, connect_timeout=3).close()
    except psycopg.Error as exc:
        return f"postgresql unreachable at {PG_URL}: {exc}"

    return None


def postgres_version() -> str:
    """Return the server's version, e.g. ``PostgreSQL 15.20``."""
    with psycopg.connect(PG_URL) as connection:
        row = connection.execute("SHOW server_version").fetchone()

    return f"PostgreSQL {row[0].split()[0]}" if row else "PostgreSQL"


@contextmanager
def fresh_sqlite(tally: Tally) -> Iterator[Store]:
    """An empty counting SQLite store in a temporary folder on the repo's disk."""
    OUT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=OUT) as folder:
        store = CountingSqliteStore(Path(folder) / "ledger.db")
        store.tally = tally
        with closing(store):
            yield store


@contextmanager
def fresh_postgres(tally: Tally) -> Iterator[Store]:
    """An empty counting PostgreSQL store in a schema dropped afterwards."""
    schema = f"proctor_bench_{uuid.uuid4().hex[:12]}"
    try:
        store = CountingPostgresStore(PG_URL, schema=schema)
        store.tally = tally
        with closing(store):
            yield store
    finally:
        drop_schema(schema)


def drop_schema(schema: str) -> None:
    """Drop a PostgreSQL schema and everything in it, if it exists."""
    with psycopg.connect(PG_URL, autocommit=True) as admin:
        admin.execute(
            sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema))
        )


def build(store: Store, signer: Signer, size: int) -> None:
    """Fill an empty store with a valid ledger of ``size`` decision entries.

    Entries go in through ``store.append`` in batches of CHECKPOINT_EVERY with the
    subtree hashes they complete, each batch followed by its signed checkpoint, as
    the Ledger itself would write them with ``checkpoint_every = 1000``.
    """
    edge = merkle.CompactRange()
    while edge.size < size:
        start, stamp = edge.size, entries.now()
        end = min(size, start + CHECKPOINT_EVERY)
        rows, nodes = [], []
        for index in range(start, end):
            data = entries.encode(index, stamp, KIND, decision(index))
            rows.append(data)
            nodes.extend(edge.append(merkle.leaf_hash(data)))
        store.append(Batch(start, rows, nodes))
        note = sign_checkpoint(Checkpoint(ORIGIN, end, edge.root()), signer)
        store.add_checkpoint(StoredCheckpoint(end, note))
        if end % 100_000 == 0:
            print(f"  built {end:,} of {size:,} entries", file=sys.stderr)


@dataclass(frozen=True)
class CachedLedger:
    """A complete ledger kept between runs, and the key that verifies it."""

    backend: str
    size: int
    vkey: str
    path: Path | None = None
    schema: str | None = None

    def open(self) -> Store:
        """Open the cached ledger's store."""
        if self.path is not None:
            return SqliteStore(self.path)
        return PostgresStore(PG_URL, schema=self.schema or "")


def cached_sqlite(size: int) -> CachedLedger:
    """Return the cached SQLite ledger of ``size`` entries, building it if missing."""
    path = OUT / f"ledger-{FORMAT}-{size}.db"
    vkey = path.with_suffix(".vkey")
    if not (path.exists() and vkey.exists()):
        print(f"building a {size:,}-entry sqlite ledger in {path}", file=sys.stderr)
        OUT.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".partial")
        for leftover in OUT.glob(partial.name + "*"):
            leftover.unlink()
        signer = Signer.generate(ORIGIN)
        with closing(SqliteStore(partial)) as store:
            build(store, signer, size)
        # Closing the last connection folds the WAL into the file, so one rename moves
        # the whole ledger; the key is written last and marks the cache complete.
        partial.rename(path)
        vkey.write_text(signer.verifier_key_string() + "\n", encoding="ascii")

    return CachedLedger("sqlite", size, vkey.read_text(encoding="ascii").strip(), path)


def is_complete(cached: CachedLedger) -> bool:
    """Whether the cached ledger still holds all its entries and its last checkpoint."""
    with closing(cached.open()) as store:
        latest = store.latest_checkpoint()
        return (
            store.size() == cached.size
            and latest is not None
            and (latest.size == cached.size)
        )


def cached_postgres(size: int) -> CachedLedger:
    """Return the cached PostgreSQL ledger of ``size`` entries, building it if missing.

    The ledger lives in schema ``proctor_bench_ledger_<format>_<size>`` of the test
    database; its verifier key is kept under bench/out/.
    """
    schema = f"proctor_bench_ledger_{FORMAT}_{size}"
    vkey = OUT / f"postgres-{schema}.vkey"
    if vkey.exists():
        cached = CachedLedger(
            "postgres", size, vkey.read_text(encoding="ascii").strip(), schema=schema
        )
        if is_complete(cached):
            return cached
        vkey.unlink()
    print(f"building a {size:,}-entry postgresql ledger in {schema}", file=sys.stderr)
    drop_schema(schema)
    signer = Signer.generate(ORIGIN)
    with closing(PostgresStore(PG_URL, schema=schema)) as store:
        build(store, signer, size)
    OUT.mkdir(parents=True, exist_ok=True)
    vkey.write_text(signer.verifier_key_string() + "\n", encoding="ascii")

    return CachedLedger("postgres", size, signer.verifier_key_string(), schema=schema)
