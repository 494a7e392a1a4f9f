"""HTTP gateway benchmark: requests per second, latency, CPU per call and memory of
``proctor serve`` against direct calls, ``mitmdump`` in reverse-proxy mode and a
minimal proxy on Proctor's own stack (the floor), all in one run against the same
loopback upstream.

Every process has its own interpreter: the upstream (a tiny ``aiohttp.web`` app), the
gateway (``proctor serve`` itself, SQLite ledger, each decision durable before the call
is forwarded), ``mitmdump``, and the load generator (an ``aiohttp`` client), so no two
share a GIL. CPU and memory are read from ``/proc/<pid>`` of the proxy process.

Targets (from the HTTP gateway issue): added p50 under 1.5 ms and p99 under 5 ms at
concurrency 1; at least twice mitmdump's throughput at concurrency 32; gateway CPU
under 1 ms per call; peak memory flat over a 100,000-call run.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from importlib.metadata import version
from pathlib import Path
from typing import IO

import aiohttp
from aiohttp import web
from starlette.types import Receive, Scope, Send

from bench.report import REPO, Table, percentile, record
from proctor.home import Home, init
from proctor.ledger.verify import verify_ledger
from proctor.runtime import Runtime
from proctor.tasks.service import ScopeText

BIN = Path(sys.executable).parent
MITMDUMP_ENV = "PROCTOR_BENCH_MITMDUMP"
MITMDUMP_FALLBACK = Path("/tmp/mitm/bin/mitmdump")
"""A separate venv: mitmproxy 11 pins cryptography and h11 below the project's."""
WARMUP = 300
RUNS = ((1, 2_000), (32, 10_000))
"""(concurrency, requests) of each measured run."""
ROUNDS = 10
"""Turns each path takes per concurrency, a tenth of its calls each."""
TURN_WARMUP = 50
"""Untimed calls that open each turn (at least four per connection): what is timed
is a stream of calls, not a process waking from the other paths' turns."""
RUN_SECONDS = 60.0
"""A measured run stops early after this long, and says how many calls it made."""
MEMORY_CALLS = 100_000
MEMORY_MARKS = (0.1, 0.5, 1.0)
MEMORY_SECONDS = 420.0
ITEM = "/items/42"
API_KEY = "bench-api-key-9f2c7e1a4b"
TARGET_ADDED_P50_MS = 1.5
TARGET_P99_MS = 5.0
TARGET_RATIO = 2.0
TARGET_CPU_MS = 1.0
FLAT_GROWTH = 1.10
"""Memory counts as flat when the last sample is within 10% of the 10% sample."""

SCHEMA = """
namespace Bench {
  entity Store;
  action ReadItem appliesTo {
    principal: [Proctor::Agent],
    resource: [Store],
    context: { task: String, user: String, approved: Bool, item: String }
  };
}
"""
SCOPE = """\
[[allow]]
id = "read-items"
action = 'Bench::Action::"ReadItem"'
resource = 'Bench::Store::"main"'
"""
SERVICE = """
[services.bench]
base_url = "http://127.0.0.1:{port}"
credential = {{ secret = "bench-api-key", style = "header", name = "X-Api-Key" }}

[[services.bench.routes]]
method = "GET"
path = "/items/{{item}}"
action = 'Bench::Action::"ReadItem"'
resource = 'Bench::Store::"main"'
context.item = "path.item"
"""


@dataclass(frozen=True)
class Endpoint:
    """One way to reach the upstream: its URL, headers, and the process to watch."""

    name: str
    url: str
    headers: dict[str, str]
    pid: int


@dataclass(frozen=True)
class Load:
    """What one load generator run timed: latencies in ms, wall seconds, and the CPU
    seconds the watched process spent meanwhile."""

    latencies: list[float]
    seconds: float
    cpu_seconds: float = 0.0

    @property
    def rate(self) -> float:
        return len(self.latencies) / self.seconds


@dataclass(frozen=True)
class Run:
    """One measured run of one path at one concurrency."""

    path: str
    concurrency: int
    load: Load
    cpu_seconds: float


@dataclass(frozen=True)
class Memory:
    """The gateway's resident memory over a long run, in MiB."""

    calls: int
    seconds: float
    samples: list[tuple[int, float]]
    peak: float


