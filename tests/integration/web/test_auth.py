"""Sign-in, sessions and CSRF on the served console: a signed-out visitor sees only
the sign-in page, cookies are HttpOnly and SameSite=Strict, and every post needs the
session's own token."""

from __future__ import annotations

from typing import Any

import pytest

from proctor.tasks.state import ApprovalState

from .conftest import Browser
from .scenario import REQUEST, Story

PAGES = (
    "/console/tasks",
    "/console/approvals",
    "/console/search?action=CreatePayment",
    "/console/agents",
    "/console/entries/0",
)


class TestSignedOut:
    @pytest.mark.parametrize("path", PAGES)
    def test_every_page_sends_to_sign_in(self, browser: Browser, path: str) -> None:
        """A visitor without a session is redirected to sign in, and shown nothing."""
        response = browser.get(path)

        assert response.status_code == 303
        assert response.headers["location"].startswith("/console/sign-in?next=")
        assert response.text == ""

    def test_task_page_reveals_nothing(self, browser: Browser, story: Story) -> None:
        """Following the redirect lands on the sign-in form, without the task."""
        response = browser.get(f"/console/tasks/{story.task.id}", follow_redirects=True)

        assert response.url.path == "/console/sign-in"
        assert "API key" in response.text
        assert REQUEST not in response.text
        assert "ap-clerk@example.com" not in response.text

    def test_post_without_session_changes_nothing(
        self, browser: Browser, story: Story
    ) -> None:
        """An answer posted without a session is sent to sign in and not recorded."""
        response = browser.post(
            f"/console/approvals/{story.approval}/grant",
            data={"csrf": "x", "reason": "ok"},
        )

        assert response.status_code == 303
        approval = story.runtime.service.require_approval(story.approval)
        assert approval.state is ApprovalState.PENDING

    def test_stylesheet_is_public(self, browser: Browser) -> None:
        """The sign-in page's stylesheet loads without a session."""
        response = browser.get("/console/static/console.css")

        assert response.status_code == 200
        assert "timeline" in response.text

    def test_console_root_goes_to_tasks(self, controller: Browser) -> None:
        """The console's root sends a signed-in person to the tasks."""
        response = controller.get("/console/")

        assert response.status_code == 303
        assert response.headers["location"] == "/console/tasks"


