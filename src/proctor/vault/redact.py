"""Removing secrets from whatever Proctor records or logs: by field name, and by value
in its raw form and in the encodings a value commonly takes on the wire.

What a value is found in (see ``encoded_forms``): the raw text; percent-encoding as
Python's ``quote`` and ``quote_plus`` and JavaScript's ``encodeURIComponent`` write
it, with upper or lower case hex; the inside of a JSON string (``\\uXXXX`` escapes
either case, ``/`` escaped or not); base64, standard and URL-safe, at any of the three
byte alignments, so the value is found inside the base64 of a longer text such as
HTTP Basic's ``user:password``. Not covered: hex, HTML entities, compression,
partial percent-encodings other than those above, and a value split across two
separately scrubbed chunks (scrub a whole body, not its pieces). The edges of a base64
match can leave a few bits of the value's first and last bytes in the output.

What goes back to an agent is masked instead (:class:`Masking`): each form found
becomes as many ``*`` as it had bytes, so a length the upstream declared stays true,
and a body may arrive in any number of pieces.

A value shorter than ``MIN_SECRET_LENGTH`` is refused: a one-letter secret would
redact every text it appears in and still tell a reader what it was.
"""

from __future__ import annotations

import base64
import bisect
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from urllib.parse import quote, quote_plus

from proctor.errors import VaultError

REDACTED = "[redacted]"
MIN_SECRET_LENGTH = 8

DEFAULT_SENSITIVE_FIELDS = frozenset(
    {
        "access_token",
        "api_key",
        "apikey",
        "auth",
        "authorization",
        "client_secret",
        "cookie",
        "credentials",
        "id_token",
        "ocp_apim_subscription_key",
        "passwd",
        "password",
        "private_key",
        "proxy_authorization",
        "refresh_token",
        "secret",
        "session_token",
        "set_cookie",
        "token",
        "x_amz_security_token",
        "x_api_key",
        "x_auth_token",
        "x_csrf_token",
        "x_functions_key",
    }
)
"""Field names (lower case, ``-`` read as ``_``) whose value is always removed."""

DEFAULT_SENSITIVE_SUFFIXES = frozenset(
    {"api_key", "apikey", "password", "private_key", "secret", "token"}
)
"""Endings after a ``_`` that make a field sensitive too: ``db_password``,
``github_token``. ``max_tokens`` does not match: it ends in ``tokens``."""

# Leftmost-first matching cannot see a value hidden across the edge of a marker it
# just wrote, so scrubbing repeats; after this many passes the whole text goes.
_MAX_PASSES = 4
_MAX_VERDICTS = 4096

# Percent-encodings as Python's quote (everything reserved, or "/" left alone) and
# JavaScript's encodeURIComponent write them.
_URL_SAFE_SETS = ("", "/", "!'()*")
_PERCENT_HEX = re.compile(r"%[0-9A-F]{2}")
_JSON_ESCAPE = re.compile(r"\\u[0-9a-f]{4}")
_URLSAFE_ALPHABET = str.maketrans("+/", "-_")

_Trie = dict[str, "_Trie"]
_END = ""  # the trie key marking the end of a form: no character is empty


def check_value(value: str, *, name: str | None = None) -> None:
    """Refuse a secret value the redactor could not remove reliably.

    Raises VaultError (naming ``name``, never the value) when the value is shorter
    than ``MIN_SECRET_LENGTH`` characters, is not valid Unicode, or shows in the
    marker that would replace it.
    """
    Redactor(named=[(name or "", value)])


def encoded_forms(value: str) -> frozenset[str]:
    """Return every literal form of ``value`` that the redactor removes."""
    forms = {value}
    forms.update(_url_forms(value))
    forms.update(_json_forms(value))
    forms.update(_base64_forms(value.encode("utf-8")))

    return frozenset(forms)


def is_sensitive_name(
    name: str | bytes,
    *,
    fields: Iterable[str] = DEFAULT_SENSITIVE_FIELDS,
    suffixes: Iterable[str] = DEFAULT_SENSITIVE_SUFFIXES,
) -> bool:
    """Tell whether a field called ``name`` holds a credential, whatever its value."""
    key = _normalise(name)
    endings = tuple("_" + _normalise(suffix) for suffix in suffixes)

    return key in {_normalise(field) for field in fields} or key.endswith(endings)


