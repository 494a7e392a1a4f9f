"""MCP gateway benchmark: tool calls per second and latency through Proctor (the stdio
bridge and the Streamable HTTP door) against the same client calling the same server
directly, in one run, with every kind of call interleaved so that each sees the same
machine load.

The server is the real ``mcp-server-time`` and the call ``get_current_time``; the
client is the official ``mcp.Client``. The HTTP door runs in its own process, served
by ``proctor serve``'s own app and settings, and the bridge in its own, as a desktop
client launches it. Every brokered call is decided by Cedar and recorded (decision
durable before the call goes out, outcome after), and the ledger is verified at the
end. A second direct path serves the same server code over Streamable HTTP (the
SDK's app, in its own uvicorn process), to tell what HTTP itself costs this client.

Target (from the MCP gateway issue): added p50 latency under 3 ms per tool call,
over the same client talking to the same server directly on the same transport.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from statistics import fmean

import httpx2
from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client

from bench.report import REPO, Table, percentile, record
from proctor.gateway.mcp.classify import classify
from proctor.gateway.mcp.config import load_servers
from proctor.gateway.pipeline import Verdict
from proctor.home import Home, init
from proctor.ledger.verify import verify_ledger
from proctor.runtime import Runtime
from proctor.tasks.service import ScopeText

BIN = Path(sys.executable).parent
TOOL = "get_current_time"
ARGUMENTS = {"timezone": "Etc/UTC"}
WARMUP = 30
ROUNDS = 500
CONCURRENCY = 8
SECONDS = 5.0
PIPELINE_CALLS = 500
TARGET_MS = 3.0

SCHEMA = """\
namespace Proctor {
  entity AgentGroup;
  entity Agent in [AgentGroup];
  entity Task;
  action OpenTask appliesTo {
    principal: [Agent],
    resource: [Task],
    context: { task: String, user: String, approved: Bool, actions: Set<String> }
  };
}

namespace mcp::time {
  entity Server;
  action get_current_time appliesTo {
    principal: [Proctor::Agent],
    resource: [Server],
    context: { task: String, user: String, approved: Bool, args: { timezone: String } }
  };
}
"""
SCOPE = """\
[[allow]]
id = "tell-the-time"
action = 'mcp::time::Action::"get_current_time"'
when = { args.timezone = { like = "*" } }
"""
SERVER = f"""
[mcp.servers.time]
command = "{BIN}/mcp-server-time"
"""

DIRECT = "direct"
DIRECT_HTTP = "direct, Streamable HTTP"
BRIDGE = "stdio bridge"
DOOR = "http door"
BASELINE = {BRIDGE: DIRECT, DOOR: DIRECT_HTTP}
"""The direct path over the same transport as each brokered one."""

Call = Callable[[], Awaitable[object]]


@dataclass(frozen=True)
class Measured:
    """One way to reach the server, and what was measured on it."""

    name: str
    latencies: list[float]
    throughput: float


def gateway() -> None:
    """Measure direct, stdio bridge and HTTP door calls; record the MCP section."""
    with tempfile.TemporaryDirectory(prefix="proctor-bench-mcp-") as folder:
        home = _home(Path(folder) / "home")
        token = _token(home)
        door_port, plain_port = _free_port(), _free_port()
        door = _start(["--serve", str(home.path), str(door_port)], door_port)
        plain = _start(["--serve-direct", str(plain_port)], plain_port)
        try:
            paths = asyncio.run(
                _measure(
                    home,
                    token,
                    door=f"http://127.0.0.1:{door_port}/mcp/time",
                    plain=f"http://127.0.0.1:{plain_port}/mcp",
                )
            )
        finally:
            _stop(door)
            _stop(plain)
        pipeline = asyncio.run(_pipeline_only(home, token))
        recorded = _verified(home)
    _record(paths, pipeline, recorded)


# The measured runs.


async def _measure(home: Home, token: str, *, door: str, plain: str) -> list[Measured]:
    async with AsyncExitStack() as stack:
        direct = await stack.enter_async_context(Client(_direct()))
        over_http = await stack.enter_async_context(_http(plain, None))
        bridge = await stack.enter_async_context(Client(_bridge(home, token)))
        http = await stack.enter_async_context(_http(door, token))
        clients = {
            DIRECT: direct,
            DIRECT_HTTP: over_http,
            BRIDGE: bridge,
            DOOR: http,
        }
        for client in clients.values():
            for _ in range(WARMUP):
                await _call(client)
        latencies = await _interleaved(list(clients.values()))
        rates = [await _throughput(client) for client in clients.values()]

    return [
        Measured(name, latencies[number], rates[number])
        for number, name in enumerate(clients)
    ]


async def _interleaved(clients: list[Client]) -> list[list[float]]:
    # Rotating the order each round spreads any drift in load over all paths.
    latencies: list[list[float]] = [[] for _ in clients]
    for round_ in range(ROUNDS):
        for offset in range(len(clients)):
            number = (round_ + offset) % len(clients)
            started = time.perf_counter()
            await _call(clients[number])
            latencies[number].append((time.perf_counter() - started) * 1000)

    return latencies


async def _throughput(client: Client) -> float:
    deadline = time.perf_counter() + SECONDS
    done = 0

    async def caller() -> None:
        nonlocal done
        while time.perf_counter() < deadline:
            await _call(client)
            done += 1

    started = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(CONCURRENCY)))

    return done / (time.perf_counter() - started)


async def _call(client: Client) -> None:
    result = await client.call_tool(TOOL, ARGUMENTS)
    if result.is_error:
        raise SystemExit(f"the benchmark call failed: {result.content}")


async def _pipeline_only(home: Home, token: str) -> list[float]:
    """The pipeline's share of a call: what a brokered call waits for."""
    runtime = Runtime.open(home)
    try:
        pipeline = runtime.pipeline()
        server = load_servers(runtime.config.raw)["time"]
        latencies, outcomes = [], []
        for _ in range(PIPELINE_CALLS):
            started = time.perf_counter()
            claims = await pipeline.authenticate(
                token, door="mcp", target="time", request={}
            )
            if isinstance(claims, Verdict):
                raise SystemExit(f"the benchmark token was refused: {claims.reason}")
            call = classify(server, TOOL, ARGUMENTS, None).call
            verdict = await pipeline.authorize(claims, call)
            latencies.append((time.perf_counter() - started) * 1000)
            # As in the doors: the outcome is written, not waited for.
            outcomes.append(
                asyncio.ensure_future(
                    pipeline.complete(
                        verdict, status=None, size=0, digest=None, latency_us=0
                    )
                )
            )
        await asyncio.gather(*outcomes)
    finally:
        runtime.close()

    return latencies


