"""The filters of ``proctor find``: parsed from what a person types, refused with a
clear message when malformed, and turned into SQL with every value bound.

Comparisons on ``amount`` run in SQL on the entry index; comparisons on any other
context value are checked against each candidate entry as it is read.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from proctor import kinds
from proctor.errors import QueryError
from proctor.forensics.index import micros

OUTCOMES = ("allow", "deny", "needs_approval")
DEFAULT_LIMIT = 50
MAX_LIMIT = 1000
MAX_SAFE = 2**53 - 1
"""The largest integer an entry can hold (canonical JSON, RFC 8785 / I-JSON)."""
INDEXED = frozenset({"amount"})
"""Context values the entry index holds, compared in SQL."""

_KEY = r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*"
_WHERE = re.compile(
    r"\s*(?P<key>[^<>=!]*?)\s*(?P<op>>=|<=|!=|==|=|>|<)\s*(?P<value>.*?)\s*"
)
_INTEGER = re.compile(r"-?[0-9]+")
_RELATIVE = re.compile(r"(?P<count>[0-9]{1,6})\s*(?P<unit>s|m|h|d|w)")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
_ORDERING = frozenset({"<", "<=", ">", ">="})
MAX_WHERE = 256


@dataclass(frozen=True)
class Comparison:
    """One ``--where`` term: a context key, an operator and an integer or text."""

    key: str
    op: str
    value: int | str

    @property
    def is_indexed(self) -> bool:
        return self.key in INDEXED

    @property
    def needle(self) -> bytes | None:
        """Bytes every matching entry holds: the value as canonical JSON writes it
        (an equality on text or an integer), else None."""
        if self.op != "=":
            return None
        if isinstance(self.value, str):
            return orjson.dumps(self.value)
        return str(self.value).encode()

    def holds(self, context: object) -> bool:
        """Whether a context satisfies this term; a missing value never does."""
        found = _lookup(context, self.key)
        if isinstance(self.value, int):
            if not isinstance(found, int) or isinstance(found, bool):
                return False
            return _compare(found, self.op, self.value)
        if not isinstance(found, str):
            return False

        return (found == self.value) is (self.op == "=")

    def __str__(self) -> str:
        value = self.value if isinstance(self.value, int) else f'"{self.value}"'
        return f"{self.key}{self.op}{value}"


def parse_where(text: str) -> Comparison:
    """Parse ``KEY OP VALUE`` (``amount>=1000000``, ``vendor=acme``).

    Keys are context names (dots reach into objects), operators ``= != < <= > >=``,
    values integers or text (quote text that looks like a number). Raises
    QueryError saying what is wrong.
    """
    if len(text) > MAX_WHERE:
        raise QueryError(f"--where is {len(text)} characters; at most {MAX_WHERE}")
    found = _WHERE.fullmatch(text)
    if found is None:
        raise QueryError(
            f"--where needs KEY OP VALUE, e.g. amount>=1000000 or vendor=acme; "
            f"got {text!r}"
        )
    key, op, raw = found["key"], found["op"], found["value"]
    if not re.fullmatch(_KEY, key):
        raise QueryError(
            f"--where key {key!r} is not a name: letters, digits, _ and dots only"
        )
    op = "=" if op == "==" else op
    value = _value(key, raw, text)
    if key in INDEXED and not isinstance(value, int):
        raise QueryError(f"--where {key} compares integers; got {raw!r}")
    if isinstance(value, str) and op in _ORDERING:
        raise QueryError(
            f"--where {text!r}: {op} compares integers only; use = or != for text"
        )

    return Comparison(key, op, value)


def _value(key: str, raw: str, text: str) -> int | str:
    if not raw:
        raise QueryError(f"--where {text!r} has no value after the operator")
    if len(raw) >= 2 and raw[0] == raw[-1] and raw[0] in "\"'":
        return raw[1:-1]
    if _INTEGER.fullmatch(raw):
        number = int(raw)
        if abs(number) > MAX_SAFE:
            raise QueryError(
                f"--where {key}: {raw} is beyond the integers an entry can hold"
            )
        return number
    if raw[0] in "\"'":
        raise QueryError(f"--where {text!r}: the quoted value is not closed")

    return raw


def parse_time(text: str, *, now: datetime, what: str = "--since") -> datetime:
    """Parse RFC 3339 (``2026-12-03T15:00:00Z``, or a date) or a relative span
    back from ``now`` (``90s``, ``30m``, ``24h``, ``7d``, ``2w``).

    A time without an offset is taken as UTC. Raises QueryError.
    """
    stripped = text.strip()
    relative = _RELATIVE.fullmatch(stripped)
    if relative is not None:
        span = timedelta(**{_UNITS[relative["unit"]]: int(relative["count"])})
        return now - span
    try:
        moment = datetime.fromisoformat(stripped)
    except ValueError:
        raise QueryError(
            f"{what} {text!r} is neither RFC 3339 (2026-12-03T15:00:00Z) nor a "
            "span back from now like 30m, 24h or 7d"
        ) from None

    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@dataclass(frozen=True)
class Query:
    """What to find. Empty fields do not filter; ``actions`` are uids or short names."""

    types: tuple[str, ...] = (kinds.DECISION,)
    actions: tuple[str, ...] = ()
    agent: str | None = None
    user: str | None = None
    task: str | None = None
    outcome: str | None = None
    breach: bool = False
    since: datetime | None = None
    until: datetime | None = None
    where: tuple[Comparison, ...] = ()
    limit: int = DEFAULT_LIMIT
    approval: str | None = field(default=None)

    @property
    def scanned(self) -> tuple[Comparison, ...]:
        """The terms checked against each candidate entry rather than in SQL."""
        return tuple(term for term in self.where if not term.is_indexed)

    def describe(self) -> dict[str, Any]:
        """The query as JSON, as a person would read it back."""
        described: dict[str, Any] = {
            "types": list(self.types),
            "actions": list(self.actions),
            "agent": self.agent,
            "user": self.user,
            "task": self.task,
            "decision": self.outcome,
            "breach": self.breach,
            "approval": self.approval,
            "since": _stamp(self.since),
            "until": _stamp(self.until),
            "where": [str(term) for term in self.where],
            "limit": self.limit,
        }
        return {
            key: value
            for key, value in described.items()
            if value not in (None, [], False)
        }


def build_query(
    *,
    actions: Iterable[str] = (),
    agent: str | None = None,
    user: str | None = None,
    task: str | None = None,
    decision: str | None = None,
    breach: bool = False,
    since: str | None = None,
    until: str | None = None,
    where: Iterable[str] = (),
    types: Iterable[str] = (kinds.DECISION,),
    approval: str | None = None,
    limit: int = DEFAULT_LIMIT,
    now: datetime | None = None,
) -> Query:
    """Build a query from what a person typed (command line or web form).

    Raises QueryError for an unknown decision, a bad time, a bad ``--where`` term
    or a limit outside 1..1000.
    """
    moment = now or datetime.now(UTC)
    if decision is not None and decision not in OUTCOMES:
        raise QueryError(
            f"--decision must be one of {', '.join(OUTCOMES)}; got {decision!r}"
        )
    if not 1 <= limit <= MAX_LIMIT:
        raise QueryError(f"--limit must be between 1 and {MAX_LIMIT}; got {limit}")
    start = parse_time(since, now=moment, what="--since") if since else None
    end = parse_time(until, now=moment, what="--until") if until else None
    if start is not None and end is not None and end < start:
        raise QueryError("--until is before --since; nothing can match")
    chosen = tuple(dict.fromkeys(kind.strip() for kind in types if kind.strip()))
    for kind in chosen:
        if not re.fullmatch(r"[a-z_]+(?:\.[a-z_]+)*", kind):
            raise QueryError(f"--type {kind!r} is not an entry type like decision")

    return Query(
        types=chosen,
        actions=tuple(action.strip() for action in actions if action.strip()),
        agent=_blank(agent),
        user=_blank(user),
        task=_blank(task),
        outcome=decision,
        breach=breach,
        since=start,
        until=end,
        where=tuple(parse_where(term) for term in where),
        limit=limit,
        approval=_blank(approval),
    )


def resolve_actions(wanted: Sequence[str], known: Iterable[str]) -> tuple[str, ...]:
    """Expand short action names (``CreatePayment``) to the uids the ledger holds.

    A name with ``::`` is a uid and kept as it is; a short name matches every uid
    whose id is that name.
    """
    known = list(known)
    resolved: list[str] = []
    for action in wanted:
        if "::" in action:
            resolved.append(action)
            continue
        resolved.extend(uid for uid in known if uid.endswith(f'::"{action}"'))

    return tuple(dict.fromkeys(resolved))


TimeClauses = Callable[[int | None, int | None], tuple[list[str], list[object]]]
"""Turns a time range (microseconds) into clauses: ``Index.time_clauses``."""


def to_sql(
    query: Query,
    marker: str,
    actions: Sequence[str] | None = None,
    *,
    times: TimeClauses | None = None,
    steer: bool = False,
) -> tuple[str, list[object]]:
    """Return the WHERE clause over the index row ``i`` and its bound values.

    ``actions`` are the resolved uids (default: the query's own); ``times`` turns
    the time range into clauses (default: plain comparisons on ``time_us``);
    ``steer`` keeps a planner without statistics off the type index. Only column
    names and operators from fixed tables reach the SQL text; values are bound.
    """
    clauses: list[str] = []
    bound: list[object] = []

    def add(clause: str, *values: object) -> None:
        clauses.append(clause)
        bound.extend(values)

    def within(column: str, values: Sequence[object]) -> None:
        add(f"i.{column} IN ({', '.join(marker for _ in values)})", *values)

    chosen = query.actions if actions is None else actions
    if query.types:
        # Most entries are decisions: when a narrower filter applies, keep a
        # planner that cannot know it off the type index (an expression is not
        # indexed), so it walks the narrow one instead of most of the ledger.
        column = "type || ''" if steer and _is_narrow(query) else "type"
        within(column, query.types)
    if query.actions:
        if not chosen:
            return "1 = 0", []
        within("action", chosen)
    for column, value in (
        ("agent", query.agent),
        ("initiator", query.user),
        ("task", query.task),
        ("outcome", query.outcome),
        ("approval", query.approval),
    ):
        if value is not None:
            add(f"i.{column} = {marker}", value)
    if query.breach:
        add("i.breach = 1")
    since = _micros(query.since) if query.since is not None else None
    until = _micros(query.until) if query.until is not None else None
    if times is not None:
        ranged, values = times(since, until)
        clauses.extend(ranged)
        bound.extend(values)
    else:
        if since is not None:
            add(f"i.time_us >= {marker}", since)
        if until is not None:
            add(f"i.time_us <= {marker}", until)
    for term in query.where:
        if term.is_indexed:
            add(f"i.{term.key} {term.op} {marker}", term.value)

    return " AND ".join(clauses), bound


def _is_narrow(query: Query) -> bool:
    return bool(
        query.actions
        or query.agent
        or query.user
        or query.task
        or query.approval
        or query.breach
        or any(term.is_indexed for term in query.where)
    )


def matches(query: Query, entry: Mapping[str, Any]) -> bool:
    """Whether an entry satisfies the terms SQL could not check."""
    context = entry.get("context")
    return all(term.holds(context) for term in query.scanned)


def _lookup(context: object, key: str) -> object:
    found = context
    for part in key.split("."):
        if not isinstance(found, dict):
            return None
        found = found.get(part)

    return found


def _compare(left: int, op: str, right: int) -> bool:
    return {
        "=": left == right,
        "!=": left != right,
        "<": left < right,
        "<=": left <= right,
        ">": left > right,
        ">=": left >= right,
    }[op]


def _micros(moment: datetime) -> int:
    return micros(moment.astimezone(UTC).isoformat())


def _stamp(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _blank(value: str | None) -> str | None:
    if value is None:
        return None
    stripped = value.strip()
    return stripped or None
