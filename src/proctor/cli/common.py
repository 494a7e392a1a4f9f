"""Options and output helpers shared by the command groups."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer
from rich.console import Console

from proctor.home import Home

HomeOption = Annotated[
    Path | None,
    typer.Option(
        "--home",
        help="The Proctor home (default: $PROCTOR_HOME, else ./.proctor).",
        show_default=False,
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False)


def locate(path: Path | None) -> Home:
    """The home a command works on."""
    return Home.locate(path)


def emit_json(value: Any) -> None:
    """Write one JSON document to stdout."""
    sys.stdout.write(orjson.dumps(value, option=orjson.OPT_INDENT_2).decode() + "\n")
