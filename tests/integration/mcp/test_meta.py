"""What travels and what stays: Proctor's ``_meta`` keys are recorded and never
forwarded, the entry id comes back, the vault's credential reaches the server only
as its environment, and neither the credential nor the task token shows anywhere."""

from __future__ import annotations

import hashlib
import json
import logging
from typing import Any

import pytest
from mcp import Client, MCPError
from mcp_types import INVALID_PARAMS

from proctor.gateway.mcp.classify import (
    ENTRY_KEY,
    MAX_NOTE,
    REASONING_KEY,
    TOOL_CALL_KEY,
    TRACEPARENT_KEY,
    result_digest,
)
from proctor.home import Home
from proctor.runtime import Runtime

from .conftest import (
    DOORS,
    ECHO_SECRET,
    Door,
    Opener,
    bridge,
    entry,
    ledger,
    meta,
    outcome,
    refusal,
    run,
    text,
)

pytestmark = pytest.mark.slow

TRACE = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
REASONING = "The user asked me to greet them; the echo tool says hello back."


def echo(door: Door, token: str, extra: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """Call the echo tool and return the result and what the server received."""

    async def scenario() -> Any:
        async with door("echo", token) as client:
            return await client.call_tool("echo", {"text": "hello"}, meta=meta(extra))

    result = run(scenario())
    return result, json.loads(text(result))


@pytest.mark.parametrize("door", DOORS, indirect=True)
class TestMeta:
    def test_proctor_keys_are_recorded_and_not_forwarded(
        self, door: Door, open_task: Opener, runtime: Runtime
    ) -> None:
        """Reasoning, tool-call id and trace reach the ledger, not the server."""
        agent = open_task("echo.toml", agent="echo-bot")
        meta = {
            REASONING_KEY: REASONING,
            TOOL_CALL_KEY: "call_7Hq2",
            TRACEPARENT_KEY: TRACE,
            "com.example/ticket": "OPS-12",
        }

        result, received = echo(door, agent.token, meta)
        decision = entry(runtime, result.meta[ENTRY_KEY])

        assert not [key for key in received["meta"] if key.startswith("dev.proctor/")]
        assert received["meta"]["com.example/ticket"] == "OPS-12"
        assert received["arguments"] == {"text": "hello"}
        assert decision["note"] == REASONING
        assert decision["tool_call"] == "call_7Hq2"
        assert decision["trace"] == TRACE

    def test_long_reasoning_is_its_own_entry_named_by_the_decision(
        self, door: Door, open_task: Opener, runtime: Runtime
    ) -> None:
        """Reasoning longer than a note becomes a reasoning entry the decision cites."""
        agent = open_task("echo.toml", agent="echo-bot")
        long = "Because " + "the invoice totals must match. " * (MAX_NOTE // 20)

        result, received = echo(door, agent.token, {REASONING_KEY: long})
        decision = entry(runtime, result.meta[ENTRY_KEY])
        cited = [entry(runtime, index) for index in decision["reasoning"]]

        assert "note" not in decision
        assert [step["text"] for step in cited] == [long]
        assert cited[0]["source"] == "mcp"
        assert REASONING_KEY not in received["meta"]

    def test_credential_reaches_the_server_only_from_the_vault(
        self, door: Door, open_task: Opener, runtime: Runtime
    ) -> None:
        """The server gets its secret in its environment, and no Proctor variable."""
        agent = open_task("echo.toml", agent="echo-bot")

        result, received = echo(door, agent.token, {})
        completed = outcome(runtime, result.meta[ENTRY_KEY])

        assert (
            received["env_sha256"] == hashlib.sha256(ECHO_SECRET.encode()).hexdigest()
        )
        assert not [name for name in received["env"] if name.startswith("PROCTOR")]
        assert "ECHO_MODE" in received["env"]
        assert completed["digest"]
        recorded = json.dumps(ledger(runtime))
        assert ECHO_SECRET not in recorded
        assert agent.token not in recorded

    def test_a_server_echoing_its_credential_does_not_hand_it_on(
        self, door: Door, open_task: Opener, runtime: Runtime
    ) -> None:
        """A vault value in a server's answer is removed before the agent sees it."""
        agent = open_task("echo.toml", agent="echo-bot")

        async def scenario() -> Any:
            async with door("echo", agent.token) as client:
                return await client.call_tool("echo", {"text": "leak"})

        result = run(scenario())
        completed = outcome(runtime, result.meta[ENTRY_KEY])
        wire = result.model_dump(by_alias=True, mode="json", exclude_none=True)

        assert ECHO_SECRET not in text(result)
        assert json.loads(text(result))["leak"] == "[redacted:echo.ECHO_SECRET]"
        assert completed["digest"] == result_digest(wire)[0]

    def test_a_tool_named_by_a_vault_value_is_scrubbed(
        self,
        door: Door,
        open_task: Opener,
        runtime: Runtime,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        """The tool's name is the agent's to choose and becomes the action: a vault
        value as that name is scrubbed from the entries, the refusal and the log
        line the refusal gets (of the HTTP door, which serves in this process)."""
        caplog.set_level(logging.INFO)
        agent = open_task("echo.toml", agent="echo-bot")

        async def scenario() -> MCPError:
            async with door("echo", agent.token) as client:
                return await refusal(client, ECHO_SECRET, {"text": "hi"})

        error = run(scenario())
        decision = entry(runtime, error.data["entry"])

        assert decision["action"] == 'mcp::echo::Action::"[redacted:echo.ECHO_SECRET]"'
        assert ECHO_SECRET not in json.dumps(ledger(runtime))
        assert ECHO_SECRET not in str(error) + json.dumps(error.data)
        assert ECHO_SECRET not in caplog.text


class TestMalformed:
    def test_unknown_proctor_key_is_refused_and_not_forwarded(
        self, home: Home, open_task: Opener, runtime: Runtime
    ) -> None:
        """A call Proctor cannot read is recorded as malformed and never sent."""
        agent = open_task("echo.toml", agent="echo-bot")

        async def scenario() -> MCPError:
            env = {"PROCTOR_TASK_TOKEN": agent.token}
            async with Client(bridge(home, "echo", env)) as client:
                odd = {"dev.proctor/sudo": "yes"}
                return await refusal(client, "echo", {"text": "hi"}, odd)

        error = run(scenario())
        decision = entry(runtime, error.data["entry"])

        assert "is not one proctor reads" in str(error)
        assert error.code == INVALID_PARAMS
        assert decision["action"] == 'Proctor::Action::"Malformed"'
        assert decision["outcome"] == "deny"
        assert "dev.proctor/sudo" in decision["request"]["problem"]
