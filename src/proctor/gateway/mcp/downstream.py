"""The link to one downstream MCP server: its transport opened with the vault's
credentials injected, the protocol negotiated once, and every agent's requests
carried over it under Proctor's own request ids, so that each answer finds the
agent that asked however many agents share the link.

The agent's own token never travels on: a stdio server starts from the SDK's short
list of safe variables (``PATH``, ``HOME``, ...) plus its configured ``env`` and its
credentials, and a remote server gets only its configured headers and credentials.

What is per hop is this link's to set: the request id, the progress token (mapped
back to the agent's own when progress arrives) and, when the server speaks
2026-07-28, the per-request envelope naming Proctor as the client. Requests the
server sends Proctor are answered here (``ping``) or refused: Proctor offers no
sampling, elicitation or roots, as the capabilities it sends say.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Any, Protocol

import anyio
import httpx2
import mcp_types as types
from mcp import StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from mcp.shared.inbound import (
    MCP_METHOD_HEADER,
    MCP_NAME_HEADER,
    MCP_PROTOCOL_VERSION_HEADER,
    NAME_BEARING_METHODS,
    encode_header_value,
    find_invalid_x_mcp_header,
    mcp_param_headers,
    x_mcp_header_map,
)
from mcp.shared.message import ClientMessageMetadata, SessionMessage
from mcp_types import (
    CLIENT_CAPABILITIES_META_KEY,
    CLIENT_INFO_META_KEY,
    LOG_LEVEL_META_KEY,
    METHOD_NOT_FOUND,
    PROTOCOL_VERSION_META_KEY,
    REQUEST_TIMEOUT,
    SERVER_INFO_META_KEY,
    ErrorData,
    JSONRPCError,
    JSONRPCMessage,
    JSONRPCNotification,
    JSONRPCRequest,
    JSONRPCResponse,
)
from mcp_types.version import (
    HANDSHAKE_PROTOCOL_VERSIONS,
    LATEST_HANDSHAKE_VERSION,
    LATEST_MODERN_VERSION,
    MODERN_PROTOCOL_VERSIONS,
)
from pydantic import ValidationError

from proctor import __version__
from proctor.errors import GatewayError
from proctor.gateway.mcp.classify import forwarded_meta
from proctor.gateway.mcp.config import McpServer, Transport
from proctor.vault.inject import Outbound, apply

log = logging.getLogger(__name__)

CONNECT_TIMEOUT = 30.0
STREAM_READ = 300.0
"""Seconds a remote server's response stream may stay silent (the SDK's default)."""
CANCEL_TIMEOUT = 1.0
CLIENT_INFO = {"name": "proctor", "version": __version__}

Secret = Callable[[str], str]
"""Returns a vault secret's value by name; raises VaultError."""
Listener = Callable[[str, dict[str, Any]], None]
"""Hears one notification (method, params); must not block."""


class Sink(Protocol):
    """Where messages go: the write side of an SDK transport."""

    async def send(self, item: SessionMessage, /) -> None: ...
    async def aclose(self) -> None: ...


class Source(Protocol):
    """Where messages come from: the read side of an SDK transport."""

    def __aiter__(self) -> Source: ...
    async def __anext__(self) -> SessionMessage | Exception: ...


class ClosedError(GatewayError):
    """The downstream server went away before it answered."""


@dataclass(frozen=True)
class Negotiated:
    """What the server said of itself when the link opened."""

    version: str
    capabilities: Mapping[str, Any]
    server_info: Mapping[str, Any] | None = None
    instructions: str | None = None

    @property
    def is_modern(self) -> bool:
        """Whether the link speaks the 2026-07-28 per-request protocol."""
        return self.version in MODERN_PROTOCOL_VERSIONS


@dataclass(frozen=True)
class Progress:
    """Where a request's progress goes, and the token the agent knows it by."""

    token: object
    listener: Listener


@dataclass(frozen=True)
class _Waiting:
    answer: asyncio.Future[JSONRPCResponse | JSONRPCError]
    progress: Progress | None = None


