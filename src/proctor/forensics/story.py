"""Stories told from entries alone: a task's events in order, and everything behind
one decision, as frozen values that a terminal and a web page render alike.

Nothing here reads a store: the caller hands over the entries (decoded), and every
fact in a story names the entry index it comes from.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from proctor import kinds
from proctor.forensics.proof import Proof
from proctor.tasks.state import ENDED, TaskState

Entry = Mapping[str, Any]

MAX_TEXT = 160
"""Characters of free text (requests, reasons, reasoning) kept in a summary line."""

ALLOW, DENY, HELD, BREACH = "allow", "deny", "held", "breach"
APPROVAL, REASONING, TASK, END, OUTCOME, INFO = (
    "approval",
    "reasoning",
    "task",
    "end",
    "outcome",
    "info",
)
"""Tones: how an event reads at a glance (and which colour it gets)."""


@dataclass(frozen=True)
class Event:
    """One entry of a task's story, summed up in a line."""

    index: int
    time: str
    type: str
    tone: str
    summary: str
    links: tuple[int, ...] = ()
    entry: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class Signoff:
    """A person's answer to a scope or a single call."""

    index: int
    time: str
    approver: str
    granted: bool
    role: str | None = None
    reason: str | None = None


@dataclass(frozen=True)
class TaskStory:
    """A task from the user's request to its end, every event in ledger order."""

    task: str
    state: str
    user: str | None
    agent: str | None
    request: str | None
    opened: int | None
    expires: str | None
    scope: Mapping[str, Any]
    roles: tuple[str, ...]
    signoffs: tuple[Signoff, ...]
    ended: int | None
    counts: Mapping[str, int]
    events: tuple[Event, ...]


@dataclass(frozen=True)
class TaskSummary:
    """The task behind a decision: who asked, in their words, and the scope."""

    id: str | None
    user: str | None
    agent: str | None
    request: str | None
    opened: int | None
    opened_time: str | None
    scope: str | None
    scope_actions: tuple[str, ...]
    scope_approver: str | None
    scope_approval: Signoff | None


@dataclass(frozen=True)
class Reasoning:
    """A reasoning step the agent recorded before the call."""

    index: int
    time: str
    text: str
    source: str | None = None
    trace: str | None = None
    tool_call: str | None = None


@dataclass(frozen=True)
class PolicySet:
    """The organisation policy set in force, as its ``policy.published`` entry says."""

    index: int
    time: str
    digest: str | None
    by: str | None
    files: tuple[str, ...]
    matches: bool
    """Whether the decision's policy-set digest is this entry's."""


@dataclass(frozen=True)
class ApprovalStory:
    """One call's approval: asked of whom and why, answered by whom, used where."""

    id: str
    state: str
    requested: int | None
    requested_time: str | None
    roles: tuple[str, ...]
    reason: str | None
    expires: str | None
    context: Mapping[str, Any]
    request_digest: str | None
    held: int | None
    released: int | None
    signoffs: tuple[Signoff, ...]
    refusals: tuple[int, ...]
    binds: bool | None
    """Whether the approval names this decision's exact request digest."""


@dataclass(frozen=True)
class Completion:
    """What came back from upstream for an allowed call."""

    index: int
    time: str
    status: int | None
    size: int | None
    digest: str | None
    latency_us: int | None
    error: str | None


@dataclass(frozen=True)
class BreachRecord:
    """A breach flagged on a decision, and the quarantine it caused."""

    index: int
    time: str
    reason: str | None
    scope: str | None
    quarantine: bool
    quarantined: int | None


@dataclass(frozen=True)
class DecisionStory:
    """Everything behind one call, each part naming the entry it comes from."""

    index: int
    time: str
    outcome: str
    reason: str | None
    breach: bool
    action: str | None
    resource: str | None
    door: str | None
    target: str | None
    context: Mapping[str, Any]
    request: Mapping[str, Any]
    request_digest: str | None
    credential: str | None
    policies: tuple[str, ...]
    policy_set: str | None
    policy: PolicySet | None
    errors: tuple[str, ...]
    task: TaskSummary
    reasoning: tuple[Reasoning, ...]
    approval: ApprovalStory | None
    completion: Completion | None
    breach_record: BreachRecord | None
    evidence: Mapping[str, int]
    """The entries that prove this story, by what each one records."""
    proofs: tuple[Proof, ...] = ()
    asked: int | None = None
    """The entry asked about, when it was not the decision itself."""


