"""A home where the real pipeline has written a task's story: a reasoning step, an
allowed read, a breach, and a transfer over the approval limit held for a
controller. Shared by the console's server tests and its browser tests."""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import shutil
from collections.abc import Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from proctor.gateway.pipeline import Call, Pipeline, Verdict
from proctor.home import Home, init
from proctor.runtime import Runtime
from proctor.tasks.service import ScopeText
from proctor.tasks.state import Task

ASSETS = Path(__file__).resolve().parents[2] / "assets" / "policy"
PAY = 'Payments::Action::"CreatePayment"'
READ = 'Payments::Action::"ReadInvoice"'
VENDOR = 'Payments::Action::"CreateVendor"'
CANARY = "canary-4d1f7b2e-never-on-a-page"
TRANSFER = {"amount": 12_000, "vendor": "acme"}
REQUEST = "Pay December's supplier invoices"
REASONING = "invoice inv-7 from acme is due today: pay it"

T = TypeVar("T")


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine on a fresh loop in its own thread.

    A browser driver may hold an event loop in the test's thread, so the agent's
    calls never run there.
    """
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coroutine).result(timeout=60)


def call(action: str, context: dict[str, Any], *, approval: str | None = None) -> Call:
    """A classified call as the HTTP door would hand it to the pipeline."""
    resource = (
        'Payments::Invoice::"inv-7"' if action == READ else 'Payments::Account::"ops"'
    )
    request = {
        "method": "POST",
        "path": "/payments",
        "headers": {
            "content-type": "application/json",
            "authorization": f"Bearer {CANARY}",
        },
        "body": context,
    }
    digest = hashlib.sha256(
        repr((action, sorted(context.items()))).encode()
    ).hexdigest()
    return Call(
        "http",
        "finance",
        action,
        resource,
        context,
        request,
        digest,
        credential="finance-api-key",
        approval=approval,
    )


class Agent:
    """Calls through the shared pipeline the way a front door does."""

    def __init__(self, runtime: Runtime, task: Task) -> None:
        self.pipeline: Pipeline = runtime.pipeline()
        self.token = runtime.service.issue_token(task.id, by="test").token

    def send(self, action: str, context: dict[str, Any], **kwargs: Any) -> Verdict:
        """Authenticate, authorize and, when allowed, record an outcome."""

        async def go() -> Verdict:
            claims = await self.pipeline.authenticate(
                self.token, door="http", target="finance", request={"path": "/payments"}
            )
            if isinstance(claims, Verdict):
                return claims
            verdict = await self.pipeline.authorize(
                claims, call(action, context, **kwargs)
            )
            if verdict.allowed:
                await self.pipeline.complete(
                    verdict, status=201, size=42, digest="0" * 64, latency_us=1800
                )
            return verdict

        return run(go())


@dataclass
class Story:
    """What the scenario wrote, and the people who can sign in."""

    runtime: Runtime
    task: Task
    agent: Agent
    keys: dict[str, str]
    reasoning: int
    allowed: Verdict
    breach: Verdict
    held: Verdict

    @property
    def approval(self) -> str:
        if self.held.approval is None:
            raise AssertionError("the transfer was not held for approval")
        return self.held.approval


def make_home(folder: Path) -> Home:
    """A home over the finance example's policies; a breach does not quarantine,
    so the same task can go on to the held transfer."""
    home = init(Home(folder / "home"), origin="proctor.test/console")
    text = home.config_file.read_text(encoding="utf-8")
    home.config_file.write_text(
        text.replace("quarantine_on_breach = true", "quarantine_on_breach = false"),
        encoding="utf-8",
    )
    for source in (ASSETS / "org").iterdir():
        shutil.copy(source, home.policies / source.name)
    return home


def write_story(runtime: Runtime) -> Story:
    """Open and approve a task, then read, breach and ask for a large transfer."""
    runtime.secrets.vault.set("finance-api-key", CANARY)
    people = runtime.people
    keys = {
        "controller": people.add(
            "controller@example.com", ["approver"], ["controller"]
        ),
        "auditor": people.add("auditor@example.com", ["auditor"]),
        "treasurer": people.add("treasurer@example.com", ["approver"], ["treasurer"]),
        "admin": people.add("admin@example.com", ["admin"]),
    }
    controller = people.authenticate(keys["controller"])
    scope = (ASSETS / "scopes" / "invoices.toml").read_text(encoding="utf-8")
    opened = runtime.service.open_task(
        user="ap-clerk@example.com",
        agent="ledger-bot",
        request=REQUEST,
        scope=ScopeText.parse(scope, format="toml"),
        by="test",
    )
    task = runtime.service.approve_task(opened.id, controller, "scope fits the request")
    agent = Agent(runtime, task)
    runtime.service.record_reasoning(
        task, f"reading the invoice with key {CANARY}", source="api"
    )
    allowed = agent.send(READ, {})
    breach = agent.send(VENDOR, {"vendor": "shady-vendor-ltd"})
    reasoning = runtime.service.record_reasoning(task, REASONING, source="api")
    held = agent.send(PAY, dict(TRANSFER))
    runtime.ledger.checkpoint()

    return Story(runtime, task, agent, keys, reasoning, allowed, breach, held)
