"""The people who approve, audit and administer, each with a personal API key.

An API key reads ``pk_<key id>_<secret>``: the key id is 12 public hex digits used to
find the person, the secret 32 random bytes in URL-safe base64. Only the SHA-256 of
the whole key is stored. A key carries 256 random bits, so it cannot be guessed from
its digest; a slow password hash (scrypt, Argon2) protects low-entropy passwords and
would only add latency to every request here. Digests are compared in constant time.

``people.json`` (mode 0600, replaced atomically on every change)::

    {
      "format": "proctor-people/1",
      "people": {
        "ann@example.com": {"roles": ["approver"], "key_id": "<12 hex>",
                            "key_sha256": "<64 hex>", "created": "<RFC 3339 UTC>"}
      }
    }

Roles do not imply one another: an admin manages people but approves nothing unless
also an approver, so duties stay separate.
"""

from __future__ import annotations

import builtins
import hashlib
import hmac
import json
import re
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path

from proctor.errors import AuthError, ConfigError
from proctor.files import Stamp, locked, read_private, stamp, write_private

PEOPLE_FORMAT = "proctor-people/1"
PEOPLE_FILENAME = "people.json"
KEY_PREFIX = "pk_"

_KEY_ID_HEX = 12
_KEY_SECRET_BYTES = 32
_API_KEY = re.compile(r"pk_([0-9a-f]{12})_([A-Za-z0-9_-]{43})")
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
_EMAIL_MAX = 254  # RFC 5321 §4.5.3.1.3 bounds a path; an address fits in it
_NO_DIGEST = "0" * 64
_APPROVAL_ROLE = re.compile(r"[a-z][a-z0-9_-]{0,39}")


class Role(StrEnum):
    """What a person may do."""

    APPROVER = "approver"
    AUDITOR = "auditor"
    ADMIN = "admin"


@dataclass(frozen=True)
class Person:
    """One person as anyone may see them: never their key or its digest."""

    email: str
    roles: frozenset[Role]
    key_id: str
    created: str
    approves: frozenset[str] = frozenset()

    def has_role(self, role: Role) -> bool:
        return role in self.roles

    def may_approve(self, approval_role: str) -> bool:
        """Tell whether this person is a named approver for ``approval_role``.

        Policies name approval roles (``@approval("controller")``); a person fills
        one only as an approver who was given that name.
        """
        return Role.APPROVER in self.roles and approval_role in self.approves


@dataclass(frozen=True)
class _Record:
    person: Person
    key_sha256: str

    def to_json(self) -> dict[str, object]:
        return {
            "roles": sorted(self.person.roles),
            "approves": sorted(self.person.approves),
            "key_id": self.person.key_id,
            "key_sha256": self.key_sha256,
            "created": self.person.created,
        }


def create_person(
    email: str, roles: Iterable[Role | str], approves: Iterable[str] = ()
) -> tuple[Person, str]:
    """Return a new person and their API key, which exists nowhere else.

    Raises AuthError when the email is not an address or a role is unknown.
    """
    key_id, api_key = _new_key()
    person = Person(
        normalise_email(email),
        parse_roles(roles),
        key_id,
        _now(),
        parse_approval_roles(approves),
    )

    return person, api_key


def normalise_email(email: str) -> str:
    """Return ``email`` trimmed and lower case; raises AuthError if not an address."""
    address = email.strip().lower()
    if len(address) > _EMAIL_MAX or not _EMAIL.fullmatch(address):
        raise AuthError(f"{email[:80]!r} is not an email address")

    return address


def parse_roles(roles: Iterable[Role | str]) -> frozenset[Role]:
    """Return the roles named; raises AuthError for none or an unknown one."""
    parsed: set[Role] = set()
    for role in roles:
        try:
            parsed.add(Role(role))
        except ValueError:
            choices = ", ".join(Role)
            raise AuthError(f"unknown role {role!r}; expected {choices}") from None
    if not parsed:
        raise AuthError("a person needs at least one role")

    return frozenset(parsed)


def parse_approval_roles(names: Iterable[str]) -> frozenset[str]:
    """Return the approval role names; raises AuthError for a malformed one."""
    parsed = frozenset(names)
    for name in parsed:
        if not _APPROVAL_ROLE.fullmatch(name):
            raise AuthError(
                f"approval role {name[:40]!r} must be a short lowercase name"
            )
    return parsed


