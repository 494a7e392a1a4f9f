"""What an auditor asks of a ledger, answered from the entries: a task's story, the
story of one call, searches, breaches and activity over time.

One :class:`Forensics` serves a terminal command or a web console alike: every
question first brings the entry index up to date, then reads the entries it needs
in a few queries, and answers with the frozen values of :mod:`proctor.forensics.story`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from proctor import kinds
from proctor.errors import QueryError, TaskError
from proctor.forensics.index import Index, micros
from proctor.forensics.proof import prove
from proctor.forensics.query import Comparison, Query, resolve_actions, to_sql
from proctor.forensics.story import (
    DecisionStory,
    Entry,
    TaskStory,
    cited_indexes,
    decision_story,
    reasoned,
    task_story,
)
from proctor.home import Home
from proctor.ledger import entries
from proctor.ledger.note import Verifier
from proctor.storage.interface import Store

Loaded = tuple[bytes, Entry]
"""An entry as stored (its canonical bytes) and decoded."""

SCAN_PAGE = 500
"""Candidates read per query while checking ``--where`` terms SQL cannot."""
MAX_SCAN = 10_000
"""Candidates read at most for one search before it stops and says so: about a
tenth of a second on the benchmark machine."""
PROBE = 1000
"""Candidates a first, unordered query collects to learn whether a search is
narrow (read them all) or wide (walk an index newest first)."""


@dataclass(frozen=True)
class Finding:
    """One entry a search found, with the story behind it when it is a decision."""

    index: int
    time: str
    type: str
    entry: Mapping[str, Any]
    story: DecisionStory | None = None


@dataclass(frozen=True)
class Findings:
    """What a search found, newest first, and whether there is more."""

    query: Mapping[str, Any]
    results: tuple[Finding, ...]
    more: bool
    scanned: int
    note: str | None = None


@dataclass(frozen=True)
class Activity:
    """Decisions per time bucket, agent and outcome."""

    start: str
    agent: str | None
    outcome: str | None
    count: int


class Forensics:
    """Answers from one ledger's entries, through its entry index."""

    def __init__(
        self,
        store: Store,
        *,
        verifiers: Sequence[Verifier] = (),
        origin: str | None = None,
        index: Index | None = None,
    ) -> None:
        self.store = store
        self.verifiers = tuple(verifiers)
        self.origin = origin
        self.index = index or Index.of(store)

    @classmethod
    @contextmanager
    def open(cls, home: Home) -> Iterator[Forensics]:
        """Open a home's ledger for reading, with its verifier key and origin."""
        verifier, origin = home.verifier(), home.config().ledger.origin
        store = home.open_store()
        try:
            yield cls(store, verifiers=[verifier], origin=origin)
        finally:
            store.close()

    def backlog(self) -> int:
        """How many entries the entry index has yet to fold in."""
        return max(0, self.store.size() - self.index.applied())

    def refresh(self) -> int:
        """Bring the entry index up to date; return how many entries it added."""
        return self.index.catch_up(self.store)

    # Questions.

    def trace(self, task: str, *, now: datetime | None = None) -> TaskStory:
        """Tell a task's story; raises TaskError when no entry names the task."""
        self.refresh()
        rows = self.index.task(task)
        if not rows:
            raise TaskError(f"no entry names task {task!r}")

        return task_story(task, _decode(rows), now=now or datetime.now(UTC))

    def explain(self, index: int, *, proofs: bool = True) -> DecisionStory:
        """Tell everything behind the call that entry ``index`` records.

        A completion, breach, quarantine or approval entry leads to its decision.
        Raises QueryError for an entry about no call and StoreError when there is
        no entry at ``index``.
        """
        self.refresh()
        body = self.store.entry(index)
        decision = self._decision_of(body)
        if decision is None:
            kind = entries.decode(body).get("type")
            raise QueryError(
                f"entry {index} is a {kind} entry, not about a call; explain "
                "follows decisions, completions, breaches and approvals"
            )
        story = self._stories([decision], proofs=proofs)[0]

        return replace(story, asked=index if index != story.index else None)

    def find(
        self, query: Query, *, proofs: bool = False, scan: int = MAX_SCAN
    ) -> Findings:
        """Search the ledger; decisions come back with their whole story.

        ``scan`` bounds how many candidates are read to check ``--where`` terms the
        index does not hold; a search that reaches it stops and says so.
        """
        self.refresh()
        resolved = None
        if query.actions:
            resolved = resolve_actions(query.actions, self.index.actions())
        where, bound = to_sql(
            query,
            self.index.marker,
            resolved,
            times=self.index.time_clauses,
            steer=self.index.steered,
        )
        found, scanned, more = _Search(self.index, query, where, bound, scan).run()
        decisions = [pair for pair in found if pair[1]["type"] == kinds.DECISION]
        stories = {
            story.index: story for story in self._stories(decisions, proofs=proofs)
        }
        results = tuple(
            Finding(
                index=int(entry["index"]),
                time=str(entry["time"]),
                type=str(entry["type"]),
                entry=entry,
                story=stories.get(int(entry["index"])),
            )
            for _, entry in found
        )
        note = None
        if resolved == ():
            note = f"no action in the ledger is named {', '.join(query.actions)}"
        elif more and scanned >= scan:
            note = (
                f"stopped after reading {scanned:,} candidates; narrow the search "
                "or allow a longer scan"
            )

        return Findings(query.describe(), results, more, scanned, note)

    def breaches(self, query: Query, *, proofs: bool = False) -> Findings:
        """Every decision flagged as a breach that ``query`` admits, newest first."""
        return self.find(
            replace(query, types=(kinds.DECISION,), breach=True), proofs=proofs
        )

    def activity(
        self,
        *,
        since: datetime,
        until: datetime,
        bucket: int = 3600,
        agent: str | None = None,
    ) -> list[Activity]:
        """Count decisions per ``bucket`` seconds, agent and outcome in a range."""
        self.refresh()
        width = bucket * 1_000_000
        rows = self.index.activity(
            micros(since.isoformat()), micros(until.isoformat()), width, agent
        )

        return [
            Activity(
                start=datetime.fromtimestamp(start * width / 1e6, UTC).strftime(
                    "%Y-%m-%dT%H:%M:%SZ"
                ),
                agent=who,
                outcome=outcome,
                count=count,
            )
            for start, who, outcome, count in rows
        ]

    # Reading what a story needs in a few queries.

    def _decision_of(self, body: bytes) -> Loaded | None:
        entry = entries.decode(body)
        kind = entry.get("type")
        if kind == kinds.DECISION:
            return body, entry
        pointer: object = None
        if kind in (kinds.CALL_COMPLETED, kinds.BREACH, kinds.APPROVAL_REQUESTED):
            pointer = entry.get("decision")
        elif kind == kinds.TASK_QUARANTINED:
            breach = entry.get("breach")
            if isinstance(breach, int):
                return self._decision_of(self.store.entry(breach))
        elif kind in (kinds.APPROVAL_GRANTED, kinds.APPROVAL_DENIED):
            named = _decode(self.index.related((), [str(entry.get("approval"))]))
            asked = [e for e in named if e["type"] == kinds.APPROVAL_REQUESTED]
            pointer = asked[0].get("decision") if asked else None
        if not isinstance(pointer, int) or isinstance(pointer, bool):
            return None
        found = self.store.entry(pointer)
        decoded = entries.decode(found)

        return (found, decoded) if decoded.get("type") == kinds.DECISION else None

    def _stories(
        self, decisions: Sequence[Loaded], *, proofs: bool
    ) -> list[DecisionStory]:
        if not decisions:
            return []
        raw = {int(entry["index"]): body for body, entry in decisions}
        approvals = [str(e["approval"]) for _, e in decisions if e.get("approval")]
        about_rows = self.index.related(list(raw), approvals)
        breaches = [
            int(e["index"]) for e in _decode(about_rows) if e["type"] == kinds.BREACH
        ]
        if breaches:
            about_rows += self.index.related(breaches, ())
        about = _decode(about_rows)
        cited_at = set().union(
            *(cited_indexes(reasoned(entry, about)) for _, entry in decisions),
            *(cited_indexes(entry) for _, entry in decisions),
        )
        cited_rows = self.index.bodies(cited_at)
        cited = {index: entries.decode(body) for index, body in cited_rows.items()}
        stories = [decision_story(entry, cited, about) for _, entry in decisions]
        if not proofs:
            return stories
        raw.update(about_rows)
        raw.update(cited_rows)

        return self._proven(stories, raw)

    def _proven(
        self, stories: list[DecisionStory], raw: Mapping[int, bytes]
    ) -> list[DecisionStory]:
        # One checkpoint, one node query: every entry every story cites, at once.
        wanted = {index for story in stories for index in story.evidence.values()}
        bodies = {index: raw[index] for index in wanted if index in raw}
        proven = {
            proof.index: proof
            for proof in prove(self.store, bodies, self.verifiers, self.origin)
        }

        return [
            replace(
                story,
                proofs=tuple(
                    proven[index]
                    for index in sorted(set(story.evidence.values()))
                    if index in proven
                ),
            )
            for story in stories
        ]


