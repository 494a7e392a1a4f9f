"""The :class:`~proctor.gateway.pipeline.Call` an HTTP request becomes: what the
pipeline decides on and records, with the request as sent and the digest that binds
an approval to it. Secrets are still in it; the pipeline scrubs before recording.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping

from proctor.gateway.classify import Classification, Classified
from proctor.gateway.headers import Meta
from proctor.gateway.inbound import Body, Problem, Target, request_digest
from proctor.gateway.pipeline import Call
from proctor.gateway.routes import MALFORMED, SERVICE_TYPE, ServiceConfig
from proctor.ledger.canonical import canonical
from proctor.policy.cedar import cedar_string

DOOR = "http"
MAX_RECORDED_PATH = 1024

Scrub = Callable[[object], object]


def classified_call(
    *,
    method: str,
    service: ServiceConfig,
    target: Target,
    body: Body,
    headers: Mapping[str, str],
    classified: Classification,
    meta: Meta,
    scrub: Scrub,
) -> Call:
    """Return the call for a request that reached classification.

    ``headers`` are the ones forwarded (before the credential goes in); an
    unmapped or malformed request records the reason under ``problem``.
    """
    request: dict[str, object] = {
        "method": method,
        "path": target.wire_path,
        "query": recorded_query(target.query, scrub),
        "headers": dict(headers),
        "body": body.recorded,
    }
    if not isinstance(classified, Classified):
        request["problem"] = classified.reason

    return Call(
        door=DOOR,
        target=service.name,
        action=classified.action,
        resource=classified.resource,
        context=dict(classified.context),
        request=request,
        digest=request_digest(method, service.name, target, body.digest, headers),
        credential=service.credential.secret if service.credential else None,
        approval=meta.approval,
        note=meta.note,
        trace=meta.trace,
        tool_call=meta.tool_call,
    )


def malformed_call(*, service: str, summary: Mapping[str, object], meta: Meta) -> Call:
    """Return the call recording a request refused before it could be classified."""
    return Call(
        door=DOOR,
        target=service,
        action=MALFORMED,
        resource=f"{SERVICE_TYPE}::{cedar_string(service)}",
        context={},
        request=dict(summary),
        digest=hashlib.sha256(canonical(dict(summary))).hexdigest(),
        approval=meta.approval,
        note=meta.note,
        trace=meta.trace,
        tool_call=meta.tool_call,
    )


def summary(method: str, raw_path: bytes, problem: Problem | None) -> dict[str, object]:
    """Describe a request for a record made before (or instead of) classifying it.

    The query is left out: it can carry credentials under any name.
    """
    described: dict[str, object] = {
        "method": method,
        "path": raw_path.decode("latin-1")[:MAX_RECORDED_PATH],
    }
    if problem is not None:
        described["problem"] = problem.reason

    return described


def recorded_query(query: tuple[tuple[str, str], ...], scrub: Scrub) -> list[list[str]]:
    """Return the query pairs as the ledger keeps them, sensitive values removed.

    As ``(name, value)`` tuples the scrubber removes the value of a sensitive name
    (``?api_key=...``); the ledger's canonical JSON then holds them as lists.
    """
    if not query:
        return []
    scrubbed = scrub(query)
    pairs = scrubbed if isinstance(scrubbed, tuple) else query

    return [[str(name), str(value)] for name, value in pairs]
