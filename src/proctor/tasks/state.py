"""Tasks, approvals and token revocations as the ledger says they are now.

This is a projection: it folds entries in index order and holds nothing the entries do
not say, so replaying the ledger from the start rebuilds it exactly. Several processes
may write one ledger; :meth:`Authority.sync` reads what others appended.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum
from typing import Any

from proctor import kinds
from proctor.ledger import entries
from proctor.ledger.log import Appended
from proctor.storage.interface import Store

log = logging.getLogger(__name__)


class TaskState(StrEnum):
    PENDING = "pending_approval"
    ACTIVE = "active"
    EXPIRED = "expired"
    REVOKED = "revoked"
    QUARANTINED = "quarantined"
    CLOSED = "closed"
    REJECTED = "rejected"


ENDED = frozenset(
    {TaskState.REVOKED, TaskState.QUARANTINED, TaskState.CLOSED, TaskState.REJECTED}
)


class ApprovalState(StrEnum):
    PENDING = "pending"
    GRANTED = "granted"
    DENIED = "denied"
    USED = "used"
    EXPIRED = "expired"


@dataclass(frozen=True)
class Task:
    """One unit of delegated work and where it stands."""

    id: str
    user: str
    agent: str
    request: str
    scope: Mapping[str, Any]
    expires: datetime
    state: TaskState
    opened: int
    roles: tuple[str, ...] = ()
    granted_roles: tuple[str, ...] = ()
    approver: str | None = None
    approved: int | None = None
    ended: int | None = None

    @property
    def scope_digest(self) -> str:
        return str(self.scope["digest"])

    def state_at(self, now: datetime) -> TaskState:
        """The state at ``now``: a live task past its expiry has expired."""
        if self.state not in ENDED and now >= self.expires:
            return TaskState.EXPIRED
        return self.state


@dataclass(frozen=True)
class Approval:
    """One exact call waiting for, or released by, a person."""

    id: str
    task: str
    action: str
    resource: str
    request_digest: str
    context: Mapping[str, Any]
    roles: tuple[str, ...]
    reason: str
    expires: datetime
    requested: int
    state: ApprovalState = ApprovalState.PENDING
    granted_roles: tuple[str, ...] = ()
    approvers: tuple[str, ...] = ()
    decided: int | None = None
    used: int | None = None

    def state_at(self, now: datetime) -> ApprovalState:
        """The state at ``now``: an unused approval past its expiry has expired."""
        live = (ApprovalState.PENDING, ApprovalState.GRANTED)
        if self.state in live and now >= self.expires:
            return ApprovalState.EXPIRED
        return self.state


@dataclass
class _Folded:
    tasks: dict[str, Task] = field(default_factory=dict)
    approvals: dict[str, Approval] = field(default_factory=dict)
    revoked_tokens: set[str] = field(default_factory=set)
    reasoning: dict[str, list[int]] = field(default_factory=dict)
    policy: tuple[int, str] | None = None


class Authority:
    """The projection of a ledger's authority entries, kept in step with its store."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._lock = threading.RLock()
        self._next = 0
        self._folded = _Folded()
        self._read_at = float("-inf")

    @property
    def applied(self) -> int:
        """How many entries have been folded in."""
        return self._next

    def sync(self, *, within: float = 0.0) -> None:
        """Fold in every entry appended since the last sync, by anyone.

        With ``within`` > 0, a read of the store less than that many seconds ago
        stands, and the store is not read again.
        """
        with self._lock:
            started = time.monotonic()
            if started - self._read_at < within:
                return
            for data in self._store.entries(self._next):
                entry = entries.decode(data)
                self._apply(int(entry["index"]), str(entry["type"]), entry)
            self._read_at = started

    def observe(self, index: int) -> None:
        """Make sure entry ``index``, just appended, is folded in."""
        with self._lock:
            if index >= self._next:
                self.sync()

    def fold_appended(self, appended: Sequence[Appended]) -> None:
        """Fold in entries this process has just appended, without reading them back.

        Meant as the ledger's listener. Entries others appended in between are read
        from the store first, so the fold stays in index order.
        """
        with self._lock:
            for entry in appended:
                if entry.index > self._next:
                    self.sync()
                if entry.index == self._next:
                    self._apply(entry.index, entry.kind, entry.fields)

    def task(self, task_id: str) -> Task | None:
        with self._lock:
            return self._folded.tasks.get(task_id)

    def tasks(self) -> Iterator[Task]:
        with self._lock:
            return iter(list(self._folded.tasks.values()))

    def approval(self, approval_id: str) -> Approval | None:
        with self._lock:
            return self._folded.approvals.get(approval_id)

    def approvals(self) -> Iterator[Approval]:
        with self._lock:
            return iter(list(self._folded.approvals.values()))

    def is_token_revoked(self, jti: str) -> bool:
        with self._lock:
            return jti in self._folded.revoked_tokens

    def pending_reasoning(self, task_id: str) -> list[int]:
        """The reasoning entries recorded since the task's last decision."""
        with self._lock:
            return list(self._folded.reasoning.get(task_id, ()))

    def published_policy(self) -> tuple[int, str] | None:
        """The entry index and digest of the policy set in force, if any."""
        with self._lock:
            return self._folded.policy

    def _apply(self, index: int, kind: str, entry: Mapping[str, Any]) -> None:
        apply = _APPLY.get(kind)
        if apply is not None:
            try:
                apply(self._folded, index, entry)
            except (KeyError, TypeError, ValueError) as exc:
                # An entry naming what no earlier entry created is skipped, not
                # fatal: the projection stays usable and `proctor verify` judges
                # the ledger itself.
                log.warning("projection skipped entry=%d type=%s: %r", index, kind, exc)
        self._next = index + 1


