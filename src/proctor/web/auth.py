"""Console sessions: server-side, keyed by a random id the browser holds in a cookie,
each with its own CSRF token; a person signs in with their API key.

The cookie carries 256 random bits and nothing else; the server keeps only the
SHA-256 of it, so a memory dump of the table does not yield a usable cookie. A
session starts anonymous (the sign-in form needs a CSRF token too, against login
CSRF), and signing in replaces it with a fresh id and token, against session
fixation. Every request checks the person again, so a removed person or a rotated
key ends their sessions at once.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from proctor.errors import AuthError, ConfigError
from proctor.tasks.people import People, Person, Role

COOKIE = "proctor_console"
SECURE_COOKIE = "__Host-proctor_console"
"""The ``__Host-`` prefix makes a browser insist on Secure, Path=/ and no Domain."""
ANONYMOUS_TTL = timedelta(minutes=30)
DEFAULT_HOURS = 8
MAX_HOURS = 24
MAX_SESSIONS = 10_000
CSRF_FIELD = "csrf"
CONSOLE_ROLES = frozenset({Role.APPROVER, Role.AUDITOR})


@dataclass(frozen=True)
class CookiePolicy:
    """How the session cookie is set, from ``[console]`` in proctor.toml.

    ``secure`` None means automatic: Secure over https, and over plain http only
    when the server listens on loopback (sign-in is refused otherwise).
    """

    secure: bool | None = None
    lifetime: timedelta = timedelta(hours=DEFAULT_HOURS)

    @classmethod
    def from_config(cls, raw: Mapping[str, Any]) -> CookiePolicy:
        """Read ``[console]`` secure_cookies and session_hours; raises ConfigError."""
        table = raw.get("console", {})
        if not isinstance(table, Mapping):
            raise ConfigError("[console] must be a table")
        chosen = table.get("secure_cookies", "auto")
        if chosen not in ("auto", True, False):
            raise ConfigError(
                '[console] secure_cookies must be "auto", true or false; '
                f"got {chosen!r}"
            )
        hours = table.get("session_hours", DEFAULT_HOURS)
        if isinstance(hours, bool) or not isinstance(hours, int):
            raise ConfigError("[console] session_hours must be a whole number")
        if not 1 <= hours <= MAX_HOURS:
            raise ConfigError(
                f"[console] session_hours must be 1-{MAX_HOURS}; got {hours}"
            )

        return cls(None if chosen == "auto" else chosen, timedelta(hours=hours))

    def is_secure(self, scheme: str) -> bool:
        """Whether a cookie set on a request over ``scheme`` gets the Secure flag."""
        if self.secure is not None:
            return self.secure
        return scheme == "https"

    def refuses(self, scheme: str, server_host: str | None) -> str | None:
        """Why a sign-in over this connection is refused, or None.

        Automatic mode refuses a cookie without Secure anywhere but loopback, where
        nothing crosses a network.
        """
        if self.is_secure(scheme) or self.secure is False:
            return None
        if server_host is not None and is_loopback(server_host):
            return None
        return (
            "sign-in over plain http is allowed on loopback only; serve the console "
            "over https, or set [console] secure_cookies in proctor.toml"
        )


def is_loopback(host: str) -> bool:
    """Tell whether ``host`` names this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class Session:
    """One browser's session: anonymous until its holder signs in."""

    digest: str
    csrf: str
    expires: datetime
    email: str | None = None
    key_id: str | None = None
    flash: tuple[str, str] | None = None
    """A message for the next page: (kind, text), kind ``ok`` or ``error``."""

    @property
    def is_signed_in(self) -> bool:
        return self.email is not None


@dataclass(frozen=True)
class Viewer:
    """The signed-in person looking at a page, with their session."""

    session: Session
    person: Person

    @property
    def is_approver(self) -> bool:
        return self.person.has_role(Role.APPROVER)

    @property
    def is_auditor(self) -> bool:
        return self.person.has_role(Role.AUDITOR)


