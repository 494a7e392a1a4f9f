"""Putting a secret where an upstream expects it: a header, a bearer or basic
Authorization, a query parameter, or an environment variable for an MCP server.

Whatever the agent put in the same place is removed first, so an agent can never
smuggle a credential of its own past Proctor. Clearing the agent's Proctor token and
other hop-by-hop headers is the gateway's job; ``apply`` clears only its own slot.

HTTP Basic (RFC 7617): with ``username`` configured the secret is the password;
without it the secret holds the whole ``user:password``. Either way the pair is
encoded as UTF-8 before base64.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType

from proctor.errors import ConfigError, VaultError
from proctor.vault.vault import NAME_PATTERN

AUTHORIZATION = "Authorization"

# RFC 9110 §5.6.2: a header name is a token.
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# Headers that frame the message or steer the connection: a secret placed there
# could split or smuggle requests, so no configuration may target them.
_FRAMING_HEADERS = frozenset(
    {
        "connection",
        "content-length",
        "host",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
_CONFIG_KEYS = frozenset({"style", "secret", "name", "username"})


class Style(StrEnum):
    """Where a secret goes."""

    HEADER = "header"
    BEARER = "bearer"
    BASIC = "basic"
    QUERY = "query"
    ENV = "env"


@dataclass(frozen=True)
class Injection:
    """How one service receives one vault secret.

    ``name`` is the header, query parameter or environment variable (required for
    those styles, refused for bearer and basic, which always use Authorization).
    ``username`` is for basic only.
    """

    style: Style
    secret: str
    name: str | None = None
    username: str | None = None

    def __post_init__(self) -> None:
        """Check the fields fit the style; raises ConfigError."""
        if not isinstance(self.secret, str) or not NAME_PATTERN.fullmatch(self.secret):
            raise ConfigError(f"injection secret {self.secret!r} is not a secret name")
        if self.username is not None and self.style is not Style.BASIC:
            raise ConfigError(f"injection style {self.style} takes no username")
        _check_username(self.username)
        _check_name(self.style, self.name)

    @classmethod
    def from_config(cls, mapping: Mapping[str, object]) -> Injection:
        """Build from a TOML table such as ``{style = "bearer", secret = "stripe"}``.

        Raises ConfigError naming the unknown key, the missing one, or the value
        of the wrong type.
        """
        unknown = sorted(set(mapping) - _CONFIG_KEYS)
        if unknown:
            raise ConfigError(
                f"injection has unknown key {unknown[0]!r}; "
                f"expected {', '.join(sorted(_CONFIG_KEYS))}"
            )
        style, secret = mapping.get("style"), mapping.get("secret")
        name, username = mapping.get("name"), mapping.get("username")
        if not isinstance(style, str) or style not in {str(s) for s in Style}:
            choices = ", ".join(Style)
            raise ConfigError(
                f"injection style must be one of {choices}, got {style!r}"
            )
        if not isinstance(secret, str):
            raise ConfigError("injection needs secret = the name of a vault secret")
        for key, value in (("name", name), ("username", username)):
            if value is not None and not isinstance(value, str):
                raise ConfigError(f"injection {key} must be a string, got {value!r}")

        return cls(Style(style), secret, _optional(name), _optional(username))

    @property
    def slot(self) -> tuple[str, str]:
        """Where the secret lands, e.g. ``("header", "authorization")``.

        Header and query names are compared without case; two injections for one
        service must not share a slot.
        """
        if self.style in {Style.BEARER, Style.BASIC}:
            return ("header", AUTHORIZATION.lower())
        name = self.name or ""
        if self.style is Style.ENV:
            return ("env", name)

        return (str(self.style), name.lower())


@dataclass(frozen=True, repr=False)
class Outbound:
    """The parts of an outgoing call a secret can go into; its repr shows names only.

    Query pairs are decoded text: whoever builds the URL percent-encodes them.
    """

    headers: Mapping[str, str] = field(default_factory=dict)
    query: tuple[tuple[str, str], ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # Keep the value frozen: copy the caller's dicts into read-only views.
        object.__setattr__(self, "headers", MappingProxyType(dict(self.headers)))
        object.__setattr__(self, "query", tuple(self.query))
        object.__setattr__(self, "env", MappingProxyType(dict(self.env)))

    def __repr__(self) -> str:
        return (
            f"Outbound(headers={sorted(self.headers)}, "
            f"query={[name for name, _ in self.query]}, env={sorted(self.env)})"
        )


def apply(injection: Injection, value: str, outbound: Outbound) -> Outbound:
    """Return ``outbound`` with the secret ``value`` in place of whatever held its slot.

    Raises VaultError (naming the secret, never the value) when the value cannot
    travel in that place: a line break or NUL in a header or environment variable,
    or a basic secret without ``user:password`` when no username is configured.
    """
    if injection.style is Style.QUERY:
        return _with_query(outbound, injection.name or "", value)
    if injection.style is Style.ENV:
        _refuse_characters(injection, value, "\x00")
        env = {**outbound.env, injection.name or "": value}
        return Outbound(outbound.headers, outbound.query, env)
    _refuse_characters(injection, value, "\r\n\x00")

    return _with_header(outbound, *_header(injection, value))


def _header(injection: Injection, value: str) -> tuple[str, str]:
    """Return the header name and value for the header, bearer and basic styles."""
    if injection.style is Style.BEARER:
        return AUTHORIZATION, f"Bearer {value}"
    if injection.style is Style.BASIC:
        return AUTHORIZATION, f"Basic {_basic_credentials(injection, value)}"

    return injection.name or "", value


def _basic_credentials(injection: Injection, value: str) -> str:
    if injection.username is not None:
        pair = f"{injection.username}:{value}"
    elif ":" in value:
        pair = value
    else:
        raise VaultError(
            f"secret {injection.secret!r} must hold 'user:password' for basic "
            "injection without a configured username"
        )

    return base64.b64encode(pair.encode("utf-8")).decode("ascii")


def _with_header(outbound: Outbound, name: str, value: str) -> Outbound:
    # Every spelling of the name goes: "authorization" and "AUTHORIZATION" alike.
    headers = {
        key: kept
        for key, kept in outbound.headers.items()
        if key.lower() != name.lower()
    }
    headers[name] = value

    return Outbound(headers, outbound.query, outbound.env)


def _with_query(outbound: Outbound, name: str, value: str) -> Outbound:
    # Case-blind too: some upstreams read "API_KEY" and "api_key" alike.
    query = [pair for pair in outbound.query if pair[0].lower() != name.lower()]
    query.append((name, value))

    return Outbound(outbound.headers, tuple(query), outbound.env)


def _refuse_characters(injection: Injection, value: str, forbidden: str) -> None:
    if any(char in value for char in forbidden):
        raise VaultError(
            f"secret {injection.secret!r} holds a line break or NUL and cannot be "
            f"sent as {injection.style} credential"
        )


def _check_name(style: Style, name: str | None) -> None:
    """Check the header, parameter or variable name the style needs."""
    if style in {Style.BEARER, Style.BASIC}:
        if name is not None:
            raise ConfigError(f"injection style {style} always uses Authorization")
        return
    if not name:
        raise ConfigError(f"injection style {style} needs a name")
    if style is Style.HEADER:
        if not _TOKEN.fullmatch(name):
            raise ConfigError(f"header name {name!r} is not an HTTP token")
        if name.lower() in _FRAMING_HEADERS:
            raise ConfigError(f"header {name!r} frames the request; not a credential")
    if style is Style.ENV and not _ENV_NAME.fullmatch(name):
        raise ConfigError(f"environment variable name {name!r} is not valid")
    if style is Style.QUERY and any(ord(char) < 0x20 for char in name):
        raise ConfigError(f"query parameter name {name!r} holds control characters")


def _check_username(username: str | None) -> None:
    # RFC 7617 §2: the user-id cannot contain a colon.
    if username is None:
        return
    if not username or ":" in username or any(ord(c) < 0x20 for c in username):
        raise ConfigError(
            f"basic username {username!r} must be non-empty, without ':' or "
            "control characters"
        )


def _optional(value: object) -> str | None:
    return value if isinstance(value, str) else None
