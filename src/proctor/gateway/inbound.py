"""What an agent's HTTP request says, checked before anything trusts it: the service
and path it targets, its query, its body, and the digest that binds approvals to it.

The path is read from the raw request target, never from a decoded copy: a segment
is percent-decoded once, must be UTF-8, and may not hide a ``/`` or ``\\`` (``%2F``,
``%5C``), a control character, a second layer of encoding (``%252e``), or a dot
segment (``..``, ``%2e%2e``, ``..;x``): upstreams disagree on what those mean, so
what Proctor classified might not be what the upstream serves. The path forwarded
upstream is rebuilt from the decoded segments (:attr:`Target.path`), so the upstream
sees exactly the path that was classified. The query is decoded the same way and
re-encoded on the way out; the ``Host`` header plays no part in routing.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import parse_qsl, quote, unquote_to_bytes

import orjson

from proctor.gateway.routes import NO_BODY
from proctor.ledger.canonical import canonical

MAX_TARGET_BYTES = 8 * 1024
MAX_QUERY_FIELDS = 256
RECORD_LIMIT = 8 * 1024
"""Bodies up to this many bytes are recorded in full; larger ones by digest."""

EMPTY_DIGEST = hashlib.sha256(b"").hexdigest()
UNBOUND_HEADERS = frozenset({"traceparent", "tracestate", "baggage", "prefer"})
"""Headers a retry may change: its own W3C trace context, and ``Prefer``, whose
``wait=`` asks Proctor how long to hold the call."""

# RFC 3986 §3.3 pchar, less ";" (matrix parameters to some servers) and "+" (a
# space to others): both go out percent-encoded so no upstream reads them specially.
_SEGMENT_SAFE = "!$&'()*,=:@"
_DOUBLE_ENCODED = re.compile(r"%(?:2e|2f|5c|25)", re.IGNORECASE)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_SERVICE = re.compile(r"[a-z0-9][a-z0-9_-]*")
_JSON_TYPE = re.compile(r"application/(?:[a-z0-9.!#$&^_-]+\+)?json")
_MAX_RECORD_DEPTH = 32


@dataclass(frozen=True)
class Problem:
    """Why a request cannot go ahead: the status to answer and a reason to show."""

    status: int
    reason: str


@dataclass(frozen=True)
class Target:
    """The checked request target: service name, decoded path and query pairs.

    ``path`` is the decoded path below the service (what routes match) and
    ``wire_path`` its canonical percent-encoded form (what the upstream receives).
    """

    service: str
    path: str
    wire_path: str
    query: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Body:
    """A request body as read: its bytes and digest, its JSON, and its record form.

    ``json`` is the parsed JSON value or ``NO_BODY``; ``recorded`` is what the ledger
    keeps: the parsed JSON or the text when small and representable, else
    ``{"sha256", "size"}``, and None for an empty body.
    """

    raw: bytes
    digest: str
    json: object
    recorded: object


def parse_target(raw_path: bytes, raw_query: bytes, prefix: bytes) -> Target | Problem:
    """Check a raw request target below ``prefix`` (``b"/http/"``); never raises."""
    if len(raw_path) + len(raw_query) > MAX_TARGET_BYTES:
        return Problem(414, f"the request target is longer than {MAX_TARGET_BYTES}")
    if not raw_path.startswith(prefix):
        return Problem(400, "the request target must be a path below /http/<service>/")
    service, slash, rest = raw_path[len(prefix) :].partition(b"/")
    name = service.decode("latin-1")
    if not slash or not _SERVICE.fullmatch(name):
        return Problem(404, "the request target names no service: /http/<service>/...")
    segments = _segments(rest.split(b"/"))
    if isinstance(segments, Problem):
        return segments
    query = parse_query(raw_query)
    if isinstance(query, Problem):
        return query
    path = "/" + "/".join(segments)
    wire = "/" + "/".join(quote(segment, safe=_SEGMENT_SAFE) for segment in segments)

    return Target(name, path, wire, query)


def parse_query(raw: bytes) -> tuple[tuple[str, str], ...] | Problem:
    """Decode ``a=1&b=2`` into pairs, in order; ``+`` is a space (HTML forms)."""
    if not raw:
        return ()
    try:
        text = raw.decode("ascii")
        pairs = parse_qsl(
            text,
            keep_blank_values=True,
            strict_parsing=False,
            encoding="utf-8",
            errors="strict",
            max_num_fields=MAX_QUERY_FIELDS,
        )
    except UnicodeDecodeError:
        return Problem(400, "the query is not percent-encoded UTF-8")
    except ValueError:
        return Problem(400, f"the query has more than {MAX_QUERY_FIELDS} fields")
    if any(_CONTROL.search(name) or _CONTROL.search(value) for name, value in pairs):
        return Problem(400, "the query holds a control character")

    return tuple(pairs)


def encode_query(pairs: Sequence[tuple[str, str]]) -> str:
    """Percent-encode query pairs for the wire: every reserved character escaped."""
    return "&".join(
        f"{quote(name, safe='')}={quote(value, safe='')}" for name, value in pairs
    )


def parse_body(raw: bytes, content_type: str | None) -> Body | Problem:
    """Read a body by its content type: JSON must parse strictly, text be UTF-8.

    A JSON body is refused when it is not UTF-8 (RFC 8259 §8.1), does not parse,
    repeats a key in an object (RFC 8259 §4 leaves the meaning open, so upstream
    and Proctor could read different values), or nests too deeply. Other bodies
    pass as bytes, recorded by digest.
    """
    digest = hashlib.sha256(raw).hexdigest() if raw else EMPTY_DIGEST
    media, charset = _media_type(content_type)
    if media is not None and _JSON_TYPE.fullmatch(media):
        return _json_body(raw, digest, charset)
    if not raw:
        return Body(raw, digest, NO_BODY, None)
    if media is not None and media.startswith("text/") and charset in {None, "utf-8"}:
        return _text_body(raw, digest)

    return Body(raw, digest, NO_BODY, _by_digest(raw, digest))


def parse_json(raw: bytes) -> object:
    """Parse a JSON document strictly; return the value or a Problem."""
    if not raw:
        return Problem(400, "the JSON body is empty")
    try:
        value = orjson.loads(raw)
        if b"{" in raw:
            json.loads(raw.decode("utf-8"), object_pairs_hook=_unique)
    except orjson.JSONDecodeError as exc:
        return Problem(400, f"the body is not valid JSON: {_first_line(exc)}")
    except _DuplicateKeyError as exc:
        return Problem(400, f"the JSON body repeats the key {exc.key!r}")
    except RecursionError:
        return Problem(400, "the JSON body nests too deeply")

    return value


def request_digest(
    method: str,
    service: str,
    target: Target,
    body_digest: str,
    headers: Mapping[str, str],
) -> str:
    """Return the SHA-256 hex binding an approval to one exact request.

    Over the RFC 8785 canonical JSON of method, service, path, the query pairs in
    sorted order, the headers forwarded (names in lower case) and the body's
    digest: two requests the upstream would read alike share it, any other
    difference changes it. ``UNBOUND_HEADERS`` are left out.
    """
    document = {
        "method": method,
        "service": service,
        "path": target.wire_path,
        "query": [list(pair) for pair in sorted(target.query)],
        "headers": {
            name.lower(): value
            for name, value in headers.items()
            if name.lower() not in UNBOUND_HEADERS
        },
        "body": body_digest,
    }

    return hashlib.sha256(canonical(document)).hexdigest()


def _segments(raw: list[bytes]) -> list[str] | Problem:
    segments: list[str] = []
    for index, part in enumerate(raw):
        try:
            text = unquote_to_bytes(part).decode("utf-8")
        except UnicodeDecodeError:
            return Problem(400, "the path is not percent-encoded UTF-8")
        problem = _segment_problem(part, text, is_last=index == len(raw) - 1)
        if problem is not None:
            return Problem(400, f"the path holds {problem}")
        segments.append(text)

    return segments


def _segment_problem(raw: bytes, text: str, *, is_last: bool) -> str | None:
    """Name what makes one path segment unsafe to forward, if anything."""
    if b"\\" in raw or "/" in text or "\\" in text:
        return "an encoded slash or a backslash"
    if _CONTROL.search(text):
        return "a control character"
    if "%" in text and _DOUBLE_ENCODED.search(text):
        return "a percent-encoding encoded twice"
    if text.partition(";")[0] in {".", ".."}:
        return "a dot segment (. or ..)"
    if not text and not is_last:
        return "an empty segment (//)"

    return None


def _json_body(raw: bytes, digest: str, charset: str | None) -> Body | Problem:
    if charset not in {None, "utf-8"}:
        return Problem(415, f"a JSON body must be UTF-8, not {charset}")
    value = parse_json(raw)
    if isinstance(value, Problem):
        return value
    if len(raw) <= RECORD_LIMIT and _fits_entry(value, 0):
        return Body(raw, digest, value, value)

    return Body(raw, digest, value, _by_digest(raw, digest))


def _text_body(raw: bytes, digest: str) -> Body | Problem:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return Problem(400, "the text body is not valid UTF-8")
    recorded = text if len(raw) <= RECORD_LIMIT else _by_digest(raw, digest)

    return Body(raw, digest, NO_BODY, recorded)


def _media_type(content_type: str | None) -> tuple[str | None, str | None]:
    if not content_type:
        return None, None
    media, *parameters = content_type.split(";")
    charset = None
    for parameter in parameters:
        key, _, value = parameter.strip().partition("=")
        if key.lower() == "charset":
            charset = value.strip().strip('"').lower()

    return media.strip().lower(), charset


class _DuplicateKeyError(ValueError):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _unique(pairs: list[tuple[str, object]]) -> dict[str, object]:
    found = dict(pairs)
    if len(found) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _DuplicateKeyError(key[:64])
            seen.add(key)

    return found


def _first_line(exc: Exception) -> str:
    return str(exc).splitlines()[0][:200]


def _fits_entry(value: object, depth: int) -> bool:
    """Tell whether the ledger's canonical JSON can hold ``value`` as it is."""
    if depth > _MAX_RECORD_DEPTH:
        return False
    if isinstance(value, dict):
        return all(
            key.isascii() and _fits_entry(item, depth + 1)
            for key, item in value.items()
        )
    if isinstance(value, list):
        return all(_fits_entry(item, depth + 1) for item in value)
    if isinstance(value, bool | str) or value is None:
        return True

    return isinstance(value, int) and abs(value) <= 2**53 - 1


def _by_digest(raw: bytes, digest: str) -> dict[str, object]:
    return {"sha256": digest, "size": len(raw)}
