"""Upstream services and their route maps from ``[services.<name>]`` in proctor.toml:
which requests map to which Cedar action, resource and context (applied to a request
by :mod:`proctor.gateway.classify`).

The format, one table per service (every key but ``base_url`` is optional)::

    [services.finance]
    base_url = "http://127.0.0.1:8081"     # http(s), host, optional path prefix
    credential = { secret = "finance-api-key", style = "header", name = "X-Api-Key" }
    timeout = 10                            # seconds of upstream silence allowed
    max_body = 1048576                      # bytes of request body accepted

    [[services.finance.routes]]
    method = "GET"
    path = "/invoices/{invoice}"
    action = 'Payments::Action::"ReadInvoice"'
    resource = 'Payments::Invoice::"{invoice}"'

    [[services.finance.routes]]
    method = "POST"
    path = "/payments"
    action = 'Payments::Action::"CreatePayment"'
    resource = 'Payments::Account::"ops"'
    context.amount = { from = "body.amount", type = "long" }
    context.vendor = "body.vendor"

Paths. A template is ``/``-separated; a segment is literal text or ``{name}``, which
matches one whole, non-empty segment. Requests are matched on their decoded segments,
so ``/invoices/a%20b`` gives ``invoice = "a b"``. The most specific route wins,
whatever the order in the file: at the first segment where two templates differ, a
literal beats a parameter. Two routes of one method with the same shape are refused.
A trailing slash is part of the path: ``/invoices`` and ``/invoices/`` differ.

Resources. ``Type::"text"`` where the text may hold ``{name}`` placeholders naming
path parameters; values are written as Cedar string literals (quotes and backslashes
escaped), so a path can never change the entity type. Without ``resource`` a route's
resource is the service itself, ``Proctor::Service::"<service>"``.

Context. Each field is ``name = "source"`` (a string) or ``name = { from = "source",
type = "string" | "long" | "bool", optional = false }``. A source is ``path.<param>``,
``query.<name>`` or ``body.<a>.<b>`` (dotted into the JSON body; a number indexes a
list). A required field that is missing, of the wrong type, repeated in the query,
or a string longer than ``MAX_CONTEXT_STRING`` makes the request a ``BadRequest``
(400), as does a route reading the body when no JSON body came (415). Longs are
whole numbers within ±(2**53 - 1), the integers the ledger's canonical JSON can hold;
path and query text is read as a decimal long or ``true``/``false`` when typed so.
``task``, ``user`` and ``approved`` are Proctor's own context fields and are refused.

Unmapped requests. A request no route matches is ``Unmapped``, classified to the
synthetic action ``Proctor::Action::"Unmapped"`` on the service, and a request that
cannot be classified is a ``BadRequest`` on ``Proctor::Action::"Malformed"``:
both still go through the pipeline so the attempt is recorded, and the pipeline denies
them. The HTTP door forwards neither, whatever the verdict says.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum, StrEnum
from typing import Any
from urllib.parse import urlsplit

from proctor.errors import ConfigError
from proctor.policy.cedar import cedar_string
from proctor.vault.inject import Injection, Style

UNMAPPED = 'Proctor::Action::"Unmapped"'
"""The action of a request that no route matches; the pipeline denies it."""

MALFORMED = 'Proctor::Action::"Malformed"'
"""The action of a request that cannot be classified; the pipeline denies it."""

SERVICE_TYPE = "Proctor::Service"
DEFAULT_TIMEOUT = 30.0
DEFAULT_MAX_BODY = 1024 * 1024
MAX_CONTEXT_STRING = 1024
# RFC 8785 §3.2.2.3 via I-JSON: integers beyond this do not survive a JSON reader.
MAX_SAFE_INTEGER = 2**53 - 1
RESERVED_CONTEXT = frozenset({"task", "user", "approved"})

_SERVICE_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_METHOD = re.compile(r"[A-Z]{1,20}")
_PLAIN = re.compile(r'[^"\\\x00-\x1f\x7f]*')
_PARAMETER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
_ACTION = re.compile(r'((?:[A-Za-z_][A-Za-z0-9_]*::)*Action)::"([^"\\{}]+)"')
_RESOURCE = re.compile(r'((?:[A-Za-z_][A-Za-z0-9_]*::)*[A-Za-z_][A-Za-z0-9_]*)::"(.*)"')
_SERVICE_KEYS = frozenset({"base_url", "credential", "timeout", "max_body", "routes"})
_ROUTE_KEYS = frozenset({"method", "path", "action", "resource", "context"})
_FIELD_KEYS = frozenset({"from", "type", "optional"})


class _Absent(Enum):
    ABSENT = "absent"


NO_BODY = _Absent.ABSENT
"""Passed as ``json_body`` when the request carried no JSON body."""


class FieldType(StrEnum):
    """The Cedar type a context field is checked against."""

    STRING = "string"
    LONG = "long"
    BOOL = "bool"


class Source(StrEnum):
    """Where a context field is read from."""

    PATH = "path"
    QUERY = "query"
    BODY = "body"


@dataclass(frozen=True)
class ContextField:
    """One context field of a route: its name, where it comes from and its type."""

    name: str
    source: Source
    key: tuple[str, ...]
    type: FieldType = FieldType.STRING
    optional: bool = False

    @classmethod
    def from_config(cls, name: str, value: object) -> ContextField:
        """Build from ``"body.vendor"`` or ``{ from = ..., type = ..., optional }``.

        Raises ConfigError naming the field and what is wrong with it.
        """
        if not _IDENTIFIER.fullmatch(name) or name in RESERVED_CONTEXT:
            raise ConfigError(
                f"context field {name!r} must be an identifier other than "
                f"{', '.join(sorted(RESERVED_CONTEXT))}"
            )
        table = {"from": value} if isinstance(value, str) else value
        if not isinstance(table, Mapping):
            raise ConfigError(f"context field {name!r} must be a source or a table")
        _refuse_unknown(table, _FIELD_KEYS, f"context field {name!r}")
        source, kind = table.get("from"), table.get("type", "string")
        optional = table.get("optional", False)
        if not isinstance(kind, str) or kind not in {str(t) for t in FieldType}:
            raise ConfigError(
                f"context field {name!r} type must be string, long or bool, "
                f"got {kind!r}"
            )
        if not isinstance(optional, bool):
            raise ConfigError(f"context field {name!r} optional must be true or false")

        where, key = _parse_source(name, source)
        return cls(name, where, key, FieldType(kind), optional)

    @property
    def origin(self) -> str:
        """Name where the value comes from, as configured: ``body.amount``."""
        return ".".join((self.source, *self.key))


@dataclass(frozen=True)
class Route:
    """One mapped route: method and path template to a Cedar action and resource."""

    method: str
    path: str
    action: str
    resource: str
    context: tuple[ContextField, ...] = ()
    segments: tuple[str, ...] = field(default=(), compare=False, repr=False)
    parameters: tuple[str | None, ...] = field(default=(), compare=False, repr=False)
    _resource_type: str = field(default="", compare=False, repr=False)
    _resource_parts: tuple[tuple[str, bool], ...] = field(
        default=(), compare=False, repr=False
    )

    @classmethod
    def from_table(cls, table: Mapping[str, Any], *, service: str) -> Route:
        """Build from one ``[[services.<name>.routes]]`` table; raises ConfigError."""
        _refuse_unknown(table, _ROUTE_KEYS, f"route of service {service!r}")
        method, path = table.get("method"), table.get("path")
        if not isinstance(method, str) or not _METHOD.fullmatch(method):
            raise ConfigError(
                f"route method must be an upper-case HTTP method, got {method!r}"
            )
        segments, parameters = _parse_template(path)
        where = f"route {method} {path}"
        action = _parse_action(table.get("action"), where)
        resource = table.get("resource", f"{SERVICE_TYPE}::{cedar_string(service)}")
        resource_type, parts = _parse_resource(resource, set(filter(None, parameters)))
        fields = _parse_context(table.get("context", {}), where)
        _check_path_sources(fields, parameters, where)

        return cls(
            method,
            str(path),
            action,
            str(resource),
            fields,
            segments,
            parameters,
            resource_type,
            parts,
        )

    @property
    def reads_body(self) -> bool:
        """Tell whether a context field comes from the JSON body."""
        return any(item.source is Source.BODY for item in self.context)

    @property
    def shape(self) -> tuple[str | None, ...]:
        """The template with parameters blanked: two routes of one shape clash."""
        return tuple(
            None if name is not None else literal
            for literal, name in zip(self.segments, self.parameters, strict=True)
        )

    def match(self, parts: Sequence[str]) -> dict[str, str] | None:
        """Return the path parameters when ``parts`` (decoded segments) match."""
        if len(parts) != len(self.segments):
            return None
        found: dict[str, str] = {}
        for part, literal, name in zip(
            parts, self.segments, self.parameters, strict=True
        ):
            if name is None:
                if part != literal:
                    return None
            elif not part:
                return None
            else:
                found[name] = part

        return found

    def resource_for(self, parameters: Mapping[str, str]) -> str:
        """Fill the resource template with path parameters, as a Cedar uid."""
        if not self._resource_type:
            return self.resource
        text = "".join(
            parameters[part] if is_name else part
            for part, is_name in self._resource_parts
        )

        # Most ids need no escaping; cedar_string walks every character.
        literal = f'"{text}"' if _PLAIN.fullmatch(text) else cedar_string(text)

        return f"{self._resource_type}::{literal}"


@dataclass(frozen=True)
class ServiceConfig:
    """One upstream service: where it is, the credential it gets, its limits, routes."""

    name: str
    base_url: str
    credential: Injection | None = None
    timeout: float = DEFAULT_TIMEOUT
    max_body: int = DEFAULT_MAX_BODY
    routes: tuple[Route, ...] = ()
    _index: Mapping[tuple[str, int], tuple[Route, ...]] = field(
        default_factory=dict, compare=False, repr=False
    )

    @classmethod
    def from_table(cls, name: str, table: Mapping[str, Any]) -> ServiceConfig:
        """Build from ``[services.<name>]``; raises ConfigError naming the problem."""
        if not _SERVICE_NAME.fullmatch(name):
            raise ConfigError(
                f"service name {name!r} must be lower-case letters, digits, '-' or "
                "'_' (it is a URL segment)"
            )
        if not isinstance(table, Mapping):
            raise ConfigError(f"[services.{name}] must be a table")
        _refuse_unknown(table, _SERVICE_KEYS, f"[services.{name}]")
        base_url = _parse_base_url(table.get("base_url"), name)
        credential = _parse_credential(table.get("credential"), name)
        timeout = _positive(table, "timeout", DEFAULT_TIMEOUT, name)
        max_body = _positive(table, "max_body", DEFAULT_MAX_BODY, name)
        if not isinstance(max_body, int):
            raise ConfigError(f"[services.{name}] max_body must be a whole number")
        routes = _parse_routes(table.get("routes", []), name)

        return cls(
            name,
            base_url,
            credential,
            float(timeout),
            max_body,
            routes,
            _build_index(routes, name),
        )

    @property
    def resource(self) -> str:
        """The service as a Cedar uid: the resource of unmapped requests."""
        return f"{SERVICE_TYPE}::{cedar_string(self.name)}"

    def find(self, method: str, parts: Sequence[str]) -> tuple[Route, dict[str, str]]:
        """Return the most specific route matching, with its path parameters.

        Raises LookupError when no route matches.
        """
        for route in self._index.get((method, len(parts)), ()):
            found = route.match(parts)
            if found is not None:
                return route, found

        raise LookupError(f"no route for {method} with {len(parts)} segments")


def load_services(raw: Mapping[str, Any]) -> dict[str, ServiceConfig]:
    """Read every ``[services.<name>]`` of a parsed proctor.toml; raises ConfigError."""
    services = raw.get("services", {})
    if not isinstance(services, Mapping):
        raise ConfigError("[services] must be a table of services")

    return {
        name: ServiceConfig.from_table(name, table) for name, table in services.items()
    }


# Reading the configuration


def _refuse_unknown(
    table: Mapping[str, Any], known: frozenset[str], where: str
) -> None:
    unknown = sorted(set(table) - known)
    if unknown:
        raise ConfigError(
            f"{where} has unknown key {unknown[0]!r}; expected "
            f"{', '.join(sorted(known))}"
        )


def _parse_base_url(value: object, service: str) -> str:
    where = f"[services.{service}] base_url"
    if not isinstance(value, str):
        raise ConfigError(f"{where} must be an http(s) URL")
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError as exc:
        raise ConfigError(f"{where} is not a valid URL: {value!r}") from exc
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise ConfigError(f"{where} must be an http(s) URL with a host, got {value!r}")
    # Credentials come from the vault only, and a query or fragment would be
    # spliced into every forwarded path.
    if parts.username is not None or parts.query or parts.fragment:
        raise ConfigError(f"{where} must not hold credentials, a query or a fragment")
    if port == 0:
        raise ConfigError(f"{where} has port 0")

    return value.rstrip("/")


def _parse_credential(value: object, service: str) -> Injection | None:
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise ConfigError(f"[services.{service}] credential must be a table")
    injection = Injection.from_config(value)
    if injection.style is Style.ENV:
        raise ConfigError(
            f"[services.{service}] credential style env is for MCP servers only"
        )

    return injection


def _positive(
    table: Mapping[str, Any], key: str, default: float, service: str
) -> float | int:
    value = table.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise ConfigError(
            f"[services.{service}] {key} must be a positive number, got {value!r}"
        )

    return value


def _parse_routes(value: object, service: str) -> tuple[Route, ...]:
    if not isinstance(value, list) or not all(isinstance(t, Mapping) for t in value):
        raise ConfigError(f"[[services.{service}.routes]] must be an array of tables")

    return tuple(Route.from_table(table, service=service) for table in value)


def _parse_template(path: object) -> tuple[tuple[str, ...], tuple[str | None, ...]]:
    if not isinstance(path, str) or not path.startswith("/"):
        raise ConfigError(
            f"route path must be a string starting with '/', got {path!r}"
        )
    segments = tuple(path.split("/")[1:])
    parameters: list[str | None] = []
    for index, segment in enumerate(segments):
        parameter = _PARAMETER.fullmatch(segment)
        if parameter is not None:
            if parameter[1] in parameters:
                raise ConfigError(f"route path {path!r} repeats {{{parameter[1]}}}")
            parameters.append(parameter[1])
            continue
        if "{" in segment or "}" in segment or segment in {".", ".."}:
            raise ConfigError(
                f"route path {path!r} segment {segment!r} is neither text nor {{name}}"
            )
        if not segment and index != len(segments) - 1:
            raise ConfigError(f"route path {path!r} has an empty segment")
        parameters.append(None)

    return segments, tuple(parameters)


def _parse_action(value: object, where: str) -> str:
    if not isinstance(value, str) or not _ACTION.fullmatch(value):
        raise ConfigError(
            f'{where} action must read Namespace::Action::"name", got {value!r}'
        )
    if value.startswith("Proctor::"):
        raise ConfigError(f"{where} action {value} is one of Proctor's own")

    return value


def _parse_resource(
    value: object, parameters: set[str]
) -> tuple[str, tuple[tuple[str, bool], ...]]:
    """Split ``Type::"text {name}"`` into its type and literal/placeholder parts."""
    found = _RESOURCE.fullmatch(value) if isinstance(value, str) else None
    if found is None:
        raise ConfigError(f'route resource must read Type::"id", got {value!r}')
    parts: list[tuple[str, bool]] = []
    for index, piece in enumerate(re.split(r"(\{[^{}]*\})", found[2])):
        if index % 2:
            name = piece[1:-1]
            if name not in parameters:
                raise ConfigError(
                    f"route resource {value!r} names {piece}, not a path parameter"
                )
            parts.append((name, True))
        elif set(piece) & set('"\\{}'):
            raise ConfigError(
                f"route resource {value!r} holds a quote, backslash or stray brace"
            )
        elif piece:
            parts.append((piece, False))

    return found[1], tuple(parts)


def _parse_context(value: object, where: str) -> tuple[ContextField, ...]:
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where} context must be a table of fields")

    return tuple(ContextField.from_config(str(k), v) for k, v in value.items())


def _parse_source(name: str, source: object) -> tuple[Source, tuple[str, ...]]:
    where = f"context field {name!r}"
    if not isinstance(source, str) or "." not in source:
        raise ConfigError(
            f"{where} source must read path.<name>, query.<name> or body.<a>.<b>, "
            f"got {source!r}"
        )
    head, _, rest = source.partition(".")
    if head not in {str(s) for s in Source}:
        raise ConfigError(f"{where} source must start with path, query or body")
    key = tuple(rest.split(".")) if head == Source.BODY else (rest,)
    if not all(key):
        raise ConfigError(f"{where} source {source!r} has an empty name")

    return Source(head), key


def _check_path_sources(
    fields: tuple[ContextField, ...], parameters: tuple[str | None, ...], where: str
) -> None:
    for item in fields:
        if item.source is Source.PATH and item.key[0] not in parameters:
            raise ConfigError(f"{where}: {item.origin} is not a path parameter")


def _build_index(
    routes: tuple[Route, ...], service: str
) -> dict[tuple[str, int], tuple[Route, ...]]:
    """Group routes by method and length, most specific first; refuse clashes."""
    groups: dict[tuple[str, int], list[Route]] = {}
    shapes: dict[tuple[str, tuple[str | None, ...]], Route] = {}
    for route in routes:
        clash = shapes.setdefault((route.method, route.shape), route)
        if clash is not route:
            raise ConfigError(
                f"[services.{service}] routes {route.method} {clash.path} and "
                f"{route.path} match the same requests"
            )
        groups.setdefault((route.method, len(route.segments)), []).append(route)

    # A literal beats a parameter at the first segment where two templates differ.
    return {
        key: tuple(
            sorted(group, key=lambda r: tuple(p is not None for p in r.parameters))
        )
        for key, group in groups.items()
    }
