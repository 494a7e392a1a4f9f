"""Measure ledger store appends per second, for batches of 1 and 500 entries.

Run with ``.venv/bin/python bench/store_append.py``; PostgreSQL is reached through
``PROCTOR_TEST_DATABASE_URL`` (default: the local test database) in a throwaway schema.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

import psycopg
from psycopg import sql

from proctor.storage.interface import Batch, Store
from proctor.storage.postgres import PostgresStore
from proctor.storage.sqlite import SqliteStore

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/test"
ENTRY_BYTES = 600


def completed(start: int, end: int) -> list[tuple[int, int]]:
    """The subtrees that leaves ``[start, end)`` complete."""
    keys = []
    for leaf in range(start, end):
        level, index = 0, leaf
        keys.append((level, index))
        while index % 2 == 1:
            level, index = level + 1, index // 2
            keys.append((level, index))

    return keys


def make_batch(start: int, count: int) -> Batch:
    """A batch of realistic size: entries of about 600 bytes and their subtrees."""
    entries = [
        b'{"index":%d,"type":"call.completed","pad":"%s"}' % (index, b"x" * ENTRY_BYTES)
        for index in range(start, start + count)
    ]
    nodes = [
        (level, index, hashlib.sha256(b"%d/%d" % (level, index)).digest())
        for level, index in completed(start, start + count)
    ]

    return Batch(start, entries, nodes)


def measure(store: Store, batch_size: int, seconds: float) -> tuple[float, float]:
    """Append for about ``seconds`` of store time; return entries/s and batches/s.

    Only ``append`` is timed: building entries and hashes is the caller's work.
    """
    batches, spent = 0, 0.0
    while spent < seconds:
        batch = make_batch(store.size(), batch_size)
        began = time.perf_counter()
        store.append(batch)
        spent += time.perf_counter() - began
        batches += 1

    return batches * batch_size / spent, batches / spent


@contextmanager
def sqlite_store() -> Iterator[Store]:
    with (
        tempfile.TemporaryDirectory() as folder,
        SqliteStore(Path(folder) / "ledger.db") as store,
    ):
        yield store


@contextmanager
def postgres_store(url: str) -> Iterator[Store]:
    schema = f"proctor_bench_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(url, autocommit=True) as admin:
        try:
            with PostgresStore(url, schema=schema) as store:
                yield store
        finally:
            admin.execute(
                sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(
                    sql.Identifier(schema)
                )
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=3.0, help="per measurement")
    parser.add_argument(
        "--url", default=os.environ.get("PROCTOR_TEST_DATABASE_URL", DEFAULT_URL)
    )
    arguments = parser.parse_args()
    stores: dict[str, Callable[[], AbstractContextManager[Store]]] = {
        "sqlite": sqlite_store,
        "postgres": lambda: postgres_store(arguments.url),
    }
    print(f"{'store':<10}{'batch':>7}{'entries/s':>12}{'batches/s':>12}")
    for name, opener in stores.items():
        for batch_size in (1, 500):
            with opener() as store:
                entries, batches = measure(store, batch_size, arguments.seconds)
            print(f"{name:<10}{batch_size:>7}{entries:>12,.0f}{batches:>12,.1f}")


if __name__ == "__main__":
    main()