class TestSignIn:
    def test_cookie_is_http_only_and_strict(
        self, browser: Browser, story: Story
    ) -> None:
        """On loopback http the cookie is HttpOnly, SameSite=Strict, not Secure."""
        response = browser.sign_in(story.keys["controller"])
        cookie = response.headers["set-cookie"]

        assert response.status_code == 303
        assert response.headers["location"] == "/console/tasks"
        assert cookie.startswith("proctor_console=")
        assert "HttpOnly" in cookie
        assert "SameSite=strict" in cookie
        assert "Path=/console/" in cookie
        assert "Max-Age=28800" in cookie
        assert "Secure" not in cookie

    def test_cookie_is_secure_over_https(self, app: Any, story: Story) -> None:
        """Over https the cookie is Secure and __Host- prefixed, with Path=/."""
        person = Browser(app, base_url="https://console.example.com")
        try:
            response = person.sign_in(story.keys["auditor"])
            cookie = response.headers["set-cookie"]
            page = person.get("/console/tasks")
        finally:
            person.close()

        assert cookie.startswith("__Host-proctor_console=")
        assert "Secure" in cookie
        assert "Path=/;" in cookie
        assert page.status_code == 200

    def test_plain_http_off_loopback_is_refused(self, app: Any, story: Story) -> None:
        """Automatic mode will not hand out a cookie without Secure over a network."""
        person = Browser(app, base_url="http://console.example.com")
        try:
            response = person.sign_in(story.keys["controller"])
        finally:
            person.close()

        assert response.status_code == 403
        assert "loopback only" in response.text
        assert "set-cookie" not in response.headers

    def test_wrong_key_is_refused(self, browser: Browser, story: Story) -> None:
        """A wrong key gets the form again with a reason, and no session."""
        real = story.keys["controller"]
        response = browser.sign_in(real[:-4] + "AAAA")

        assert response.status_code == 401
        assert "not accepted" in response.text
        assert browser.get("/console/tasks").status_code == 303

    def test_admin_without_console_role_is_refused(
        self, browser: Browser, story: Story
    ) -> None:
        """An admin who is neither approver nor auditor cannot sign in here."""
        response = browser.sign_in(story.keys["admin"])

        assert response.status_code == 401
        assert "neither an approver nor an auditor" in response.text

    def test_sign_in_needs_the_forms_token(
        self, browser: Browser, story: Story
    ) -> None:
        """A sign-in post without the form's token is refused: no login CSRF."""
        browser.get("/console/sign-in")
        response = browser.post(
            "/console/sign-in", data={"api_key": story.keys["controller"]}
        )

        assert response.status_code == 403
        assert browser.get("/console/tasks").status_code == 303

    def test_sign_in_replaces_the_session_id(
        self, browser: Browser, app: Any, story: Story
    ) -> None:
        """The anonymous cookie opens nothing after sign-in: no session fixation."""
        browser.get("/console/sign-in")
        anonymous = browser.client.cookies["proctor_console"]
        browser.sign_in(story.keys["controller"])
        signed_in = browser.client.cookies["proctor_console"]
        other = Browser(app)
        try:
            other.client.cookies.set("proctor_console", anonymous, path="/console/")
            response = other.get("/console/tasks")
        finally:
            other.close()

        assert signed_in != anonymous
        assert response.status_code == 303

    @pytest.mark.parametrize(
        ("wanted", "landing"),
        [
            ("/console/approvals", "/console/approvals"),
            ("https://evil.example/console/tasks", "/console/tasks"),
            ("//evil.example/x", "/console/tasks"),
            ("/console//evil.example", "/console/tasks"),
            ("/elsewhere", "/console/tasks"),
        ],
    )
    def test_only_console_pages_are_followed_after_sign_in(
        self, browser: Browser, story: Story, wanted: str, landing: str
    ) -> None:
        """The ``next`` address is followed only inside the console."""
        token = browser.csrf()
        response = browser.post(
            "/console/sign-in",
            data={"csrf": token, "api_key": story.keys["auditor"], "next": wanted},
        )

        assert response.headers["location"] == landing

    def test_sign_out_ends_the_session(self, controller: Browser) -> None:
        """After signing out, the same cookie opens nothing."""
        cookie = controller.client.cookies["proctor_console"]
        response = controller.post(
            "/console/sign-out", data={"csrf": controller.csrf("/console/tasks")}
        )
        controller.client.cookies.set("proctor_console", cookie, path="/console/")

        assert response.status_code == 303
        assert response.headers["location"] == "/console/sign-in"
        assert controller.get("/console/tasks").status_code == 303

    def test_rotated_key_ends_the_session(
        self, controller: Browser, story: Story
    ) -> None:
        """A person whose key was rotated is signed out on their next page."""
        assert controller.get("/console/tasks").status_code == 200
        story.runtime.people.rotate_key("controller@example.com")

        assert controller.get("/console/tasks").status_code == 303


class TestCsrf:
    def test_post_without_token_is_refused(
        self, controller: Browser, story: Story
    ) -> None:
        """An answer without the session's token is refused and not recorded."""
        response = controller.post(
            f"/console/approvals/{story.approval}/grant", data={"reason": "ok"}
        )

        assert response.status_code == 403
        assert "expired or did not come from this console" in response.text
        approval = story.runtime.service.require_approval(story.approval)
        assert approval.state is ApprovalState.PENDING

    def test_another_sessions_token_is_refused(
        self, controller: Browser, auditor: Browser, story: Story
    ) -> None:
        """A token is bound to its session: the auditor's does not work for another."""
        response = controller.post(
            f"/console/approvals/{story.approval}/grant",
            data={"csrf": auditor.csrf("/console/tasks"), "reason": "ok"},
        )

        assert response.status_code == 403
        approval = story.runtime.service.require_approval(story.approval)
        assert approval.state is ApprovalState.PENDING

    def test_foreign_origin_is_refused(self, controller: Browser, story: Story) -> None:
        """A post whose Origin is another site is refused even with a valid token."""
        response = controller.post(
            f"/console/approvals/{story.approval}/grant",
            data={"csrf": controller.csrf("/console/tasks"), "reason": "ok"},
            headers={"origin": "https://evil.example"},
        )

        assert response.status_code == 403
        assert "another site" in response.text

    def test_only_form_posts_are_read(self, controller: Browser, story: Story) -> None:
        """A JSON body is not a console form."""
        response = controller.post(
            f"/console/approvals/{story.approval}/grant",
            json={"csrf": controller.csrf("/console/tasks"), "reason": "ok"},
        )

        assert response.status_code == 415

    def test_sign_out_needs_the_token(self, controller: Browser) -> None:
        """Signing out is a post like any other: without the token it is refused."""
        response = controller.post("/console/sign-out", data={"csrf": ""})

        assert response.status_code == 403
        assert controller.get("/console/tasks").status_code == 200
