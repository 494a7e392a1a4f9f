"""Tests for the link to a downstream server, against a scripted server end: the
negotiation, Proctor's own request ids and how answers find their way back, the
per-hop keys of ``_meta``, progress, and what the server may ask of Proctor."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import anyio
import pytest
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from mcp.shared.exceptions import MCPError
from mcp.shared.message import SessionMessage
from mcp_types import (
    CLIENT_INFO_META_KEY,
    METHOD_NOT_FOUND,
    PROTOCOL_VERSION_META_KEY,
    ErrorData,
    JSONRPCError,
    JSONRPCNotification,
    JSONRPCRequest,
    JSONRPCResponse,
)

from proctor.gateway.mcp.config import McpServer
from proctor.gateway.mcp.downstream import (
    CLIENT_INFO,
    ClosedError,
    Downstream,
    Progress,
)

SERVER = McpServer.from_table("echo", {"command": "x"})
REMOTE = McpServer.from_table("search", {"url": "https://search.example.com/mcp"})
MODERN = "2026-07-28"
T = TypeVar("T")


@dataclass
class ServerEnd:
    """The server's end of a link: what Proctor sent, and a way to answer."""

    sent: MemoryObjectReceiveStream[SessionMessage]
    replies: MemoryObjectSendStream[SessionMessage | Exception]

    async def next(self) -> Any:
        return (await self.sent.receive()).message

    async def answer(self, request: JSONRPCRequest, result: dict[str, Any]) -> None:
        reply = JSONRPCResponse(jsonrpc="2.0", id=request.id, result=result)
        await self.replies.send(SessionMessage(reply))

    async def fail(self, request: JSONRPCRequest, code: int) -> None:
        error = ErrorData(code=code, message="no")
        reply = JSONRPCError(jsonrpc="2.0", id=request.id, error=error)
        await self.replies.send(SessionMessage(reply))

    async def tell(self, message: Any) -> None:
        await self.replies.send(SessionMessage(message))


async def modern(end: ServerEnd) -> None:
    """Answer the discovery probe as a 2026-07-28 server."""
    probe = await end.next()
    await end.answer(
        probe,
        {
            "supportedVersions": [MODERN],
            "capabilities": {"tools": {}},
            "resultType": "complete",
            "ttlMs": 0,
            "cacheScope": "private",
        },
    )


async def handshake(end: ServerEnd) -> None:
    """Refuse the probe and take the initialize handshake, as a 2025 server."""
    await end.fail(await end.next(), METHOD_NOT_FOUND)
    initialize = await end.next()
    await end.answer(
        initialize,
        {
            "protocolVersion": "2025-11-25",
            "capabilities": {"tools": {}},
            "serverInfo": {"name": "old", "version": "1"},
        },
    )


@asynccontextmanager
async def linked(
    opening: Callable[[ServerEnd], Awaitable[None]] = modern,
    server: McpServer = SERVER,
) -> AsyncIterator[tuple[Downstream, ServerEnd]]:
    to_server, sent = anyio.create_memory_object_stream[SessionMessage](16)
    replies, from_server = anyio.create_memory_object_stream[
        SessionMessage | Exception
    ](16)
    end = ServerEnd(sent, replies)
    link = Downstream(server, to_server)
    reader = asyncio.ensure_future(link.read(from_server))
    try:
        await asyncio.gather(link.negotiate(), opening(end))
        yield link, end
    finally:
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)
        for stream in (to_server, sent, replies, from_server):
            stream.close()


def scenario(body: Callable[[Downstream, ServerEnd], Awaitable[T]], **kw: Any) -> T:
    async def run() -> T:
        async with linked(**kw) as (link, end):
            return await body(link, end)

    return asyncio.run(run())


class TestNegotiation:
    def test_a_2026_server_gets_the_per_request_envelope(self) -> None:
        """A server that answers the probe is spoken to at 2026-07-28."""

        async def body(link: Downstream, end: ServerEnd) -> Any:
            asking = asyncio.ensure_future(link.request("tools/list", {}))
            request = await end.next()
            await end.answer(request, {"tools": []})
            await asking
            return link, request

        link, request = scenario(body)

        assert link.negotiated.version == MODERN
        assert request.params["_meta"][PROTOCOL_VERSION_META_KEY] == MODERN
        assert request.params["_meta"][CLIENT_INFO_META_KEY] == CLIENT_INFO

    def test_a_2025_server_gets_the_handshake_and_no_envelope(self) -> None:
        """A server that refuses the probe is initialized and spoken to plainly."""

        async def body(link: Downstream, end: ServerEnd) -> Any:
            initialized = await end.next()
            asking = asyncio.ensure_future(link.request("tools/list", {}))
            request = await end.next()
            await end.answer(request, {"tools": []})
            await asking
            return link, initialized, request

        link, initialized, request = scenario(body, opening=handshake)

        assert link.negotiated.version == "2025-11-25"
        assert initialized.method == "notifications/initialized"
        assert "_meta" not in (request.params or {})


