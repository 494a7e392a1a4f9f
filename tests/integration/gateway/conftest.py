"""Real servers on loopback for the HTTP door: httpbin under gunicorn, json-server
under Node, and Proctor's own app under uvicorn in a background thread.

Nothing here skips: a missing httpbin, gunicorn or json-server fails the run with the
command that installs it (``pip install httpbin gunicorn``; ``npm ci --prefix
tests/integration/gateway/node``).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from starlette.types import ASGIApp

from proctor.gateway.wire import uvicorn_options

HERE = Path(__file__).resolve().parent
JSON_SERVER = Path(
    os.environ.get("PROCTOR_JSON_SERVER", HERE / "node/node_modules/.bin/json-server")
)
PRISTINE_DB = {
    "invoices": [
        {"id": "inv-1", "vendor": "acme", "amount": 1200},
        {"id": "inv-2", "vendor": "globex", "amount": 56000},
    ],
    "payments": [],
    "vendors": [{"id": 1, "name": "acme"}, {"id": 2, "name": "globex"}],
}
STARTUP_SECONDS = 20.0


def free_port() -> int:
    """Return a loopback port nobody listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_until_answering(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    """Poll ``url`` until it answers; fail with the server's log if it never does."""
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"{url} exited early:\n{log.read_text(errors='replace')}")
        with contextlib.suppress(httpx.TransportError):
            httpx.get(url, timeout=1.0)
            return
        time.sleep(0.05)
    pytest.fail(f"{url} did not answer in {STARTUP_SECONDS} s:\n{log.read_text()}")


def stop(process: subprocess.Popen[bytes]) -> None:
    """Stop a server we started: TERM, then KILL if it lingers."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


@pytest.fixture(scope="session")
def httpbin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """httpbin (PyPI) under gunicorn on a free loopback port; its base URL."""
    if shutil.which("gunicorn", path=str(Path(sys.executable).parent)) is None:
        pytest.fail("gunicorn is missing: .venv/bin/pip install httpbin gunicorn")
    folder = tmp_path_factory.mktemp("httpbin")
    log = folder / "gunicorn.log"
    port = free_port()
    command = [
        str(Path(sys.executable).parent / "gunicorn"),
        "--bind",
        f"127.0.0.1:{port}",
        "--no-control-socket",
        "--worker-class",
        "gthread",
        "--threads",
        "16",
        "--workers",
        "1",
        "httpbin:app",
    ]
    with log.open("wb") as output:
        process = subprocess.Popen(
            command, cwd=folder, stdout=output, stderr=subprocess.STDOUT
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_answering(f"{url}/get", process, log)
        yield url
    finally:
        stop(process)


@dataclass(frozen=True)
class JsonServer:
    """One json-server with its own copy of the pristine database."""

    url: str
    db: Path

    def data(self) -> dict[str, Any]:
        """What json-server holds now, asked directly (its file is written late)."""
        return {
            name: httpx.get(f"{self.url}/{name}", timeout=10.0).json()
            for name in PRISTINE_DB
        }


@pytest.fixture
def json_server(tmp_path: Path) -> Iterator[JsonServer]:
    """json-server 0.17.4 on a free port over a fresh copy of the database.

    Per test, because json-server rewrites its file in place and reuses ids.
    """
    if not JSON_SERVER.exists():
        pytest.fail(
            f"json-server is missing at {JSON_SERVER}: "
            "npm ci --prefix tests/integration/gateway/node"
        )
    folder = tmp_path / "json-server"
    folder.mkdir()
    db = folder / "db.json"
    db.write_text(json.dumps(PRISTINE_DB, indent=2))
    log = folder / "json-server.log"
    port = free_port()
    command = [str(JSON_SERVER), "--host", "127.0.0.1", "--port", str(port), "db.json"]
    with log.open("wb") as output:
        process = subprocess.Popen(
            command, cwd=folder, stdout=output, stderr=subprocess.STDOUT
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_answering(f"{url}/invoices", process, log)
        yield JsonServer(url, db)
    finally:
        stop(process)


class AppServer:
    """An ASGI app under a real uvicorn, in a thread, on a free port."""

    def __init__(self, app: ASGIApp) -> None:
        self._socket = socket.socket()
        self._socket.bind(("127.0.0.1", 0))
        self.port = int(self._socket.getsockname()[1])
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            app,
            log_config=None,
            access_log=False,
            lifespan="on",
            timeout_graceful_shutdown=5,
            **uvicorn_options(),
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._socket]}, daemon=True
        )

    def __enter__(self) -> AppServer:
        self._thread.start()
        deadline = time.monotonic() + STARTUP_SECONDS
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                pytest.fail("uvicorn did not start")
            time.sleep(0.01)
        return self

    def settle(self) -> None:
        """Wait until no request is in flight (outcomes are reported after the
        last byte has gone, so a finished client does not mean a finished call)."""
        deadline = time.monotonic() + STARTUP_SECONDS
        while self._server.server_state.tasks:
            if time.monotonic() > deadline:
                pytest.fail("requests still in flight")
            time.sleep(0.01)

    def __exit__(self, *exc: object) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=15)
        self._socket.close()


def raw_exchange(port: int, *parts: bytes, timeout: float = 10.0) -> bytes:
    """Send exact bytes (in separate writes, a moment apart) and return everything
    the server answers."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as conn:
        for index, part in enumerate(parts):
            if index:
                time.sleep(0.2)
            try:
                conn.sendall(part)
            except (BrokenPipeError, ConnectionResetError):
                break
        chunks: list[bytes] = []
        while True:
            try:
                chunk = conn.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            chunks.append(chunk)
    return b"".join(chunks)


def status_of(answer: bytes) -> int:
    """The status code of a raw HTTP/1.1 answer."""
    return int(answer.split(b" ", 2)[1])


Agent = Callable[..., httpx.Client]


def agent_factory(base_url: str) -> Agent:
    """Build agents: plain httpx clients whose only Proctor-specific parts are the
    base URL, the task token and optional headers."""

    def make(token: str | None, **headers: str) -> httpx.Client:
        sent = dict(headers)
        if token is not None:
            sent["Authorization"] = f"Bearer {token}"
        return httpx.Client(base_url=f"{base_url}/http/", headers=sent, timeout=30.0)

    return make
