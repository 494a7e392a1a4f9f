"""Ledger benchmarks: durable appends from concurrent writers through the real Ledger,
full offline verification with its peak memory, and proof generation.

Targets (from the ledger issue): 20,000 appends/s on SQLite and 10,000/s on PostgreSQL
from 32 writers; verification at 100,000 entries/s in flat memory; proofs under 1 ms.
"""

from __future__ import annotations

import asyncio
import json
import random
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, closing
from dataclasses import dataclass

from bench.report import REPO, Table, percentile, record
from bench.stores import (
    KIND,
    ORIGIN,
    CachedLedger,
    Tally,
    cached_postgres,
    cached_sqlite,
    decision,
    fresh_postgres,
    fresh_sqlite,
    postgres_reachable,
    postgres_version,
)
from proctor.ledger import merkle, proofs
from proctor.ledger.log import Ledger
from proctor.ledger.note import Signer
from proctor.storage.interface import Store

WRITERS = 32
WARMUP = 1.0
"""Seconds of appending before the measured window opens."""
SECONDS = 5.0
"""Seconds in the measured window of each append run."""
APPEND_TARGETS = {"sqlite": 20_000, "postgres": 10_000}
VERIFY_SIZES = (100_000, 1_000_000)
VERIFY_TARGET = 100_000
PROOFS = 2_000
PROOF_TARGET_MS = 1.0


def _extra() -> list[str]:
    """The PostgreSQL server's version, for the machine line, when it is reachable."""
    if postgres_reachable() is not None:
        return []
    return [postgres_version()]


# Durable appends.


@dataclass(frozen=True)
class AppendRun:
    """What one measured window of concurrent appends did."""

    backend: str
    callers: str
    seconds: float
    entries: int
    batches: int
    latencies: list[float]

    @property
    def rate(self) -> float:
        return self.entries / self.seconds

    def row(self) -> list[str]:
        target = APPEND_TARGETS[self.backend]
        return [
            self.backend,
            f"{WRITERS} {self.callers}",
            f"{self.rate:,.0f}",
            f"{self.entries / max(self.batches, 1):.1f}",
            f"{percentile(self.latencies, 0.50) * 1000:.2f}",
            f"{percentile(self.latencies, 0.99) * 1000:.2f}",
            f"{target:,}",
            "yes" if self.rate >= target else "**no**",
        ]


class Window:
    """The measured window: opened after the warm-up, closed after SECONDS."""

    def __init__(self, tally: Tally) -> None:
        self.tally = tally
        self.opened = self.closed = 0.0
        self.start = self.end = (0, 0)
        self.stop = threading.Event()

    def open(self) -> None:
        self.opened, self.start = time.perf_counter(), self.tally.snapshot()

    def close(self) -> None:
        self.closed, self.end = time.perf_counter(), self.tally.snapshot()
        self.stop.set()

    def run(
        self, backend: str, callers: str, stamps: list[tuple[float, float]]
    ) -> AppendRun:
        """Keep what finished inside the window and count what the store committed."""
        latencies = [
            latency for ended, latency in stamps if self.opened <= ended <= self.closed
        ]
        return AppendRun(
            backend=backend,
            callers=callers,
            seconds=self.closed - self.opened,
            entries=self.end[1] - self.start[1],
            batches=self.end[0] - self.start[0],
            latencies=latencies,
        )


def _thread_writer(
    ledger: Ledger, number: int, stop: threading.Event, out: list[tuple[float, float]]
) -> None:
    step = 0
    while not stop.is_set():
        fields = decision(number * 10_000_000 + step)
        began = time.perf_counter()
        ledger.append(KIND, fields)
        ended = time.perf_counter()
        out.append((ended, ended - began))
        step += 1


def drive_threads(ledger: Ledger, window: Window) -> list[tuple[float, float]]:
    """Append from WRITERS threads through the window; return (end, latency) stamps."""
    stamps: list[list[tuple[float, float]]] = [[] for _ in range(WRITERS)]
    threads = [
        threading.Thread(
            target=_thread_writer, args=(ledger, number, window.stop, stamps[number])
        )
        for number in range(WRITERS)
    ]
    for thread in threads:
        thread.start()
    time.sleep(WARMUP)
    window.open()
    time.sleep(SECONDS)
    window.close()
    for thread in threads:
        thread.join()

    return [stamp for writer in stamps for stamp in writer]


