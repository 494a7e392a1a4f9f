"""The story of one decision, told from the ledger alone: whose task, what they asked
for, who approved the scope, what the agent said, which policies decided, who approved
the call and what came back.

Every part is an entry (or entries) read from the store; nothing comes from the
projection, so the story holds for any copy of the ledger.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from proctor import kinds
from proctor.errors import TaskError
from proctor.ledger import entries
from proctor.storage.interface import Store

WINDOW = 10_000
"""How many entries after a decision are read looking for its outcome."""

Entry = Mapping[str, Any]

_FOLLOWS = frozenset({kinds.BREACH, kinds.CALL_COMPLETED, kinds.APPROVAL_REQUESTED})
_APPROVAL_KINDS = frozenset(
    {kinds.APPROVAL_REQUESTED, kinds.APPROVAL_GRANTED, kinds.APPROVAL_DENIED}
)


@dataclass(frozen=True)
class Explanation:
    """One decision entry and the entries it names or that name it."""

    decision: Entry
    opened: Entry | None = None
    approved: Entry | None = None
    policy: Entry | None = None
    reasoning: tuple[Entry, ...] = ()
    approval: tuple[Entry, ...] = ()
    outcome: Entry | None = None
    breach: Entry | None = None
    problems: tuple[str, ...] = field(default=())

    def to_json(self) -> dict[str, Any]:
        """The explanation as one JSON value; policy texts are left to the entry."""
        decision = self.decision
        return {
            "decision": dict(decision),
            "task": decision.get("task"),
            "agent": decision.get("agent"),
            "user": decision.get("user"),
            "request": _get(self.opened, "request"),
            "opened": _brief(self.opened, "by", "expires"),
            "scope": {
                "digest": decision.get("scope"),
                "text": _get(_get(self.opened, "scope"), "text"),
                "approved": _brief(self.approved, "approver", "role", "reason"),
            },
            "reasoning": [_brief(step, "text", "source") for step in self.reasoning],
            "policies": {
                "ids": list(decision.get("policies", ())),
                "policy_set": decision.get("policy_set"),
                "published": _brief(self.policy, "digest", "by"),
            },
            "approval": {
                "id": decision.get("approval"),
                "entries": [
                    _brief(step, "approver", "role", "roles", "reason")
                    for step in self.approval
                ],
            },
            "outcome": _brief(
                self.outcome, "status", "size", "digest", "latency_us", "error"
            ),
            "breach": _brief(self.breach, "quarantine", "reason"),
            "problems": list(self.problems),
        }


def explain(store: Store, index: int, *, window: int = WINDOW) -> Explanation:
    """Gather the entries that explain decision ``index``.

    ``index`` may also name a breach, a completed call or an approval request, which
    lead to their decision. Raises TaskError when the entry is none of these or
    lies beyond the ledger, StoreError when the store fails.
    """
    size = store.size()
    decision = _decision(store, index, size)
    reader = _Reader(store, decision)
    opened_at = _index(decision.get("task_opened"))

    opened = reader.named(opened_at, kinds.TASK_OPENED)
    approved = reader.named(decision.get("scope_approved"), kinds.TASK_APPROVED)
    policy = reader.named(
        decision.get("policy_entry"), kinds.POLICY_PUBLISHED, same_task=False
    )
    start = opened_at if opened_at is not None else reader.at
    found = _scan(store, decision, start=start, end=min(size, reader.at + 1 + window))
    reasoning = tuple(
        step
        for number in reader.reasoning(found.approval)
        if (step := reader.named(number, kinds.REASONING))
    )

    return Explanation(
        decision=decision,
        opened=opened,
        approved=approved,
        policy=policy,
        reasoning=reasoning,
        approval=found.approval,
        outcome=found.outcome,
        breach=found.breach,
        problems=tuple(reader.problems),
    )


@dataclass(frozen=True)
class _Found:
    approval: tuple[Entry, ...]
    outcome: Entry | None
    breach: Entry | None


def _decision(store: Store, index: int, size: int) -> Entry:
    if not 0 <= index < size:
        raise TaskError(f"no entry {index}: the ledger holds entries 0 to {size - 1}")
    entry = _read(store, index)
    kind = entry.get("type")
    if kind in _FOLLOWS and isinstance(entry.get("decision"), int):
        entry = _read(store, int(entry["decision"]))
        kind = entry.get("type")
    if kind != kinds.DECISION:
        raise TaskError(
            f"entry {index} is a {kind} entry; explain follows decisions, breaches, "
            "completed calls and approval requests"
        )

    return entry


@dataclass
class _Reader:
    """Reads the entries one decision points at, noting what does not fit."""

    store: Store
    decision: Entry
    problems: list[str] = field(default_factory=list)

    @property
    def at(self) -> int:
        return int(self.decision["index"])

    def named(
        self, value: object, kind: str, *, same_task: bool = True
    ) -> Entry | None:
        """Read entry ``value`` if it is an earlier ``kind`` entry of this task."""
        index = _index(value)
        if index is None:
            return None
        if index >= self.at:
            self.problems.append(f"entry {index} comes after the decision it explains")
            return None
        entry = _read(self.store, index)
        if entry.get("type") != kind:
            self.problems.append(
                f"entry {index} is a {entry.get('type')}, expected {kind}"
            )
            return None
        if same_task and entry.get("task") != self.decision.get("task"):
            self.problems.append(f"entry {index} is about task {entry.get('task')}")
            return None

        return entry

    def reasoning(self, approval: tuple[Entry, ...]) -> list[object]:
        """The reasoning steps behind the call.

        A call released by an approval is sent again with nothing new to say, so
        the steps linked from the decision that asked for the approval come first.
        """
        own = list(self.decision.get("reasoning", ()))
        asked = next(
            (
                step.get("decision")
                for step in approval
                if step.get("type") == kinds.APPROVAL_REQUESTED
            ),
            None,
        )
        if asked is None or asked == self.at:
            return own
        asking = self.named(asked, kinds.DECISION)

        return [*(asking.get("reasoning", ()) if asking else ()), *own]


def _scan(store: Store, decision: Entry, *, start: int, end: int) -> _Found:
    """Read entries ``[start, end)`` for those that name the decision.

    Approval entries come before the decision they release and after the one that
    asked for them; the outcome and any breach come after.
    """
    at, approval_id = int(decision["index"]), decision.get("approval")
    approval: list[Entry] = []
    outcome = breach = None
    for entry in _stream(store, start, end):
        kind = entry.get("type")
        if approval_id and kind in _APPROVAL_KINDS:
            if entry.get("approval") == approval_id:
                approval.append(entry)
        elif kind == kinds.CALL_COMPLETED and entry.get("decision") == at:
            outcome = outcome or entry
        elif kind == kinds.BREACH and entry.get("decision") == at:
            breach = breach or entry

    return _Found(tuple(approval), outcome, breach)


def _stream(store: Store, start: int, end: int) -> Iterator[Entry]:
    for data in store.entries(start, end):
        yield entries.decode(data)


def _read(store: Store, index: int) -> Entry:
    return entries.decode(store.entry(index))


def _index(value: object) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return None
    return value


def _get(entry: object, key: str) -> Any:
    return entry.get(key) if isinstance(entry, Mapping) else None


def _brief(entry: Entry | None, *keys: str) -> dict[str, Any] | None:
    """The envelope of an entry and the named fields it has."""
    if entry is None:
        return None
    brief = {name: entry.get(name) for name in entries.ENVELOPE}
    brief.update({key: entry[key] for key in keys if key in entry})

    return brief
