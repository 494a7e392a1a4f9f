"""The SQLite ledger store: one file, WAL with full sync, append-only by triggers.

Every thread gets its own connection, so readers never wait for the writer (WAL) and
two processes appending to one file serialise on ``BEGIN IMMEDIATE``.
"""

from __future__ import annotations

import json
import re
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any

from proctor.errors import ConflictError, StoreError
from proctor.storage.interface import (
    Batch,
    NodeKey,
    ProjectionStore,
    StoredCheckpoint,
)

SCHEMA_VERSION = 1
BUSY_TIMEOUT = 10.0
"""Seconds a connection waits for another process's write before failing."""
CHUNK = 1000
"""Rows read per query when streaming entries or checkpoints."""

_TABLES = (
    """CREATE TABLE entries (
        idx INTEGER PRIMARY KEY CHECK (idx >= 0),
        body BLOB NOT NULL CHECK (typeof(body) = 'blob')
    )""",
    """CREATE TABLE nodes (
        level INTEGER NOT NULL CHECK (level BETWEEN 0 AND 63),
        idx INTEGER NOT NULL CHECK (idx >= 0),
        hash BLOB NOT NULL CHECK (typeof(hash) = 'blob' AND length(hash) = 32),
        PRIMARY KEY (level, idx)
    ) WITHOUT ROWID""",
    """CREATE TABLE checkpoints (
        size INTEGER PRIMARY KEY CHECK (size >= 0),
        note BLOB NOT NULL CHECK (typeof(note) = 'blob')
    )""",
)

# The ledger tables are append-only in the file itself. INSERT OR REPLACE deletes the
# old row without firing DELETE triggers (unless recursive_triggers is on), so an
# insert over an existing key is refused as well.
_TRIGGERS = (
    """CREATE TRIGGER entries_no_update BEFORE UPDATE ON entries BEGIN
        SELECT RAISE(ABORT, 'update on entries refused: append-only ledger');
    END""",
    """CREATE TRIGGER entries_no_delete BEFORE DELETE ON entries BEGIN
        SELECT RAISE(ABORT, 'delete on entries refused: append-only ledger');
    END""",
    """CREATE TRIGGER entries_no_replace BEFORE INSERT ON entries
    WHEN EXISTS (SELECT 1 FROM entries WHERE idx = NEW.idx) BEGIN
        SELECT RAISE(ABORT, 'replace on entries refused: append-only ledger');
    END""",
    """CREATE TRIGGER nodes_no_update BEFORE UPDATE ON nodes BEGIN
        SELECT RAISE(ABORT, 'update on nodes refused: append-only ledger');
    END""",
    """CREATE TRIGGER nodes_no_delete BEFORE DELETE ON nodes BEGIN
        SELECT RAISE(ABORT, 'delete on nodes refused: append-only ledger');
    END""",
    """CREATE TRIGGER nodes_no_replace BEFORE INSERT ON nodes
    WHEN EXISTS (SELECT 1 FROM nodes WHERE level = NEW.level AND idx = NEW.idx) BEGIN
        SELECT RAISE(ABORT, 'replace on nodes refused: append-only ledger');
    END""",
    """CREATE TRIGGER checkpoints_no_update BEFORE UPDATE ON checkpoints BEGIN
        SELECT RAISE(ABORT, 'update on checkpoints refused: append-only ledger');
    END""",
    """CREATE TRIGGER checkpoints_no_delete BEFORE DELETE ON checkpoints BEGIN
        SELECT RAISE(ABORT, 'delete on checkpoints refused: append-only ledger');
    END""",
    """CREATE TRIGGER checkpoints_no_replace BEFORE INSERT ON checkpoints
    WHEN EXISTS (SELECT 1 FROM checkpoints WHERE size = NEW.size) BEGIN
        SELECT RAISE(ABORT, 'replace on checkpoints refused: append-only ledger');
    END""",
)

