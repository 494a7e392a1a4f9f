"""The approvals inbox: full context for each held call, answers only from a
matching approver, recorded with their reason, and the agent's retry released."""

from __future__ import annotations

from proctor import kinds
from proctor.ledger import entries
from proctor.tasks.state import ApprovalState

from .conftest import Browser
from .scenario import PAY, REASONING, REQUEST, TRANSFER, Story


def answer(person: Browser, story: Story, verb: str, reason: str) -> int:
    token = person.csrf("/console/approvals")
    response = person.post(
        f"/console/approvals/{story.approval}/{verb}",
        data={"csrf": token, "reason": reason},
    )
    return response.status_code


def recorded(story: Story, kind: str) -> list[dict[str, object]]:
    store = story.runtime.ledger.store
    found = [entries.decode(body) for body in store.entries()]
    return [entry for entry in found if entry["type"] == kind]


class TestInbox:
    def test_shows_the_held_call_in_full(
        self, controller: Browser, story: Story
    ) -> None:
        """Task, the user's request, reasoning, the exact call and its amount."""
        page = controller.get("/console/approvals").text

        assert story.approval in page
        assert story.task.id in page
        assert REQUEST.replace("'", "&#39;") in page
        assert REASONING in page
        assert "CreatePayment" in page
        assert "12,000" in page
        assert "POST /payments" in page
        assert f'action="/console/approvals/{story.approval}/grant"' in page

    def test_nav_counts_what_waits(self, controller: Browser) -> None:
        """The header shows how many calls wait for a person."""
        page = controller.get("/console/tasks").text

        assert '<span class="count">1</span>' in page

    def test_auditor_reads_without_forms(self, auditor: Browser, story: Story) -> None:
        """An auditor sees the held call but no form to answer it."""
        page = auditor.get("/console/approvals").text

        assert story.approval in page
        assert "12,000" in page
        assert "/grant" not in page
        assert "only an approver can answer it" in page

    def test_other_approval_role_sees_why_not(self, app: object, story: Story) -> None:
        """An approver for another role is told which role the call needs."""
        treasurer = Browser(app)
        try:
            treasurer.sign_in(story.keys["treasurer"])
            page = treasurer.get("/console/approvals").text
        finally:
            treasurer.close()

        assert "this needs controller; you approve as treasurer" in page
        assert "/grant" not in page


class TestAnswers:
    def test_auditor_cannot_approve(self, auditor: Browser, story: Story) -> None:
        """An auditor's post, token and all, is refused and nothing is recorded."""
        status = answer(auditor, story, "grant", "looks fine")

        assert status == 403
        approval = story.runtime.service.require_approval(story.approval)
        assert approval.state is ApprovalState.PENDING
        assert recorded(story, kinds.APPROVAL_GRANTED) == []

    def test_approver_of_another_role_cannot_approve(
        self, app: object, story: Story
    ) -> None:
        """The service's role check holds: a treasurer cannot release this call."""
        treasurer = Browser(app)
        try:
            treasurer.sign_in(story.keys["treasurer"])
            status = answer(treasurer, story, "grant", "fine by me")
        finally:
            treasurer.close()

        assert status == 403
        approval = story.runtime.service.require_approval(story.approval)
        assert approval.state is ApprovalState.PENDING

    def test_approver_approves_and_the_retry_goes_through(
        self, controller: Browser, story: Story
    ) -> None:
        """The controller's approval is recorded with its reason and releases the
        agent's retry of that exact call."""
        token = controller.csrf("/console/approvals")
        response = controller.post(
            f"/console/approvals/{story.approval}/grant",
            data={"csrf": token, "reason": "invoice inv-7 checked against the PO"},
        )
        after = controller.get("/console/approvals").text
        retry = story.agent.send(PAY, dict(TRANSFER), approval=story.approval)

        assert response.status_code == 303
        assert response.headers["location"] == "/console/approvals"
        assert f"approved {story.approval}" in after
        granted = recorded(story, kinds.APPROVAL_GRANTED)
        assert [(g["approver"], g["reason"]) for g in granted] == [
            ("controller@example.com", "invoice inv-7 checked against the PO")
        ]
        assert retry.allowed
        assert story.runtime.service.require_approval(story.approval).state is (
            ApprovalState.USED
        )

    def test_approver_denies(self, controller: Browser, story: Story) -> None:
        """A denial is recorded and the agent's retry is refused."""
        status = answer(controller, story, "deny", "acme was paid last week")
        retry = story.agent.send(PAY, dict(TRANSFER), approval=story.approval)

        assert status == 303
        assert recorded(story, kinds.APPROVAL_DENIED)[0]["reason"] == (
            "acme was paid last week"
        )
        assert retry.status == 409

    def test_a_reason_is_required(self, controller: Browser, story: Story) -> None:
        """An answer without a reason is refused; nothing is recorded."""
        status = answer(controller, story, "grant", "   ")

        assert status == 400
        assert recorded(story, kinds.APPROVAL_GRANTED) == []

    def test_answering_twice_conflicts(self, controller: Browser, story: Story) -> None:
        """Once answered, an approval is no longer pending."""
        answer(controller, story, "grant", "checked")

        assert answer(controller, story, "deny", "changed my mind") == 409

    def test_unknown_approval(self, controller: Browser) -> None:
        """Answering an approval nobody asked for is refused."""
        token = controller.csrf("/console/approvals")
        response = controller.post(
            "/console/approvals/apr_0000/grant", data={"csrf": token, "reason": "x"}
        )

        assert response.status_code == 409
        assert "no approval" in response.text
