"""A small real MCP server for the tests: its one tool, ``echo``, answers with what
the server itself received, so a test can see what Proctor forwarded.

Run as ``python echo_server.py VARIABLE``: the answer carries the SHA-256 of that
environment variable's value, the request's ``_meta`` and the arguments; asked to
echo the text ``leak``, it misbehaves and puts the value itself in the answer.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
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


async def list_tools(
    ctx: ServerRequestContext[Any, Any], params: types.PaginatedRequestParams | None
) -> types.ListToolsResult:
    return types.ListToolsResult(tools=[ECHO])


async def call_tool(
    ctx: ServerRequestContext[Any, Any], params: types.CallToolRequestParams
) -> types.CallToolResult:
    value = os.environ.get(sys.argv[1]) if len(sys.argv) > 1 else None
    answer = {
        "arguments": params.arguments,
        "meta": dict(params.meta or {}),
        "env_sha256": hashlib.sha256(value.encode()).hexdigest() if value else None,
        "env": sorted(os.environ),
    }
    if (params.arguments or {}).get("text") == "leak":
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


if __name__ == "__main__":
    anyio.run(main)
