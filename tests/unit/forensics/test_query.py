"""The filters of ``proctor find``: parsing what a person types, refusing what is
malformed with a message that says why, and SQL whose values are all bound."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from proctor.errors import QueryError
from proctor.forensics.query import (
    Comparison,
    Query,
    build_query,
    matches,
    parse_time,
    parse_where,
    resolve_actions,
    to_sql,
)

NOW = datetime(2026, 12, 3, 15, 0, tzinfo=UTC)
PAY = 'Payments::Action::"CreatePayment"'


class TestWhere:
    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ("amount>=1000000", Comparison("amount", ">=", 1_000_000)),
            ("amount < 5", Comparison("amount", "<", 5)),
            ("vendor=acme", Comparison("vendor", "=", "acme")),
            ("vendor==acme", Comparison("vendor", "=", "acme")),
            ("vendor!=acme corp", Comparison("vendor", "!=", "acme corp")),
            ('invoice="42"', Comparison("invoice", "=", "42")),
            ("invoice=42", Comparison("invoice", "=", 42)),
            ("payee.iban=DE00", Comparison("payee.iban", "=", "DE00")),
            ("delta>=-3", Comparison("delta", ">=", -3)),
        ],
    )
    def test_parses(self, text: str, expected: Comparison) -> None:
        """Keys, operators, integers and text come out as typed."""
        assert parse_where(text) == expected

    @pytest.mark.parametrize(
        ("text", "message"),
        [
            ("amount", "needs KEY OP VALUE"),
            ("", "needs KEY OP VALUE"),
            ("amount>=", "has no value"),
            ("amount>=lots", "amount compares integers"),
            ("vendor>acme", "compares integers only"),
            ("amount);drop table entries;--=1", "is not a name"),
            ("1abc=1", "is not a name"),
            ("amount>=99999999999999999999", "beyond the integers"),
            ('vendor="acme', "not closed"),
            ("v=" + "x" * 300, "at most 256"),
        ],
    )
    def test_refuses(self, text: str, message: str) -> None:
        """A malformed term is refused with a message naming the problem."""
        with pytest.raises(QueryError, match=message):
            parse_where(text)

    def test_missing_value_never_matches(self) -> None:
        """A context without the key fails every comparison, even !=."""
        assert not parse_where("vendor!=acme").holds({})
        assert not parse_where("amount!=5").holds({"amount": "5"})

    def test_types_do_not_mix(self) -> None:
        """An integer never equals text, and booleans are not integers."""
        assert not parse_where("invoice=42").holds({"invoice": "42"})
        assert parse_where('invoice="42"').holds({"invoice": "42"})
        assert not parse_where("flag=1").holds({"flag": True})

    @pytest.mark.parametrize(
        ("text", "needle"),
        [
            ("vendor=acme", b'"acme"'),
            ("city=zürich", '"zürich"'.encode()),
            ("invoice=42", b"42"),
            ("vendor!=acme", None),
            ("amount>=5", None),
        ],
    )
    def test_needle(self, text: str, needle: bytes | None) -> None:
        """An equality names the bytes every matching entry must hold."""
        assert parse_where(text).needle == needle

    def test_nested_keys_reach_into_objects(self) -> None:
        """Dots follow objects inside the context."""
        assert parse_where("payee.country=DE").holds({"payee": {"country": "DE"}})
        assert not parse_where("payee.country=DE").holds({"payee": "DE"})


class TestTime:
    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ("24h", NOW - timedelta(hours=24)),
            ("30m", NOW - timedelta(minutes=30)),
            ("7d", NOW - timedelta(days=7)),
            ("2w", NOW - timedelta(weeks=2)),
            ("90s", NOW - timedelta(seconds=90)),
            ("2026-12-01T10:00:00Z", datetime(2026, 12, 1, 10, tzinfo=UTC)),
            ("2026-12-01", datetime(2026, 12, 1, tzinfo=UTC)),
        ],
    )
    def test_parses(self, text: str, expected: datetime) -> None:
        """RFC 3339, a bare date (UTC) and spans back from now all parse."""
        assert parse_time(text, now=NOW) == expected

    def test_refuses_words(self) -> None:
        """A time that is neither form is refused, naming both forms."""
        with pytest.raises(QueryError, match="neither RFC 3339"):
            parse_time("yesterday", now=NOW)


class TestBuild:
    def test_refuses_unknown_decision(self) -> None:
        """--decision takes only the three outcomes."""
        with pytest.raises(QueryError, match="allow, deny, needs_approval"):
            build_query(decision="maybe")

    def test_refuses_reversed_range(self) -> None:
        """An --until before --since can match nothing and is refused."""
        with pytest.raises(QueryError, match="before --since"):
            build_query(since="1h", until="2h", now=NOW)

    @pytest.mark.parametrize("limit", [0, 1001])
    def test_refuses_limit(self, limit: int) -> None:
        """Limits stay within 1..1000."""
        with pytest.raises(QueryError, match="--limit"):
            build_query(limit=limit)

    def test_refuses_bad_type(self) -> None:
        """Entry types are dotted lowercase names."""
        with pytest.raises(QueryError, match="--type"):
            build_query(types=["decision; drop"])

    def test_describes_itself(self) -> None:
        """The query reads back without the filters left empty."""
        query = build_query(actions=["CreatePayment"], where=["amount>=5"], now=NOW)

        assert query.describe() == {
            "types": ["decision"],
            "actions": ["CreatePayment"],
            "where": ["amount>=5"],
            "limit": 50,
        }


class TestSql:
    def test_values_are_bound_never_inlined(self) -> None:
        """Every value travels as a parameter; the SQL holds markers only."""
        hostile = "x' OR '1'='1"
        query = build_query(
            actions=[hostile],
            agent=hostile,
            user=hostile,
            task=hostile,
            decision="deny",
            breach=True,
            since="2026-12-01T00:00:00Z",
            where=["amount>=5", f"vendor={hostile}"],
        )
        where, bound = to_sql(query, "?")

        assert hostile not in where
        assert "'" not in where.replace("''", "")
        assert bound.count(hostile) == 4
        assert "i.amount >= ?" in where
        assert "vendor" not in where
        assert "i.breach = 1" in where

    def test_postgres_markers(self) -> None:
        """The marker is the dialect's."""
        where, _ = to_sql(build_query(agent="a"), "%s")

        assert "i.agent = %s" in where

    def test_unknown_short_action_matches_nothing(self) -> None:
        """A short action name the ledger never saw yields an always-false clause."""
        query = build_query(actions=["Nothing"])

        assert to_sql(query, "?", ()) == ("1 = 0", [])

    def test_short_names_resolve_to_uids(self) -> None:
        """CreatePayment finds the uid; uids pass through untouched."""
        known = [PAY, 'Payments::Action::"ReadInvoice"', 'Git::Action::"CreatePayment"']

        assert resolve_actions(["CreatePayment"], known) == (
            PAY,
            'Git::Action::"CreatePayment"',
        )
        assert resolve_actions([PAY], []) == (PAY,)

    def test_scanned_terms_are_checked_on_entries(self) -> None:
        """Terms on other context keys are checked against the entry itself."""
        query = Query(where=(parse_where("amount>=5"), parse_where("vendor=acme")))

        assert query.scanned == (Comparison("vendor", "=", "acme"),)
        assert matches(query, {"context": {"vendor": "acme", "amount": 1}})
        assert not matches(query, {"context": {"vendor": "globex"}})
        assert not matches(query, {})