# Setting up and tearing down.


def _home(path: Path) -> Home:
    home = init(Home(path), origin="bench.proctor.test/mcp")
    (home.policies / "schema.cedarschema").write_text(SCHEMA, encoding="utf-8")
    with home.config_file.open("a", encoding="utf-8") as config:
        config.write(SERVER)
    return home


def _token(home: Home) -> str:
    runtime = Runtime.open(home)
    try:
        task = runtime.service.open_task(
            user="bench@example.com",
            agent="bench-agent",
            request="tell the time, many times",
            scope=ScopeText.parse(SCOPE, format="toml"),
            by="bench",
        )
        return runtime.service.issue_token(task.id, by="bench").token
    finally:
        runtime.close()


def _direct() -> StdioServerParameters:
    return StdioServerParameters(command=str(BIN / "mcp-server-time"))


def _bridge(home: Home, token: str) -> StdioServerParameters:
    return StdioServerParameters(
        command=str(BIN / "proctor"),
        args=["mcp", "stdio", "time", "--home", str(home.path)],
        env={"PROCTOR_TASK_TOKEN": token},
    )


@asynccontextmanager
async def _http(url: str, token: str | None) -> AsyncIterator[Client]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with (
        httpx2.AsyncClient(headers=headers, timeout=60) as http,
        Client(streamable_http_client(url, http_client=http)) as client,
    ):
        yield client


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def _start(arguments: list[str], port: int) -> subprocess.Popen[bytes]:
    serve = ["-m", "bench.mcp_gateway", *arguments]
    process = subprocess.Popen([sys.executable, *serve], cwd=REPO)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"{arguments[0]} exited before it served")
        with (
            contextlib.suppress(OSError),
            socket.create_connection(("127.0.0.1", port), timeout=0.2),
        ):
            return process
        time.sleep(0.1)
    _stop(process)
    raise SystemExit(f"{arguments[0]} did not start within 60 s")


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def serve_door(home: Path, port: int) -> None:
    """Serve the HTTP door on a loopback port as proctor serve does."""
    from proctor import serve

    runtime = Runtime.open(Home(home))
    try:
        serve.run(runtime, host="127.0.0.1", port=port)
    finally:
        runtime.close()


def serve_direct(port: int) -> None:
    """Serve mcp-server-time's own server over Streamable HTTP, without Proctor."""
    import uvicorn
    from mcp_server_time.server import create_server

    from proctor.gateway.wire import uvicorn_options

    app = create_server("Etc/UTC").streamable_http_app()
    logging.getLogger("mcp").setLevel(logging.WARNING)
    uvicorn.run(
        app, host="127.0.0.1", port=port, log_level="warning", **uvicorn_options()
    )


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


