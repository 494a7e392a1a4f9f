"""``proctor task``: open, show, list, approve, reject, revoke and close tasks."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

from proctor.cli.common import HomeOption, JsonOption, emit_json, locate
from proctor.cli.session import (
    ApiKeyFileOption,
    ReasonOption,
    approver,
    note,
    opened,
    operator,
    projection,
    say,
    usage_error,
)
from proctor.tasks.people import normalise_email
from proctor.tasks.service import ScopeText
from proctor.tasks.state import Task, TaskState
from proctor.tasks.views import task_view

MAX_TTL_MINUTES = 366 * 24 * 60

task_app = typer.Typer(
    help="Open, show, list, approve, reject, revoke and close tasks.",
    no_args_is_help=True,
)


class ScopeFormat(StrEnum):
    toml = "toml"
    cedar = "cedar"


def register(app: typer.Typer) -> None:
    app.add_typer(task_app, name="task")


@task_app.command("open")
def open_command(
    *,
    user: Annotated[str, typer.Option(help="The person asking for the work (email).")],
    agent: Annotated[str, typer.Option(help="The agent that will do it.")],
    request: Annotated[str, typer.Option(help="The user's request, in their words.")],
    scope: Annotated[
        Path, typer.Option(help="The scope file: TOML or Cedar.", show_default=False)
    ],
    scope_format: Annotated[
        ScopeFormat | None,
        typer.Option("--format", help="The scope's format (default: from its name)."),
    ] = None,
    ttl: Annotated[
        int | None,
        typer.Option(
            help="Minutes until the task expires (default: [authority] task_ttl).",
            min=1,
            max=MAX_TTL_MINUTES,
        ),
    ] = None,
    home: HomeOption = None,
    as_json: JsonOption = False,
) -> None:
    """Open a task; it is active at once unless a policy wants a named approver."""
    scope_text = _read_scope(scope, scope_format)
    lifetime = timedelta(minutes=ttl) if ttl is not None else None
    with opened(home) as runtime:
        task = runtime.service.open_task(
            user=normalise_email(user),
            agent=agent,
            request=request,
            scope=scope_text,
            by=operator(),
            ttl=lifetime,
        )
    if as_json:
        emit_json({"entry": task.opened, "task": task_view(task, _now())})
        return
    say(task.id)
    if task.roles:
        waiting = ", ".join(task.roles)
        note(f"opened task {task.id} (entry {task.opened}); waits for {waiting}")
    else:
        note(f"opened task {task.id} (entry {task.opened}); active")


@task_app.command("show")
def show_command(
    task_id: Annotated[str, typer.Argument(metavar="ID", help="The task id.")],
    home: HomeOption = None,
    as_json: JsonOption = False,
) -> None:
    """Show one task with its scope."""
    with projection(home) as authority:
        task = authority.task(task_id)
    if task is None:
        usage_error(f"no task {task_id!r}")
    view = task_view(task, _now(), full=True)
    if as_json:
        emit_json(view)
        return
    for line in describe(view):
        say(line)


@task_app.command("list")
def list_command(
    state: Annotated[
        TaskState | None, typer.Option(help="Only tasks in this state now.")
    ] = None,
    home: HomeOption = None,
    as_json: JsonOption = False,
) -> None:
    """List tasks, oldest first, with their state as of now."""
    now = _now()
    with projection(home) as authority:
        tasks = sorted(authority.tasks(), key=lambda task: task.opened)
    views = [task_view(task, now) for task in tasks]
    if state is not None:
        views = [view for view in views if view["state"] == state.value]
    if as_json:
        emit_json(views)
        return
    for view in views:
        say(
            f"{view['id']}  {view['state']:<16}  {view['user']}  {view['agent']}  "
            f"{view['expires']}  {view['request'][:60]!r}"
        )
    note(f"{len(views)} tasks")


@task_app.command("approve")
def approve_command(
    task_id: Annotated[str, typer.Argument(metavar="ID", help="The task id.")],
    reason: ReasonOption,
    api_key_file: ApiKeyFileOption = None,
    home: HomeOption = None,
    as_json: JsonOption = False,
) -> None:
    """Approve a pending task's scope as yourself (your API key); it becomes active."""
    person = approver(locate(home), api_key_file)
    with opened(home) as runtime:
        task = runtime.service.approve_task(task_id, person, reason)
    _report(task, task.approved, f"approved as {person.email}", as_json=as_json)


@task_app.command("reject")
def reject_command(
    task_id: Annotated[str, typer.Argument(metavar="ID", help="The task id.")],
    reason: ReasonOption,
    api_key_file: ApiKeyFileOption = None,
    home: HomeOption = None,
    as_json: JsonOption = False,
) -> None:
    """Refuse a pending task's scope as yourself (your API key)."""
    person = approver(locate(home), api_key_file)
    with opened(home) as runtime:
        task = runtime.service.reject_task(task_id, person, reason)
    _report(task, task.ended, f"rejected by {person.email}", as_json=as_json)


@task_app.command("revoke")
def revoke_command(
    task_id: Annotated[str, typer.Argument(metavar="ID", help="The task id.")],
    reason: ReasonOption,
    home: HomeOption = None,
    as_json: JsonOption = False,
) -> None:
    """Revoke a task: its tokens stop working on their next call."""
    with opened(home) as runtime:
        task = runtime.service.revoke_task(task_id, by=operator(), reason=reason)
    _report(task, task.ended, "revoked", as_json=as_json)


@task_app.command("close")
def close_command(
    task_id: Annotated[str, typer.Argument(metavar="ID", help="The task id.")],
    reason: Annotated[str, typer.Option(help="Why; recorded as said.")] = "done",
    home: HomeOption = None,
    as_json: JsonOption = False,
) -> None:
    """Close a task whose work is done."""
    with opened(home) as runtime:
        task = runtime.service.close_task(task_id, by=operator(), reason=reason)
    _report(task, task.ended, "closed", as_json=as_json)


def describe(view: dict[str, Any]) -> list[str]:
    """Lay out a full task view as lines of text."""
    scope, entries = view["scope"], view["entries"]
    state = view["state"]
    if view["roles"] and state == TaskState.PENDING.value:
        state += f" (waits for {', '.join(view['roles'])})"
    recorded = ", ".join(
        f"{name} #{index}" for name, index in entries.items() if index is not None
    )
    lines = [
        f"task      {view['id']}",
        f"state     {state}",
        f"user      {view['user']}",
        f"agent     {view['agent']}",
        f"request   {view['request']}",
        f"expires   {view['expires']}",
        f"scope     {scope['format']} {scope['digest']}",
        f"actions   {', '.join(scope['actions']) or '-'}",
        f"approver  {view['approver'] or '-'}",
        f"entries   {recorded}",
    ]
    if scope.get("text"):
        lines += ["", "scope as written:", *str(scope["text"]).rstrip().splitlines()]

    return lines


def _read_scope(path: Path, scope_format: ScopeFormat | None) -> ScopeText:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        usage_error(f"cannot read the scope file {path}: {exc}")
    if scope_format is None:
        suffix = path.suffix.lower()
        scope_format = ScopeFormat.cedar if suffix == ".cedar" else ScopeFormat.toml

    return ScopeText.parse(text, format=scope_format.value)


def _report(task: Task, entry: int | None, what: str, *, as_json: bool) -> None:
    view = task_view(task, _now())
    if as_json:
        emit_json({"entry": entry, "task": view})
        return
    say(f"task {task.id} {what} (entry {entry}); now {view['state']}")


def _now() -> datetime:
    return datetime.now(UTC)
