"""Stories from entries alone: a task's events in order with their tones, and the
story of one decision with its task, reasoning, approval, outcome and breach."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from proctor import kinds
from proctor.forensics.story import (
    ALLOW,
    APPROVAL,
    BREACH,
    HELD,
    approval_story,
    cited_indexes,
    decision_story,
    reasoned,
    task_story,
)

from .conftest import APPROVAL as APPROVAL_ID
from .conftest import DIGEST, OTHER, STORY, TASK, decision

NOW = datetime(2026, 12, 3, 15, 0, tzinfo=UTC)


def written() -> list[dict[str, Any]]:
    """The conftest story as the ledger would hand it back, indexes and times set."""
    return [
        {
            **fields,
            "index": at,
            "time": f"2026-12-03T15:00:{at:02d}.000000Z",
            "type": kind,
        }
        for at, (kind, fields) in enumerate(STORY)
    ]


def of_task(task: str) -> list[dict[str, Any]]:
    return [entry for entry in written() if entry.get("task") == task]


class TestTaskStory:
    def test_events_in_ledger_order_with_tones(self) -> None:
        """Every entry of the task is one event, in order, toned by what it says."""
        story = task_story(TASK, list(reversed(of_task(TASK))), now=NOW)

        assert [event.index for event in story.events] == list(range(1, 12))
        assert [event.tone for event in story.events][3:] == [
            HELD,
            HELD,
            APPROVAL,
            ALLOW,
            "outcome",
            BREACH,
            BREACH,
            BREACH,
        ]

    def test_heading_facts(self) -> None:
        """The story names user, agent, request, scope and its approver."""
        story = task_story(TASK, of_task(TASK), now=NOW)

        assert (story.user, story.agent) == ("alice@example.com", "ledger-bot")
        assert story.request == "Pay December's invoices"
        assert story.roles == ("controller",)
        assert [s.approver for s in story.signoffs] == ["controller@example.com"]
        assert (story.state, story.ended) == ("quarantined", 11)

    def test_released_call_names_its_approver(self) -> None:
        """The allowed payment's line says who granted its approval, and where."""
        story = task_story(TASK, of_task(TASK), now=NOW)
        released = next(event for event in story.events if event.index == 7)

        assert "granted by controller@example.com #6" in released.summary
        assert 6 in released.links

    def test_counts_by_outcome(self) -> None:
        """Decisions are counted per outcome, other entries per type."""
        counts = task_story(TASK, of_task(TASK), now=NOW).counts

        assert counts["decision.allow"] == 1
        assert counts["decision.needs_approval"] == 1
        assert counts["decision.deny"] == 1
        assert counts["breach"] == 1

    @pytest.mark.parametrize(
        ("extra", "state"),
        [
            ([], "pending_approval"),
            ([(kinds.TASK_APPROVED, {"approver": "c"})], "active"),
            ([(kinds.TASK_CLOSED, {"by": "x"}), (kinds.TASK_REVOKED, {})], "closed"),
        ],
    )
    def test_state_folds_like_the_authority(
        self, extra: list[tuple[str, dict[str, Any]]], state: str
    ) -> None:
        """Pending until approved, then the first ending stands."""
        opened = of_task(TASK)[0]
        found = [opened] + [
            {
                **fields,
                "task": TASK,
                "index": 20 + n,
                "time": opened["time"],
                "type": kind,
            }
            for n, (kind, fields) in enumerate(extra)
        ]

        assert task_story(TASK, found, now=NOW).state == state

    def test_expired_when_past_its_expiry(self) -> None:
        """A live task past its expiry reads expired."""
        story = task_story(
            TASK, of_task(TASK)[:2], now=datetime(3000, 1, 1, tzinfo=UTC)
        )

        assert story.state == "expired"

    def test_unknown_entry_types_still_show(self) -> None:
        """An entry type this version does not know is shown as it is."""
        entry = {"index": 1, "time": "t", "type": "future.thing", "task": OTHER, "x": 1}

        assert (
            task_story(OTHER, [entry], now=NOW)
            .events[0]
            .summary.startswith("future.thing")
        )


class TestDecisionStory:
    def story(self, at: int) -> Any:
        entries = written()
        decision_entry = entries[at]
        cited = {
            i: entries[i]
            for i in cited_indexes(decision_entry)
            | cited_indexes(reasoned(decision_entry, entries))
        }
        return decision_story(decision_entry, cited, entries)

    def test_released_payment(self) -> None:
        """The released call names task, request, scope approver, approval, outcome."""
        story = self.story(7)

        assert story.task.request == "Pay December's invoices"
        assert story.task.scope_approval is not None
        assert story.task.scope_approval.approver == "controller@example.com"
        assert story.approval is not None
        assert story.approval.state == "used"
        assert [s.approver for s in story.approval.signoffs] == [
            "controller@example.com"
        ]
        assert story.approval.binds is True
        assert (story.approval.held, story.approval.released) == (4, 7)
        assert story.completion is not None
        assert story.completion.status == 201
        assert story.policy is not None
        assert story.policy.matches

    def test_held_call_keeps_its_reasoning(self) -> None:
        """The held call links the reasoning recorded before it."""
        story = self.story(4)

        assert [step.text for step in story.reasoning] == ["acme is due"]
        assert story.evidence["reasoning 1"] == 3
        assert story.evidence["released"] == 7

    def test_released_call_shows_the_held_calls_reasoning(self) -> None:
        """A call released by an approval tells the reasoning behind the first try."""
        story = self.story(7)

        assert [step.index for step in story.reasoning] == [3]
        assert story.evidence["reasoning 1"] == 3

    def test_breach_and_quarantine(self) -> None:
        """A breaching call's story names its breach entry and the quarantine."""
        story = self.story(9)

        assert story.breach
        assert story.breach_record is not None
        assert (story.breach_record.index, story.breach_record.quarantined) == (10, 11)
        assert story.evidence["quarantine"] == 11

    def test_evidence_names_every_entry(self) -> None:
        """The entries that prove the released payment are all named."""
        evidence = self.story(7).evidence

        assert sorted(evidence.values()) == [0, 1, 2, 3, 4, 5, 6, 7, 8]

    def test_policy_digest_mismatch_is_shown(self) -> None:
        """A decision citing a policy entry of another digest says so."""
        entries = written()
        wrong = {**entries[7], "policy_set": "00" * 32}
        story = decision_story(wrong, {0: entries[0]}, [])

        assert story.policy is not None
        assert not story.policy.matches


class TestApprovalStory:
    def test_denied(self) -> None:
        """A denial makes the approval denied, naming who refused."""
        entries = [
            *written()[4:6],
            {
                "index": 6,
                "time": "t",
                "type": kinds.APPROVAL_DENIED,
                "approval": APPROVAL_ID,
                "approver": "cfo@example.com",
                "reason": "no",
            },
        ]
        story = approval_story(APPROVAL_ID, entries[0], entries)

        assert story.state == "denied"
        assert [s.granted for s in story.signoffs] == [False]

    def test_other_digest_does_not_bind(self) -> None:
        """An approval for another request digest is flagged."""
        entries = written()
        other = decision(request_digest="99" * 32, approval=APPROVAL_ID)
        story = approval_story(APPROVAL_ID, other, entries)

        assert story.request_digest == DIGEST
        assert story.binds is False

    def test_pending_until_every_role(self) -> None:
        """Without an answer the approval is pending."""
        entries = written()[4:6]

        assert approval_story(APPROVAL_ID, entries[0], entries).state == "pending"
