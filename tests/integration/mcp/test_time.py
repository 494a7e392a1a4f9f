"""mcp-server-time through both front doors: a read-only tool call is decided,
forwarded and recorded with its result's digest; a tool failure is recorded as one."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import select
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx2
import pytest
from mcp import Client, MCPError

from proctor.gateway.mcp.classify import ENTRY_KEY, call_digest, result_digest
from proctor.gateway.mcp.proxy import DENIED, UNAUTHENTICATED
from proctor.gateway.pipeline import MALFORMED
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
    stubborn_marker,
)

pytestmark = pytest.mark.slow

REQUEST_LINE = re.compile(
    r"request id=[0-9a-f]{16} method=[A-Z]+ path=\S+ status=\d{3} latency_ms=[0-9.]+"
)


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


UNREADABLE = {
    "truncated": ("application/json", b'{"jsonrpc": "2.0", "id": 1,', 400, "not JSON"),
    "not-utf8": ("application/json", b'{"text": "caf\xe9"}', 400, "not JSON"),
    "text": ("text/plain", b'{"jsonrpc": "2.0", "id": 1}', 415, "application/json"),
    "batch": ("application/json", b'[{"jsonrpc": "2.0", "id": 1}]', 400, "one JSON"),
    "too-large": ("application/json", b" " * (4 * 1024 * 1024 + 1), 413, "is over"),
}
"""POST bodies that hold no MCP message: content type, body, status, problem."""


class TestUnreadableRequests:
    @pytest.mark.parametrize("case", UNREADABLE.values(), ids=UNREADABLE.keys())
    def test_http_door_records_a_post_that_holds_no_message(
        self,
        http_door: str,
        open_task: Opener,
        runtime: Runtime,
        case: tuple[str, bytes, int, str],
    ) -> None:
        """A POST that is no MCP message is answered 4xx as the SDK would, and
        recorded first as a malformed call of the task, never forwarded."""
        content_type, body, status, problem = case
        agent = open_task("time.toml", agent="time-bot")
        headers = {
            "Authorization": f"Bearer {agent.token}",
            "Content-Type": content_type,
            "Accept": "application/json, text/event-stream",
        }

        async def scenario() -> httpx2.Response:
            async with httpx2.AsyncClient(timeout=60) as http:
                return await http.post(
                    f"{http_door}/time", content=body, headers=headers
                )

        response = run(scenario())
        error = response.json()["error"]
        decision = entry(runtime, int(response.headers["proctor-entry"]))

        assert response.status_code == status
        assert problem in error["message"]
        assert error["data"]["entry"] == decision["index"]
        assert decision["task"] == agent.task.id
        assert decision["action"] == MALFORMED
        assert decision["outcome"] == "deny"
        assert problem in decision["request"]["problem"]


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
        assert response.headers["proctor-entry"] == str(body["entry"])
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
    def test_an_allowed_call_is_logged_at_debug(
        self, http_door: str, open_task: Opener, caplog: pytest.LogCaptureFixture
    ) -> None:
        """An allowed tools/call writes no INFO line (the ledger holds it); each of
        its HTTP requests is logged at DEBUG."""
        agent = open_task("time.toml", agent="time-bot")

        async def scenario() -> object:
            async with over_http(f"{http_door}/time", agent.token) as client:
                caplog.clear()
                with caplog.at_level(logging.DEBUG):
                    return await client.call_tool(
                        "get_current_time", {"timezone": "UTC"}
                    )

        run(scenario())
        requests = [
            record.getMessage()
            for record in caplog.records
            if record.name == "proctor.serve" and record.levelno == logging.DEBUG
        ]

        assert proctor_lines(caplog) == []
        assert requests
        assert all(REQUEST_LINE.fullmatch(line) for line in requests), requests
        assert all(" path=/mcp/... status=200 " in line for line in requests)

    def test_a_denied_call_is_logged_with_its_decision(
        self, http_door: str, open_task: Opener, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A denied tools/call adds the broker's line, naming the decision's entry."""
        agent = open_task("time.toml", agent="time-bot")

        async def scenario() -> MCPError:
            async with over_http(f"{http_door}/echo", agent.token) as client:
                caplog.clear()
                with caplog.at_level(logging.INFO):
                    return await refusal(client, "echo", {"text": "hello"})

        error = run(scenario())
        calls = [line for line in proctor_lines(caplog) if line.startswith("mcp ")]

        assert len(calls) == 1, calls
        assert calls[0].startswith("mcp call server=echo tool=echo ")
        assert calls[0].endswith(f"decision=deny entry={error.data['entry']}")

    def test_a_refused_request_is_logged(
        self, http_door: str, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A request without a token is logged once, with its status."""

        async def scenario() -> httpx2.Response:
            async with httpx2.AsyncClient() as http:
                return await http.post(f"{http_door}/time", json={})

        with caplog.at_level(logging.INFO):
            response = run(scenario())
        lines = proctor_lines(caplog)

        assert response.status_code == 401
        assert len(lines) == 1, lines
        assert " method=POST path=/mcp/... status=401 " in lines[0]

    def test_requests_that_open_no_session_log_no_error(
        self, http_door: str, open_task: Opener, caplog: pytest.LogCaptureFixture
    ) -> None:
        """GET, DELETE and OPTIONS without a session are answered and logged as
        requests, with no error or traceback."""
        agent = open_task("time.toml", agent="time-bot")
        bearer = {"Authorization": f"Bearer {agent.token}"}

        async def scenario() -> list[int]:
            async with httpx2.AsyncClient(headers=bearer) as http:
                answers = [
                    await http.request(method, f"{http_door}/time")
                    for method in ("GET", "DELETE", "OPTIONS")
                ]
            await asyncio.sleep(0.2)
            return [answer.status_code for answer in answers]

        with caplog.at_level(logging.INFO):
            statuses = run(scenario())
        errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]

        assert all(400 <= status < 500 for status in statuses), statuses
        assert errors == []
        assert len(proctor_lines(caplog)) == 3


def proctor_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    """What the server and its doors logged at INFO and above."""
    return [
        record.getMessage()
        for record in caplog.records
        if record.name.startswith(("proctor.serve", "proctor.gateway"))
        and record.levelno >= logging.INFO
    ]


class TestTerminatedBridge:
    @pytest.mark.parametrize("number", [signal.SIGTERM, signal.SIGHUP])
    def test_a_signal_stops_the_bridge_once_its_entries_are_signed(
        self, home: Home, open_task: Opener, runtime: Runtime, number: signal.Signals
    ) -> None:
        """A client's SIGTERM, or a closed terminal's SIGHUP, stdin still open, ends
        the bridge with exit 0 and a checkpoint over every entry it wrote."""
        agent = open_task("time.toml", agent="time-bot")
        with _launched(home, "time", agent.token, subprocess.PIPE) as process:
            called = _ask(process, "tools/call", CURRENT_TIME)
            process.send_signal(number)
            code = process.wait(timeout=30)
            errors = process.stderr.read().decode() if process.stderr else ""
        store = runtime.ledger.store
        latest = store.latest_checkpoint()

        assert code == 0, errors
        assert not called["result"].get("isError")
        assert latest is not None
        assert latest.size == store.size() > called["result"]["_meta"][ENTRY_KEY]

    def test_entries_are_signed_before_a_slow_downstream_is_stopped(
        self, home: Home, open_task: Opener, runtime: Runtime
    ) -> None:
        """A client kills a bridge that has not ended a few seconds after its
        stdin closed; a downstream slow to stop must not keep the bridge's last
        entries unsigned until then. By the time the downstream is told to stop,
        a checkpoint covers every entry."""
        marker = stubborn_marker(home)
        marker.unlink(missing_ok=True)
        agent = open_task("echo.toml", agent="echo-bot")
        downstream: int | None = None
        try:
            with _launched(home, "stubborn", agent.token) as process:
                called = _ask(process, "tools/call", LAST_WORDS)
                assert process.stdin is not None
                process.stdin.close()
                downstream = _told_to_stop(marker)
                store = runtime.ledger.store
                latest, size = store.latest_checkpoint(), store.size()
        finally:
            if downstream is not None:
                os.kill(downstream, signal.SIGKILL)

        assert not called["result"].get("isError")
        assert latest is not None
        assert latest.size == size > called["result"]["_meta"][ENTRY_KEY]


INITIALIZE = {
    "protocolVersion": "2025-11-25",
    "capabilities": {},
    "clientInfo": {"name": "desktop-client", "version": "1.0"},
}
CURRENT_TIME = {"name": "get_current_time", "arguments": {"timezone": "UTC"}}
LAST_WORDS = {"name": "echo", "arguments": {"text": "last words"}}


@contextmanager
def _launched(
    home: Home, server: str, token: str, stderr: int = subprocess.DEVNULL
) -> Iterator[subprocess.Popen[bytes]]:
    """The bridge spawned as a desktop client spawns it, past its handshake; killed
    at the end if it is still running."""
    launch = bridge(home, server, {"PROCTOR_TASK_TOKEN": token})
    with subprocess.Popen(
        [launch.command, *launch.args],
        env={**os.environ, **(launch.env or {})},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=stderr,
    ) as process:
        try:
            _ask(process, "initialize", INITIALIZE)
            _tell(process, {"jsonrpc": "2.0", "method": "notifications/initialized"})
            yield process
        finally:
            if process.poll() is None:
                process.kill()


def _tell(process: subprocess.Popen[bytes], message: dict[str, Any]) -> None:
    assert process.stdin is not None
    process.stdin.write(json.dumps(message).encode() + b"\n")
    process.stdin.flush()


def _told_to_stop(marker: Path) -> int:
    """Wait until the stubborn server has seen its stdin close; return its pid."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if marker.exists() and marker.read_text(encoding="utf-8"):
            return int(marker.read_text(encoding="utf-8"))
        time.sleep(0.01)
    pytest.fail("the bridge never stopped its downstream server")


def _ask(
    process: subprocess.Popen[bytes], method: str, params: dict[str, Any]
) -> dict[str, Any]:
    """Send one request on the bridge's stdin and read lines until its answer."""
    number = time.monotonic_ns()
    _tell(process, {"jsonrpc": "2.0", "id": number, "method": method, "params": params})
    assert process.stdout is not None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        ready, _, _ = select.select([process.stdout], [], [], 1.0)
        if not ready:
            continue
        line = process.stdout.readline()
        if not line:
            break
        message: dict[str, Any] = json.loads(line)
        if message.get("id") == number:
            return message
    pytest.fail(f"the bridge did not answer {method}")