class Redactor:
    """Replaces secrets in texts, bytes and JSON-like values.

    Build it with the values to remove: ``Redactor(values)`` writes ``[redacted]``,
    ``Redactor(named=[(name, value), ...])`` writes ``[redacted:<name>]``. Rebuild it
    after a secret is set or rotated; ``Vault.values()`` includes past versions.
    """

    def __init__(
        self,
        values: Iterable[str] = (),
        *,
        named: Iterable[tuple[str, str]] = (),
        field_names: Iterable[str] = DEFAULT_SENSITIVE_FIELDS,
        field_suffixes: Iterable[str] = DEFAULT_SENSITIVE_SUFFIXES,
    ) -> None:
        """Compile; raises VaultError for a value ``check_value`` refuses."""
        self._fields = frozenset(_normalise(field) for field in field_names)
        self._endings = tuple("_" + _normalise(suffix) for suffix in field_suffixes)
        self._verdicts: dict[str | bytes, bool] = {}
        names = _name_table([("", value) for value in values] + list(named))
        self._markers = {form: _marker(name) for form, name in names.items()}
        self._text = _alternation(names)
        self._bytes = (
            None if self._text is None else re.compile(self._text.pattern.encode())
        )
        self._bytes_markers = {
            form.encode(): marker.encode() for form, marker in self._markers.items()
        }
        self._masked_forms = MaskedForms.of(self._bytes, self._bytes_markers)
        self._refuse_self_matches(names)

    def scrub_text(self, text: str) -> str:
        """Return ``text`` with every secret value and its encodings replaced."""
        if self._text is None:
            return text
        for _ in range(_MAX_PASSES):
            text, count = self._text.subn(self._text_marker, text)
            if count == 0:
                return text

        return REDACTED

    def scrub_bytes(self, data: bytes) -> bytes:
        """Return ``data`` with every secret's UTF-8 forms replaced; any body works."""
        if self._bytes is None:
            return data
        for _ in range(_MAX_PASSES):
            data, count = self._bytes.subn(self._bytes_marker, data)
            if count == 0:
                return data

        return REDACTED.encode()

    def masking(self) -> Masking:
        """Return a fresh masker for one answer on its way to an agent."""
        return Masking(self._masked_forms)

    def scrub_headers(self, headers: Mapping[str, str]) -> dict[str, str]:
        """Return a copy of ``headers`` with credential headers and values removed."""
        return {
            self.scrub_text(name): (
                REDACTED if self.is_sensitive(name) else self.scrub_text(value)
            )
            for name, value in headers.items()
        }

    def scrub(self, obj: object) -> object:
        """Return a copy of ``obj`` with secrets removed at any depth.

        Dicts, lists and tuples are walked (keys scrubbed too); the value of a field
        with a sensitive name becomes ``[redacted]`` whatever it held, and so does the
        second item of a ``(name, value)`` tuple such as a raw header. Strings and
        bytes are scrubbed by value; numbers, booleans, None and other objects are
        returned as they are.
        """
        if isinstance(obj, str):
            return self.scrub_text(obj)
        if isinstance(obj, bytes | bytearray):
            return self.scrub_bytes(bytes(obj))
        if isinstance(obj, Mapping):
            return {
                self.scrub(key): self._field(key, value) for key, value in obj.items()
            }
        if isinstance(obj, tuple):
            return self._scrub_tuple(obj)
        if isinstance(obj, list):
            return [self.scrub(item) for item in obj]

        return obj

    def is_sensitive(self, name: object) -> bool:
        """Tell whether a field called ``name`` is removed whatever its value."""
        if not isinstance(name, str | bytes):
            return False
        verdict = self._verdicts.get(name)
        if verdict is None:
            # The same few names recur in every call; the memo is bounded because
            # names also come from bodies the agent or upstream chose.
            if len(self._verdicts) >= _MAX_VERDICTS:
                self._verdicts.clear()
            key = _normalise(name)
            verdict = key in self._fields or key.endswith(self._endings)
            self._verdicts[name] = verdict

        return verdict

    def _field(self, name: object, value: object) -> object:
        if self.is_sensitive(name):
            return _marker_like(value)

        return self.scrub(value)

    def _scrub_tuple(self, items: tuple[object, ...]) -> tuple[object, ...]:
        if len(items) == 2 and self.is_sensitive(items[0]):
            return (self.scrub(items[0]), _marker_like(items[1]))

        return tuple(self.scrub(item) for item in items)

    def _text_marker(self, match: re.Match[str]) -> str:
        return self._markers[match.group()]

    def _bytes_marker(self, match: re.Match[bytes]) -> bytes:
        return self._bytes_markers[match.group()]

    def _refuse_self_matches(self, names: Mapping[str, str]) -> None:
        """Refuse values found in a marker: scrubbing could then never finish."""
        if self._text is None:
            return
        for marker in {REDACTED, *self._markers.values()}:
            found = self._text.search(marker)
            if found is not None:
                raise VaultError(
                    f"secret {_label(names[found.group()])} cannot be redacted: "
                    "its value shows in a redaction marker"
                )


