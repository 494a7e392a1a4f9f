"""``proctor init``: create a home."""

from __future__ import annotations

from typing import Annotated

import typer

from proctor.cli.common import HomeOption, err, locate, out
from proctor.home import init


def register(app: typer.Typer) -> None:
    app.command("init")(init_command)


def init_command(
    home: HomeOption = None,
    origin: Annotated[
        str | None, typer.Option(help="The checkpoint origin naming this ledger.")
    ] = None,
) -> None:
    """Create a Proctor home: configuration, log signing key and an empty ledger."""
    created = init(locate(home), origin=origin)
    out.print(str(created.path))
    err.print(f"created a Proctor home at {created.path}")
    vkey = created.log_vkey.read_text(encoding="ascii").strip()
    err.print(f"log verifier key: {vkey}")
