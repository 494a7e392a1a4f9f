"""The MCP client to one downstream server, with its vault credentials injected:
environment variables for a server Proctor launches, headers for a remote one.

The agent's own token never travels on: a stdio server starts from the SDK's short
list of safe variables (``PATH``, ``HOME``, ...) plus its configured ``env`` and its
credentials, and a remote server gets only its configured headers and credentials.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager

import httpx2
from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client

from proctor.errors import GatewayError
from proctor.gateway.mcp.config import McpServer, Transport
from proctor.vault.inject import Outbound, apply

CONNECT_TIMEOUT = 30.0
STREAM_READ = 300.0
"""Seconds a remote server's response stream may stay silent (the SDK's default)."""

Secret = Callable[[str], str]
"""Returns a vault secret's value by name; raises VaultError."""


def outbound(server: McpServer, secret: Secret) -> Outbound:
    """The environment or headers a server receives, credentials included.

    Raises VaultError naming a secret that is missing or cannot travel there.
    """
    result = Outbound(headers=dict(server.headers), env=dict(server.env))
    for injection in server.credentials:
        result = apply(injection, secret(injection.secret), result)

    return result


def stdio_parameters(server: McpServer, parts: Outbound) -> StdioServerParameters:
    """How to launch a stdio server; raises GatewayError for a remote one."""
    if server.transport is not Transport.STDIO or server.command is None:
        raise GatewayError(f"mcp server {server.name} is not launched by proctor")
    return StdioServerParameters(
        command=server.command,
        args=list(server.args),
        env=dict(parts.env),
        cwd=server.cwd,
    )


@asynccontextmanager
async def connect(server: McpServer, secret: Secret) -> AsyncIterator[Client]:
    """Open the client to ``server`` for as long as the context lasts.

    Raises GatewayError when the server cannot be started or reached, and
    VaultError when one of its credentials is missing.
    """
    parts = outbound(server, secret)
    async with AsyncExitStack() as stack:
        if server.transport is Transport.STDIO:
            unopened = Client(
                stdio_parameters(server, parts), read_timeout_seconds=server.timeout
            )
        else:
            timeout = httpx2.Timeout(
                CONNECT_TIMEOUT, read=max(server.timeout, STREAM_READ)
            )
            http = httpx2.AsyncClient(headers=dict(parts.headers), timeout=timeout)
            await stack.enter_async_context(http)
            transport = streamable_http_client(str(server.url), http_client=http)
            unopened = Client(transport, read_timeout_seconds=server.timeout)
        try:
            opened = await stack.enter_async_context(unopened)
        # The SDK raises whatever its transport raises (OSError, httpx2 errors,
        # groups of them): all mean the server cannot be reached.
        except Exception as exc:
            raise GatewayError(
                f"cannot open mcp server {server.name}: {type(exc).__name__}"
            ) from exc
        yield opened