class _Search:
    """One search: the candidates SQL admits, newest first, checked against the
    terms it could not, until the limit or the scan budget is reached.

    On SQLite a first query without ordering lets the database use its narrowest
    index; when it finds at most PROBE candidates they are all there is, read
    newest first by index. Otherwise matches are dense enough that walking an index
    newest first meets the limit soon. PostgreSQL chooses between the two itself.
    """

    def __init__(
        self,
        index: Index,
        query: Query,
        where: str,
        bound: Sequence[object],
        scan: int,
    ) -> None:
        self.index, self.query, self.where, self.bound = index, query, where, bound
        self.terms = query.scanned
        self.needles = [term.needle for term in self.terms if term.needle]
        self.budget = scan
        self.found: list[Loaded] = []
        self.scanned = 0

    def run(self) -> tuple[list[Loaded], int, bool]:
        # PostgreSQL's planner weighs value statistics itself; SQLite's cannot.
        probe = (
            self.index.ids(self.where, self.bound, limit=PROBE + 1)
            if self.index.steered
            else []
        )
        if self.index.steered and len(probe) <= PROBE:
            more = self._few(sorted(probe, reverse=True))
        else:
            more = self._many()

        return self.found[: self.query.limit], self.scanned, more

    def _few(self, ordered: list[int]) -> bool:
        for at in range(0, len(ordered), SCAN_PAGE):
            page = ordered[at : at + SCAN_PAGE]
            bodies = self.index.bodies(page)
            if self._take((idx, bodies[idx]) for idx in page if idx in bodies):
                return True

        return False

    def _many(self) -> bool:
        page = SCAN_PAGE if self.terms else self.query.limit + 1
        before = None
        while True:
            rows = self.index.select(self.where, self.bound, limit=page, before=before)
            if self._take(rows):
                return True
            if len(rows) < page or not self.terms:
                return False
            before = rows[-1][0]

    def _take(self, rows: Iterable[tuple[int, bytes]]) -> bool:
        """Check rows in order; True once the limit is passed or the budget spent."""
        for _, body in rows:
            if self.scanned >= self.budget:
                return True
            self.scanned += 1
            # An entry whose bytes lack a wanted value cannot match: skip decoding.
            if not all(needle in body for needle in self.needles):
                continue
            entry = entries.decode(body)
            if not self.terms or _holds(self.terms, entry):
                self.found.append((body, entry))
                if len(self.found) > self.query.limit:
                    return True

        return False


def _holds(terms: Sequence[Comparison], entry: Entry) -> bool:
    context = entry.get("context")
    return all(term.holds(context) for term in terms)


def _decode(rows: Sequence[tuple[int, bytes]]) -> list[dict[str, Any]]:
    return [entries.decode(body) for _, body in rows]
