"""mcp-server-time through both front doors: a read-only tool call is decided,
forwarded and recorded with its result's digest; a tool failure is recorded as one."""

from __future__ import annotations

import logging

import httpx2
import pytest
from mcp import Client, MCPError

from proctor.gateway.mcp.classify import ENTRY_KEY, call_digest, result_digest
from proctor.gateway.mcp.proxy import DENIED, UNAUTHENTICATED
from proctor.home import Home
from proctor.runtime import Runtime

from .conftest import (
    DOORS,
    LEGACY,
    Door,
    Opener,
    bridge,
    entry,
    outcome,
    over_http,
    refusal,
    run,
)

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("door", DOORS, indirect=True)
class TestCurrentTime:
    def test_allowed_call_is_recorded_with_the_result_digest(
        self, door: Door, open_task: Opener, runtime: Runtime
    ) -> None:
        """get_current_time is allowed, and its decision and outcome are entries."""
        agent = open_task("time.toml", agent="time-bot")

        async def scenario() -> object:
            async with door("time", agent.token) as client:
                return await client.call_tool(
                    "get_current_time", {"timezone": "Asia/Tokyo"}
                )

        result = run(scenario())
        decision = entry(runtime, result.meta[ENTRY_KEY])
        completed = outcome(runtime, decision["index"])

        assert not result.is_error
        assert result.structured_content["timezone"] == "Asia/Tokyo"
        assert decision["type"] == "decision"
        assert decision["outcome"] == "allow"
        assert decision["door"] == "mcp"
        assert decision["action"] == 'mcp::time::Action::"get_current_time"'
        assert decision["resource"] == 'mcp::time::Server::"time"'
        assert decision["request"]["arguments"] == {"timezone": "Asia/Tokyo"}
        assert decision["request_digest"] == call_digest(
            "time", "get_current_time", {"timezone": "Asia/Tokyo"}
        )
        wire = result.model_dump(by_alias=True, mode="json", exclude_none=True)
        assert (completed["digest"], completed["size"]) == result_digest(wire)
        assert "error" not in completed
        assert completed["latency_us"] > 0

    def test_bad_timezone_is_recorded_as_a_tool_error(
        self, door: Door, open_task: Opener, runtime: Runtime
    ) -> None:
        """A tool failure comes back as is and its outcome entry carries the error."""
        agent = open_task("time.toml", agent="time-bot")

        async def scenario() -> object:
            async with door("time", agent.token) as client:
                return await client.call_tool(
                    "get_current_time", {"timezone": "Nowhere/Atlantis"}
                )

        result = run(scenario())
        completed = outcome(runtime, result.meta[ENTRY_KEY])

        assert result.is_error
        assert completed["error"].startswith("tool error:")
        assert "Invalid timezone" in completed["error"]
        wire = result.model_dump(by_alias=True, mode="json", exclude_none=True)
        assert completed["digest"] == result_digest(wire)[0]

    def test_tool_outside_the_scope_is_a_denied_breach(
        self, door: Door, open_task: Opener, runtime: Runtime
    ) -> None:
        """A time-only task that calls the echo tool is refused with the breach."""
        agent = open_task("time.toml", agent="time-bot")

        async def scenario() -> MCPError:
            async with door("echo", agent.token) as client:
                return await refusal(client, "echo", {"text": "hello"})

        error = run(scenario())

        assert error.code == DENIED
        assert "outside the scope" in error.message
        assert entry(runtime, error.data["entry"])["outcome"] == "deny"
        assert entry(runtime, error.data["breach"])["type"] == "breach"


@pytest.mark.parametrize("door", LEGACY, indirect=True)
class TestLegacyHandshake:
    def test_initialize_handshake_clients_are_brokered_too(
        self, door: Door, open_task: Opener, runtime: Runtime
    ) -> None:
        """A 2025-11-25 client (initialize, sessions) gets the same decision."""
        agent = open_task("time.toml", agent="time-bot")

        async def scenario() -> object:
            async with door("time", agent.token) as client:
                return await client.call_tool("get_current_time", {"timezone": "UTC"})

        result = run(scenario())

        assert entry(runtime, result.meta[ENTRY_KEY])["outcome"] == "allow"
        assert outcome(runtime, result.meta[ENTRY_KEY])["digest"]


class TestMissingToken:
    def test_http_door_answers_401_and_records_the_attempt(
        self, http_door: str, runtime: Runtime
    ) -> None:
        """Without a bearer token the HTTP door refuses before MCP starts."""

        async def scenario() -> httpx2.Response:
            async with httpx2.AsyncClient() as http:
                return await http.post(f"{http_door}/time", json={})

        response = run(scenario())
        body = response.json()

        assert response.status_code == 401
        assert response.headers["www-authenticate"] == 'Bearer realm="proctor"'
        assert entry(runtime, body["entry"])["type"] == "auth.refused"
        assert entry(runtime, body["entry"])["request"]["path"] == "/mcp/time"

    def test_bridge_refuses_each_call_and_records_it(
        self, home: Home, runtime: Runtime
    ) -> None:
        """The bridge without PROCTOR_TASK_TOKEN refuses calls, naming the entry."""

        async def scenario() -> MCPError:
            async with Client(bridge(home, "time", {})) as client:
                return await refusal(client, "get_current_time", {"timezone": "UTC"})

        error = run(scenario())

        assert error.code == UNAUTHENTICATED
        assert "no task token" in error.message
        assert entry(runtime, error.data["entry"])["type"] == "auth.refused"


class TestServeLog:
    def test_a_brokered_call_is_logged_once(
        self,
        http_door: str,
        open_task: Opener,
        runtime: Runtime,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        """proctor serve logs a tools/call once, by the broker, naming its entry."""
        agent = open_task("time.toml", agent="time-bot")

        async def scenario() -> object:
            async with over_http(f"{http_door}/time", agent.token) as client:
                caplog.clear()
                with caplog.at_level(logging.INFO):
                    return await client.call_tool(
                        "get_current_time", {"timezone": "UTC"}
                    )

        result = run(scenario())
        lines = proctor_lines(caplog)

        assert len(lines) == 1
        assert lines[0].startswith("mcp call server=time tool=get_current_time ")
        assert lines[0].endswith(f"decision=allow entry={result.meta[ENTRY_KEY]}")

    def test_a_refused_request_is_logged_with_its_entry(
        self, http_door: str, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A request without a token is logged once by the door, with its entry."""

        async def scenario() -> httpx2.Response:
            async with httpx2.AsyncClient() as http:
                return await http.post(f"{http_door}/time", json={})

        with caplog.at_level(logging.INFO):
            response = run(scenario())

        assert proctor_lines(caplog) == [
            "mcp request refused server=time method=POST status=401 "
            f"entry={response.json()['entry']}"
        ]


def proctor_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    """What the server and its doors logged at INFO and above."""
    return [
        record.getMessage()
        for record in caplog.records
        if record.name.startswith(("proctor.serve", "proctor.gateway"))
        and record.levelno >= logging.INFO
    ]
