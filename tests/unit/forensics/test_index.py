"""The entry index: a projection of the entries in the ledger's own database, caught
up incrementally, rebuilt to the same rows, and read through bound SQL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from proctor import kinds
from proctor.errors import StoreError
from proctor.forensics import index as index_module
from proctor.forensics.index import COLUMNS, TABLE, Index, index_row, micros
from proctor.ledger import entries, merkle
from proctor.storage.interface import Batch
from proctor.storage.sqlite import SqliteStore

from .conftest import APPROVAL, OTHER, PAY, STORY, TASK, Trail, decision


def rows(index: Index) -> list[tuple[Any, ...]]:
    """Every row of the index, in entry order."""
    table = index.sql.table(TABLE)
    return index.sql.query(f"SELECT {', '.join(COLUMNS)} FROM {table} ORDER BY idx")


def entry(kind: str, fields: dict[str, Any], at: int = 5) -> dict[str, Any]:
    return {**fields, "index": at, "time": "2026-12-03T15:00:00.000001Z", "type": kind}


class TestRow:
    def test_decision_row(self) -> None:
        """A decision's row holds who, what, the outcome, approval and amount."""
        row = dict(
            zip(
                COLUMNS,
                index_row(entry(kinds.DECISION, decision(approval=APPROVAL))),
                strict=True,
            )
        )

        assert row == {
            "idx": 5,
            "time_us": micros("2026-12-03T15:00:00.000001Z"),
            "type": kinds.DECISION,
            "task": TASK,
            "agent": "ledger-bot",
            "initiator": "alice@example.com",
            "action": PAY,
            "outcome": "allow",
            "breach": 0,
            "approval": APPROVAL,
            "amount": 1_500_000,
            "refers": None,
        }

    @pytest.mark.parametrize(
        ("kind", "fields", "refers"),
        [
            (kinds.CALL_COMPLETED, {"decision": 3, "status": 200}, 3),
            (kinds.BREACH, {"decision": 4}, 4),
            (kinds.APPROVAL_REQUESTED, {"decision": 2, "approval": "a"}, 2),
            (kinds.TASK_QUARANTINED, {"breach": 9}, 9),
            (kinds.REASONING, {"decision": 1}, None),
        ],
    )
    def test_refers_to_the_entry_it_is_about(
        self, kind: str, fields: dict[str, Any], refers: int | None
    ) -> None:
        """Completions, breaches and requests name a decision, quarantines a breach."""
        assert index_row(entry(kind, fields))[COLUMNS.index("refers")] == refers

    @pytest.mark.parametrize("amount", ["1000", 1.5, True, None])
    def test_amount_only_from_integers(self, amount: object) -> None:
        """Only an integer amount is indexed: not text, floats or booleans."""
        row = index_row(entry(kinds.DECISION, decision(context={"amount": amount})))

        assert row[COLUMNS.index("amount")] is None

    def test_breach_flag(self) -> None:
        """Breach entries and decisions flagged as breaches carry the flag."""
        flagged = index_row(
            entry(kinds.DECISION, decision(breach=True, outcome="deny"))
        )
        breach = index_row(entry(kinds.BREACH, {"decision": 1}))
        plain = index_row(entry(kinds.DECISION, decision()))

        assert [r[COLUMNS.index("breach")] for r in (flagged, breach, plain)] == [
            1,
            1,
            0,
        ]

    def test_times_order_as_microseconds(self) -> None:
        """Entry times become microseconds since the epoch, exactly."""
        assert micros("1970-01-01T00:00:01.000002Z") == 1_000_002
        assert micros("2026-12-03T15:00:00Z") < micros("2026-12-03T15:00:00.000001Z")


