"""The pipeline of one call, shared by every front door: authenticate, decide, handle
approvals and breaches, and record the decision durably before anything is forwarded.

A door parses and classifies a request into a :class:`Call`; the pipeline answers with
a :class:`Verdict`. Only an allowing verdict lets the door inject the credential and
forward, and it then reports the outcome with :meth:`Pipeline.complete`.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Protocol, cast

import cedarpy

from proctor import kinds
from proctor.errors import (
    LedgerError,
    PolicyError,
    StoreError,
    TaskError,
    TokenError,
    VaultError,
)
from proctor.gateway.alerts import Alerts
from proctor.policy import ActiveTask, Decision, Engine, Outcome, Request
from proctor.policy.cedar import AGENT_TYPE, cedar_string
from proctor.tasks.service import TaskService
from proctor.tasks.state import Approval, ApprovalState, Task, TaskState
from proctor.tasks.token import TaskClaims
from proctor.vault import Masking

log = logging.getLogger(__name__)

UNMAPPED = 'Proctor::Action::"Unmapped"'
MALFORMED = 'Proctor::Action::"Malformed"'
UNCLASSIFIED = {
    UNMAPPED: "this route is not mapped to an action; unmapped routes are denied",
    MALFORMED: "the request is malformed, so it was not sent",
}
WAIT_STEP = 0.2
RECENT_READ = 0.1
"""Seconds a read of the ledger stands for a door that lets authorize confirm."""
NOTES = ("note", "trace", "tool_call")
"""What a call may carry beside its request, recorded when present."""


class Credentials(Protocol):
    """Where injected credentials come from: the vault, or the runtime's view of it."""

    def get(self, name: str) -> str: ...


@dataclass(frozen=True)
class Call:
    """One classified call, as a front door saw it (secrets not yet removed)."""

    door: str
    target: str
    action: str
    resource: str
    context: Mapping[str, object]
    request: Mapping[str, object]
    digest: str
    credential: str | None = None
    approval: str | None = None
    note: str | None = None
    trace: str | None = None
    tool_call: str | None = None


@dataclass(frozen=True)
class Verdict:
    """What the pipeline says about one call."""

    allowed: bool
    status: int
    entry: int | None
    outcome: str
    reason: str
    action: str | None = None
    policies: tuple[str, ...] = ()
    approval: str | None = None
    breach: int | None = None
    task: str | None = None
    started: float = field(default=0.0, compare=False)

    def body(self) -> dict[str, Any]:
        """The JSON body of a refusal: what was decided, why, and where to look."""
        body: dict[str, Any] = {
            "error": self.outcome,
            "reason": self.reason,
            "action": self.action,
            "policies": list(self.policies),
            "entry": self.entry,
        }
        if self.approval is not None:
            body["approval"] = self.approval
        if self.breach is not None:
            body["breach"] = self.breach
        return body


@dataclass(frozen=True)
class _Judged:
    """What a call comes to before anything is recorded: the caller refused, the
    approval it presented refused (``problem``), or a decision."""

    task: Task | None
    refused: str | None = None
    approval: Approval | None = None
    problem: str | None = None
    decision: Decision | None = None

    @property
    def allows(self) -> bool:
        return self.decision is not None and self.decision.outcome is Outcome.ALLOW