async def _task_writer(
    ledger: Ledger, number: int, stop: threading.Event, out: list[tuple[float, float]]
) -> None:
    step = 0
    while not stop.is_set():
        fields = decision(number * 10_000_000 + step)
        began = time.perf_counter()
        await ledger.append_async(KIND, fields)
        ended = time.perf_counter()
        out.append((ended, ended - began))
        step += 1


async def _drive_tasks(ledger: Ledger, window: Window) -> list[tuple[float, float]]:
    stamps: list[tuple[float, float]] = []
    tasks = [
        asyncio.create_task(_task_writer(ledger, number, window.stop, stamps))
        for number in range(WRITERS)
    ]
    await asyncio.sleep(WARMUP)
    window.open()
    await asyncio.sleep(SECONDS)
    window.close()
    await asyncio.gather(*tasks)

    return stamps


def drive_tasks(ledger: Ledger, window: Window) -> list[tuple[float, float]]:
    """Append from WRITERS asyncio tasks on one loop; return (end, latency) stamps."""
    return asyncio.run(_drive_tasks(ledger, window))


Driver = Callable[[Ledger, Window], list[tuple[float, float]]]
Opener = Callable[[Tally], AbstractContextManager[Store]]


def measure_appends(
    backend: str, opener: Opener, callers: str, drive: Driver
) -> AppendRun:
    """Run one window of appends on a fresh store through a real Ledger."""
    tally = Tally()
    with opener(tally) as store:
        ledger = Ledger(store, Signer.generate(ORIGIN), origin=ORIGIN)
        window = Window(tally)
        try:
            stamps = drive(ledger, window)
        finally:
            ledger.close()

    return window.run(backend, callers, stamps)


def bench_append() -> None:
    """Durable appends/s from 32 threads and from 32 asyncio tasks, per backend."""
    openers: dict[str, Opener] = {"sqlite": fresh_sqlite}
    skipped = postgres_reachable()
    if skipped is None:
        openers["postgres"] = fresh_postgres
    runs = []
    for backend, opener in openers.items():
        for callers, drive in (("threads", drive_threads), ("tasks", drive_tasks)):
            print(f"appending: {backend}, {WRITERS} {callers}", file=sys.stderr)
            runs.append(measure_appends(backend, opener, callers, drive))
    table = Table(
        [
            "store",
            "writers",
            "entries/s",
            "mean batch",
            "p50 ms",
            "p99 ms",
            "target/s",
            "met",
        ],
        [run.row() for run in runs],
    )
    body = (
        f"Durable appends through `Ledger` (group commit, checkpoint every 1,000), "
        f"{WRITERS} writers each appending one decision entry (~580 bytes) at a time, "
        f"{SECONDS:.0f} s measured after {WARMUP:.0f} s of warm-up. Mean batch is "
        "entries per store transaction; latency is from the call to its durable "
        "return.\n\n" + table.to_markdown()
    )
    if skipped:
        body += f"\nPostgreSQL skipped: {skipped}.\n"
    record("ledger.append", "Ledger: durable appends", body, extra=_extra())


# Verification.


@dataclass(frozen=True)
class VerifyRun:
    """One verification of a cached ledger in a fresh process."""

    backend: str
    size: int
    seconds: float
    rss_before_mib: float
    peak_rss_mib: float

    def row(self) -> list[str]:
        rate = self.size / self.seconds
        return [
            self.backend,
            f"{self.size:,}",
            f"{self.seconds:.2f}",
            f"{rate:,.0f}",
            f"{self.rss_before_mib:.1f}",
            f"{self.peak_rss_mib:.1f}",
            f"{VERIFY_TARGET:,}",
            "yes" if rate >= VERIFY_TARGET else "**no**",
        ]


def verify_in_child(cached: CachedLedger) -> VerifyRun:
    """Time ``verify_ledger`` over the cached ledger in a fresh Python process."""
    where = str(cached.path) if cached.path else cached.schema or ""
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.verify_child",
            cached.backend,
            where,
            cached.vkey,
        ],
        cwd=REPO,
        check=True,
        capture_output=True,
        text=True,
    )
    result = json.loads(completed.stdout)
    if result["size"] != cached.size:
        raise RuntimeError(f"verified {result['size']} entries, expected {cached.size}")

    return VerifyRun(
        cached.backend,
        cached.size,
        result["seconds"],
        result["rss_before_mib"],
        result["peak_rss_mib"],
    )


