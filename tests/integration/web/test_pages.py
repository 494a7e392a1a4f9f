"""The console's pages render the facts that answer "who approved this, and why was
it allowed?": tasks with their state, the timeline, an entry's story with proofs and
the ledger's verification status, search, and calls per agent."""

from __future__ import annotations

import re
import sqlite3

import pytest

from proctor.web.format import short_action

from .conftest import Browser
from .scenario import PAY, REASONING, TRANSFER, Story


def grant(person: Browser, story: Story) -> None:
    token = person.csrf("/console/approvals")
    person.post(
        f"/console/approvals/{story.approval}/grant",
        data={"csrf": token, "reason": "invoice checked"},
    )


class TestTasks:
    def test_lists_tasks_with_state(self, auditor: Browser, story: Story) -> None:
        """The task is listed with its state, user, agent and scope approver."""
        page = auditor.get("/console/tasks").text

        assert story.task.id in page
        assert "tone-state-active" in page
        assert "ap-clerk@example.com" in page
        assert "ledger-bot" in page
        assert "controller@example.com" in page

    def test_filters_by_state(self, auditor: Browser, story: Story) -> None:
        """A state filter with no match lists nothing."""
        page = auditor.get("/console/tasks?state=quarantined").text

        assert story.task.id not in page
        assert "No tasks here." in page


class TestTimeline:
    def test_draws_a_timeline_with_the_breach_marked(
        self, auditor: Browser, story: Story
    ) -> None:
        """Every entry is a dot on the line, the breach flagged and linked."""
        page = auditor.get(f"/console/tasks/{story.task.id}").text
        breach = story.breach.breach

        assert '<ol class="timeline"' in page
        assert f'class="event tone-breach" id="e{breach}"' in page
        assert f"⚠ breach #{breach}" in page
        assert "BREACH: CreateVendor is outside scope" in page
        assert 'class="event tone-held"' in page
        assert 'class="event tone-allow"' in page
        assert "scope approved by controller@example.com" in page

    def test_marks_the_approval_once_given(
        self, controller: Browser, story: Story
    ) -> None:
        """After the controller approves, the timeline shows the approval."""
        grant(controller, story)
        page = controller.get(f"/console/tasks/{story.task.id}").text

        assert "granted by controller@example.com" in page
        assert 'class="event tone-approval"' in page

    def test_unknown_task_is_not_found(self, auditor: Browser) -> None:
        """A task no entry names is a 404 page."""
        response = auditor.get("/console/tasks/tsk_nothing")

        assert response.status_code == 404
        assert "no entry names task" in response.text


class TestEntry:
    def test_story_of_the_held_call(self, auditor: Browser, story: Story) -> None:
        """The held call's story: the call, its task, reasoning, approval asked,
        and every cited entry proven against the checkpoint."""
        page = auditor.get(f"/console/entries/{story.held.entry}").text

        assert short_action(PAY) in page
        assert "12,000" in page
        assert REASONING in page
        assert story.approval in page
        assert "Ledger verification" in page
        assert "<strong>OK</strong>" in page
        assert "✓ included" in page
        assert "✗" not in page

    def test_released_call_names_its_approver(
        self, controller: Browser, story: Story
    ) -> None:
        """After approval and retry, the released call names who approved it, why,
        and that the approval binds this exact request."""
        grant(controller, story)
        retry = story.agent.send(PAY, dict(TRANSFER), approval=story.approval)
        story.runtime.ledger.checkpoint()
        page = controller.get(f"/console/entries/{retry.entry}").text

        assert "<strong>controller@example.com</strong>" in page
        assert "invoice checked" in page
        assert "the approval names this exact request digest" in page
        assert "returned 201" in page

    def test_other_entries_get_their_own_proof(
        self, auditor: Browser, story: Story
    ) -> None:
        """An entry about no call shows what it records and its proof."""
        page = auditor.get(f"/console/entries/{story.task.opened}").text

        assert "task opened by test" in page
        assert "The proof of entry" in page
        assert "✓ Verified just now" in page

    def test_entry_past_the_checkpoint_says_so(
        self, auditor: Browser, story: Story
    ) -> None:
        """An entry newer than the latest checkpoint is shown as not proven yet."""
        index = story.runtime.service.record_reasoning(
            story.task, "one more thought", source="api"
        )
        page = auditor.get(f"/console/entries/{index}").text

        assert "newer than the latest checkpoint" in page

    def test_unknown_entry_is_not_found(self, auditor: Browser) -> None:
        """An index past the end of the ledger is a 404 page."""
        response = auditor.get("/console/entries/99999")

        assert response.status_code == 404

    def test_tampering_shows_as_failed(self, auditor: Browser, story: Story) -> None:
        """An entry changed in the database turns the status FAILED, naming it."""
        database = story.runtime.home.ledger_db
        with sqlite3.connect(database) as connection:
            connection.execute("DROP TRIGGER entries_no_update")
            body = connection.execute(
                "SELECT body FROM entries WHERE idx = 1"
            ).fetchone()[0]
            connection.execute(
                "UPDATE entries SET body = ? WHERE idx = 1",
                (bytes(body).replace(b"December", b"Decembre"),),
            )
        page = auditor.get(f"/console/entries/{story.held.entry}").text

        assert "<strong>FAILED</strong>" in page
        assert "entry 1 differs from what was signed" in page