def gateway() -> None:
    """Measure direct, Proctor and mitmdump side by side; record the HTTP section."""
    mitmdump = _mitmdump()
    with tempfile.TemporaryDirectory(prefix="proctor-bench-http-") as folder:
        processes: list[subprocess.Popen[bytes]] = []
        try:
            port = _free_port()
            processes.append(_start(["--upstream", str(port)], port))
            home = _home(Path(folder) / "home", port)
            direct = Endpoint("direct", _url(port, ITEM), {}, processes[0].pid)
            token = _token(home)
            proctor = _serve(home, Path(folder) / "serve.log", token, processes)
            mitm = _mitm(mitmdump, port, processes)
            floor = _floor(port, processes)
            runs = _measure([direct, proctor, mitm, floor])
            memory = _memory(proctor)
        finally:
            for process in reversed(processes):
                _stop(process)
        recorded = _verified(home)
    _record(runs, memory, recorded, _mitm_version(mitmdump))


def _serve(
    home: Home, log: Path, token: str, processes: list[subprocess.Popen[bytes]]
) -> Endpoint:
    # `proctor serve` itself: its uvicorn options and its INFO line per call.
    port = _free_port()
    command = [str(BIN / "proctor"), "serve", "--home", str(home.path)]
    with log.open("wb") as output:
        process = _spawn([*command, "--port", str(port)], port, output)
    processes.append(process)
    headers = {"Authorization": f"Bearer {token}"}

    return Endpoint("proctor", _url(port, f"/http/bench{ITEM}"), headers, process.pid)


def _mitm(
    mitmdump: Path, upstream: int, processes: list[subprocess.Popen[bytes]]
) -> Endpoint:
    port = _free_port()
    reverse = f"reverse:http://127.0.0.1:{upstream}"
    command = [str(mitmdump), "--mode", reverse, "--listen-host", "127.0.0.1", "-q"]
    process = _spawn([*command, "--listen-port", str(port)], port)
    processes.append(process)

    return Endpoint("mitmdump", _url(port, ITEM), {}, process.pid)


def _floor(upstream: int, processes: list[subprocess.Popen[bytes]]) -> Endpoint:
    port = _free_port()
    process = _start(["--floor", str(port), str(upstream)], port)
    processes.append(process)

    return Endpoint("floor", _url(port, ITEM), {}, process.pid)


def _url(port: int, path: str) -> str:
    return f"http://127.0.0.1:{port}{path}"


# The measured runs.


def _measure(paths: list[Endpoint]) -> list[Run]:
    for path in paths:
        _load(path, 8, WARMUP)
    runs = []
    for concurrency, count in RUNS:
        print(f"http: c={concurrency} n={count} per path", file=sys.stderr)
        runs.extend(_rounds(paths, concurrency, count))

    return runs


