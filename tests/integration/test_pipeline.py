"""The authority and the call pipeline end to end on a real ledger, on SQLite and on
PostgreSQL: every decision, approval, breach and refusal is an entry, and the ledger
verifies afterwards."""

from __future__ import annotations

import asyncio
import hashlib
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from proctor import kinds
from proctor.errors import AuthError, PolicyError, StoreError, TaskError, VaultError
from proctor.gateway.pipeline import UNMAPPED, Call, Pipeline, Verdict
from proctor.home import Home
from proctor.ledger import entries
from proctor.ledger.verify import verify_ledger
from proctor.runtime import Runtime
from proctor.storage.interface import Batch
from proctor.tasks.people import Person
from proctor.tasks.service import ScopeText
from proctor.tasks.state import ApprovalState, Authority, Task, TaskState
from proctor.tasks.token import TaskClaims
from proctor.vault import Vault, load_master_key

ASSETS = Path(__file__).resolve().parents[1] / "assets" / "policy"
PAY = 'Payments::Action::"CreatePayment"'
READ = 'Payments::Action::"ReadInvoice"'
VENDOR = 'Payments::Action::"CreateVendor"'
OPS = 'Payments::Account::"ops"'
CANARY = "canary-7f3e9a1c-not-for-anyone"


@pytest.fixture
def runtime(store_home: Home) -> Iterator[Runtime]:
    """A runtime over the finance example's organisation policies."""
    for source in (ASSETS / "org").iterdir():
        shutil.copy(source, store_home.policies / source.name)
    runtime = Runtime.open(store_home)
    runtime.secrets.vault.set("finance-api-key", CANARY)
    yield runtime
    runtime.close()


@pytest.fixture
def controller(runtime: Runtime) -> Person:
    key = runtime.people.add("controller@example.com", ["approver"], ["controller"])
    return runtime.people.authenticate(key)


@pytest.fixture
def task(runtime: Runtime, controller: Person) -> Task:
    """An approved task: read invoices, pay known vendors, controller over 10,000."""
    text = (ASSETS / "scopes" / "invoices.toml").read_text()
    opened = runtime.service.open_task(
        user="ap-clerk@example.com",
        agent="ledger-bot",
        request="Pay December's supplier invoices",
        scope=ScopeText.parse(text, format="toml"),
        by="test",
    )
    return runtime.service.approve_task(opened.id, controller, "scope fits the request")


def call(action: str, context: dict[str, Any], *, approval: str | None = None) -> Call:
    resource = 'Payments::Invoice::"inv-1"' if action == READ else OPS
    request = {"method": "POST", "path": "/payments", "body": context}
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


def entry(runtime: Runtime, index: int | None) -> dict[str, Any]:
    assert index is not None
    return entries.decode(runtime.ledger.store.entry(index))


def run(coroutine: Any) -> Any:
    return asyncio.run(coroutine)


class Agent:
    """Drives the pipeline the way a front door does for one task token."""

    def __init__(self, runtime: Runtime, task: Task) -> None:
        self.pipeline: Pipeline = runtime.pipeline()
        self.token = runtime.service.issue_token(task.id, by="test").token

    def claims(self) -> TaskClaims | Verdict:
        return run(
            self.pipeline.authenticate(
                self.token, door="http", target="finance", request={"path": "/payments"}
            )
        )

    def send(self, action: str, context: dict[str, Any], **kwargs: Any) -> Verdict:
        claims = self.claims()
        if isinstance(claims, Verdict):
            return claims
        return run(self.pipeline.authorize(claims, call(action, context, **kwargs)))


