"""The store contract, run over every backend: SQLite in a temporary folder and the
PostgreSQL server named by PROCTOR_TEST_DATABASE_URL, in a fresh schema per test."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from proctor.errors import ConflictError, StoreError
from proctor.storage.interface import Batch, NodeKey, Store, StoredCheckpoint
from proctor.storage.postgres import PostgresStore
from proctor.storage.sqlite import SqliteStore

PG_URL = os.environ.get(
    "PROCTOR_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
UNREACHABLE_PG_URL = "postgresql://postgres@127.0.0.1:1/test"

ZERO = "00" * 32
"""A 32-byte hash of zeros, in hex for SQL literals."""

# Changes that would rewrite history; each backend's database must refuse them itself.
TAMPERING = (
    "update entries",
    "delete entries",
    "empty entries",
    "replace entries",
    "update nodes",
    "delete nodes",
    "empty nodes",
    "replace nodes",
    "update checkpoints",
    "delete checkpoints",
    "empty checkpoints",
    "replace checkpoints",
    "rewind head",
)
COMMON_TAMPERING = {
    "update entries": "UPDATE entries SET body = body || body WHERE idx = 0",
    "delete entries": "DELETE FROM entries WHERE idx = 0",
    "update nodes": "UPDATE nodes SET hash = hash WHERE level = 0",
    "delete nodes": "DELETE FROM nodes WHERE level = 1",
    "update checkpoints": "UPDATE checkpoints SET note = note || note",
    "delete checkpoints": "DELETE FROM checkpoints WHERE size > 0",
}
SQLITE_TAMPERING = COMMON_TAMPERING | {
    "empty entries": "DELETE FROM entries",
    "replace entries": "INSERT OR REPLACE INTO entries (idx, body) VALUES (0, x'00')",
    "empty nodes": "DELETE FROM nodes",
    "replace nodes": f"REPLACE INTO nodes (level, idx, hash) VALUES (0, 0, x'{ZERO}')",
    "empty checkpoints": "DELETE FROM checkpoints",
    "replace checkpoints": "REPLACE INTO checkpoints (size, note) VALUES (2, x'00')",
    "rewind head": "DELETE FROM entries WHERE idx = (SELECT max(idx) FROM entries)",
}
POSTGRES_TAMPERING = COMMON_TAMPERING | {
    "empty entries": "TRUNCATE entries",
    "replace entries": "INSERT INTO entries (idx, body) VALUES (0, '\\x00') "
    "ON CONFLICT (idx) DO UPDATE SET body = excluded.body",
    "empty nodes": "TRUNCATE nodes",
    "replace nodes": f"INSERT INTO nodes (level, idx, hash) VALUES (0, 0, '\\x{ZERO}') "
    "ON CONFLICT (level, idx) DO UPDATE SET hash = excluded.hash",
    "empty checkpoints": "TRUNCATE checkpoints",
    "replace checkpoints": "INSERT INTO checkpoints (size, note) VALUES (2, '\\x00') "
    "ON CONFLICT (size) DO UPDATE SET note = excluded.note",
    "rewind head": "UPDATE head SET size = 0",
}


@dataclass
class Backend:
    """One store backend as the suite drives it, with raw access to its database."""

    opener: Callable[[], Store]
    broken: Callable[[], Store]
    raw: Callable[[str], None]
    hold_write: Callable[[], AbstractContextManager[None]]
    refused: type[Exception]
    driver_error: type[Exception]
    tampering: dict[str, str]
    stale_version: str
    opened: list[Store] = field(default_factory=list)

    def open(self) -> Store:
        store = self.opener()
        self.opened.append(store)

        return store

    def close_all(self) -> None:
        for store in self.opened:
            store.close()


def sqlite_backend(path: Path) -> Backend:
    """The SQLite backend on a file, with raw connections of its own."""

    def raw(statement: str) -> None:
        connection = sqlite3.connect(path, isolation_level=None)
        try:
            connection.execute(statement)
        finally:
            connection.close()

    @contextmanager
    def hold_write() -> Iterator[None]:
        connection = sqlite3.connect(path, isolation_level=None)
        try:
            connection.execute("BEGIN IMMEDIATE")
            connection.execute(
                "INSERT INTO entries (idx, body) VALUES (1000000, x'00')"
            )
            yield
        finally:
            if connection.in_transaction:
                connection.execute("ROLLBACK")
            connection.close()

    return Backend(
        opener=lambda: SqliteStore(path),
        broken=lambda: SqliteStore(path.parent / "missing" / "ledger.db"),
        raw=raw,
        hold_write=hold_write,
        refused=sqlite3.IntegrityError,
        driver_error=sqlite3.Error,
        tampering=SQLITE_TAMPERING,
        stale_version="PRAGMA user_version = 99",
    )


def connect_admin() -> psycopg.Connection[tuple[object, ...]]:
    """Connect to the test server or fail the test, naming the URL."""
    try:
        return psycopg.connect(PG_URL, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        pytest.fail(
            f"postgresql test server unreachable at {PG_URL}: {exc}; start it or "
            "set PROCTOR_TEST_DATABASE_URL"
        )


def postgres_backend(schema: str) -> Backend:
    """The PostgreSQL backend in one schema, with raw sessions of its own."""

    @contextmanager
    def session() -> Iterator[psycopg.Connection[tuple[object, ...]]]:
        with psycopg.connect(PG_URL, autocommit=True) as connection:
            connection.execute(
                sql.SQL("SET search_path TO {}").format(sql.Identifier(schema))
            )
            yield connection

    def raw(statement: str) -> None:
        with session() as connection:
            connection.execute(statement.encode())

    @contextmanager
    def hold_write() -> Iterator[None]:
        with session() as connection, connection.transaction(force_rollback=True):
            connection.execute("SELECT size FROM head FOR UPDATE")
            connection.execute("INSERT INTO entries (idx, body) VALUES (1000000, '')")
            yield

    return Backend(
        opener=lambda: PostgresStore(PG_URL, schema=schema),
        broken=lambda: PostgresStore(UNREACHABLE_PG_URL, schema=schema),
        raw=raw,
        hold_write=hold_write,
        refused=psycopg.errors.RaiseException,
        driver_error=psycopg.Error,
        tampering=POSTGRES_TAMPERING,
        stale_version="UPDATE schema_version SET version = 99",
    )


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    """Each backend in turn, on fresh storage that is removed afterwards."""
    if request.param == "sqlite":
        backend = sqlite_backend(tmp_path / "ledger.db")
        yield backend
        backend.close_all()
        return
    schema = f"proctor_test_{uuid.uuid4().hex[:16]}"
    with connect_admin() as admin:
        backend = postgres_backend(schema)
        try:
            yield backend
        finally:
            backend.close_all()
            admin.execute(
                sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(
                    sql.Identifier(schema)
                )
            )


@pytest.fixture
def store(backend: Backend) -> Store:
    """A freshly created, empty store."""
    return backend.open()


def body(index: int, **fields: object) -> bytes:
    """An entry as canonical JSON bytes, carrying its own index."""
    return json.dumps(
        {"index": index, **fields}, sort_keys=True, separators=(",", ":")
    ).encode()


def completed(start: int, end: int) -> list[NodeKey]:
    """The subtrees that leaves ``[start, end)`` complete, as (level, index)."""
    keys = []
    for leaf in range(start, end):
        level, index = 0, leaf
        keys.append((level, index))
        while index % 2 == 1:
            level, index = level + 1, index // 2
            keys.append((level, index))

    return keys


def digest(key: NodeKey) -> bytes:
    """A stand-in 32-byte hash for a subtree; stores treat hashes as opaque."""
    return hashlib.sha256(f"{key[0]}/{key[1]}".encode()).digest()


def make_batch(start: int, count: int, **fields: object) -> Batch:
    """A batch of ``count`` entries from ``start`` with every subtree they complete."""
    entries = [body(start + offset, **fields) for offset in range(count)]
    nodes = [
        (level, index, digest((level, index)))
        for level, index in completed(start, start + count)
    ]

    return Batch(start, entries, nodes)


def fill(store: Store, count: int, *, per_batch: int = 500) -> None:
    """Append ``count`` entries in batches."""
    while (start := store.size()) < count:
        store.append(make_batch(start, min(per_batch, count - start)))


def snapshot(
    store: Store,
) -> tuple[int, list[bytes], dict[NodeKey, bytes], list[StoredCheckpoint]]:
    """Everything a store holds, to compare before and after."""
    size = store.size()

    return (
        size,
        list(store.entries()),
        store.nodes(completed(0, size)),
        list(store.checkpoints()),
    )


def append_until_written(
    store: Store, writer: str, count: int, barrier: threading.Barrier
) -> None:
    """Append ``count`` entries in small batches, rebuilt after each conflict."""
    barrier.wait()
    written = 0
    while written < count:
        start = store.size()
        size = min(1 + written % 3, count - written)
        entries = [
            body(start + offset, writer=writer, n=written + offset)
            for offset in range(size)
        ]
        nodes = [
            (level, index, digest((level, index)))
            for level, index in completed(start, start + size)
        ]
        try:
            store.append(Batch(start, entries, nodes))
        except ConflictError:
            continue
        written += size


def assert_one_total_order(store: Store, writers: list[str], per_writer: int) -> None:
    """Every writer's entries are stored once each, at dense indexes from 0."""
    total = len(writers) * per_writer
    decoded = [json.loads(data) for data in store.entries()]

    assert store.size() == total
    assert [entry["index"] for entry in decoded] == list(range(total))
    assert Counter((entry["writer"], entry["n"]) for entry in decoded) == Counter(
        (writer, n) for writer in writers for n in range(per_writer)
    )
    assert store.nodes(completed(0, total)) == {
        key: digest(key) for key in completed(0, total)
    }


