"""The authority's operations: open, approve, revoke and close tasks, hand out task
tokens, record reasoning, and ask for and give approvals of single calls.

Each operation checks the projection, writes one entry and waits until it is durable,
so the answer to "who approved it?" is always in the verifiable record.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import cedarpy
from cedarpy import pst
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from proctor import kinds
from proctor.errors import AuthError, PolicyError, TaskError, TokenError
from proctor.ledger.log import Ledger
from proctor.policy import ActiveTask, Engine, OrgPolicies, Outcome, Request, Scope
from proctor.tasks.people import Person
from proctor.tasks.state import Approval, ApprovalState, Authority, Task, TaskState
from proctor.tasks.token import IssuedToken, TaskClaims, TokenIssuer, TokenVerifier
from proctor.vault import Masking

OPEN_TASK = 'Proctor::Action::"OpenTask"'
MAX_REASONING = 8192
_OPEN_SCOPE = Scope.from_cedar(
    '@id("proctor:open-task") permit (principal, '
    'action == Proctor::Action::"OpenTask", resource);'
)


class Scrubber(Protocol):
    """Removes secrets from what is about to be recorded."""

    def scrub(self, value: object) -> object: ...

    def scrub_text(self, text: str) -> str: ...

    def masking(self) -> Masking: ...


@dataclass(frozen=True)
class Rules:
    """How strict the authority is, from ``[authority]`` in proctor.toml."""

    task_ttl: timedelta = timedelta(hours=8)
    token_ttl: timedelta = timedelta(minutes=15)
    approval_ttl: timedelta = timedelta(minutes=30)
    user_may_approve: bool = False
    quarantine_on_breach: bool = True


@dataclass(frozen=True)
class ScopeText:
    """A scope as the user wrote it, and what it compiles to."""

    text: str
    format: str
    scope: Scope

    @classmethod
    def parse(cls, text: str, *, format: str) -> ScopeText:
        """Compile TOML or Cedar scope text; raises PolicyError."""
        if format == "toml":
            return cls(text, format, Scope.from_toml(text))
        if format == "cedar":
            return cls(text, format, Scope.from_cedar(text))
        raise PolicyError(f"scope format must be toml or cedar, got {format!r}")


class TaskService:
    """Every change to tasks, tokens and approvals, each recorded as an entry."""

    def __init__(
        self,
        ledger: Ledger,
        authority: Authority,
        org: OrgPolicies,
        token_key: Ed25519PrivateKey,
        *,
        redactor: Scrubber,
        rules: Rules | None = None,
    ) -> None:
        self.ledger = ledger
        self.authority = authority
        self.org = org
        self.redactor = redactor
        self.rules = rules or Rules()
        self._issuer = TokenIssuer(token_key, ttl=self.rules.token_ttl)
        self._verifier = TokenVerifier(
            token_key.public_key(), is_revoked=self.revocation_reason
        )
        self._scopes: dict[str, Scope] = {}

    # Policies

    def publish_policies(self, *, by: str) -> int | None:
        """Record the organisation policy set unless it is already the one in force."""
        self.authority.sync()
        published = self.authority.published_policy()
        if published is not None and published[1] == self.org.digest:
            return None
        return self._append(
            kinds.POLICY_PUBLISHED,
            {"digest": self.org.digest, "files": dict(self.org.parts), "by": by},
        )

    # Tasks

    def open_task(
        self,
        *,
        user: str,
        agent: str,
        request: str,
        scope: ScopeText,
        by: str,
        ttl: timedelta | None = None,
    ) -> Task:
        """Open a task; it is active at once unless a policy wants a named approver.

        Raises TaskError for an empty request, agent or user, and PolicyError when
        the scope permits nothing, is invalid, or the organisation forbids it.
        """
        for name, value in (("request", request), ("agent", agent), ("user", user)):
            if not value.strip():
                raise TaskError(f"a task needs a {name}; it is empty")
        if not scope_actions(scope.scope):
            raise PolicyError("the scope permits nothing: add at least one [[allow]]")
        problems = self.org.check_scope(scope.scope)
        if problems:
            raise PolicyError("; ".join(str(problem) for problem in problems))
        self.publish_policies(by=by)
        task_id = "tsk_" + secrets.token_hex(8)
        roles, policies = self._scope_approval(task_id, agent, user, scope.scope)
        expires = _now() + (ttl or self.rules.task_ttl)
        self._append(
            kinds.TASK_OPENED,
            {
                "task": task_id,
                "user": user,
                "agent": agent,
                "request": self._scrub_text(request),
                "scope": {
                    "format": scope.format,
                    "text": self._scrub_text(scope.text),
                    "cedar": scope.scope.cedar,
                    "digest": scope.scope.digest,
                    "actions": scope_actions(scope.scope),
                },
                "expires": _stamp(expires),
                "approval": {"roles": list(roles), "policies": list(policies)},
                "policy_set": self.org.digest,
                "by": by,
            },
        )

        return self.require_task(task_id)

    def approve_task(self, task_id: str, approver: Person, reason: str) -> Task:
        """Approve a pending task's scope; raises TaskError or AuthError."""
        task = self._pending_task(task_id)
        missing = tuple(r for r in task.roles if r not in task.granted_roles)
        role = self._approving_role(approver, missing, task)
        self._append(
            kinds.TASK_APPROVED,
            {
                "task": task.id,
                "approver": approver.email,
                "role": role,
                "reason": self._scrub_text(reason),
                "scope_digest": task.scope_digest,
            },
        )

        return self.require_task(task.id)

    def reject_task(self, task_id: str, approver: Person, reason: str) -> Task:
        """Refuse a pending task's scope; it never becomes active."""
        task = self._pending_task(task_id)
        self._approving_role(approver, task.roles, task)
        self._end(kinds.TASK_REJECTED, task, approver=approver.email, reason=reason)

        return self.require_task(task.id)

    def revoke_task(self, task_id: str, *, by: str, reason: str) -> Task:
        """Revoke a task: its tokens stop working on their next call."""
        task = self._live_task(task_id)
        self._end(kinds.TASK_REVOKED, task, by=by, reason=reason)

        return self.require_task(task.id)

    def close_task(self, task_id: str, *, by: str, reason: str = "done") -> Task:
        """Close a task whose work is done."""
        task = self._live_task(task_id)
        self._end(kinds.TASK_CLOSED, task, by=by, reason=reason)

        return self.require_task(task.id)

    def quarantine(self, task_id: str, *, reason: str, breach: int) -> None:
        """Stop a task after a breach; recorded, and its tokens fail from now on."""
        task = self.require_task(task_id)
        if task.state not in (TaskState.ACTIVE, TaskState.PENDING):
            return
        self._append(
            kinds.TASK_QUARANTINED,
            {"task": task.id, "reason": reason, "breach": breach},
        )

    def scope_of(self, task: Task) -> Scope:
        """The compiled scope a task was opened with, parsed once per digest."""
        scope = self._scopes.get(task.scope_digest)
        if scope is None:
            scope = Scope.from_cedar(str(task.scope["cedar"]))
            if scope.digest != task.scope_digest:
                raise PolicyError(f"task {task.id}'s scope does not match its digest")
            self._scopes[task.scope_digest] = scope
        return scope

    def require_task(self, task_id: str) -> Task:
        """Return the task as the ledger says now; raises TaskError if there is none."""
        self.authority.sync()
        return self.known_task(task_id)

    def known_task(self, task_id: str) -> Task:
        """Return the task as this process last read the ledger, without reading it
        again (what this process appends is always known); raises TaskError."""
        task = self.authority.task(task_id)
        if task is None:
            raise TaskError(f"no task {task_id!r}")
        return task

    # Tokens

    def issue_token(self, task_id: str, *, by: str) -> IssuedToken:
        """Hand out a task token for an active task, and record that it was."""
        task = self._live_task(task_id)
        if task.state_at(_now()) is not TaskState.ACTIVE:
            raise TaskError(f"task {task.id} is {task.state_at(_now())}, not active")
        issued = self._issuer.issue(user=task.user, agent=task.agent, task=task.id)
        index = self._append(
            kinds.TOKEN_ISSUED,
            {
                "task": task.id,
                "jti": issued.claims.jti,
                "agent": task.agent,
                "user": task.user,
                "expires": _stamp(issued.claims.expires),
                "by": by,
            },
        )

        return replace(issued, entry=index)

    def revoke_token(self, task_id: str, jti: str, *, by: str, reason: str) -> int:
        """Revoke one token of a task and return the entry index that says so."""
        task = self.require_task(task_id)
        return self._append(
            kinds.TOKEN_REVOKED,
            {"task": task.id, "jti": jti, "by": by, "reason": self._scrub_text(reason)},
        )

    def authenticate(
        self, token: str, *, recent: float = 0.0
    ) -> tuple[TaskClaims, Task]:
        """Check a task token against the key and the ledger's state right now.

        With ``recent`` > 0, this process's read of the ledger less than that many
        seconds ago stands for now, except before refusing: for a caller that
        confirms what it allows once its decision is durable, as the pipeline does.

        Raises TokenError with the reason: malformed, expired, revoked, the task not
        active, or the token naming another agent or user than the task.
        """
        self.authority.sync(within=recent)
        try:
            return self._check_token(token)
        except TokenError:
            if recent <= 0:
                raise
        return self.authenticate(token)

    def _check_token(self, token: str) -> tuple[TaskClaims, Task]:
        claims = self._verifier.verify(token)
        task = self.authority.task(claims.task)
        if task is None:
            raise TokenError(f"token names unknown task {claims.task!r}", claims=claims)
        if (claims.agent, claims.user) != (task.agent, task.user):
            raise TokenError(
                f"token does not match task {task.id}'s agent and user", claims=claims
            )
        return claims, task

    def revocation_reason(self, jti: str, task_id: str) -> str | None:
        """Why a token may not be used now, or None; the token verifier's hook."""
        if self.authority.is_token_revoked(jti):
            return "token revoked"
        task = self.authority.task(task_id)
        if task is None:
            return f"unknown task {task_id}"
        state = task.state_at(_now())
        if state is not TaskState.ACTIVE:
            return f"task {task_id} is {state}"
        return None

    # Reasoning

    def record_reasoning(
        self,
        task: Task,
        text: str,
        *,
        source: str,
        trace: str | None = None,
        tool_call: str | None = None,
    ) -> int:
        """Record one reasoning step; secrets pasted into it are removed first."""
        if not text.strip():
            raise TaskError("reasoning text is empty")
        if len(text) > MAX_REASONING:
            raise TaskError(
                f"reasoning is {len(text)} characters; at most {MAX_REASONING}"
            )
        fields: dict[str, Any] = {
            "task": task.id,
            "agent": task.agent,
            "text": self._scrub_text(text),
            "source": source,
        }
        if trace:
            fields["trace"] = self._scrub_text(trace)
        if tool_call:
            fields["tool_call"] = self._scrub_text(tool_call)

        return self._append(kinds.REASONING, fields)

    # Approvals of single calls

    def grant(self, approval_id: str, approver: Person, reason: str) -> Approval:
        """Approve one exact call; raises TaskError or AuthError."""
        approval, task = self._pending_approval(approval_id)
        missing = tuple(r for r in approval.roles if r not in approval.granted_roles)
        role = self._approving_role(approver, missing, task)
        self._append(
            kinds.APPROVAL_GRANTED,
            {
                "approval": approval.id,
                "task": task.id,
                "approver": approver.email,
                "role": role,
                "reason": self._scrub_text(reason),
                "request_digest": approval.request_digest,
            },
        )

        return self.require_approval(approval.id)

    def deny(self, approval_id: str, approver: Person, reason: str) -> Approval:
        """Refuse one exact call; raises TaskError or AuthError."""
        approval, task = self._pending_approval(approval_id)
        self._approving_role(approver, approval.roles, task)
        self._append(
            kinds.APPROVAL_DENIED,
            {
                "approval": approval.id,
                "task": task.id,
                "approver": approver.email,
                "reason": self._scrub_text(reason),
            },
        )

        return self.require_approval(approval.id)

    def require_approval(self, approval_id: str) -> Approval:
        """Return the approval; raises TaskError when there is none."""
        self.authority.sync()
        approval = self.authority.approval(approval_id)
        if approval is None:
            raise TaskError(f"no approval {approval_id!r}")
        return approval

    # Helpers

    def _append(self, kind: str, fields: Mapping[str, Any]) -> int:
        receipt = self.ledger.append(kind, fields)
        self.authority.observe(receipt.index)

        return receipt.index

    def _end(self, kind: str, task: Task, **fields: str) -> None:
        clean = {key: self._scrub_text(value) for key, value in fields.items()}
        self._append(kind, {"task": task.id, **clean})

    def _scrub_text(self, text: str) -> str:
        return self.redactor.scrub_text(text)

    def _pending_task(self, task_id: str) -> Task:
        task = self.require_task(task_id)
        if task.state_at(_now()) is not TaskState.PENDING:
            raise TaskError(f"task {task.id} is {task.state_at(_now())}, not pending")
        return task

    def _live_task(self, task_id: str) -> Task:
        task = self.require_task(task_id)
        if task.state not in (TaskState.ACTIVE, TaskState.PENDING):
            raise TaskError(f"task {task.id} is {task.state}")
        return task

    def _pending_approval(self, approval_id: str) -> tuple[Approval, Task]:
        approval = self.require_approval(approval_id)
        state = approval.state_at(_now())
        if state is not ApprovalState.PENDING:
            raise TaskError(f"approval {approval.id} is {state}, not pending")
        return approval, self.require_task(approval.task)

    def _approving_role(
        self, approver: Person, roles: tuple[str, ...], task: Task
    ) -> str:
        # Separation of duties: the agent never approves; by default neither does
        # the user who asked for the work.
        if approver.email in (task.agent,):
            raise AuthError(
                f"{approver.email} acts for task {task.id} and cannot approve"
            )
        # Emails compare as People writes them: "Ann@X.com" asked is ann@x.com.
        is_user = approver.email == task.user.strip().lower()
        if is_user and not self.rules.user_may_approve:
            raise AuthError(
                f"{approver.email} asked for task {task.id} and may not approve it"
            )
        for role in roles:
            if approver.may_approve(role):
                return role
        if not roles:
            raise TaskError(f"task {task.id} needs no approval")
        raise AuthError(
            f"{approver.email} holds none of the roles {list(roles)} needed here"
        )

    def _scope_approval(
        self, task_id: str, agent: str, user: str, scope: Scope
    ) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """Ask the organisation's policies whether this scope needs an approver."""
        engine = Engine(self.org, [ActiveTask(task_id, agent, user, _OPEN_SCOPE)])
        request = Request(
            agent=agent,
            user=user,
            task=task_id,
            action=OPEN_TASK,
            resource=f'Proctor::Task::"{task_id}"',
            context={"actions": scope_actions(scope)},
        )
        decision = engine.decide(request)
        if decision.outcome is Outcome.NEEDS_APPROVAL:
            return decision.approvers, decision.policy_ids
        if decision.outcome is Outcome.DENY:
            raise PolicyError(
                f"the organisation's policies refuse this scope: {decision.reason}"
            )
        return (), ()


def scope_actions(scope: Scope) -> list[str]:
    """The action uids a scope's permits name; ``*`` when one permits any action."""
    tree = cedarpy.policies_to_pst(scope.cedar)
    found: set[str] = set()
    for policy in tree.static_policies.values():
        if policy.effect != "permit":
            continue
        constraint = policy.action
        if isinstance(constraint, pst.ActionEq):
            found.add(_uid(constraint.entity))
        elif isinstance(constraint, pst.ActionIn):
            found.update(_uid(entity) for entity in constraint.entities)
        else:
            found.add("*")

    return sorted(found)


def _uid(entity: Any) -> str:
    namespace = "::".join((*entity.type.namespace, entity.type.basename))
    return f'{namespace}::"{entity.id}"'


def _now() -> datetime:
    return datetime.now(UTC)


def _stamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