class TestTasks:
    def test_scope_with_payments_waits_for_a_controller(self, runtime: Runtime) -> None:
        """The organisation's policy makes a paying scope wait for its approver."""
        text = (ASSETS / "scopes" / "invoices.toml").read_text()
        task = runtime.service.open_task(
            user="ap-clerk@example.com",
            agent="ledger-bot",
            request="Pay",
            scope=ScopeText.parse(text, format="toml"),
            by="test",
        )
        opened = entry(runtime, task.opened)

        assert task.state is TaskState.PENDING
        assert opened["approval"]["roles"] == ["controller"]
        assert opened["approval"]["policies"] == ["org-payment-scopes-need-controller"]
        with pytest.raises(TaskError, match="not active"):
            runtime.service.issue_token(task.id, by="test")

    def test_approval_is_recorded_with_its_approver(
        self, runtime: Runtime, task: Task
    ) -> None:
        """The approved scope names who approved it, why, and the scope digest."""
        approved = entry(runtime, task.approved)

        assert task.state is TaskState.ACTIVE
        assert approved["approver"] == "controller@example.com"
        assert approved["scope_digest"] == task.scope_digest
        assert approved["reason"] == "scope fits the request"

    def test_user_cannot_approve_own_task(self, runtime: Runtime) -> None:
        """Separation of duties: the task's own user may not approve it."""
        key = runtime.people.add("ap-clerk@example.com", ["approver"], ["controller"])
        clerk = runtime.people.authenticate(key)
        text = (ASSETS / "scopes" / "invoices.toml").read_text()
        task = runtime.service.open_task(
            user="ap-clerk@example.com",
            agent="ledger-bot",
            request="Pay",
            scope=ScopeText.parse(text, format="toml"),
            by="test",
        )

        with pytest.raises(AuthError, match="may not approve"):
            runtime.service.approve_task(task.id, clerk, "mine")

    def test_projection_rebuilds_from_entries(
        self, runtime: Runtime, task: Task
    ) -> None:
        """A new projection folded from the ledger alone sees the same task."""
        rebuilt = Authority(runtime.ledger.store)
        rebuilt.sync()

        assert rebuilt.task(task.id) == runtime.service.require_task(task.id)


class TestDecisions:
    def test_allowed_call_is_recorded_with_its_story(
        self, runtime: Runtime, task: Task
    ) -> None:
        """An allowed call's decision names task, user, scope, approver, policies."""
        agent = Agent(runtime, task)
        step = runtime.service.record_reasoning(
            task, "invoice inv-1 is due", source="api"
        )
        verdict = agent.send(READ, {})
        decision = entry(runtime, verdict.entry)

        assert verdict.allowed
        assert decision["type"] == kinds.DECISION
        assert decision["outcome"] == "allow"
        assert decision["user"] == "ap-clerk@example.com"
        assert decision["scope_approver"] == "controller@example.com"
        assert decision["task_opened"] == task.opened
        assert decision["policies"] == ["scope:read-invoices"]
        assert decision["policy_set"] == runtime.service.org.digest
        assert decision["reasoning"] == [step]
        assert decision["credential"] == "finance-api-key"

    def test_reasoning_links_only_since_the_last_call(
        self, runtime: Runtime, task: Task
    ) -> None:
        """Each decision links the reasoning recorded since the task's previous call."""
        agent = Agent(runtime, task)
        first = runtime.service.record_reasoning(task, "read it", source="api")
        agent.send(READ, {})
        second = runtime.service.record_reasoning(task, "read again", source="api")
        verdict = agent.send(READ, {})

        assert entry(runtime, verdict.entry)["reasoning"] == [second]
        assert first != second

    def test_unmapped_route_is_denied_and_recorded(
        self, runtime: Runtime, task: Task
    ) -> None:
        """A call no route maps is denied, recorded, and not a breach."""
        verdict = Agent(runtime, task).send(UNMAPPED, {})

        assert verdict.status == 403
        assert entry(runtime, verdict.entry)["breach"] is False
        assert verdict.breach is None

    def test_bad_token_is_refused_and_recorded(self, runtime: Runtime) -> None:
        """A forged token gets 401 and an auth.refused entry."""
        pipeline = runtime.pipeline()
        verdict = run(
            pipeline.authenticate(
                "not.a.token", door="http", target="finance", request={"path": "/x"}
            )
        )

        assert isinstance(verdict, Verdict)
        assert verdict.status == 401
        assert entry(runtime, verdict.entry)["type"] == kinds.AUTH_REFUSED


