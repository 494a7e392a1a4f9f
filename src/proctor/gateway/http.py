"""The HTTP front door of ``proctor serve``: ``/http/<service>/<path>`` for every
method, checked, authenticated, classified, decided by the pipeline, and forwarded
with the real credential only when the pipeline allows it.

Order of one request: read Proctor's headers and check the raw target (only
configured services; no absolute URLs, dot segments or encoded slashes: see
:mod:`proctor.gateway.inbound`); authenticate the task token, which the pipeline
records when refused; then, for an authenticated agent, any problem found so far or
while reading the body (size, time, content type, JSON) is answered with its 4xx
after the pipeline has recorded it as a call on ``Proctor::Action::"Malformed"``.
A request that classifies goes to :meth:`authorize`; an unmapped one too, on
``Proctor::Action::"Unmapped"``. Neither a malformed nor an unmapped request is ever
forwarded, whatever the verdict. An allowed call loses the agent's credentials and
hop-by-hop headers, gains the vault's credential, and is streamed back as it
arrives, any vault value in its headers or body masked; its outcome is then reported
with :meth:`complete`.

The ``Host`` header never routes: the upstream is the configured ``base_url`` and
the path comes from the target below ``/http/<service>``. An absolute-form target
(``GET http://elsewhere/ HTTP/1.1``) does not start with ``/http/`` and never reaches
this route. Header size is bounded on the wire (:mod:`proctor.gateway.wire`) and
checked again here, body size while reading it.

Every answer carries ``Proctor-Entry``: the decision entry's index, or ``none`` when
nothing could be recorded (then the status is 401 or 503 and nothing was sent).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import secrets
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Protocol

import orjson
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route as StarletteRoute
from starlette.types import Receive, Scope, Send

from proctor.config import Config
from proctor.errors import ProctorError
from proctor.gateway.calls import DOOR, classified_call, malformed_call, summary
from proctor.gateway.classify import BadRequest, Classified, classify
from proctor.gateway.forward import Delivery, Failure, Relay, Upstream, is_encoded
from proctor.gateway.headers import (
    ENTRY_HEADER,
    MAX_HEADER_BYTES,
    Meta,
    Relocation,
    inbound_headers,
    outbound_headers,
    read_meta,
)
from proctor.gateway.inbound import (
    Body,
    Problem,
    Target,
    encode_query,
    parse_body,
    parse_target,
)
from proctor.gateway.pipeline import RECENT_READ, Call, Verdict
from proctor.gateway.routes import (
    MALFORMED,
    ServiceConfig,
    load_services,
)
from proctor.tasks.token import TaskClaims
from proctor.vault import Masking
from proctor.vault.inject import Outbound, apply

log = logging.getLogger(__name__)

PREFIX = "/http"
_ID_PREFIX = secrets.token_hex(4)
_ID_COUNT = itertools.count(1)
REFUSED_METHODS = frozenset({"CONNECT", "TRACE"})
"""TRACE would echo the injected credential back; CONNECT would open a tunnel."""

_ERRORS = {
    400: "bad_request",
    404: "unknown_service",
    405: "method_not_allowed",
    408: "request_timeout",
    413: "body_too_large",
    414: "target_too_long",
    415: "unsupported_media_type",
    431: "headers_too_large",
    502: "upstream_failed",
    503: "credential_unavailable",
    504: "upstream_timeout",
}


class DoorPipeline(Protocol):
    """What the door needs from :class:`proctor.gateway.pipeline.Pipeline`."""

    async def authenticate(
        self,
        token: str | None,
        *,
        door: str,
        target: str,
        request: Mapping[str, object],
        recent: float = 0.0,
    ) -> TaskClaims | Verdict: ...

    async def authorize(
        self, claims: TaskClaims, call: Call, *, wait: float = 0.0
    ) -> Verdict: ...

    async def complete(
        self,
        verdict: Verdict,
        *,
        status: int | None,
        size: int,
        digest: str | None,
        latency_us: int,
        error: str | None = None,
        masked: int = 0,
    ) -> None: ...

    def scrub(self, value: object) -> object: ...

    def masking(self) -> Masking: ...

    def secret(self, name: str) -> str: ...


@dataclass(frozen=True)
class DoorSettings:
    """Limits of the door that are not per service.

    ``body_timeout``: seconds to receive a request body (408 after). ``max_wait``:
    the longest ``Prefer: wait=N`` honoured while a call waits for approval.
    ``max_header_bytes``: request line and headers together (431 above).
    """

    body_timeout: float = 30.0
    max_wait: float = 60.0
    max_header_bytes: int = MAX_HEADER_BYTES
    pool_limit: int = 512
    pool_limit_per_host: int = 128


@dataclass
class _Exchange:
    """One request in flight: what the log line and the records need."""

    id: str
    started: int
    method: str
    meta: Meta
    agent: str = "-"
    task: str = "-"

    def latency_us(self) -> int:
        return (time.perf_counter_ns() - self.started) // 1000


@dataclass(frozen=True)
class _Checked:
    """A request that passed the door's checks: its service, target and body."""

    service: ServiceConfig
    target: Target
    body: Body


