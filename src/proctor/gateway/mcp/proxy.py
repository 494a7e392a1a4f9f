"""The broker in front of one downstream server, shared by both front doors:
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

The broker works on the JSON-RPC params and results as they travel, never on the
SDK's models: the relay hands it a call and a way to forward it, and gets back the
answer and the outcome to record once that answer is on its way.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, cast

import orjson
from mcp.shared.exceptions import MCPError
from mcp_types import INTERNAL_ERROR, INVALID_PARAMS

from proctor.errors import ProctorError
from proctor.gateway.mcp.classify import (
    DOOR,
    ENTRY_KEY,
    MAX_CORRELATION,
    Classified,
    classify,
    result_digest,
)
from proctor.gateway.mcp.config import TOOL_NAME, McpServer
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
MAX_ERROR_TEXT = 200

Caller = TaskClaims | str | None
"""What a door knows of the caller of one request: the claims it already checked
(HTTP, per request), or the raw task token for the pipeline to check (stdio)."""
Forward = Callable[[dict[str, Any], dict[str, Any]], Awaitable[dict[str, Any]]]
"""Sends the call on with its arguments and ``_meta``; returns the server's result
or raises MCPError (the server's error), GatewayError (the link failed)."""


@dataclass(frozen=True)
class Outcome:
    """What came of a forwarded call, for its ``call.completed`` entry."""

    verdict: Verdict
    latency_us: int
    digest: str | None = None
    size: int = 0
    error: str | None = None


class Broker:
    """Decides and records every call to one downstream server."""

    def __init__(self, pipeline: Pipeline, server: McpServer) -> None:
        self.pipeline = pipeline
        self.server = server
        self._outcomes: set[asyncio.Future[None]] = set()

    async def claims(self, caller: Caller, request: dict[str, Any]) -> TaskClaims:
        """The caller's claims; raises the refusal MCPError, recorded, without."""
        if isinstance(caller, TaskClaims):
            return caller
        claims = await self.pipeline.authenticate(
            caller, door=DOOR, target=self.server.name, request=request
        )
        if isinstance(claims, Verdict):
            raise refusal(claims)
        return claims

    # tools/list

    def may_call(self, claims: TaskClaims, tool: object) -> bool:
        """Whether some call of ``tool`` could be allowed for the task."""
        if not isinstance(tool, str) or not TOOL_NAME.fullmatch(tool):
            return False
        rule = self.server.rule(tool)
        # A resource read from the arguments is unknown until the call.
        resource = None if rule.resource.names else rule.resource.fill({})

        return self.pipeline.may_call(claims, rule.action, resource)

    # tools/call

    async def call_tool(
        self,
        claims: TaskClaims,
        tool: str,
        arguments: Mapping[str, Any] | None,
        meta: Mapping[str, Any] | None,
        forward: Forward,
    ) -> tuple[dict[str, Any], Outcome]:
        """Decide and record the call, forward it if allowed, and return the answer.

        Raises MCPError for a refusal (with the codes above) and for a call the
        server failed. The outcome is the caller's to :meth:`record` once the
        answer is on its way back.
        """
        classified = classify(self.server, tool, arguments, meta)
        if classified.reasoning is not None:
            await self._record_reasoning(claims, classified)
        verdict = await self.pipeline.authorize(claims, classified.call)
        self._log(claims, classified, verdict)
        problem = classified.problem
        if problem is not None and verdict.outcome in ("allow", "deny"):
            if verdict.allowed:
                # Never forwarded, whatever a policy said of a call we cannot read.
                self.record(Outcome(verdict, 0, error=f"not sent: {problem}"))
            raise MCPError(
                INVALID_PARAMS,
                f"{problem} (entry {verdict.entry})",
                {**verdict.body(), "problem": problem},
            )
        if not verdict.allowed:
            raise refusal(verdict)

        return await self._forward(forward, classified, verdict)

    async def _forward(
        self, forward: Forward, classified: Classified, verdict: Verdict
    ) -> tuple[dict[str, Any], Outcome]:
        started = time.perf_counter()
        try:
            result = await forward(classified.arguments, classified.meta)
        except MCPError as exc:
            self.record(_outcome(verdict, started, error=f"mcp error {exc.code}"))
            data = exc.error.data if isinstance(exc.error.data, Mapping) else {}
            body = self.without_secrets({**data, "entry": verdict.entry})
            message = self.without_secrets(exc.error.message)
            raise MCPError(exc.code, str(message), body) from exc
        # Whatever else ends the wait (a dead link, the agent going away) is
        # recorded as what it was, and the call as not answered.
        except BaseException as exc:
            problem = f"mcp server {self.server.name} failed: {type(exc).__name__}"
            if isinstance(exc, asyncio.CancelledError):
                problem = "cancelled before the mcp server answered"
            self.record(_outcome(verdict, started, error=problem))
            if not isinstance(exc, Exception):
                raise
            raise MCPError(INTERNAL_ERROR, problem, {"entry": verdict.entry}) from exc

        return self._answer(result, verdict, started)

    def _answer(
        self, result: dict[str, Any], verdict: Verdict, started: float
    ) -> tuple[dict[str, Any], Outcome]:
        result = self.cleaned(result, verdict.entry)
        digest, size = result_digest(result)
        error = _tool_error(result) if result.get("isError") else None
        meta = result.get("_meta")
        result["_meta"] = {
            **(meta if isinstance(meta, dict) else {}),
            ENTRY_KEY: verdict.entry,
        }

        return result, _outcome(verdict, started, digest=digest, size=size, error=error)

    def cleaned(
        self, value: dict[str, Any], entry: int | None = None
    ) -> dict[str, Any]:
        """``value``, or a copy without the vault values it carries."""
        # A server that echoes its own credential must not hand it to the agent.
        if not self._carries_secret(value):
            return value
        log.warning(
            "mcp server sent a vault secret, removed server=%s entry=%s",
            self.server.name,
            entry,
        )
        cleaned = self.without_secrets(value)

        return cleaned if isinstance(cleaned, dict) else {}

    def _carries_secret(self, value: object) -> bool:
        # One pass over the whole answer; the walk below only when it finds one.
        text = orjson.dumps(value).decode("utf-8")
        return self.pipeline.service.redactor.scrub_text(text) != text

    def without_secrets(self, value: object) -> object:
        """``value`` with every vault value removed from its strings, keys kept."""
        if isinstance(value, str):
            return self.pipeline.service.redactor.scrub_text(value)
        if isinstance(value, dict):
            return {key: self.without_secrets(item) for key, item in value.items()}
        if isinstance(value, list):
            return [self.without_secrets(item) for item in value]
        return value

    # Recording

    def record(self, outcome: Outcome | None) -> None:
        """Start writing the outcome entry; :meth:`settle` waits for it."""
        if outcome is None:
            return
        # The decision was durable before the call went out; the outcome entry is
        # written while the answer travels back.
        recording = asyncio.ensure_future(
            self.pipeline.complete(
                outcome.verdict,
                status=None,
                size=outcome.size,
                digest=outcome.digest,
                latency_us=outcome.latency_us,
                error=outcome.error,
            )
        )
        self._outcomes.add(recording)
        recording.add_done_callback(self._outcomes.discard)

    async def settle(self) -> None:
        """Wait until every outcome handed to the ledger is recorded."""
        while self._outcomes:
            await asyncio.gather(*self._outcomes)

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

    def _log(
        self, claims: TaskClaims, classified: Classified, verdict: Verdict
    ) -> None:
        # As at the HTTP door: an allowed call is in the ledger already, every
        # other answer is news.
        level = logging.DEBUG if verdict.allowed else logging.INFO
        if not log.isEnabledFor(level):
            return
        # The tool's name is the agent's to choose: scrubbed like all it sends.
        named = [classified.call.request["tool"], classified.call.action]
        tool, action = cast("list[Any]", self.pipeline.scrub(named))
        log.log(
            level,
            "mcp call server=%s tool=%s task=%s agent=%s action=%s decision=%s "
            "entry=%s",
            self.server.name,
            tool,
            claims.task,
            claims.agent,
            action,
            verdict.outcome,
            verdict.entry,
        )


def refusal(verdict: Verdict) -> MCPError:
    """The JSON-RPC error that answers a refused call, naming its entry."""
    code = CODES.get(verdict.outcome, DENIED)
    where = f" (entry {verdict.entry})" if verdict.entry is not None else ""

    return MCPError(code, f"{verdict.outcome}: {verdict.reason}{where}", verdict.body())


def call_request(tool: str) -> dict[str, Any]:
    """How a call's request reads in an ``auth.refused`` entry."""
    return {"method": "tools/call", "tool": tool[:MAX_CORRELATION]}


def _outcome(
    verdict: Verdict,
    started: float,
    *,
    digest: str | None = None,
    size: int = 0,
    error: str | None = None,
) -> Outcome:
    elapsed = int((time.perf_counter() - started) * 1_000_000)
    return Outcome(verdict, elapsed, digest, size, error)


def _tool_error(result: Mapping[str, Any]) -> str:
    # What the tool said went wrong, short: the digest covers the whole result.
    content = result.get("content")
    blocks = content if isinstance(content, list) else []
    texts = [
        str(block.get("text"))
        for block in blocks
        if isinstance(block, dict) and block.get("type") == "text"
    ]
    text = " ".join(" ".join(texts).split())[:MAX_ERROR_TEXT]
    return f"tool error: {text}" if text else "tool error"
