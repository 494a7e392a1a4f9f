"""``proctor approvals``: the single calls waiting for a person, and their answers."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

import orjson
import typer

from proctor.cli.common import HomeOption, JsonOption, emit_json, locate
from proctor.cli.session import (
    ApiKeyFileOption,
    ReasonOption,
    approver,
    note,
    opened,
    projection,
    say,
    usage_error,
)
from proctor.tasks.state import Approval, ApprovalState
from proctor.tasks.views import approval_view

approvals_app = typer.Typer(
    help="List, show, approve and deny calls that wait for an approver.",
    no_args_is_help=True,
)

IdArgument = Annotated[str, typer.Argument(metavar="ID", help="The approval id.")]


def register(app: typer.Typer) -> None:
    app.add_typer(approvals_app, name="approvals")


@approvals_app.command("list")
def list_command(
    show_all: Annotated[
        bool, typer.Option("--all", help="Every approval, decided ones too.")
    ] = False,
    home: HomeOption = None,
    as_json: JsonOption = False,
) -> None:
    """List the approvals waiting now (with --all, the whole history), oldest first."""
    now = _now()
    with projection(home) as authority:
        approvals = sorted(authority.approvals(), key=lambda found: found.requested)
    views = [
        approval_view(approval, now)
        for approval in approvals
        if show_all or approval.state_at(now) is ApprovalState.PENDING
    ]
    if as_json:
        emit_json(views)
        return
    for view in views:
        say(
            f"{view['id']}  {view['state']:<8}  {view['task']}  {view['action']}  "
            f"{_context(view)}  needs {', '.join(view['roles'])}"
        )
    note(f"{len(views)} {'approvals' if show_all else 'pending approvals'}")


@approvals_app.command("show")
def show_command(
    approval_id: IdArgument, home: HomeOption = None, as_json: JsonOption = False
) -> None:
    """Show one approval: the exact call, why it waits, and who answered."""
    with projection(home) as authority:
        approval = authority.approval(approval_id)
        task = authority.task(approval.task) if approval else None
    if approval is None:
        usage_error(f"no approval {approval_id!r}")
    view = approval_view(approval, _now())
    if as_json:
        emit_json(view)
        return
    for line in describe(view, request=task.request if task else None):
        say(line)


@approvals_app.command("approve")
def approve_command(
    approval_id: IdArgument,
    reason: ReasonOption,
    api_key_file: ApiKeyFileOption = None,
    home: HomeOption = None,
    as_json: JsonOption = False,
) -> None:
    """Release one exact call as yourself (your API key); it is used once."""
    person = approver(locate(home), api_key_file)
    with opened(home) as runtime:
        approval = runtime.service.grant(approval_id, person, reason)
    _report(approval, f"approved by {person.email}", as_json=as_json)


@approvals_app.command("deny")
def deny_command(
    approval_id: IdArgument,
    reason: ReasonOption,
    api_key_file: ApiKeyFileOption = None,
    home: HomeOption = None,
    as_json: JsonOption = False,
) -> None:
    """Refuse one exact call as yourself (your API key)."""
    person = approver(locate(home), api_key_file)
    with opened(home) as runtime:
        approval = runtime.service.deny(approval_id, person, reason)
    _report(approval, f"denied by {person.email}", as_json=as_json)


def describe(view: dict[str, Any], *, request: str | None) -> list[str]:
    """Lay out an approval view as lines of text."""
    entries = ", ".join(
        f"{name} #{index}"
        for name, index in view["entries"].items()
        if index is not None
    )
    granted = ", ".join(view["granted_roles"]) or "-"
    return [
        f"approval  {view['id']}",
        f"state     {view['state']}",
        f"task      {view['task']}" + (f"  ({request})" if request else ""),
        f"action    {view['action']}",
        f"resource  {view['resource']}",
        f"context   {_context(view)}",
        f"digest    {view['request_digest']}",
        f"why       {view['reason']}",
        f"needs     {', '.join(view['roles'])} (granted: {granted})",
        f"by        {', '.join(view['approvers']) or '-'}",
        f"expires   {view['expires']}",
        f"entries   {entries}",
    ]


def _context(view: dict[str, Any]) -> str:
    return orjson.dumps(view["context"], option=orjson.OPT_SORT_KEYS).decode()


def _report(approval: Approval, what: str, *, as_json: bool) -> None:
    view = approval_view(approval, _now())
    if as_json:
        emit_json({"entry": approval.decided, "approval": view})
        return
    say(
        f"approval {approval.id} {what} (entry {approval.decided}); now {view['state']}"
    )


def _now() -> datetime:
    return datetime.now(UTC)
