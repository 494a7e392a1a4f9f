"""``proctor explain``: everything behind one call, read from the ledger's entries
and proven against its latest signed checkpoint."""

from __future__ import annotations

from typing import Annotated

import typer

from proctor.cli.common import HomeOption, JsonOption, emit_json, out
from proctor.cli.forensics import decision_lines, opened
from proctor.cli.session import usage_error
from proctor.errors import QueryError


def register(app: typer.Typer) -> None:
    app.command("explain")(explain_command)


def explain_command(
    entry: Annotated[
        int,
        typer.Argument(
            metavar="ENTRY",
            help="An entry about a call: its decision, completion, breach, "
            "quarantine or approval.",
            min=0,
        ),
    ],
    home: HomeOption = None,
    as_json: JsonOption = False,
) -> None:
    """Tell everything behind one call, each fact naming its entry.

    Who asked and why, the scope and its approver, the agent's reasoning, the
    request as sent, the policies that decided, the approval and what came back;
    every entry cited is proven against the latest signed checkpoint. Exits 1
    when a proof fails.
    """
    with opened(home) as forensics:
        size = forensics.store.size()
        if entry >= size:
            usage_error(f"no entry {entry}: the ledger holds {size} entries")
        try:
            story = forensics.explain(entry, proofs=True)
        except QueryError as exc:
            usage_error(str(exc))
    if as_json:
        emit_json(story)
    else:
        for line in decision_lines(story):
            out.print(line)
    # A story resting on an entry the signed checkpoint does not prove is a finding.
    if any(not proof.verified for proof in story.proofs):
        raise typer.Exit(1)