@dataclass(frozen=True)
class MaskedForms:
    """What every masker of one redactor reads: the pattern of every form, the
    forms sorted, the bytes they may begin with, and the longest one's length."""

    pattern: re.Pattern[bytes] | None
    sorted: tuple[bytes, ...]
    firsts: frozenset[int]
    longest: int

    @classmethod
    def of(
        cls, pattern: re.Pattern[bytes] | None, forms: Iterable[bytes]
    ) -> MaskedForms:
        ordered = tuple(sorted(forms))
        return cls(
            pattern,
            ordered,
            frozenset(form[0] for form in ordered),
            max(map(len, ordered), default=0),
        )


class Masking:
    """Masks secret values in one answer, keeping every length: its header values
    one by one (:meth:`whole`), then its body as it arrives in pieces.

    A value may straddle two pieces of the body, so the end of what has arrived is
    held back from the first place where a form could begin that runs past it,
    until the next piece or the end shows what it was. ``masked`` counts the values
    masked so far.
    """

    def __init__(self, forms: MaskedForms) -> None:
        self._pattern = forms.pattern
        self._forms = forms
        self._held = b""
        self.masked = 0

    def feed(self, piece: bytes, *, last: bool = False) -> bytes:
        """Return what may be passed on now of everything fed so far; with ``last``,
        the piece ends the body and everything is returned."""
        data, self._held = self._held + piece, b""
        if self._pattern is None:
            return data
        cut = len(data) if last else self._unfinished(data)
        data = self._masked(self._pattern, data, before=cut)
        self._held = data[cut:]

        return data[:cut]

    def whole(self, data: bytes) -> bytes:
        """Return one complete text, such as a header value, masked on its own."""
        if self._pattern is None:
            return data

        return self._masked(self._pattern, data, before=len(data))

    def finish(self) -> bytes:
        """Return the rest, once the body has ended."""
        return self.feed(b"", last=True)

    def _unfinished(self, data: bytes) -> int:
        """Where the first form that could run past the end of ``data`` begins."""
        ordered = self._forms.sorted
        for start in range(max(len(data) - self._forms.longest, 0), len(data)):
            if data[start] not in self._forms.firsts:
                continue
            tail = data[start:]
            # The forms are sorted: the first one not below the tail starts with it
            # if any does.
            place = bisect.bisect_left(ordered, tail)
            if place < len(ordered) and ordered[place].startswith(tail):
                return start

        return len(data)

    def _masked(self, pattern: re.Pattern[bytes], data: bytes, *, before: int) -> bytes:
        # A form found starting at ``before`` or later might still grow into a
        # longer one with the next piece; it is looked at again then.
        spans = []
        for match in pattern.finditer(data):
            if match.start() >= before:
                break
            spans.append(match.span())
        if not spans:
            return data
        self.masked += len(spans)
        masked = bytearray(data)
        for begin, end in spans:
            masked[begin:end] = b"*" * (end - begin)

        return bytes(masked)