Fold = Callable[[_Folded, int, Mapping[str, Any]], None]


def _time(value: object) -> datetime:
    return datetime.fromisoformat(str(value).replace("Z", "+00:00"))


def _opened(state: _Folded, index: int, entry: Mapping[str, Any]) -> None:
    roles = tuple(entry["approval"]["roles"])
    state.tasks[entry["task"]] = Task(
        id=entry["task"],
        user=entry["user"],
        agent=entry["agent"],
        request=entry["request"],
        scope=entry["scope"],
        expires=_time(entry["expires"]),
        state=TaskState.PENDING if roles else TaskState.ACTIVE,
        opened=index,
        roles=roles,
    )


def _approved(state: _Folded, index: int, entry: Mapping[str, Any]) -> None:
    task = state.tasks[entry["task"]]
    granted = (*task.granted_roles, entry["role"])
    # A scope that needs several named approvers is active once all have approved.
    active = set(task.roles) <= set(granted)
    state.tasks[task.id] = replace(
        task,
        state=TaskState.ACTIVE if active else task.state,
        granted_roles=granted,
        approver=entry["approver"],
        approved=index,
    )


def _ended(to: TaskState) -> Fold:
    def fold(state: _Folded, index: int, entry: Mapping[str, Any]) -> None:
        task = state.tasks[entry["task"]]
        if task.state not in ENDED:
            state.tasks[task.id] = replace(task, state=to, ended=index)

    return fold


def _token_revoked(state: _Folded, index: int, entry: Mapping[str, Any]) -> None:
    state.revoked_tokens.add(entry["jti"])


def _reasoning(state: _Folded, index: int, entry: Mapping[str, Any]) -> None:
    state.reasoning.setdefault(entry["task"], []).append(index)


def _decision(state: _Folded, index: int, entry: Mapping[str, Any]) -> None:
    state.reasoning.pop(entry.get("task", ""), None)
    approval_id = entry.get("approval")
    if approval_id and entry.get("outcome") == "allow":
        approval = state.approvals[approval_id]
        # Single use: the first allowing decision in the ledger's order holds it.
        if approval.used is None:
            state.approvals[approval_id] = replace(
                approval, state=ApprovalState.USED, used=index
            )


def _approval_requested(state: _Folded, index: int, entry: Mapping[str, Any]) -> None:
    state.approvals[entry["approval"]] = Approval(
        id=entry["approval"],
        task=entry["task"],
        action=entry["action"],
        resource=entry["resource"],
        request_digest=entry["request_digest"],
        context=entry["context"],
        roles=tuple(entry["roles"]),
        reason=entry["reason"],
        expires=_time(entry["expires"]),
        requested=index,
    )


def _approval_granted(state: _Folded, index: int, entry: Mapping[str, Any]) -> None:
    approval = state.approvals[entry["approval"]]
    granted = (*approval.granted_roles, entry["role"])
    complete = set(approval.roles) <= set(granted)
    state.approvals[approval.id] = replace(
        approval,
        granted_roles=granted,
        approvers=(*approval.approvers, entry["approver"]),
        state=ApprovalState.GRANTED if complete else ApprovalState.PENDING,
        decided=index,
    )


def _approval_denied(state: _Folded, index: int, entry: Mapping[str, Any]) -> None:
    approval = state.approvals[entry["approval"]]
    state.approvals[approval.id] = replace(
        approval,
        state=ApprovalState.DENIED,
        approvers=(*approval.approvers, entry["approver"]),
        decided=index,
    )


def _policy(state: _Folded, index: int, entry: Mapping[str, Any]) -> None:
    state.policy = (index, entry["digest"])


_APPLY: dict[str, Fold] = {
    kinds.TASK_OPENED: _opened,
    kinds.TASK_APPROVED: _approved,
    kinds.TASK_REJECTED: _ended(TaskState.REJECTED),
    kinds.TASK_REVOKED: _ended(TaskState.REVOKED),
    kinds.TASK_CLOSED: _ended(TaskState.CLOSED),
    kinds.TASK_QUARANTINED: _ended(TaskState.QUARANTINED),
    kinds.TOKEN_REVOKED: _token_revoked,
    kinds.REASONING: _reasoning,
    kinds.DECISION: _decision,
    kinds.APPROVAL_REQUESTED: _approval_requested,
    kinds.APPROVAL_GRANTED: _approval_granted,
    kinds.APPROVAL_DENIED: _approval_denied,
    kinds.POLICY_PUBLISHED: _policy,
}