class TestCatchUp:
    def test_indexes_every_entry_once(self, trail: Trail) -> None:
        """A first catch-up folds every entry in; a second finds nothing new."""
        index = Index.of(trail.store)

        assert index.catch_up(trail.store) == len(STORY)
        assert index.catch_up(trail.store) == 0
        assert index.applied() == len(STORY)

    def test_follows_new_entries(self, trail: Trail) -> None:
        """Entries appended later are folded in by the next catch-up alone."""
        index = Index.of(trail.store)
        index.catch_up(trail.store)
        trail.append(kinds.DECISION, decision(context={"amount": 7}))

        assert index.catch_up(trail.store) == 1
        assert rows(index)[-1][COLUMNS.index("amount")] == 7

    def test_rebuild_equals_incremental(
        self, trail: Trail, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Rows folded a few at a time equal rows rebuilt in one pass."""
        monkeypatch.setattr(index_module, "CHUNK", 3)
        index = Index.of(trail.store)
        index.catch_up(trail.store)
        trail.append(kinds.DECISION, decision(context={"amount": 9}))
        index.catch_up(trail.store)
        incremental = rows(index)

        monkeypatch.setattr(index_module, "CHUNK", 5000)
        assert index.rebuild(trail.store) == len(STORY) + 1
        assert rows(index) == incremental

    def test_two_indexes_share_one_table(self, trail: Trail) -> None:
        """A second process's index sees what the first folded in and adds nothing."""
        first, second = Index.of(trail.store), Index.of(trail.store)
        first.catch_up(trail.store)

        assert second.catch_up(trail.store) == 0
        assert rows(second) == rows(first)

    def test_older_version_is_rebuilt(
        self, trail: Trail, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """An index written by another version is dropped and folded anew."""
        Index.of(trail.store).catch_up(trail.store)
        monkeypatch.setattr(index_module, "VERSION", index_module.VERSION + 1)
        index = Index.of(trail.store)

        assert index.applied() == 0
        assert index.catch_up(trail.store) == len(STORY)

    def test_bulk_load_builds_indexes_after(
        self, trail: Trail, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A large backlog on an empty index loads first and still ends indexed."""
        monkeypatch.setattr(index_module, "BULK", 1)
        index = Index.of(trail.store)

        assert index.catch_up(trail.store) == len(STORY)
        assert [idx for idx, _ in index.task(OTHER)] == [len(STORY) - 1]

    def test_caught_up_index_reads_only(
        self, trail: Trail, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Once caught up, a new reader answers without any write transaction."""
        Index.of(trail.store).catch_up(trail.store)
        reader = Index.of(trail.store)

        def refuse() -> None:
            raise AssertionError("a caught-up index opened a write transaction")

        monkeypatch.setattr(reader.sql, "transaction", refuse)

        assert reader.catch_up(trail.store) == 0
        assert len(reader.task(TASK)) == 11

    def test_store_without_sql_is_refused(self) -> None:
        """A store that offers no projection SQL cannot have an entry index."""

        class Bare:
            pass

        with pytest.raises(StoreError, match="offers no sql"):
            Index.of(Bare())  # type: ignore[arg-type]


class TestReading:
    @pytest.fixture
    def index(self, trail: Trail) -> Index:
        index = Index.of(trail.store)
        index.catch_up(trail.store)
        return index

    def test_select_newest_first_and_pages(self, index: Index) -> None:
        """Matching entries come newest first; ``before`` pages further back."""
        m = index.marker
        first = index.select(f"i.type = {m}", [kinds.DECISION], limit=2)
        rest = index.select(
            f"i.type = {m}", [kinds.DECISION], limit=10, before=first[-1][0]
        )

        assert [idx for idx, _ in first] == [12, 9]
        assert [idx for idx, _ in rest] == [7, 4]
        assert entries.decode(first[0][1])["index"] == 12

    def test_task_in_ledger_order(self, index: Index) -> None:
        """A task's entries come back in order, bodies from the ledger."""
        found = index.task(TASK)

        assert [idx for idx, _ in found] == list(range(1, 12))

    def test_related_entries(self, index: Index) -> None:
        """Entries about a decision or naming an approval come back once each."""
        found = [idx for idx, _ in index.related([7, 9], [APPROVAL])]

        assert found == [4, 5, 6, 7, 8, 10]

    def test_bodies_by_index(self, index: Index) -> None:
        """Entries are read by index; missing ones are simply absent."""
        found = index.bodies([0, 3, 999])

        assert sorted(found) == [0, 3]
        assert entries.decode(found[3])["text"] == "acme is due"

    def test_actions_seen(self, index: Index) -> None:
        """Every action uid the ledger holds is listed once."""
        assert len(index.actions()) == 3

    def test_activity_counts(self, index: Index) -> None:
        """Decisions are counted per bucket, agent and outcome."""
        counts = index.activity(0, 2**62, 2**62, None)

        assert {(outcome, count) for _, _, outcome, count in counts} == {
            ("allow", 2),
            ("deny", 1),
            ("needs_approval", 1),
        }


def written_at(store: SqliteStore, stamps: list[str]) -> None:
    """Append one decision per time stamp, as writers with these clocks would."""
    edge = merkle.CompactRange()
    rows, nodes = [], []
    for at, stamp in enumerate(stamps):
        data = entries.encode(at, stamp, kinds.DECISION, decision())
        rows.append(data)
        nodes.extend(edge.append(merkle.leaf_hash(data)))
    store.append(Batch(0, rows, nodes))


class TestTimes:
    STAMPS = (
        "2026-12-03T10:00:00Z",
        "2026-12-03T10:05:00Z",
        "2026-12-03T10:03:00Z",
        "2026-12-03T10:10:00Z",
    )

    @pytest.fixture
    def index(self, tmp_path: Path) -> Iterator[Index]:
        with SqliteStore(tmp_path / "l.db") as store:
            written_at(store, list(self.STAMPS))
            index = Index.of(store)
            index.catch_up(store)
            yield index

    def in_range(self, index: Index, since: str | None, until: str | None) -> list[int]:
        clauses, bound = index.time_clauses(
            micros(since) if since else None, micros(until) if until else None
        )
        found = index.select(" AND ".join(clauses), bound, limit=10, descending=False)
        return [idx for idx, _ in found]

    def test_row_times_never_go_back(self, index: Index) -> None:
        """An entry stamped by a lagging clock is searched at its predecessor's time."""
        times = [row[COLUMNS.index("time_us")] for row in rows(index)]

        assert times == sorted(times)
        assert times[2] == micros(self.STAMPS[1])

    @pytest.mark.parametrize(
        ("since", "until", "expected"),
        [
            ("2026-12-03T10:04:00Z", None, [1, 2, 3]),
            (None, "2026-12-03T10:05:00Z", [0, 1, 2]),
            (None, "2026-12-03T10:04:00Z", [0]),
            ("2026-12-03T10:06:00Z", "2026-12-03T10:09:00Z", []),
            ("2026-12-03T11:00:00Z", None, []),
            (None, "2026-12-03T09:00:00Z", []),
            ("2026-12-03T10:00:00Z", "2026-12-03T10:10:00Z", [0, 1, 2, 3]),
        ],
    )
    def test_ranges_resolve_to_index_ranges(
        self, index: Index, since: str | None, until: str | None, expected: list[int]
    ) -> None:
        """A time range selects exactly the entries whose row time lies in it."""
        assert self.in_range(index, since, until) == expected

    def test_carries_the_floor_across_catch_ups(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A lagging entry folded in a later catch-up still gets the earlier time."""
        monkeypatch.setattr(index_module, "CHUNK", 2)
        with SqliteStore(tmp_path / "l.db") as store:
            written_at(store, list(self.STAMPS))
            index = Index.of(store)
            index.catch_up(store)
            times = [row[COLUMNS.index("time_us")] for row in rows(index)]

        assert times[2] == micros(self.STAMPS[1])


class TestProjectionSql:
    def test_names_must_be_identifiers(self, tmp_path: Path) -> None:
        """A table name that is not a lowercase identifier is refused."""
        with (
            SqliteStore(tmp_path / "l.db") as store,
            pytest.raises(StoreError, match="not an identifier"),
        ):
            store.projections().table('x"; drop table entries; --')

    def test_ledger_tables_stay_append_only(self, trail: Trail) -> None:
        """A projection transaction cannot change the ledger's entries."""
        sql = trail.store.projections()  # type: ignore[attr-defined]
        with pytest.raises(StoreError, match="refused"), sql.transaction() as tx:
            tx.execute(f"DELETE FROM {sql.table('entries')}")

        assert trail.store.size() == len(STORY)

    def test_failed_transaction_rolls_back(self, trail: Trail) -> None:
        """A statement that fails undoes the whole projection transaction."""
        sql = trail.store.projections()  # type: ignore[attr-defined]
        table = sql.table("scratch")
        with sql.transaction() as tx:
            tx.execute(f"CREATE TABLE {table} (n INTEGER)")

        def fill() -> None:
            with sql.transaction() as tx:
                tx.insert(table, ["n"], [[1], [2]])
                tx.execute("SELECT * FROM no_such_table")

        with pytest.raises(StoreError, match="failed"):
            fill()

        assert sql.query(f"SELECT count(*) FROM {table}") == [(0,)]