class TestApprovals:
    def test_held_then_released_once(
        self, runtime: Runtime, task: Task, controller: Person
    ) -> None:
        """A payment over 10,000 waits; once approved it goes through exactly once."""
        agent = Agent(runtime, task)
        held = agent.send(PAY, {"amount": 12_000, "vendor": "acme"})
        approval = held.approval
        assert held.status == 428
        assert approval is not None
        runtime.service.grant(approval, controller, "invoice checked")
        allowed = agent.send(
            PAY, {"amount": 12_000, "vendor": "acme"}, approval=approval
        )
        again = agent.send(PAY, {"amount": 12_000, "vendor": "acme"}, approval=approval)

        assert held.outcome == "needs_approval"
        assert entry(runtime, held.entry + 1)["type"] == kinds.APPROVAL_REQUESTED
        assert allowed.allowed
        assert entry(runtime, allowed.entry)["approval"] == approval
        assert again.status == 409
        assert runtime.service.require_approval(approval).state is ApprovalState.USED

    def test_two_processes_cannot_both_use_one_approval(
        self, runtime: Runtime, task: Task, controller: Person
    ) -> None:
        """Two gateways on one ledger both see the approval granted; the one whose
        decision the ledger holds first sends the call, the other refuses it."""
        payment = {"amount": 12_000, "vendor": "acme"}
        first = Agent(runtime, task)
        held = first.send(PAY, payment)
        assert held.approval is not None
        runtime.service.grant(held.approval, controller, "invoice checked")
        other = Runtime.open(runtime.home)
        try:
            second = Agent(other, task)
            # The other gateway has read the grant but not yet the first's use.
            claims = second.claims()
            assert isinstance(claims, TaskClaims)
            allowed = first.send(PAY, payment, approval=held.approval)
            late = run(
                second.pipeline.authorize(
                    claims, call(PAY, payment, approval=held.approval)
                )
            )
        finally:
            other.close()
        completed = entry(runtime, late.entry + 1)

        assert allowed.allowed
        assert (late.allowed, late.status) == (False, 409)
        assert f"used first at entry {allowed.entry}" in late.reason
        assert entry(runtime, late.entry)["outcome"] == "allow"
        assert completed["type"] == kinds.CALL_COMPLETED
        assert completed["decision"] == late.entry
        assert completed["error"].startswith("not sent: ")
        assert runtime.service.require_approval(held.approval).used == allowed.entry

    def test_approval_binds_the_exact_request(
        self, runtime: Runtime, task: Task, controller: Person
    ) -> None:
        """An approval for 20,000 cannot release 45,000."""
        agent = Agent(runtime, task)
        held = agent.send(PAY, {"amount": 20_000, "vendor": "acme"})
        assert held.approval is not None
        runtime.service.grant(held.approval, controller, "ok")
        other = agent.send(
            PAY, {"amount": 45_000, "vendor": "acme"}, approval=held.approval
        )

        assert other.status == 409
        assert "different request" in other.reason
        assert entry(runtime, other.entry)["outcome"] == "deny"

    def test_pending_approval_keeps_waiting(self, runtime: Runtime, task: Task) -> None:
        """Retrying before anyone approves is answered 428 again, and recorded."""
        agent = Agent(runtime, task)
        held = agent.send(PAY, {"amount": 20_000, "vendor": "acme"})
        retry = agent.send(
            PAY, {"amount": 20_000, "vendor": "acme"}, approval=held.approval
        )

        assert retry.status == 428
        assert "still waiting" in retry.reason

    def test_denied_approval_refuses(
        self, runtime: Runtime, task: Task, controller: Person
    ) -> None:
        """An approver's denial is final for that call."""
        agent = Agent(runtime, task)
        held = agent.send(PAY, {"amount": 20_000, "vendor": "acme"})
        assert held.approval is not None
        denied = runtime.service.deny(held.approval, controller, "wrong vendor")
        retry = agent.send(
            PAY, {"amount": 20_000, "vendor": "acme"}, approval=held.approval
        )

        assert denied.state is ApprovalState.DENIED
        assert retry.status == 409
        assert not retry.allowed

    def test_hold_open_until_approved(
        self, runtime: Runtime, task: Task, controller: Person
    ) -> None:
        """With a wait, the call is held and goes through once an approver approves."""
        agent = Agent(runtime, task)
        claims = agent.claims()
        assert not isinstance(claims, Verdict)

        async def scenario() -> Verdict:
            held = asyncio.create_task(
                agent.pipeline.authorize(
                    claims, call(PAY, {"amount": 20_000, "vendor": "acme"}), wait=5
                )
            )
            for _ in range(50):
                await asyncio.sleep(0.05)
                pending = [
                    a
                    for a in runtime.service.authority.approvals()
                    if a.state is ApprovalState.PENDING
                ]
                if pending:
                    await asyncio.to_thread(
                        runtime.service.grant, pending[0].id, controller, "ok"
                    )
                    break
            return await held

        verdict = run(scenario())

        assert verdict.allowed


