"""One ``tools/call`` as the pipeline sees it: the Cedar action, resource and context,
the request as recorded and its digest, and Proctor's own ``_meta`` keys.

Proctor's keys in a request's ``_meta`` (reverse-DNS, as the MCP specification asks
of ``_meta`` keys that are not the protocol's own)::

    dev.proctor/reasoning     why the agent makes this call (text)
    dev.proctor/tool-call     the agent's tool-call id (text)
    dev.proctor/traceparent   W3C trace context (text)
    dev.proctor/approval      the approval id to retry a call with once approved

They are recorded and never forwarded; neither are the protocol's per-hop keys
(``io.modelcontextprotocol/*``, ``progressToken``). A result carries
``dev.proctor/entry``, the index of the decision entry that let the call through.

The digest binds approvals to one exact call: SHA-256 of the RFC 8785 canonical JSON
of ``{"server", "tool", "arguments"}`` (sorted plain JSON for the integers RFC 8785
refuses, beyond ±(2**53 - 1)). A result's digest is SHA-256 of the canonical
JSON of ``{"content", "structuredContent"?, "isError"}`` as the downstream sent it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from proctor.errors import EntryError
from proctor.gateway.mcp.config import TOOL_NAME, McpServer
from proctor.gateway.pipeline import MALFORMED, Call
from proctor.ledger.canonical import canonical, reference

DOOR = "mcp"
META_PREFIX = "dev.proctor/"
REASONING_KEY = "dev.proctor/reasoning"
TOOL_CALL_KEY = "dev.proctor/tool-call"
TRACEPARENT_KEY = "dev.proctor/traceparent"
APPROVAL_KEY = "dev.proctor/approval"
ENTRY_KEY = "dev.proctor/entry"

MAX_RECORDED_ARGS = 16_384
"""Bytes of canonical arguments kept in an entry; larger ones are kept as a digest."""
MAX_NOTE = 2_048
"""Characters of reasoning kept in the decision entry; longer reasoning is its own
reasoning entry, which the decision names."""
MAX_REASONING = 8_192
MAX_CORRELATION = 256

_PER_HOP = ("io.modelcontextprotocol/", "progressToken")


@dataclass(frozen=True)
class Classified:
    """A classified call, what to forward if it is allowed, and what was wrong."""

    call: Call
    arguments: dict[str, Any]
    meta: dict[str, Any]
    reasoning: str | None = None
    problem: str | None = None


def classify(
    server: McpServer,
    tool: str,
    arguments: Mapping[str, Any] | None,
    meta: Mapping[str, Any] | None,
) -> Classified:
    """Classify one tool call; a call that cannot be classified is MALFORMED.

    A malformed call still goes through the pipeline, so the attempt is recorded,
    and the door never forwards it whatever the verdict says.
    """
    arguments = dict(arguments or {})
    digest = call_digest(server.name, tool, arguments)
    forward = forwarded_meta(meta)
    request: dict[str, Any] = {
        "method": "tools/call",
        "tool": tool[:MAX_CORRELATION],
        "arguments": recordable(arguments),
    }
    ours, problem = _correlation(meta or {})
    if problem is None:
        action, resource, context, problem = _cedar(server, tool, arguments)
    if problem is not None:
        request["problem"] = problem
        action, resource, context = MALFORMED, _server_uid(server), {}
    note = ours.get(REASONING_KEY)
    long_reasoning = note if note is not None and len(note) > MAX_NOTE else None
    call = Call(
        door=DOOR,
        target=server.name,
        action=action,
        resource=resource,
        context=context,
        request=request,
        digest=digest,
        approval=ours.get(APPROVAL_KEY),
        note=None if long_reasoning else note,
        trace=ours.get(TRACEPARENT_KEY),
        tool_call=ours.get(TOOL_CALL_KEY),
    )

    return Classified(call, arguments, forward, long_reasoning, problem)


def unreadable(server: McpServer, request: Mapping[str, Any]) -> Call:
    """The call recording an HTTP request to ``server`` that is no MCP message at
    all (not JSON, too large); the door never forwards it."""
    described = dict(request)
    return Call(
        door=DOOR,
        target=server.name,
        action=MALFORMED,
        resource=_server_uid(server),
        context={},
        request=described,
        digest=hashlib.sha256(_canonical(described)).hexdigest(),
    )


def call_digest(server: str, tool: str, arguments: Mapping[str, Any]) -> str:
    """SHA-256 hex of the canonical ``{server, tool, arguments}``."""
    value = {"server": server, "tool": tool, "arguments": dict(arguments)}
    return hashlib.sha256(_canonical(value)).hexdigest()


def result_digest(result: Mapping[str, Any]) -> tuple[str, int]:
    """SHA-256 hex and size in bytes of the canonical substance of a tool result."""
    body = {
        "content": result.get("content", []),
        "isError": bool(result.get("isError", False)),
    }
    if result.get("structuredContent") is not None:
        body["structuredContent"] = result["structuredContent"]
    data = _canonical(body)

    return hashlib.sha256(data).hexdigest(), len(data)


def recordable(value: Mapping[str, Any]) -> object:
    """``value`` when an entry can hold it, else its digest and size."""
    try:
        data = canonical(dict(value))
    except EntryError:
        data = b""
    if data and len(data) <= MAX_RECORDED_ARGS:
        return dict(value)
    whole = _canonical(dict(value))

    return {"sha256": hashlib.sha256(whole).hexdigest(), "size": len(whole)}


def _cedar(
    server: McpServer, tool: str, arguments: Mapping[str, Any]
) -> tuple[str, str, dict[str, Any], str | None]:
    if not TOOL_NAME.fullmatch(tool):
        return "", "", {}, "the tool name is not a valid MCP tool name"
    rule = server.rule(tool)
    try:
        resource = rule.resource.fill(arguments)
    except ValueError as exc:
        return "", "", {}, str(exc)
    context = {"args": rule.context_args(arguments)}
    try:
        size = len(canonical(context))
    except EntryError as exc:
        # Cedar has no floats, and an entry cannot hold them either.
        return "", "", {}, f"arguments cannot be decided on: {exc}"
    if size > MAX_RECORDED_ARGS:
        problem = (
            f"the arguments policies see are {size} bytes, more than "
            f"{MAX_RECORDED_ARGS}; name the ones they need in policy_args"
        )
        return "", "", {}, problem

    return rule.action, resource, context, None


def _correlation(meta: Mapping[str, Any]) -> tuple[dict[str, str], str | None]:
    found: dict[str, str] = {}
    for key, value in meta.items():
        if not key.startswith(META_PREFIX):
            continue
        if key not in (REASONING_KEY, TOOL_CALL_KEY, TRACEPARENT_KEY, APPROVAL_KEY):
            return found, f"_meta key {key!r} is not one proctor reads"
        limit = MAX_REASONING if key == REASONING_KEY else MAX_CORRELATION
        if not isinstance(value, str) or not value.strip() or len(value) > limit:
            return found, f"_meta {key} must be text of 1 to {limit} characters"
        found[key] = value

    return found, None


def forwarded_meta(meta: Mapping[str, Any] | None) -> dict[str, Any]:
    """``meta`` without Proctor's keys and the protocol's per-hop ones."""
    return {
        key: value
        for key, value in (meta or {}).items()
        if not key.startswith((META_PREFIX, *_PER_HOP))
    }


def _server_uid(server: McpServer) -> str:
    return f'{server.namespace}::Server::"{server.name}"'


def _canonical(value: object) -> bytes:
    try:
        return canonical(value)
    except EntryError:
        pass
    # Floats or more than an entry holds: the complete encoder takes any JSON but
    # integers beyond ±(2**53 - 1), which only sorted plain JSON can still name.
    try:
        return reference(value)
    except EntryError:
        text = json.dumps(value, sort_keys=True, separators=(",", ":"))
        return text.encode("utf-8", "surrogatepass")
