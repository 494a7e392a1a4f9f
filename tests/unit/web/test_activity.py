"""Hourly counts kept for hours that are over: the index is asked once per hour."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from proctor.forensics import Activity
from proctor.web.activity import ActivityCache

START = datetime(2026, 11, 1, tzinfo=UTC)


class Counter:
    """Answers ``activity`` with one allowed call per hour per agent, and records
    every range it was asked for."""

    def __init__(self) -> None:
        self.asked: list[tuple[datetime, datetime, int]] = []

    def activity(
        self, *, since: datetime, until: datetime, bucket: int, agent: str | None
    ) -> list[Activity]:
        self.asked.append((since, until, bucket))
        rows = []
        moment = since.replace(minute=0, second=0, microsecond=0)
        while moment <= until:
            for who in ("bot-a", "bot-b"):
                if agent in (None, who):
                    rows.append(
                        Activity(moment.strftime("%Y-%m-%dT%H:%M:%SZ"), who, "allow", 1)
                    )
            moment += timedelta(hours=1)
        return rows


def cache(counter: Counter, now: datetime) -> ActivityCache:
    forensics: Any = counter
    return ActivityCache(forensics, clock=lambda: now)


class TestActivityCache:
    def test_long_range_is_regrouped_from_hours(self) -> None:
        """Ten days in one-day buckets: each day counts 24 calls per agent."""
        counter = Counter()
        rows = cache(counter, START + timedelta(days=30)).activity(
            since=START,
            until=START + timedelta(days=10) - timedelta(seconds=1),
            bucket=86400,
            agent=None,
        )

        assert len(rows) == 20
        assert {row.count for row in rows} == {24}
        assert counter.asked[0][2] == 3600

    def test_kept_hours_are_not_asked_again(self) -> None:
        """A second look at the same past range asks the index nothing."""
        counter = Counter()
        kept = cache(counter, START + timedelta(days=30))
        span = {"since": START, "until": START + timedelta(days=5), "bucket": 86400}
        first = kept.activity(agent="bot-a", **span)  # type: ignore[arg-type]
        asked = len(counter.asked)
        again = kept.activity(agent="bot-a", **span)  # type: ignore[arg-type]

        assert again == first
        assert len(counter.asked) == asked

    def test_recent_hours_are_asked_every_time(self) -> None:
        """Hours that are not over yet are counted afresh on every look."""
        now = START + timedelta(days=5)
        counter = Counter()
        kept = cache(counter, now)
        kept.activity(since=now - timedelta(days=3), until=now, bucket=3600, agent=None)
        asked = len(counter.asked)
        kept.activity(since=now - timedelta(days=3), until=now, bucket=3600, agent=None)

        assert len(counter.asked) == asked + 1
        assert counter.asked[-1][0] >= now - timedelta(hours=1)

    def test_short_ranges_are_counted_directly(self) -> None:
        """Up to two days, or buckets finer than an hour, go straight to the index."""
        counter = Counter()
        kept = cache(counter, START + timedelta(days=30))
        kept.activity(
            since=START, until=START + timedelta(hours=6), bucket=900, agent=None
        )

        assert counter.asked == [(START, START + timedelta(hours=6), 900)]