def _rounds(paths: list[Endpoint], concurrency: int, count: int) -> list[Run]:
    # The paths take turns, a slice of the calls each, in rotating order, so a
    # change in the machine's load falls on all of them alike.
    latencies: list[list[float]] = [[] for _ in paths]
    seconds, cpu = [0.0] * len(paths), [0.0] * len(paths)
    warm = max(TURN_WARMUP, 4 * concurrency)
    for round_ in range(ROUNDS):
        for offset in range(len(paths)):
            number = (round_ + offset) % len(paths)
            load = _load(paths[number], concurrency, count // ROUNDS, warm=warm)
            cpu[number] += load.cpu_seconds
            latencies[number].extend(load.latencies)
            seconds[number] += load.seconds

    return [
        Run(path.name, concurrency, Load(latencies[n], seconds[n]), cpu[n])
        for n, path in enumerate(paths)
    ]


def _memory(path: Endpoint) -> Memory:
    print(f"http: memory over {MEMORY_CALLS:,} calls", file=sys.stderr)
    samples, done, seconds = [(0, _rss_mib(path.pid))], 0, 0.0
    for mark in MEMORY_MARKS:
        remaining = MEMORY_SECONDS - seconds
        if remaining <= 0:
            break
        load = _load(path, 32, round(MEMORY_CALLS * mark) - done, remaining)
        done += len(load.latencies)
        seconds += load.seconds
        samples.append((done, _rss_mib(path.pid)))

    return Memory(done, seconds, samples, _status_mib(path.pid, "VmHWM"))


def _load(
    path: Endpoint,
    concurrency: int,
    count: int,
    seconds: float = RUN_SECONDS,
    *,
    warm: int = 0,
) -> Load:
    # The load generator is its own process, so its event loop never waits on ours.
    order = Order(path.url, path.headers, concurrency, count, seconds, warm, path.pid)
    answer = subprocess.run(
        [sys.executable, "-m", "bench.http_gateway", "--load"],
        input=json.dumps(asdict(order)).encode(),
        capture_output=True,
        cwd=REPO,
        check=False,
    )
    if answer.returncode != 0:
        raise SystemExit(f"the load generator failed on {path.name}: {answer.stderr!r}")
    found = json.loads(answer.stdout)

    return Load(found["latencies"], found["seconds"], found["cpu_seconds"])


@dataclass(frozen=True)
class Order:
    """What the load generator is asked: ``warm`` untimed calls, then ``count``
    timed ones (for ``seconds`` at most) from ``concurrency`` workers, and the CPU
    process ``pid`` spends during the timed ones."""

    url: str
    headers: dict[str, str]
    concurrency: int
    count: int
    seconds: float
    warm: int
    pid: int


def generate_load() -> None:
    """Carry out the Order read as JSON from stdin; print JSON results.

    Raises SystemExit on any answer but 200.
    """
    order = Order(**json.loads(sys.stdin.read()))
    json.dump(asyncio.run(_generate(order)), sys.stdout)


async def _generate(order: Order) -> dict[str, object]:
    connector = aiohttp.TCPConnector(limit=order.concurrency)
    async with aiohttp.ClientSession(
        connector=connector, headers=order.headers
    ) as session:
        await _calls(session, order, order.warm)
        before, started = _cpu_seconds(order.pid), time.perf_counter()
        latencies = await _calls(session, order, order.count)
        elapsed = time.perf_counter() - started
        cpu = _cpu_seconds(order.pid) - before

    return {"latencies": latencies, "seconds": elapsed, "cpu_seconds": cpu}


async def _calls(
    session: aiohttp.ClientSession, order: Order, count: int
) -> list[float]:
    latencies: list[float] = []
    deadline = time.perf_counter() + order.seconds

    async def worker() -> None:
        while len(latencies) < count and time.perf_counter() < deadline:
            begun = time.perf_counter()
            async with session.get(order.url) as response:
                await response.read()
                if response.status != 200:
                    raise SystemExit(f"{order.url} answered {response.status}")
            latencies.append((time.perf_counter() - begun) * 1000)

    await asyncio.gather(*(worker() for _ in range(order.concurrency)))

    return latencies[:count]


# Reading /proc.


def _cpu_seconds(pid: int) -> float:
    # proc(5): the first field of each thread's schedstat is its time on a CPU in
    # nanoseconds, kept by the scheduler; utime and stime are only sampled at each
    # clock tick, too coarse for a turn of a few hundred calls.
    threads = Path(f"/proc/{pid}/task").glob("*/schedstat")
    return sum(int(path.read_text().split()[0]) for path in threads) / 1e9


def _status_mib(pid: int, field: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise SystemExit(f"no {field} in /proc/{pid}/status")


def _rss_mib(pid: int) -> float:
    return _status_mib(pid, "VmRSS")


# Setting up and tearing down.


def _mitmdump() -> Path:
    found = os.environ.get(MITMDUMP_ENV) or shutil.which("mitmdump")
    path = Path(found) if found else MITMDUMP_FALLBACK
    if not path.exists():
        raise SystemExit(
            f"mitmdump not found: set {MITMDUMP_ENV}, or `python3 -m venv /tmp/mitm "
            "&& /tmp/mitm/bin/pip install mitmproxy` (it conflicts with our venv)"
        )
    return path


def _mitm_version(mitmdump: Path) -> str:
    answer = subprocess.run(
        [str(mitmdump), "--version"], capture_output=True, text=True, check=False
    )
    first = answer.stdout.splitlines()[0] if answer.stdout else "mitmproxy ?"

    return first.replace("Mitmproxy: ", "mitmproxy ")


def _home(path: Path, upstream_port: int) -> Home:
    home = init(Home(path), origin="bench.proctor.test/http")
    with (home.policies / "schema.cedarschema").open("a", encoding="utf-8") as schema:
        schema.write(SCHEMA)
    with home.config_file.open("a", encoding="utf-8") as config:
        config.write(SERVICE.format(port=upstream_port))
    return home


def _token(home: Home) -> str:
    runtime = Runtime.open(home)
    try:
        runtime.secrets.vault.set("bench-api-key", API_KEY)
        task = runtime.service.open_task(
            user="bench@example.com",
            agent="bench-agent",
            request="read items, many times",
            scope=ScopeText.parse(SCOPE, format="toml"),
            by="bench",
        )
        return runtime.service.issue_token(task.id, by="bench").token
    finally:
        runtime.close()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def _start(arguments: Sequence[str], port: int) -> subprocess.Popen[bytes]:
    return _spawn([sys.executable, "-m", "bench.http_gateway", *arguments], port)


def _spawn(
    command: Sequence[str], port: int, log: IO[bytes] | int = subprocess.DEVNULL
) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(command, cwd=REPO, stdout=log, stderr=log)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"{command[0]} exited before it served")
        with (
            contextlib.suppress(OSError),
            socket.create_connection(("127.0.0.1", port), timeout=0.2),
        ):
            return process
        time.sleep(0.1)
    _stop(process)
    raise SystemExit(f"{command[0]} did not start within 60 s")


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def serve_upstream(port: int) -> None:
    """Answer ``GET /items/{item}`` with a small JSON body on a loopback port."""

    async def item(request: web.Request) -> web.Response:
        body = {"id": request.match_info["item"], "name": "widget", "price": 1250}
        return web.json_response(body)

    app = web.Application()
    app.router.add_get("/items/{item}", item)
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)