class TestBreaches:
    def test_breach_is_flagged_and_quarantines(
        self, runtime: Runtime, task: Task
    ) -> None:
        """Adding a vendor is outside the scope: breach entry, quarantine, then 401."""
        agent = Agent(runtime, task)
        denied = agent.send(VENDOR, {"vendor": "new-vendor-ltd"})
        breach = entry(runtime, denied.breach)
        after = agent.send(READ, {})

        assert denied.status == 403
        assert breach["type"] == kinds.BREACH
        assert breach["decision"] == denied.entry
        assert breach["scope"] == task.scope_digest
        assert runtime.service.require_task(task.id).state is TaskState.QUARANTINED
        assert after.status == 401
        assert "quarantined" in after.reason

    def test_call_authenticated_before_a_quarantine_is_not_allowed(
        self, runtime: Runtime, task: Task
    ) -> None:
        """A call whose token was checked before a concurrent breach quarantined its
        task is refused when it is decided, and the refusal is recorded."""
        agent = Agent(runtime, task)
        claims = agent.claims()
        assert not isinstance(claims, Verdict)
        agent.send(VENDOR, {"vendor": "new-vendor-ltd"})
        late = run(agent.pipeline.authorize(claims, call(READ, {})))
        refused = entry(runtime, late.entry)

        assert not late.allowed
        assert late.status == 401
        assert "quarantined" in late.reason
        assert refused["type"] == kinds.AUTH_REFUSED
        assert "quarantined" in refused["reason"]

    def test_revocation_takes_effect_on_the_next_call(
        self, runtime: Runtime, task: Task
    ) -> None:
        """A revoked task's token stops working at once."""
        agent = Agent(runtime, task)
        assert agent.send(READ, {}).allowed
        runtime.service.revoke_task(task.id, by="test", reason="done early")

        assert agent.send(READ, {}).status == 401


