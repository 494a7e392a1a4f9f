"""A small real MCP server for the tests: its one tool, ``echo``, answers with what
the server itself received, so a test can see what Proctor forwarded.

Run as ``python echo_server.py VARIABLE``: the answer carries the SHA-256 of that
environment variable's value, the request's ``_meta``, its JSON-RPC id and the
arguments. Some texts ask for more: ``leak`` puts the variable's value itself in
the answer (a misbehaving server), ``progress`` reports progress twice before
answering, and one starting with ``slow`` answers after a pause, so that calls
overlap. With ``ECHO_LOG`` set, every call the server receives is appended to
that file as a JSON line. With ``ECHO_STUBBORN`` set, the server is slow to stop:
once its stdin closes it writes its process id to that file, ignores SIGTERM and
lingers for a minute.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import anyio
import mcp_types as types
from mcp.server import Server
from mcp.server.context import ServerRequestContext
from mcp.server.stdio import stdio_server

ECHO = types.Tool(
    name="echo",
    description="Answer with the text, the request's _meta and an env digest.",
    input_schema={
        "type": "object",
        "properties": {"text": {"type": "string"}},
        "required": ["text"],
    },
)
PAUSE = 0.5


async def list_tools(
    ctx: ServerRequestContext[Any, Any], params: types.PaginatedRequestParams | None
) -> types.ListToolsResult:
    return types.ListToolsResult(tools=[ECHO])


async def call_tool(
    ctx: ServerRequestContext[Any, Any], params: types.CallToolRequestParams
) -> types.CallToolResult:
    value = os.environ.get(sys.argv[1]) if len(sys.argv) > 1 else None
    text = str((params.arguments or {}).get("text", ""))
    received = {
        "arguments": params.arguments,
        "meta": dict(params.meta or {}),
        "request_id": ctx.request_id,
    }
    if os.environ.get("ECHO_LOG"):
        with open(os.environ["ECHO_LOG"], "a", encoding="utf-8") as log:
            log.write(json.dumps(received) + "\n")
    if text == "progress":
        await ctx.session.report_progress(1, 2, "half way")
        await ctx.session.report_progress(2, 2, "done")
    if text.startswith("slow"):
        await anyio.sleep(PAUSE)
    answer = {
        **received,
        "env_sha256": hashlib.sha256(value.encode()).hexdigest() if value else None,
        "env": sorted(os.environ),
    }
    if text == "leak":
        answer["leak"] = value
    return types.CallToolResult(
        content=[types.TextContent(type="text", text=json.dumps(answer))]
    )


async def main() -> None:
    server: Server[Any] = Server(
        "echo", on_list_tools=list_tools, on_call_tool=call_tool
    )
    async with stdio_server() as (read, write):
        await server.run(read, write, server.create_initialization_options())
    if os.environ.get("ECHO_STUBBORN"):
        linger(Path(os.environ["ECHO_STUBBORN"]))


def linger(marker: Path) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    marker.write_text(str(os.getpid()), encoding="utf-8")
    time.sleep(60)


if __name__ == "__main__":
    anyio.run(main)
