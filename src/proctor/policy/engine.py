"""Decisions: Cedar over the organisation's policies and one task's scope, giving
allow, deny or needs-approval with the determining policies and the digests in force.

The Cedar model. The principal is ``Proctor::Agent::"<agent>"``; the engine adds an
entity for each active task's agent unless ``entities.json`` already declares it
(with its groups). The action and resource are the classified call's uids, e.g.
``Payments::Action::"CreatePayment"`` on ``Payments::Account::"ops"``. The context
is what the call carries (``amount``, ``vendor``, ``args`` for tool arguments, ...)
plus three attributes Proctor sets and a call may not: ``task`` and ``user`` (ids,
as strings) and ``approved`` (a bool). The schema types all of it, so a request
that does not match it (a missing field, a tool argument shaped like a Cedar
escape) is refused by Cedar and denied.

Each task is decided against its own policy set, the organisation's policies plus
that task's scope, so one task's scope can never permit another task's call. A call
is allowed only if the scope permits it and no organisation policy forbids it.
A call the scope does not permit (even when it is granted every approval) is a
breach. Anything but a Cedar Allow with no errors denies, and the decision says why:
a Cedar error, a policy that fails to evaluate, an unknown principal or task, an
agent or user that is not the task's, a reserved context field, an empty scope.

Approvals: a policy an approval can satisfy reads ``context.approved`` and names
the approver role in ``@approval("role")``, on a permit (``when { context.approved
&& ... }``: the scope allows the call once approved) or on an organisation forbid
(``unless { context.approved }``: the organisation requires approval). A request is
first decided without approval; if it is denied but would be allowed with
``context.approved`` true, the decision is needs-approval naming the roles still
missing: every approval-gated forbid's role, and one of the approval-gated permits'
roles. ``Request.approvals`` holds the roles that approved this exact request (the
approvals module binds them to the request digest); once they cover the roles, the
request is allowed.

Decisions reuse Cedar handles parsed once per policy set and set of active tasks
(:class:`EngineCache`); a decision only builds the request. An allow costs one Cedar
evaluation, a deny two or three.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum

import cedarpy

from proctor.errors import PolicyError
from proctor.policy.cedar import (
    AGENT_TYPE,
    RESERVED_CONTEXT,
    inspect_set,
    positions,
    rename_positions,
    require_clean,
    uid_json,
)
from proctor.policy.org import OrgPolicies, agent_entity
from proctor.policy.scope import Scope

_log = logging.getLogger(__name__)

_FAILED = "a policy failed to evaluate"

EngineKey = tuple[str, frozenset[tuple[str, str, str, str]]]


class Outcome(StrEnum):
    """What a decision lets the call do."""

    ALLOW = "allow"
    DENY = "deny"
    NEEDS_APPROVAL = "needs_approval"


@dataclass(frozen=True, slots=True)
class Request:
    """One classified call to decide, as the gateway saw it.

    ``agent``, ``user`` and ``task`` come from the verified task token; ``action``
    and ``resource`` are Cedar entity uids (``Payments::Action::"CreatePayment"``);
    ``context`` is what the call carries; ``approvals`` are the roles whose valid
    approval is bound to this exact request.
    """

    agent: str
    user: str
    task: str
    action: str
    resource: str
    context: Mapping[str, object] = field(default_factory=dict)
    approvals: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class Decision:
    """The outcome of one request, with everything needed to explain it later.

    ``policy_ids`` are the determining policies' @id: the permits for an allow, the
    forbids for a deny, the approval-gated policies for needs-approval.
    ``policy_set`` is the organisation policy set's digest and ``scope`` the task
    scope's digest (None when no scope was found): together they name exactly the
    Cedar text that was evaluated. ``is_breach`` says the call is outside the task's
    scope. ``approvers`` are the roles still to approve (needs-approval only).
    """

    outcome: Outcome
    reason: str
    policy_set: str
    scope: str | None = None
    policy_ids: tuple[str, ...] = ()
    errors: tuple[str, ...] = ()
    is_breach: bool = False
    approvers: tuple[str, ...] = ()

    @property
    def is_allowed(self) -> bool:
        """Tell whether the call may go ahead now."""
        return self.outcome is Outcome.ALLOW


@dataclass(frozen=True, slots=True)
class ActiveTask:
    """A task whose scope is in force: its id, agent, user and approved scope."""

    task: str
    agent: str
    user: str
    scope: Scope


@dataclass(frozen=True, slots=True)
class _Sets:
    """One scope's policy sets, parsed once: with the organisation's and alone."""

    scope: Scope
    full: cedarpy.PolicySet
    full_ids: Mapping[str, str]
    scope_only: cedarpy.PolicySet
    scope_ids: Mapping[str, str]
    roles: Mapping[str, str]


@dataclass(frozen=True, slots=True)
class _Result:
    """One Cedar evaluation with policies named by @id."""

    decision: cedarpy.Decision
    policies: tuple[str, ...]
    errors: tuple[str, ...]

    @property
    def is_clean_allow(self) -> bool:
        return self.decision is cedarpy.Decision.Allow and not self.errors


def engine_key(org: OrgPolicies, tasks: Iterable[ActiveTask]) -> EngineKey:
    """Return what an engine depends on: the org digest and each task's scope."""
    return org.digest, frozenset(
        (task.task, task.agent, task.user, task.scope.digest) for task in tasks
    )


