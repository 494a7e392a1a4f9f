"""A stand-in for the pipeline, for the door-level safety tests in test_door.py ONLY.

It allows or denies by action and remembers what the door handed it, so a test can
check exactly which calls were recorded and which were sent. Everything it answers is
a real :class:`~proctor.gateway.pipeline.Verdict`. Behaviour end to end (decisions,
approvals, breaches, the ledger) is tested against the real pipeline in
test_gateway.py, never against this.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from proctor.errors import VaultError
from proctor.gateway.pipeline import Call, Verdict
from proctor.tasks.token import TaskClaims
from proctor.vault.redact import Masking, Redactor

TOKEN = "task-token-for-the-door-tests"
CLAIMS = TaskClaims(
    user="alice@example.com",
    agent="door-bot",
    task="tsk_door",
    jti="jti-door",
    expires=datetime.now(UTC) + timedelta(days=1),
)


@dataclass
class Completion:
    """One outcome the door reported."""

    verdict: Verdict
    status: int | None
    size: int
    digest: str | None
    latency_us: int
    error: str | None
    masked: int = 0


@dataclass
class PipelineDouble:
    """Allows the actions in ``allowed`` (every action with ``allow_all``)."""

    secrets: Mapping[str, str]
    allowed: set[str] = field(default_factory=set)
    allow_all: bool = False
    refused: list[Mapping[str, object]] = field(default_factory=list)
    calls: list[Call] = field(default_factory=list)
    completions: list[Completion] = field(default_factory=list)
    entry: int = 100

    def reset(self) -> None:
        """Forget every recorded call and go back to the default allow-list."""
        self.allow_all = False
        self.refused.clear()
        self.calls.clear()
        self.completions.clear()

    async def authenticate(
        self,
        token: str | None,
        *,
        door: str,
        target: str,
        request: Mapping[str, object],
        recent: float = 0.0,
    ) -> TaskClaims | Verdict:
        if token == TOKEN:
            return CLAIMS
        self.refused.append(dict(request))
        return Verdict(False, 401, self._next(), "unauthenticated", "bad token")

    async def authorize(
        self, claims: TaskClaims, call: Call, *, wait: float = 0.0
    ) -> Verdict:
        self.calls.append(call)
        entry = self._next()
        if self.allow_all or call.action in self.allowed:
            return Verdict(True, 200, entry, "allow", "allowed", call.action, ("p",))
        return Verdict(False, 403, entry, "deny", "denied", call.action, ("p",))

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
    ) -> None:
        self.completions.append(
            Completion(verdict, status, size, digest, latency_us, error, masked)
        )

    def scrub(self, value: object) -> object:
        return Redactor(self.secrets.values()).scrub(value)

    def masking(self) -> Masking:
        return Redactor(self.secrets.values()).masking()

    def secret(self, name: str) -> str:
        try:
            return self.secrets[name]
        except KeyError:
            raise VaultError(f"no secret {name!r} in the vault") from None

    def _next(self) -> int:
        self.entry += 1
        return self.entry

    def last(self) -> Call:
        """The call the door handed over last."""
        return self.calls[-1]

    def outcome(self) -> Completion:
        """The only outcome reported so far."""
        (only,) = self.completions
        return only

    def summary(self) -> dict[str, Any]:
        return {"calls": len(self.calls), "completions": len(self.completions)}
