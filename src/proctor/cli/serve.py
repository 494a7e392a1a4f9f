"""``proctor serve``: the API, the gateway doors and the ledger in one process."""

from __future__ import annotations

import logging
from typing import Annotated

import typer

from proctor.cli.common import HomeOption, locate
from proctor.cli.session import note, opened


def register(app: typer.Typer) -> None:
    app.command("serve")(serve_command)


def serve_command(
    home: HomeOption = None,
    host: Annotated[
        str | None,
        typer.Option(help="Address to listen on (default: [serve] host, loopback)."),
    ] = None,
    port: Annotated[
        int | None,
        typer.Option(
            help="Port to listen on (default: [serve] port, 8750).", min=1, max=65535
        ),
    ] = None,
) -> None:
    """Serve the API (/v1), the HTTP gateway (/http) and MCP (/mcp) until stopped."""
    # Imported here: fastapi, uvicorn, the web console and the mcp SDK cost ~1.5 s
    # to import, and only `proctor serve` needs them.
    from proctor.serve import LOG_FORMAT, is_loopback, run  # noqa: PLC0415

    settings = locate(home).config().serve
    host = host or settings.host
    port = port or settings.port
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    if not is_loopback(host):
        note(f"proctor: listening on {host}, beyond this machine: put TLS in front")
    with opened(home) as runtime:
        run(runtime, host=host, port=port)
