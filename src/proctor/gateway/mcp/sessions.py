"""The 2025 handshake-era sessions of one HTTP door: each agent session the SDK's
Streamable HTTP transport serves (``Mcp-Session-Id``, SSE streams, resumable GET)
is one agent connection of the relay, all of them sharing the door's one link to
the downstream server.

A session opens with ``initialize`` and belongs to the task whose token opened it:
a request that names it with another task's token is answered as if it did not
exist (404), as is one naming a session that ended. A session with no request in
flight for ``IDLE_TIMEOUT`` seconds ends; so do all of them when the door stops.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from uuid import uuid4

import anyio
import orjson
from anyio.abc import TaskGroup, TaskStatus
from mcp.server.streamable_http import (
    MCP_SESSION_ID_HEADER,
    StreamableHTTPServerTransport,
)
from mcp.server.transport_security import TransportSecuritySettings
from mcp.shared.message import ServerMessageMetadata, SessionMessage
from mcp_types import INTERNAL_ERROR, INVALID_REQUEST
from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

from proctor.gateway.mcp.proxy import Caller
from proctor.gateway.mcp.relay import Relay
from proctor.tasks.token import TaskClaims

log = logging.getLogger(__name__)

CLAIMS = "proctor_claims"
"""Where the checked claims wait in the ASGI scope's ``state`` for the relay."""
IDLE_TIMEOUT = 30 * 60.0
_SESSION_HEADER = MCP_SESSION_ID_HEADER.lower().encode("ascii")
MAX_SESSIONS = 10_000


@dataclass(frozen=True)
class _Session:
    transport: StreamableHTTPServerTransport
    task: str


class Sessions:
    """The open handshake-era sessions of one HTTP door."""

    def __init__(
        self,
        relay: Relay,
        security: TransportSecuritySettings,
        *,
        json_only: bool,
    ) -> None:
        self.relay = relay
        self.security = security
        self.json_only = json_only
        self._open: dict[str, _Session] = {}
        self._group: TaskGroup | None = None

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Keep sessions for as long as the context lasts; end them all after."""
        async with anyio.create_task_group() as group:
            self._group = group
            try:
                yield
            finally:
                group.cancel_scope.cancel()
                self._group = None
                self._open.clear()

    async def __call__(
        self, scope: Scope, receive: Receive, send: Send, claims: TaskClaims
    ) -> None:
        named = None
        for key, value in scope["headers"]:
            if key == _SESSION_HEADER:
                named = value.decode("latin-1")
                break
        if named is None:
            await self._open_session(scope, receive, send, claims)
            return
        session = self._open.get(named)
        if session is None or session.task != claims.task:
            await _error("Session not found", 404)(scope, receive, send)
            return
        await session.transport.handle_request(scope, receive, send)
        if session.transport.is_terminated:
            await self._discard(named, session.transport)

    async def _open_session(
        self, scope: Scope, receive: Receive, send: Send, claims: TaskClaims
    ) -> None:
        if self._group is None or len(self._open) >= MAX_SESSIONS:
            log.warning("mcp session refused: %d sessions are open", len(self._open))
            await _error("Too many open sessions", 503, INTERNAL_ERROR)(
                scope, receive, send
            )
            return
        transport = StreamableHTTPServerTransport(
            mcp_session_id=uuid4().hex,
            is_json_response_enabled=self.json_only,
            security_settings=self.security,
            idle_timeout=IDLE_TIMEOUT,
        )
        named = str(transport.mcp_session_id)
        self._open[named] = _Session(transport, claims.task)
        opened = False
        try:
            await self._group.start(self._serve, named, transport)
            status = await _answered(transport, scope, receive, send)
            # Only an initialize that succeeded opens a session.
            opened = status is not None and status < 400
        finally:
            if not opened:
                await self._discard(named, transport)

    async def _serve(
        self,
        named: str,
        transport: StreamableHTTPServerTransport,
        *,
        task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        async with transport.connect() as (read, write):
            task_status.started()
            try:
                with transport.idle_scope or anyio.CancelScope():
                    await self.relay.serve(read, write, claims_of)
            except anyio.ClosedResourceError:
                # The transport closed the session's stream: the session is over.
                log.debug("mcp session %s ended", named)
            except Exception:
                log.exception("mcp session %s failed", named)
            finally:
                await self._discard(named, transport)

    async def _discard(
        self, named: str, transport: StreamableHTTPServerTransport
    ) -> None:
        self._open.pop(named, None)
        if not transport.is_terminated:
            with anyio.CancelScope(shield=True):
                await transport.terminate()


def claims_of(item: SessionMessage) -> Caller:
    """The claims the guard checked for the HTTP request that carried ``item``."""
    metadata = item.metadata
    request = (
        metadata.request_context
        if isinstance(metadata, ServerMessageMetadata)
        else None
    )
    state = getattr(request, "scope", {}).get("state", {})
    claims = state.get(CLAIMS)

    return claims if isinstance(claims, TaskClaims) else None


async def _answered(
    transport: StreamableHTTPServerTransport, scope: Scope, receive: Receive, send: Send
) -> int | None:
    status: int | None = None

    async def watched(message: Message) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        await send(message)

    await transport.handle_request(scope, receive, watched)

    return status


def _error(message: str, status: int, code: int = INVALID_REQUEST) -> Response:
    body = {"jsonrpc": "2.0", "id": None, "error": {"code": code, "message": message}}
    return Response(
        orjson.dumps(body), status_code=status, media_type="application/json"
    )