class Downstream:
    """One open link to a downstream server, shared by every agent of a door."""

    def __init__(self, server: McpServer, write: Sink) -> None:
        self.server = server
        self.negotiated = Negotiated(LATEST_HANDSHAKE_VERSION, {})
        self.listeners: set[Listener] = set()
        """Who hears the server's notifications that belong to no request."""
        self.schemas: dict[str, Any] = {}
        """Input schemas of the tools listed so far that name ``Mcp-Param-*``
        headers (``x-mcp-header``), by tool name."""
        self._write = write
        # The stdio transport's plain memory stream hands a message straight to
        # a waiting writer, sparing the round of the loop its send() takes first.
        self._hand_over: Callable[[SessionMessage], None] | None = getattr(
            write, "send_nowait", None
        )
        self._waiting: dict[int, _Waiting] = {}
        self._ids = itertools.count(1)
        self._envelope: dict[str, Any] = {}
        self._is_remote = server.transport is not Transport.STDIO
        self._closed = False

    async def request(
        self,
        method: str,
        params: Mapping[str, Any] | None,
        *,
        progress: Progress | None = None,
        timeout: float | None = None,
    ) -> dict[str, Any]:
        """Send one request under a fresh id and return the server's result.

        Raises MCPError with the server's own error (REQUEST_TIMEOUT when it does
        not answer in time) and ClosedError when the link dies first. A caller
        that stops waiting tells the server the request is cancelled.
        """
        if self._closed:
            raise ClosedError(f"mcp server {self.server.name} closed the link")
        number = next(self._ids)
        waiting = _Waiting(asyncio.get_running_loop().create_future(), progress)
        body = self._stamped(params, number, waiting)
        limit = timeout or self.server.timeout
        self._waiting[number] = waiting
        request = JSONRPCRequest.model_construct(
            jsonrpc="2.0", id=number, method=method, params=body
        )
        try:
            await self._send(request, method, body)
            async with asyncio.timeout(limit):
                answer = await waiting.answer
        except TimeoutError:
            await self._cancel(number, "timed out")
            message = f"mcp server {self.server.name} did not answer within {limit:g} s"
            raise MCPError(REQUEST_TIMEOUT, message) from None
        except BaseException:
            await self._cancel(number, "cancelled")
            raise
        finally:
            self._waiting.pop(number, None)
        if isinstance(answer, JSONRPCError):
            error = answer.error
            raise MCPError(error.code, error.message, error.data)

        return answer.result

    def _stamped(
        self, params: Mapping[str, Any] | None, number: int, waiting: _Waiting
    ) -> dict[str, Any]:
        # The agent's per-hop keys stay behind; this hop's own are set here.
        body = dict(params or {})
        given = body.pop("_meta", None)
        given = given if isinstance(given, Mapping) else {}
        meta = forwarded_meta(given)
        if waiting.progress is not None:
            meta["progressToken"] = number
        if self.negotiated.is_modern:
            meta.update(self._envelope)
            if LOG_LEVEL_META_KEY in given:
                meta[LOG_LEVEL_META_KEY] = given[LOG_LEVEL_META_KEY]
        if meta:
            body["_meta"] = meta

        return body

    async def _send(
        self, message: JSONRPCMessage, method: str, params: Mapping[str, Any]
    ) -> None:
        remote = self._is_remote and method not in ("", "initialize")
        metadata = self._headers(method, params) if remote else None
        item = SessionMessage(message, metadata=metadata)
        try:
            if self._hand_over is not None:
                with contextlib.suppress(anyio.WouldBlock):
                    self._hand_over(item)
                    return
            await self._write.send(item)
        except (anyio.ClosedResourceError, anyio.BrokenResourceError) as exc:
            raise ClosedError(f"mcp server {self.server.name} is gone") from exc

    def _headers(self, method: str, params: Mapping[str, Any]) -> ClientMessageMetadata:
        # What the SDK's client session would have asked its HTTP transport to send.
        headers = {MCP_PROTOCOL_VERSION_HEADER: self.negotiated.version}
        if not self.negotiated.is_modern:
            return ClientMessageMetadata(headers=headers)
        headers[MCP_METHOD_HEADER] = method
        name = params.get(NAME_BEARING_METHODS.get(method, ""))
        if isinstance(name, str):
            headers[MCP_NAME_HEADER] = encode_header_value(name)
        arguments = params.get("arguments")
        tool = name if method == "tools/call" and isinstance(name, str) else None
        schema = self.schemas.get(tool) if tool is not None else None
        if schema is not None and isinstance(arguments, Mapping):
            headers.update(mcp_param_headers(x_mcp_header_map(schema), arguments))

        return ClientMessageMetadata(headers=headers)

    def listed(self, tools: list[Any]) -> None:
        """Note the schemas of listed tools that carry arguments in headers."""
        for tool in tools:
            if not isinstance(tool, dict) or not isinstance(tool.get("name"), str):
                continue
            schema = tool.get("inputSchema")
            # An invalid annotation names no header, as the SDK reads it.
            named = find_invalid_x_mcp_header(schema) is None and x_mcp_header_map(
                schema
            )
            if named:
                self.schemas[tool["name"]] = schema
            else:
                self.schemas.pop(tool["name"], None)

    async def _cancel(self, number: int, reason: str) -> None:
        if self._waiting.pop(number, None) is None:
            return
        cancelled = JSONRPCNotification.model_construct(
            jsonrpc="2.0",
            method="notifications/cancelled",
            params={"requestId": number, "reason": reason},
        )
        # Best effort, and even while the caller itself is being cancelled.
        with anyio.move_on_after(CANCEL_TIMEOUT, shield=True):
            with contextlib.suppress(GatewayError):
                await self._send(cancelled, cancelled.method, {})

    # What the server sends.

    async def read(self, source: Source) -> None:
        """Route everything the server sends until its stream ends."""
        try:
            async for item in source:
                if isinstance(item, Exception):
                    log.warning(
                        "mcp server %s sent an unreadable message: %s",
                        self.server.name,
                        type(item).__name__,
                    )
                    continue
                await self._route(item.message)
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            log.info("mcp server %s link closed", self.server.name)
        finally:
            self._closed = True
            gone = ClosedError(f"mcp server {self.server.name} closed the link")
            for waiting in self._waiting.values():
                if not waiting.answer.done():
                    waiting.answer.set_exception(gone)

    async def _route(self, message: JSONRPCMessage) -> None:
        if isinstance(message, JSONRPCResponse | JSONRPCError):
            number = message.id
            waiting = self._waiting.get(number) if isinstance(number, int) else None
            if waiting is not None and not waiting.answer.done():
                waiting.answer.set_result(message)
        elif isinstance(message, JSONRPCNotification):
            self._notified(message.method, message.params or {})
        else:
            await self._answer_server(message)

    def _notified(self, method: str, params: dict[str, Any]) -> None:
        if method == "notifications/progress":
            token = params.get("progressToken")
            waiting = self._waiting.get(token) if isinstance(token, int) else None
            progress = waiting.progress if waiting is not None else None
            if progress is not None:
                progress.listener(method, {**params, "progressToken": progress.token})
            return
        for listener in list(self.listeners):
            listener(method, params)

    async def _answer_server(self, request: JSONRPCRequest) -> None:
        answer: JSONRPCMessage
        if request.method == "ping":
            answer = JSONRPCResponse(jsonrpc="2.0", id=request.id, result={})
        else:
            reason = "proctor takes no requests from mcp servers"
            error = ErrorData(
                code=METHOD_NOT_FOUND, message=reason, data=request.method
            )
            answer = JSONRPCError(jsonrpc="2.0", id=request.id, error=error)
        with contextlib.suppress(GatewayError):
            await self._send(answer, "", {})

    # Negotiation.

    async def negotiate(self) -> Negotiated:
        """Settle the protocol: 2026-07-28 when the server offers it, else the
        initialize handshake. Raises GatewayError when neither works."""
        self._envelope = {
            PROTOCOL_VERSION_META_KEY: LATEST_MODERN_VERSION,
            CLIENT_INFO_META_KEY: CLIENT_INFO,
            CLIENT_CAPABILITIES_META_KEY: {},
        }
        self.negotiated = Negotiated(LATEST_MODERN_VERSION, {})
        try:
            found = await self.request("server/discover", {}, timeout=CONNECT_TIMEOUT)
            discovered = types.DiscoverResult.model_validate(found)
        except (MCPError, ValidationError):
            return await self._initialize()
        mutual = [
            v for v in MODERN_PROTOCOL_VERSIONS if v in discovered.supported_versions
        ]
        if not mutual:
            return await self._initialize()
        self._envelope[PROTOCOL_VERSION_META_KEY] = mutual[-1]
        self.negotiated = Negotiated(
            mutual[-1],
            _dumped(discovered.capabilities),
            (discovered.meta or {}).get(SERVER_INFO_META_KEY),
            discovered.instructions,
        )

        return self.negotiated

    async def _initialize(self) -> Negotiated:
        self.negotiated = Negotiated(LATEST_HANDSHAKE_VERSION, {})
        params = {
            "protocolVersion": LATEST_HANDSHAKE_VERSION,
            "capabilities": {},
            "clientInfo": CLIENT_INFO,
        }
        try:
            found = await self.request("initialize", params, timeout=CONNECT_TIMEOUT)
            result = types.InitializeResult.model_validate(found)
        except (MCPError, ValidationError) as exc:
            raise GatewayError(
                f"mcp server {self.server.name} refused the handshake: {exc}"
            ) from exc
        if result.protocol_version not in HANDSHAKE_PROTOCOL_VERSIONS:
            raise GatewayError(
                f"mcp server {self.server.name} answered protocol version "
                f"{result.protocol_version!r}, which proctor does not speak"
            )
        self.negotiated = Negotiated(
            result.protocol_version,
            _dumped(result.capabilities),
            _dumped(result.server_info),
            result.instructions,
        )
        initialized = JSONRPCNotification.model_construct(
            jsonrpc="2.0", method="notifications/initialized", params=None
        )
        await self._send(initialized, initialized.method, {})

        return self.negotiated