def serve_floor(port: int, upstream: int) -> None:
    """Forward every GET to the upstream and back: uvicorn on httptools and uvloop,
    an ``aiohttp`` client session, and nothing else (no decision, no ledger)."""
    import uvicorn

    base = f"http://127.0.0.1:{upstream}"
    sessions: list[aiohttp.ClientSession] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send, sessions)
            return
        async with sessions[0].get(base + scope["path"]) as answer:
            body = await answer.read()
            headers = [
                (name.lower().encode(), value.encode())
                for name, value in answer.headers.items()
            ]
            start = {"type": "http.response.start", "status": answer.status}
            await send({**start, "headers": headers})
            await send({"type": "http.response.body", "body": body})

    uvicorn.run(
        app,
        host="127.0.0.1",
        port=port,
        http="httptools",
        loop="uvloop",
        log_level="warning",
        access_log=False,
    )


async def _lifespan(
    receive: Receive, send: Send, sessions: list[aiohttp.ClientSession]
) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            sessions.append(aiohttp.ClientSession(auto_decompress=False))
            await send({"type": "lifespan.startup.complete"})
        else:
            await sessions[0].close()
            await send({"type": "lifespan.shutdown.complete"})
            return


def _verified(home: Home) -> int:
    store = home.open_store()
    try:
        report = verify_ledger(
            store, [home.verifier()], origin=home.config().ledger.origin
        )
    finally:
        store.close()
    return report.size


# The report.


