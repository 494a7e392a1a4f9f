"""The relay between agents and one downstream server, at the level of JSON-RPC
messages: each agent request is answered here or carried over the shared link,
without a second MCP session in the middle.

Proctor answers the handshake itself (``initialize`` from the link's negotiated
state, ``server/discover``, ``ping``), hands ``tools/list`` and ``tools/call`` to the
broker, and refuses every other method as the SDK's server would (``-32601``): a
task reaches a server's tools through Proctor and nothing else. Results go back as
the server sent them, with Proctor's entry id added, vault values removed, and the
shape of the agent's protocol version when it is older than the link's.

Each agent connection settles its protocol era once, on its first request, as the
SDK's servers do: ``initialize`` opens the 2025 handshake era, a request carrying
the 2026-07-28 envelope the per-request era. An agent speaks 2026-07-28 only when
the downstream server does; one that cannot is offered the handshake instead.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import anyio
import mcp_types as types
from mcp.shared.exceptions import MCPError
from mcp.shared.inbound import (
    InboundLadderRejection,
    classify_inbound_request,
    unsupported_protocol_version_rejection,
)
from mcp.shared.message import ServerMessageMetadata, SessionMessage
from mcp_types import (
    INTERNAL_ERROR,
    INVALID_PARAMS,
    INVALID_REQUEST,
    LOG_LEVEL_META_KEY,
    METHOD_NOT_FOUND,
    PROTOCOL_VERSION_META_KEY,
    SERVER_INFO_META_KEY,
    UNSUPPORTED_PROTOCOL_VERSION,
    JSONRPCError,
    JSONRPCNotification,
    JSONRPCRequest,
    JSONRPCResponse,
    RequestId,
)
from mcp_types import methods as spec
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS, LATEST_HANDSHAKE_VERSION
from pydantic import ValidationError

from proctor import __version__
from proctor.gateway.mcp.classify import forwarded_meta
from proctor.gateway.mcp.downstream import Downstream, Progress, Sink, Source
from proctor.gateway.mcp.proxy import Broker, Caller, Outcome, call_request

log = logging.getLogger(__name__)

CAPABILITIES: Mapping[str, Any] = {"tools": {"listChanged": False}}
ANSWERED_HERE = frozenset({"initialize", "server/discover", "ping"})
BROKERED = frozenset({"tools/list", "tools/call"})
RELAYED_NOTIFICATIONS = frozenset(
    {"notifications/message", "notifications/tools/list_changed"}
)
"""What a server may tell an agent outside any request, where one agent alone
listens (the bridge); over HTTP no single agent owns them, so none hears them."""

Notify = Callable[[str, dict[str, Any]], None]
"""Sends one notification to the agent, tied to the request being answered."""
Identify = Callable[[SessionMessage], Caller]
"""Who sent one message, as the door knows it."""


@dataclass(frozen=True)
class Reply:
    """The answer to one agent request, and the outcome to record once it is sent."""

    message: JSONRPCResponse | JSONRPCError
    outcome: Outcome | None = None


@dataclass
class Agent:
    """One agent connection's protocol era, settled by its first request."""

    version: str | None = None
    is_modern: bool = False