class TestEmptyStore:
    def test_size_is_zero(self, store: Store) -> None:
        """A new store holds no entries."""
        assert store.size() == 0

    def test_no_checkpoint(self, store: Store) -> None:
        """A new store has no checkpoint, latest or otherwise."""
        assert store.latest_checkpoint() is None
        assert list(store.checkpoints()) == []

    def test_no_entries_or_nodes(self, store: Store) -> None:
        """A new store streams nothing and knows no subtree."""
        assert list(store.entries()) == []
        assert store.nodes([(0, 0), (1, 0)]) == {}


class TestAppend:
    def test_entries_read_back(self, store: Store) -> None:
        """Entries of two batches come back in order, as a stream and one by one."""
        first, second = make_batch(0, 3), make_batch(3, 2)
        store.append(first)
        store.append(second)

        assert store.size() == 5
        assert list(store.entries()) == [*first.entries, *second.entries]
        assert [store.entry(index) for index in range(5)] == [
            *first.entries,
            *second.entries,
        ]

    def test_nodes_read_back(self, store: Store) -> None:
        """Every subtree hash a batch carries is stored under its key."""
        store.append(make_batch(0, 7))

        assert store.nodes(completed(0, 7)) == {
            key: digest(key) for key in completed(0, 7)
        }

    def test_empty_batch_at_head(self, store: Store) -> None:
        """A batch with no entries at the head changes nothing."""
        store.append(make_batch(0, 2))
        store.append(Batch(2, [], []))

        assert store.size() == 2

    def test_large_entry(self, store: Store) -> None:
        """An entry of the largest allowed size is stored byte for byte."""
        large = body(0, pad="x" * 65_000)
        store.append(Batch(0, [large], [(0, 0, digest((0, 0)))]))

        assert store.entry(0) == large


