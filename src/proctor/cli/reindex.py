"""``proctor reindex``: rebuild the tasks and approvals projection, and the entry
index searches answer from, from the entries."""

from __future__ import annotations

from contextlib import closing
from datetime import UTC, datetime

import typer

from proctor.cli.common import HomeOption, JsonOption, emit_json, locate
from proctor.cli.session import note, say
from proctor.forensics.index import HasProjections, Index
from proctor.tasks.state import Authority
from proctor.tasks.views import count_states


def register(app: typer.Typer) -> None:
    app.command("reindex")(reindex_command)


def reindex_command(home: HomeOption = None, as_json: JsonOption = False) -> None:
    """Rebuild the tasks, approvals and entry index from every entry; print counts.

    The tasks and approvals live in memory and every process rebuilds them from
    the entries when it starts: this replays the whole ledger to show that it
    folds cleanly and what it holds. The entry index that find, trace and the
    console search is dropped and written again, as after `proctor verify` found
    it edited.
    """
    now = datetime.now(UTC)
    with closing(locate(home).open_store()) as store:
        authority = Authority(store)
        authority.sync()
        indexed = (
            Index.of(store).rebuild(store)
            if isinstance(store, HasProjections)
            else None
        )
    groups = {
        "tasks": count_states(task.state_at(now) for task in authority.tasks()),
        "approvals": count_states(
            approval.state_at(now) for approval in authority.approvals()
        ),
    }
    if as_json:
        emit_json({"entries": authority.applied, "indexed": indexed, **groups})
        return
    say(f"entries    {authority.applied}")
    for group, states in groups.items():
        total = sum(states.values())
        detail = ", ".join(f"{state} {number}" for state, number in states.items())
        say(f"{group:<10} {total}" + (f" ({detail})" if detail else ""))
    if indexed is not None:
        say(f"{'index':<10} {indexed}")
    note("rebuilt the projection and the entry index from the ledger's entries")
