"""The stdio front door: a bridge an MCP client launches as its server command,
speaking MCP on stdin and stdout and brokering every call to one downstream server.

The task token comes from ``PROCTOR_TASK_TOKEN``, or from the file named by
``PROCTOR_TASK_TOKEN_FILE`` (owner-only, as every secret file in a home), read again
for each request so that a fresh token can replace an expired one without
restarting the client. Each request is authenticated on its own, so a revoked token
or a quarantined task stops at the next call.

A client stops the bridge by closing its stdin (and, two seconds later, SIGTERM).
Nothing a kill interrupts can break the record: each decision was durable before
its call went out, and each outcome is written as its answer goes back.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from pathlib import Path

from mcp.server.stdio import stdio_server

from proctor.errors import ConfigError
from proctor.files import read_private
from proctor.gateway.mcp.config import McpServer
from proctor.gateway.mcp.proxy import Broker, Context
from proctor.gateway.pipeline import Pipeline

log = logging.getLogger(__name__)

TOKEN_ENV = "PROCTOR_TASK_TOKEN"  # noqa: S105 - a variable name, not a token
TOKEN_FILE_ENV = "PROCTOR_TASK_TOKEN_FILE"  # noqa: S105 - a variable name


def environment_token(environ: Mapping[str, str]) -> Callable[[], str | None]:
    """Return a function giving the task token the environment names, or None."""

    def token() -> str | None:
        value = environ.get(TOKEN_ENV, "").strip()
        if value:
            return value
        path = environ.get(TOKEN_FILE_ENV, "").strip()
        if not path:
            return None
        try:
            return read_private(Path(path)).decode("utf-8").strip() or None
        except (ConfigError, UnicodeDecodeError) as exc:
            log.error("task token file unusable: %s", exc)
            return None

    return token


async def serve_stdio(
    pipeline: Pipeline, server: McpServer, token: Callable[[], str | None]
) -> None:
    """Serve ``server``'s tools on this process's stdin and stdout until EOF.

    Raises GatewayError when the downstream server cannot be started.
    """

    def identify(_: Context) -> str | None:
        return token()

    app = Broker(pipeline, server, identify).build()
    async with stdio_server() as (read, write):
        await app.run(read, write, app.create_initialization_options())