def _name_table(secrets: list[tuple[str, str]]) -> dict[str, str]:
    """Map each form of each value to the name of its secret ("" when unnamed)."""
    names: dict[str, str] = {}
    for name, value in secrets:
        _check_shape(value, name)
        for form in encoded_forms(value):
            names.setdefault(form, name)

    return names


def _marker(name: str) -> str:
    return f"[redacted:{name}]" if name else REDACTED


def _label(name: str) -> str:
    return repr(name) if name else "value"


def _check_shape(value: str, name: str) -> None:
    label = _label(name)
    if len(value) < MIN_SECRET_LENGTH:
        raise VaultError(
            f"secret {label} is too short to redact: {len(value)} characters, "
            f"at least {MIN_SECRET_LENGTH} needed"
        )
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise VaultError(f"secret {label} is not valid unicode") from exc


def _alternation(forms: Iterable[str]) -> re.Pattern[str] | None:
    """Compile one pattern for all ``forms`` that takes the longest form matching at
    a place, so a value is never cut short by one of its own prefixes.

    The forms are merged into a trie first: at each place the engine then follows
    one branch per next character instead of trying every form in turn (ten times
    faster with a few hundred forms). The same pattern encoded as UTF-8 serves
    bytes: ``re.escape`` leaves non-ASCII characters alone, and their UTF-8 bytes
    are never special to the engine.
    """
    trie: _Trie = {}
    for form in forms:
        node = trie
        for char in form:
            node = node.setdefault(char, {})
        node[_END] = {}
    if not trie:
        return None

    return re.compile(_trie_pattern(trie))


def _trie_pattern(node: _Trie) -> str:
    """Write the expression matching the forms that continue below ``node``."""
    # A run of nodes with one child each is plain text: keep it flat, not nested.
    run: list[str] = []
    while len(node) == 1 and _END not in node:
        ((char, node),) = node.items()
        run.append(re.escape(char))
    branches = [
        re.escape(char) + _trie_pattern(child)
        for char, child in sorted(node.items())
        if char != _END
    ]
    if not branches:
        return "".join(run)
    body = "(?:" + "|".join(branches) + ")" if len(branches) > 1 else branches[0]
    # A form may end here: the greedy "?" still prefers any longer form first.
    tail = f"(?:{body})?" if _END in node else body

    return "".join(run) + tail


def _url_forms(value: str) -> set[str]:
    forms: set[str] = set()
    for safe in _URL_SAFE_SETS:
        for form in (quote(value, safe=safe), quote_plus(value, safe=safe)):
            forms.add(form)
            forms.add(_PERCENT_HEX.sub(lambda match: match.group().lower(), form))

    return forms


def _json_forms(value: str) -> set[str]:
    forms: set[str] = set()
    for ensure_ascii in (True, False):
        body = json.dumps(value, ensure_ascii=ensure_ascii)[1:-1]
        upper = _JSON_ESCAPE.sub(lambda match: "\\u" + match.group()[2:].upper(), body)
        forms.update({body, upper, body.replace("/", "\\/")})

    return forms


def _base64_forms(data: bytes) -> set[str]:
    """Return the base64 characters that depend on ``data`` alone, per alignment.

    In base64 every 3 bytes make 4 characters of 6 bits. When ``data`` starts
    ``shift`` bytes into a group, the characters whose 6 bits all come from ``data``
    are the same whatever surrounds it; those are the ones kept.
    """
    forms: set[str] = set()
    for shift in range(3):
        encoded = base64.b64encode(bytes(shift) + data).decode("ascii")
        first = -(-8 * shift // 6)
        last = 8 * (shift + len(data)) // 6
        core = encoded[first:last]
        forms.update({core, core.translate(_URLSAFE_ALPHABET)})

    return forms


def _normalise(name: str | bytes) -> str:
    # Raw header names arrive as bytes; latin-1 maps every byte to one character.
    text = name.decode("latin-1") if isinstance(name, bytes) else name
    return text.strip().lower().replace("-", "_")


def _marker_like(value: object) -> object:
    return REDACTED.encode() if isinstance(value, bytes | bytearray) else REDACTED