_SIZE = "SELECT coalesce(max(idx) + 1, 0) FROM entries"
_INSERT_ENTRY = "INSERT INTO entries (idx, body) VALUES (?, ?)"
_INSERT_NODE = "INSERT INTO nodes (level, idx, hash) VALUES (?, ?, ?)"
_INSERT_CHECKPOINT = "INSERT INTO checkpoints (size, note) VALUES (?, ?)"
_ENTRY = "SELECT body FROM entries WHERE idx = ?"
_ENTRIES = "SELECT idx, body FROM entries WHERE idx >= ? ORDER BY idx LIMIT ?"
# One statement for any number of keys: the keys travel as one JSON parameter and
# each is looked up through the primary key.
_NODES = """SELECT n.level, n.idx, n.hash FROM json_each(?) AS k JOIN nodes AS n
    ON n.level = json_extract(k.value, '$[0]')
    AND n.idx = json_extract(k.value, '$[1]')"""
_LEVEL = "SELECT idx, hash FROM nodes WHERE level = ? AND idx >= ? AND idx < ?"
_CHECKPOINTS = "SELECT size, note FROM checkpoints WHERE size > ? ORDER BY size LIMIT ?"
_LATEST = "SELECT size, note FROM checkpoints ORDER BY size DESC LIMIT 1"


def _rollback(connection: sqlite3.Connection) -> None:
    """Roll back an open transaction, leaving the original error to propagate."""
    if connection.in_transaction:
        try:
            connection.execute("ROLLBACK")
        except sqlite3.Error:
            # The connection is already unusable; the caller sees the first error.
            return


@contextmanager
def _write(connection: sqlite3.Connection, what: str) -> Iterator[None]:
    """Run the body in one immediate transaction, translating sqlite3 errors."""
    try:
        connection.execute("BEGIN IMMEDIATE")
        yield
        connection.execute("COMMIT")
    except sqlite3.Error as exc:
        _rollback(connection)
        raise StoreError(f"sqlite {what} failed: {exc}") from exc
    except BaseException:
        _rollback(connection)
        raise


def _check_range(start: int, end: int | None) -> None:
    """Refuse a range that cannot name entries; raises StoreError."""
    if start < 0 or (end is not None and end < start):
        raise StoreError(
            f"entry range must satisfy 0 <= start <= end, got {start}..{end}"
        )


