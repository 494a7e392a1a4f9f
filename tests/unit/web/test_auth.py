"""Sessions, cookie policy and CSRF tokens of the console, without a server."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from proctor.errors import ConfigError
from proctor.tasks.people import Person, Role
from proctor.web.auth import ANONYMOUS_TTL, CookiePolicy, Sessions, is_valid_csrf

ANN = Person("ann@example.com", frozenset({Role.APPROVER}), "a1b2c3d4e5f6", "now")


class Clock:
    """A clock that moves only when told."""

    def __init__(self) -> None:
        self.now = datetime(2026, 12, 3, 9, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


class TestCookiePolicy:
    def test_defaults_are_automatic_and_eight_hours(self) -> None:
        """Without a [console] table: Secure decided per request, 8 h sessions."""
        policy = CookiePolicy.from_config({})

        assert policy.secure is None
        assert policy.lifetime == timedelta(hours=8)

    @pytest.mark.parametrize(
        ("table", "message"),
        [
            ({"secure_cookies": "yes"}, "secure_cookies must be"),
            ({"session_hours": 0}, "session_hours must be 1-24"),
            ({"session_hours": "8"}, "whole number"),
            ({"session_hours": True}, "whole number"),
        ],
    )
    def test_bad_values_are_refused(
        self, table: dict[str, object], message: str
    ) -> None:
        """A malformed [console] table is a configuration error naming the key."""
        with pytest.raises(ConfigError, match=message):
            CookiePolicy.from_config({"console": table})

    def test_automatic_is_secure_over_https_only(self) -> None:
        """Automatic mode sets Secure exactly when the request came over https."""
        policy = CookiePolicy()

        assert policy.is_secure("https")
        assert not policy.is_secure("http")

    @pytest.mark.parametrize("host", ["127.0.0.1", "::1", "localhost"])
    def test_plain_http_allowed_on_loopback(self, host: str) -> None:
        """On loopback nothing crosses a network, so plain http may sign in."""
        assert CookiePolicy().refuses("http", host) is None

    @pytest.mark.parametrize("host", ["10.0.0.5", "console.example.com", None])
    def test_plain_http_refused_elsewhere(self, host: str | None) -> None:
        """Off loopback, automatic mode refuses to sign in over plain http."""
        assert "loopback only" in str(CookiePolicy().refuses("http", host))

    def test_explicit_choices_are_obeyed(self) -> None:
        """``true`` always sets Secure; ``false`` never does and never refuses."""
        assert CookiePolicy(secure=True).is_secure("http")
        assert CookiePolicy(secure=False).refuses("http", "10.0.0.5") is None


class TestSessions:
    def test_cookie_finds_its_session(self) -> None:
        """A cookie value opens its own session, and the table keeps only a digest."""
        sessions = Sessions(timedelta(hours=8))
        cookie, session = sessions.begin()

        assert sessions.get(cookie) == session
        assert cookie not in session.digest
        assert sessions.get("not-a-cookie") is None
        assert sessions.get(None) is None

    def test_sign_in_replaces_the_id_and_token(self) -> None:
        """Signing in ends the anonymous session and issues a new id and token."""
        sessions = Sessions(timedelta(hours=8))
        cookie, anonymous = sessions.begin()
        signed_cookie, signed = sessions.sign_in(anonymous, ANN)

        assert sessions.get(cookie) is None
        assert signed_cookie != cookie
        assert signed.csrf != anonymous.csrf
        assert signed.email == "ann@example.com"
        assert signed.key_id == ANN.key_id

    def test_sessions_expire(self) -> None:
        """An anonymous session lasts half an hour, a signed-in one its lifetime."""
        clock = Clock()
        sessions = Sessions(timedelta(hours=8), clock=clock)
        anonymous_cookie, _ = sessions.begin()
        signed_cookie, _ = sessions.sign_in(None, ANN)
        clock.now += ANONYMOUS_TTL

        assert sessions.get(anonymous_cookie) is None
        assert sessions.get(signed_cookie) is not None
        clock.now += timedelta(hours=8)
        assert sessions.get(signed_cookie) is None

    def test_table_is_bounded_anonymous_first(self) -> None:
        """Past the limit, anonymous sessions go before signed-in ones."""
        sessions = Sessions(timedelta(hours=8), limit=3)
        signed_cookie, _ = sessions.sign_in(None, ANN)
        for _ in range(5):
            sessions.begin()

        assert len(sessions) == 3
        assert sessions.get(signed_cookie) is not None

    def test_flash_is_shown_once(self) -> None:
        """A message kept for the next page is taken once."""
        sessions = Sessions(timedelta(hours=8))
        _, session = sessions.begin()
        sessions.flash(session, "ok", "approved")

        assert sessions.take_flash(session) == ("ok", "approved")
        assert sessions.take_flash(session) is None

    def test_ended_session_opens_nothing(self) -> None:
        """After end, the cookie finds nothing."""
        sessions = Sessions(timedelta(hours=8))
        cookie, session = sessions.begin()
        sessions.end(session)

        assert sessions.get(cookie) is None


class TestCsrf:
    def test_token_must_match(self) -> None:
        """Only the session's own token passes; empty and foreign ones fail."""
        sessions = Sessions(timedelta(hours=8))
        _, session = sessions.begin()
        _, other = sessions.begin()

        assert is_valid_csrf(session, session.csrf)
        assert not is_valid_csrf(session, other.csrf)
        assert not is_valid_csrf(session, "")
        assert not is_valid_csrf(session, None)

    def test_non_ascii_token_fails_without_error(self) -> None:
        """A token with any characters at all is compared, not crashed on."""
        _, session = Sessions(timedelta(hours=8)).begin()

        assert not is_valid_csrf(session, "jeton-é-\udcff")
