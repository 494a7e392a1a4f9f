"""Fixtures for the MCP gateway against real MCP servers from PyPI and the official
client: a home whose proctor.toml configures mcp-server-time, mcp-server-git on a
real repository and the tests' echo server (once more as a server slow to stop);
tasks with tokens; the Streamable HTTP door served by uvicorn on a loopback port;
and the stdio bridge launched as a subprocess, as a desktop client launches it."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import httpx2
import pytest
import uvicorn
from mcp import Client, MCPError, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from mcp_types import CallToolResult, RequestParamsMeta, TextContent

from proctor.home import Home, init
from proctor.ledger import entries
from proctor.runtime import Runtime
from proctor.serve import build_app
from proctor.tasks.people import Person
from proctor.tasks.service import ScopeText
from proctor.tasks.state import Task

ASSETS = Path(__file__).resolve().parents[2] / "assets" / "mcp"
BIN = Path(sys.executable).parent
ECHO = Path(__file__).with_name("echo_server.py")
ECHO_SECRET = "echo-canary-5b1f0c9e-not-for-anyone"
DOORS = ("http", "stdio")
LEGACY = ("http-legacy", "stdio-legacy")
"""The doors again with the 2025-11-25 initialize handshake instead of 2026-07-28."""
GIT_ENV = {
    "GIT_AUTHOR_NAME": "Ada",
    "GIT_AUTHOR_EMAIL": "ada@example.com",
    "GIT_COMMITTER_NAME": "Ada",
    "GIT_COMMITTER_EMAIL": "ada@example.com",
    "GIT_CONFIG_NOSYSTEM": "1",
}


def git(repo: Path, *args: str) -> str:
    """Run git in ``repo`` and return what it printed."""
    env = {**os.environ, **GIT_ENV, "HOME": str(repo.parent)}
    done = subprocess.run(
        ["git", *args], cwd=repo, env=env, check=True, capture_output=True, text=True
    )
    return done.stdout


def make_repo(path: Path) -> Path:
    """A repository with two commits, an unstaged change and a staged new file."""
    path.mkdir()
    git(path, "init", "-q", "-b", "main")
    (path / "README.md").write_text("# Ledger tools\n")
    git(path, "add", "README.md")
    git(path, "commit", "-q", "-m", "Start the ledger tools")
    (path / "app.py").write_text("print('hello')\n")
    git(path, "add", "app.py")
    git(path, "commit", "-q", "-m", "Say hello")
    (path / "app.py").write_text("print('hello, world')\n")
    (path / "notes.txt").write_text("to do: invoices\n")
    git(path, "add", "notes.txt")
    return path


@dataclass(frozen=True)
class Snapshot:
    """Everything a write could change: HEAD, refs, index, working tree."""

    head: str
    refs: str
    index: str
    status: str
    files: tuple[tuple[str, str], ...]


def snapshot(repo: Path) -> Snapshot:
    """Read the repository's state without changing it."""
    files = tuple(
        (str(path.relative_to(repo)), hashlib.sha256(path.read_bytes()).hexdigest())
        for path in sorted(repo.rglob("*"))
        if path.is_file() and ".git" not in path.relative_to(repo).parts
    )
    return Snapshot(
        head=git(repo, "rev-parse", "HEAD"),
        refs=git(repo, "show-ref"),
        index=git(repo, "ls-files", "--stage"),
        status=git(repo, "status", "--porcelain=v2", "--branch"),
        files=files,
    )


SERVERS = """
[mcp.servers.time]
command = "{bin}/mcp-server-time"

[mcp.servers.git]
command = "{bin}/mcp-server-git"
args = ["--repository", "{repo}"]
resource = 'mcp::git::Repository::"{{repo_path}}"'

[mcp.servers.work]
command = "{bin}/mcp-server-git"
args = ["--repository", "{work}"]
namespace = "mcp::git"
resource = 'mcp::git::Repository::"{{repo_path}}"'

[mcp.servers.echo]
command = "{python}"
args = ["{echo}", "ECHO_SECRET"]
env = {{ ECHO_MODE = "plain", ECHO_LOG = "{echo_log}" }}
credentials = [{{ secret = "echo.ECHO_SECRET", style = "env", name = "ECHO_SECRET" }}]

[mcp.servers.stubborn]
command = "{python}"
args = ["{echo}"]
env = {{ ECHO_STUBBORN = "{stubborn}" }}
namespace = "mcp::echo"
"""


def mcp_home(path: Path, repo: Path, work: Path) -> Home:
    """A home with the MCP test policies and the test servers configured."""
    home = init(Home(path), origin="proctor.test/mcp")
    for source in (ASSETS / "org").iterdir():
        shutil.copy(source, home.policies / source.name)
    text = SERVERS.format(
        bin=BIN,
        repo=repo,
        work=work,
        python=sys.executable,
        echo=ECHO,
        echo_log=echo_calls(home),
        stubborn=stubborn_marker(home),
    )
    with home.config_file.open("a", encoding="utf-8") as config:
        config.write(text)
    return home


def echo_calls(home: Home) -> Path:
    """The file where the echo server notes every call it receives."""
    return home.path.parent / "echo-calls.jsonl"


def stubborn_marker(home: Home) -> Path:
    """Where the stubborn echo server writes its process id once told to stop."""
    return home.path.parent / "stubborn.pid"