class SqliteStore:
    """A ledger store in one SQLite file.

    Safe to share between threads: each thread uses its own connection, and appends
    within one process take a lock so they queue rather than poll the busy timeout.
    """

    def __init__(self, path: Path) -> None:
        """Open or create the store at ``path``; raises StoreError when it cannot."""
        self.path = path
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._connections: dict[threading.Thread, sqlite3.Connection] = {}
        self._closed = False
        self._setup(self._connection())

    def __enter__(self) -> SqliteStore:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # Connections.

    def _connection(self) -> sqlite3.Connection:
        """Return this thread's connection, opening it on first use."""
        thread = threading.current_thread()
        with self._lock:
            if self._closed:
                raise StoreError(f"the sqlite store at {self.path} is closed")
            connection = self._connections.get(thread)
            if connection is None:
                self._forget_finished_threads()
                connection = self._connect()
                self._connections[thread] = connection

        return connection

    def _connect(self) -> sqlite3.Connection:
        try:
            # check_same_thread=False only so close() can release every thread's
            # connection; each connection is still used by its own thread alone.
            # The timeout is SQLite's busy timeout: how long to wait for a lock.
            connection = sqlite3.connect(
                self.path,
                timeout=BUSY_TIMEOUT,
                isolation_level=None,
                check_same_thread=False,
            )
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open the sqlite store at {self.path}") from exc
        try:
            # Durable on return: WAL with FULL syncs the log on every commit.
            connection.execute("PRAGMA synchronous = FULL")
        except sqlite3.Error as exc:
            connection.close()
            raise StoreError(
                f"cannot configure the sqlite store at {self.path}"
            ) from exc

        return connection

    def _forget_finished_threads(self) -> None:
        """Close the connections of threads that have ended (caller holds the lock)."""
        for thread in [thread for thread in self._connections if not thread.is_alive()]:
            self._connections.pop(thread).close()

    def _setup(self, connection: sqlite3.Connection) -> None:
        """Switch to WAL and create the schema once; refuse an unknown version."""
        try:
            mode = connection.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        except sqlite3.Error as exc:
            self.close()
            raise StoreError(f"cannot open the sqlite store at {self.path}") from exc
        if mode != "wal":
            self.close()
            raise StoreError(
                f"sqlite store at {self.path} refused WAL mode, got {mode}"
            )
        try:
            with _write(connection, "schema setup"):
                self._create_or_check(connection)
        except StoreError:
            self.close()
            raise

    def _create_or_check(self, connection: sqlite3.Connection) -> None:
        version = connection.execute("PRAGMA user_version").fetchone()[0]
        if version == SCHEMA_VERSION:
            return
        if version != 0:
            raise StoreError(
                f"sqlite store at {self.path} is at schema version {version}, "
                f"expected {SCHEMA_VERSION}"
            )
        for statement in (*_TABLES, *_TRIGGERS):
            connection.execute(statement)
        connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def _read(self, sql: str, parameters: tuple[object, ...] = ()) -> list[Any]:
        """Run one query on this thread's connection and fetch its (bounded) rows."""
        connection = self._connection()
        try:
            return connection.execute(sql, parameters).fetchall()
        except sqlite3.Error as exc:
            raise StoreError(f"sqlite read failed: {exc}") from exc

    # The Store interface.

    def size(self) -> int:
        """Return how many entries are stored; raises StoreError."""
        size: int = self._read(_SIZE)[0][0]

        return size

    def append(self, batch: Batch) -> None:
        """Store the batch in one durable transaction.

        Raises ConflictError when ``batch.start`` is not the current size (nothing is
        written) and StoreError when SQLite fails.
        """
        connection = self._connection()
        with self._write_lock, _write(connection, "append"):
            size = connection.execute(_SIZE).fetchone()[0]
            if batch.start != size:
                raise ConflictError(
                    f"batch starts at {batch.start} but the ledger holds {size} entries"
                )
            connection.executemany(_INSERT_ENTRY, enumerate(batch.entries, batch.start))
            connection.executemany(_INSERT_NODE, batch.nodes)

    def entries(self, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        """Stream entries ``[start, end)`` in chunks, stopping at the ledger's end.

        Raises StoreError for a negative or reversed range, and while streaming when
        SQLite fails or an index is missing.
        """
        _check_range(start, end)

        return self._stream_entries(start, end)

    def _stream_entries(self, start: int, end: int | None) -> Iterator[bytes]:
        # Keyset pages: no statement or read transaction stays open between yields.
        position = start
        while end is None or position < end:
            limit = CHUNK if end is None else min(CHUNK, end - position)
            rows = self._read(_ENTRIES, (position, limit))
            for index, body in rows:
                if index != position:
                    raise StoreError(f"entry {position} is missing; found {index}")
                yield body
                position += 1
            if len(rows) < limit:
                return

    def entry(self, index: int) -> bytes:
        """Return the entry at ``index``; raises StoreError when there is none."""
        rows = self._read(_ENTRY, (index,))
        if not rows:
            raise StoreError(f"no entry at index {index}")
        body: bytes = rows[0][0]

        return body

    def nodes(self, keys: Iterable[NodeKey]) -> dict[NodeKey, bytes]:
        """Return the stored hashes of ``keys`` in one query; missing keys are absent.

        Raises StoreError when SQLite fails.
        """
        wanted = json.dumps([[int(level), int(index)] for level, index in keys])
        rows = self._read(_NODES, (wanted,))

        return {(level, index): digest for level, index, digest in rows}

    def level(self, level: int, start: int, end: int) -> dict[int, bytes]:
        """Return one level's stored hashes in ``[start, end)`` by index, in one
        range read; raises StoreError when SQLite fails."""
        rows = self._read(_LEVEL, (level, start, end))

        return dict(rows)

    def add_checkpoint(self, checkpoint: StoredCheckpoint) -> None:
        """Store a signed checkpoint.

        Raises ConflictError when its size does not exceed the latest stored one, and
        StoreError when it is larger than the ledger or SQLite fails.
        """
        connection = self._connection()
        with self._write_lock, _write(connection, "checkpoint"):
            size = connection.execute(_SIZE).fetchone()[0]
            if checkpoint.size > size:
                raise StoreError(
                    f"checkpoint size {checkpoint.size} exceeds the ledger's {size} "
                    "entries"
                )
            latest = connection.execute(_LATEST).fetchone()
            if latest is not None and checkpoint.size <= latest[0]:
                raise ConflictError(
                    f"checkpoint size {checkpoint.size} does not grow past the latest "
                    f"stored size {latest[0]}"
                )
            connection.execute(_INSERT_CHECKPOINT, (checkpoint.size, checkpoint.note))

    def checkpoints(self) -> Iterator[StoredCheckpoint]:
        """Stream the stored checkpoints by ascending size; raises StoreError."""
        after = -1
        while True:
            rows = self._read(_CHECKPOINTS, (after, CHUNK))
            for size, note in rows:
                yield StoredCheckpoint(size, note)
                after = size
            if len(rows) < CHUNK:
                return

    def latest_checkpoint(self) -> StoredCheckpoint | None:
        """Return the checkpoint with the largest size, or None; raises StoreError."""
        rows = self._read(_LATEST)
        if not rows:
            return None
        size, note = rows[0]

        return StoredCheckpoint(size, note)

    def close(self) -> None:
        """Close the connections no other thread may be using; later calls raise
        StoreError.

        Closing a connection from another thread while it runs a statement crashes
        the interpreter, so a live thread's connection is only dropped here and
        closes when that thread lets go of it.
        """
        with self._lock:
            self._closed = True
            connections, self._connections = self._connections, {}
        current = threading.current_thread()
        for thread, connection in connections.items():
            if thread is current or not thread.is_alive():
                connection.close()

    # Beyond the Store interface: SQL for projections in the same file.

    def projections(self) -> ProjectionStore:
        """Return SQL access for projection tables beside the ledger's own."""
        return SqliteProjections(self)


_NAME = re.compile(r"[a-z_][a-z0-9_]*")


def _names(columns: Sequence[str]) -> str:
    """Join column names for a statement; raises StoreError for a bad one."""
    for column in columns:
        if not _NAME.fullmatch(column):
            raise StoreError(f"projection column name {column!r} is not an identifier")

    return ", ".join(columns)


class _SqliteWriter:
    """One immediate transaction on a thread's connection."""

    def __init__(self, connection: sqlite3.Connection) -> None:
        self._connection = connection

    def execute(
        self, sql: str, parameters: Sequence[object] = ()
    ) -> list[tuple[Any, ...]]:
        rows: list[tuple[Any, ...]] = self._connection.execute(
            sql, tuple(parameters)
        ).fetchall()

        return rows

    def insert(
        self, table: str, columns: Sequence[str], rows: Iterable[Sequence[object]]
    ) -> None:
        names = _names(columns)
        markers = ", ".join("?" for _ in columns)
        # The table comes from table() and the columns are checked identifiers.
        statement = f"INSERT INTO {table} ({names}) VALUES ({markers})"  # noqa: S608
        self._connection.executemany(statement, rows)


class SqliteProjections:
    """Projection tables in the store's file, on the store's per-thread connections.

    Writes take the store's append lock, so a projection's transaction and a ledger
    append in one process queue rather than poll SQLite's busy timeout.
    """

    dialect = "sqlite"

    def __init__(self, store: SqliteStore) -> None:
        self._store = store

    def table(self, name: str) -> str:
        """Return ``name`` quoted; raises StoreError when it is not an identifier."""
        if not _NAME.fullmatch(name):
            raise StoreError(f"projection table name {name!r} is not an identifier")

        return f'"{name}"'

    def query(
        self, sql: str, parameters: Sequence[object] = ()
    ) -> list[tuple[Any, ...]]:
        """Run one query on this thread's connection; raises StoreError."""
        return self._store._read(sql, tuple(parameters))

    @contextmanager
    def transaction(self) -> Iterator[_SqliteWriter]:
        """Hold one immediate transaction; raises StoreError when SQLite fails."""
        connection = self._store._connection()
        with self._store._write_lock, _write(connection, "projection write"):
            yield _SqliteWriter(connection)