class Relay:
    """Relays one downstream server's tools to any number of agents."""

    def __init__(self, broker: Broker, downstream: Downstream) -> None:
        self.broker = broker
        self.downstream = downstream
        server, negotiated = broker.server, downstream.negotiated
        self.server_info = {"name": f"proctor-{server.name}", "version": __version__}
        self.instructions = (
            f"Tools of MCP server {server.name!r}, brokered by Proctor: "
            "every call is decided against your task and recorded."
        )
        discovered = types.DiscoverResult(
            supported_versions=[negotiated.version],
            capabilities=types.ServerCapabilities.model_validate(CAPABILITIES),
            instructions=self.instructions,
        ).model_dump(by_alias=True, mode="json", exclude_none=True)
        self._discovered = (
            self._stamped(
                spec.serialize_server_result(
                    "server/discover", negotiated.version, discovered
                )
            )
            if negotiated.is_modern
            else {}
        )

    async def answer(
        self,
        agent: Agent,
        request: JSONRPCRequest,
        caller: Caller,
        notify: Notify | None = None,
    ) -> Reply:
        """Answer one agent request; never raises but for cancellation."""
        try:
            result, outcome = await self._dispatch(agent, request, caller, notify)
        except MCPError as exc:
            return Reply(_error(request.id, exc.error))
        except Exception:
            log.exception(
                "mcp relay failed server=%s method=%s",
                self.broker.server.name,
                request.method,
            )
            failed = types.ErrorData(code=INTERNAL_ERROR, message="internal error")
            return Reply(_error(request.id, failed))
        response = JSONRPCResponse.model_construct(
            jsonrpc="2.0", id=request.id, result=result
        )

        return Reply(response, outcome)

    async def _dispatch(
        self,
        agent: Agent,
        request: JSONRPCRequest,
        caller: Caller,
        notify: Notify | None,
    ) -> tuple[dict[str, Any], Outcome | None]:
        method, params = request.method, request.params or {}
        version = self._settle(agent, method, params)
        served = method in ANSWERED_HERE or method in BROKERED
        if not served or (method, version) not in spec.CLIENT_REQUESTS:
            raise MCPError(METHOD_NOT_FOUND, "Method not found", method)
        if method == "initialize":
            return self._handshake(version), None
        if method == "server/discover":
            return dict(self._discovered), None
        if method == "ping":
            return self._shaped(agent, method, {}), None
        if method == "tools/list":
            return await self._list_tools(agent, params, caller), None

        return await self._call_tool(agent, params, caller, notify)

    # The protocol era.

    def _settle(self, agent: Agent, method: str, params: Mapping[str, Any]) -> str:
        meta = params.get("_meta")
        enveloped = isinstance(meta, Mapping) and PROTOCOL_VERSION_META_KEY in meta
        if method == "initialize":
            if agent.is_modern:
                raise MCPError(
                    UNSUPPORTED_PROTOCOL_VERSION,
                    "this connection speaks the 2026-07-28 protocol; "
                    "the initialize handshake is not accepted on it",
                    {"supported": [self.downstream.negotiated.version]},
                )
            requested = params.get("protocolVersion")
            agent.version = (
                requested
                if requested in HANDSHAKE_PROTOCOL_VERSIONS
                else LATEST_HANDSHAKE_VERSION
            )
            return agent.version
        if enveloped and (agent.is_modern or agent.version is None):
            return self._modern_version(agent, method, params)
        if enveloped:
            raise MCPError(
                INVALID_REQUEST,
                "this connection speaks the handshake protocol; requests carrying "
                "the 2026-07-28 envelope are not accepted on it",
            )
        if agent.is_modern:
            rejection = classify_inbound_request({"method": method, "params": params})
            raise _rejected(rejection)
        if agent.version is None and method != "ping":
            raise MCPError(INVALID_REQUEST, "send initialize first")

        return agent.version or LATEST_HANDSHAKE_VERSION

    def _modern_version(
        self, agent: Agent, method: str, params: Mapping[str, Any]
    ) -> str:
        route = classify_inbound_request({"method": method, "params": params})
        if isinstance(route, InboundLadderRejection):
            raise _rejected(route)
        if not self.downstream.negotiated.is_modern:
            if method == "server/discover":
                # Not offered, so the agent falls back to the handshake.
                raise MCPError(METHOD_NOT_FOUND, "Method not found", method)
            unsupported = unsupported_protocol_version_rejection(
                route.protocol_version, ()
            )
            raise _rejected(unsupported)
        agent.is_modern, agent.version = True, route.protocol_version

        return route.protocol_version

    def _handshake(self, version: str) -> dict[str, Any]:
        return {
            "protocolVersion": version,
            "capabilities": dict(CAPABILITIES),
            "serverInfo": dict(self.server_info),
            "instructions": self.instructions,
        }

    def _stamped(self, result: dict[str, Any]) -> dict[str, Any]:
        # 2026-07-28 results name the server that gave them: here, Proctor.
        meta = result.get("_meta")
        result["_meta"] = {
            **(meta if isinstance(meta, dict) else {}),
            SERVER_INFO_META_KEY: dict(self.server_info),
        }
        result.setdefault("resultType", "complete")

        return result

    def _shaped(
        self, agent: Agent, method: str, result: dict[str, Any]
    ) -> dict[str, Any]:
        """``result`` as the agent's protocol version has it."""
        if agent.is_modern:
            return self._stamped(result)
        if not self.downstream.negotiated.is_modern:
            return result
        # A handshake-era agent on a 2026-07-28 link: drop what it cannot read.
        version = agent.version or LATEST_HANDSHAKE_VERSION
        try:
            return spec.serialize_server_result(method, version, result)
        except ValidationError as exc:
            raise MCPError(
                INTERNAL_ERROR,
                f"the answer of mcp server {self.broker.server.name} cannot be "
                f"given at protocol version {version}",
            ) from exc

    # The brokered methods.

    async def _list_tools(
        self, agent: Agent, params: Mapping[str, Any], caller: Caller
    ) -> dict[str, Any]:
        claims = await self.broker.claims(caller, {"method": "tools/list"})
        listed = await self._forward("tools/list", params)
        result = self.broker.cleaned(self._cleaned(listed))
        tools = result.get("tools")
        offered = tools if isinstance(tools, list) else []
        self.downstream.listed(offered)
        result["tools"] = [
            tool
            for tool in offered
            if isinstance(tool, dict) and self.broker.may_call(claims, tool.get("name"))
        ]
        if "cacheScope" in result:
            # The list is the task's own: no cache may hand it to another.
            result["cacheScope"] = "private"

        return self._shaped(agent, "tools/list", result)

    async def _call_tool(
        self,
        agent: Agent,
        params: Mapping[str, Any],
        caller: Caller,
        notify: Notify | None,
    ) -> tuple[dict[str, Any], Outcome]:
        tool, arguments, meta = (
            params.get("name"),
            params.get("arguments"),
            params.get("_meta"),
        )
        if (
            not isinstance(tool, str)
            or not isinstance(arguments, dict | None)
            or not isinstance(meta, dict | None)
        ):
            raise MCPError(INVALID_PARAMS, "Invalid request parameters", "")
        claims = await self.broker.claims(caller, call_request(tool))
        given = meta or {}
        progress = None
        if notify is not None and "progressToken" in given:
            hears = notify

            def heard(method: str, params: dict[str, Any]) -> None:
                hears(method, self.broker.cleaned(params))

            progress = Progress(given["progressToken"], heard)

        async def forward(
            arguments: dict[str, Any], forwarded: dict[str, Any]
        ) -> dict[str, Any]:
            if LOG_LEVEL_META_KEY in given:
                forwarded = {**forwarded, LOG_LEVEL_META_KEY: given[LOG_LEVEL_META_KEY]}
            sent = {"name": tool, "arguments": arguments, "_meta": forwarded}
            return self._cleaned(
                await self._forward("tools/call", sent, progress=progress)
            )

        result, outcome = await self.broker.call_tool(
            claims, tool, arguments, meta, forward
        )
        try:
            return self._shaped(agent, "tools/call", result), outcome
        except MCPError:
            self.broker.record(outcome)
            raise

    async def _forward(
        self,
        method: str,
        params: Mapping[str, Any],
        *,
        progress: Progress | None = None,
    ) -> dict[str, Any]:
        try:
            return await self.downstream.request(method, params, progress=progress)
        except MCPError as exc:
            message = self.broker.without_secrets(exc.message)
            raise MCPError(
                exc.code, str(message), self.broker.without_secrets(exc.data)
            ) from exc

    @staticmethod
    def _cleaned(result: dict[str, Any]) -> dict[str, Any]:
        # The server's per-hop keys are not the agent's, and Proctor's are Proctor's.
        meta = result.get("_meta")
        if isinstance(meta, Mapping):
            result["_meta"] = forwarded_meta(meta)
            if not result["_meta"]:
                del result["_meta"]
        return result

    # One agent connection over a stream (the bridge's stdio, one HTTP session).

    async def serve(
        self, read: Source, write: Sink, identify: Identify, *, hears: bool = False
    ) -> None:
        """Serve one agent connection until its stream ends.

        With ``hears``, the agent also gets the server's notifications that
        belong to no request (logging, a changed tool list).
        """
        connection = _Connection(self, write, identify)
        if hears:
            self.downstream.listeners.add(connection.hear)
        try:
            async for item in read:
                if isinstance(item, Exception):
                    log.warning("mcp agent sent an unreadable message: %s", item)
                    continue
                connection.received(item)
        finally:
            self.downstream.listeners.discard(connection.hear)
            await connection.close()
            # The transport's writer ends only once its stream is closed.
            await write.aclose()


