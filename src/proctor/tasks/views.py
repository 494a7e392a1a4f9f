"""Tasks and approvals as JSON values, the same for the command line and the API.

States are given as of the moment asked, so a live task past its expiry reads
``expired`` and a waiting approval past its expiry reads ``expired``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from proctor.tasks.state import Approval, Task


def task_view(task: Task, now: datetime, *, full: bool = False) -> dict[str, Any]:
    """Describe a task; ``full`` adds the scope's text and compiled Cedar."""
    scope: dict[str, Any] = {
        "format": task.scope.get("format"),
        "digest": task.scope_digest,
        "actions": list(task.scope.get("actions", ())),
    }
    if full:
        scope["text"] = task.scope.get("text")
        scope["cedar"] = task.scope.get("cedar")

    return {
        "id": task.id,
        "state": task.state_at(now).value,
        "user": task.user,
        "agent": task.agent,
        "request": task.request,
        "expires": stamp(task.expires),
        "roles": list(task.roles),
        "approver": task.approver,
        "scope": scope,
        "entries": {
            "opened": task.opened,
            "approved": task.approved,
            "ended": task.ended,
        },
    }


def approval_view(approval: Approval, now: datetime) -> dict[str, Any]:
    """Describe one call's approval: what it releases, who must and who did."""
    return {
        "id": approval.id,
        "task": approval.task,
        "state": approval.state_at(now).value,
        "action": approval.action,
        "resource": approval.resource,
        "request_digest": approval.request_digest,
        "context": dict(approval.context),
        "roles": list(approval.roles),
        "granted_roles": list(approval.granted_roles),
        "approvers": list(approval.approvers),
        "reason": approval.reason,
        "expires": stamp(approval.expires),
        "entries": {
            "requested": approval.requested,
            "decided": approval.decided,
            "used": approval.used,
        },
    }


def count_states(states: Iterable[str]) -> dict[str, int]:
    """Count states, by name."""
    return dict(sorted(Counter(str(state) for state in states).items()))


def stamp(moment: datetime) -> str:
    """Write a time as the ledger does: RFC 3339 UTC with microseconds."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
