"""Classifying one request against its service's routes: the Cedar action, resource
and context it asks for, or why it has none (see :mod:`proctor.gateway.routes` for
the route map's format and rules).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from proctor.gateway.routes import (
    MALFORMED,
    MAX_CONTEXT_STRING,
    MAX_SAFE_INTEGER,
    NO_BODY,
    UNMAPPED,
    ContextField,
    FieldType,
    Route,
    ServiceConfig,
    Source,
)

_LONG = re.compile(r"-?[0-9]{1,16}")
_MISSING = object()


@dataclass(frozen=True)
class Classified:
    """A request mapped to a route: the action, resource and context to decide."""

    action: str
    resource: str
    context: Mapping[str, object]
    route: Route


@dataclass(frozen=True)
class Unmapped:
    """A request no route matches: recorded on the synthetic ``Unmapped`` action."""

    resource: str
    reason: str
    action: str = UNMAPPED
    context: Mapping[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class BadRequest:
    """A request that cannot be classified: the 4xx status and a reason to show."""

    resource: str
    reason: str
    status: int = 400
    route: Route | None = None
    action: str = MALFORMED
    context: Mapping[str, object] = field(default_factory=dict)


Classification = Classified | Unmapped | BadRequest
"""What :func:`classify` returns."""


def classify(
    service: ServiceConfig,
    method: str,
    path: str,
    query: Sequence[tuple[str, str]],
    json_body: object = NO_BODY,
) -> Classification:
    """Map one request to its route's action, resource and context.

    ``path`` is the decoded path below the service (``/invoices/inv-1``), ``query``
    the decoded pairs in order, ``json_body`` the parsed JSON body or ``NO_BODY``.
    Returns :class:`Unmapped` when no route matches and :class:`BadRequest` when the
    request does not carry what the route reads; never raises for bad input.
    """
    try:
        if not path.startswith("/"):
            raise LookupError(path)
        route, parameters = service.find(method, path.split("/")[1:])
    except LookupError:
        return Unmapped(
            service.resource, f"no route of service {service.name!r} maps {method}"
        )
    if route.reads_body and json_body is NO_BODY:
        reason = (
            f"route {route.method} {route.path} reads the JSON body; send one "
            "with Content-Type: application/json"
        )
        return BadRequest(service.resource, reason, 415, route)

    context: dict[str, object] = {}
    for item in route.context:
        value = _read(item, parameters, query, json_body)
        if isinstance(value, _Problem):
            reason = f"route {route.method} {route.path}: {value.text}"
            return BadRequest(service.resource, reason, 400, route)
        if value is not _MISSING:
            context[item.name] = value

    return Classified(route.action, route.resource_for(parameters), context, route)


@dataclass(frozen=True)
class _Problem:
    text: str


def _read(
    item: ContextField,
    parameters: Mapping[str, str],
    query: Sequence[tuple[str, str]],
    body: object,
) -> object:
    """Return the field's typed value, MISSING when optional and absent, or a
    _Problem saying what is wrong."""
    if item.source is Source.BODY:
        value = _dig(body, item.key)
    elif item.source is Source.PATH:
        value = parameters[item.key[0]]
    else:
        values = [text for name, text in query if name == item.key[0]]
        if len(values) > 1:
            # Upstreams disagree on which repeat wins; refuse rather than guess.
            return _Problem(f"{item.origin} is given {len(values)} times")
        value = values[0] if values else _MISSING
    if value is _MISSING:
        return value if item.optional else _Problem(f"{item.origin} is missing")

    return _typed(item, value, from_text=item.source is not Source.BODY)


def _dig(body: object, key: tuple[str, ...]) -> object:
    value = body
    for part in key:
        if isinstance(value, Mapping) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return _MISSING

    return value


def _typed(item: ContextField, value: object, *, from_text: bool) -> object:
    if item.type is FieldType.STRING:
        return _string(item, value)
    if from_text and isinstance(value, str):
        value = _from_text(item.type, value)
    if item.type is FieldType.BOOL:
        if isinstance(value, bool):
            return value
        return _Problem(f"{item.origin} must be true or false, got {_kind(value)}")

    return _long(item, value)


def _string(item: ContextField, value: object) -> object:
    if not isinstance(value, str):
        return _Problem(f"{item.origin} must be a string, got {_kind(value)}")
    if len(value) > MAX_CONTEXT_STRING:
        return _Problem(
            f"{item.origin} is {len(value)} characters long, at most "
            f"{MAX_CONTEXT_STRING} allowed"
        )

    return value


def _long(item: ContextField, value: object) -> object:
    if not isinstance(value, int) or isinstance(value, bool):
        return _Problem(f"{item.origin} must be a whole number, got {_kind(value)}")
    if abs(value) > MAX_SAFE_INTEGER:
        return _Problem(f"{item.origin} must be within ±{MAX_SAFE_INTEGER}")

    return value


def _from_text(kind: FieldType, text: str) -> object:
    if kind is FieldType.BOOL:
        return {"true": True, "false": False}.get(text, text)
    if _LONG.fullmatch(text):
        return int(text)

    return text


_KINDS: tuple[tuple[type, str], ...] = (
    (bool, "a boolean"),
    (int, "a whole number"),
    (float, "a fractional number (or one too large to be whole)"),
    (str, "text"),
    (list, "a list"),
)


def _kind(value: object) -> str:
    """Name a JSON value's type for an error message, never the value itself."""
    if value is None:
        return "null"

    return next((name for kind, name in _KINDS if isinstance(value, kind)), "an object")
