"""What the console must never do: render markup from entries, show a secret, or be
framed, cached or scripted."""

from __future__ import annotations

from proctor.tasks.service import ScopeText

from .conftest import Browser
from .scenario import ASSETS, CANARY, Story

MARKUP = '<script>alert("x")</script><img src=x onerror=alert(1)>'


class TestEscaping:
    def test_markup_in_entries_is_escaped(self, auditor: Browser, story: Story) -> None:
        """A request and reasoning holding markup are shown as text."""
        scope = (ASSETS / "scopes" / "invoices.toml").read_text(encoding="utf-8")
        task = story.runtime.service.open_task(
            user="ap-clerk@example.com",
            agent="ledger-bot",
            request=MARKUP,
            scope=ScopeText.parse(scope, format="toml"),
            by="test",
        )
        pages = [
            auditor.get("/console/tasks").text,
            auditor.get(f"/console/tasks/{task.id}").text,
            auditor.get(f"/console/entries/{task.opened}").text,
        ]

        for page in pages:
            assert "<script>" not in page
            assert "<img src=x" not in page
            assert "&lt;script&gt;" in page


class TestSecrets:
    def test_vault_value_never_reaches_a_page(
        self, auditor: Browser, story: Story
    ) -> None:
        """The credential's value, sent by the agent in a call, is on no page."""
        size = story.runtime.ledger.size
        paths = [
            "/console/tasks",
            f"/console/tasks/{story.task.id}",
            "/console/approvals",
            "/console/agents",
            "/console/search?types=decision&limit=100&go=1",
            *(f"/console/entries/{index}" for index in range(size)),
        ]

        for path in paths:
            assert CANARY not in auditor.get(path).text, path


class TestHeaders:
    def test_pages_carry_security_headers(self, auditor: Browser) -> None:
        """No scripts, no framing, no sniffing, no caching of pages."""
        response = auditor.get("/console/tasks")
        policy = response.headers["content-security-policy"]

        assert "default-src 'none'" in policy
        assert "frame-ancestors 'none'" in policy
        assert "script-src" not in policy
        assert response.headers["x-frame-options"] == "DENY"
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["cache-control"] == "no-store"

    def test_pages_hold_no_script(self, auditor: Browser, story: Story) -> None:
        """The console works without JavaScript: no page carries a script."""
        for path in ("/console/tasks", f"/console/tasks/{story.task.id}"):
            assert "<script" not in auditor.get(path).text
