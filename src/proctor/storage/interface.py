"""The one interface every ledger store implements, SQLite and PostgreSQL alike.

A store keeps three things: the entries (canonical JSON, dense indexes from 0), the
hashes of every complete Merkle subtree (``(level, index)``: level 0 holds leaf hashes,
level ``l`` index ``i`` covers leaves ``[i * 2**l, (i + 1) * 2**l)``), and the signed
checkpoints. Entries and nodes are append-only; the database itself refuses UPDATE and
DELETE on them.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Protocol

NodeKey = tuple[int, int]
"""A complete subtree as ``(level, index)``."""


@dataclass(frozen=True)
class Batch:
    """Entries to append in one transaction, with the subtree hashes they complete."""

    start: int
    entries: Sequence[bytes]
    nodes: Sequence[tuple[int, int, bytes]]

    @property
    def end(self) -> int:
        return self.start + len(self.entries)


@dataclass(frozen=True)
class StoredCheckpoint:
    """A signed checkpoint as it was stored: its tree size and the whole signed note."""

    size: int
    note: bytes


class Store(Protocol):
    """Durable storage for one ledger.

    Every method raises ``StoreError`` (from ``proctor.errors``) when the database
    fails, with the backend's exception as the cause.
    """

    def size(self) -> int:
        """Return how many entries are stored."""
        ...

    def append(self, batch: Batch) -> None:
        """Store the batch atomically and durably before returning.

        Raises ``ConflictError`` when ``batch.start`` is not the current size, so a
        writer that lost a race can re-read the head and build its batch again.
        """
        ...

    def entries(self, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        """Stream the entries with indexes in ``[start, end)`` in order, in pages."""
        ...

    def entry(self, index: int) -> bytes:
        """Return one entry; raises ``StoreError`` when there is none at ``index``."""
        ...

    def nodes(self, keys: Iterable[NodeKey]) -> dict[NodeKey, bytes]:
        """Return the stored hashes of the given subtrees in one round trip.

        Keys that are not stored are absent from the result.
        """
        ...

    def level(self, level: int, start: int, end: int) -> dict[int, bytes]:
        """Return the stored hashes of one level with indexes in ``[start, end)``,
        by index, in one round trip; indexes that are not stored are absent."""
        ...

    def add_checkpoint(self, checkpoint: StoredCheckpoint) -> None:
        """Store a signed checkpoint; sizes are unique and only grow."""
        ...

    def checkpoints(self) -> Iterator[StoredCheckpoint]:
        """Stream the stored checkpoints by ascending size."""
        ...

    def latest_checkpoint(self) -> StoredCheckpoint | None:
        """Return the checkpoint with the largest size, or None before the first."""
        ...

    def close(self) -> None:
        """Release connections; the store is unusable afterwards."""
        ...


# Projections: SQL beside the ledger, outside the Store contract.


class ProjectionWriter(Protocol):
    """One open transaction on a projection's own tables."""

    def execute(
        self, sql: str, parameters: Sequence[object] = ()
    ) -> list[tuple[Any, ...]]:
        """Run one statement and return its rows (none for a statement without)."""
        ...

    def insert(
        self, table: str, columns: Sequence[str], rows: Iterable[Sequence[object]]
    ) -> None:
        """Insert many rows into ``table`` (a name from ``ProjectionStore.table``)."""
        ...


class ProjectionStore(Protocol):
    """SQL access for projections: tables derived from the entries, in the ledger's
    own database (the SQLite file, the PostgreSQL schema), so a query can join them
    with the entries.

    Projections are not append-only: they may be dropped and rebuilt from the
    entries at any time. They may read the ledger's tables; the ledger's triggers
    refuse any change to those. Statements use the dialect's parameter markers
    (``?`` for SQLite, ``%s`` for PostgreSQL) and always bind values. Every method
    raises ``StoreError`` when the database fails.
    """

    @property
    def dialect(self) -> str:
        """``sqlite`` or ``postgresql``."""
        ...

    def table(self, name: str) -> str:
        """Return ``name`` (a table or index) as SQL: quoted, in the ledger's schema.

        Raises StoreError when ``name`` is not a lowercase identifier.
        """
        ...

    def query(
        self, sql: str, parameters: Sequence[object] = ()
    ) -> list[tuple[Any, ...]]:
        """Run one read-only query outside any transaction and fetch its rows."""
        ...

    def transaction(self) -> AbstractContextManager[ProjectionWriter]:
        """Open one transaction for writing projection tables; commit on success."""
        ...
