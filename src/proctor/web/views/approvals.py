"""The approvals inbox: each call waiting for a person, with its full context, and
the forms an approver answers it with; auditors see the same and answer nothing."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from proctor.forensics import DecisionStory
from proctor.tasks.state import Approval, ApprovalState, Task
from proctor.web.auth import Viewer
from proctor.web.pages import (
    Console,
    Form,
    action,
    base_of,
    console_of,
    first,
    page,
    page_number,
    pager,
    refuse,
    render,
)

log = logging.getLogger(__name__)

PER_PAGE = 20
ANSWERED = 20
MAX_REASON = 2000


def routes() -> list[Route]:
    return [
        Route("/approvals", page(inbox), methods=["GET"]),
        Route("/approvals/{approval_id}/grant", action(grant), methods=["POST"]),
        Route("/approvals/{approval_id}/deny", action(deny), methods=["POST"]),
    ]


@dataclass(frozen=True)
class Waiting:
    """One pending call with everything a person needs to answer it."""

    approval: Approval
    task: Task | None
    story: DecisionStory | None
    missing: tuple[str, ...]
    may_answer: bool
    why_not: str | None
    expires_in: str


@dataclass(frozen=True)
class Inbox:
    waiting: tuple[Waiting, ...]
    total: int
    answered: tuple[Approval, ...]
    more: bool


async def inbox(request: Request, viewer: Viewer) -> Response:
    """Pending calls oldest first, then the ones answered most recently."""
    console = console_of(request)
    number = page_number(request)
    found = await run_in_threadpool(read_inbox, console, viewer, number)

    return render(
        request,
        "approvals.html",
        {
            "section": "approvals",
            "inbox": found,
            "pager": pager(request, number, more=found.more),
            "max_reason": MAX_REASON,
        },
        viewer=viewer,
    )


def read_inbox(console: Console, viewer: Viewer, number: int) -> Inbox:
    """Read pending approvals from the projection and tell each one's story."""
    authority = console.runtime.service.authority
    authority.sync()
    now = datetime.now(UTC)
    everything = list(authority.approvals())
    pending = sorted(
        (a for a in everything if a.state_at(now) is ApprovalState.PENDING),
        key=lambda approval: approval.requested,
    )
    start = (number - 1) * PER_PAGE
    shown = pending[start : start + PER_PAGE]
    answered = sorted(
        (a for a in everything if a.decided is not None),
        key=lambda approval: approval.decided or 0,
        reverse=True,
    )[:ANSWERED]

    return Inbox(
        waiting=tuple(_waiting(console, viewer, a, now) for a in shown),
        total=len(pending),
        answered=tuple(answered),
        more=start + PER_PAGE < len(pending),
    )


def _waiting(
    console: Console, viewer: Viewer, approval: Approval, now: datetime
) -> Waiting:
    task = console.runtime.service.authority.task(approval.task)
    story = console.forensics.explain(approval.requested, proofs=False)
    missing = tuple(r for r in approval.roles if r not in approval.granted_roles)
    why_not = _why_not(console, viewer, task, missing)
    left = max(0, int((approval.expires - now).total_seconds()))

    return Waiting(
        approval=approval,
        task=task,
        story=story,
        missing=missing,
        may_answer=why_not is None,
        why_not=why_not,
        expires_in=f"{left // 60} min {left % 60:02d} s",
    )


def _why_not(
    console: Console, viewer: Viewer, task: Task | None, missing: tuple[str, ...]
) -> str | None:
    """Why this viewer may not answer, as the service would say, or None.

    This only decides which forms to show; the service checks again on a post.
    """
    person = viewer.person
    if not viewer.is_approver:
        return "you can read this as an auditor; only an approver can answer it"
    if task is not None and person.email == task.agent:
        return "you act for this task, so you cannot approve its calls"
    user_may = console.runtime.service.rules.user_may_approve
    if task is not None and person.email == task.user.strip().lower() and not user_may:
        return "you asked for this task, so someone else must approve its calls"
    if not any(person.may_approve(role) for role in missing):
        return f"this needs {', '.join(missing)}; you approve as " + (
            ", ".join(sorted(person.approves)) or "no named role"
        )
    return None


async def grant(request: Request, viewer: Viewer, form: Form) -> Response:
    """Approve one exact call, with a reason, as the signed-in approver."""
    return await _answer(request, viewer, form, granted=True)


async def deny(request: Request, viewer: Viewer, form: Form) -> Response:
    """Refuse one exact call, with a reason, as the signed-in approver."""
    return await _answer(request, viewer, form, granted=False)


async def _answer(
    request: Request, viewer: Viewer, form: Form, *, granted: bool
) -> Response:
    console = console_of(request)
    approval_id = str(request.path_params["approval_id"])
    if not viewer.is_approver:
        log.warning(
            "console answer refused email=%s approval=%s reason=not-an-approver",
            viewer.person.email,
            approval_id[:40],
        )
        return refuse(
            request,
            viewer,
            403,
            "Not allowed",
            f"{viewer.person.email} is an auditor, not an approver: auditors read "
            "approvals but do not answer them",
        )
    reason = " ".join(first(form, "reason").split())
    if not reason or len(reason) > MAX_REASON:
        return refuse(
            request,
            viewer,
            400,
            "A reason is needed",
            f"give a reason of 1 to {MAX_REASON} characters; it is recorded in "
            "the ledger with your answer",
        )
    service = console.runtime.service
    answer = service.grant if granted else service.deny
    approval = await run_in_threadpool(answer, approval_id, viewer.person, reason)
    verb = "approved" if granted else "denied"
    log.info(
        "console answer email=%s approval=%s %s entry=%s",
        viewer.person.email,
        approval.id,
        verb,
        approval.decided,
    )
    console.sessions.flash(
        viewer.session,
        "ok",
        f"{verb} {approval.id} (entry #{approval.decided}); it is now "
        f"{approval.state_at(datetime.now(UTC)).value}",
    )

    return RedirectResponse(base_of(request) + "/approvals", status_code=303)