# A task's story.


def task_story(task: str, found: Sequence[Entry], *, now: datetime) -> TaskStory:
    """Tell the story of ``task`` from its entries, in ledger order."""
    ordered = sorted(found, key=lambda entry: int(entry["index"]))
    opened = _first(ordered, kinds.TASK_OPENED)
    signoffs = tuple(
        _signoff(entry, granted=entry["type"] == kinds.TASK_APPROVED)
        for entry in ordered
        if entry["type"] in (kinds.TASK_APPROVED, kinds.TASK_REJECTED)
    )
    answers = _approval_answers(ordered)
    events = tuple(event(entry, answers) for entry in ordered)
    state, ended = _state(ordered, opened, now)
    scope = dict(opened.get("scope") or {}) if opened else {}
    approval = opened.get("approval") if opened else None

    return TaskStory(
        task=task,
        state=state,
        user=_str(opened, "user"),
        agent=_str(opened, "agent"),
        request=_str(opened, "request"),
        opened=int(opened["index"]) if opened else None,
        expires=_str(opened, "expires"),
        scope={key: scope.get(key) for key in ("format", "digest", "actions", "text")},
        roles=tuple(approval.get("roles", ())) if isinstance(approval, dict) else (),
        signoffs=signoffs,
        ended=ended,
        counts=_counts(ordered),
        events=events,
    )


def _state(
    ordered: Sequence[Entry], opened: Entry | None, now: datetime
) -> tuple[str, int | None]:
    # The same folding as proctor.tasks.state: the first ending stands.
    ending = {
        kinds.TASK_REJECTED: TaskState.REJECTED,
        kinds.TASK_REVOKED: TaskState.REVOKED,
        kinds.TASK_CLOSED: TaskState.CLOSED,
        kinds.TASK_QUARANTINED: TaskState.QUARANTINED,
    }
    approval = opened.get("approval") if opened else None
    waits = isinstance(approval, dict) and bool(approval.get("roles"))
    state = TaskState.PENDING if waits else TaskState.ACTIVE
    for entry in ordered:
        kind = entry["type"]
        if kind == kinds.TASK_APPROVED and state not in ENDED:
            state = TaskState.ACTIVE
        elif kind in ending and state not in ENDED:
            return ending[kind].value, int(entry["index"])
    expires = _str(opened, "expires")
    if expires and now >= datetime.fromisoformat(expires):
        return TaskState.EXPIRED.value, None

    return state.value, None