class HttpDoor:
    """The ``/http/<service>/<path>`` route: mount :meth:`route`, run :meth:`running`.

    ::

        door = HttpDoor.from_config(pipeline, config)
        app = Starlette(routes=[door.route()], lifespan=door.lifespan)
    """

    def __init__(
        self,
        pipeline: DoorPipeline,
        services: Mapping[str, ServiceConfig],
        *,
        settings: DoorSettings | None = None,
    ) -> None:
        self._pipeline = pipeline
        self._services = dict(services)
        self._settings = settings or DoorSettings()
        self._upstream = Upstream(
            limit=self._settings.pool_limit,
            limit_per_host=self._settings.pool_limit_per_host,
        )
        self._prefix = f"{PREFIX}/".encode()
        self._relocations = {
            name: Relocation.for_service(service.base_url, f"{PREFIX}/{name}")
            for name, service in self._services.items()
        }

    @classmethod
    def from_config(
        cls,
        pipeline: DoorPipeline,
        config: Config,
        *,
        settings: DoorSettings | None = None,
    ) -> HttpDoor:
        """Build from proctor.toml's ``[services]``; raises ConfigError."""
        return cls(pipeline, load_services(config.raw), settings=settings)

    def route(self) -> StarletteRoute:
        """Return the Starlette route serving every method below ``/http/``."""
        return StarletteRoute(f"{PREFIX}/{{service}}/{{path:path}}", endpoint=self)

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Hold the upstream connection pool open for the app's lifetime."""
        await self._upstream.open()
        try:
            yield
        finally:
            await self._upstream.close()

    def lifespan(self, app: object) -> AbstractAsyncContextManager[None]:
        """Serve as (or inside) a Starlette ``lifespan``."""
        return self.running()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = await self.handle(Request(scope, receive))
        await response(scope, receive, send)

    async def handle(self, request: Request) -> Response:
        """Answer one request below ``/http/``; never raises for bad input."""
        scope = request.scope
        meta = read_meta(scope["headers"])
        exchange = _Exchange(
            _request_id(), time.perf_counter_ns(), scope["method"], meta
        )
        target = parse_target(
            _raw_path(scope), scope.get("query_string", b""), self._prefix
        )
        service = (
            self._services.get(target.service) if isinstance(target, Target) else None
        )
        problem = self._first_problem(exchange, target, service)
        name = target.service if isinstance(target, Target) else "-"

        # Every request past this point is decided by authorize, which confirms an
        # allowed call against the ledger once its decision is durable.
        claims = await self._pipeline.authenticate(
            meta.token,
            door=DOOR,
            target=name,
            request=summary(exchange.method, _raw_path(scope), problem),
            recent=RECENT_READ,
        )
        if isinstance(claims, Verdict):
            return self._refusal(exchange, claims)
        exchange.agent, exchange.task = claims.agent, claims.task
        if problem is not None or service is None or not isinstance(target, Target):
            problem = problem or Problem(404, "no such service")
            return await self._malformed(exchange, claims, name, scope, problem)

        body = await self._read_body(request, service, meta)
        if isinstance(body, Problem):
            return await self._malformed(exchange, claims, name, scope, body)

        checked = _Checked(service, target, body)
        return await self._decide(exchange, claims, checked, scope)

    def _first_problem(
        self,
        exchange: _Exchange,
        target: Target | Problem,
        service: ServiceConfig | None,
    ) -> Problem | None:
        meta = exchange.meta
        if meta.size > self._settings.max_header_bytes:
            return Problem(431, "the request headers are too large")
        if isinstance(target, Problem):
            return target
        if service is None:
            return Problem(404, f"no service named {target.service!r} is configured")
        if exchange.method in REFUSED_METHODS:
            return Problem(405, f"{exchange.method} is never forwarded")
        if meta.problem is not None:
            return Problem(400, meta.problem)

        return None

    async def _read_body(
        self, request: Request, service: ServiceConfig, meta: Meta
    ) -> Body | Problem:
        """Read the whole body within the service's size and the door's time limit."""
        limit = service.max_body
        declared = meta.content_length
        if declared is not None and not declared.isdigit():
            return Problem(400, "Content-Length is not a number")
        if declared is not None and int(declared) > limit:
            return Problem(413, f"the body is larger than {limit} bytes")
        if not meta.chunked and declared in {None, "0"}:
            # RFC 9112 §6.3: without Content-Length or Transfer-Encoding there is
            # no body, so there is nothing to wait for.
            return parse_body(b"", meta.content_type)
        raw = await self._receive(request, limit)
        if isinstance(raw, Problem):
            return raw

        return parse_body(raw, meta.content_type)

    async def _receive(self, request: Request, limit: int) -> bytes | Problem:
        chunks: list[bytes] = []
        size = 0
        try:
            async with asyncio.timeout(self._settings.body_timeout):
                async for chunk in request.stream():
                    size += len(chunk)
                    if size > limit:
                        return Problem(413, f"the body is larger than {limit} bytes")
                    chunks.append(chunk)
        except TimeoutError:
            return Problem(408, "the body did not arrive in time")
        except ClientDisconnect:
            return Problem(400, "the agent went away while sending the body")

        return b"".join(chunks)

    async def _decide(
        self, exchange: _Exchange, claims: TaskClaims, checked: _Checked, scope: Scope
    ) -> Response:
        target = checked.target
        classified = classify(
            checked.service,
            exchange.method,
            target.path,
            target.query,
            checked.body.json,
        )
        headers = outbound_headers(scope["headers"])
        call = classified_call(
            method=exchange.method,
            service=checked.service,
            target=target,
            body=checked.body,
            headers=headers,
            classified=classified,
            meta=exchange.meta,
            scrub=self._pipeline.scrub,
        )
        wait = min(exchange.meta.wait, self._settings.max_wait)
        verdict = await self._pipeline.authorize(claims, call, wait=wait)
        if not isinstance(classified, Classified):
            problem = (
                Problem(classified.status, classified.reason)
                if isinstance(classified, BadRequest)
                else None
            )
            return await self._not_forwarded(exchange, verdict, problem)
        if not verdict.allowed:
            return self._refusal(exchange, verdict)

        return await self._forward(exchange, verdict, checked, headers)

    async def _malformed(
        self,
        exchange: _Exchange,
        claims: TaskClaims,
        name: str,
        scope: Scope,
        problem: Problem,
    ) -> Response:
        """Record a request that cannot be classified, then answer its 4xx."""
        described = summary(exchange.method, _raw_path(scope), problem)
        call = malformed_call(service=name, summary=described, meta=exchange.meta)
        verdict = await self._pipeline.authorize(claims, call)

        return await self._not_forwarded(exchange, verdict, problem)

    async def _not_forwarded(
        self, exchange: _Exchange, verdict: Verdict, problem: Problem | None
    ) -> Response:
        """Answer a malformed or unmapped call, which is never sent upstream."""
        if verdict.allowed:
            # Fail closed: whatever a policy says, only a mapped route is forwarded.
            await self._complete(exchange, verdict, None, "not sent: not a mapped call")
            verdict = _denied(verdict, "only mapped routes are forwarded")
        if problem is None or verdict.entry is None:
            return self._refusal(exchange, verdict)
        body = {
            "error": _ERRORS.get(problem.status, "bad_request"),
            "reason": problem.reason,
            "action": MALFORMED,
            "policies": list(verdict.policies),
            "entry": verdict.entry,
        }

        return self._answer(exchange, verdict, problem.status, body)

    async def _forward(
        self,
        exchange: _Exchange,
        verdict: Verdict,
        checked: _Checked,
        headers: dict[str, str],
    ) -> Response:
        service, target = checked.service, checked.target
        outbound = Outbound(headers, target.query)
        if service.credential is not None:
            try:
                secret = self._pipeline.secret(service.credential.secret)
                outbound = apply(service.credential, secret, outbound)
            except ProctorError as exc:
                return await self._failed(exchange, verdict, Failure(503, str(exc)))
        url = service.base_url + target.wire_path
        if outbound.query:
            url = f"{url}?{encode_query(outbound.query)}"
        answer = await self._upstream.send(
            service, exchange.method, url, outbound.headers, checked.body.raw
        )
        if isinstance(answer, Failure):
            return await self._failed(exchange, verdict, answer)
        if is_encoded(answer):
            # Asked for identity and sent compressed anyway: its bytes cannot be
            # looked into for vault values, so they are not passed on.
            answer.close()
            return await self._failed(exchange, verdict, _encoded(service.name))

        async def done(delivery: Delivery) -> None:
            await self._complete(exchange, verdict, delivery, delivery.error)

        masking = self._pipeline.masking()
        passed = [
            (name, masking.whole(value))
            for name, value in inbound_headers(
                answer.raw_headers, relocation=self._relocations[service.name]
            )
        ]
        passed.append((ENTRY_HEADER.encode(), _entry(verdict).encode()))

        return Relay(answer, passed, service, done, masking=masking)

    async def _failed(
        self, exchange: _Exchange, verdict: Verdict, failure: Failure
    ) -> Response:
        await self._complete(exchange, verdict, None, failure.reason)
        body = {
            "error": _ERRORS.get(failure.status, "upstream_failed"),
            "reason": failure.reason,
            "action": verdict.action,
            "policies": list(verdict.policies),
            "entry": verdict.entry,
        }

        return self._answer(exchange, verdict, failure.status, body)

    async def _complete(
        self,
        exchange: _Exchange,
        verdict: Verdict,
        delivery: Delivery | None,
        error: str | None,
    ) -> None:
        latency = exchange.latency_us()
        masked = delivery.masked if delivery else 0
        if masked:
            log.warning(
                "masked vault values in an answer id=%s agent=%s task=%s count=%d",
                exchange.id,
                exchange.agent,
                exchange.task,
                masked,
            )
        await self._pipeline.complete(
            verdict,
            status=delivery.status if delivery else None,
            size=delivery.size if delivery else 0,
            digest=delivery.digest if delivery else None,
            latency_us=latency,
            error=error,
            masked=masked,
        )
        if delivery is not None:
            _log_call(exchange, verdict, delivery.status, latency)

    def _refusal(self, exchange: _Exchange, verdict: Verdict) -> Response:
        return self._answer(exchange, verdict, verdict.status, verdict.body())

    def _answer(
        self,
        exchange: _Exchange,
        verdict: Verdict,
        status: int,
        body: Mapping[str, object],
    ) -> Response:
        _log_call(exchange, verdict, status, exchange.latency_us())
        # A refusal may repeat what the agent sent (a service or a value named in
        # its path): masked like every answer, so no vault value goes back.
        return Response(
            self._pipeline.masking().whole(orjson.dumps(body)),
            status_code=status,
            media_type="application/json",
            headers={ENTRY_HEADER: _entry(verdict)},
        )