def _dumped(model: types.ServerCapabilities | types.Implementation) -> dict[str, Any]:
    return model.model_dump(by_alias=True, mode="json", exclude_none=True)


def outbound(server: McpServer, secret: Secret) -> Outbound:
    """The environment or headers a server receives, credentials included.

    Raises VaultError naming a secret that is missing or cannot travel there.
    """
    result = Outbound(headers=dict(server.headers), env=dict(server.env))
    for injection in server.credentials:
        result = apply(injection, secret(injection.secret), result)

    return result


def stdio_parameters(server: McpServer, parts: Outbound) -> StdioServerParameters:
    """How to launch a stdio server; raises GatewayError for a remote one."""
    if server.transport is not Transport.STDIO or server.command is None:
        raise GatewayError(f"mcp server {server.name} is not launched by proctor")
    return StdioServerParameters(
        command=server.command,
        args=list(server.args),
        env=dict(parts.env),
        cwd=server.cwd,
    )


@asynccontextmanager
async def connect(server: McpServer, secret: Secret) -> AsyncIterator[Downstream]:
    """Open the link to ``server`` for as long as the context lasts.

    Raises GatewayError when the server cannot be started, reached or spoken
    to, and VaultError when one of its credentials is missing.
    """
    parts = outbound(server, secret)
    try:
        async with AsyncExitStack() as stack:
            try:
                opened = _transport(server, parts, stack)
                read, write = await stack.enter_async_context(opened)
            # The SDK raises whatever its transport raises (OSError, httpx2 errors,
            # groups of them): all mean the server cannot be reached.
            except Exception as exc:
                raise GatewayError(
                    f"cannot open mcp server {server.name}: {type(exc).__name__}"
                ) from exc
            link = Downstream(server, write)
            reader = asyncio.ensure_future(link.read(read))
            try:
                await link.negotiate()
                yield link
            finally:
                reader.cancel()
                await asyncio.gather(reader, return_exceptions=True)
    except BaseExceptionGroup as group:
        # The transport's task group wraps what crosses it, such as a server that
        # exits before it answers: one GatewayError is said as itself.
        sole = _sole_gateway_error(group)
        if sole is None:
            raise
        raise sole from None


def _sole_gateway_error(
    group: BaseExceptionGroup[BaseException],
) -> GatewayError | None:
    errors = list(_leaves(group))
    if len(errors) == 1 and isinstance(errors[0], GatewayError):
        return errors[0]
    return None


def _leaves(error: BaseException) -> Iterator[BaseException]:
    if isinstance(error, BaseExceptionGroup):
        for inner in error.exceptions:
            yield from _leaves(inner)
    else:
        yield error


def _transport(
    server: McpServer, parts: Outbound, stack: AsyncExitStack
) -> AbstractAsyncContextManager[tuple[Source, Sink]]:
    if server.transport is Transport.STDIO:
        return stdio_client(stdio_parameters(server, parts))
    timeout = httpx2.Timeout(CONNECT_TIMEOUT, read=max(server.timeout, STREAM_READ))
    http = httpx2.AsyncClient(headers=dict(parts.headers), timeout=timeout)
    stack.push_async_callback(http.aclose)

    return streamable_http_client(str(server.url), http_client=http)
