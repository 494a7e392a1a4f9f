"""Forensics over a real ledger: traces, explanations that follow any entry about a
call to its decision, searches that name the approver, and breaches."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from proctor.errors import QueryError, StoreError, TaskError
from proctor.forensics import Forensics, build_query

from .conftest import ORIGIN, OTHER, STORY, TASK, Trail


@pytest.fixture
def forensics(trail: Trail) -> Forensics:
    return Forensics(trail.store, verifiers=[trail.verifier], origin=ORIGIN)


class TestTrace:
    def test_tells_the_task(self, forensics: Forensics) -> None:
        """The trace holds every entry of the task, in order."""
        story = forensics.trace(TASK)

        assert [event.index for event in story.events] == list(range(1, 12))
        assert story.state == "quarantined"

    def test_unknown_task(self, forensics: Forensics) -> None:
        """A task no entry names is an error that says so."""
        with pytest.raises(TaskError, match="no entry names task"):
            forensics.trace("tsk_nope")


class TestExplain:
    def test_decision_with_proofs(self, forensics: Forensics) -> None:
        """A decision's story comes with every cited entry proved."""
        story = forensics.explain(7)

        assert story.asked is None
        assert story.approval is not None
        assert story.approval.signoffs[0].approver == "controller@example.com"
        assert [proof.index for proof in story.proofs] == sorted(
            set(story.evidence.values())
        )
        assert all(proof.verified for proof in story.proofs)

    @pytest.mark.parametrize(
        ("asked", "decision"), [(8, 7), (6, 4), (5, 4), (10, 9), (11, 9)]
    )
    def test_follows_entries_to_their_decision(
        self, forensics: Forensics, asked: int, decision: int
    ) -> None:
        """Completions, approvals, breaches and quarantines lead to their call."""
        story = forensics.explain(asked, proofs=False)

        assert (story.index, story.asked) == (decision, asked)
        assert story.proofs == ()

    def test_entry_about_no_call(self, forensics: Forensics) -> None:
        """A reasoning step is not a call; explain says what it follows."""
        with pytest.raises(QueryError, match="not about a call"):
            forensics.explain(3)

    def test_missing_entry(self, forensics: Forensics) -> None:
        """An index beyond the ledger is the store's error."""
        with pytest.raises(StoreError, match="no entry at index"):
            forensics.explain(999)


class TestFind:
    def test_who_approved_the_big_payment(self, forensics: Forensics) -> None:
        """Payments of 1,000,000 or more come back with approver and request."""
        found = forensics.find(
            build_query(actions=["CreatePayment"], where=["amount>=1000000"])
        )

        assert [finding.index for finding in found.results] == [7, 4]
        released = found.results[0].story
        assert released is not None
        assert released.approval is not None
        (signoff,) = released.approval.signoffs
        assert (signoff.approver, signoff.index) == ("controller@example.com", 6)
        assert released.request["body"] == {"amount": 1_500_000, "vendor": "acme"}
        assert released.approval.binds is True
        assert not found.more

    @pytest.mark.parametrize(
        ("filters", "expected"),
        [
            ({"user": "bob@example.com"}, [12]),
            ({"task": OTHER}, [12]),
            ({"agent": "ledger-bot"}, [12, 9, 7, 4]),
            ({"decision": "deny"}, [9]),
            ({"decision": "needs_approval"}, [4]),
            ({"breach": True}, [9]),
            ({"where": ["vendor=acme"]}, [7, 4]),
            ({"where": ["vendor!=acme"]}, [9]),
            ({"where": ["amount<1000000"]}, []),
            ({"actions": ['Payments::Action::"ReadInvoice"']}, [12]),
            ({"since": "2000-01-01", "until": "2999-01-01"}, [12, 9, 7, 4]),
            ({"since": "2999-01-01"}, []),
            ({"types": ["approval.granted", "breach"]}, [10, 6]),
        ],
    )
    def test_filters(
        self, forensics: Forensics, filters: dict[str, object], expected: list[int]
    ) -> None:
        """Each filter narrows the results to the entries it names, newest first."""
        found = forensics.find(build_query(**filters))  # type: ignore[arg-type]

        assert [finding.index for finding in found.results] == expected

    def test_other_entry_types_have_no_story(self, forensics: Forensics) -> None:
        """Only decisions carry a story; other entries come back as they are."""
        found = forensics.find(build_query(types=["approval.granted"]))

        assert found.results[0].story is None
        assert found.results[0].entry["approver"] == "controller@example.com"

    def test_limit_says_there_is_more(self, forensics: Forensics) -> None:
        """A limit reached is reported, with the newest kept."""
        found = forensics.find(build_query(limit=1))

        assert [finding.index for finding in found.results] == [12]
        assert found.more

    def test_scan_stops_and_says_so(
        self, forensics: Forensics, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A search checking entries one by one stops at its budget and says so."""
        monkeypatch.setattr("proctor.forensics.service.SCAN_PAGE", 1)
        found = forensics.find(build_query(where=["vendor=nobody"]), scan=2)

        assert found.results == ()
        assert found.more
        assert found.note is not None
        assert "narrow the search" in found.note

    @pytest.mark.parametrize("probe", [0, 5000])
    def test_wide_and_narrow_searches_agree(
        self, forensics: Forensics, monkeypatch: pytest.MonkeyPatch, probe: int
    ) -> None:
        """Walking an index newest first finds what reading every candidate does."""
        monkeypatch.setattr("proctor.forensics.service.PROBE", probe)
        monkeypatch.setattr("proctor.forensics.service.SCAN_PAGE", 2)
        found = forensics.find(build_query(where=["vendor=acme"], limit=5))

        assert [finding.index for finding in found.results] == [7, 4]

    def test_unknown_action_name(self, forensics: Forensics) -> None:
        """A short action name the ledger never saw finds nothing and says so."""
        found = forensics.find(build_query(actions=["Launch"]))

        assert found.results == ()
        assert found.note == "no action in the ledger is named Launch"

    def test_proofs_on_request(self, forensics: Forensics) -> None:
        """With proofs asked for, every story's entries are proved."""
        found = forensics.find(build_query(decision="allow"), proofs=True)

        for finding in found.results:
            assert finding.story is not None
            assert finding.story.proofs
            assert all(proof.verified for proof in finding.story.proofs)

    def test_new_entries_are_found_at_once(
        self, trail: Trail, forensics: Forensics
    ) -> None:
        """A search catches the index up first, so a fresh entry is found."""
        forensics.find(build_query())
        index = trail.append("decision", dict(STORY[12][1], outcome="deny"))

        assert forensics.find(build_query(limit=1)).results[0].index == index


class TestBreaches:
    def test_lists_breaches_with_quarantine(self, forensics: Forensics) -> None:
        """Each breach names its breach entry and the quarantine that followed."""
        found = forensics.breaches(build_query())

        (finding,) = found.results
        assert finding.story is not None
        assert finding.story.breach_record is not None
        assert finding.story.breach_record.quarantined == 11

    def test_other_filters_still_apply(self, forensics: Forensics) -> None:
        """Breaches of another task are not listed."""
        assert forensics.breaches(build_query(task=OTHER)).results == ()


class TestActivity:
    def test_counts_per_agent_and_outcome(self, forensics: Forensics) -> None:
        """Decisions are counted per bucket, agent and outcome."""
        counts = forensics.activity(
            since=datetime(2000, 1, 1, tzinfo=UTC),
            until=datetime(2999, 1, 1, tzinfo=UTC),
            bucket=86_400 * 365 * 1000,
        )

        assert sum(row.count for row in counts) == 4
        assert {row.agent for row in counts} == {"ledger-bot"}
