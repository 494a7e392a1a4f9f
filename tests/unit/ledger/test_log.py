"""The ledger service: durable appends with group commit, and checkpoints that only
ever extend the last one."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from proctor.errors import EntryError, LedgerError, StoreError
from proctor.ledger import entries, merkle, proofs
from proctor.ledger.checkpoint import Checkpoint, open_checkpoint, sign_checkpoint
from proctor.ledger.log import UNHURRIED, Appended, CheckpointPolicy, Ledger
from proctor.ledger.note import Signer, Verifier
from proctor.storage.interface import Batch, StoredCheckpoint
from proctor.storage.sqlite import SqliteStore

ORIGIN = "proctor.test/log"


class CountingStore(SqliteStore):
    """A real SQLite store that counts its transactions and can be told to fail."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.batches: list[int] = []
        self.broken = False

    def append(self, batch: Batch) -> None:
        if self.broken:
            raise StoreError("disk full (simulated)")
        self.batches.append(len(batch.entries))
        super().append(batch)


@pytest.fixture
def signer() -> Signer:
    return Signer.generate(ORIGIN)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[CountingStore]:
    store = CountingStore(tmp_path / "ledger.db")
    yield store
    store.close()


def open_ledger(
    store: CountingStore, signer: Signer, *, every: int, interval: float
) -> Ledger:
    policy = CheckpointPolicy(every=every, interval=interval)

    return Ledger(store, signer, origin=ORIGIN, policy=policy)


