"""The Streamable HTTP front door: one MCP endpoint per downstream server, at
``/<server>`` under wherever the app is mounted (``/mcp/<server>`` in proctor serve).

Every HTTP request needs ``Authorization: Bearer <task token>``. The token is checked
once per request, before the MCP transport sees it; a missing or bad one is recorded
(``auth.refused``) and answered with 401 and ``WWW-Authenticate: Bearer`` (RFC 6750
§3), or 503 when even the refusal could not be recorded. The relay then uses the
claims that request carried, so a token revoked mid-session stops at its next
request.

Behind the guard, the ``MCP-Protocol-Version`` header picks the era, as the SDK's
session manager does: a 2026-07-28 request is one self-contained exchange
(:mod:`proctor.gateway.mcp.exchange`), anything else belongs to a handshake-era
session (:mod:`proctor.gateway.mcp.sessions`). All of a server's agents share one
link to it, opened by the app's lifespan; a parent app that mounts this one must
run it (Starlette runs the lifespan of the app it serves, not of mounted ones)::

    door = http_app(runtime.pipeline(), load_servers(runtime.config.raw))
    app = Starlette(
        routes=[Mount("/mcp", app=door)], lifespan=door.router.lifespan_context
    )

A server in front may also call each endpoint at its path directly (:func:`doors`),
past the routing and middleware of the app: proctor serve does so.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import AsyncExitStack, asynccontextmanager

import anyio
from mcp.server.streamable_http import CONTENT_TYPE_JSON as JSON
from mcp.server.transport_security import (
    DEFAULT_MAX_REQUEST_BODY_SIZE,
    RequestBodyLimitMiddleware,
    TransportSecurityMiddleware,
    TransportSecuritySettings,
)
from mcp.shared.inbound import MCP_PROTOCOL_VERSION_HEADER
from mcp_types import INVALID_REQUEST, PARSE_ERROR
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS
from starlette.applications import Starlette
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from proctor.gateway.headers import ENTRY_HEADER
from proctor.gateway.inbound import Problem
from proctor.gateway.mcp.classify import DOOR, unreadable
from proctor.gateway.mcp.config import McpServer
from proctor.gateway.mcp.downstream import connect
from proctor.gateway.mcp.exchange import Exchange, loads
from proctor.gateway.mcp.proxy import Broker
from proctor.gateway.mcp.relay import Relay
from proctor.gateway.mcp.sessions import CLAIMS, Sessions
from proctor.gateway.pipeline import Pipeline, Verdict
from proctor.tasks.token import TaskClaims

LOOPBACK = TransportSecuritySettings(
    enable_dns_rebinding_protection=True,
    allowed_hosts=["127.0.0.1:*", "localhost:*", "[::1]:*"],
    allowed_origins=["http://127.0.0.1:*", "http://localhost:*", "http://[::1]:*"],
)
"""The default Host and Origin checks: loopback only, against DNS rebinding."""
NOT_JSON = Problem(400, "the body is not JSON in UTF-8")


def http_app(
    pipeline: Pipeline,
    servers: Mapping[str, McpServer],
    *,
    security: TransportSecuritySettings | None = None,
    json_response: bool = False,
) -> Starlette:
    """An ASGI app with one MCP endpoint per server, to mount at ``/mcp``.

    ``security`` sets the Host and Origin checks (default: loopback only); pass the
    names proctor serve answers to when it listens elsewhere.
    """
    doors = [
        Door(pipeline, server, security or LOOPBACK, json_only=json_response)
        for server in servers.values()
    ]
    endpoints = {
        f"/{door.server.name}": Guard(
            pipeline,
            door.server,
            RequestBodyLimitMiddleware(door, DEFAULT_MAX_REQUEST_BODY_SIZE),
        )
        for door in doors
    }
    routes = [
        Route(path, endpoint=endpoint, methods=None)
        for path, endpoint in endpoints.items()
    ]

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            for door in doors:
                await stack.enter_async_context(door.running())
            yield

    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.doors = endpoints

    return app


def doors(app: Starlette) -> dict[str, ASGIApp]:
    """The endpoint of each server of an :func:`http_app`, by its path in the app.

    Each answers its requests whole (the token checked, every refusal recorded);
    the app's lifespan must be running.
    """
    endpoints: dict[str, ASGIApp] = app.state.doors

    return dict(endpoints)


class Door:
    """The endpoint of one downstream server: its link, relay and sessions."""

    def __init__(
        self,
        pipeline: Pipeline,
        server: McpServer,
        security: TransportSecuritySettings,
        *,
        json_only: bool,
    ) -> None:
        self.pipeline = pipeline
        self.server = server
        self.security = security
        self.json_only = json_only
        self._exchange: Exchange | None = None
        self._sessions: Sessions | None = None

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Open the link to the server and serve until the context ends.

        Raises GatewayError when the server cannot be started or reached.
        """
        broker = Broker(self.pipeline, self.server)
        async with connect(self.server, self.pipeline.secret) as downstream:
            relay = Relay(broker, downstream)
            sessions = Sessions(relay, self.security, json_only=self.json_only)
            try:
                async with sessions.running():
                    self._sessions = sessions
                    self._exchange = Exchange(
                        relay,
                        TransportSecurityMiddleware(self.security),
                        json_only=self.json_only,
                    )
                    yield
            finally:
                self._exchange = self._sessions = None
                with anyio.CancelScope(shield=True):
                    await broker.settle()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        claims = scope.get("state", {}).get(CLAIMS)
        if self._exchange is None or self._sessions is None:
            body = {"error": "unavailable", "reason": "the mcp door is not running"}
            await JSONResponse(body, status_code=503)(scope, receive, send)
            return
        if not isinstance(claims, TaskClaims):
            await Response(status_code=401)(scope, receive, send)
            return
        version = header(scope, MCP_PROTOCOL_VERSION_HEADER.encode("ascii"))
        if version is not None and version not in HANDSHAKE_PROTOCOL_VERSIONS:
            await self._exchange(scope, receive, send, claims)
        else:
            await self._sessions(scope, receive, send, claims)


