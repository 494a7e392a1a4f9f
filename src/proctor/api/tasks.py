"""``/v1/tasks``: open, read, approve, reject, revoke and close tasks, hand out task
tokens, and record the agent's reasoning."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query

from proctor.api.auth import (
    ApproverDep,
    PersonDep,
    RuntimeDep,
    TaskTokenDep,
    forbidden,
    require_manager,
)
from proctor.api.models import (
    CloseBody,
    EntryOut,
    ErrorOut,
    OpenTaskBody,
    ReasonBody,
    ReasoningBody,
    TaskChange,
    TaskOut,
    TokenOut,
)
from proctor.errors import AuthError
from proctor.runtime import Runtime
from proctor.tasks.people import Person, Role, normalise_email
from proctor.tasks.service import ScopeText
from proctor.tasks.state import Task, TaskState
from proctor.tasks.views import stamp, task_view

router = APIRouter(
    prefix="/tasks",
    tags=["tasks"],
    responses={code: {"model": ErrorOut} for code in (400, 401, 403, 404, 409, 503)},
)


@router.post("", status_code=201)
def open_task(body: OpenTaskBody, who: PersonDep, runtime: RuntimeDep) -> TaskChange:
    """Open a task for yourself (an admin may name another user)."""
    try:
        user = normalise_email(body.user) if body.user else who.email
    except AuthError as exc:
        raise HTTPException(400, str(exc)) from exc
    if user != who.email and not who.has_role(Role.ADMIN):
        raise forbidden(f"only an admin may open a task for {user}")
    ttl = timedelta(minutes=body.ttl) if body.ttl is not None else None
    task = runtime.service.open_task(
        user=user,
        agent=body.agent,
        request=body.request,
        scope=ScopeText.parse(body.scope, format=body.format),
        by=_by(who),
        ttl=ttl,
    )

    return _change(task, task.opened)


@router.get("")
def list_tasks(
    who: PersonDep,
    runtime: RuntimeDep,
    state: Annotated[TaskState | None, Query(description="Only this state.")] = None,
) -> list[TaskOut]:
    """List tasks, oldest first, with their state as of now."""
    runtime.service.authority.sync()
    now = _now()
    tasks = sorted(runtime.service.authority.tasks(), key=lambda task: task.opened)
    return [
        TaskOut.model_validate(task_view(task, now))
        for task in tasks
        if state is None or task.state_at(now) is state
    ]


@router.get("/{task_id}")
def show_task(task_id: str, who: PersonDep, runtime: RuntimeDep) -> TaskOut:
    """Show one task with its scope's text and compiled Cedar."""
    task = _task(runtime, task_id)
    return TaskOut.model_validate(task_view(task, _now(), full=True))


@router.post("/{task_id}/approve")
def approve_task(
    task_id: str, body: ReasonBody, who: ApproverDep, runtime: RuntimeDep
) -> TaskChange:
    """Approve a pending task's scope as a named approver; it becomes active."""
    _task(runtime, task_id)
    task = runtime.service.approve_task(task_id, who, body.reason)
    return _change(task, task.approved)


@router.post("/{task_id}/reject")
def reject_task(
    task_id: str, body: ReasonBody, who: ApproverDep, runtime: RuntimeDep
) -> TaskChange:
    """Refuse a pending task's scope as a named approver."""
    _task(runtime, task_id)
    task = runtime.service.reject_task(task_id, who, body.reason)
    return _change(task, task.ended)


@router.post("/{task_id}/revoke")
def revoke_task(
    task_id: str, body: ReasonBody, who: PersonDep, runtime: RuntimeDep
) -> TaskChange:
    """Revoke a task (an admin, or its user): its tokens stop on their next call."""
    require_manager(who, _task(runtime, task_id))
    task = runtime.service.revoke_task(task_id, by=_by(who), reason=body.reason)
    return _change(task, task.ended)


@router.post("/{task_id}/close")
def close_task(
    task_id: str, who: PersonDep, runtime: RuntimeDep, body: CloseBody | None = None
) -> TaskChange:
    """Close a task whose work is done (an admin, or its user)."""
    require_manager(who, _task(runtime, task_id))
    reason = body.reason if body is not None else "done"
    task = runtime.service.close_task(task_id, by=_by(who), reason=reason)
    return _change(task, task.ended)


@router.post("/{task_id}/tokens", status_code=201)
def issue_token(task_id: str, who: PersonDep, runtime: RuntimeDep) -> TokenOut:
    """Hand a task token to the task's agent process (an admin, or the task's user)."""
    require_manager(who, _task(runtime, task_id))
    issued = runtime.service.issue_token(task_id, by=_by(who))
    return TokenOut(
        token=issued.token,
        task=issued.claims.task,
        jti=issued.claims.jti,
        expires=stamp(issued.claims.expires),
        entry=_entry(issued.entry),
    )


@router.post("/{task_id}/reasoning", status_code=201)
def record_reasoning(
    task_id: str, body: ReasoningBody, agent: TaskTokenDep, runtime: RuntimeDep
) -> EntryOut:
    """Record why the agent is about to act; authenticated by this task's token."""
    if not body.text.strip():
        raise HTTPException(400, "reasoning text is empty")
    _, task = agent
    entry = runtime.service.record_reasoning(
        task, body.text, source="api", trace=body.trace, tool_call=body.tool_call
    )
    return EntryOut(entry=entry)


def _task(runtime: Runtime, task_id: str) -> Task:
    runtime.service.authority.sync()
    task = runtime.service.authority.task(task_id)
    if task is None:
        raise HTTPException(404, f"no task {task_id!r}")
    return task


def _change(task: Task, entry: int | None) -> TaskChange:
    view = TaskOut.model_validate(task_view(task, _now()))
    return TaskChange(entry=_entry(entry), task=view)


def _entry(entry: int | None) -> int:
    # Every change the service reports was recorded; an index is always there.
    if entry is None:
        raise HTTPException(500, "the change was made but its entry is unknown")
    return entry


def _by(who: Person) -> str:
    return f"api:{who.email}"


def _now() -> datetime:
    return datetime.now(UTC)
