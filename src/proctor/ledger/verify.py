"""Offline verification of a whole ledger, streamed: every leaf, the tree, every
signed checkpoint, the consistency between them, and a checkpoint kept elsewhere.

Nothing here trusts the store's own hashes: roots are recomputed from the entries.
Every stored subtree hash is then compared with the one recomputed, since proofs are
served from them, and they name the first entry that differs.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime

import orjson

from proctor.errors import (
    CheckpointError,
    NoteError,
    ProofError,
    StoreError,
    VerifyError,
)
from proctor.ledger import merkle
from proctor.ledger.checkpoint import Checkpoint, open_checkpoint
from proctor.ledger.note import Verifier
from proctor.storage.interface import Store, StoredCheckpoint

CHUNK = 1024


@dataclass(frozen=True)
class Report:
    """What a successful verification established."""

    size: int
    root: bytes
    checkpoints: int
    signed_size: int
    trusted_size: int | None

    @property
    def covered(self) -> int:
        """How many entries a signature covers: a stored or the trusted checkpoint."""
        return max(self.signed_size, self.trusted_size or 0)

    @property
    def unsigned(self) -> int:
        """Entries no signature covers: checked against stored hashes only."""
        return self.size - self.covered


def unsigned_since(store: Store, report: Report) -> datetime | None:
    """When the first entry no signature covers says it was recorded.

    None when every entry is covered, or when that entry's time is not an RFC 3339
    time with its offset. The time is the entry's own, and unsigned like the rest.
    """
    if report.unsigned <= 0:
        return None
    try:
        recorded = datetime.fromisoformat(
            orjson.loads(store.entry(report.covered))["time"]
        )
    except (StoreError, orjson.JSONDecodeError, LookupError, TypeError, ValueError):
        return None

    return recorded if recorded.tzinfo is not None else None


def verify_ledger(
    store: Store,
    verifiers: Sequence[Verifier],
    *,
    origin: str | None = None,
    trusted: bytes | None = None,
) -> Report:
    """Verify all the store holds; raises VerifyError naming the first failure."""
    pinned = _open(trusted, verifiers, origin, None) if trusted is not None else None
    walk = _Walk(store, verifiers, origin, watch=pinned.size if pinned else 0)
    walk.run()
    if pinned is not None:
        walk.check_trusted(pinned)

    return Report(
        size=walk.edge.size,
        root=walk.edge.root(),
        checkpoints=walk.checked,
        signed_size=walk.previous.size if walk.previous else 0,
        trusted_size=pinned.size if pinned else None,
    )


class _Walk:
    """One pass over the entries, checking each checkpoint as its size is reached."""

    def __init__(
        self,
        store: Store,
        verifiers: Sequence[Verifier],
        origin: str | None,
        *,
        watch: int,
    ) -> None:
        self.store, self.verifiers, self.origin = store, verifiers, origin
        self.edge = merkle.CompactRange()
        self.watch, self.watched_root = watch, merkle.EMPTY_ROOT
        self.previous: Checkpoint | None = None
        self.checked = 0
        self.completed: list[tuple[int, int, bytes]] = []

    def run(self) -> None:
        pending = self.store.checkpoints()
        stored = next(pending, None)
        while stored is not None and stored.size == 0:
            self.check(stored)
            stored = next(pending, None)
        for position, data in _stream(self.store):
            _check_index(position, data)
            self.completed.extend(self.edge.append(merkle.leaf_hash(data)))
            if self.edge.size == self.watch:
                self.watched_root = self.edge.root()
            while stored is not None and stored.size == self.edge.size:
                self.check(stored)
                stored = next(pending, None)
            if len(self.completed) >= 2 * CHUNK:
                self.check_nodes()
        if stored is not None:
            raise VerifyError(
                f"checkpoint at size {stored.size} but the ledger holds only "
                f"{self.edge.size} entries: entries were removed",
                index=self.edge.size,
                checkpoint=stored.size,
            )
        # The entries after the last checkpoint are checked by their hashes alone.
        self.check_nodes()

    def check(self, stored: StoredCheckpoint) -> None:
        checkpoint = _open(stored.note, self.verifiers, self.origin, stored.size)
        if checkpoint.size != stored.size:
            raise VerifyError(
                f"checkpoint stored at size {stored.size} says size {checkpoint.size}",
                checkpoint=stored.size,
            )
        start = self.previous.size if self.previous else 0
        if checkpoint.root != self.edge.root():
            index = _first_changed(self.store, start, checkpoint.size)
            where = (
                f"entry {index} differs from what was signed"
                if index is not None
                else (
                    f"an entry in [{start}, {checkpoint.size}) was changed together "
                    "with its stored hashes"
                )
            )
            raise VerifyError(
                f"checkpoint at size {checkpoint.size}: root does not match the "
                f"entries; {where}",
                index=index,
                checkpoint=checkpoint.size,
            )
        # The entries hold what was signed; now the hashes stored beside them.
        self.check_nodes()
        if self.previous is not None and self.previous.size > 0:
            self.check_served_proof(self.previous, checkpoint)
        self.previous = checkpoint
        self.checked += 1

    def check_served_proof(self, old: Checkpoint, new: Checkpoint) -> None:
        # Both roots were recomputed from the same entries, so the tree is consistent;
        # what remains is whether the proof the store would serve says so too.
        plan = merkle.consistency_plan(old.size, new.size)
        lookup = self.store.nodes(key for keys in plan for key in keys)
        try:
            proof = merkle.build_proof(plan, lookup)
            merkle.verify_consistency(old.size, new.size, proof, old.root, new.root)
        except (ProofError, KeyError) as exc:
            raise VerifyError(
                f"the store's consistency proof from size {old.size} to {new.size} "
                f"fails: {exc}",
                checkpoint=new.size,
            ) from exc

    def check_nodes(self) -> None:
        """Compare the stored hashes of the subtrees completed since the last check
        with those recomputed from the entries.

        The subtrees completed by a run of entries make one index range per level,
        so each level is read in one range.
        """
        completed, self.completed = self.completed, []
        ranges: dict[int, tuple[int, int]] = {}
        for level, index, _ in completed:
            low, high = ranges.get(level, (index, index))
            ranges[level] = (min(low, index), max(high, index))
        stored = {
            level: self.store.level(level, low, high + 1)
            for level, (low, high) in ranges.items()
        }
        for level, index, digest in completed:
            found = stored[level].get(index)
            if found == digest:
                continue
            if level == 0:
                raise VerifyError(
                    f"entry {index} does not match its stored leaf hash", index=index
                )
            first, end = index << level, (index + 1) << level
            what = "missing" if found is None else "wrong"
            raise VerifyError(
                f"entries [{first}, {end}): their stored hash (level {level}, index "
                f"{index}) is {what}, so proofs served from it would not verify",
                index=first,
            )

    def check_trusted(self, pinned: Checkpoint) -> None:
        size = self.edge.size
        if pinned.size > size:
            raise VerifyError(
                f"the ledger was truncated: the trusted checkpoint is at size "
                f"{pinned.size} but the ledger holds {size} entries",
                index=size,
                checkpoint=pinned.size,
            )
        if self.watched_root != pinned.root:
            raise VerifyError(
                f"the ledger does not extend the trusted checkpoint at size "
                f"{pinned.size}: its root differs (a fork or rewritten history)",
                checkpoint=pinned.size,
            )


def _open(
    note: bytes, verifiers: Sequence[Verifier], origin: str | None, size: int | None
) -> Checkpoint:
    try:
        return open_checkpoint(note, verifiers, origin=origin)
    except (NoteError, CheckpointError) as exc:
        where = (
            f"checkpoint at size {size}" if size is not None else "trusted checkpoint"
        )
        raise VerifyError(f"{where}: {exc}", checkpoint=size) from exc


def _stream(store: Store) -> Iterator[tuple[int, bytes]]:
    position = 0
    try:
        for data in store.entries():
            if not isinstance(data, bytes):
                raise VerifyError(
                    f"entry {position} is stored as {type(data).__name__}, not bytes",
                    index=position,
                )
            yield position, data
            position += 1
    except StoreError as exc:
        raise VerifyError(
            f"entry {position} cannot be read in order: {exc}", index=position
        ) from exc


def _check_index(position: int, data: bytes) -> None:
    try:
        index = orjson.loads(data).get("index")
    except (orjson.JSONDecodeError, AttributeError) as exc:
        raise VerifyError(
            f"entry {position} is not a JSON object", index=position
        ) from exc
    if index != position:
        raise VerifyError(
            f"entry at position {position} says index {index!r}: an entry was "
            "removed, inserted or moved here",
            index=position,
        )


def _first_changed(store: Store, start: int, end: int) -> int | None:
    for chunk_start in range(start, end, CHUNK):
        chunk_end = min(chunk_start + CHUNK, end)
        stored = store.nodes((0, index) for index in range(chunk_start, chunk_end))
        entries = store.entries(chunk_start, chunk_end)
        for index, data in zip(range(chunk_start, chunk_end), entries, strict=False):
            if stored.get((0, index)) != merkle.leaf_hash(data):
                return index

    return None