def _counts(ordered: Sequence[Entry]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for entry in ordered:
        kind = entry["type"]
        key = f"decision.{entry.get('outcome')}" if kind == kinds.DECISION else kind
        counts[key] = counts.get(key, 0) + 1

    return dict(sorted(counts.items()))


def _approval_answers(ordered: Iterable[Entry]) -> dict[str, list[Signoff]]:
    answers: dict[str, list[Signoff]] = {}
    for entry in ordered:
        if entry["type"] in (kinds.APPROVAL_GRANTED, kinds.APPROVAL_DENIED):
            granted = entry["type"] == kinds.APPROVAL_GRANTED
            answers.setdefault(str(entry.get("approval")), []).append(
                _signoff(entry, granted=granted)
            )

    return answers


def event(entry: Entry, answers: Mapping[str, Sequence[Signoff]]) -> Event:
    """Sum up one entry as a line of its task's story."""
    describe = _DESCRIBE.get(str(entry["type"]), _describe_other)
    tone, summary, links = describe(entry, answers)

    return Event(
        index=int(entry["index"]),
        time=str(entry["time"]),
        type=str(entry["type"]),
        tone=tone,
        summary=summary,
        links=tuple(link for link in links if isinstance(link, int)),
        entry=entry,
    )


Described = tuple[str, str, Sequence[object]]


def _describe_opened(entry: Entry, _: Mapping[str, Sequence[Signoff]]) -> Described:
    scope = entry.get("scope") or {}
    approval = entry.get("approval") or {}
    roles = ", ".join(approval.get("roles") or ()) or "nobody"
    actions = ", ".join(_short(action) for action in scope.get("actions") or ())
    summary = (
        f"task opened by {entry.get('by')} for {entry.get('user')}, agent "
        f"{entry.get('agent')}: {_quote(entry.get('request'))} · scope "
        f"{_digest(scope.get('digest'))} ({actions or 'no actions'}) · "
        f"scope needs {roles}"
    )
    return TASK, summary, ()


def _describe_approved(entry: Entry, _: Mapping[str, Sequence[Signoff]]) -> Described:
    summary = (
        f"scope approved by {entry.get('approver')} ({entry.get('role')}): "
        f"{_quote(entry.get('reason'))}"
    )
    return APPROVAL, summary, ()


def _describe_ended(entry: Entry, _: Mapping[str, Sequence[Signoff]]) -> Described:
    kind = str(entry["type"])
    who = entry.get("approver") or entry.get("by")
    verb = {
        kinds.TASK_REJECTED: "scope rejected",
        kinds.TASK_REVOKED: "task revoked",
        kinds.TASK_CLOSED: "task closed",
    }[kind]
    tone = DENY if kind == kinds.TASK_REJECTED else END
    return tone, f"{verb} by {who}: {_quote(entry.get('reason'))}", ()


def _describe_quarantined(
    entry: Entry, _: Mapping[str, Sequence[Signoff]]
) -> Described:
    summary = f"task quarantined: {_text(entry.get('reason'))}"
    return BREACH, summary, (entry.get("breach"),)


def _describe_token(entry: Entry, _: Mapping[str, Sequence[Signoff]]) -> Described:
    jti = str(entry.get("jti") or "")[:8]
    if entry["type"] == kinds.TOKEN_REVOKED:
        summary = (
            f"token {jti} revoked by {entry.get('by')}: {_quote(entry.get('reason'))}"
        )
        return END, summary, ()
    return (
        INFO,
        f"token {jti} issued by {entry.get('by')}, expires {entry.get('expires')}",
        (),
    )


def _describe_reasoning(entry: Entry, _: Mapping[str, Sequence[Signoff]]) -> Described:
    return (
        REASONING,
        f"reasoning ({entry.get('source')}): {_quote(entry.get('text'))}",
        (),
    )


def _describe_decision(
    entry: Entry, answers: Mapping[str, Sequence[Signoff]]
) -> Described:
    outcome = entry.get("outcome")
    call = f"{_short(entry.get('action'))}{_context(entry.get('context'))}"
    policies = ", ".join(entry.get("policies") or ()) or "no policy"
    approval = entry.get("approval")
    links: list[object] = list(entry.get("reasoning") or ())
    if outcome == "allow":
        summary = f"allowed {call} · by {policies}"
        if approval:
            signed = [s for s in answers.get(str(approval), ()) if s.granted]
            who = ", ".join(f"{s.approver} #{s.index}" for s in signed) or "?"
            summary += f" · approval {approval} granted by {who}"
            links.extend(s.index for s in signed)
        return ALLOW, summary, links
    if outcome == "needs_approval":
        summary = f"held {call} for approval {approval}: {_text(entry.get('reason'))}"
        return HELD, summary, links
    tone = BREACH if entry.get("breach") is True else DENY
    verb = "denied (breach)" if tone == BREACH else "denied"
    summary = f"{verb} {call}: {_text(entry.get('reason'))} · by {policies}"

    return tone, summary, links


def _describe_requested(entry: Entry, _: Mapping[str, Sequence[Signoff]]) -> Described:
    roles = ", ".join(entry.get("roles") or ())
    summary = (
        f"approval {entry.get('approval')} asked of {roles} for "
        f"{_short(entry.get('action'))}{_context(entry.get('context'))}, expires "
        f"{entry.get('expires')}"
    )
    return HELD, summary, (entry.get("decision"),)


def _describe_answer(entry: Entry, _: Mapping[str, Sequence[Signoff]]) -> Described:
    if entry["type"] == kinds.APPROVAL_GRANTED:
        summary = (
            f"approval {entry.get('approval')} granted by {entry.get('approver')} "
            f"({entry.get('role')}): {_quote(entry.get('reason'))}"
        )
        return APPROVAL, summary, ()
    summary = (
        f"approval {entry.get('approval')} denied by {entry.get('approver')}: "
        f"{_quote(entry.get('reason'))}"
    )
    return DENY, summary, ()


def _describe_breach(entry: Entry, _: Mapping[str, Sequence[Signoff]]) -> Described:
    then = ", task quarantined" if entry.get("quarantine") else ""
    summary = (
        f"BREACH: {_short(entry.get('action'))} is outside scope "
        f"{_digest(entry.get('scope'))} (decision #{entry.get('decision')}){then}"
    )
    return BREACH, summary, (entry.get("decision"),)


def _describe_completed(entry: Entry, _: Mapping[str, Sequence[Signoff]]) -> Described:
    decision = entry.get("decision")
    if entry.get("error"):
        summary = f"call of #{decision} failed: {_text(entry.get('error'))}"
        return DENY, summary, (decision,)
    latency = entry.get("latency_us")
    millis = f"{latency / 1000:.1f} ms" if isinstance(latency, int) else "?"
    summary = (
        f"call of #{decision} returned {entry.get('status')}, "
        f"{entry.get('size')} bytes in {millis}"
    )

    return OUTCOME, summary, (decision,)


def _describe_refused(entry: Entry, _: Mapping[str, Sequence[Signoff]]) -> Described:
    request = entry.get("request")
    seen = request if isinstance(request, Mapping) else {}
    call = " ".join(str(seen[key]) for key in ("method", "path") if seen.get(key))
    summary = f"refused {call or entry.get('target')}: {_text(entry.get('reason'))}"
    return DENY, summary, ()


def _describe_other(entry: Entry, _: Mapping[str, Sequence[Signoff]]) -> Described:
    fields = {
        key: value
        for key, value in entry.items()
        if key not in ("index", "time", "type")
    }
    return INFO, f"{entry['type']}{_context(fields)}", ()


_DESCRIBE = {
    kinds.TASK_OPENED: _describe_opened,
    kinds.TASK_APPROVED: _describe_approved,
    kinds.TASK_REJECTED: _describe_ended,
    kinds.TASK_REVOKED: _describe_ended,
    kinds.TASK_CLOSED: _describe_ended,
    kinds.TASK_QUARANTINED: _describe_quarantined,
    kinds.TOKEN_ISSUED: _describe_token,
    kinds.TOKEN_REVOKED: _describe_token,
    kinds.REASONING: _describe_reasoning,
    kinds.DECISION: _describe_decision,
    kinds.APPROVAL_REQUESTED: _describe_requested,
    kinds.APPROVAL_GRANTED: _describe_answer,
    kinds.APPROVAL_DENIED: _describe_answer,
    kinds.BREACH: _describe_breach,
    kinds.CALL_COMPLETED: _describe_completed,
    kinds.AUTH_REFUSED: _describe_refused,
}


# One decision's story.


def decision_story(
    decision: Entry,
    cited: Mapping[int, Entry],
    about: Sequence[Entry],
    *,
    proofs: tuple[Proof, ...] = (),
    asked: int | None = None,
) -> DecisionStory:
    """Tell everything behind one decision entry.

    ``cited`` holds the entries the decision names by index (task opened, scope
    approved, reasoning, policy set); ``about`` the entries that name it or its
    approval (completion, breach, quarantine, approval requests and answers, other
    decisions that presented the same approval).
    """
    index = int(decision["index"])
    approval_id = decision.get("approval")
    approval = (
        approval_story(str(approval_id), decision, about) if approval_id else None
    )
    task = _task_summary(decision, cited)
    reasoning = _reasoning(reasoned(decision, about), cited)
    policy = _policy(decision, cited)
    completion = _completion(index, about)
    breach = _breach_record(index, about)

    return DecisionStory(
        index=index,
        time=str(decision["time"]),
        outcome=str(decision.get("outcome")),
        reason=_str(decision, "reason"),
        breach=decision.get("breach") is True,
        action=_str(decision, "action"),
        resource=_str(decision, "resource"),
        door=_str(decision, "door"),
        target=_str(decision, "target"),
        context=dict(decision.get("context") or {}),
        request=dict(decision.get("request") or {}),
        request_digest=_str(decision, "request_digest"),
        credential=_str(decision, "credential"),
        policies=tuple(decision.get("policies") or ()),
        policy_set=_str(decision, "policy_set"),
        policy=policy,
        errors=tuple(str(error) for error in decision.get("errors") or ()),
        task=task,
        reasoning=reasoning,
        approval=approval,
        completion=completion,
        breach_record=breach,
        evidence=_evidence(
            index,
            task=task,
            policy=policy,
            reasoning=reasoning,
            approval=approval,
            completion=completion,
            breach=breach,
        ),
        proofs=proofs,
        asked=asked if asked != index else None,
    )


def _evidence(
    index: int,
    *,
    task: TaskSummary,
    policy: PolicySet | None,
    reasoning: Sequence[Reasoning],
    approval: ApprovalStory | None,
    completion: Completion | None,
    breach: BreachRecord | None,
) -> dict[str, int]:
    named: dict[str, int | None] = {
        "task opened": task.opened,
        "scope approved": task.scope_approval.index if task.scope_approval else None,
        "policy set": policy.index if policy else None,
    }
    for number, step in enumerate(reasoning, 1):
        named[f"reasoning {number}"] = step.index
    if approval is not None:
        named["held"] = approval.held if approval.held != index else None
        named["approval asked"] = approval.requested
        for signoff in approval.signoffs:
            verb = "approval granted" if signoff.granted else "approval denied"
            named[f"{verb} by {signoff.approver}"] = signoff.index
        named["released"] = approval.released if approval.released != index else None
    named["decision"] = index
    named["outcome"] = completion.index if completion else None
    if breach is not None:
        named["breach"] = breach.index
        named["quarantine"] = breach.quarantined

    return {what: at for what, at in named.items() if at is not None}


def reasoned(decision: Entry, about: Sequence[Entry]) -> Entry:
    """The decision whose reasoning led to this call: itself, or for a call released
    by an approval without reasoning of its own, the call that was first held."""
    approval = decision.get("approval")
    if decision.get("reasoning") or not approval:
        return decision
    asked = next(
        (
            entry
            for entry in about
            if entry["type"] == kinds.APPROVAL_REQUESTED
            and entry.get("approval") == approval
        ),
        None,
    )
    held = asked.get("decision") if asked else None
    first = next(
        (
            entry
            for entry in about
            if entry["type"] == kinds.DECISION and entry["index"] == held
        ),
        None,
    )

    return first if first is not None else decision


def cited_indexes(decision: Entry) -> set[int]:
    """The entries a decision names by index, which its story reads."""
    named = [
        decision.get("task_opened"),
        decision.get("scope_approved"),
        decision.get("policy_entry"),
        *(decision.get("reasoning") or ()),
    ]
    return {
        value
        for value in named
        if isinstance(value, int) and not isinstance(value, bool)
    }


def approval_story(
    approval: str, decision: Entry, about: Sequence[Entry]
) -> ApprovalStory:
    """Tell one approval's story from the entries that name it."""
    named = sorted(
        (entry for entry in about if entry.get("approval") == approval),
        key=lambda entry: int(entry["index"]),
    )
    requested = _first(named, kinds.APPROVAL_REQUESTED)
    signoffs = tuple(
        _signoff(entry, granted=entry["type"] == kinds.APPROVAL_GRANTED)
        for entry in named
        if entry["type"] in (kinds.APPROVAL_GRANTED, kinds.APPROVAL_DENIED)
    )
    decisions = [entry for entry in named if entry["type"] == kinds.DECISION]
    held = requested.get("decision") if requested else None
    released = next(
        (int(entry["index"]) for entry in decisions if entry.get("outcome") == "allow"),
        None,
    )
    refusals = tuple(
        int(entry["index"])
        for entry in decisions
        if entry.get("outcome") != "allow" and entry["index"] != held
    )
    roles = tuple(requested.get("roles") or ()) if requested else ()
    digest = _str(requested, "request_digest")

    return ApprovalStory(
        id=approval,
        state=_approval_state(roles, signoffs, released),
        requested=int(requested["index"]) if requested else None,
        requested_time=_str(requested, "time"),
        roles=roles,
        reason=_str(requested, "reason"),
        expires=_str(requested, "expires"),
        context=dict(requested.get("context") or {}) if requested else {},
        request_digest=digest,
        held=held if isinstance(held, int) else None,
        released=released,
        signoffs=signoffs,
        refusals=refusals,
        binds=None if digest is None else digest == decision.get("request_digest"),
    )


def _approval_state(
    roles: Sequence[str], signoffs: Sequence[Signoff], released: int | None
) -> str:
    if any(not signoff.granted for signoff in signoffs):
        return "denied"
    if released is not None:
        return "used"
    granted = {signoff.role for signoff in signoffs}
    if signoffs and set(roles) <= granted:
        return "granted"

    return "pending"


def _task_summary(decision: Entry, cited: Mapping[int, Entry]) -> TaskSummary:
    opened = _cited(decision, "task_opened", cited)
    approved = _cited(decision, "scope_approved", cited)
    scope = opened.get("scope") if opened else None
    scope = scope if isinstance(scope, dict) else {}

    return TaskSummary(
        id=_str(decision, "task"),
        user=_str(decision, "user"),
        agent=_str(decision, "agent"),
        request=_str(opened, "request"),
        opened=_int(decision.get("task_opened")),
        opened_time=_str(opened, "time"),
        scope=_str(decision, "scope"),
        scope_actions=tuple(scope.get("actions") or ()),
        scope_approver=_str(decision, "scope_approver"),
        scope_approval=_signoff(approved, granted=True) if approved else None,
    )


def _reasoning(decision: Entry, cited: Mapping[int, Entry]) -> tuple[Reasoning, ...]:
    steps = []
    for index in decision.get("reasoning") or ():
        entry = cited.get(index) if isinstance(index, int) else None
        if entry is None:
            continue
        steps.append(
            Reasoning(
                index=index,
                time=str(entry["time"]),
                text=str(entry.get("text")),
                source=_str(entry, "source"),
                trace=_str(entry, "trace"),
                tool_call=_str(entry, "tool_call"),
            )
        )

    return tuple(steps)


def _policy(decision: Entry, cited: Mapping[int, Entry]) -> PolicySet | None:
    entry = _cited(decision, "policy_entry", cited)
    if entry is None:
        return None
    files = entry.get("files")

    return PolicySet(
        index=int(entry["index"]),
        time=str(entry["time"]),
        digest=_str(entry, "digest"),
        by=_str(entry, "by"),
        files=tuple(sorted(files)) if isinstance(files, dict) else (),
        matches=entry.get("digest") == decision.get("policy_set"),
    )


def _completion(index: int, about: Sequence[Entry]) -> Completion | None:
    entry = _about(index, kinds.CALL_COMPLETED, "decision", about)
    if entry is None:
        return None

    return Completion(
        index=int(entry["index"]),
        time=str(entry["time"]),
        status=_int(entry.get("status")),
        size=_int(entry.get("size")),
        digest=_str(entry, "digest"),
        latency_us=_int(entry.get("latency_us")),
        error=_str(entry, "error"),
    )


def _breach_record(index: int, about: Sequence[Entry]) -> BreachRecord | None:
    entry = _about(index, kinds.BREACH, "decision", about)
    if entry is None:
        return None
    quarantined = _about(int(entry["index"]), kinds.TASK_QUARANTINED, "breach", about)

    return BreachRecord(
        index=int(entry["index"]),
        time=str(entry["time"]),
        reason=_str(entry, "reason"),
        scope=_str(entry, "scope"),
        quarantine=entry.get("quarantine") is True,
        quarantined=int(quarantined["index"]) if quarantined else None,
    )


# Small helpers.


def _about(index: int, kind: str, field: str, about: Sequence[Entry]) -> Entry | None:
    return next(
        (
            entry
            for entry in about
            if entry["type"] == kind and entry.get(field) == index
        ),
        None,
    )


def _cited(decision: Entry, field: str, cited: Mapping[int, Entry]) -> Entry | None:
    index = decision.get(field)
    return cited.get(index) if isinstance(index, int) else None


def _first(ordered: Iterable[Entry], kind: str) -> Entry | None:
    return next((entry for entry in ordered if entry["type"] == kind), None)


def _signoff(entry: Entry, *, granted: bool) -> Signoff:
    return Signoff(
        index=int(entry["index"]),
        time=str(entry["time"]),
        approver=str(entry.get("approver")),
        granted=granted,
        role=_str(entry, "role"),
        reason=_str(entry, "reason"),
    )


def _str(entry: Entry | None, key: str) -> str | None:
    if entry is None:
        return None
    value = entry.get(key)
    return value if isinstance(value, str) else None


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _short(action: object) -> str:
    """``Payments::Action::"CreatePayment"`` reads ``CreatePayment`` in a summary."""
    text = str(action)
    if text.endswith('"') and '::"' in text:
        return text[text.rindex('::"') + 3 : -1]
    return text


def _context(context: object) -> str:
    if not isinstance(context, dict) or not context:
        return ""
    parts = []
    for key, value in sorted(context.items()):
        shown = value if isinstance(value, str) else orjson.dumps(value).decode()
        parts.append(f"{key}={_text(shown, 40)}")

    return " " + " ".join(parts)


def _digest(value: object) -> str:
    return str(value)[:12] if value else "?"


def _text(value: object, limit: int = MAX_TEXT) -> str:
    text = " ".join(str(value).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _quote(value: object) -> str:
    return f'"{_text(value)}"' if value is not None else "-"