def received_by_echo(home: Home) -> list[dict[str, Any]]:
    """Every call the echo server of ``home`` has received, in order."""
    path = echo_calls(home)
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The repository a read-only task looks at; no test may change it."""
    return make_repo(tmp_path_factory.mktemp("read") / "ledger-tools")


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The repository where an approved commit may land."""
    return make_repo(tmp_path_factory.mktemp("work") / "ledger-tools")


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory, repo: Path, work: Path) -> Home:
    """One home for a module's tests: each test opens tasks of its own."""
    home = mcp_home(tmp_path_factory.mktemp("mcp") / "home", repo, work)
    runtime = Runtime.open(home)
    try:
        runtime.secrets.vault.set("echo.ECHO_SECRET", ECHO_SECRET)
    finally:
        runtime.close()
    return home


@pytest.fixture(scope="module")
def runtime(home: Home) -> Iterator[Runtime]:
    """The home's runtime: the pipeline the HTTP door shares with the tests."""
    runtime = Runtime.open(home)
    yield runtime
    runtime.close()


@dataclass(frozen=True)
class Agent:
    """A task and the token its agent calls with."""

    task: Task
    token: str


Opener = Callable[..., Agent]


@pytest.fixture
def open_task(runtime: Runtime, repo: Path, work: Path) -> Opener:
    """Open an active task from a scope in tests/assets/mcp/scopes and issue a token."""

    def opener(
        scope: str, *, agent: str = "repo-bot", repository: Path = repo
    ) -> Agent:
        text = (ASSETS / "scopes" / scope).read_text(encoding="utf-8")
        task = runtime.service.open_task(
            user="alice@example.com",
            agent=agent,
            request=f"test task over {scope}",
            scope=ScopeText.parse(
                text.replace("REPOSITORY", str(repository)), format="toml"
            ),
            by="test",
        )
        token = runtime.service.issue_token(task.id, by="test").token
        return Agent(task, token)

    return opener


@pytest.fixture
def maintainer(runtime: Runtime) -> Person:
    """An approver holding the maintainer role the organisation's policy names."""
    email = f"maintainer-{time.monotonic_ns()}@example.com"
    key = runtime.people.add(email, ["approver"], ["maintainer"])
    return runtime.people.authenticate(key)


@pytest.fixture(scope="module")
def http_door(runtime: Runtime) -> Iterator[str]:
    """The HTTP door at /mcp of proctor serve's own app."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    config = uvicorn.Config(
        build_app(runtime), log_level="warning", ws="none", lifespan="on"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [listener]}, daemon=True
    )
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            pytest.fail("the HTTP door did not start")
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}/mcp"
    server.should_exit = True
    thread.join(timeout=30)
    listener.close()


def bridge(home: Home, server: str, env: dict[str, str]) -> StdioServerParameters:
    """What a desktop client's mcpServers entry for the bridge amounts to."""
    return StdioServerParameters(
        command=str(BIN / "proctor"),
        args=["mcp", "stdio", server, "--home", str(home.path)],
        env=env,
    )


@asynccontextmanager
async def over_http(
    url: str, token: str | None, *, mode: str = "auto"
) -> AsyncIterator[Client]:
    """The official client on the HTTP door, with the task token as a bearer."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with (
        httpx2.AsyncClient(headers=headers, timeout=60) as http,
        Client(streamable_http_client(url, http_client=http), mode=mode) as client,
    ):
        yield client


Door = Callable[[str, str | None], Any]


@pytest.fixture
def door(request: pytest.FixtureRequest, home: Home) -> Door:
    """Connect to a server through the door the test is parametrized with."""

    kind, _, era = str(request.param).partition("-")
    mode = era or "auto"

    def connect(server: str, token: str | None) -> Any:
        if kind == "http":
            url = request.getfixturevalue("http_door")
            return over_http(f"{url}/{server}", token, mode=mode)
        env = {"PROCTOR_TASK_TOKEN": token} if token else {}
        return Client(bridge(home, server, env), mode=mode)

    return connect


def meta(values: dict[str, Any]) -> RequestParamsMeta:
    """A request's _meta as the client's signature wants it."""
    return cast("RequestParamsMeta", values)


def text(result: CallToolResult) -> str:
    """The text of a result's first content block."""
    block = result.content[0]
    assert isinstance(block, TextContent)
    return block.text


async def refusal(
    client: Client,
    tool: str,
    arguments: dict[str, Any],
    extra: dict[str, Any] | None = None,
) -> MCPError:
    """Call a tool that must be refused and return the error that refused it."""
    try:
        result = await client.call_tool(tool, arguments, meta=meta(extra or {}))
    except MCPError as error:
        return error
    pytest.fail(f"{tool} was not refused: {result}")


def ledger(runtime: Runtime) -> list[dict[str, Any]]:
    """Every entry, including those another process appended."""
    store = runtime.ledger.store
    return [entries.decode(data) for data in store.entries(0)]


def entry(runtime: Runtime, index: int) -> dict[str, Any]:
    """One entry by index."""
    return entries.decode(runtime.ledger.store.entry(index))


def outcome(runtime: Runtime, decision: int) -> dict[str, Any]:
    """The call.completed entry of a decision, waiting while it is written."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        for found in ledger(runtime):
            if found["type"] == "call.completed" and found["decision"] == decision:
                return found
        time.sleep(0.05)
    pytest.fail(f"no call.completed entry for decision {decision}")


def run(coroutine: Any) -> Any:
    """Drive one client scenario to its end."""
    return asyncio.run(coroutine)


def verify(home: Home) -> subprocess.CompletedProcess[str]:
    """Run `proctor verify` on the home as an auditor would."""
    return subprocess.run(
        [str(BIN / "proctor"), "verify", "--home", str(home.path)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
