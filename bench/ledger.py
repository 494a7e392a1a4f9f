"""Ledger benchmarks: durable appends from concurrent writers through the real Ledger,
full offline verification with its peak memory, and proof generation.

Targets (from the ledger issue): 20,000 appends/s on SQLite and 10,000/s on PostgreSQL
from 32 writers; verification at 100,000 entries/s in flat memory; proofs under 1 ms.
"""

from __future__ import annotations

import json
import random
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import dataclass

from bench.appends import (
    DRIVERS,
    AppendRun,
    Opener,
    Timing,
    measure_appends,
    measure_store,
)
from bench.report import REPO, Table, percentile, record
from bench.stores import (
    CachedLedger,
    cached_postgres,
    cached_sqlite,
    fresh_postgres,
    fresh_sqlite,
    postgres_reachable,
    postgres_version,
)
from proctor.ledger import merkle, proofs
from proctor.storage.interface import Store

WRITERS = 32
WARMUP = 1.0
"""Seconds of appending before the measured window opens."""
SECONDS = 3.0
"""Seconds in the measured window of each append run."""
REPEATS = 3
CEILING_BATCHES = (16, 32)
CEILING_COUNT = 300
APPEND_TARGETS = {"sqlite": 20_000, "postgres": 10_000}
VERIFY_SIZES = (100_000, 1_000_000)
VERIFY_TARGET = 100_000
PROOFS = 2_000
WARM_PROOFS = 200
"""Untimed proofs first, as a running server's page cache would be warm."""
PROOF_TARGET_MS = 1.0


def _extra() -> list[str]:
    """The PostgreSQL server's version, for the machine line, when it is reachable."""
    if postgres_reachable() is not None:
        return []
    return [postgres_version()]


# Durable appends.