class _Connection:
    """The requests of one agent connection, each served as its own task."""

    def __init__(self, relay: Relay, write: Sink, identify: Identify) -> None:
        self.relay = relay
        self.write = write
        self.identify = identify
        self.agent = Agent()
        self.running: dict[RequestId, asyncio.Task[None]] = {}
        self.sending: set[asyncio.Task[None]] = set()

    def received(self, item: SessionMessage) -> None:
        message = item.message
        if isinstance(message, JSONRPCRequest):
            task = asyncio.ensure_future(self._serve(item, message))
            self.running[message.id] = task
            task.add_done_callback(lambda _: self.running.pop(message.id, None))
        elif (
            isinstance(message, JSONRPCNotification)
            and message.method == "notifications/cancelled"
        ):
            cancelled = (message.params or {}).get("requestId")
            running = self.running.get(cancelled) if cancelled is not None else None
            if running is not None:
                running.cancel()

    async def _serve(self, item: SessionMessage, request: JSONRPCRequest) -> None:
        def notify(method: str, params: dict[str, Any]) -> None:
            self._notify(method, params, request.id)

        try:
            reply = await self.relay.answer(
                self.agent, request, self.identify(item), notify
            )
        except asyncio.CancelledError:
            await self._unanswered(item)
            raise
        try:
            await self.write.send(SessionMessage(reply.message))
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            log.debug("mcp agent left before its answer request=%s", request.id)
        finally:
            self.relay.broker.record(reply.outcome)

    def _notify(
        self, method: str, params: dict[str, Any], related: RequestId | None
    ) -> None:
        notification = JSONRPCNotification.model_construct(
            jsonrpc="2.0", method=method, params=params
        )
        metadata = ServerMessageMetadata(related_request_id=related)
        sending = asyncio.ensure_future(
            self._send_quietly(SessionMessage(notification, metadata=metadata))
        )
        self.sending.add(sending)
        sending.add_done_callback(self.sending.discard)

    def hear(self, method: str, params: dict[str, Any]) -> None:
        """Pass on a server notification that belongs to no request."""
        if method in RELAYED_NOTIFICATIONS:
            self._notify(method, self.relay.broker.cleaned(params), None)

    async def _send_quietly(self, message: SessionMessage) -> None:
        try:
            await self.write.send(message)
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            log.debug("mcp agent left before a notification")

    async def _unanswered(self, item: SessionMessage) -> None:
        # A cancelled request gets no answer, but its HTTP stream must still end.
        metadata = item.metadata
        if (
            isinstance(metadata, ServerMessageMetadata)
            and metadata.on_request_unanswered
        ):
            with anyio.CancelScope(shield=True):
                await metadata.on_request_unanswered()

    async def close(self) -> None:
        """Cancel what is still running; each brokered call records as much."""
        unfinished = list(self.running.values())
        for task in unfinished:
            task.cancel()
        await asyncio.gather(*unfinished, return_exceptions=True)


def _error(request_id: RequestId, error: types.ErrorData) -> JSONRPCError:
    return JSONRPCError.model_construct(jsonrpc="2.0", id=request_id, error=error)


def _rejected(rejection: object) -> MCPError:
    if not isinstance(rejection, InboundLadderRejection):
        return MCPError(INVALID_REQUEST, "the request envelope is malformed")
    return MCPError(rejection.code, rejection.message, rejection.data)