def _record(runs: list[Run], memory: Memory, recorded: int, mitm: str) -> None:
    table = Table(
        ["path", "concurrency", "calls", "req/s", "p50 ms", "p99 ms", "CPU ms/call"],
        [_row(run) for run in runs],
    )
    memory_table = Table(
        ["calls", "VmRSS MiB"],
        [[f"{calls:,}", f"{rss:.1f}"] for calls, rss in memory.samples],
    )
    body = (
        "`GET /items/42` on a tiny `aiohttp.web` upstream answering ~50 bytes of JSON, "
        "on loopback. *Direct* calls the upstream; *proctor* is `proctor serve` "
        "(SQLite ledger; each call authenticated, classified, decided by Cedar, its "
        "decision durable before forwarding, the vault's API key injected, the outcome "
        "recorded) at `/http/bench/items/42`; *mitmdump* is `mitmdump --mode "
        "reverse:... -q`; *floor* is a minimal proxy on the stack `proctor serve` runs "
        "on (uvicorn on httptools and uvloop, an `aiohttp` client upstream) that only "
        "forwards: what this machine, in this run, spends on proxying alone. "
        "Upstream, proxies and the `aiohttp` load generator each "
        f"run in their own process. {WARMUP} warm-up calls per path, then per "
        f"concurrency the paths take {ROUNDS} turns each, in rotating order, "
        "so that the machine's other load falls on all of them alike; each turn "
        f"opens with {TURN_WARMUP} untimed calls, or four per connection if that is "
        "more, so "
        "what is timed is a stream of calls, not a process waking from the seconds "
        "of idleness the other paths' turns leave it. CPU per call is the proxy "
        "process's time on a CPU over the timed calls (the sum of its threads' "
        "`/proc/<pid>/task/*/schedstat`), divided by their number (for *direct*, the "
        "upstream's own). "
        f"The ledger ({recorded:,} entries) verified afterwards.\n\n"
        + table.to_markdown()
        + "\n"
        + _targets(runs, memory).to_markdown()
        + f"\nMemory of the `proctor serve` process over {memory.calls:,} calls at "
        f"concurrency 32 ({memory.seconds:.0f} s); peak (VmHWM) {memory.peak:.1f} "
        "MiB:\n\n" + memory_table.to_markdown()
    )
    record(
        "http",
        "HTTP gateway",
        body,
        extra=[
            f"aiohttp {version('aiohttp')}",
            f"uvicorn {version('uvicorn')}",
            f"uvloop {version('uvloop')}",
            f"httptools {version('httptools')}",
            mitm,
        ],
    )


def _row(run: Run) -> list[str]:
    calls = len(run.load.latencies)
    return [
        run.path,
        str(run.concurrency),
        f"{calls:,}",
        f"{run.load.rate:,.0f}",
        f"{percentile(run.load.latencies, 0.50):.2f}",
        f"{percentile(run.load.latencies, 0.99):.2f}",
        f"{run.cpu_seconds * 1000 / calls:.2f}",
    ]


def _targets(runs: list[Run], memory: Memory) -> Table:
    found = {(run.path, run.concurrency): run for run in runs}
    direct, proctor = found["direct", 1].load, found["proctor", 1].load
    added = percentile(proctor.latencies, 0.5) - percentile(direct.latencies, 0.5)
    p99 = percentile(proctor.latencies, 0.99)
    ratio = found["proctor", 32].load.rate / found["mitmdump", 32].load.rate
    cpu = max(
        found["proctor", c].cpu_seconds * 1000 / len(found["proctor", c].load.latencies)
        for c, _ in RUNS
    )
    first, last = memory.samples[1][1], memory.samples[-1][1]
    rows = [
        ["added p50 at c=1", f"{added:.2f} ms", f"< {TARGET_ADDED_P50_MS} ms"],
        ["p99 at c=1", f"{p99:.2f} ms", f"< {TARGET_P99_MS:g} ms"],
        ["proctor / mitmdump req/s at c=32", f"{ratio:.2f}x", f">= {TARGET_RATIO:g}x"],
        ["gateway CPU per call (worst c)", f"{cpu:.2f} ms", f"< {TARGET_CPU_MS:g} ms"],
        [
            f"VmRSS at {memory.samples[-1][0]:,} vs {memory.samples[1][0]:,} calls",
            f"{last / first:.2f}x",
            f"<= {FLAT_GROWTH:g}x",
        ],
    ]
    met = [
        added < TARGET_ADDED_P50_MS,
        p99 < TARGET_P99_MS,
        ratio >= TARGET_RATIO,
        cpu < TARGET_CPU_MS,
        last / first <= FLAT_GROWTH,
    ]
    return Table(
        ["target", "measured", "wanted", "met"],
        [[*row, "yes" if ok else "**no**"] for row, ok in zip(rows, met, strict=True)],
    )


BENCHMARKS: dict[str, Callable[[], None]] = {"http.gateway": gateway}


if __name__ == "__main__":
    if sys.argv[1:2] == ["--upstream"]:
        serve_upstream(int(sys.argv[2]))
    elif sys.argv[1:2] == ["--floor"]:
        serve_floor(int(sys.argv[2]), int(sys.argv[3]))
    elif sys.argv[1:2] == ["--load"]:
        generate_load()
    else:
        gateway()
