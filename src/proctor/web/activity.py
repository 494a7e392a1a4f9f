"""Decisions per hour, agent and outcome, kept for hours that are over: the agents
page asks the forensics index only for the hours it has not seen yet.

The ledger is append-only, so an hour that ended a while ago never changes again;
counting a month of decisions from the index costs about a second on a million
entries, and re-counting it for every page would cost that each time.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

from proctor.forensics import Activity, Forensics

HOUR = 3600
SETTLE = timedelta(minutes=5)
"""How long after an hour ends before its counts are kept: entries written by other
replicas may carry a time a little in the past."""
DIRECT = timedelta(days=2)
"""Ranges up to this long are counted directly: a few tens of thousands of rows."""
MAX_FILTERS = 32
"""Agent filters whose hours are kept, least recently used dropped first."""
MAX_HOURS = 24 * 400
"""Hours kept per filter; past this the oldest are dropped."""

Counts = dict[tuple[str | None, str | None], int]


class ActivityCache:
    """Answers ``Forensics.activity`` from hourly counts kept in memory."""

    def __init__(
        self, forensics: Forensics, *, clock: Callable[[], datetime] | None = None
    ) -> None:
        self._forensics = forensics
        self._clock = clock or _now
        self._lock = threading.Lock()
        self._hours: OrderedDict[str | None, dict[int, Counts]] = OrderedDict()

    def activity(
        self, *, since: datetime, until: datetime, bucket: int, agent: str | None
    ) -> list[Activity]:
        """Count decisions per ``bucket`` seconds, agent and outcome in a range.

        Short ranges, and buckets that are not whole hours, are counted directly;
        longer ones are widened to whole hours and answered from kept hours.
        """
        if until - since <= DIRECT or bucket % HOUR:
            return self._forensics.activity(
                since=since, until=until, bucket=bucket, agent=agent
            )
        first = int(since.timestamp()) // HOUR
        last = int(until.timestamp()) // HOUR
        hours = self._counts(first, last, agent)

        return _regroup(hours, bucket)

    def _counts(self, first: int, last: int, agent: str | None) -> dict[int, Counts]:
        settled = int((self._clock() - SETTLE).timestamp()) // HOUR
        with self._lock:
            kept = self._hours.setdefault(agent, {})
            self._hours.move_to_end(agent)
            missing = [h for h in range(first, min(last + 1, settled)) if h not in kept]
        fresh: dict[int, Counts] = {}
        for start, end in _runs(missing):
            fresh.update(self._ask(start, end, agent))
        if last >= settled:
            recent = self._ask(max(first, settled), last + 1, agent)
        else:
            recent = {}
        with self._lock:
            kept = self._hours.setdefault(agent, {})
            for hour in missing:
                kept[hour] = fresh.get(hour, {})
            self._trim(kept)
            chosen = {h: kept.get(h, {}) for h in range(first, min(last + 1, settled))}

        return {**chosen, **recent}

    def _ask(self, start: int, end: int, agent: str | None) -> dict[int, Counts]:
        """Count the hours ``[start, end)`` from the index."""
        rows = self._forensics.activity(
            since=datetime.fromtimestamp(start * HOUR, UTC),
            until=datetime.fromtimestamp(end * HOUR, UTC) - timedelta(microseconds=1),
            bucket=HOUR,
            agent=agent,
        )
        found: dict[int, Counts] = {}
        for row in rows:
            hour = int(_parse(row.start).timestamp()) // HOUR
            counts = found.setdefault(hour, {})
            counts[(row.agent, row.outcome)] = row.count

        return found

    def _trim(self, kept: dict[int, Counts]) -> None:
        while len(self._hours) > MAX_FILTERS:
            self._hours.popitem(last=False)
        if len(kept) > MAX_HOURS:
            for hour in sorted(kept)[: len(kept) - MAX_HOURS]:
                del kept[hour]


def _runs(hours: list[int]) -> Iterator[tuple[int, int]]:
    """Group sorted hours into ``[start, end)`` runs of consecutive hours."""
    start = previous = None
    for hour in hours:
        if start is None or previous is None:
            start = previous = hour
        elif hour == previous + 1:
            previous = hour
        else:
            yield start, previous + 1
            start = previous = hour
    if start is not None and previous is not None:
        yield start, previous + 1


def _regroup(hours: dict[int, Counts], bucket: int) -> list[Activity]:
    """Add hourly counts up into buckets of ``bucket`` seconds, as the index does."""
    totals: dict[int, Counts] = {}
    for hour, counts in hours.items():
        into = totals.setdefault(hour * HOUR // bucket, {})
        for key, count in counts.items():
            into[key] = into.get(key, 0) + count
    found: list[Activity] = []
    for start in sorted(totals):
        stamp = datetime.fromtimestamp(start * bucket, UTC).strftime(
            "%Y-%m-%dT%H:%M:%SZ"
        )
        found.extend(
            Activity(start=stamp, agent=agent, outcome=outcome, count=count)
            for (agent, outcome), count in totals[start].items()
        )

    return found


def _parse(stamp: str) -> datetime:
    moment = datetime.fromisoformat(stamp)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _now() -> datetime:
    return datetime.now(UTC)