class TestRequestIds:
    def test_answers_out_of_order_reach_their_own_callers(self) -> None:
        """Each caller gets the answer to its own request, whatever the order."""

        async def body(link: Downstream, end: ServerEnd) -> Any:
            first = asyncio.ensure_future(link.request("tools/call", {"name": "a"}))
            second = asyncio.ensure_future(link.request("tools/call", {"name": "b"}))
            one, two = await end.next(), await end.next()
            await end.answer(two, {"answered": two.params["name"]})
            await end.answer(one, {"answered": one.params["name"]})
            return await first, await second, (one.id, two.id)

        first, second, ids = scenario(body)

        assert first == {"answered": "a"}
        assert second == {"answered": "b"}
        assert ids[0] != ids[1]

    def test_a_server_error_is_raised_to_its_caller(self) -> None:
        """A JSON-RPC error from the server arrives as MCPError with its code."""

        async def body(link: Downstream, end: ServerEnd) -> MCPError:
            asking = asyncio.ensure_future(link.request("tools/call", {"name": "a"}))
            await end.fail(await end.next(), -32602)
            with pytest.raises(MCPError, match="no") as raised:
                await asking
            return raised.value

        assert scenario(body).code == -32602

    def test_a_closed_link_fails_the_callers_still_waiting(self) -> None:
        """When the server's stream ends, every waiting request fails."""

        async def body(link: Downstream, end: ServerEnd) -> None:
            asking = asyncio.ensure_future(link.request("tools/call", {"name": "a"}))
            await end.next()
            await end.replies.aclose()
            with pytest.raises(ClosedError, match="closed the link"):
                await asking
            with pytest.raises(ClosedError, match="closed the link"):
                await link.request("tools/call", {"name": "b"})

        scenario(body)


class TestMeta:
    def test_proctor_and_per_hop_keys_stay_behind(self) -> None:
        """Only the agent's own keys travel, with this hop's envelope."""
        meta = {
            "dev.proctor/reasoning": "why",
            "progressToken": "agent-token",
            PROTOCOL_VERSION_META_KEY: "1999-01-01",
            "com.example/ticket": "OPS-12",
        }

        async def body(link: Downstream, end: ServerEnd) -> Any:
            asking = asyncio.ensure_future(
                link.request("tools/call", {"name": "a", "_meta": meta})
            )
            request = await end.next()
            await end.answer(request, {})
            await asking
            return request.params["_meta"]

        sent = scenario(body)

        assert sent["com.example/ticket"] == "OPS-12"
        assert sent[PROTOCOL_VERSION_META_KEY] == MODERN
        assert "dev.proctor/reasoning" not in sent
        assert "progressToken" not in sent

    def test_progress_comes_back_under_the_agent_token(self) -> None:
        """The server reports under Proctor's token; the agent hears its own."""
        heard: list[dict[str, Any]] = []
        progress = Progress("agent-7", lambda _, params: heard.append(params))

        async def body(link: Downstream, end: ServerEnd) -> Any:
            asking = asyncio.ensure_future(
                link.request("tools/call", {"name": "a"}, progress=progress)
            )
            request = await end.next()
            token = request.params["_meta"]["progressToken"]
            params = {"progressToken": token, "progress": 1}
            await end.tell(
                JSONRPCNotification(
                    jsonrpc="2.0", method="notifications/progress", params=params
                )
            )
            await end.answer(request, {})
            await asking
            return token

        token = scenario(body)

        assert token != "agent-7"
        assert heard == [{"progressToken": "agent-7", "progress": 1}]


class TestRemoteHeaders:
    def test_a_call_to_a_remote_server_carries_its_routing_headers(self) -> None:
        """Over HTTP, a call names its method, tool and header-borne arguments."""
        region = {"type": "string", "x-mcp-header": "Region"}
        schema = {"type": "object", "properties": {"region": region}}

        async def body(link: Downstream, end: ServerEnd) -> Any:
            link.listed([{"name": "find", "inputSchema": schema}])
            params = {"name": "find", "arguments": {"region": "eu"}}
            asking = asyncio.ensure_future(link.request("tools/call", params))
            item = await end.sent.receive()
            await end.answer(item.message, {})
            await asking
            return item.metadata.headers

        headers = scenario(body, server=REMOTE)

        assert headers["mcp-protocol-version"] == MODERN
        assert headers["mcp-method"] == "tools/call"
        assert headers["mcp-name"] == "find"
        assert headers["Mcp-Param-Region"] == "eu"

    def test_a_stdio_server_gets_no_headers(self) -> None:
        """A server Proctor launches reads messages only: no headers ride along."""

        async def body(link: Downstream, end: ServerEnd) -> Any:
            asking = asyncio.ensure_future(link.request("tools/list", {}))
            item = await end.sent.receive()
            await end.answer(item.message, {"tools": []})
            await asking
            return item.metadata

        assert scenario(body) is None


class TestServerRequests:
    def test_ping_is_answered_and_anything_else_refused(self) -> None:
        """Proctor answers a server's ping and refuses to sample for it."""

        async def body(link: Downstream, end: ServerEnd) -> Any:
            await end.tell(JSONRPCRequest(jsonrpc="2.0", id="p", method="ping"))
            pong = await end.next()
            await end.tell(
                JSONRPCRequest(
                    jsonrpc="2.0", id="s", method="sampling/createMessage", params={}
                )
            )
            refused = await end.next()
            return pong, refused

        pong, refused = scenario(body)

        assert isinstance(pong, JSONRPCResponse)
        assert pong.id == "p"
        assert isinstance(refused, JSONRPCError)
        assert refused.error.code == METHOD_NOT_FOUND
