"""The ledger as a running service: durable appends with group commit and signed
checkpoints on a schedule.

Entries are committed in batches, so many concurrent appends share one fsync, and
each caller is answered only once its entry is durable. Two paths lead there:

- from async code (the doors), :meth:`Ledger.append_async` gathers what a round of
  the event loop appends and commits it at the start of the next round, on the
  loop's own thread: no hand-off to another thread, whose wake-ups and contention
  for the GIL would cost more than the commit itself blocks the loop. An entry
  nobody waits on before acting (a call's outcome) may wait up to ``UNHURRIED``
  seconds for company, and is committed with the next entry somebody does wait
  on, so a steady stream of calls pays one commit per call, not two;
- from other threads, :meth:`Ledger.submit` queues entries for a writer thread,
  which drains whatever is queued into one transaction. The writer also signs the
  checkpoints, on a schedule.

One lock keeps commits in order, so only one batch at a time extends the tree's
right edge, whichever path it came by.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from proctor.errors import ConflictError, EntryError, LedgerError, StoreError
from proctor.ledger import entries, merkle, proofs
from proctor.ledger.checkpoint import Checkpoint, open_checkpoint, sign_checkpoint
from proctor.ledger.note import Signer, Verifier
from proctor.storage.interface import Batch, Store, StoredCheckpoint

log = logging.getLogger(__name__)

MAX_BATCH = 1024
CONFLICT_RETRIES = 5
UNHURRIED = 0.02
"""Seconds an unhurried entry may wait for others to share its commit."""


@dataclass(frozen=True)
class Receipt:
    """What a durable append answers: where the entry is and what the tree hashed."""

    index: int
    time: str
    leaf_hash: bytes


@dataclass(frozen=True, slots=True)
class Appended:
    """An entry this ledger has just made durable: where, its type, its fields as
    given (equal to what its bytes decode to, less the envelope) and its bytes."""

    index: int
    kind: str
    fields: Mapping[str, Any]
    data: bytes


Listener = Callable[[Sequence[Appended]], None]
"""Told of each durable batch, in order, on the writer thread, before its callers
are answered; it must be quick and must not append."""


@dataclass(frozen=True)
class CheckpointPolicy:
    """Sign a checkpoint every ``every`` entries or ``interval`` seconds (0: never)."""

    every: int = 1000
    interval: float = 10.0


@dataclass(frozen=True)
class _Append:
    kind: str
    fields: Mapping[str, Any]
    future: Future[Receipt]
    waiter: asyncio.Future[Receipt] | None = None


@dataclass
class _Round:
    """What one event loop has appended since its last commit, and when it is due:
    at the loop's next round (``soon``) or when the unhurried ``timer`` fires."""

    appends: list[_Append] = field(default_factory=list)
    soon: bool = False
    timer: asyncio.TimerHandle | None = None


@dataclass(frozen=True)
class _Sign:
    future: Future[bytes]


_STOP = object()
_DUE = object()
"""Tells the writer that a checkpoint may be due after a commit made elsewhere."""


