"""Headers at the HTTP door: what Proctor reads from an agent's request, what it
removes before forwarding, and what it lets back from the upstream.

Removed going out: the hop-by-hop headers of RFC 9110 §7.6.1 (``Connection`` and
every header it names, ``Keep-Alive``, ``Proxy-*``, ``TE``, ``Trailer``,
``Transfer-Encoding``, ``Upgrade``), the message framing Proctor redoes itself
(``Host``, ``Content-Length``, ``Expect``), the agent's ``Authorization`` (its task
token), every ``Proctor-*`` header, cookies whose name starts with ``proctor``, the
method overrides some frameworks obey (``X-HTTP-Method-Override`` and its kin: the
route map decided on the request's own method), and the forwarding headers
(``Forwarded``, ``X-Forwarded-*``, ``X-Real-IP``) an agent could forge. The agent's
``Accept-Encoding`` gives way to ``identity``: an answer is masked on its way back,
and a compressed one could not be looked into.
Removed coming back: the hop-by-hop headers, any ``Proctor-*`` header, so an
upstream cannot forge a ``Proctor-Entry``, and ``Date``, which the server sets.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

ENTRY_HEADER = "proctor-entry"
"""Names the entry that recorded the answer's decision, on every answer of a door."""
MAX_HEADER_BYTES = 16 * 1024
"""Request line and headers together; the wire's own bound is four times this."""

MAX_NOTE = 1000
"""Characters of ``Proctor-Reasoning`` kept; longer notes are cut with an ellipsis."""

MAX_ID = 128
"""Characters allowed in ``Proctor-Approval`` and ``Proctor-Tool-Call``."""

_HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)
_REFRAMED = frozenset(
    {b"host", b"content-length", b"expect", b"authorization", b"accept-encoding"}
)
_UNDECIDED = frozenset(
    {
        b"x-http-method-override",
        b"x-http-method",
        b"x-method-override",
        b"x-original-method",
        b"x-original-url",
        b"x-rewrite-url",
        b"forwarded",
        b"x-real-ip",
    }
)
"""What the route map did not decide on: another method, another path, another
client."""
_FORWARDING = b"x-forwarded-"
IDENTITY = {"accept-encoding": "identity"}
"""What Proctor asks of every upstream: the answer's bytes as they are."""
_SET_BY_SERVER = frozenset({b"date"})
_PROCTOR = b"proctor-"
_PROXY = b"proxy-"
_TRACEPARENT = re.compile(r"[0-9a-f]{2}-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}")
_PREFER_WAIT = re.compile(r"(?:^|[,;\s])wait\s*=\s*([0-9]{1,6})(?:$|[,;\s])", re.I)
_ZEROS = re.compile(r"0+")


@dataclass(frozen=True)
class Meta:
    """What Proctor itself reads from a request's headers.

    ``token`` is the bearer token of ``Authorization``; ``approval``, ``note``,
    ``trace`` and ``tool_call`` come from ``Proctor-Approval``, ``Proctor-Reasoning``,
    ``traceparent`` and ``Proctor-Tool-Call``; ``wait`` from ``Prefer: wait=N``
    (RFC 7240 §4.3); ``chunked`` tells a Transfer-Encoding was sent; ``size``
    counts the bytes of every header; ``problem`` says what makes the headers
    unusable, if anything.
    """

    token: str | None = None
    approval: str | None = None
    note: str | None = None
    trace: str | None = None
    tool_call: str | None = None
    wait: float = 0.0
    content_type: str | None = None
    content_length: str | None = None
    chunked: bool = False
    size: int = 0
    problem: str | None = None


def read_meta(raw: Iterable[tuple[bytes, bytes]]) -> Meta:
    """Read Proctor's own headers from raw ASGI header pairs; never raises."""
    found: dict[bytes, bytes] = {}
    size = 0
    problem = None
    for name, value in raw:
        size += len(name) + len(value) + 4
        if name in _META_NAMES:
            found.setdefault(name, value)
        if not (value.isascii() or _is_utf8(value)):
            # Forwarded as text, a value must be text: UTF-8 goes on byte for byte.
            problem = f"the value of {name.decode('latin-1')} is not UTF-8 text"
    coding = found.get(b"transfer-encoding")
    if coding is not None and coding.strip().lower() != b"chunked":
        problem = "chunked is the only transfer coding accepted"
    approval = _text(found.get(b"proctor-approval"))
    tool_call = _text(found.get(b"proctor-tool-call"))
    for label, given in (
        ("Proctor-Approval", approval),
        ("Proctor-Tool-Call", tool_call),
    ):
        if given is not None and len(given) > MAX_ID:
            problem = f"{label} is longer than {MAX_ID} characters"

    return Meta(
        token=_bearer(found.get(b"authorization")),
        approval=approval,
        note=_note(found.get(b"proctor-reasoning")),
        trace=_trace(found.get(b"traceparent")),
        tool_call=tool_call,
        wait=_wait(found.get(b"prefer")),
        content_type=_latin(found.get(b"content-type")),
        content_length=_latin(found.get(b"content-length")),
        chunked=b"transfer-encoding" in found,
        size=size,
        problem=problem,
    )


