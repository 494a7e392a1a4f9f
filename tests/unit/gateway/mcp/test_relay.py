"""Tests for what the relay answers itself, without the server: the handshake of
either protocol era, the era each connection settles on, and every method beyond
a server's tools refused before it could reach the server."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import pytest
from mcp.shared.message import SessionMessage
from mcp_types import (
    INVALID_REQUEST,
    METHOD_NOT_FOUND,
    PROTOCOL_VERSION_META_KEY,
    SERVER_INFO_META_KEY,
    UNSUPPORTED_PROTOCOL_VERSION,
    JSONRPCError,
    JSONRPCRequest,
    JSONRPCResponse,
)

from proctor.gateway.mcp.config import McpServer
from proctor.gateway.mcp.downstream import Downstream, Negotiated
from proctor.gateway.mcp.proxy import Broker
from proctor.gateway.mcp.relay import Agent, Relay
from proctor.gateway.pipeline import Pipeline

SERVER = McpServer.from_table("echo", {"command": "x"})
MODERN = "2026-07-28"
ENVELOPE = {
    PROTOCOL_VERSION_META_KEY: MODERN,
    "io.modelcontextprotocol/clientCapabilities": {},
}


class Recorder:
    """The link's outbound side: keeps whatever would have gone to the server."""

    def __init__(self) -> None:
        self.sent: list[SessionMessage] = []

    async def send(self, item: SessionMessage, /) -> None:
        self.sent.append(item)

    async def aclose(self) -> None:
        return None


def relay(version: str = MODERN) -> tuple[Relay, Recorder]:
    recorder = Recorder()
    link = Downstream(SERVER, recorder)
    link.negotiated = Negotiated(version, {"tools": {}})
    # Nothing here reaches the pipeline: every answer below is the relay's own.
    broker = Broker(cast("Pipeline", None), SERVER)

    return Relay(broker, link), recorder


def ask(
    subject: Relay, agent: Agent, method: str, params: dict[str, Any] | None = None
) -> Any:
    request = JSONRPCRequest(jsonrpc="2.0", id=1, method=method, params=params)
    reply = asyncio.run(subject.answer(agent, request, None))
    return reply.message


class TestHandshake:
    def test_initialize_is_answered_by_proctor_at_the_agent_version(self) -> None:
        """A 2025 agent gets its own version, Proctor's name and tools only."""
        subject, recorder = relay()
        params = {
            "protocolVersion": "2025-06-18",
            "capabilities": {},
            "clientInfo": {"name": "agent", "version": "1"},
        }

        answer = ask(subject, Agent(), "initialize", params)

        assert isinstance(answer, JSONRPCResponse)
        assert answer.result["protocolVersion"] == "2025-06-18"
        assert answer.result["serverInfo"]["name"] == "proctor-echo"
        assert set(answer.result["capabilities"]) == {"tools"}
        assert recorder.sent == []

    def test_discover_names_the_link_version_and_proctor(self) -> None:
        """A 2026 agent discovers the version the link speaks, served by Proctor."""
        subject, recorder = relay()

        answer = ask(subject, Agent(), "server/discover", {"_meta": ENVELOPE})

        assert answer.result["supportedVersions"] == [MODERN]
        assert answer.result["_meta"][SERVER_INFO_META_KEY]["name"] == "proctor-echo"
        assert recorder.sent == []

    def test_discover_is_not_offered_when_the_server_is_older(self) -> None:
        """Over a 2025 link, a 2026 agent is sent to the initialize handshake."""
        subject, _ = relay("2025-11-25")

        answer = ask(subject, Agent(), "server/discover", {"_meta": ENVELOPE})

        assert isinstance(answer, JSONRPCError)
        assert answer.error.code == METHOD_NOT_FOUND


class TestEra:
    def test_a_request_before_initialize_is_refused(self) -> None:
        """A 2025 agent must initialize before it asks for tools."""
        subject, recorder = relay()

        answer = ask(subject, Agent(), "tools/list")

        assert answer.error.code == INVALID_REQUEST
        assert "initialize" in answer.error.message
        assert recorder.sent == []

    def test_an_enveloped_request_on_a_handshake_connection_is_refused(self) -> None:
        """Once initialized, a connection does not take 2026-07-28 requests."""
        subject, _ = relay()
        agent = Agent()
        ask(subject, agent, "initialize", {"protocolVersion": "2025-11-25"})

        answer = ask(subject, agent, "tools/list", {"_meta": ENVELOPE})

        assert answer.error.code == INVALID_REQUEST

    def test_initialize_on_a_2026_connection_is_refused(self) -> None:
        """Once a connection speaks 2026-07-28, the handshake is not accepted."""
        subject, _ = relay()
        agent = Agent()
        ask(subject, agent, "server/discover", {"_meta": ENVELOPE})

        answer = ask(subject, agent, "initialize", {"protocolVersion": "2025-11-25"})

        assert answer.error.code == UNSUPPORTED_PROTOCOL_VERSION


class TestRefusedMethods:
    @pytest.mark.parametrize(
        "method", ["resources/list", "resources/read", "prompts/get", "ping"]
    )
    def test_what_is_not_a_tool_never_reaches_the_server(self, method: str) -> None:
        """Methods beyond tools are refused as unknown, nothing sent on."""
        subject, recorder = relay()

        answer = ask(subject, Agent(), method, {"_meta": ENVELOPE})

        assert answer.error.code == METHOD_NOT_FOUND
        assert recorder.sent == []

    def test_ping_is_answered_on_a_handshake_connection(self) -> None:
        """A 2025 agent's ping is answered by Proctor."""
        subject, recorder = relay()

        answer = ask(subject, Agent(), "ping")

        assert isinstance(answer, JSONRPCResponse)
        assert answer.result == {}
        assert recorder.sent == []