class Ledger:
    """Append entries durably and sign checkpoints over one store."""

    def __init__(
        self,
        store: Store,
        signer: Signer,
        *,
        origin: str,
        policy: CheckpointPolicy | None = None,
        max_batch: int = MAX_BATCH,
    ) -> None:
        self.store = store
        self.origin = origin
        self._signer = signer
        self._verifier = Verifier.from_key_string(signer.verifier_key_string())
        self._policy = policy or CheckpointPolicy()
        self._max_batch = max_batch
        self._queue: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._rounds: dict[asyncio.AbstractEventLoop, _Round] = {}
        self._committing = threading.Lock()
        self._closed = False
        self._listeners: list[Listener] = []
        self._edge = self._load_edge()
        latest = store.latest_checkpoint()
        self._signed_size = latest.size if latest else 0
        self._signed_at = time.monotonic()
        self._writer = threading.Thread(
            target=self._run, name="proctor-ledger-writer", daemon=True
        )
        self._writer.start()

    @property
    def size(self) -> int:
        """How many entries this ledger has durably written and knows of."""
        return self._edge.size

    def listen(self, listener: Listener) -> None:
        """Tell ``listener`` of every batch appended from now on (see Listener)."""
        self._listeners.append(listener)

    def submit(self, kind: str, fields: Mapping[str, Any]) -> Future[Receipt]:
        """Queue one entry; the future answers once it is durable.

        Raises EntryError for a bad type or fields, LedgerError once closed. The
        future raises EntryError when the entry is not canonical JSON or too large,
        and StoreError when the database could not write it.
        """
        return self._put(_Append(kind, fields, Future()))

    def append(self, kind: str, fields: Mapping[str, Any]) -> Receipt:
        """Append one entry and wait until it is durable."""
        return self.submit(kind, fields).result()

    async def append_async(
        self, kind: str, fields: Mapping[str, Any], *, hurried: bool = True
    ) -> Receipt:
        """Append one entry from async code and wait until it is durable.

        The entry is committed with everything else appended in this round of the
        loop, at the start of the next round; with ``hurried=False`` it may wait
        up to ``UNHURRIED`` seconds for a hurried entry to share the commit.
        Raises as ``submit`` and its future do. Cancelling the wait withdraws the
        entry until its batch is committed.
        """
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[Receipt] = loop.create_future()
        item = _Append(kind, fields, Future(), waiter)
        self._check(item)
        round_ = self._rounds.get(loop)
        if round_ is None:
            round_ = self._rounds[loop] = _Round()
        round_.appends.append(item)
        if hurried and not round_.soon:
            round_.soon = True
            loop.call_soon(self._commit_round, loop)
        elif not round_.soon and round_.timer is None:
            round_.timer = loop.call_later(UNHURRIED, self._commit_round, loop)
        try:
            return await waiter
        except asyncio.CancelledError:
            item.future.cancel()
            raise

    def checkpoint(self) -> bytes:
        """Sign a checkpoint of everything appended so far and return its note."""
        if self._closed:
            raise LedgerError("the ledger is closed; no checkpoint can be signed")
        future: Future[bytes] = Future()
        self._queue.put(_Sign(future))

        return future.result()

    def close(self) -> None:
        """Write what is queued, sign a last checkpoint and stop the writer."""
        if self._closed:
            return
        self._closed = True
        self._queue.put(_STOP)
        self._writer.join()

    def _put(self, item: _Append) -> Future[Receipt]:
        self._check(item)
        self._queue.put(item)

        return item.future

    def _check(self, item: _Append) -> None:
        entries.check_fields(item.kind, item.fields)
        if self._closed:
            raise LedgerError("the ledger is closed; nothing more can be appended")

    def _commit_round(self, loop: asyncio.AbstractEventLoop) -> None:
        # On the loop's thread: commit what this loop appended in its last round.
        round_ = self._rounds.pop(loop, None)
        if round_ is None:
            return
        if round_.timer is not None:
            round_.timer.cancel()
        # A caller that stopped waiting (cancelled) before now withdraws its entry.
        waited = [item for item in round_.appends if not _withdrawn(item)]
        appends = _claimed(waited)
        if self._closed:
            closed = LedgerError("the ledger closed before the entry was written")
            for item in appends:
                item.future.set_exception(closed)
        elif appends:
            signed = self._edge.size <= self._signed_size
            with self._committing:
                self._commit_or_fail(appends)
            if self._is_due(was_signed=signed):
                self._queue.put(_DUE)
        _settle(appends)

    def _is_due(self, *, was_signed: bool) -> bool:
        # The writer waits without a deadline while everything is signed: the first
        # entry committed here after that starts the interval's clock, and a full
        # count of unsigned entries is due at once.
        unsigned = self._edge.size - self._signed_size
        return unsigned >= self._policy.every or (was_signed and unsigned > 0)

    def _load_edge(self) -> merkle.CompactRange:
        size = self.store.size()
        lookup = self.store.nodes(merkle.CompactRange.keys_for(size))
        return merkle.CompactRange.from_nodes(size, lookup)

    # The writer thread.

    def _run(self) -> None:
        stopping = False
        while not stopping:
            try:
                first = self._queue.get(timeout=self._until_due())
            except queue.Empty:
                self._sign_if_due()
                continue
            items = [first, *self._drain()]
            stopping = _STOP in items
            appends = _claimed([item for item in items if isinstance(item, _Append)])
            if appends:
                with self._committing:
                    self._commit_or_fail(appends)
            # Signing holds no lock, so commits on the loop never wait for it: it
            # reads one edge, which a commit replaces but never changes.
            for item in items:
                if isinstance(item, _Sign):
                    self._answer_sign(item.future)
            self._sign_if_due(final=stopping)

    def _commit_or_fail(self, appends: list[_Append]) -> None:
        # Whatever goes wrong, every caller is answered and the writer lives on:
        # a dead writer would leave every later append waiting for ever.
        try:
            self._commit(appends)
        except Exception as exc:
            log.exception("ledger writer failed a batch entries=%d", len(appends))
            self._fail(appends, LedgerError(f"the ledger writer failed: {exc}"))

    def _drain(self) -> list[object]:
        drained: list[object] = []
        while len(drained) < self._max_batch:
            try:
                drained.append(self._queue.get_nowait())
            except queue.Empty:
                break

        return drained

    def _commit(self, appends: list[_Append]) -> None:
        for _ in range(CONFLICT_RETRIES):
            waiting = [item for item in appends if not item.future.done()]
            if not waiting:
                return
            edge = self._edge.copy()
            batch, receipts = self._build(edge, waiting)
            try:
                self.store.append(batch)
            except ConflictError:
                # Another replica appended first: read its head and number anew.
                self._edge = self._load_edge()
                continue
            except StoreError as exc:
                self._fail(waiting, exc)
                return
            self._edge = edge
            self._tell(batch, receipts)
            for item, receipt in receipts:
                item.future.set_result(receipt)
            return
        self._fail(appends, LedgerError("gave up appending after repeated conflicts"))

    def _build(
        self, edge: merkle.CompactRange, waiting: list[_Append]
    ) -> tuple[Batch, list[tuple[_Append, Receipt]]]:
        start, stamp = edge.size, entries.now()
        rows: list[bytes] = []
        nodes: list[tuple[int, int, bytes]] = []
        receipts: list[tuple[_Append, Receipt]] = []
        for item in waiting:
            try:
                data = entries.encode(start + len(rows), stamp, item.kind, item.fields)
            except EntryError as exc:
                item.future.set_exception(exc)
                continue
            leaf = merkle.leaf_hash(data)
            receipts.append((item, Receipt(start + len(rows), stamp, leaf)))
            rows.append(data)
            nodes.extend(edge.append(leaf))

        return Batch(start, rows, nodes), receipts

    def _tell(self, batch: Batch, receipts: list[tuple[_Append, Receipt]]) -> None:
        appended = [
            Appended(receipt.index, item.kind, item.fields, data)
            for (item, receipt), data in zip(receipts, batch.entries, strict=True)
        ]
        for listener in self._listeners:
            try:
                listener(appended)
            except Exception:
                log.exception("a ledger listener failed entries=%d", len(appended))

    def _fail(self, appends: list[_Append], error: Exception) -> None:
        log.error("ledger append failed entries=%d error=%s", len(appends), error)
        for item in appends:
            if not item.future.done():
                item.future.set_exception(error)
        try:
            self._edge = self._load_edge()
        except StoreError:
            log.exception("ledger could not re-read its head after a failed append")

    def _until_due(self) -> float | None:
        if self._policy.interval <= 0 or self._edge.size <= self._signed_size:
            return None
        return max(0.0, self._signed_at + self._policy.interval - time.monotonic())

    def _sign_if_due(self, *, final: bool = False) -> None:
        unsigned = self._edge.size - self._signed_size
        if unsigned <= 0:
            return
        timed = 0 < self._policy.interval <= time.monotonic() - self._signed_at
        if final or timed or unsigned >= self._policy.every:
            try:
                self._sign()
            except (LedgerError, StoreError):
                log.exception("ledger could not sign a checkpoint size=%d", self.size)

    def _answer_sign(self, future: Future[bytes]) -> None:
        try:
            future.set_result(self._sign())
        except (LedgerError, StoreError) as exc:
            future.set_exception(exc)

    def _sign(self) -> bytes:
        edge = self._edge
        size, root = edge.size, edge.root()
        previous = self.store.latest_checkpoint()
        if previous is not None and previous.size >= size:
            return previous.note
        if previous is not None and previous.size > 0:
            # A new checkpoint must extend the last one; refuse to sign a fork.
            old = open_checkpoint(previous.note, [self._verifier], origin=self.origin)
            proof = proofs.consistency_proof(self.store, old.size, size)
            merkle.verify_consistency(old.size, size, proof, old.root, root)
        note = sign_checkpoint(Checkpoint(self.origin, size, root), self._signer)
        try:
            self.store.add_checkpoint(StoredCheckpoint(size, note))
        except ConflictError:
            # Another replica signed this size or a larger one first: theirs stands.
            latest = self.store.latest_checkpoint()
            if latest is None:
                raise
            note = latest.note
        self._signed_size, self._signed_at = size, time.monotonic()
        log.info("ledger signed checkpoint size=%d", size)

        return note


def _claimed(appends: list[_Append]) -> list[_Append]:
    # Claim each entry as concurrent.futures executors do: one cancelled before now
    # is dropped, and from now on it can no longer be cancelled, so answering it
    # cannot fail and stop the writer.
    return [item for item in appends if item.future.set_running_or_notify_cancel()]


def _withdrawn(item: _Append) -> bool:
    return item.waiter is not None and item.waiter.cancelled()


def _settle(items: list[_Append]) -> None:
    # On the waiters' loop: every claimed future is done once its batch is.
    for item in items:
        if item.waiter is None or item.waiter.done():
            continue
        error = item.future.exception()
        if error is not None:
            item.waiter.set_exception(error)
        else:
            item.waiter.set_result(item.future.result())
