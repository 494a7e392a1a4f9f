"""The MCP front doors: downstream servers from proctor.toml, the relay that carries
agents' messages to them with every tool call brokered through the shared pipeline,
served over Streamable HTTP and over stdio, and the import of a desktop client's
``mcpServers`` file."""

from proctor.gateway.mcp.classify import (
    APPROVAL_KEY,
    ENTRY_KEY,
    REASONING_KEY,
    TOOL_CALL_KEY,
    TRACEPARENT_KEY,
    call_digest,
    classify,
    result_digest,
)
from proctor.gateway.mcp.config import McpServer, Transport, load_servers
from proctor.gateway.mcp.http import http_app
from proctor.gateway.mcp.proxy import Broker
from proctor.gateway.mcp.relay import Relay
from proctor.gateway.mcp.stdio import environment_token, serve_stdio

__all__ = [
    "APPROVAL_KEY",
    "ENTRY_KEY",
    "REASONING_KEY",
    "TOOL_CALL_KEY",
    "TRACEPARENT_KEY",
    "Broker",
    "McpServer",
    "Relay",
    "Transport",
    "call_digest",
    "classify",
    "environment_token",
    "http_app",
    "load_servers",
    "result_digest",
    "serve_stdio",
]