def _record(paths: list[Measured], pipeline: list[float], recorded: int) -> None:
    p50s = {path.name: percentile(path.latencies, 0.50) for path in paths}
    rows = [_row(path, p50s) for path in paths]
    rows.append(
        [
            "pipeline alone",
            f"{len(pipeline):,}",
            f"{1000 / fmean(pipeline):,.0f}",
            "",
            f"{percentile(pipeline, 0.50):.2f}",
            f"{percentile(pipeline, 0.99):.2f}",
            "",
            "",
            "",
            "",
        ]
    )
    table = Table(
        [
            "path",
            "calls",
            "calls/s (1 client)",
            f"calls/s ({CONCURRENCY} concurrent)",
            "p50 ms",
            "p99 ms",
            "added p50 ms",
            "target ms",
            "met",
            "added p50 over direct stdio ms",
        ],
        rows,
    )
    body = (
        f"`{TOOL}` on the real `mcp-server-time` with the official `mcp.Client`: "
        f"{ROUNDS} rounds after {WARMUP} warm-up calls per path, each round one call "
        "per path in rotating order, so all paths share the machine's load; then "
        f"{CONCURRENCY} concurrent callers per path for {SECONDS:g} s. *Direct* is "
        "the client talking to the server itself over stdio; *direct, Streamable "
        "HTTP* is the same client and the same server code (its `create_server()`) "
        "served by the SDK's `streamable_http_app()` in its own uvicorn process, "
        "without Proctor. The *stdio bridge* is `proctor mcp stdio` launched as a "
        "desktop client launches it; the *HTTP door* is `/mcp/time` of `proctor "
        "serve`'s own app and uvicorn settings, in its own process. Both relay "
        "JSON-RPC messages to one `mcp-server-time` each, and every brokered call is "
        "authenticated, decided by Cedar and recorded: the decision is durable "
        "before the call goes out, the outcome is written while the answer travels "
        "back. *Pipeline alone* is what a brokered call waits for, without MCP "
        "(authenticate, classify, decide, decision entry durable), in one process. "
        "Added p50 is the path's p50 minus the p50 of the same client talking to "
        "the same server directly over the same transport (stdio for the bridge, "
        "Streamable HTTP for the door): what Proctor adds, which the target bounds. "
        "The last column subtracts the direct stdio p50 instead: what an agent that "
        "launched the server itself pays for reaching it through Proctor, transport "
        f"included. The ledger ({recorded:,} entries) verified afterwards.\n\n"
        + table.to_markdown()
        + "\n"
        + _shares(p50s, pipeline)
    )
    record(
        "mcp",
        "MCP gateway",
        body,
        extra=[
            f"mcp {version('mcp')}",
            f"mcp-server-time {version('mcp-server-time')}",
        ],
    )


def _row(path: Measured, p50s: dict[str, float]) -> list[str]:
    p50 = p50s[path.name]
    over_stdio = f"{p50 - p50s[DIRECT]:+.2f}" if path.name != DIRECT else ""
    baseline = BASELINE.get(path.name)
    judged = ["", "", ""]
    if baseline is not None:
        added = p50 - p50s[baseline]
        met = "yes" if added < TARGET_MS else "**no**"
        judged = [f"{added:+.2f}", f"< {TARGET_MS:g}", met]

    return [
        path.name,
        f"{len(path.latencies):,}",
        f"{1000 / fmean(path.latencies):,.0f}",
        f"{path.throughput:,.0f}",
        f"{p50:.2f}",
        f"{percentile(path.latencies, 0.99):.2f}",
        *judged,
        over_stdio,
    ]


def _shares(p50s: dict[str, float], pipeline: list[float]) -> str:
    base = p50s[DIRECT]
    own = percentile(pipeline, 0.50)
    return (
        f"Added p50: stdio bridge {p50s[BRIDGE] - base:.1f} ms, HTTP door "
        f"{p50s[DOOR] - p50s[DIRECT_HTTP]:.1f} ms. Over direct stdio the door is "
        f"{p50s[DOOR] - base:.1f} ms, of which {p50s[DIRECT_HTTP] - base:.1f} ms is "
        "what Streamable HTTP itself costs this client and server without Proctor. "
        f"The pipeline's own share is about {own:.1f} ms (its p50 "
        "alone); the rest is the relay and its extra process hop: the agent's "
        "message read, handed to the downstream server's pipe, and its answer "
        "written back.\n"
    )


BENCHMARKS: dict[str, Callable[[], None]] = {"mcp.gateway": gateway}


if __name__ == "__main__":
    if sys.argv[1:2] == ["--serve"]:
        serve_door(Path(sys.argv[2]), int(sys.argv[3]))
    elif sys.argv[1:2] == ["--serve-direct"]:
        serve_direct(int(sys.argv[2]))
    else:
        gateway()