def _encoded(service: str) -> Failure:
    return Failure(
        502,
        f"service {service} answered with a compressed body (Content-Encoding), "
        "which cannot be checked for vault values, so it was not passed on",
    )


def _denied(verdict: Verdict, reason: str) -> Verdict:
    return Verdict(
        False,
        403,
        verdict.entry,
        "deny",
        reason,
        verdict.action,
        verdict.policies,
        task=verdict.task,
    )


def _entry(verdict: Verdict) -> str:
    return "none" if verdict.entry is None else str(verdict.entry)


def _raw_path(scope: Scope) -> bytes:
    raw: bytes = scope.get("raw_path") or scope["path"].encode("utf-8")
    root = scope.get("root_path", "").encode("utf-8")
    if root and raw.startswith(root):
        raw = raw[len(root) :]

    return raw


def _request_id() -> str:
    # Unique within this process's log: a random prefix per process, then a count.
    return f"{_ID_PREFIX}{next(_ID_COUNT):x}"


def _log_call(exchange: _Exchange, verdict: Verdict, status: int, latency: int) -> None:
    # Ids and outcomes only: paths, queries and headers can carry credentials. A call
    # that went through is in the ledger already; every other answer is news.
    level = logging.DEBUG if verdict.allowed and status < 500 else logging.INFO
    log.log(
        level,
        "call id=%s agent=%s task=%s action=%s decision=%s status=%d latency_ms=%.3f",
        exchange.id,
        exchange.agent,
        exchange.task,
        verdict.action or "-",
        verdict.outcome,
        status,
        latency / 1000,
    )
