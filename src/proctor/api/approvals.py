"""``/v1/approvals``: the single calls waiting for a person, and their answers."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query

from proctor.api.auth import ApproverDep, PersonDep, RuntimeDep
from proctor.api.models import ApprovalChange, ApprovalOut, ErrorOut, ReasonBody
from proctor.runtime import Runtime
from proctor.tasks.state import Approval, ApprovalState
from proctor.tasks.views import approval_view

router = APIRouter(
    prefix="/approvals",
    tags=["approvals"],
    responses={code: {"model": ErrorOut} for code in (400, 401, 403, 404, 409, 503)},
)


@router.get("")
def list_approvals(
    who: PersonDep,
    runtime: RuntimeDep,
    state: Annotated[
        ApprovalState | None, Query(description="Only this state (default: all).")
    ] = None,
) -> list[ApprovalOut]:
    """List approvals, oldest first, with their state as of now."""
    runtime.service.authority.sync()
    now = _now()
    approvals = sorted(
        runtime.service.authority.approvals(), key=lambda found: found.requested
    )
    return [
        ApprovalOut.model_validate(approval_view(approval, now))
        for approval in approvals
        if state is None or approval.state_at(now) is state
    ]


@router.get("/{approval_id}")
def show_approval(approval_id: str, who: PersonDep, runtime: RuntimeDep) -> ApprovalOut:
    """Show one approval: the exact call, why it waits, and who answered."""
    return ApprovalOut.model_validate(
        approval_view(_approval(runtime, approval_id), _now())
    )


@router.post("/{approval_id}/approve")
def approve(
    approval_id: str, body: ReasonBody, who: ApproverDep, runtime: RuntimeDep
) -> ApprovalChange:
    """Release one exact call, once, as a named approver."""
    _approval(runtime, approval_id)
    return _change(runtime.service.grant(approval_id, who, body.reason))


@router.post("/{approval_id}/deny")
def deny(
    approval_id: str, body: ReasonBody, who: ApproverDep, runtime: RuntimeDep
) -> ApprovalChange:
    """Refuse one exact call as a named approver."""
    _approval(runtime, approval_id)
    return _change(runtime.service.deny(approval_id, who, body.reason))


def _approval(runtime: Runtime, approval_id: str) -> Approval:
    runtime.service.authority.sync()
    approval = runtime.service.authority.approval(approval_id)
    if approval is None:
        raise HTTPException(404, f"no approval {approval_id!r}")
    return approval


def _change(approval: Approval) -> ApprovalChange:
    if approval.decided is None:
        raise HTTPException(500, "the answer was recorded but its entry is unknown")
    view = ApprovalOut.model_validate(approval_view(approval, _now()))
    return ApprovalChange(entry=approval.decided, approval=view)


def _now() -> datetime:
    return datetime.now(UTC)