class Engine:
    """Decides requests for one organisation policy set and set of active tasks."""

    def __init__(
        self,
        org: OrgPolicies,
        tasks: Iterable[ActiveTask] = (),
        *,
        previous: Engine | None = None,
    ) -> None:
        """Parse each active scope beside ``org``; raise PolicyError if one is unusable.

        Scopes already parsed by ``previous`` for the same organisation digest are
        reused rather than parsed again.
        """
        tasks = tuple(tasks)
        self.org = org
        self.key = engine_key(org, tasks)
        self._tasks = _by_task(tasks)
        reuse = previous._sets if previous and previous.org.digest == org.digest else {}
        self._sets: dict[str, _Sets] = {}
        for task in tasks:
            digest = task.scope.digest
            if digest not in self._sets:
                self._sets[digest] = reuse.get(digest) or _compile(org, task.scope)
        self._agents = org.agents | {task.agent for task in tasks}
        self._entities = _entities(org, self._agents - org.agents)
        _log.info(
            "policy engine built policy_set=%s tasks=%d scopes=%d",
            org.digest,
            len(tasks),
            len(self._sets),
        )

    def decide(self, request: Request) -> Decision:
        """Decide ``request``; never raise: whatever cannot be decided is denied."""
        checked = self._check(request)
        if isinstance(checked, Decision):
            return checked

        return self._judge(request, checked)

    def _check(self, request: Request) -> Decision | _Sets:
        if request.agent not in self._agents:
            principal = f"{AGENT_TYPE}::{json.dumps(request.agent)}"
            return self._deny(None, f"unknown principal {principal}")
        task = self._tasks.get(request.task)
        if task is None:
            return self._deny(None, f"task {request.task!r} has no active scope")

        sets = self._sets[task.scope.digest]
        refusal = _refusal(request, task, sets)
        return sets if refusal is None else self._deny(sets, refusal)

    def _judge(self, request: Request, sets: _Sets) -> Decision:
        unapproved_request = _cedar_request(request, approved=False)
        unapproved = self._run(sets.full, sets.full_ids, unapproved_request)
        if unapproved.is_clean_allow:
            return self._allow(sets, unapproved.policies, "")
        if unapproved.decision is cedarpy.Decision.NoDecision:
            reason = "cedar could not evaluate the request"
            return self._deny(sets, reason, errors=unapproved.errors)

        return self._judge_denied(request, sets, unapproved)

    def _judge_denied(
        self, request: Request, sets: _Sets, unapproved: _Result
    ) -> Decision:
        # The scope alone, granted every approval, tells a breach from a refusal.
        approved_request = _cedar_request(request, approved=True)
        generous = self._run(sets.scope_only, sets.scope_ids, approved_request)
        if generous.decision is not cedarpy.Decision.Allow and not generous.errors:
            reason = f"outside the scope of task {request.task!r}"
            return self._deny(sets, reason, unapproved.policies, breach=True)
        errors = unapproved.errors + generous.errors
        if errors:
            return self._deny(sets, _FAILED, errors=errors)

        approved = self._run(sets.full, sets.full_ids, approved_request)
        if not approved.is_clean_allow:
            forbids = approved.policies
            reason = (
                _FAILED if approved.errors else f"forbidden by {', '.join(forbids)}"
            )
            return self._deny(sets, reason, forbids, errors=approved.errors)
        return self._approval(request, sets, unapproved, approved)

    def _approval(
        self, request: Request, sets: _Sets, unapproved: _Result, approved: _Result
    ) -> Decision:
        # Approval changed the answer: the forbids that fired without it are lifted
        # by their roles, and the permits that needed it each name an alternative.
        gates = unapproved.policies
        if any(policy not in sets.roles for policy in gates):
            return self._deny(sets, "an approval-gated policy names no role", gates)
        required = {sets.roles[policy] for policy in gates}
        permits = approved.policies
        gated_permits = tuple(policy for policy in permits if policy in sets.roles)
        alternatives = (
            {sets.roles[policy] for policy in gated_permits}
            if len(gated_permits) == len(permits)
            else set()
        )

        missing = required - request.approvals
        if alternatives and not alternatives & (request.approvals | required):
            missing.add(min(alternatives))
        if not missing:
            by = ", ".join(sorted(request.approvals & (required | alternatives)))
            return self._allow(sets, permits, f" with approval by {by}")
        approvers = tuple(sorted(missing))
        return Decision(
            outcome=Outcome.NEEDS_APPROVAL,
            reason=f"needs approval by {', '.join(approvers)}",
            policy_set=self.org.digest,
            scope=sets.scope.digest,
            policy_ids=gates + gated_permits,
            approvers=approvers,
        )

    def _run(
        self,
        policies: cedarpy.PolicySet,
        ids: Mapping[str, str],
        request: dict[str, object],
    ) -> _Result:
        try:
            result = cedarpy.is_authorized(
                request, policies, self._entities, self.org.schema
            )
        # Fail closed on anything the binding raises, e.g. a context value that is
        # not JSON data; Cedar itself reports problems as NoDecision.
        except Exception as exc:
            message = f"request is not cedar data: {type(exc).__name__}: {exc}"
            return _Result(cedarpy.Decision.NoDecision, (), (message,))

        diagnostics = result.diagnostics
        return _Result(
            decision=result.decision,
            policies=tuple(ids.get(p, p) for p in diagnostics.reasons),
            errors=tuple(rename_positions(e, ids) for e in diagnostics.errors),
        )

    def _allow(self, sets: _Sets, policies: tuple[str, ...], suffix: str) -> Decision:
        return Decision(
            outcome=Outcome.ALLOW,
            reason=f"allowed by {', '.join(policies)}{suffix}",
            policy_set=self.org.digest,
            scope=sets.scope.digest,
            policy_ids=policies,
        )

    def _deny(
        self,
        sets: _Sets | None,
        reason: str,
        policies: tuple[str, ...] = (),
        *,
        errors: tuple[str, ...] = (),
        breach: bool = False,
    ) -> Decision:
        return Decision(
            outcome=Outcome.DENY,
            reason=reason,
            policy_set=self.org.digest,
            scope=None if sets is None else sets.scope.digest,
            policy_ids=policies,
            errors=errors,
            is_breach=breach,
        )


