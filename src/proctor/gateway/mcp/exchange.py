"""One 2026-07-28 request over Streamable HTTP: a self-contained POST, answered on
its own response without a session, relayed to the door's downstream server.

The checks are the SDK's, in its order (Host and Origin, method, Accept, body,
envelope and routing headers, ``Mcp-Param-*`` headers against the tool's schema),
and so are their answers. The reply is JSON unless the server sends progress
first, or stays silent past the keep-alive interval: then it is an SSE stream, its
last event the reply. An agent that closes the stream cancels the request, and the
server is told so.
"""

from __future__ import annotations

import asyncio
import json
import logging
from asyncio import FIRST_COMPLETED
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import orjson
from mcp.server.streamable_http import check_accept_headers
from mcp.server.transport_security import TransportSecurityMiddleware
from mcp.shared.inbound import (
    ERROR_CODE_HTTP_STATUS,
    MCP_PROTOCOL_VERSION_HEADER,
    InboundLadderRejection,
    classify_inbound_request,
    find_duplicated_routing_header,
    unsupported_protocol_version_rejection,
    validate_mcp_param_headers,
)
from mcp_types import (
    HEADER_MISMATCH,
    INVALID_REQUEST,
    PARSE_ERROR,
    JSONRPCError,
    JSONRPCRequest,
    JSONRPCResponse,
    RequestId,
)
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from proctor.gateway.mcp.relay import Agent, Relay, Reply
from proctor.tasks.token import TaskClaims

log = logging.getLogger(__name__)

KEEPALIVE = 15.0
"""Seconds a silent request may hold a JSON reply back before it turns to SSE,
and then between keep-alive comments."""
SSE_HEADERS: Final = [
    (b"content-type", b"text/event-stream"),
    (b"cache-control", b"no-cache, no-transform"),
    (b"connection", b"keep-alive"),
    (b"x-accel-buffering", b"no"),
]


class Exchange:
    """Serves the 2026-07-28 POSTs of one HTTP door."""

    def __init__(
        self, relay: Relay, security: TransportSecurityMiddleware, *, json_only: bool
    ) -> None:
        self.relay = relay
        self.security = security
        self.json_only = json_only

    async def __call__(
        self, scope: Scope, receive: Receive, send: Send, claims: TaskClaims
    ) -> None:
        request = Request(scope, receive)
        refused = await self._refused(request)
        if refused is not None:
            await refused(scope, receive, send)
            return
        wire = _Wire(scope, receive, send)
        try:
            decoded = loads(await request.body())
        except (ValueError, RecursionError):
            await wire.reply(_failure(None, PARSE_ERROR, "Parse error"))
            return
        if isinstance(decoded, dict) and "id" not in decoded:
            await self._acknowledge(request, wire)
            return
        checked = self._checked(decoded, request, scope)
        if isinstance(checked, JSONRPCError):
            await wire.reply(checked)
            return
        message, version = checked
        await self._answer(Agent(version, is_modern=True), message, claims, wire)

    async def _refused(self, request: Request) -> Response | None:
        refused = await self.security.validate_request(
            request, is_post=request.method == "POST"
        )
        if refused is not None:
            return refused
        if request.method != "POST":
            return Response(status_code=405, headers={"Allow": "POST"})
        has_json, has_sse = check_accept_headers(request)
        if not has_json or (not self.json_only and not has_sse):
            return Response(status_code=406)
        return None

    async def _acknowledge(self, request: Request, wire: _Wire) -> None:
        # The 2026-07-28 wire has no notifications from the client: accepted, dropped.
        requested = request.headers.get(MCP_PROTOCOL_VERSION_HEADER, "")
        unsupported = unsupported_protocol_version_rejection(requested)
        if unsupported is not None:
            await wire.reply(_rejected(None, unsupported))
            return
        await Response(status_code=202)(wire.scope, wire.receive, wire.send)

    def _checked(
        self, decoded: object, request: Request, scope: Scope
    ) -> tuple[JSONRPCRequest, str] | JSONRPCError:
        """The request and its protocol version, or the error that refuses it."""
        if not (
            isinstance(decoded, dict)
            and decoded.get("jsonrpc") == "2.0"
            and isinstance(decoded.get("method"), str)
            and isinstance(decoded.get("id"), int | str)
            and not isinstance(decoded.get("id"), bool)
            and isinstance(decoded.get("params", {}), dict)
        ):
            return _failure(
                None,
                INVALID_REQUEST,
                "Body must be a single JSON-RPC request or notification object",
            )
        request_id = decoded["id"]
        pairs = [
            (key.decode("latin-1"), value.decode("latin-1"))
            for key, value in scope["headers"]
        ]
        duplicated = find_duplicated_routing_header(pairs)
        if duplicated is not None:
            message = f"{duplicated} header appears more than once"
            return _failure(request_id, HEADER_MISMATCH, message)
        route = classify_inbound_request(decoded, headers=dict(pairs))
        if isinstance(route, InboundLadderRejection):
            return _rejected(request_id, route)
        rejection = self._param_headers(decoded, request)
        if rejection is not None:
            return _rejected(request_id, rejection)
        checked = JSONRPCRequest.model_construct(
            jsonrpc="2.0",
            id=request_id,
            method=decoded["method"],
            params=decoded.get("params"),
        )

        return checked, route.protocol_version

    def _param_headers(
        self, decoded: Mapping[str, Any], request: Request
    ) -> InboundLadderRejection | None:
        # Only a tool whose schema names Mcp-Param-* headers has any to check.
        params = decoded.get("params") or {}
        arguments = params.get("arguments") or {}
        if decoded.get("method") != "tools/call" or not isinstance(arguments, dict):
            return None
        schema = self.relay.downstream.schemas.get(str(params.get("name")))
        if schema is None:
            return None
        return validate_mcp_param_headers(schema, arguments, request.headers)

    async def _answer(
        self, agent: Agent, request: JSONRPCRequest, claims: TaskClaims, wire: _Wire
    ) -> None:
        if self.json_only:
            reply = await self.relay.answer(agent, request, claims)
            await wire.reply(reply.message)
            self.relay.broker.record(reply.outcome)
            return
        events = _Events()
        answering = asyncio.ensure_future(
            self.relay.answer(agent, request, claims, events.notify)
        )
        leaving = asyncio.ensure_future(_disconnected(wire.receive))
        try:
            sent = await self._stream(answering, leaving, events, wire)
        finally:
            leaving.cancel()
            if not answering.done():
                answering.cancel()
        if sent is not None:
            self.relay.broker.record(sent.outcome)

    async def _stream(
        self,
        answering: asyncio.Future[Reply],
        leaving: asyncio.Future[None],
        events: _Events,
        wire: _Wire,
    ) -> Reply | None:
        waited = (answering, leaving, events.woken)
        await asyncio.wait(waited, timeout=KEEPALIVE, return_when=FIRST_COMPLETED)
        if answering.done() and not events.pending:
            reply = answering.result()
            await wire.reply(reply.message)
            return reply
        if leaving.done():
            return None
        # Progress came first, or silence lasted: the answer goes out as SSE.
        await wire.send(
            {"type": "http.response.start", "status": 200, "headers": SSE_HEADERS}
        )
        while True:
            for event in events.take():
                await wire.body(event)
            if answering.done():
                reply = answering.result()
                await wire.body(_sse(_wire(reply.message)), last=True)
                return reply
            waited = (answering, leaving, events.woken)
            done, _ = await asyncio.wait(
                waited, timeout=KEEPALIVE, return_when=FIRST_COMPLETED
            )
            if leaving in done:
                return None
            if not done:
                await wire.body(b": ping\r\n\r\n")


