"""How values read on a console page: times, numbers, action names, JSON and the
labels of a story's tones. Pure functions, registered as Jinja2 filters."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson

TONE_LABELS = {
    "allow": "allowed",
    "deny": "denied",
    "held": "held",
    "breach": "breach",
    "approval": "approval",
    "reasoning": "reasoning",
    "task": "task",
    "end": "ended",
    "outcome": "outcome",
    "info": "info",
}
OUTCOME_TONES = {"allow": "allow", "deny": "deny", "needs_approval": "held"}
OUTCOME_LABELS = {"allow": "allowed", "deny": "denied", "needs_approval": "held"}


def short_action(action: object) -> str:
    """``Payments::Action::"CreatePayment"`` reads ``CreatePayment``."""
    text = "" if action is None else str(action)
    if text.endswith('"') and '::"' in text:
        return text[text.rindex('::"') + 3 : -1]
    return text


def when(stamp: object) -> str:
    """An entry's RFC 3339 time as ``2026-12-03 15:33:16Z``; other text as it is."""
    if isinstance(stamp, datetime):
        return stamp.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")
    text = "" if stamp is None else str(stamp)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return text
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)

    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def number(value: object) -> str:
    """An integer with thousands separators: ``12,000``; anything else as text."""
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return "" if value is None else str(value)


def pretty_json(value: object) -> str:
    """JSON with sorted keys and two-space indents, for a ``<pre>`` block."""
    return orjson.dumps(
        value, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS, default=str
    ).decode()


def inline(value: object) -> str:
    """A value on one line: text as it is, anything else as compact JSON."""
    if isinstance(value, str):
        return value
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS, default=str).decode()


def request_text(request: object) -> str:
    """A recorded request as a person reads one: the request line, the headers the
    entry kept, a blank line and the body as JSON."""
    if not isinstance(request, dict):
        return ""
    line = f"{request.get('method', '')} {request.get('path', '')}".strip()
    query = request.get("query")
    if query:
        line += "?" + (query if isinstance(query, str) else inline(query))
    lines = [line]
    headers = request.get("headers")
    if isinstance(headers, dict):
        lines += [f"{name}: {inline(value)}" for name, value in sorted(headers.items())]
    body = request.get("body")
    if body is not None:
        lines += ["", body if isinstance(body, str) else pretty_json(body)]

    return "\n".join(lines)


def digest(value: object, length: int = 12) -> str:
    """The first characters of a digest, enough to tell two apart on a page."""
    text = "" if value is None else str(value)
    return text[:length] + "…" if len(text) > length else text


def tone_label(tone: object) -> str:
    return TONE_LABELS.get(str(tone), str(tone))


def outcome_tone(outcome: object) -> str:
    return OUTCOME_TONES.get(str(outcome), "info")


def outcome_label(outcome: object) -> str:
    return OUTCOME_LABELS.get(str(outcome), str(outcome))


FILTERS = {
    "short": short_action,
    "when": when,
    "number": number,
    "pretty": pretty_json,
    "inline": inline,
    "request_text": request_text,
    "digest": digest,
    "tone_label": tone_label,
    "outcome_tone": outcome_tone,
    "outcome_label": outcome_label,
}