class Pipeline:
    """Decides and records every call for one home."""

    def __init__(
        self,
        service: TaskService,
        *,
        alerts: Alerts,
        vault: Credentials | None = None,
    ) -> None:
        self.service = service
        self.alerts = alerts
        self._vault = vault
        self._engines: dict[tuple[str, str, str], Engine] = {}
        self._previews: dict[tuple[str, str], cedarpy.PolicySet] = {}
        self._claimed: set[str] = set()
        self._alerts: set[asyncio.Task[None]] = set()
        self._lock = threading.Lock()

    @property
    def ledger_size(self) -> int:
        return self.service.ledger.size

    async def seal(self) -> None:
        """Sign a checkpoint over every entry recorded so far. A door that is about
        to stop seals first, so a kill while it stops finds nothing unsigned."""
        try:
            await asyncio.to_thread(self.service.ledger.checkpoint)
        except (LedgerError, StoreError) as exc:
            log.error("no checkpoint signed on stopping: %s", exc)

    def secret(self, name: str) -> str:
        """The real credential for injection; raises VaultError when it is missing."""
        if self._vault is None:
            raise VaultError(f"no vault is open, so secret {name!r} cannot be injected")
        return self._vault.get(name)

    def scrub(self, value: object) -> object:
        """Remove every vault value and every sensitive field from ``value``."""
        return self.service.redactor.scrub(value)

    def masking(self) -> Masking:
        """Return a masker for one answer: no vault value reaches an agent."""
        return self.service.redactor.masking()

    async def authenticate(
        self,
        token: str | None,
        *,
        door: str,
        target: str,
        request: Mapping[str, object],
        recent: float = 0.0,
    ) -> TaskClaims | Verdict:
        """Check the task token; a refusal is recorded and answered with 401.

        With ``recent`` > 0 a read of the ledger that many seconds old stands (see
        TaskService.authenticate): for a door whose every request goes on to
        :meth:`authorize`, which confirms each allowed call against the ledger as
        it stands at its decision.
        """
        signed: TaskClaims | None = None
        if token:
            try:
                claims, _ = self.service.authenticate(token, recent=recent)
            except TokenError as exc:
                reason = str(exc)
                signed = exc.claims if isinstance(exc.claims, TaskClaims) else None
            else:
                return claims
        else:
            reason = "no task token: send Authorization: Bearer <task token>"

        return await self._refuse_caller(door, target, request, reason, claims=signed)

    async def authorize(
        self, claims: TaskClaims, call: Call, *, wait: float = 0.0
    ) -> Verdict:
        """Decide the call and record the decision durably before answering.

        With ``wait`` > 0 a call that needs approval is held until an approver
        decides or the wait runs out, then decided again with that approval.
        """
        verdict = await self._authorize(claims, call)
        held = verdict.approval if verdict.outcome == Outcome.NEEDS_APPROVAL else None
        if held and wait > 0 and await self._wait_for(held, wait):
            verdict = await self._authorize(claims, replace(call, approval=held))

        return self._sayable(verdict)

    def _sayable(self, verdict: Verdict) -> Verdict:
        # A refusal repeats what the agent brought (an action named by its path or
        # tool, the approval it presented) in an answer and a log line: scrubbed.
        if verdict.allowed:
            return verdict
        said = [verdict.action, verdict.reason, verdict.approval]
        action, reason, approval = cast("list[Any]", self.scrub(said))

        return replace(verdict, action=action, reason=reason, approval=approval)

    def may_call(self, claims: TaskClaims, action: str, resource: str | None) -> bool:
        """Tell, recording nothing, whether some call of ``action`` could be allowed.

        For listing what a task may use (MCP ``tools/list``): Cedar evaluates
        partially with the context unknown (and the resource, when None), and only
        a certain deny or an error says no. Calls are still decided by authorize.
        """
        try:
            task = self.service.require_task(claims.task)
            policies = self._preview(task)
        except (TaskError, PolicyError):
            return False
        request = {
            "principal": f"{AGENT_TYPE}::{cedar_string(task.agent)}",
            "action": action,
            **({} if resource is None else {"resource": resource}),
        }
        org = self.service.org
        try:
            result = cedarpy.is_authorized_partial(
                request, policies, org.entities, org.schema
            )
        # Fail closed, as the engine does, on anything the binding raises.
        except Exception:
            return False

        return not result.diagnostics.errors and result.decision in (
            cedarpy.Decision.Allow,
            cedarpy.Decision.NoDecision,
        )

    async def complete(
        self,
        verdict: Verdict,
        *,
        status: int | None,
        size: int,
        digest: str | None,
        latency_us: int,
        error: str | None = None,
        masked: int = 0,
    ) -> None:
        """Record what came back from upstream; never raises into the door.

        ``size`` and ``digest`` are of the upstream's bytes; ``masked`` counts the
        vault values masked in them on the way to the agent.
        """
        fields: dict[str, Any] = {
            "task": verdict.task,
            "decision": verdict.entry,
            "status": status,
            "size": size,
            "digest": digest,
            "latency_us": latency_us,
        }
        if masked:
            fields["masked"] = masked
        if error is not None:
            fields["error"] = str(self.scrub(error))
        # Nothing waits on an outcome: it shares the commit of the next decision.
        await self._record(kinds.CALL_COMPLETED, fields, hurried=False)

    # Deciding

    async def _authorize(self, claims: TaskClaims, call: Call) -> Verdict:
        judged = self._judge(claims, call)
        if not judged.allows:
            # A refusal is judged on the ledger as it is now: this process may not
            # yet have read what another appended (a fresh approval, a wider scope).
            if judged.decision is not None:
                self._release(judged.approval)
            self.service.authority.sync()
            judged = self._judge(claims, call)
        task = judged.task
        if task is None or judged.refused is not None:
            reason = judged.refused or "unknown task"
            if task is None:
                return Verdict(False, 401, None, "unauthenticated", reason)
            return await self._refuse_caller(
                call.door, call.target, call.request, reason, claims=claims
            )
        if judged.decision is None:
            problem = judged.problem or "the approval cannot be used"
            return await self._refuse_approval(task, call, judged.approval, problem)
        verdict = await self._record_decision(
            task, call, judged.decision, judged.approval
        )
        if not verdict.allowed:
            return verdict
        return await self._confirm(claims, verdict)

    def _judge(self, claims: TaskClaims, call: Call) -> _Judged:
        """Judge the call on what this process has folded, recording nothing."""
        try:
            task = self.service.known_task(claims.task)
        except TaskError as exc:
            return _Judged(None, refused=str(exc))
        refused = self._refusal(claims, task)
        if refused is not None:
            return _Judged(task, refused=refused)
        approval, problem = self._approval_for(task, call)
        if problem is not None:
            return _Judged(task, approval=approval, problem=problem)

        return _Judged(
            task, approval=approval, decision=self._decide(task, call, approval)
        )

    def _refusal(self, claims: TaskClaims, task: Task) -> str | None:
        state = task.state_at(_now())
        if state is not TaskState.ACTIVE:
            return f"task {task.id} is {state}"
        if self.service.authority.is_token_revoked(claims.jti):
            return f"token {claims.jti} for task {task.id} is revoked"
        return None

    def _decide(self, task: Task, call: Call, approval: Approval | None) -> Decision:
        refusal = UNCLASSIFIED.get(call.action)
        if refusal is not None:
            # Not a breach: nothing could be said about what the call would do.
            problem = call.request.get("problem")
            reason = f"{refusal}: {problem}" if problem else refusal
            return Decision(
                Outcome.DENY, reason, self.service.org.digest, task.scope_digest
            )
        roles = frozenset(approval.granted_roles) if approval else frozenset()
        request = Request(
            agent=task.agent,
            user=task.user,
            task=task.id,
            action=call.action,
            resource=call.resource,
            context=call.context,
            approvals=roles,
        )

        return self._engine(task).decide(request)

    def _engine(self, task: Task) -> Engine:
        org = self.service.org
        key = (org.digest, task.id, task.scope_digest)
        with self._lock:
            engine = self._engines.get(key)
            if engine is None:
                scope = self.service.scope_of(task)
                active = ActiveTask(task.id, task.agent, task.user, scope)
                previous = next(iter(self._engines.values()), None)
                engine = Engine(org, [active], previous=previous)
                self._engines[key] = engine
        return engine

    def _preview(self, task: Task) -> cedarpy.PolicySet:
        key = (self.service.org.digest, task.scope_digest)
        with self._lock:
            policies = self._previews.get(key)
        if policies is None:
            scope = self.service.scope_of(task)
            policies = self.service.org.policies.with_added_str(scope.cedar)
            with self._lock:
                self._previews[key] = policies
        return policies

    def _approval_for(
        self, task: Task, call: Call
    ) -> tuple[Approval | None, str | None]:
        if not call.approval:
            return None, None
        approval = self.service.authority.approval(call.approval)
        if approval is None or approval.task != task.id:
            return None, f"approval {call.approval} is not one of task {task.id}'s"
        if approval.request_digest != call.digest or approval.action != call.action:
            return approval, (
                f"approval {approval.id} was given for a different request; "
                "it releases only the exact call it names"
            )
        return approval, self._claim(approval)

    def _claim(self, approval: Approval) -> str | None:
        # Single use: the first call to present a granted approval holds it.
        state = approval.state_at(_now())
        if state is ApprovalState.PENDING:
            return f"approval {approval.id} is still waiting for an approver"
        if state is not ApprovalState.GRANTED:
            return f"approval {approval.id} is {state}"
        with self._lock:
            if approval.id in self._claimed:
                return f"approval {approval.id} has already been used"
            self._claimed.add(approval.id)
        return None

    # Recording

    async def _refuse_caller(
        self,
        door: str,
        target: str,
        request: Mapping[str, object],
        reason: str,
        *,
        claims: TaskClaims | None = None,
    ) -> Verdict:
        """Record a caller refused before any decision; answer 401 (503 unrecorded).

        A token that was genuine but may not be used now (``claims``) names its
        task, agent and user, so the attempt shows in the task's trace.
        """
        target, reason, scrubbed = cast(
            "list[Any]", self.scrub([target, reason, dict(request)])
        )
        fields: dict[str, Any] = {
            "door": door,
            "target": target,
            "reason": reason,
            "request": scrubbed,
        }
        if claims is not None:
            fields |= {"task": claims.task, "agent": claims.agent, "user": claims.user}
        entry = await self._record(kinds.AUTH_REFUSED, fields)
        status = 401 if entry is not None else 503
        task = claims.task if claims is not None else None

        return Verdict(False, status, entry, "unauthenticated", reason, task=task)

    async def _record_decision(
        self, task: Task, call: Call, decision: Decision, approval: Approval | None
    ) -> Verdict:
        approval_id = approval.id if approval else None
        if decision.outcome is Outcome.NEEDS_APPROVAL:
            approval_id = "apr_" + secrets.token_hex(8)
        fields = self._decision_fields(task, call, decision, approval_id)
        entry = await self._record(kinds.DECISION, fields)
        if entry is None:
            self._release(approval)
            return self._unavailable(task, call)
        if decision.outcome is Outcome.NEEDS_APPROVAL and approval_id:
            return await self._ask_approval(task, call, decision, entry, approval_id)
        if decision.outcome is Outcome.ALLOW:
            allowed = Verdict(
                True,
                200,
                entry,
                "allow",
                decision.reason,
                call.action,
                decision.policy_ids,
                approval_id,
                task=task.id,
            )
            if approval is not None:
                return await self._first_to_use(approval, allowed)
            return allowed
        self._release(approval)
        breach = (
            await self._breach(task, call, decision, entry)
            if decision.is_breach
            else None
        )

        return Verdict(
            False,
            403,
            entry,
            "deny",
            decision.reason,
            call.action,
            decision.policy_ids,
            approval_id,
            breach,
            task=task.id,
        )

    def _decision_fields(
        self, task: Task, call: Call, decision: Decision, approval: str | None
    ) -> dict[str, Any]:
        published = self.service.authority.published_policy()
        notes = {key: getattr(call, key) for key in NOTES if getattr(call, key)}
        # One pass over everything the call brought, names taken from its path or
        # tool included: one look at the vault.
        brought = [
            dict(call.context),
            dict(call.request),
            decision.reason,
            list(decision.errors),
            [call.target, call.action, call.resource, approval],
            *notes.values(),
        ]
        context, request, reason, errors, named, *noted = cast(
            "list[Any]", self.scrub(brought)
        )
        target, action, resource, approval = named
        fields: dict[str, Any] = {
            "task": task.id,
            "agent": task.agent,
            "user": task.user,
            "task_opened": task.opened,
            "scope": task.scope_digest,
            "scope_approved": task.approved,
            "scope_approver": task.approver,
            "door": call.door,
            "target": target,
            "action": action,
            "resource": resource,
            "context": context,
            "request": request,
            "request_digest": call.digest,
            "credential": call.credential,
            "outcome": decision.outcome.value,
            "reason": reason,
            "policies": list(decision.policy_ids),
            "policy_set": decision.policy_set,
            "policy_entry": published[0] if published else None,
            "errors": errors,
            "breach": decision.is_breach,
            "approval": approval,
            "reasoning": self.service.authority.pending_reasoning(task.id),
        }
        fields.update(zip(notes, noted, strict=True))

        return fields

    async def _first_to_use(self, approval: Approval, allowed: Verdict) -> Verdict:
        """Let the call go only if its decision is the approval's first use.

        Another process sharing the ledger may have released the same call a
        moment before: the ledger's order says whose decision came first.
        """
        authority = self.service.authority
        authority.sync()
        folded = authority.approval(approval.id)
        first = folded.used if folded is not None else None
        if first == allowed.entry:
            return allowed
        reason = f"approval {approval.id} was used first at entry {first}"
        await self.complete(
            allowed,
            status=None,
            size=0,
            digest=None,
            latency_us=0,
            error=f"not sent: {reason}",
        )

        return Verdict(
            False,
            409,
            allowed.entry,
            "deny",
            reason,
            allowed.action,
            allowed.policies,
            approval.id,
            task=allowed.task,
        )

    async def _confirm(self, claims: TaskClaims, allowed: Verdict) -> Verdict:
        """Let an allowed call go only if nothing before its decision ended it.

        The call was judged on what this process had folded. Once its decision is
        durable every entry before it is folded too (a commit after others'
        entries reads them first), so a revocation or quarantine that came first,
        from any process, is seen here, and the call is not sent.
        """
        task = self.service.known_task(claims.task)
        refused = self._refusal(claims, task)
        if refused is None:
            return allowed
        await self.complete(
            allowed,
            status=None,
            size=0,
            digest=None,
            latency_us=0,
            error=f"not sent: {refused}",
        )

        return Verdict(
            False,
            401,
            allowed.entry,
            "unauthenticated",
            refused,
            allowed.action,
            allowed.policies,
            allowed.approval,
            task=allowed.task,
        )

    async def _ask_approval(
        self, task: Task, call: Call, decision: Decision, entry: int, approval_id: str
    ) -> Verdict:
        expires = _now() + self.service.rules.approval_ttl
        fields = {
            "approval": approval_id,
            "task": task.id,
            "agent": task.agent,
            "user": task.user,
            "action": call.action,
            "resource": call.resource,
            "request_digest": call.digest,
            "context": self.scrub(dict(call.context)),
            "roles": list(decision.approvers),
            "policies": list(decision.policy_ids),
            "reason": str(self.scrub(decision.reason)),
            "expires": expires.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "decision": entry,
        }
        if await self._record(kinds.APPROVAL_REQUESTED, fields) is None:
            return self._unavailable(task, call)
        retry = f"retry with Proctor-Approval: {approval_id} once approved"
        reason = f"{decision.reason}; {retry}"

        return Verdict(
            False,
            428,
            entry,
            "needs_approval",
            reason,
            call.action,
            decision.policy_ids,
            approval_id,
            task=task.id,
        )

    async def _refuse_approval(
        self, task: Task, call: Call, approval: Approval | None, problem: str
    ) -> Verdict:
        waiting = (
            approval is not None and approval.state_at(_now()) is ApprovalState.PENDING
        )
        outcome = Outcome.NEEDS_APPROVAL if waiting else Outcome.DENY
        decision = Decision(
            outcome, problem, self.service.org.digest, task.scope_digest
        )
        fields = self._decision_fields(task, call, decision, call.approval)
        entry = await self._record(kinds.DECISION, fields)
        if entry is None:
            return self._unavailable(task, call)
        status = 428 if waiting else 409

        return Verdict(
            False,
            status,
            entry,
            outcome.value,
            problem,
            call.action,
            approval=call.approval,
            task=task.id,
        )

    async def _breach(
        self, task: Task, call: Call, decision: Decision, entry: int
    ) -> int | None:
        quarantine = self.service.rules.quarantine_on_breach
        action, resource, reason = cast(
            "list[Any]", self.scrub([call.action, call.resource, decision.reason])
        )
        fields = {
            "task": task.id,
            "agent": task.agent,
            "user": task.user,
            "decision": entry,
            "action": action,
            "resource": resource,
            "scope": task.scope_digest,
            "scope_entry": task.approved if task.approved is not None else task.opened,
            "policies": list(decision.policy_ids),
            "reason": reason,
            "quarantine": quarantine,
        }
        breach = await self._record(kinds.BREACH, fields)
        if breach is None:
            return None
        # Quarantine before anything slow: the task's next call must already fail.
        if quarantine:
            why = f"breach at entry {breach}: {action} is outside the scope"
            await asyncio.to_thread(
                self.service.quarantine, task.id, reason=why, breach=breach
            )
        self._alert(
            asyncio.create_task(self.alerts.breach({**fields, "entry": breach}))
        )
        return breach

    async def _record(
        self, kind: str, fields: Mapping[str, Any], *, hurried: bool = True
    ) -> int | None:
        try:
            receipt = await self.service.ledger.append_async(
                kind, fields, hurried=hurried
            )
        except (LedgerError, StoreError) as exc:
            log.error("ledger refused an entry type=%s error=%s", kind, exc)
            return None
        self.service.authority.observe(receipt.index)

        return receipt.index

    def _unavailable(self, task: Task, call: Call) -> Verdict:
        reason = "the ledger cannot record this call, so it was not sent"
        return Verdict(
            False, 503, None, "unavailable", reason, call.action, task=task.id
        )

    def _alert(self, sending: asyncio.Task[None]) -> None:
        # Keep a reference until the webhook answers, so the task is not collected.
        self._alerts.add(sending)
        sending.add_done_callback(self._alerts.discard)

    def _release(self, approval: Approval | None) -> None:
        if approval is not None:
            with self._lock:
                self._claimed.discard(approval.id)

    async def _wait_for(self, approval_id: str, wait: float) -> bool:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        while loop.time() < deadline:
            await asyncio.sleep(WAIT_STEP)
            try:
                approval = self.service.require_approval(approval_id)
            except (TaskError, PolicyError):
                return False
            state = approval.state_at(_now())
            if state is ApprovalState.GRANTED:
                return True
            if state is not ApprovalState.PENDING:
                return False
        return False


def _now() -> datetime:
    return datetime.now(UTC)
