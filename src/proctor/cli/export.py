"""``proctor export``: the ledger in a layout other tools read."""

from __future__ import annotations

from contextlib import closing
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from proctor.cli.common import HomeOption, err, locate, out
from proctor.errors import LedgerError
from proctor.ledger.tiles import export_tiles


class Format(StrEnum):
    tiles = "tiles"


def register(app: typer.Typer) -> None:
    app.command("export")(export_command)


def export_command(
    output: Annotated[Path, typer.Option("--out", help="The folder to write.")],
    export_format: Annotated[
        Format, typer.Option("--format", help="tiles: the C2SP tlog-tiles layout.")
    ] = Format.tiles,
    home: HomeOption = None,
) -> None:
    """Write the ledger up to its latest checkpoint, streaming, in FORMAT."""
    with closing(locate(home).open_store()) as store:
        latest = store.latest_checkpoint()
        if latest is None:
            raise LedgerError(
                "the ledger has no checkpoint yet; run `proctor checkpoint`"
            )
        checkpoint = export_tiles(output, store.entries(0, latest.size), latest.note)
    out.print(str(output))
    err.print(f"exported {checkpoint.size} entries as tlog-tiles to {output}")