_META_NAMES = frozenset(
    {
        b"authorization",
        b"proctor-approval",
        b"proctor-reasoning",
        b"proctor-tool-call",
        b"traceparent",
        b"prefer",
        b"content-type",
        b"content-length",
        b"transfer-encoding",
    }
)


def _is_utf8(value: bytes) -> bool:
    try:
        value.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def outbound_headers(raw: Iterable[tuple[bytes, bytes]]) -> dict[str, str]:
    """Return the headers to forward upstream, names lower-case, repeats joined."""
    pairs = list(raw)
    dropped = _named_by_connection(pairs)
    headers: dict[str, str] = {}
    for name, value in pairs:
        if _is_dropped(name) or name in dropped:
            continue
        sent = _without_proctor_cookies(value) if name == b"cookie" else value
        if not sent:
            continue
        key, text = name.decode("latin-1"), sent.decode("utf-8", "replace")
        if key in headers:
            glue = "; " if key == "cookie" else ", "
            headers[key] = f"{headers[key]}{glue}{text}"
        else:
            headers[key] = text

    return headers | IDENTITY


@dataclass(frozen=True)
class Relocation:
    """Points a redirect into the upstream back through Proctor.

    A ``Location`` under the service's base URL, absolute (``http://up/api/x``) or
    as an absolute path (``/api/x``), becomes ``/http/<service>/x``; any other
    location is left alone.
    """

    base_url: bytes
    base_path: bytes
    prefix: bytes

    @classmethod
    def for_service(cls, base_url: str, prefix: str) -> Relocation:
        """Build for a service's ``base_url`` served under ``prefix``."""
        path = urlsplit(base_url).path.rstrip("/")
        return cls(base_url.rstrip("/").encode(), path.encode(), prefix.encode())

    def apply(self, location: bytes) -> bytes:
        """Return ``location`` rewritten when it points into the service."""
        rest = _below(location, self.base_url)
        # "//host/x" is a network-path reference (RFC 3986 §4.2): another host.
        if rest is None and location[:1] == b"/" and location[:2] != b"//":
            rest = _below(location, self.base_path)

        return location if rest is None else self.prefix + rest


def _below(location: bytes, base: bytes) -> bytes | None:
    if not location.startswith(base):
        return None
    rest = location[len(base) :]
    if rest and rest[:1] not in {b"/", b"?"}:
        return None

    return rest


def inbound_headers(
    raw: Iterable[tuple[bytes, bytes]], *, relocation: Relocation
) -> list[tuple[bytes, bytes]]:
    """Return an upstream response's headers to pass back to the agent."""
    pairs = [(name.lower(), value) for name, value in raw]
    dropped = _named_by_connection(pairs)
    kept: list[tuple[bytes, bytes]] = []
    for name, value in pairs:
        if (
            name in _HOP_BY_HOP
            or name in _SET_BY_SERVER
            or name in dropped
            or name.startswith(_PROCTOR)
        ):
            continue
        kept.append((name, relocation.apply(value) if name == b"location" else value))

    return kept


def _is_dropped(name: bytes) -> bool:
    return (
        name in _HOP_BY_HOP
        or name in _REFRAMED
        or name in _UNDECIDED
        or name.startswith(_FORWARDING)
        or name.startswith(_PROCTOR)
        or name.startswith(_PROXY)
    )


def _named_by_connection(pairs: Iterable[tuple[bytes, bytes]]) -> frozenset[bytes]:
    # RFC 9110 §7.6.1: the options a Connection header lists are hop-by-hop too.
    return frozenset(
        option.strip().lower()
        for name, value in pairs
        if name == b"connection"
        for option in value.split(b",")
        if option.strip()
    )


def _without_proctor_cookies(value: bytes) -> bytes:
    if b"proctor" not in value.lower():
        return value
    kept = [
        crumb.strip()
        for crumb in value.split(b";")
        if crumb.strip() and not crumb.strip().lower().startswith(b"proctor")
    ]

    return b"; ".join(kept)


def _bearer(value: bytes | None) -> str | None:
    if value is None:
        return None
    scheme, _, token = value.decode("latin-1").strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None

    return token.strip()


def _note(value: bytes | None) -> str | None:
    text = _text(value)
    if not text:
        return None
    if len(text) > MAX_NOTE:
        return text[: MAX_NOTE - 1] + "…"

    return text


def _trace(value: bytes | None) -> str | None:
    # W3C Trace Context §3.2: a traceparent that does not parse is ignored.
    text = _latin(value)
    if text is None:
        return None
    found = _TRACEPARENT.fullmatch(text.strip())
    if found is None or _ZEROS.fullmatch(found[1]) or _ZEROS.fullmatch(found[2]):
        return None

    return found.group()


def _wait(value: bytes | None) -> float:
    text = _latin(value)
    found = _PREFER_WAIT.search(text) if text else None

    return float(found[1]) if found else 0.0


def _text(value: bytes | None) -> str | None:
    # Agents send UTF-8 in practice; RFC 9110 §5.5 leaves other bytes opaque.
    if value is None:
        return None
    text = value.decode("utf-8", errors="replace").strip()

    return "".join(char for char in text if char.isprintable()) or None


def _latin(value: bytes | None) -> str | None:
    return None if value is None else value.decode("latin-1")
