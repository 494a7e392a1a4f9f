"""Measure durable appends: many writers through a real Ledger (threads or asyncio
tasks), and the store alone committing batches of a given size, as a ceiling."""

from __future__ import annotations

import asyncio
import resource
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass

from bench.stores import KIND, ORIGIN, Tally, decision
from proctor.ledger import entries, merkle
from proctor.ledger.log import Ledger
from proctor.ledger.note import Signer
from proctor.storage.interface import Batch, Store

Stamps = list[tuple[float, float]]
"""(when an append returned, how long it took), in perf_counter seconds."""

Opener = Callable[[Tally], AbstractContextManager[Store]]


@dataclass(frozen=True)
class Timing:
    """How long to warm up, and how long the measured window stays open."""

    warmup: float
    seconds: float


@dataclass(frozen=True)
class AppendRun:
    """What one measured window of concurrent appends did."""

    seconds: float
    entries: int
    batches: int
    latencies: list[float]
    cpu: float
    """Seconds of CPU this process used in the window, all threads together."""

    @property
    def rate(self) -> float:
        return self.entries / self.seconds

    @property
    def cpu_per_entry(self) -> float:
        return self.cpu / max(self.entries, 1)

    @property
    def mean_batch(self) -> float:
        return self.entries / max(self.batches, 1)


class Window:
    """The measured window: the store's tally when it opened and when it closed."""

    def __init__(self, tally: Tally, timing: Timing) -> None:
        self.tally, self.timing = tally, timing
        self.opened = self.closed = self.cpu_opened = self.cpu_closed = 0.0
        self.start = self.end = (0, 0)
        self.stop = threading.Event()

    def open(self) -> None:
        self.opened, self.start = time.perf_counter(), self.tally.snapshot()
        self.cpu_opened = _cpu()

    def close(self) -> None:
        self.closed, self.end = time.perf_counter(), self.tally.snapshot()
        self.cpu_closed = _cpu()
        self.stop.set()

    def run(self, stamps: Stamps) -> AppendRun:
        """Keep the appends that returned inside the window; count what was stored."""
        latencies = [
            latency for ended, latency in stamps if self.opened <= ended <= self.closed
        ]
        return AppendRun(
            seconds=self.closed - self.opened,
            entries=self.end[1] - self.start[1],
            batches=self.end[0] - self.start[0],
            latencies=latencies,
            cpu=self.cpu_closed - self.cpu_opened,
        )


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _thread_writer(ledger: Ledger, number: int, window: Window, out: Stamps) -> None:
    step = 0
    while not window.stop.is_set():
        fields = decision(number * 10_000_000 + step)
        began = time.perf_counter()
        ledger.append(KIND, fields)
        ended = time.perf_counter()
        out.append((ended, ended - began))
        step += 1


def drive_threads(ledger: Ledger, writers: int, window: Window) -> Stamps:
    """Append from ``writers`` threads, each waiting for its entry before the next."""
    stamps: list[Stamps] = [[] for _ in range(writers)]
    threads = [
        threading.Thread(target=_thread_writer, args=(ledger, n, window, stamps[n]))
        for n in range(writers)
    ]
    for thread in threads:
        thread.start()
    time.sleep(window.timing.warmup)
    window.open()
    time.sleep(window.timing.seconds)
    window.close()
    for thread in threads:
        thread.join()

    return [stamp for writer in stamps for stamp in writer]


async def _task_writer(
    ledger: Ledger, number: int, window: Window, out: Stamps
) -> None:
    step = 0
    while not window.stop.is_set():
        fields = decision(number * 10_000_000 + step)
        began = time.perf_counter()
        await ledger.append_async(KIND, fields)
        ended = time.perf_counter()
        out.append((ended, ended - began))
        step += 1


async def _drive_tasks(ledger: Ledger, writers: int, window: Window) -> Stamps:
    stamps: Stamps = []
    tasks = [
        asyncio.create_task(_task_writer(ledger, number, window, stamps))
        for number in range(writers)
    ]
    await asyncio.sleep(window.timing.warmup)
    window.open()
    await asyncio.sleep(window.timing.seconds)
    window.close()
    await asyncio.gather(*tasks)

    return stamps


def drive_tasks(ledger: Ledger, writers: int, window: Window) -> Stamps:
    """Append from ``writers`` asyncio tasks sharing one event loop."""
    return asyncio.run(_drive_tasks(ledger, writers, window))


Driver = Callable[[Ledger, int, Window], Stamps]
DRIVERS: dict[str, Driver] = {"threads": drive_threads, "tasks": drive_tasks}


def measure_appends(
    opener: Opener, callers: str, writers: int, timing: Timing
) -> AppendRun:
    """Run one window of appends through a real Ledger on a fresh store.

    The Ledger keeps its defaults: group commit of up to 1,024 entries and a signed
    checkpoint every 1,000 entries, so signing is part of the cost.
    """
    tally = Tally()
    with opener(tally) as store:
        ledger = Ledger(store, Signer.generate(ORIGIN), origin=ORIGIN)
        window = Window(tally, timing)
        try:
            stamps = DRIVERS[callers](ledger, writers, window)
        finally:
            ledger.close()

    return window.run(stamps)


def batches(count: int, size: int) -> list[Batch]:
    """Build ``count`` consecutive valid batches of ``size`` decision entries."""
    edge, built = merkle.CompactRange(), []
    for _ in range(count):
        start, stamp = edge.size, entries.now()
        rows, nodes = [], []
        for index in range(start, start + size):
            data = entries.encode(index, stamp, KIND, decision(index))
            rows.append(data)
            nodes.extend(edge.append(merkle.leaf_hash(data)))
        built.append(Batch(start, rows, nodes))

    return built


def measure_store(opener: Opener, size: int, count: int) -> float:
    """Return the seconds one thread takes per ``store.append`` of ``size`` entries.

    The batches are built beforehand: this is the durable commit alone, the floor
    under any Ledger cycle that writes batches of that size.
    """
    prepared = batches(count, size)
    with opener(Tally()) as store:
        began = time.perf_counter()
        for batch in prepared:
            store.append(batch)
        spent = time.perf_counter() - began

    return spent / count