class TestFailClosed:
    def test_ledger_failure_refuses_the_call(
        self, runtime: Runtime, task: Task, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """When the ledger cannot write the decision, the call is refused with 503."""
        agent = Agent(runtime, task)
        claims = agent.claims()
        assert not isinstance(claims, Verdict)

        def broken(batch: Batch) -> None:
            raise StoreError("disk full")

        monkeypatch.setattr(runtime.ledger.store, "append", broken)
        verdict = run(agent.pipeline.authorize(claims, call(READ, {})))

        assert verdict.status == 503
        assert not verdict.allowed


class TestSecrets:
    def test_canary_never_reaches_the_ledger(
        self, runtime: Runtime, task: Task
    ) -> None:
        """A vault value pasted into reasoning, context and request is removed."""
        agent = Agent(runtime, task)
        runtime.service.record_reasoning(task, f"the key is {CANARY}", source="api")
        agent.send(VENDOR, {"vendor": CANARY})
        agent.send(READ, {"note": f"Bearer {CANARY}"})
        runtime.ledger.checkpoint()

        everything = b"".join(runtime.ledger.store.entries())
        assert CANARY.encode() not in everything
        assert b"[redacted" in everything

    def test_a_rotation_elsewhere_is_injected_and_removed(
        self, runtime: Runtime
    ) -> None:
        """A value set by another process is what the next call injects; both the
        old and the new value are removed from what is recorded."""
        pipeline = runtime.pipeline()
        assert pipeline.secret("finance-api-key") == CANARY
        rotated = "rotated-5d1c9b7e-not-for-anyone"
        Vault(runtime.home.vault, load_master_key(runtime.home.path)).set(
            "finance-api-key", rotated
        )

        assert pipeline.secret("finance-api-key") == rotated
        assert pipeline.scrub(f"{CANARY} {rotated}") == (
            "[redacted:finance-api-key] [redacted:finance-api-key]"
        )

    def test_an_unknown_secret_is_refused_by_name(self, runtime: Runtime) -> None:
        with pytest.raises(VaultError, match="no secret named 'absent'"):
            runtime.pipeline().secret("absent")

    def test_ledger_verifies_afterwards(self, runtime: Runtime, task: Task) -> None:
        """After allowed, held, denied and breaching calls the ledger verifies."""
        agent = Agent(runtime, task)
        agent.send(READ, {})
        agent.send(PAY, {"amount": 20_000, "vendor": "acme"})
        agent.send(VENDOR, {"vendor": "x"})
        runtime.ledger.checkpoint()
        report = verify_ledger(
            runtime.ledger.store,
            [runtime.home.verifier()],
            origin=runtime.config.ledger.origin,
        )

        assert report.size == runtime.ledger.size


class TestOpeningRefusals:
    def test_empty_request_is_refused(self, runtime: Runtime) -> None:
        """A task needs the user's request in their own words."""
        text = (ASSETS / "scopes" / "invoices.toml").read_text()
        with pytest.raises(TaskError, match="needs a request"):
            runtime.service.open_task(
                user="ap-clerk@example.com",
                agent="ledger-bot",
                request="   ",
                scope=ScopeText.parse(text, format="toml"),
                by="test",
            )

    def test_scope_permitting_nothing_is_refused(self, runtime: Runtime) -> None:
        """An empty scope is refused rather than opening a task that can do nothing."""
        with pytest.raises(PolicyError, match="permits nothing"):
            runtime.service.open_task(
                user="ap-clerk@example.com",
                agent="ledger-bot",
                request="Pay",
                scope=ScopeText.parse("", format="toml"),
                by="test",
            )


class TestEndingsElsewhere:
    """Another process sharing the ledger ends a token or a task mid-call."""

    @pytest.mark.parametrize("ending", ["token revoked", "task revoked"])
    def test_an_ending_elsewhere_before_the_decision_stops_the_call(
        self, runtime: Runtime, task: Task, ending: str
    ) -> None:
        """Another process ends the token or the task after this one authenticated
        the call: the decision lands after the ending, so the call is not sent."""
        agent = Agent(runtime, task)
        claims = agent.claims()
        assert isinstance(claims, TaskClaims)
        other = Runtime.open(runtime.home)
        try:
            if ending == "token revoked":
                ended = other.service.revoke_token(
                    task.id, claims.jti, by="admin", reason="leaked"
                )
            else:
                ended = other.service.revoke_task(
                    task.id, by="admin", reason="stop"
                ).ended
        finally:
            other.close()
        stopped = run(agent.pipeline.authorize(claims, call(READ, {})))
        completed = entry(runtime, stopped.entry + 1)

        assert (stopped.allowed, stopped.status) == (False, 401)
        assert stopped.entry > ended
        assert entry(runtime, stopped.entry)["outcome"] == "allow"
        assert completed["type"] == kinds.CALL_COMPLETED
        assert completed["decision"] == stopped.entry
        assert completed["error"] == f"not sent: {stopped.reason}"

    def test_a_recent_read_stands_only_for_what_authorize_confirms(
        self, runtime: Runtime, task: Task
    ) -> None:
        """Authentication on a recent read lets a token revoked since through to
        authorize, which refuses it; on a fresh read it is refused at once."""
        agent = Agent(runtime, task)
        assert isinstance(agent.claims(), TaskClaims)
        other = Runtime.open(runtime.home)
        try:
            jti = other.service.authenticate(agent.token)[0].jti
            other.service.revoke_token(task.id, jti, by="admin", reason="leaked")
        finally:
            other.close()
        request = {"path": "/payments"}
        stale = run(
            agent.pipeline.authenticate(
                agent.token, door="http", target="finance", request=request, recent=60
            )
        )
        assert isinstance(stale, TaskClaims)
        stopped = run(agent.pipeline.authorize(stale, call(READ, {})))
        fresh = agent.claims()

        assert (stopped.allowed, stopped.status) == (False, 401)
        assert "revoked" in stopped.reason
        assert isinstance(fresh, Verdict)
        assert fresh.status == 401
        assert entry(runtime, fresh.entry)["type"] == kinds.AUTH_REFUSED