def append_row(backend: str, callers: str, runs: list[AppendRun]) -> list[str]:
    """One table row from repeated runs: the median run, and the range of rates."""
    ordered = sorted(runs, key=lambda run: run.rate)
    median, target = ordered[len(ordered) // 2], APPEND_TARGETS[backend]
    return [
        backend,
        f"{WRITERS} {callers}",
        f"{median.rate:,.0f}",
        f"{ordered[0].rate:,.0f}-{ordered[-1].rate:,.0f}",
        f"{median.mean_batch:.1f}",
        f"{median.cpu_per_entry * 1e6:.0f}",
        f"{percentile(median.latencies, 0.50) * 1000:.2f}",
        f"{percentile(median.latencies, 0.99) * 1000:.2f}",
        f"{target:,}",
        "yes" if median.rate >= target else "**no**",
    ]


def store_row(backend: str, opener: Opener) -> list[str]:
    """One row of the ceiling table: store.append alone at the Ledger's batch sizes."""
    cells = [backend]
    for size in CEILING_BATCHES:
        seconds = measure_store(opener, size, CEILING_COUNT)
        cells += [f"{seconds * 1000:.2f}", f"{size / seconds:,.0f}"]

    return cells


def bench_append() -> None:
    """Durable appends/s from 32 threads and from 32 asyncio tasks, per backend."""
    openers: dict[str, Opener] = {"sqlite": fresh_sqlite}
    skipped = postgres_reachable()
    if skipped is None:
        openers["postgres"] = fresh_postgres
    timing = Timing(WARMUP, SECONDS)
    rows, ceilings = [], []
    for backend, opener in openers.items():
        for callers in DRIVERS:
            print(f"appending: {backend}, {WRITERS} {callers}", file=sys.stderr)
            runs = [
                measure_appends(opener, callers, WRITERS, timing)
                for _ in range(REPEATS)
            ]
            rows.append(append_row(backend, callers, runs))
        ceilings.append(store_row(backend, opener))
    header = ["store", "writers", "entries/s", "range", "mean batch", "CPU µs/entry"]
    header += ["p50 ms", "p99 ms", "target/s", "met"]
    ceiling_header = ["store"]
    for size in CEILING_BATCHES:
        ceiling_header += [f"ms per {size}", f"entries/s at {size}"]
    body = (
        "Durable appends through `Ledger` (group commit, a signed checkpoint every "
        f"1,000 entries): {WRITERS} writers, each appending one decision entry (~580 "
        f"bytes) and waiting for it before the next. {REPEATS} runs of {SECONDS:g} s "
        f"after {WARMUP:g} s of warm-up, each on a fresh store; the median run is "
        "shown with the range of all. Mean batch is entries per store transaction; "
        "CPU is this process's (all threads, not the PostgreSQL server's) per entry; "
        "latency runs from the call to its durable return.\n\n"
        + Table(header, rows).to_markdown()
        + "\nThe ceiling: `store.append` alone from one thread, batches built "
        "beforehand, at the batch sizes 32 writers can give the Ledger.\n\n"
        + Table(ceiling_header, ceilings).to_markdown()
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

    @property
    def rate(self) -> float:
        return self.size / self.seconds


def verify_row(runs: list[VerifyRun]) -> list[str]:
    """One table row from repeated runs: the median run, the range, the worst peak."""
    ordered = sorted(runs, key=lambda run: run.rate)
    median = ordered[len(ordered) // 2]
    return [
        median.backend,
        f"{median.size:,}",
        f"{median.seconds:.2f}",
        f"{median.rate:,.0f}",
        f"{ordered[0].rate:,.0f}-{ordered[-1].rate:,.0f}",
        f"{median.rss_before_mib:.1f}",
        f"{max(run.peak_rss_mib for run in runs):.1f}",
        f"{VERIFY_TARGET:,}",
        "yes" if median.rate >= VERIFY_TARGET else "**no**",
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
    rows = []
    for size in VERIFY_SIZES:
        for cached in cached_ledgers(size):
            print(f"verifying: {cached.backend}, {size:,} entries", file=sys.stderr)
            rows.append(verify_row([verify_in_child(cached) for _ in range(REPEATS)]))
    table = Table(
        [
            "store",
            "entries",
            "seconds",
            "entries/s",
            "range",
            "RSS before MiB",
            "peak RSS MiB",
            "target/s",
            "met",
        ],
        rows,
    )
    body = (
        "`verify_ledger` over a whole ledger (decision entries, a signed checkpoint "
        f"every 1,000) in a fresh process, {REPEATS} times, warm OS cache; the median "
        "run is shown with the range of all. RSS before is the peak after "
        "imports and opening the store; peak RSS is the peak after verifying (VmHWM: "
        "`ru_maxrss` would carry over the parent's peak through fork and exec). Flat "
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
    for number in range(WARM_PROOFS + PROOFS):
        index = rng.randrange(size)
        began = time.perf_counter()
        proof = proofs.inclusion_proof(store, index, size)
        spent = time.perf_counter() - began
        # Untimed: a fast wrong proof would be no result at all.
        leaf = merkle.leaf_hash(store.entry(index))
        merkle.verify_inclusion(leaf, index, size, proof, root)
        if number >= WARM_PROOFS:
            times.append(spent)

    return times


def time_consistency(store: Store, rng: random.Random) -> list[float]:
    """Time PROOFS consistency proofs between random tree sizes."""
    size, times = store.size(), []
    for number in range(WARM_PROOFS + PROOFS):
        old = rng.randint(1, size)
        new = rng.randint(old, size)
        began = time.perf_counter()
        proof = proofs.consistency_proof(store, old, new)
        spent = time.perf_counter() - began
        old_root, new_root = proofs.root(store, old), proofs.root(store, new)
        merkle.verify_consistency(old, new, proof, old_root, new_root)
        if number >= WARM_PROOFS:
            times.append(spent)

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
        f"between random sizes, each after {WARM_PROOFS} untimed ones. A time covers "
        "`proofs.*_proof`: one query for every subtree hash the proof needs. "
        "Every proof is also verified, untimed. Met: p99 under the target.\n\n"
        + table.to_markdown()
    )
    record("ledger.proofs", "Ledger: proofs", body, extra=_extra())


BENCHMARKS: dict[str, Callable[[], None]] = {
    "ledger.append": bench_append,
    "ledger.verify": bench_verify,
    "ledger.proofs": bench_proofs,
}