class TestConflict:
    @pytest.mark.parametrize("start", [0, 2, 4, 10])
    def test_wrong_start_refused(self, store: Store, start: int) -> None:
        """A batch that does not start at the current size is refused."""
        store.append(make_batch(0, 3))
        before = snapshot(store)

        with pytest.raises(
            ConflictError, match=f"batch starts at {start} but the ledger holds 3"
        ):
            store.append(make_batch(start, 2))

        assert snapshot(store) == before

    def test_conflict_is_a_store_error(self, store: Store) -> None:
        """Callers that only catch StoreError still see conflicts."""
        with pytest.raises(StoreError, match="batch starts at 1"):
            store.append(make_batch(1, 1))


class TestEntriesRange:
    def test_bounds(self, store: Store) -> None:
        """A range yields exactly the entries from start up to, not including, end."""
        fill(store, 10)

        assert list(store.entries(3, 7)) == [body(index) for index in range(3, 7)]

    def test_empty_range(self, store: Store) -> None:
        """A range whose start equals its end yields nothing."""
        fill(store, 10)

        assert list(store.entries(4, 4)) == []

    def test_open_end(self, store: Store) -> None:
        """Without an end the stream runs to the ledger's end."""
        fill(store, 10)

        assert list(store.entries(7)) == [body(index) for index in range(7, 10)]

    def test_end_past_size(self, store: Store) -> None:
        """A range reaching past the ledger stops at its end."""
        fill(store, 10)

        assert list(store.entries(8, 50)) == [body(8), body(9)]
        assert list(store.entries(20)) == []

    def test_streams_across_chunks(self, store: Store) -> None:
        """Streams longer than one read chunk stay dense and in order."""
        fill(store, 2_345)

        assert list(store.entries()) == [body(index) for index in range(2_345)]
        assert list(store.entries(999, 2_001)) == [
            body(index) for index in range(999, 2_001)
        ]

    def test_stream_is_lazy(self, store: Store) -> None:
        """A stream is an iterator that yields before the whole range is read."""
        fill(store, 1_500)
        stream = store.entries()

        assert next(stream) == body(0)
        assert isinstance(stream, Iterator)

    @pytest.mark.parametrize(("start", "end"), [(-1, None), (5, 2)])
    def test_bad_range_refused(self, store: Store, start: int, end: int | None) -> None:
        """A negative or reversed range is refused."""
        with pytest.raises(StoreError, match="entry range must satisfy"):
            store.entries(start, end)

    def test_missing_entry(self, store: Store) -> None:
        """Asking for one entry past the end is an error naming the index."""
        fill(store, 3)

        with pytest.raises(StoreError, match="no entry at index 3"):
            store.entry(3)


