"""The proxy MCP server in front of one downstream server, shared by both front doors:
``tools/list`` shows only the tools the task may call, and every ``tools/call`` is
authenticated, decided and recorded by the pipeline before it is forwarded.

Refusals are JSON-RPC errors whose ``data`` is the pipeline's refusal body (outcome,
reason, action, policies, the entry to look up, and the approval id or breach entry
when there is one). The codes, in the range JSON-RPC leaves to servers:

    -32031  unauthenticated: no task token, or one that is bad, expired or revoked
    -32032  denied: outside the scope or forbidden (a breach names its entry)
    -32033  needs approval: retry with ``_meta["dev.proctor/approval"]`` once approved
    -32034  unavailable: the ledger cannot record, so nothing was sent
    -32602  invalid params: a call Proctor cannot classify (``data.problem`` says
            why); recorded as ``Proctor::Action::"Malformed"`` and never forwarded

A call the downstream fails keeps the downstream's error code, with the decision
entry added to its data. Tasks cannot list tools they may never call; tools a
policy merely gates (an approval, a limit on the arguments) still show.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, cast

import anyio
import mcp_types as types
import orjson
from mcp import Client, MCPError
from mcp.server import Server
from mcp.server.context import ServerRequestContext
from mcp_types import INTERNAL_ERROR, INVALID_PARAMS

from proctor import __version__
from proctor.errors import ProctorError
from proctor.gateway.mcp.classify import (
    DOOR,
    ENTRY_KEY,
    MAX_CORRELATION,
    Classified,
    classify,
    forwarded_meta,
    result_digest,
)
from proctor.gateway.mcp.config import TOOL_NAME, McpServer
from proctor.gateway.mcp.downstream import connect
from proctor.gateway.pipeline import Pipeline, Verdict
from proctor.tasks.token import TaskClaims

log = logging.getLogger(__name__)

UNAUTHENTICATED = -32031
DENIED = -32032
NEEDS_APPROVAL = -32033
UNAVAILABLE = -32034
CODES = {
    "unauthenticated": UNAUTHENTICATED,
    "deny": DENIED,
    "needs_approval": NEEDS_APPROVAL,
    "unavailable": UNAVAILABLE,
}
MAX_TOOL_PAGES = 100
MAX_ERROR_TEXT = 200

Context = ServerRequestContext["Downstream", Any]
Identify = Callable[[Context], TaskClaims | str | None]
"""What a door knows of the caller of one request: the claims it already checked
(HTTP, per request), or the raw task token for the pipeline to check (stdio)."""


@dataclass
class Downstream:
    """The open client to the downstream server, and the tool schemas it listed."""

    client: Client
    schemas: dict[str, Any] = field(default_factory=dict)


class Broker:
    """Brokers every call to one downstream server through the pipeline."""

    def __init__(self, pipeline: Pipeline, server: McpServer, identify: Identify):
        self.pipeline = pipeline
        self.server = server
        self._identify = identify
        self._schemas: dict[str, Any] = {}
        self._outcomes: set[asyncio.Future[None]] = set()

    def build(self) -> Server[Downstream]:
        """The low-level MCP server a door serves; its lifespan opens the client."""
        return Server(
            f"proctor-{self.server.name}",
            version=__version__,
            instructions=(
                f"Tools of MCP server {self.server.name!r}, brokered by Proctor: "
                "every call is decided against your task and recorded."
            ),
            lifespan=self._lifespan,
            get_tool_input_schema=self._schemas.get,
            on_list_tools=self.list_tools,
            on_call_tool=self.call_tool,
        )

    @asynccontextmanager
    async def _lifespan(self, _: Server[Downstream]) -> AsyncIterator[Downstream]:
        async with connect(self.server, self.pipeline.secret) as client:
            try:
                yield Downstream(client, self._schemas)
            finally:
                with anyio.CancelScope(shield=True):
                    await self.settle()

    async def settle(self) -> None:
        """Wait until every outcome handed to the ledger is recorded."""
        while self._outcomes:
            await asyncio.gather(*self._outcomes)

    # tools/list

    async def list_tools(
        self, ctx: Context, params: types.PaginatedRequestParams | None
    ) -> types.ListToolsResult:
        """List the downstream's tools that the task may call (at least sometimes)."""
        claims = await self._claims(ctx, {"method": "tools/list"})
        if params is not None and params.cursor is not None:
            return types.ListToolsResult(tools=[])
        tools = await self._downstream_tools(ctx.lifespan_context)
        visible = [tool for tool in tools if self._may_call(claims, tool.name)]

        return types.ListToolsResult(tools=visible)

    async def _downstream_tools(self, downstream: Downstream) -> list[types.Tool]:
        tools: list[types.Tool] = []
        cursor: str | None = None
        for _ in range(MAX_TOOL_PAGES):
            page = await downstream.client.list_tools(cursor=cursor)
            tools.extend(page.tools)
            cursor = page.next_cursor
            if cursor is None:
                break
        downstream.schemas.update({tool.name: tool.input_schema for tool in tools})

        return tools

    def _may_call(self, claims: TaskClaims, tool: str) -> bool:
        if not TOOL_NAME.fullmatch(tool):
            return False
        rule = self.server.rule(tool)
        # A resource read from the arguments is unknown until the call.
        resource = None if rule.resource.names else rule.resource.fill({})

        return self.pipeline.may_call(claims, rule.action, resource)

    # tools/call

    async def call_tool(
        self, ctx: Context, params: types.CallToolRequestParams
    ) -> types.CallToolResult:
        """Authenticate, decide and record the call, then forward it if allowed."""
        name = params.name[:MAX_CORRELATION]
        claims = await self._claims(ctx, {"method": "tools/call", "tool": name})
        classified = classify(
            self.server, params.name, params.arguments, _meta(params.meta)
        )
        if classified.reasoning is not None:
            await self._record_reasoning(claims, classified)
        verdict = await self.pipeline.authorize(claims, classified.call)
        self._log(claims, classified, verdict)
        problem = classified.problem
        if problem is not None and verdict.outcome in ("allow", "deny"):
            if verdict.allowed:
                # Never forwarded, whatever a policy said of a call we cannot read.
                self._outcome(verdict, 0.0, error=f"not sent: {problem}")
            raise MCPError(
                INVALID_PARAMS,
                f"{problem} (entry {verdict.entry})",
                {**verdict.body(), "problem": problem},
            )
        if not verdict.allowed:
            raise refusal(verdict)

        return await self._forward(
            ctx.lifespan_context, params.name, classified, verdict
        )

    async def _forward(
        self,
        downstream: Downstream,
        tool: str,
        classified: Classified,
        verdict: Verdict,
    ) -> types.CallToolResult:
        started = time.perf_counter()
        try:
            result = await downstream.client.call_tool(
                tool,
                classified.arguments,
                meta=cast("types.RequestParamsMeta", classified.meta or None),
            )
        except MCPError as exc:
            self._outcome(verdict, started, error=f"mcp error {exc.code}")
            data = exc.data if isinstance(exc.data, Mapping) else {}
            body = self._without_secrets({**data, "entry": verdict.entry})
            message = self._without_secrets(exc.message)
            raise MCPError(exc.code, str(message), body) from exc
        # Whatever the transport raises (a timeout, a dead process) ends the call.
        except Exception as exc:
            problem = f"mcp server {self.server.name} failed: {type(exc).__name__}"
            self._outcome(verdict, started, error=problem)
            raise MCPError(INTERNAL_ERROR, problem, {"entry": verdict.entry}) from exc

        return self._answer(result, verdict, started)

    def _answer(
        self, result: types.CallToolResult, verdict: Verdict, started: float
    ) -> types.CallToolResult:
        # A server that echoes its own credential must not hand it to the agent.
        wire = result.model_dump(by_alias=True, mode="json", exclude_none=True)
        clean = self._without_secrets(wire) if self._carries_secret(wire) else wire
        if clean is not wire:
            log.warning(
                "mcp result carried a vault secret, removed server=%s entry=%s",
                self.server.name,
                verdict.entry,
            )
            result = types.CallToolResult.model_validate(clean)
        digest, size = result_digest(cast("dict[str, Any]", clean))
        error = _tool_error(result) if result.is_error else None
        self._outcome(verdict, started, digest=digest, size=size, error=error)

        return types.CallToolResult(
            content=result.content,
            structured_content=result.structured_content,
            is_error=result.is_error,
            _meta={**forwarded_meta(result.meta), ENTRY_KEY: verdict.entry},
        )

    def _carries_secret(self, value: object) -> bool:
        # One pass over the whole answer; the walk below only when it finds one.
        text = orjson.dumps(value).decode("utf-8")
        return self.pipeline.service.redactor.scrub_text(text) != text

    def _without_secrets(self, value: object) -> object:
        """``value`` with every vault value removed from its strings, keys kept."""
        if isinstance(value, str):
            return self.pipeline.service.redactor.scrub_text(value)
        if isinstance(value, dict):
            return {key: self._without_secrets(item) for key, item in value.items()}
        if isinstance(value, list):
            return [self._without_secrets(item) for item in value]
        return value

    # Helpers

    async def _claims(self, ctx: Context, request: dict[str, Any]) -> TaskClaims:
        found = self._identify(ctx)
        if isinstance(found, TaskClaims):
            return found
        claims = await self.pipeline.authenticate(
            found, door=DOOR, target=self.server.name, request=request
        )
        if isinstance(claims, Verdict):
            raise refusal(claims)
        return claims

    async def _record_reasoning(
        self, claims: TaskClaims, classified: Classified
    ) -> None:
        service, call = self.pipeline.service, classified.call
        try:
            task = service.require_task(claims.task)
            await asyncio.to_thread(
                service.record_reasoning,
                task,
                str(classified.reasoning),
                source=DOOR,
                trace=call.trace,
                tool_call=call.tool_call,
            )
        except ProctorError as exc:
            log.error("mcp reasoning not recorded task=%s error=%s", claims.task, exc)
            reason = "the reasoning could not be recorded, so the call was not sent"
            raise MCPError(UNAVAILABLE, reason, {"error": "unavailable"}) from exc

    def _outcome(
        self,
        verdict: Verdict,
        started: float,
        *,
        digest: str | None = None,
        size: int = 0,
        error: str | None = None,
    ) -> None:
        # The decision was durable before the call went out; the outcome entry is
        # written while the answer travels back, and settle() waits for it.
        elapsed = time.perf_counter() - started if started else 0.0
        recording = asyncio.ensure_future(
            self.pipeline.complete(
                verdict,
                status=None,
                size=size,
                digest=digest,
                latency_us=int(elapsed * 1_000_000),
                error=error,
            )
        )
        self._outcomes.add(recording)
        recording.add_done_callback(self._outcomes.discard)

    def _log(
        self, claims: TaskClaims, classified: Classified, verdict: Verdict
    ) -> None:
        log.info(
            "mcp call server=%s tool=%s task=%s agent=%s action=%s decision=%s "
            "entry=%s",
            self.server.name,
            classified.call.request["tool"],
            claims.task,
            claims.agent,
            classified.call.action,
            verdict.outcome,
            verdict.entry,
        )


def refusal(verdict: Verdict) -> MCPError:
    """The JSON-RPC error that answers a refused call, naming its entry."""
    code = CODES.get(verdict.outcome, DENIED)
    where = f" (entry {verdict.entry})" if verdict.entry is not None else ""

    return MCPError(code, f"{verdict.outcome}: {verdict.reason}{where}", verdict.body())


def _meta(meta: Mapping[str, Any] | None) -> dict[str, Any]:
    return dict(meta or {})


def _tool_error(result: types.CallToolResult) -> str:
    # What the tool said went wrong, short: the digest covers the whole result.
    texts = [
        block.text for block in result.content if isinstance(block, types.TextContent)
    ]
    text = " ".join(" ".join(texts).split())[:MAX_ERROR_TEXT]
    return f"tool error: {text}" if text else "tool error"
