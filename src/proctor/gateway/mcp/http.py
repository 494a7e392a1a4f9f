"""The Streamable HTTP front door: one MCP endpoint per downstream server, at
``/<server>`` under wherever the app is mounted (``/mcp/<server>`` in proctor serve).

Every HTTP request needs ``Authorization: Bearer <task token>``. The token is checked
once per request, before the MCP transport sees it; a missing or bad one is recorded
(``auth.refused``) and answered with 401 and ``WWW-Authenticate: Bearer`` (RFC 6750
§3), or 503 when even the refusal could not be recorded. The MCP handlers then use
the claims that request carried, so a token revoked mid-session stops at its next
request.

The app's lifespan starts each server's session manager, which opens the client to
its downstream server; a parent app that mounts this one must run it (Starlette runs
the lifespan of the app it serves, not of mounted ones)::

    door = http_app(runtime.pipeline(), load_servers(runtime.config.raw))
    app = Starlette(
        routes=[Mount("/mcp", app=door)], lifespan=door.router.lifespan_context
    )
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

from mcp.server.streamable_http_manager import (
    StreamableHTTPASGIApp,
    StreamableHTTPSessionManager,
)
from mcp.server.transport_security import TransportSecuritySettings
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from proctor.gateway.mcp.classify import DOOR
from proctor.gateway.mcp.config import McpServer
from proctor.gateway.mcp.proxy import Broker, Context
from proctor.gateway.pipeline import Pipeline, Verdict
from proctor.tasks.token import TaskClaims

CLAIMS = "proctor_claims"
"""Where the checked claims wait in the ASGI scope's ``state`` for the MCP handlers."""

LOOPBACK = TransportSecuritySettings(
    enable_dns_rebinding_protection=True,
    allowed_hosts=["127.0.0.1:*", "localhost:*", "[::1]:*"],
    allowed_origins=["http://127.0.0.1:*", "http://localhost:*", "http://[::1]:*"],
)
"""The default Host and Origin checks: loopback only, against DNS rebinding."""


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
    managers: list[StreamableHTTPSessionManager] = []
    routes: list[Route] = []
    for name, server in servers.items():
        broker = Broker(pipeline, server, claims_of)
        manager = StreamableHTTPSessionManager(
            app=broker.build(),
            json_response=json_response,
            security_settings=security or LOOPBACK,
        )
        managers.append(manager)
        guarded = Guard(pipeline, name, StreamableHTTPASGIApp(manager))
        routes.append(Route(f"/{name}", endpoint=guarded, methods=None))

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            for manager in managers:
                await stack.enter_async_context(manager.run())
            yield

    return Starlette(routes=routes, lifespan=lifespan)


class Guard:
    """Checks the task token of every request before the MCP transport runs."""

    def __init__(self, pipeline: Pipeline, server: str, app: ASGIApp) -> None:
        self.pipeline = pipeline
        self.server = server
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        token = bearer(request.headers.get("authorization"))
        claims = await self.pipeline.authenticate(
            token,
            door=DOOR,
            target=self.server,
            request={"method": request.method, "path": request.url.path},
        )
        if isinstance(claims, Verdict):
            await _refuse(claims, sent_token=token is not None)(scope, receive, send)
            return
        scope.setdefault("state", {})[CLAIMS] = claims
        await self.app(scope, receive, send)


def claims_of(ctx: Context) -> TaskClaims | None:
    """The claims the guard checked for the request that carried this message."""
    request: Any = ctx.request
    state = getattr(request, "scope", {}).get("state", {})
    claims = state.get(CLAIMS)

    return claims if isinstance(claims, TaskClaims) else None


def bearer(header: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header (RFC 6750 §2.1)."""
    if header is None:
        return None
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def _refuse(verdict: Verdict, *, sent_token: bool) -> JSONResponse:
    # RFC 6750 §3.1: an error code only when the request carried a token at all.
    challenge = 'Bearer realm="proctor"'
    if sent_token and verdict.status == 401:
        challenge += ', error="invalid_token"'
    headers = {"WWW-Authenticate": challenge}

    return JSONResponse(verdict.body(), status_code=verdict.status, headers=headers)