class TestNodes:
    def test_missing_keys_absent(self, store: Store) -> None:
        """Keys that are not stored are left out of the answer."""
        store.append(make_batch(0, 3))

        assert store.nodes([(0, 2), (1, 1), (0, 9), (2, 0)]) == {(0, 2): digest((0, 2))}

    def test_many_keys_in_one_call(self, store: Store) -> None:
        """Any number of keys, repeated or missing, are answered together."""
        fill(store, 64)
        wanted = [*completed(0, 64), *completed(0, 8), (7, 0), (0, 64), (3, 99)]

        assert store.nodes(wanted) == {key: digest(key) for key in completed(0, 64)}

    def test_no_keys(self, store: Store) -> None:
        """No keys give an empty answer."""
        fill(store, 4)

        assert store.nodes([]) == {}

    def test_level_range(self, store: Store) -> None:
        """One level's stored hashes in a range, by index; the rest are absent."""
        fill(store, 64)

        assert store.level(0, 60, 70) == {i: digest((0, i)) for i in range(60, 64)}
        assert store.level(3, 2, 5) == {i: digest((3, i)) for i in range(2, 5)}
        assert store.level(7, 0, 1) == {}
        assert store.level(1, 5, 5) == {}


class TestCheckpoints:
    def test_ascending(self, store: Store) -> None:
        """Checkpoints stream by ascending size and the largest is the latest."""
        fill(store, 5)
        for size in (0, 2, 5):
            store.add_checkpoint(StoredCheckpoint(size, f"note {size}".encode()))

        assert [stored.size for stored in store.checkpoints()] == [0, 2, 5]
        assert store.latest_checkpoint() == StoredCheckpoint(5, b"note 5")

    @pytest.mark.parametrize("size", [2, 3])
    def test_size_must_grow(self, store: Store, size: int) -> None:
        """A checkpoint no larger than the latest is refused as a conflict."""
        fill(store, 5)
        store.add_checkpoint(StoredCheckpoint(3, b"first"))

        with pytest.raises(
            ConflictError, match=f"checkpoint size {size} does not grow past"
        ):
            store.add_checkpoint(StoredCheckpoint(size, b"second"))

        assert list(store.checkpoints()) == [StoredCheckpoint(3, b"first")]

    def test_size_within_ledger(self, store: Store) -> None:
        """A checkpoint larger than the ledger is refused."""
        fill(store, 2)

        with pytest.raises(
            StoreError, match="checkpoint size 3 exceeds the ledger's 2"
        ):
            store.add_checkpoint(StoredCheckpoint(3, b"note"))

        assert store.latest_checkpoint() is None