class Sessions:
    """The console's sessions, in memory: a restart signs everyone out.

    Safe to share between threads. Bounded: past ``limit`` sessions, expired ones
    go first, then the oldest anonymous ones, then the oldest of all.
    """

    def __init__(
        self,
        lifetime: timedelta,
        *,
        limit: int = MAX_SESSIONS,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.lifetime = lifetime
        self.limit = limit
        self._clock = clock or _now
        self._lock = threading.Lock()
        self._sessions: dict[str, Session] = {}

    def __len__(self) -> int:
        with self._lock:
            return len(self._sessions)

    def begin(self) -> tuple[str, Session]:
        """Start an anonymous session; return its cookie value and the session."""
        return self._start(self._clock() + ANONYMOUS_TTL)

    def sign_in(self, old: Session | None, person: Person) -> tuple[str, Session]:
        """End ``old`` and start a signed-in session for ``person`` with a new id."""
        if old is not None:
            self.end(old)

        return self._start(
            self._clock() + self.lifetime, email=person.email, key_id=person.key_id
        )

    def get(self, cookie: str | None) -> Session | None:
        """Return the live session the cookie names, or None."""
        if not cookie:
            return None
        digest = _digest(cookie)
        with self._lock:
            session = self._sessions.get(digest)
            if session is None:
                return None
            if self._clock() >= session.expires:
                del self._sessions[digest]
                return None
            return session

    def end(self, session: Session) -> None:
        """Forget a session; its cookie opens nothing any more."""
        with self._lock:
            self._sessions.pop(session.digest, None)

    def flash(self, session: Session, kind: str, text: str) -> None:
        """Keep a message for the session's next page."""
        self._update(session, flash=(kind, text))

    def take_flash(self, session: Session) -> tuple[str, str] | None:
        """Return and forget the session's message, if any."""
        with self._lock:
            current = self._sessions.get(session.digest)
            if current is None or current.flash is None:
                return None
            self._sessions[session.digest] = replace(current, flash=None)
            return current.flash

    def _update(self, session: Session, **changes: Any) -> None:
        with self._lock:
            current = self._sessions.get(session.digest)
            if current is not None:
                self._sessions[session.digest] = replace(current, **changes)

    def _start(self, expires: datetime, **fields: Any) -> tuple[str, Session]:
        cookie = secrets.token_urlsafe(32)
        session = Session(_digest(cookie), secrets.token_urlsafe(32), expires, **fields)
        with self._lock:
            self._make_room()
            self._sessions[session.digest] = session

        return cookie, session

    def _make_room(self) -> None:
        if len(self._sessions) < self.limit:
            return
        now = self._clock()
        for digest, session in list(self._sessions.items()):
            if now >= session.expires:
                del self._sessions[digest]
        # Dicts keep insertion order, so the first ones found are the oldest.
        for anonymous_first in (True, False):
            for digest, session in list(self._sessions.items()):
                if len(self._sessions) < self.limit:
                    return
                if not anonymous_first or not session.is_signed_in:
                    del self._sessions[digest]


def is_valid_csrf(session: Session, presented: str | None) -> bool:
    """Whether the form's token is the session's, compared in constant time."""
    if not presented:
        return False
    return hmac.compare_digest(
        session.csrf.encode("utf-8"), presented.encode("utf-8", errors="replace")
    )


def console_person(people: People, api_key: str) -> Person:
    """Authenticate an API key for the console; raises AuthError.

    The console is for approvers and auditors; an admin who is neither manages
    people from the command line.
    """
    person = people.authenticate(api_key)
    if not person.roles & CONSOLE_ROLES:
        raise AuthError(
            f"{person.email} is neither an approver nor an auditor; the console is "
            "for them"
        )
    return person


def viewer_of(people: People, session: Session | None) -> Viewer | None:
    """The person a signed-in session belongs to, checked again now, or None.

    A person removed, whose key was rotated or who lost both console roles since
    signing in is no longer signed in.
    """
    if session is None or session.email is None:
        return None
    try:
        person = people.get(session.email)
    except AuthError:
        return None
    if person.key_id != session.key_id or not person.roles & CONSOLE_ROLES:
        return None

    return Viewer(session, person)


def _digest(cookie: str) -> str:
    return hashlib.sha256(cookie.encode("utf-8", errors="replace")).hexdigest()


def _now() -> datetime:
    return datetime.now(UTC)