@dataclass(frozen=True)
class _Wire:
    """The ASGI channel of one exchange."""

    scope: Scope
    receive: Receive
    send: Send

    async def reply(self, message: JSONRPCResponse | JSONRPCError) -> None:
        status = 200
        if isinstance(message, JSONRPCError):
            status = ERROR_CODE_HTTP_STATUS.get(message.error.code, 200)
        body = _dumps(_wire(message))
        response = Response(body, status_code=status, media_type="application/json")
        await response(self.scope, self.receive, self.send)

    async def body(self, data: bytes, *, last: bool = False) -> None:
        await self.send(
            {"type": "http.response.body", "body": data, "more_body": not last}
        )


class _Events:
    """Notifications waiting to go out on one exchange's response stream."""

    def __init__(self) -> None:
        self.pending: list[bytes] = []
        self.woken: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def notify(self, method: str, params: dict[str, Any]) -> None:
        self.pending.append(
            _sse({"jsonrpc": "2.0", "method": method, "params": params})
        )
        if not self.woken.done():
            self.woken.set_result(None)

    def take(self) -> list[bytes]:
        taken, self.pending = self.pending, []
        if self.woken.done():
            self.woken = asyncio.get_running_loop().create_future()
        return taken


async def _disconnected(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


def _wire(message: JSONRPCResponse | JSONRPCError) -> dict[str, Any]:
    if isinstance(message, JSONRPCResponse):
        return {"jsonrpc": "2.0", "id": message.id, "result": message.result}
    error = message.error.model_dump(mode="json", exclude_none=True)
    return {"jsonrpc": "2.0", "id": message.id, "error": error}


def _sse(message: Mapping[str, Any]) -> bytes:
    return b"event: message\r\ndata: " + _dumps(message) + b"\r\n\r\n"


def loads(body: bytes) -> object:
    """JSON from a request body; raises ValueError (UnicodeDecodeError included)."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        # Integers beyond 64 bits, which only the standard decoder reads.
        return json.loads(body)


def _dumps(value: object) -> bytes:
    try:
        return orjson.dumps(value)
    except TypeError:
        # Integers beyond 64 bits, which only the standard encoder writes.
        return json.dumps(value, separators=(",", ":")).encode("utf-8")


def _failure(request_id: RequestId | None, code: int, message: str) -> JSONRPCError:
    return _rejected(request_id, InboundLadderRejection(code=code, message=message))


def _rejected(
    request_id: RequestId | None, rejection: InboundLadderRejection
) -> JSONRPCError:
    error: dict[str, Any] = {"code": rejection.code, "message": rejection.message}
    if rejection.data is not None:
        error["data"] = rejection.data
    return JSONRPCError.model_validate(
        {"jsonrpc": "2.0", "id": request_id, "error": error}
    )