class EngineCache:
    """Keeps the engine for the current policy set and active tasks, rebuilt on change.

    Call :meth:`get` when the organisation's policies are published or a task's
    scope opens or closes; between changes, decide with the engine it returned.
    """

    def __init__(self) -> None:
        self._engine: Engine | None = None
        self._lock = threading.Lock()

    def get(self, org: OrgPolicies, tasks: Iterable[ActiveTask]) -> Engine:
        """Return the engine for ``org`` and ``tasks``; raise PolicyError."""
        tasks = tuple(tasks)
        key = engine_key(org, tasks)
        with self._lock:
            if self._engine is None or self._engine.key != key:
                self._engine = Engine(org, tasks, previous=self._engine)
            return self._engine


def _refusal(request: Request, task: ActiveTask, sets: _Sets) -> str | None:
    if request.agent != task.agent:
        return f"agent {request.agent!r} is not the agent of task {task.task!r}"
    if request.user != task.user:
        return f"user {request.user!r} did not start task {task.task!r}"
    reserved = sorted(RESERVED_CONTEXT & request.context.keys())
    if reserved:
        return f"context field {reserved[0]} is set by proctor, not by the call"
    if len(sets.scope_only) == 0:
        return f"the scope of task {task.task!r} is empty"
    return None


def _by_task(tasks: tuple[ActiveTask, ...]) -> dict[str, ActiveTask]:
    index: dict[str, ActiveTask] = {}
    for task in tasks:
        if task.task in index:
            raise PolicyError(f"task {task.task!r} is active twice")
        index[task.task] = task
    return index


def _compile(org: OrgPolicies, scope: Scope) -> _Sets:
    require_clean(org.check_scope(scope))

    # Only the scope is parsed: the organisation's handle is cloned, not re-read.
    full = org.policies.with_added_str(scope.cedar)
    scope_only = cedarpy.PolicySet.from_str(scope.cedar)
    full_infos = inspect_set(full)
    return _Sets(
        scope=scope,
        full=full,
        full_ids=positions(full_infos),
        scope_only=scope_only,
        scope_ids=positions(inspect_set(scope_only)),
        roles={info.id: info.approval for info in full_infos if info.approval},
    )


def _entities(org: OrgPolicies, agents: Iterable[str]) -> cedarpy.Entities:
    delta = json.dumps([agent_entity(agent) for agent in sorted(agents)])
    try:
        return org.entities.with_added_json_str(delta, org.schema)
    except ValueError as exc:
        raise PolicyError(f"cannot add the active tasks' agents: {exc}") from exc


def _cedar_request(request: Request, *, approved: bool) -> dict[str, object]:
    context = {
        **request.context,
        "task": request.task,
        "user": request.user,
        "approved": approved,
    }
    return {
        "principal": {"type": AGENT_TYPE, "id": request.agent},
        "action": uid_json(request.action),
        "resource": uid_json(request.resource),
        "context": context,
    }