class People:
    """The people in one ``people.json``.

    File problems (unreadable, open to others, malformed) raise ConfigError; who
    someone is or may do raises AuthError.
    """

    def __init__(self, path: Path) -> None:
        self._path = path
        self._cache: tuple[Stamp, dict[str, _Record]] | None = None

    def add(
        self, email: str, roles: Iterable[Role | str], approves: Iterable[str] = ()
    ) -> str:
        """Add a person and return their API key: show it once, it is not kept.

        ``approves`` names the approval roles of policies (``controller``) that
        the person fills. Raises AuthError when the email is taken or invalid or a
        role unknown.
        """
        person, api_key = create_person(email, roles, approves)
        with locked(self._path):
            records = self._load(stamp(self._path))
            if person.email in records:
                raise AuthError(f"{person.email} already exists")
            self._save({**records, person.email: _Record(person, _digest(api_key))})

        return api_key

    def rotate_key(self, email: str) -> str:
        """Give ``email`` a new API key, ending the old one; raises AuthError."""
        address = normalise_email(email)
        with locked(self._path):
            records = self._load(stamp(self._path))
            old = _find(records, address).person
            key_id, api_key = _new_key()
            renewed = Person(address, old.roles, key_id, old.created, old.approves)
            self._save({**records, address: _Record(renewed, _digest(api_key))})

        return api_key

    def remove(self, email: str) -> None:
        """Remove ``email`` and with it their API key; raises AuthError if unknown."""
        address = normalise_email(email)
        with locked(self._path):
            records = self._load(stamp(self._path))
            _find(records, address)
            self._save({key: kept for key, kept in records.items() if key != address})

    def authenticate(self, api_key: str, *, role: Role | None = None) -> Person:
        """Return the person holding ``api_key``, who must have ``role`` if given.

        Raises AuthError when the key is malformed, unknown or wrong (one message
        for both, naming only the public key id) or the person lacks the role.
        """
        match = _API_KEY.fullmatch(api_key.strip())
        if match is None:
            raise AuthError("api key is malformed; expected pk_<key id>_<secret>")
        key_id = match.group(1)
        record = next(
            (kept for kept in self._records().values() if kept.person.key_id == key_id),
            None,
        )
        # Compare even when the key id is unknown, so both failures take as long.
        expected = _NO_DIGEST if record is None else record.key_sha256
        matches = hmac.compare_digest(_digest(match.group()), expected)
        if record is None or not matches:
            raise AuthError(f"api key {key_id} is not valid")
        if role is not None and not record.person.has_role(role):
            raise AuthError(f"{record.person.email} lacks the {role} role")

        return record.person

    def get(self, email: str) -> Person:
        """Return the person with ``email``; raises AuthError if unknown."""
        return _find(self._records(), normalise_email(email)).person

    def list(self) -> builtins.list[Person]:
        """Return everyone, by email."""
        records = self._records()
        return [records[email].person for email in sorted(records)]

    def _records(self) -> dict[str, _Record]:
        """Return the parsed file, re-reading it only when it changed."""
        current = stamp(self._path)
        if self._cache is not None and self._cache[0] == current:
            return self._cache[1]
        records = self._load(current)
        if current is not None:
            self._cache = (current, records)

        return records

    def _load(self, current: Stamp | None) -> dict[str, _Record]:
        if current is None:
            return {}
        try:
            document = json.loads(read_private(self._path))
        except (ValueError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{self._path} is not valid JSON") from exc
        if not isinstance(document, dict) or document.get("format") != PEOPLE_FORMAT:
            raise ConfigError(f"{self._path} is not a {PEOPLE_FORMAT} file")
        people = document.get("people")
        if not isinstance(people, dict):
            raise ConfigError(f"{self._path} has no people object")

        return {email: self._parse(email, raw) for email, raw in people.items()}

    def _parse(self, email: str, raw: object) -> _Record:
        if not isinstance(raw, Mapping):
            raise ConfigError(f"{self._path}: {email} is not an object")
        key_id, key_sha256 = raw.get("key_id"), raw.get("key_sha256")
        created, roles = raw.get("created"), raw.get("roles")
        if not (
            isinstance(key_id, str)
            and isinstance(key_sha256, str)
            and isinstance(created, str)
            and isinstance(roles, list)
        ):
            raise ConfigError(f"{self._path}: {email} lacks roles, key id or digest")
        approves = raw.get("approves", [])
        if not isinstance(approves, list):
            raise ConfigError(f"{self._path}: {email} approves is not a list")
        try:
            person = Person(
                email,
                parse_roles(roles),
                key_id,
                created,
                parse_approval_roles(approves),
            )
        except AuthError as exc:
            raise ConfigError(f"{self._path}: {email}: {exc}") from exc

        return _Record(person, key_sha256)

    def _save(self, records: Mapping[str, _Record]) -> None:
        document = {
            "format": PEOPLE_FORMAT,
            "people": {email: records[email].to_json() for email in sorted(records)},
        }
        write_private(self._path, (json.dumps(document, indent=2) + "\n").encode())


def _find(records: Mapping[str, _Record], email: str) -> _Record:
    record = records.get(email)
    if record is None:
        raise AuthError(f"no person {email}")

    return record


def _new_key() -> tuple[str, str]:
    """Return a fresh key id and the API key that carries it."""
    key_id = secrets.token_hex(_KEY_ID_HEX // 2)
    secret = secrets.token_urlsafe(_KEY_SECRET_BYTES)

    return key_id, f"{KEY_PREFIX}{key_id}_{secret}"


def _digest(api_key: str) -> str:
    return hashlib.sha256(api_key.encode("ascii")).hexdigest()


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
