"""``proctor demo``: a finance agent behind Proctor, end to end, on a fresh home.

The story and its checks live in :mod:`proctor.demo`; this is the command.
"""

from __future__ import annotations

from typing import Annotated

import typer

from proctor.cli.common import HomeOption


def register(app: typer.Typer) -> None:
    app.command("demo")(demo_command)


def demo_command(
    home: HomeOption = None,
    keep_running: Annotated[
        bool,
        typer.Option(
            "--keep-running",
            help="Leave the finance API and Proctor up afterwards, until Ctrl-C.",
        ),
    ] = False,
) -> None:
    """Play the finance-agent story: a task, a read, a breach, a payment held for
    approval, the ledger read back and verified, then a tampered copy caught.

    Uses a temporary home unless --home names a new folder. Exits 1 if any step
    does not behave as told.
    """
    # Imported here: proctor.demo renders with this package's helpers, so a module
    # level import would make importing either package first come back to itself.
    from proctor.demo.play import run  # noqa: PLC0415
    from proctor.demo.scenario import Scenario  # noqa: PLC0415

    code = run(Scenario.finance(), home=home, keep_running=keep_running)
    if code:
        raise typer.Exit(code)