class TestSearch:
    def test_finds_the_large_transfer(self, auditor: Browser, story: Story) -> None:
        """``action=CreatePayment`` and ``amount>=10000`` find the held transfer."""
        page = auditor.get(
            "/console/search",
            params={"action": "CreatePayment", "where": "amount>=10000"},
        ).text

        assert f'href="/console/entries/{story.held.entry}"' in page
        assert "12,000" in page
        assert "1 found" in page

    def test_names_the_approver_once_approved(
        self, controller: Browser, story: Story
    ) -> None:
        """Who approved the transfer: the search answers with the approver."""
        grant(controller, story)
        story.agent.send(PAY, dict(TRANSFER), approval=story.approval)
        page = controller.get(
            "/console/search",
            params={"action": "CreatePayment", "decision": "allow"},
        ).text

        assert "<strong>controller@example.com</strong>" in page

    def test_breaches_only(self, auditor: Browser, story: Story) -> None:
        """The breach filter finds the breaching call and nothing else."""
        page = auditor.get("/console/search", params={"breach": "1"}).text

        assert f'href="/console/entries/{story.breach.entry}"' in page
        assert "1 found" in page

    def test_bad_filter_is_explained(self, auditor: Browser) -> None:
        """A malformed comparison is answered 400 with what is wrong."""
        response = auditor.get("/console/search", params={"where": "amount>>1"})

        assert response.status_code == 400
        assert "--where" in response.text

    def test_form_alone_searches_nothing(self, auditor: Browser) -> None:
        """The empty form shows no results until it is submitted."""
        page = auditor.get("/console/search").text

        assert "found" not in page


class TestAgents:
    def test_draws_bars_per_agent(self, auditor: Browser) -> None:
        """Each agent gets an inline SVG chart of allowed, held and denied calls."""
        page = auditor.get("/console/agents?since=24h").text

        assert "ledger-bot" in page
        assert re.search(r'<path class="bar-allow" d="M[0-9.]+ [0-9.]+h', page)
        assert 'class="bar-deny"' in page
        assert 'class="bar-held"' in page
        assert "1 allowed" in page

    def test_bad_range_is_explained(self, auditor: Browser) -> None:
        """A since that is not a time is answered 400."""
        response = auditor.get("/console/agents?since=yesterday")

        assert response.status_code == 400
        assert "neither RFC 3339" in response.text


class TestIndexLag:
    def test_pages_wait_for_a_far_behind_index(
        self, auditor: Browser, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """An index far behind the ledger is caught up in the background while
        pages say so, rather than one page folding a million entries."""
        monkeypatch.setattr("proctor.web.pages.BEHIND", -1)
        response = auditor.get("/console/tasks")

        assert response.status_code == 503
        assert "catching up" in response.text
