"""The tasks with their state, and one task's story drawn as a timeline."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from proctor import kinds
from proctor.errors import TaskError
from proctor.forensics import Event, TaskStory
from proctor.ledger import entries
from proctor.tasks.state import Task, TaskState
from proctor.web.auth import Viewer
from proctor.web.pages import (
    Console,
    Pager,
    base_of,
    console_of,
    page,
    page_number,
    pager,
    refuse,
    render,
)

TASKS_PER_PAGE = 50
EVENTS_PER_PAGE = 200
STATES = tuple(state.value for state in TaskState)
_ANSWERS = frozenset(
    {kinds.APPROVAL_GRANTED, kinds.APPROVAL_DENIED, kinds.TASK_APPROVED}
)


def routes() -> list[Route]:
    return [
        Route("/", home, methods=["GET"]),
        Route("/tasks", page(task_list), methods=["GET"]),
        Route("/tasks/{task_id}", page(timeline), methods=["GET"]),
    ]


async def home(request: Request) -> Response:
    return RedirectResponse(base_of(request) + "/tasks", status_code=303)


@dataclass(frozen=True)
class TaskRow:
    """One task in the list, with when it was opened."""

    task: Task
    state: str
    opened_time: str | None


@dataclass(frozen=True)
class TaskList:
    rows: tuple[TaskRow, ...]
    counts: dict[str, int]
    total: int
    more: bool


async def task_list(request: Request, viewer: Viewer) -> Response:
    """Tasks newest first, filtered by state, agent or user, a page at a time."""
    console = console_of(request)
    state = request.query_params.get("state") or None
    agent = request.query_params.get("agent") or None
    user = request.query_params.get("user") or None
    number = page_number(request)
    found = await run_in_threadpool(
        list_tasks, console, state=state, agent=agent, user=user, number=number
    )

    return render(
        request,
        "tasks.html",
        {
            "section": "tasks",
            "found": found,
            "states": STATES,
            "state": state or "",
            "agent": agent or "",
            "user": user or "",
            "pager": pager(request, number, more=found.more),
        },
        viewer=viewer,
    )


def list_tasks(
    console: Console,
    *,
    state: str | None,
    agent: str | None,
    user: str | None,
    number: int,
) -> TaskList:
    """Read the tasks from the authority's projection, which lives in memory."""
    authority = console.runtime.service.authority
    authority.sync()
    now = datetime.now(UTC)
    everything = sorted(authority.tasks(), key=lambda task: task.opened, reverse=True)
    counts: dict[str, int] = {}
    chosen: list[tuple[Task, str]] = []
    for task in everything:
        current = task.state_at(now).value
        counts[current] = counts.get(current, 0) + 1
        if state is not None and current != state:
            continue
        if agent is not None and task.agent != agent:
            continue
        if user is not None and task.user != user:
            continue
        chosen.append((task, current))
    start = (number - 1) * TASKS_PER_PAGE
    shown = chosen[start : start + TASKS_PER_PAGE]
    bodies = console.forensics.index.bodies(task.opened for task, _ in shown)
    opened = {
        index: str(entries.decode(body)["time"]) for index, body in bodies.items()
    }
    rows = tuple(
        TaskRow(task, now_state, opened.get(task.opened)) for task, now_state in shown
    )

    return TaskList(
        rows=rows,
        counts=dict(sorted(counts.items())),
        total=len(chosen),
        more=start + TASKS_PER_PAGE < len(chosen),
    )


@dataclass(frozen=True)
class Timeline:
    story: TaskStory
    events: tuple[Event, ...]
    breaches: tuple[Event, ...]
    approvals: tuple[Event, ...]
    pager: Pager
    first: int


async def timeline(request: Request, viewer: Viewer) -> Response:
    """A task's story from its entries, drawn as a timeline in ledger order."""
    console = console_of(request)
    task_id = request.path_params["task_id"]
    try:
        story = await run_in_threadpool(console.forensics.trace, task_id)
    except TaskError as exc:
        return refuse(request, viewer, 404, "No such task", str(exc))
    number = page_number(request)
    start = (number - 1) * EVENTS_PER_PAGE
    shown = story.events[start : start + EVENTS_PER_PAGE]

    return render(
        request,
        "task.html",
        {
            "section": "tasks",
            "view": Timeline(
                story=story,
                events=tuple(shown),
                breaches=_breaches(story.events),
                approvals=_approvals(story.events),
                pager=pager(
                    request, number, more=start + EVENTS_PER_PAGE < len(story.events)
                ),
                first=start,
            ),
        },
        viewer=viewer,
    )


def _breaches(events: Sequence[Event]) -> tuple[Event, ...]:
    """The breach entries; decisions flagged as breaches when none was written."""
    recorded = tuple(event for event in events if event.type == kinds.BREACH)
    return recorded or tuple(event for event in events if event.tone == "breach")


def _approvals(events: Sequence[Event]) -> tuple[Event, ...]:
    return tuple(event for event in events if event.type in _ANSWERS)