def cached_ledgers(size: int) -> Iterator[CachedLedger]:
    """The cached ledgers of ``size`` entries on every reachable backend."""
    yield cached_sqlite(size)
    if postgres_reachable() is None:
        yield cached_postgres(size)


def bench_verify() -> None:
    """Full verification rate and peak memory at 100,000 and 1,000,000 entries."""
    runs = []
    for size in VERIFY_SIZES:
        for cached in cached_ledgers(size):
            print(f"verifying: {cached.backend}, {size:,} entries", file=sys.stderr)
            runs.append(verify_in_child(cached))
    table = Table(
        [
            "store",
            "entries",
            "seconds",
            "entries/s",
            "RSS before MiB",
            "peak RSS MiB",
            "target/s",
            "met",
        ],
        [run.row() for run in runs],
    )
    body = (
        "`verify_ledger` over a whole ledger (decision entries, a signed checkpoint "
        "every 1,000) in a fresh process, warm OS cache. RSS before is the peak after "
        "imports and opening the store; peak RSS is `ru_maxrss` after verifying. Flat "
        "memory means the peak does not grow with the ledger.\n\n" + table.to_markdown()
    )
    record("ledger.verify", "Ledger: full verification", body, extra=_extra())


# Proofs.


@dataclass(frozen=True)
class ProofRun:
    """Per-proof times of one kind of proof on one ledger."""

    backend: str
    kind: str
    size: int
    times: list[float]

    def row(self) -> list[str]:
        p99 = percentile(self.times, 0.99) * 1000
        return [
            self.backend,
            self.kind,
            f"{self.size:,}",
            f"{len(self.times):,}",
            f"{statistics.fmean(self.times) * 1000:.3f}",
            f"{percentile(self.times, 0.50) * 1000:.3f}",
            f"{p99:.3f}",
            f"< {PROOF_TARGET_MS:g}",
            "yes" if p99 < PROOF_TARGET_MS else "**no**",
        ]


def time_inclusion(store: Store, rng: random.Random) -> list[float]:
    """Time PROOFS inclusion proofs of random entries in the whole tree."""
    size, times = store.size(), []
    root = proofs.root(store, size)
    for _ in range(PROOFS):
        index = rng.randrange(size)
        began = time.perf_counter()
        proof = proofs.inclusion_proof(store, index, size)
        times.append(time.perf_counter() - began)
        # Untimed: a fast wrong proof would be no result at all.
        leaf = merkle.leaf_hash(store.entry(index))
        merkle.verify_inclusion(leaf, index, size, proof, root)

    return times


def time_consistency(store: Store, rng: random.Random) -> list[float]:
    """Time PROOFS consistency proofs between random tree sizes."""
    size, times = store.size(), []
    for _ in range(PROOFS):
        old = rng.randint(1, size)
        new = rng.randint(old, size)
        began = time.perf_counter()
        proofs.consistency_proof(store, old, new)
        times.append(time.perf_counter() - began)

    return times


def bench_proofs() -> None:
    """Inclusion and consistency proof times on the 1,000,000-entry ledgers."""
    runs = []
    size = VERIFY_SIZES[-1]
    for cached in cached_ledgers(size):
        print(f"proving: {cached.backend}, {size:,} entries", file=sys.stderr)
        with closing(cached.open()) as store:
            rng = random.Random(size)
            runs.append(
                ProofRun(cached.backend, "inclusion", size, time_inclusion(store, rng))
            )
            runs.append(
                ProofRun(
                    cached.backend, "consistency", size, time_consistency(store, rng)
                )
            )
    table = Table(
        [
            "store",
            "proof",
            "entries",
            "proofs",
            "mean ms",
            "p50 ms",
            "p99 ms",
            "target ms",
            "met",
        ],
        [run.row() for run in runs],
    )
    body = (
        f"`proctor.ledger.proofs` on the {size:,}-entry ledger: {PROOFS:,} inclusion "
        "proofs of random entries in the whole tree, then as many consistency proofs "
        "between random sizes. Each time covers the size check and the one node query; "
        "every inclusion proof is also verified, untimed.\n\n" + table.to_markdown()
    )
    record("ledger.proofs", "Ledger: proofs", body, extra=_extra())


BENCHMARKS: dict[str, Callable[[], None]] = {
    "ledger.append": bench_append,
    "ledger.verify": bench_verify,
    "ledger.proofs": bench_proofs,
}
