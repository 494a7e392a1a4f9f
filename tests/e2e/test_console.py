"""The console in a real browser: an approver signs in, approves a held transfer and
the agent's retry goes through; the timeline shows the earlier breach; a signed-out
visitor sees nothing but the sign-in page. Screenshots of the main pages are kept
under tests/e2e/artifacts/."""

from __future__ import annotations

from pathlib import Path

from playwright.sync_api import Page, expect

from tests.integration.web.scenario import PAY, REASONING, TRANSFER, Story


def sign_in(page: Page, served: str, key: str) -> None:
    page.goto(f"{served}/console/sign-in")
    page.get_by_label("API key").fill(key)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("button", name="Sign out")).to_be_visible()


def shoot(page: Page, artifacts: Path, name: str) -> None:
    page.screenshot(path=str(artifacts / f"{name}.png"), full_page=True)


class TestSignedOut:
    def test_visitor_sees_only_the_sign_in_page(
        self, page: Page, served: str, story: Story, artifacts: Path
    ) -> None:
        """Every console address lands a signed-out visitor on the sign-in form."""
        for path in ("tasks", f"tasks/{story.task.id}", "approvals", "search"):
            page.goto(f"{served}/console/{path}")

            assert page.url.startswith(f"{served}/console/sign-in")
            expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
            expect(page.get_by_text("ap-clerk@example.com")).to_have_count(0)
        shoot(page, artifacts, "1-sign-in")

    def test_wrong_key_is_refused(self, page: Page, served: str) -> None:
        """A wrong key shows why, and the visitor stays signed out."""
        page.goto(f"{served}/console/sign-in")
        page.get_by_label("API key").fill("pk_000000000000_" + "A" * 43)
        page.get_by_role("button", name="Sign in").click()

        expect(page.get_by_role("alert")).to_contain_text("not accepted")
        page.goto(f"{served}/console/tasks")
        assert page.url.startswith(f"{served}/console/sign-in")


class TestApproval:
    def test_approver_approves_and_the_retry_goes_through(
        self, page: Page, served: str, story: Story, artifacts: Path
    ) -> None:
        """The controller sees the held transfer with its context, approves it
        with a reason, and the agent's retry with the approval id is allowed."""
        sign_in(page, served, story.keys["controller"])
        shoot(page, artifacts, "2-tasks")
        page.get_by_role("link", name="Approvals").click()
        card = page.locator(f"article#{story.approval}")

        expect(card).to_contain_text("CreatePayment")
        expect(card).to_contain_text("12,000")
        expect(card).to_contain_text("Pay December's supplier invoices")
        expect(card).to_contain_text(REASONING)
        shoot(page, artifacts, "3-approvals-inbox")
        card.get_by_label("Reason for approving").fill("invoice inv-7 matches the PO")
        card.get_by_role("button", name="Approve this call").click()

        expect(page.get_by_role("status")).to_contain_text(f"approved {story.approval}")
        shoot(page, artifacts, "3b-approvals-answered")
        retry = story.agent.send(PAY, dict(TRANSFER), approval=story.approval)
        assert retry.allowed
        story.runtime.ledger.checkpoint()
        page.goto(f"{served}/console/entries/{retry.entry}")
        expect(page.locator("body")).to_contain_text("invoice inv-7 matches the PO")
        expect(page.locator(".status")).to_contain_text("OK")
        expect(page.locator(".proof-ok").first).to_be_visible()
        shoot(page, artifacts, "5-entry-story")
        page.get_by_role("link", name=f"Task {story.task.id}").click()
        expect(page.locator(".timeline .event.tone-approval").last).to_contain_text(
            "granted by controller@example.com"
        )
        expect(page.locator(".timeline .event.tone-allow").last).to_contain_text(
            "allowed CreatePayment"
        )
        shoot(page, artifacts, "4b-task-timeline-after-approval")

    def test_auditor_reads_but_cannot_approve(
        self, page: Page, served: str, story: Story
    ) -> None:
        """An auditor sees the held transfer but has no form to answer it."""
        sign_in(page, served, story.keys["auditor"])
        page.goto(f"{served}/console/approvals")
        card = page.locator(f"article#{story.approval}")

        expect(card).to_contain_text("12,000")
        expect(card.get_by_role("button")).to_have_count(0)
        expect(card).to_contain_text("only an approver can answer it")


class TestTimeline:
    def test_timeline_shows_the_earlier_breach(
        self, page: Page, served: str, story: Story, artifacts: Path
    ) -> None:
        """The task's timeline marks the breach before the held transfer."""
        sign_in(page, served, story.keys["auditor"])
        page.get_by_role("link", name=story.task.id).click()
        breach = page.locator(".timeline .event.tone-breach", has_text="BREACH:")
        held = page.locator(".timeline .event.tone-held").first

        expect(breach).to_contain_text("CreateVendor is outside scope")
        expect(held).to_contain_text("CreatePayment")
        assert breach.bounding_box()["y"] < held.bounding_box()["y"]  # type: ignore[index]
        shoot(page, artifacts, "4-task-timeline")


class TestReading:
    def test_search_and_agents(
        self, page: Page, served: str, story: Story, artifacts: Path
    ) -> None:
        """Search finds the transfer by amount; the agents page draws its bars."""
        sign_in(page, served, story.keys["auditor"])
        page.goto(f"{served}/console/search")
        page.get_by_label("Action").fill("CreatePayment")
        page.get_by_label("Context, one comparison a line").fill("amount>=10000")
        page.get_by_role("button", name="Search").click()

        expect(page.locator("table.findings")).to_contain_text("12,000")
        shoot(page, artifacts, "6-search")
        page.get_by_role("link", name="Agents").click()
        expect(page.locator("section.agent")).to_contain_text("ledger-bot")
        expect(page.locator("svg.bars path.bar-allow").first).to_be_visible()
        shoot(page, artifacts, "7-agents")

    def test_breach_entry_story(
        self, page: Page, served: str, story: Story, artifacts: Path
    ) -> None:
        """The breach's entry tells the call's story with its proof."""
        sign_in(page, served, story.keys["auditor"])
        page.goto(f"{served}/console/entries/{story.breach.breach}")

        expect(page.locator("h1")).to_contain_text("denied")
        expect(page.locator("body")).to_contain_text("outside scope")
        expect(page.locator(".status")).to_contain_text("OK")
        shoot(page, artifacts, "8-breach-story")
