"""The relay between agents and servers: answers find the agent that asked however
many agents share the HTTP door's one link to a server, progress a server reports
reaches the agent that asked for it, and a refused call never reaches the server."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import anyio
import httpx2
import pytest

from proctor.gateway.mcp.classify import ENTRY_KEY
from proctor.gateway.mcp.proxy import DENIED
from proctor.home import Home
from proctor.runtime import Runtime

from .conftest import (
    DOORS,
    LEGACY,
    Door,
    Opener,
    entry,
    received_by_echo,
    refusal,
    run,
    text,
)

pytestmark = pytest.mark.slow

MODERN = "2026-07-28"
ENVELOPE = {
    "io.modelcontextprotocol/protocolVersion": MODERN,
    "io.modelcontextprotocol/clientInfo": {"name": "test", "version": "1"},
    "io.modelcontextprotocol/clientCapabilities": {},
}


@pytest.mark.parametrize("door", ["http", "http-legacy"], indirect=True)
class TestSharedLink:
    def test_overlapping_calls_of_two_agents_each_get_their_own_answer(
        self, door: Door, open_task: Opener, runtime: Runtime
    ) -> None:
        """Two sessions' calls in flight together come back each to its caller."""
        first = open_task("echo.toml", agent="echo-bot")
        second = open_task("echo.toml", agent="echo-bot")

        async def call(token: str, words: str) -> Any:
            async with door("echo", token) as client:
                return await client.call_tool("echo", {"text": words})

        async def scenario() -> list[Any]:
            return await asyncio.gather(
                call(first.token, "slow, first"), call(second.token, "slow, second")
            )

        one, two = run(scenario())
        heard_one, heard_two = json.loads(text(one)), json.loads(text(two))

        assert heard_one["arguments"] == {"text": "slow, first"}
        assert heard_two["arguments"] == {"text": "slow, second"}
        assert heard_one["request_id"] != heard_two["request_id"]
        assert entry(runtime, one.meta[ENTRY_KEY])["task"] == first.task.id
        assert entry(runtime, two.meta[ENTRY_KEY])["task"] == second.task.id


class TestRemappedIds:
    def test_the_same_request_id_from_two_agents_is_answered_to_each(
        self, http_door: str, open_task: Opener
    ) -> None:
        """Two 2026-07-28 POSTs with one JSON-RPC id, in flight together, each get
        their own answer under that id, sent on under two different ids."""
        first = open_task("echo.toml", agent="echo-bot")
        second = open_task("echo.toml", agent="echo-bot")

        async def post(http: httpx2.AsyncClient, token: str, words: str) -> Any:
            body = {
                "jsonrpc": "2.0",
                "id": 7,
                "method": "tools/call",
                "params": {
                    "name": "echo",
                    "arguments": {"text": words},
                    "_meta": ENVELOPE,
                },
            }
            headers = {
                "Authorization": f"Bearer {token}",
                "Accept": "application/json, text/event-stream",
                "MCP-Protocol-Version": MODERN,
                "Mcp-Method": "tools/call",
                "Mcp-Name": "echo",
            }
            response = await http.post(f"{http_door}/echo", json=body, headers=headers)
            return response.json()

        async def scenario() -> list[Any]:
            async with httpx2.AsyncClient(timeout=60) as http:
                return await asyncio.gather(
                    post(http, first.token, "slow, one"),
                    post(http, second.token, "slow, two"),
                )

        one, two = run(scenario())
        heard = [
            json.loads(answer["result"]["content"][0]["text"]) for answer in (one, two)
        ]

        assert one["id"] == two["id"] == 7
        assert heard[0]["arguments"] == {"text": "slow, one"}
        assert heard[1]["arguments"] == {"text": "slow, two"}
        assert heard[0]["request_id"] != heard[1]["request_id"]


@pytest.mark.parametrize("door", DOORS + LEGACY, indirect=True)
class TestNotifications:
    def test_server_progress_reaches_the_agent_that_asked(
        self, door: Door, open_task: Opener
    ) -> None:
        """Progress the server reports during a call reaches the calling agent."""
        agent = open_task("echo.toml", agent="echo-bot")
        heard: list[tuple[float, float | None, str | None]] = []
        both = anyio.Event()

        async def progress(value: float, total: float | None, note: str | None) -> None:
            heard.append((value, total, note))
            if len(heard) == 2:
                both.set()

        async def scenario() -> Any:
            async with door("echo", agent.token) as client:
                result = await client.call_tool(
                    "echo", {"text": "progress"}, progress_callback=progress
                )
                with anyio.fail_after(10):
                    await both.wait()
                return result

        result = run(scenario())

        assert not result.is_error
        assert heard == [(1.0, 2.0, "half way"), (2.0, 2.0, "done")]


@pytest.mark.parametrize("door", DOORS, indirect=True)
class TestRefusedCall:
    def test_a_refused_call_never_reaches_the_server(
        self, door: Door, open_task: Opener, home: Home
    ) -> None:
        """A call outside the scope is refused before the server sees it."""
        outsider = open_task("time.toml", agent="time-bot")
        insider = open_task("echo.toml", agent="echo-bot")
        refused, allowed = f"refused {uuid.uuid4()}", f"allowed {uuid.uuid4()}"

        async def scenario() -> Any:
            async with door("echo", outsider.token) as client:
                error = await refusal(client, "echo", {"text": refused})
            async with door("echo", insider.token) as client:
                await client.call_tool("echo", {"text": allowed})
            return error

        error = run(scenario())
        seen = [call["arguments"]["text"] for call in received_by_echo(home)]

        assert error.code == DENIED
        assert allowed in seen
        assert refused not in seen
