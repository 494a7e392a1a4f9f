"""RFC 8785 canonical JSON for ledger entries: a fast encoder over a restricted format,
and the complete reference encoder it agrees with byte for byte.

The restricted format: dicts with ASCII string keys, lists, strings (any Unicode but
lone surrogates), integers within ±(2**53 - 1), booleans and None, nested at most
``MAX_DEPTH`` containers deep, at most ``MAX_ENTRY_BYTES`` once encoded. There are no
floats: amounts are integer cents (or decimal strings), and integers stay within the
range an IEEE 754 double holds exactly, as RFC 8785 §3.2.2.3 and I-JSON (RFC 7493
§2.2) require. Only these plain built-in types pass (no tuples, sets, enums or other
subclasses), so an entry parsed back from its bytes equals what was written.
"""

from __future__ import annotations

import json
import re
from typing import Any, cast

import orjson
import rfc8785

from proctor.errors import EntryError

MAX_ENTRY_BYTES = 65_535
"""C2SP tlog-tiles entry bundles prefix each entry with a 16-bit length."""

MAX_DEPTH = 64
"""How many containers deep an entry may nest; orjson itself stops at 255."""

MAX_SAFE_INTEGER = 2**53 - 1

# With ASCII keys, orjson's key order is RFC 8785 §3.2.3's UTF-16 order, and its
# string escapes (only '"', '\\' and U+0000..U+001F, short forms where JSON has
# them, lowercase hex otherwise) are RFC 8785 §3.2.2.2's. OPT_STRICT_INTEGER refuses
# integers beyond ±(2**53 - 1), as RFC 8785 §3.2.2.3 does.
_OPTIONS = orjson.OPT_SORT_KEYS | orjson.OPT_STRICT_INTEGER
_SCALARS = frozenset({str, int, bool, type(None)})
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def canonical(value: object) -> bytes:
    """Return the RFC 8785 bytes of a value in the restricted entry format.

    Raises EntryError naming the path of the first offending value (``$.a.b[2]``)
    when the value is outside the format or encodes to more than MAX_ENTRY_BYTES.
    """
    if not _fits(value, 0):
        raise EntryError(_fault(value, "$", 0) or "$: value is not in the entry format")
    try:
        data = orjson.dumps(value, option=_OPTIONS)
    except orjson.JSONEncodeError as exc:
        # The walk leaves integer ranges and surrogates to orjson; find the path now.
        raise EntryError(_fault(value, "$", 0) or f"$: cannot encode: {exc}") from exc
    if len(data) > MAX_ENTRY_BYTES:
        raise EntryError(
            f"$: entry is {len(data)} bytes, above the limit of {MAX_ENTRY_BYTES}"
        )

    return data


def reference(value: object) -> bytes:
    """Return the RFC 8785 bytes of any JSON value with the complete, slow encoder.

    Accepts what RFC 8785 accepts (floats included) and applies no size limit.
    Raises EntryError when RFC 8785 cannot encode the value.
    """
    try:
        data = rfc8785.dumps(cast("Any", value))
    except rfc8785.IntegerDomainError as exc:
        raise EntryError("rfc 8785 refuses an integer outside ±(2**53 - 1)") from exc
    except rfc8785.FloatDomainError as exc:
        raise EntryError("rfc 8785 refuses a float that is nan or infinite") from exc
    except rfc8785.CanonicalizationError as exc:
        raise EntryError(f"rfc 8785 refuses the value: {exc}") from exc
    except RecursionError as exc:
        raise EntryError("the value nests too deeply to canonicalize") from exc

    return data


def _fits(value: object, depth: int) -> bool:
    # The hot path: plain type checks, no paths built; orjson checks the rest.
    if type(value) is dict:
        return depth < MAX_DEPTH and _dict_fits(value, depth + 1)
    if type(value) is list:
        return depth < MAX_DEPTH and _list_fits(value, depth + 1)

    return type(value) in _SCALARS


def _dict_fits(value: dict[Any, Any], depth: int) -> bool:
    for key, item in value.items():
        if type(key) is not str or not key.isascii():
            return False
        if type(item) not in _SCALARS and not _fits(item, depth):
            return False

    return True


def _list_fits(value: list[Any], depth: int) -> bool:
    for item in value:
        if type(item) not in _SCALARS and not _fits(item, depth):
            return False

    return True


def _fault(value: object, path: str, depth: int) -> str | None:
    """Return why the first offending value is refused, prefixed by its path."""
    if type(value) in (dict, list) and depth >= MAX_DEPTH:
        return f"{path}: nests deeper than {MAX_DEPTH} containers"
    if type(value) is dict:
        return _dict_fault(value, path, depth + 1)
    if type(value) is list:
        return _list_fault(value, path, depth + 1)

    return _scalar_fault(value, path)


def _dict_fault(value: dict[Any, Any], path: str, depth: int) -> str | None:
    for key, item in value.items():
        if type(key) is not str:
            return f"{path}: has a key of type {type(key).__name__}, not str"
        if not key.isascii():
            return f"{path}: key {json.dumps(key)} is not ascii"
        found = _fault(item, _child(path, key), depth)
        if found:
            return found

    return None


def _list_fault(value: list[Any], path: str, depth: int) -> str | None:
    for position, item in enumerate(value):
        found = _fault(item, f"{path}[{position}]", depth)
        if found:
            return found

    return None


def _scalar_fault(value: object, path: str) -> str | None:
    if type(value) is int and not -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER:
        return f"{path}: integer is outside ±(2**53 - 1); amounts are integer cents"
    if type(value) is str and not _is_encodable(value):
        return f"{path}: string holds a lone surrogate, which is not unicode text"
    if type(value) is float:
        return f"{path}: floats are not allowed; use integer cents or a string"
    if type(value) not in _SCALARS:
        return (
            f"{path}: type {type(value).__name__} is not allowed; "
            "use dict, list, str, int, bool or None"
        )

    return None


def _is_encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _child(path: str, key: str) -> str:
    if _NAME.fullmatch(key):
        return f"{path}.{key}"
    return f"{path}[{json.dumps(key)}]"