class TestAppend:
    def test_indexes_are_dense_and_entries_canonical(
        self, store: CountingStore, signer: Signer
    ) -> None:
        """Each append gets the next index, and the stored bytes are the entry."""
        ledger = open_ledger(store, signer, every=1000, interval=0)
        receipts = [ledger.append("test.note", {"n": n}) for n in range(5)]
        ledger.close()

        assert [receipt.index for receipt in receipts] == [0, 1, 2, 3, 4]
        stored = list(store.entries())
        assert entries.decode(stored[3]) == {
            "index": 3,
            "n": 3,
            "time": receipts[3].time,
            "type": "test.note",
        }
        assert receipts[3].leaf_hash == merkle.leaf_hash(stored[3])

    def test_concurrent_appends_share_transactions(
        self, store: CountingStore, signer: Signer
    ) -> None:
        """32 writers get 3,200 distinct dense indexes in fewer transactions."""
        ledger = open_ledger(store, signer, every=10_000, interval=0)
        indexes: list[int] = []
        lock = threading.Lock()

        def writer(number: int) -> None:
            for step in range(100):
                receipt = ledger.append("test.note", {"writer": number, "step": step})
                with lock:
                    indexes.append(receipt.index)

        threads = [threading.Thread(target=writer, args=(n,)) for n in range(32)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        ledger.close()

        assert sorted(indexes) == list(range(3200))
        assert sum(store.batches) == 3200
        assert len(store.batches) < 3200
        assert proofs.root(store, 3200) == merkle.root(
            [merkle.leaf_hash(data) for data in store.entries()]
        )

    def test_bad_entry_fails_alone(self, store: CountingStore, signer: Signer) -> None:
        """An entry that is not canonical JSON fails; its neighbours are written."""
        ledger = open_ledger(store, signer, every=1000, interval=0)
        good = ledger.submit("test.note", {"n": 1})
        bad = ledger.submit("test.note", {"amount": 1.5})
        after = ledger.submit("test.note", {"n": 2})
        with pytest.raises(EntryError, match="float"):
            bad.result()
        ledger.close()

        assert (good.result().index, after.result().index) == (0, 1)

    def test_envelope_names_are_refused(
        self, store: CountingStore, signer: Signer
    ) -> None:
        """Fields may not overwrite the index, time or type."""
        ledger = open_ledger(store, signer, every=1000, interval=0)
        with pytest.raises(EntryError, match="envelope"):
            ledger.submit("test.note", {"index": 7})
        ledger.close()

    def test_store_failure_refuses_the_append(
        self, store: CountingStore, signer: Signer
    ) -> None:
        """When the database cannot write, the caller is told and nothing is counted."""
        ledger = open_ledger(store, signer, every=1000, interval=0)
        ledger.append("test.note", {"n": 0})
        store.broken = True
        with pytest.raises(StoreError, match="disk full"):
            ledger.append("test.note", {"n": 1})
        store.broken = False
        receipt = ledger.append("test.note", {"n": 2})
        ledger.close()

        assert receipt.index == 1
        assert store.size() == 2

    def test_closed_ledger_refuses(self, store: CountingStore, signer: Signer) -> None:
        """After close nothing more is accepted."""
        ledger = open_ledger(store, signer, every=1000, interval=0)
        ledger.close()

        with pytest.raises(LedgerError, match="closed"):
            ledger.append("test.note", {})

    def test_reopened_ledger_continues(
        self, store: CountingStore, signer: Signer
    ) -> None:
        """A ledger opened over an existing store carries on at the next index."""
        first = open_ledger(store, signer, every=1000, interval=0)
        for n in range(7):
            first.append("test.note", {"n": n})
        first.close()
        second = open_ledger(store, signer, every=1000, interval=0)
        receipt = second.append("test.note", {"n": 7})
        second.close()

        assert receipt.index == 7
        assert proofs.root(store, 8) == merkle.root(
            [merkle.leaf_hash(data) for data in store.entries()]
        )


class TestCheckpoints:
    def test_signed_every_n_entries(self, store: CountingStore, signer: Signer) -> None:
        """With every=10 and no timer, 25 entries give checkpoints at 10, 20 and 25."""
        ledger = open_ledger(store, signer, every=10, interval=0)
        for n in range(25):
            ledger.append("test.note", {"n": n})
        ledger.close()
        verifier = Verifier.from_key_string(signer.verifier_key_string())
        sizes = [stored.size for stored in store.checkpoints()]

        assert sizes[-1] == 25, "close signs what is left"
        assert sizes == sorted(set(sizes))
        for stored in store.checkpoints():
            checkpoint = open_checkpoint(stored.note, [verifier], origin=ORIGIN)
            assert checkpoint.root == proofs.root(store, stored.size)

    def test_signed_after_interval(self, store: CountingStore, signer: Signer) -> None:
        """With a short interval a checkpoint appears without more appends."""
        ledger = open_ledger(store, signer, every=1000, interval=0.05)
        ledger.append("test.note", {})
        deadline = threading.Event()
        for _ in range(100):
            if store.latest_checkpoint() is not None:
                break
            deadline.wait(0.02)
        latest = store.latest_checkpoint()
        ledger.close()

        assert latest is not None
        assert latest.size == 1

    def test_signed_after_interval_from_the_loop(
        self, store: CountingStore, signer: Signer
    ) -> None:
        """Entries committed on an event loop are signed within the interval too."""
        ledger = open_ledger(store, signer, every=1000, interval=0.05)

        async def scenario() -> int | None:
            for n in range(3):
                await ledger.append_async("test.note", {"n": n})
                await asyncio.sleep(0.2)
                latest = store.latest_checkpoint()
                if latest is None or latest.size != n + 1:
                    return n
            return None

        unsigned = asyncio.run(scenario())
        ledger.close()

        assert unsigned is None, f"entry {unsigned} was not signed within 0.2 s"

    def test_on_demand(self, store: CountingStore, signer: Signer) -> None:
        """checkpoint() signs the current size and returns the signed note."""
        ledger = open_ledger(store, signer, every=1000, interval=0)
        for n in range(3):
            ledger.append("test.note", {"n": n})
        note = ledger.checkpoint()
        ledger.close()
        verifier = Verifier.from_key_string(signer.verifier_key_string())

        assert open_checkpoint(note, [verifier]).size == 3

    def test_refuses_to_sign_a_fork(self, store: CountingStore, signer: Signer) -> None:
        """A stored checkpoint that the tree does not extend stops the next signing."""
        ledger = open_ledger(store, signer, every=1000, interval=0)
        for n in range(4):
            ledger.append("test.note", {"n": n})
        forged = sign_checkpoint(Checkpoint(ORIGIN, 2, bytes(32)), signer)
        store.add_checkpoint(StoredCheckpoint(2, forged))
        with pytest.raises(LedgerError, match=r"consisten|root"):
            ledger.checkpoint()
        ledger.close()


class TestAsync:
    def test_entry_error_reaches_the_awaiting_code(
        self, store: CountingStore, signer: Signer
    ) -> None:
        """append_async raises the entry's own error to its caller."""
        ledger = open_ledger(store, signer, every=1000, interval=0)

        async def scenario() -> None:
            with pytest.raises(EntryError, match="float"):
                await ledger.append_async("test.note", {"amount": 0.5})

        asyncio.run(scenario())
        ledger.close()

    def test_cancelled_wait_does_not_stop_the_writer(
        self, store: CountingStore, signer: Signer
    ) -> None:
        """Cancelling appends while they are written leaves the ledger working."""
        ledger = open_ledger(store, signer, every=1000, interval=0)

        async def scenario() -> int:
            waits = [
                asyncio.create_task(ledger.append_async("test.note", {"n": n}))
                for n in range(200)
            ]
            await asyncio.sleep(0)
            for wait in waits[::2]:
                wait.cancel()
            await asyncio.gather(*waits, return_exceptions=True)
            receipt = await ledger.append_async("test.note", {"after": True})
            return receipt.index

        last = asyncio.run(scenario())
        ledger.close()

        assert last == store.size() - 1
        assert [entries.decode(data)["index"] for data in store.entries()] == list(
            range(store.size())
        )

    def test_unexpected_failure_is_answered(
        self, store: CountingStore, signer: Signer, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A bug in the store fails that batch's callers, and the writer carries on."""
        ledger = open_ledger(store, signer, every=1000, interval=0)

        def broken(batch: Batch) -> None:
            raise RuntimeError("a bug")

        with monkeypatch.context() as patch:
            patch.setattr(store, "append", broken)
            with pytest.raises(LedgerError, match="writer failed: a bug"):
                ledger.append("test.note", {"n": 1})
        receipt = ledger.append("test.note", {"n": 2})
        ledger.close()

        assert receipt.index == 0


class TestRounds:
    def test_one_round_of_the_loop_is_one_commit(
        self, store: CountingStore, signer: Signer
    ) -> None:
        """Appends made in the same round of the event loop share one transaction,
        committed on the loop's own thread."""
        ledger = open_ledger(store, signer, every=1000, interval=0)
        threads: set[str] = set()
        committing = store.append

        def append(batch: Batch) -> None:
            threads.add(threading.current_thread().name)
            committing(batch)

        store.append = append  # type: ignore[method-assign]

        async def scenario() -> list[int]:
            receipts = await asyncio.gather(
                *(ledger.append_async("test.note", {"n": n}) for n in range(50))
            )
            return [receipt.index for receipt in receipts]

        indexes = asyncio.run(scenario())
        ledger.close()

        assert sorted(indexes) == list(range(50))
        assert store.batches == [50]
        assert threads == {threading.main_thread().name}

    def test_unhurried_entry_shares_the_next_hurried_commit(
        self, store: CountingStore, signer: Signer
    ) -> None:
        """An unhurried entry waits for company: the next hurried entry's commit."""
        ledger = open_ledger(store, signer, every=1000, interval=0)

        async def scenario() -> list[int]:
            later = asyncio.ensure_future(
                ledger.append_async("test.outcome", {"n": 0}, hurried=False)
            )
            await asyncio.sleep(0)
            assert store.batches == []
            now = await ledger.append_async("test.decision", {"n": 1})
            return [(await later).index, now.index]

        indexes = asyncio.run(scenario())
        ledger.close()

        assert indexes == [0, 1]
        assert store.batches == [2]

    def test_unhurried_entry_alone_is_committed_soon(
        self, store: CountingStore, signer: Signer
    ) -> None:
        """With no company, an unhurried entry is committed after UNHURRIED."""
        ledger = open_ledger(store, signer, every=1000, interval=0)

        async def scenario() -> tuple[int, float]:
            loop = asyncio.get_running_loop()
            started = loop.time()
            receipt = await ledger.append_async("test.outcome", {}, hurried=False)
            return receipt.index, loop.time() - started

        index, waited = asyncio.run(scenario())
        ledger.close()

        assert index == 0
        assert waited >= UNHURRIED * 0.9
        assert store.batches == [1]

    def test_cancelled_before_the_commit_is_withdrawn(
        self, store: CountingStore, signer: Signer
    ) -> None:
        """An append cancelled before its round commits is never written."""
        ledger = open_ledger(store, signer, every=1000, interval=0)

        async def scenario() -> None:
            kept = asyncio.ensure_future(ledger.append_async("test.note", {"n": 0}))
            dropped = asyncio.ensure_future(ledger.append_async("test.note", {"n": 1}))
            await asyncio.sleep(0)
            dropped.cancel()
            await asyncio.gather(kept, dropped, return_exceptions=True)

        asyncio.run(scenario())
        ledger.close()

        assert [entries.decode(data)["n"] for data in store.entries()] == [0]

    def test_round_left_at_close_is_refused(
        self, store: CountingStore, signer: Signer
    ) -> None:
        """A round still waiting when the ledger closes fails its callers."""
        ledger = open_ledger(store, signer, every=1000, interval=0)

        async def scenario() -> None:
            waiting = asyncio.ensure_future(
                ledger.append_async("test.outcome", {}, hurried=False)
            )
            await asyncio.sleep(0)
            ledger.close()
            with pytest.raises(LedgerError, match="closed"):
                await waiting

        asyncio.run(scenario())

        assert store.size() == 0

    def test_threads_and_loop_commit_in_one_order(
        self, store: CountingStore, signer: Signer
    ) -> None:
        """Appends from threads and from a loop at once keep the tree consistent."""
        ledger = open_ledger(store, signer, every=64, interval=0)

        def from_thread(worker: int) -> None:
            for n in range(40):
                ledger.append("test.thread", {"worker": worker, "n": n})

        async def from_loop() -> None:
            for n in range(40):
                await asyncio.gather(
                    *(
                        ledger.append_async("test.loop", {"n": n, "k": k})
                        for k in range(3)
                    )
                )

        workers = [threading.Thread(target=from_thread, args=(w,)) for w in range(3)]
        for worker in workers:
            worker.start()
        asyncio.run(from_loop())
        for worker in workers:
            worker.join()
        ledger.close()

        size = store.size()
        assert size == 3 * 40 + 40 * 3
        assert [entries.decode(data)["index"] for data in store.entries()] == list(
            range(size)
        )
        latest = store.latest_checkpoint()
        assert latest is not None
        assert latest.size == size
        checkpoint = open_checkpoint(
            latest.note,
            [Verifier.from_key_string(signer.verifier_key_string())],
            origin=ORIGIN,
        )
        leaves = [merkle.leaf_hash(data) for data in store.entries()]
        assert checkpoint.root == merkle.root(leaves)


class TestListeners:
    def test_told_of_each_batch_before_its_callers(
        self, store: CountingStore, signer: Signer
    ) -> None:
        """A listener sees every appended entry, in order, with its fields and bytes,
        before append() returns."""
        ledger = open_ledger(store, signer, every=1000, interval=0)
        told: list[Appended] = []
        ledger.listen(told.extend)

        first = ledger.append("test.note", {"n": 1})
        seen_by_then = len(told)
        ledger.append("test.note", {"n": 2})
        ledger.close()

        assert seen_by_then == 1
        assert [(a.index, a.kind, dict(a.fields)) for a in told] == [
            (first.index, "test.note", {"n": 1}),
            (first.index + 1, "test.note", {"n": 2}),
        ]
        assert [a.data for a in told] == list(store.entries())

    def test_failing_listener_does_not_fail_the_append(
        self, store: CountingStore, signer: Signer
    ) -> None:
        """A listener that raises is logged; the entry is durable all the same."""
        ledger = open_ledger(store, signer, every=1000, interval=0)

        def broken(appended: object) -> None:
            raise RuntimeError("listener bug")

        ledger.listen(broken)
        receipt = ledger.append("test.note", {"n": 1})
        ledger.close()

        assert receipt.index == 0
        assert store.size() == 1
