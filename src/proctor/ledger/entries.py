"""What one ledger entry is: an envelope of index, time and type around its fields.

The index lives inside the entry, so the verifier can name an entry that was deleted,
swapped or inserted by its position alone.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import orjson

from proctor.errors import EntryError
from proctor.ledger.canonical import canonical

ENVELOPE = ("index", "time", "type")


def now() -> str:
    """Return the current UTC time as RFC 3339 with microseconds and a ``Z``."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def check_fields(kind: str, fields: Mapping[str, Any]) -> None:
    """Refuse an entry type or fields that would clash with the envelope.

    Raises EntryError.
    """
    if not kind or not all(part.isidentifier() for part in kind.split(".")):
        raise EntryError(f"entry type {kind!r} is not dotted identifiers")
    clash = [name for name in ENVELOPE if name in fields]
    if clash:
        raise EntryError(f"fields may not use the envelope names {clash}")


def encode(index: int, time: str, kind: str, fields: Mapping[str, Any]) -> bytes:
    """Return the canonical bytes of one entry; raises EntryError."""
    return canonical({**fields, "index": index, "time": time, "type": kind})


def decode(data: bytes) -> dict[str, Any]:
    """Parse one stored entry; raises EntryError when it is not a JSON object."""
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise EntryError(f"entry is not valid JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise EntryError(f"entry is a JSON {type(value).__name__}, expected an object")

    return value