class TestAppendOnly:
    @pytest.mark.parametrize("change", TAMPERING)
    def test_database_refuses(
        self, backend: Backend, store: Store, change: str
    ) -> None:
        """Raw SQL that would rewrite history is refused by the database itself."""
        fill(store, 5)
        store.add_checkpoint(StoredCheckpoint(2, b"two"))
        store.add_checkpoint(StoredCheckpoint(5, b"five"))
        before = snapshot(store)

        with pytest.raises(backend.refused, match="append-only ledger"):
            backend.raw(backend.tampering[change])

        assert snapshot(store) == before


class TestConcurrentAppends:
    def test_threads_share_one_store(self, store: Store) -> None:
        """Threads racing on one store leave a dense order, nothing lost or doubled."""
        writers = [f"thread-{number}" for number in range(4)]
        barrier = threading.Barrier(len(writers))
        with ThreadPoolExecutor(len(writers)) as pool:
            futures = [
                pool.submit(append_until_written, store, writer, 30, barrier)
                for writer in writers
            ]
            for future in futures:
                future.result()

        assert_one_total_order(store, writers, 30)

    def test_replicas_keep_one_order(self, backend: Backend, store: Store) -> None:
        """Two instances on one database, as two replicas, keep one total order."""
        replicas = [store, backend.open()]
        writers = [
            f"replica-{number}-{thread}" for number in range(2) for thread in range(2)
        ]
        barrier = threading.Barrier(len(writers))
        with ThreadPoolExecutor(len(writers)) as pool:
            futures = [
                pool.submit(
                    append_until_written, replicas[position // 2], writer, 30, barrier
                )
                for position, writer in enumerate(writers)
            ]
            for future in futures:
                future.result()

        assert_one_total_order(replicas[1], writers, 30)
        assert snapshot(replicas[0]) == snapshot(replicas[1])

    def test_reads_do_not_wait_for_a_writer(
        self, backend: Backend, store: Store
    ) -> None:
        """While another connection holds a write open, reads answer at once."""
        fill(store, 3)
        with backend.hold_write(), ThreadPoolExecutor(1) as pool:
            seen = pool.submit(snapshot, store).result(timeout=5)

        assert seen[0] == 3
        assert seen[1] == [body(index) for index in range(3)]


class TestReopen:
    def test_everything_kept(self, backend: Backend, store: Store) -> None:
        """A store opened again holds the same entries, nodes and checkpoints."""
        fill(store, 9)
        store.add_checkpoint(StoredCheckpoint(9, b"nine"))
        before = snapshot(store)
        store.close()

        assert snapshot(backend.open()) == before

    def test_closed_store_refuses(self, store: Store) -> None:
        """A closed store raises StoreError rather than reconnecting."""
        store.close()

        with pytest.raises(StoreError, match="is closed"):
            store.size()
        with pytest.raises(StoreError, match="is closed"):
            store.append(make_batch(0, 1))

    def test_unknown_schema_version_refused(
        self, backend: Backend, store: Store
    ) -> None:
        """A store written by another schema version is not opened."""
        store.close()
        backend.raw(backend.stale_version)

        with pytest.raises(StoreError, match="schema version 99, expected 1"):
            backend.open()


class TestErrors:
    def test_constraint_violation_has_cause(
        self, backend: Backend, store: Store
    ) -> None:
        """A hash of the wrong length fails the append, the driver's error as cause."""
        with pytest.raises(StoreError, match="append failed") as caught:
            store.append(Batch(0, [body(0)], [(0, 0, b"short")]))

        assert isinstance(caught.value.__cause__, backend.driver_error)
        assert not isinstance(caught.value, ConflictError)
        assert store.size() == 0
        assert list(store.entries()) == []

    def test_duplicate_node_has_cause(self, backend: Backend, store: Store) -> None:
        """A subtree stored twice fails the append, which writes nothing."""
        store.append(make_batch(0, 2))
        duplicate = Batch(
            2, [body(2)], [(0, 2, digest((0, 2))), (1, 0, digest((1, 0)))]
        )

        with pytest.raises(StoreError, match="append failed") as caught:
            store.append(duplicate)

        assert isinstance(caught.value.__cause__, backend.driver_error)
        assert store.size() == 2
        assert store.nodes([(0, 2)]) == {}

    def test_store_usable_after_failure(self, store: Store) -> None:
        """A failed append leaves the store ready for the next one."""
        with pytest.raises(StoreError, match="append failed"):
            store.append(Batch(0, [body(0)], [(0, 0, b"short")]))
        store.append(make_batch(0, 1))

        assert store.size() == 1

    def test_unopenable_store(self, backend: Backend) -> None:
        """A store that cannot be reached raises StoreError with the driver's error."""
        with pytest.raises(StoreError, match="cannot") as caught:
            backend.broken()

        assert isinstance(caught.value.__cause__, backend.driver_error)

    def test_read_failure_has_cause(self, backend: Backend, store: Store) -> None:
        """A read that the database fails raises StoreError with the driver's error."""
        fill(store, 2)
        backend.raw("DROP TABLE checkpoints")

        with pytest.raises(StoreError, match="read failed") as caught:
            store.latest_checkpoint()

        assert isinstance(caught.value.__cause__, backend.driver_error)


def terminate_sessions(store: Store) -> None:
    """End every database session the PostgreSQL store holds, from the server side."""
    assert isinstance(store, PostgresStore)
    connections = [store._writer, *store._readers.values()]
    with connect_admin() as admin:
        for connection in connections:
            admin.execute(
                "SELECT pg_terminate_backend(%s, 5000)", [connection.info.backend_pid]
            )


@pytest.mark.postgres
@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
class TestPostgresSessions:
    def test_replicas_start_together(self, backend: Backend) -> None:
        """Replicas opening a new schema at once create it once and all start."""
        with ThreadPoolExecutor(4) as pool:
            stores = list(pool.map(lambda _: backend.open(), range(4)))

        assert [store.size() for store in stores] == [0, 0, 0, 0]

    def test_reconnects_after_sessions_end(self, store: Store) -> None:
        """When the server ends its sessions, one call fails and the next reconnects."""
        fill(store, 3)
        terminate_sessions(store)

        with pytest.raises(StoreError, match="read failed"):
            store.size()
        with pytest.raises(StoreError, match="append failed"):
            store.append(make_batch(3, 1))
        store.append(make_batch(3, 1))

        assert store.size() == 4