class Guard:
    """Checks the task token of every request, and that a POST carries one JSON
    object, before the MCP transport runs: a request refused here is recorded and
    answered with its entry in ``Proctor-Entry``."""

    def __init__(self, pipeline: Pipeline, server: McpServer, app: ASGIApp) -> None:
        self.pipeline = pipeline
        self.server = server
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        token = bearer(header(scope, b"authorization"))
        request = {"method": scope["method"], "path": scope["path"]}
        claims = await self.pipeline.authenticate(
            token, door=DOOR, target=self.server.name, request=request
        )
        if isinstance(claims, Verdict):
            await _refuse(claims, sent_token=token is not None)(scope, receive, send)
            return
        scope.setdefault("state", {})[CLAIMS] = claims
        if scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        body = await _message(scope, receive)
        if isinstance(body, Problem):
            refusal = await self._unreadable(claims, request, body)
            await refusal(scope, receive, send)
            return
        await self.app(scope, _replayed(body, receive), send)

    async def _unreadable(
        self, claims: TaskClaims, request: dict[str, str], problem: Problem
    ) -> Response:
        """Record a POST that holds no MCP message, then answer its 4xx."""
        call = unreadable(self.server, {**request, "problem": problem.reason})
        verdict = await self.pipeline.authorize(claims, call)
        if verdict.allowed:
            # Fail closed: whatever a policy says, nothing unread is forwarded.
            await self.pipeline.complete(
                verdict,
                status=None,
                size=0,
                digest=None,
                latency_us=0,
                error=f"not sent: {problem.reason}",
            )
        if verdict.entry is None:
            return JSONResponse(verdict.body(), status_code=verdict.status)
        error = {
            "code": PARSE_ERROR if problem == NOT_JSON else INVALID_REQUEST,
            "message": f"{problem.reason} (entry {verdict.entry})",
            "data": {**verdict.body(), "problem": problem.reason},
        }
        body = {"jsonrpc": "2.0", "id": None, "error": error}
        headers = {ENTRY_HEADER: str(verdict.entry)}

        return JSONResponse(body, status_code=problem.status, headers=headers)


async def _message(scope: Scope, receive: Receive) -> bytes | Problem:
    """The body of a POST if it is one JSON object within the size limit."""
    # As the SDK's transport reads it, so that all it would refuse is recorded.
    media = (header(scope, b"content-type") or "").partition(";")[0]
    if JSON not in (part.strip() for part in media.split(",")):
        return Problem(415, f"the body must be {JSON}")
    body = bytearray()
    more = True
    while more:
        message = await receive()
        if message["type"] != "http.request":
            return Problem(400, "the client went away before its body arrived")
        body += message.get("body", b"")
        if len(body) > DEFAULT_MAX_REQUEST_BODY_SIZE:
            return Problem(
                413, f"the body is over {DEFAULT_MAX_REQUEST_BODY_SIZE} bytes"
            )
        more = bool(message.get("more_body"))
    try:
        decoded = loads(bytes(body))
    except (ValueError, RecursionError):
        return NOT_JSON
    if not isinstance(decoded, dict):
        return Problem(400, "the body must be one JSON-RPC message object")

    return bytes(body)


def _replayed(body: bytes, receive: Receive) -> Receive:
    """A receive that gives the body already read, then waits as ``receive`` does."""
    given = False

    async def replay() -> Message:
        nonlocal given
        if given:
            return await receive()
        given = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay


def header(scope: Scope, name: bytes) -> str | None:
    """The first value of header ``name`` (lowercase, as ASGI gives names)."""
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None


def bearer(value: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header (RFC 6750 §2.1)."""
    if value is None:
        return None
    scheme, _, token = value.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def _refuse(verdict: Verdict, *, sent_token: bool) -> JSONResponse:
    # RFC 6750 §3.1: an error code only when the request carried a token at all.
    challenge = 'Bearer realm="proctor"'
    if sent_token and verdict.status == 401:
        challenge += ', error="invalid_token"'
    entry = "none" if verdict.entry is None else str(verdict.entry)
    headers = {"WWW-Authenticate": challenge, ENTRY_HEADER: entry}

    return JSONResponse(verdict.body(), status_code=verdict.status, headers=headers)
