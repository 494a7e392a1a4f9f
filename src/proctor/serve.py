"""What ``proctor serve`` runs: one Starlette app with the API under ``/v1``, the HTTP
gateway door under ``/http`` and the MCP door under ``/mcp``, over one open runtime,
logged one line a request."""

from __future__ import annotations

import ipaddress
import logging
import secrets
import signal
import threading
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from types import FrameType

import uvicorn
from starlette.applications import Starlette
from starlette.routing import BaseRoute, Mount
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from proctor import heap
from proctor.api import create_api
from proctor.gateway.headers import ENTRY_HEADER
from proctor.gateway.http import PREFIX, HttpDoor
from proctor.gateway.mcp.config import load_servers
from proctor.gateway.mcp.http import doors
from proctor.gateway.mcp.http import http_app as mcp_app
from proctor.gateway.pipeline import Pipeline
from proctor.gateway.wire import uvicorn_options
from proctor.runtime import Runtime
from proctor.web import console_app

log = logging.getLogger(__name__)

API_PREFIX = "/v1"
MCP_PREFIX = "/mcp"
DOOR_PREFIX = f"{PREFIX}/".encode()
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"


def build_app(runtime: Runtime) -> Front:
    """Build the served app over an open runtime; the caller closes the runtime.

    Both doors share one pipeline, so an approval is used once whichever door
    presents it. The lifespan runs the doors' own: the HTTP door's upstream
    connections and the MCP door's downstream sessions.
    """
    pipeline = runtime.pipeline()
    door = http_door(runtime, pipeline)
    mcp = mcp_door(runtime, pipeline)
    routes: list[BaseRoute] = [
        Mount(API_PREFIX, app=create_api(runtime)),
        Mount(MCP_PREFIX, app=mcp),
        Mount("/console", app=console_app(runtime)),
    ]

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with door.running(), mcp.router.lifespan_context(mcp):
            log.info(
                "serving home=%s entries=%d", runtime.home.path, runtime.ledger.size
            )
            yield
        log.info("stopped serving home=%s", runtime.home.path)

    app = Starlette(routes=routes, lifespan=lifespan)
    app.add_middleware(RequestLog)
    # An MCP call that went through is in the ledger, and the broker logs every
    # other decision: as at the HTTP door, only what went wrong is news.
    endpoints = {
        MCP_PREFIX + path: RequestLog(endpoint, success=logging.DEBUG, door_logs=False)
        for path, endpoint in doors(mcp).items()
    }

    return Front(door, app, mcp=endpoints)


class Front:
    """Hands each request to a door or to the app's routes.

    The HTTP door takes every target below ``/http/`` straight from the server,
    and every target that is not a path at all (an absolute URL), which it refuses
    and records; it answers and logs each call itself. The MCP endpoints' exact
    paths (``mcp``) go straight to their door too, with the request log around it.
    Everything else, and the lifespan, goes through the app: the API, the console,
    and what no door claimed.
    """

    def __init__(
        self, door: HttpDoor, app: ASGIApp, *, mcp: Mapping[str, ASGIApp] | None = None
    ) -> None:
        self.door = door
        self.app = app
        self.mcp = dict(mcp or {})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
        elif _for_door(scope):
            await self.door(scope, receive, send)
        elif (endpoint := self.mcp.get(scope["path"])) is not None:
            await endpoint(scope, receive, send)
        else:
            await self.app(scope, receive, send)


def _for_door(scope: Scope) -> bool:
    target: bytes = scope.get("raw_path") or scope["path"].encode("utf-8")
    return target.startswith(DOOR_PREFIX) or not target.startswith(b"/")


def http_door(runtime: Runtime, pipeline: Pipeline) -> HttpDoor:
    """The HTTP gateway door for the home's ``[services]``; raises ConfigError."""
    return HttpDoor.from_config(pipeline, runtime.config)


def mcp_door(runtime: Runtime, pipeline: Pipeline) -> Starlette:
    """The MCP door for the home's ``[mcp.servers]``; raises ConfigError.

    It checks Host and Origin against loopback names, against DNS rebinding.
    """
    return mcp_app(pipeline, load_servers(runtime.config.raw))


def run(runtime: Runtime, *, host: str, port: int) -> None:
    """Serve until interrupted or terminated, on the wire of
    :mod:`proctor.gateway.wire`.

    SIGTERM ends the process as SIGINT does, by an exception once uvicorn has shut
    down (uvicorn raises the signal again then), so that the caller still closes the
    runtime: the last entries are signed before the process goes.
    """
    app = build_app(runtime)
    heap.settle()
    with _terminated_as_exit():
        uvicorn.run(
            app,
            host=host,
            port=port,
            log_config=None,
            access_log=False,
            server_header=False,
            proxy_headers=False,
            lifespan="on",
            **uvicorn_options(),
        )


@contextmanager
def _terminated_as_exit() -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _exit)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _exit(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)


def is_loopback(host: str) -> bool:
    """Tell whether ``host`` listens on this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class RequestLog:
    """One line per request: id, method, path, status and latency.

    At INFO, or at the ``success`` level for an answer below 400. The HTTP door
    logs its own line per call, so with ``door_logs`` a request a door answered
    (its answers carry ``Proctor-Entry``) is not logged twice; the MCP endpoints'
    refusals carry the header too, and their log passes ``door_logs=False``. Only
    API paths are written out: a path elsewhere may carry what an agent should not
    have sent.
    """

    def __init__(
        self, app: ASGIApp, *, success: int = logging.INFO, door_logs: bool = True
    ) -> None:
        self.app = app
        self.success = success
        self.door_logs = door_logs

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status, by_door = 500, False

        async def sending(message: Message) -> None:
            nonlocal status, by_door
            if message["type"] == "http.response.start":
                status = int(message["status"])
                by_door = any(
                    name.lower() == ENTRY_HEADER.encode()
                    for name, _ in message.get("headers", ())
                )
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            level = self.success if status < 400 else logging.INFO
            if not (by_door and self.door_logs) and log.isEnabledFor(level):
                log.log(
                    level,
                    "request id=%s method=%s path=%s status=%d latency_ms=%.3f",
                    secrets.token_hex(8),
                    scope["method"],
                    _loggable(scope["path"]),
                    status,
                    (time.perf_counter() - started) * 1000,
                )


def _loggable(path: str) -> str:
    if path == API_PREFIX or path.startswith(API_PREFIX + "/"):
        return path[:200]
    return "/" + path.lstrip("/").split("/", 1)[0] + "/..."
