"""``proctor reindex``: rebuild the tasks and approvals projection from the entries."""

from __future__ import annotations

from contextlib import closing
from datetime import UTC, datetime

import typer

from proctor.cli.common import HomeOption, JsonOption, emit_json, locate
from proctor.cli.session import note, say
from proctor.tasks.state import Authority
from proctor.tasks.views import count_states


def register(app: typer.Typer) -> None:
    app.command("reindex")(reindex_command)


def reindex_command(home: HomeOption = None, as_json: JsonOption = False) -> None:
    """Rebuild the tasks and approvals from every entry and print their counts.

    The projection lives in memory and every process rebuilds it from the entries
    when it starts, so nothing is written: this replays the whole ledger to show
    that it folds cleanly and what it holds.
    """
    now = datetime.now(UTC)
    with closing(locate(home).open_store()) as store:
        authority = Authority(store)
        authority.sync()
    groups = {
        "tasks": count_states(task.state_at(now) for task in authority.tasks()),
        "approvals": count_states(
            approval.state_at(now) for approval in authority.approvals()
        ),
    }
    if as_json:
        emit_json({"entries": authority.applied, **groups})
        return
    say(f"entries    {authority.applied}")
    for group, states in groups.items():
        total = sum(states.values())
        detail = ", ".join(f"{state} {number}" for state, number in states.items())
        say(f"{group:<10} {total}" + (f" ({detail})" if detail else ""))
    note("rebuilt the projection from the ledger's entries")
