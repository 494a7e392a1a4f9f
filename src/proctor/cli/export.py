"""``proctor export``: the ledger in a layout other tools read."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import closing, contextmanager
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import IO, Annotated, NoReturn

import typer

from proctor.cli.common import HomeOption, err, locate, out
from proctor.cli.forensics import NOTICE
from proctor.errors import LedgerError, QueryError
from proctor.forensics import Forensics, Selection, export_jsonl, export_ocsf
from proctor.forensics.query import parse_time
from proctor.ledger.tiles import export_tiles


class Format(StrEnum):
    tiles = "tiles"
    jsonl = "jsonl"
    ocsf = "ocsf"


def register(app: typer.Typer) -> None:
    app.command("export")(export_command)


def export_command(
    *,
    output: Annotated[
        Path | None,
        typer.Option(
            "--out",
            help="The folder (tiles) or file (jsonl, ocsf; default stdout) to write.",
        ),
    ] = None,
    export_format: Annotated[
        Format,
        typer.Option(
            "--format",
            help="tiles: C2SP tlog-tiles; jsonl: entries with leaf hashes and their "
            "checkpoint; ocsf: OCSF API Activity (6003) records of the decisions.",
        ),
    ] = Format.tiles,
    since: Annotated[
        str | None,
        typer.Option(help="jsonl, ocsf: from this time (RFC 3339, or like 24h)."),
    ] = None,
    until: Annotated[
        str | None, typer.Option(help="jsonl, ocsf: up to this time.")
    ] = None,
    task: Annotated[
        str | None, typer.Option(help="jsonl, ocsf: only this task.")
    ] = None,
    home: HomeOption = None,
) -> None:
    """Write the ledger, streaming, in FORMAT: tiles and jsonl up to its latest
    checkpoint, ocsf every decision."""
    selection = _selection(since, until, task)
    if export_format is Format.tiles:
        if not selection.is_everything:
            _usage("--since, --until and --task do not apply to tiles")
        if output is None:
            _usage("tiles needs --out FOLDER")
        _tiles(output, home)
        return
    with Forensics.open(locate(home)) as forensics, _sink(output) as sink:
        if export_format is Format.ocsf or not selection.is_everything:
            backlog = forensics.backlog()
            if backlog >= NOTICE:
                err.print(f"indexing {backlog:,} entries first", markup=False)
            forensics.refresh()
        if export_format is Format.jsonl:
            count = export_jsonl(
                forensics.store,
                sink,
                verifiers=forensics.verifiers,
                origin=forensics.origin,
                selection=selection,
                index=forensics.index,
            )
        else:
            count = export_ocsf(
                forensics.store,
                sink,
                forensics.index,
                origin=forensics.origin or "proctor",
                selection=selection,
            )
    where = str(output) if output else "stdout"
    err.print(f"exported {count} {export_format} records to {where}", markup=False)


def _tiles(output: Path, home: Path | None) -> None:
    with closing(locate(home).open_store()) as store:
        latest = store.latest_checkpoint()
        if latest is None:
            raise LedgerError(
                "the ledger has no checkpoint yet; run `proctor checkpoint`"
            )
        checkpoint = export_tiles(output, store.entries(0, latest.size), latest.note)
    out.print(str(output))
    err.print(f"exported {checkpoint.size} entries as tlog-tiles to {output}")


def _selection(since: str | None, until: str | None, task: str | None) -> Selection:
    now = datetime.now(UTC)
    try:
        start = parse_time(since, now=now, what="--since") if since else None
        end = parse_time(until, now=now, what="--until") if until else None
    except QueryError as exc:
        _usage(str(exc))

    return Selection(since=start, until=end, task=task or None)


@contextmanager
def _sink(output: Path | None) -> Iterator[IO[bytes]]:
    """Stdout, or a file that appears under its name only once complete."""
    if output is None:
        yield sys.stdout.buffer
        sys.stdout.buffer.flush()
        return
    partial = output.with_name(output.name + ".partial")
    try:
        with partial.open("wb") as sink:
            yield sink
        os.replace(partial, output)
    finally:
        partial.unlink(missing_ok=True)


def _usage(message: str) -> NoReturn:
    err.print(f"proctor: {message}", markup=False)
    raise typer.Exit(2)
