"""``proctor serve`` end to end: a plain httpx agent, the real app (build_app over a
real runtime, pipeline and SQLite ledger) under uvicorn, and real upstreams behind it:
json-server as the finance API, httpbin to check that injection is exact.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from proctor import kinds
from proctor.forensics import Forensics
from proctor.gateway.routes import MALFORMED, UNMAPPED
from proctor.home import Home, init
from proctor.ledger import entries
from proctor.ledger.verify import verify_ledger
from proctor.runtime import Runtime
from proctor.serve import build_app
from proctor.tasks.people import Person
from proctor.tasks.service import ScopeText
from proctor.tasks.state import ApprovalState, Task, TaskState

from .conftest import AppServer, JsonServer, agent_factory, raw_exchange, status_of

ASSETS = Path(__file__).resolve().parents[2] / "assets" / "policy"
FINANCE_KEY = "finance-key-5d1e0c7b9a"
BIN_TOKEN = "bin-token-3a9f8e7d6c"
BIN_PASSWORD = "bin-password-7c6b5a4f3e"
SECRETS = (FINANCE_KEY, BIN_TOKEN, BIN_PASSWORD)
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

BIN_SCHEMA = """
// httpbin, to check what reaches an upstream.
namespace Bin {
  entity Endpoint;

  action Echo appliesTo {
    principal: [Proctor::Agent],
    resource: [Endpoint],
    context: { task: String, user: String, approved: Bool }
  };
}
"""
BIN_SCOPE = """
[[allow]]
id = "echo"
action = 'Bin::Action::"Echo"'
"""
SERVICES = """
[services.finance]
base_url = "{finance}"
credential = {{ secret = "finance-api-key", style = "header", name = "X-Api-Key" }}
timeout = 10

[[services.finance.routes]]
method = "GET"
path = "/invoices/{{invoice}}"
action = 'Payments::Action::"ReadInvoice"'
resource = 'Payments::Invoice::"{{invoice}}"'

[[services.finance.routes]]
method = "POST"
path = "/payments"
action = 'Payments::Action::"CreatePayment"'
resource = 'Payments::Account::"ops"'
context.amount = {{ from = "body.amount", type = "long" }}
context.vendor = "body.vendor"

[[services.finance.routes]]
method = "POST"
path = "/vendors"
action = 'Payments::Action::"CreateVendor"'
resource = 'Payments::Account::"ops"'
context.vendor = "body.name"

[services.bin]
base_url = "{httpbin}"
credential = {{ secret = "bin-token", style = "bearer" }}

[[services.bin.routes]]
method = "GET"
path = "/bearer"
action = 'Bin::Action::"Echo"'
resource = 'Bin::Endpoint::"bearer"'

[[services.bin.routes]]
method = "GET"
path = "/headers"
action = 'Bin::Action::"Echo"'
resource = 'Bin::Endpoint::"headers"'

[[services.bin.routes]]
method = "GET"
path = "/stream-bytes/{{n}}"
action = 'Bin::Action::"Echo"'
resource = 'Bin::Endpoint::"stream"'

[services.binbasic]
base_url = "{httpbin}"
credential = {{ secret = "bin-password", style = "basic", username = "agent-user" }}

[[services.binbasic.routes]]
method = "GET"
path = "/basic-auth/{{user}}/{{password}}"
action = 'Bin::Action::"Echo"'
resource = 'Bin::Endpoint::"basic"'
"""


@dataclass
class Gateway:
    """A served home with one approved task and its agent's token."""

    runtime: Runtime
    server: AppServer
    finance: JsonServer
    task: Task
    token: str
    controller: Person

    def agent(self, **headers: str) -> httpx.Client:
        return agent_factory(self.server.url)(self.token, **headers)

    def anonymous(self) -> httpx.Client:
        return agent_factory(self.server.url)(None)

    def entry(self, index: int | str) -> dict[str, Any]:
        return entries.decode(self.runtime.ledger.store.entry(int(index)))

    def find(self, predicate: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        """Wait for the entry the predicate picks (outcomes come after the body)."""
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            for raw in self.runtime.ledger.store.entries():
                found = entries.decode(raw)
                if predicate(found):
                    return found
            time.sleep(0.02)
        pytest.fail("no such entry")

    def completion(self, decision: int | str) -> dict[str, Any]:
        return self.find(
            lambda e: (
                e["type"] == kinds.CALL_COMPLETED and e["decision"] == int(decision)
            )
        )

    def everything(self) -> bytes:
        self.server.settle()
        self.runtime.ledger.checkpoint()
        return b"".join(self.runtime.ledger.store.entries())


@pytest.fixture
def gateway(tmp_path: Path, httpbin: str, json_server: JsonServer) -> Iterator[Gateway]:
    """``proctor serve`` over a fresh home whose services are the real upstreams."""
    home = init(Home(tmp_path / "home"), origin="proctor.test/gateway")
    for source in (ASSETS / "org").iterdir():
        shutil.copy(source, home.policies / source.name)
    schema = home.policies / "schema.cedarschema"
    schema.write_text(schema.read_text() + BIN_SCHEMA)
    with home.config_file.open("a") as config:
        config.write(SERVICES.format(finance=json_server.url, httpbin=httpbin))
    runtime = Runtime.open(home)
    try:
        for name, value in zip(
            ("finance-api-key", "bin-token", "bin-password"), SECRETS, strict=True
        ):
            runtime.secrets.vault.set(name, value)
        key = runtime.people.add("controller@example.com", ["approver"], ["controller"])
        controller = runtime.people.authenticate(key)
        scope = (ASSETS / "scopes" / "invoices.toml").read_text() + BIN_SCOPE
        opened = runtime.service.open_task(
            user="ap-clerk@example.com",
            agent="ledger-bot",
            request="Pay December's supplier invoices",
            scope=ScopeText.parse(scope, format="toml"),
            by="test",
        )
        task = runtime.service.approve_task(opened.id, controller, "fits")
        token = runtime.service.issue_token(task.id, by="test").token
        with AppServer(build_app(runtime)) as server:
            yield Gateway(runtime, server, json_server, task, token, controller)
            server.settle()
    finally:
        runtime.close()


class TestAllowedCalls:
    def test_read_is_forwarded_and_recorded(self, gateway: Gateway) -> None:
        """An allowed read returns the upstream's answer, its decision and outcome."""
        with gateway.agent() as agent:
            response = agent.get("finance/invoices/inv-1")
        decision = gateway.entry(response.headers["proctor-entry"])
        completed = gateway.completion(decision["index"])

        assert response.status_code == 200
        assert response.json() == {"id": "inv-1", "vendor": "acme", "amount": 1200}
        assert decision["type"] == kinds.DECISION
        assert decision["outcome"] == "allow"
        assert decision["action"] == 'Payments::Action::"ReadInvoice"'
        assert decision["resource"] == 'Payments::Invoice::"inv-1"'
        assert decision["request"]["path"] == "/invoices/inv-1"
        assert "authorization" not in decision["request"]["headers"]
        assert decision["credential"] == "finance-api-key"
        assert len(decision["request_digest"]) == 64
        assert completed["status"] == 200
        assert completed["size"] == len(response.content)
        assert completed["digest"] == hashlib.sha256(response.content).hexdigest()

    def test_payment_in_scope_reaches_the_upstream(self, gateway: Gateway) -> None:
        """A payment the scope allows is written by json-server and recorded."""
        with gateway.agent() as agent:
            response = agent.post(
                "finance/payments", json={"amount": 500, "vendor": "acme"}
            )
        decision = gateway.entry(response.headers["proctor-entry"])

        assert response.status_code == 201
        assert gateway.finance.data()["payments"] == [
            {"amount": 500, "vendor": "acme", "id": 1}
        ]
        assert decision["context"] == {"amount": 500, "vendor": "acme"}
        assert decision["request"]["body"] == {"amount": 500, "vendor": "acme"}

    def test_reasoning_trace_and_tool_call_are_kept(self, gateway: Gateway) -> None:
        """The agent's note, trace and tool-call id land in the decision."""
        headers = {
            "Proctor-Reasoning": "inv-1 is due on Friday",
            "traceparent": TRACEPARENT,
            "Proctor-Tool-Call": "call_7",
        }
        with gateway.agent(**headers) as agent:
            response = agent.get("finance/invoices/inv-1")
        decision = gateway.entry(response.headers["proctor-entry"])

        assert decision["note"] == "inv-1 is due on Friday"
        assert decision["trace"] == TRACEPARENT
        assert decision["tool_call"] == "call_7"

    def test_streamed_body_is_digested(self, gateway: Gateway) -> None:
        """100 KiB streamed in chunks is recorded with its exact size and SHA-256."""
        with gateway.agent() as agent:
            response = agent.get(
                "bin/stream-bytes/102400", params={"chunk_size": 4096, "seed": 3}
            )
        completed = gateway.completion(response.headers["proctor-entry"])

        assert len(response.content) == 102400
        assert completed["size"] == 102400
        assert completed["digest"] == hashlib.sha256(response.content).hexdigest()


class TestInjection:
    def test_bearer_is_the_vaults_token(self, gateway: Gateway) -> None:
        """httpbin sees exactly the vault's bearer token, never the task token, and
        its echo reaches the agent masked: put back, it is what was recorded."""
        with gateway.agent() as agent:
            response = agent.get("bin/bearer")
        completed = gateway.completion(response.headers["proctor-entry"])
        stars = b"*" * len(BIN_TOKEN)
        upstream = response.content.replace(stars, BIN_TOKEN.encode())

        assert response.json() == {"authenticated": True, "token": stars.decode()}
        assert completed["digest"] == hashlib.sha256(upstream).hexdigest()
        assert completed["masked"] == 1
        assert json.loads(upstream) == {"authenticated": True, "token": BIN_TOKEN}

    def test_a_utf8_header_arrives_byte_for_byte(self, gateway: Gateway) -> None:
        """A header value in UTF-8 reaches httpbin as the bytes the agent sent; one
        that is no UTF-8 text is refused, 400 and recorded, never re-encoded."""
        note = "café ✓".encode()
        with gateway.agent() as agent:
            echoed = agent.get("bin/headers", headers={"X-Note": note})
            refused = agent.get("bin/headers", headers={"X-Note": b"caf\xe9\xff"})
        decision = gateway.entry(refused.headers["proctor-entry"])

        assert echoed.status_code == 200
        # httpbin reads header bytes as latin-1 (WSGI) and answers them as text.
        assert echoed.json()["headers"]["X-Note"].encode("latin-1") == note
        assert refused.status_code == 400
        assert decision["action"] == MALFORMED
        assert decision["request"]["problem"] == "the value of x-note is not UTF-8 text"

    def test_basic_is_the_vaults_password(self, gateway: Gateway) -> None:
        """httpbin's basic-auth check passes with the injected user and password,
        and the password in the path is redacted in the ledger."""
        with gateway.agent() as agent:
            response = agent.get(f"binbasic/basic-auth/agent-user/{BIN_PASSWORD}")
        decision = gateway.entry(response.headers["proctor-entry"])

        assert response.status_code == 200
        assert response.json() == {"authenticated": True, "user": "agent-user"}
        assert BIN_PASSWORD not in decision["request"]["path"]
        assert "[redacted" in decision["request"]["path"]


def granted(gateway: Gateway, agent: httpx.Client, payment: dict[str, Any]) -> str:
    """Send a payment that is held, have the controller grant it, return its id."""
    held = agent.post("finance/payments", json=payment)
    approval: str = held.json()["approval"]
    gateway.runtime.service.grant(approval, gateway.controller, "checked")

    return approval


class TestApprovals:
    def test_large_payment_waits_then_goes_once(self, gateway: Gateway) -> None:
        """Over 10,000: 428 with an approval id; once granted it goes exactly once."""
        payment = {"amount": 12_000, "vendor": "acme"}
        with gateway.agent() as agent:
            held = agent.post("finance/payments", json=payment)
            approval = held.json()["approval"]
            gateway.runtime.service.grant(approval, gateway.controller, "checked")
            retry = {"Proctor-Approval": approval}
            allowed = agent.post("finance/payments", json=payment, headers=retry)
            again = agent.post("finance/payments", json=payment, headers=retry)

        assert held.status_code == 428
        assert held.json()["error"] == "needs_approval"
        assert allowed.status_code == 201
        assert again.status_code == 409
        assert len(gateway.finance.data()["payments"]) == 1
        assert gateway.entry(allowed.headers["proctor-entry"])["approval"] == approval

    def test_approval_binds_the_exact_request(self, gateway: Gateway) -> None:
        """An approval for 12,000 does not release a payment of 45,000."""
        with gateway.agent() as agent:
            approval = granted(gateway, agent, {"amount": 12_000, "vendor": "acme"})
            other = agent.post(
                "finance/payments",
                json={"amount": 45_000, "vendor": "acme"},
                headers={"Proctor-Approval": approval},
            )

        assert other.status_code == 409
        assert gateway.finance.data()["payments"] == []

    def test_approval_binds_the_headers_too(self, gateway: Gateway) -> None:
        """A header added after approval makes another request; a new trace does
        not, and the exact retry then goes through once."""
        payment = {"amount": 12_000, "vendor": "acme"}
        with gateway.agent() as agent:
            retry = {"Proctor-Approval": granted(gateway, agent, payment)}
            extra = agent.post(
                "finance/payments", json=payment, headers={**retry, "X-Extra": "1"}
            )
            traced = agent.post(
                "finance/payments",
                json=payment,
                headers={**retry, "traceparent": TRACEPARENT},
            )

        assert extra.status_code == 409
        assert traced.status_code == 201
        assert len(gateway.finance.data()["payments"]) == 1

    def test_call_held_open_until_approved(self, gateway: Gateway) -> None:
        """With Prefer: wait=N the call waits and goes through once approved."""
        answers: list[httpx.Response] = []

        def pay() -> None:
            with gateway.agent(Prefer="wait=20") as agent:
                answers.append(
                    agent.post(
                        "finance/payments", json={"amount": 20_000, "vendor": "globex"}
                    )
                )

        caller = threading.Thread(target=pay)
        caller.start()
        pending = gateway.find(lambda e: e["type"] == kinds.APPROVAL_REQUESTED)
        approval = gateway.runtime.service.grant(
            pending["approval"], gateway.controller, "ok"
        )
        caller.join(timeout=30)

        assert approval.state is ApprovalState.GRANTED
        assert answers[0].status_code == 201
        assert gateway.finance.data()["payments"][0]["amount"] == 20_000


class TestRefusals:
    def test_unmapped_route_is_denied_and_recorded(self, gateway: Gateway) -> None:
        """DELETE has no route: 403, a decision on Unmapped, nothing deleted."""
        with gateway.agent() as agent:
            response = agent.delete("finance/invoices/inv-1")
        decision = gateway.entry(response.headers["proctor-entry"])

        assert response.status_code == 403
        assert decision["action"] == UNMAPPED
        assert decision["outcome"] == "deny"
        assert decision["breach"] is False
        assert len(gateway.finance.data()["invoices"]) == 2

    def test_malformed_body_is_refused_and_recorded(self, gateway: Gateway) -> None:
        """An amount sent as text: 400, recorded on Malformed, nothing written."""
        with gateway.agent() as agent:
            response = agent.post(
                "finance/payments", json={"amount": "500", "vendor": "acme"}
            )
        decision = gateway.entry(response.headers["proctor-entry"])

        assert response.status_code == 400
        assert "body.amount must be a whole number" in response.json()["reason"]
        assert decision["action"] == MALFORMED
        assert decision["outcome"] == "deny"
        assert decision["breach"] is False
        assert "whole number" in decision["request"]["problem"]
        assert gateway.finance.data()["payments"] == []
        assert gateway.runtime.service.require_task(gateway.task.id).state is (
            TaskState.ACTIVE
        )

    def test_breach_is_flagged_and_quarantines(self, gateway: Gateway) -> None:
        """Creating a vendor is outside the scope: 403, breach, then the token fails."""
        with gateway.agent() as agent:
            denied = agent.post("finance/vendors", json={"name": "mallory-holdings"})
            after = agent.get("finance/invoices/inv-1")
        breach = gateway.entry(denied.json()["breach"])

        assert denied.status_code == 403
        assert breach["type"] == kinds.BREACH
        assert breach["decision"] == int(denied.headers["proctor-entry"])
        assert after.status_code == 401
        assert gateway.runtime.service.require_task(gateway.task.id).state is (
            TaskState.QUARANTINED
        )
        assert len(gateway.finance.data()["vendors"]) == 2

    def test_call_after_quarantine_names_its_task(self, gateway: Gateway) -> None:
        """A refused call with the quarantined task's genuine token is recorded
        under that task, so the task's story shows what was tried after."""
        with gateway.agent() as agent:
            agent.post("finance/vendors", json={"name": "mallory-holdings"})
            after = agent.get("finance/invoices/inv-1")
        refused = gateway.entry(after.headers["proctor-entry"])

        assert after.status_code == 401
        assert refused["type"] == kinds.AUTH_REFUSED
        assert refused["task"] == gateway.task.id
        assert refused["agent"] == gateway.task.agent
        assert refused["user"] == gateway.task.user
        assert "quarantined" in refused["reason"]
        with Forensics.open(gateway.runtime.home) as forensics:
            last = forensics.trace(gateway.task.id).events[-1]
        assert (last.index, last.type, last.tone) == (
            refused["index"],
            kinds.AUTH_REFUSED,
            "deny",
        )
        assert last.summary.startswith("refused GET /http/finance/invoices/inv-1")

    def test_missing_token_is_refused_and_recorded(self, gateway: Gateway) -> None:
        """No token: 401 and an auth.refused entry, named by Proctor-Entry."""
        with gateway.anonymous() as agent:
            response = agent.get("finance/invoices/inv-1")
        refused = gateway.entry(response.headers["proctor-entry"])

        assert response.status_code == 401
        assert refused["type"] == kinds.AUTH_REFUSED
        assert refused["request"]["path"] == "/http/finance/invoices/inv-1"

    def test_absolute_target_is_refused_and_recorded(self, gateway: Gateway) -> None:
        """An absolute URL as the target is never forwarded anywhere: 400, and the
        attempt is a Malformed call in the ledger, whatever host it names."""
        request = (
            b"GET http://169.254.169.254/http/finance/invoices/inv-1 HTTP/1.1\r\n"
            b"Host: 169.254.169.254\r\nAuthorization: Bearer %s\r\n"
            b"Connection: close\r\n\r\n" % gateway.token.encode()
        )
        answer = raw_exchange(gateway.server.port, request)
        head = answer.split(b"\r\n\r\n", 1)[0].decode("latin-1").lower()
        entry_line = next(
            line for line in head.splitlines() if line.startswith("proctor-entry:")
        )
        recorded = gateway.entry(entry_line.split(":", 1)[1].strip())

        assert status_of(answer) == 400
        assert recorded["action"] == MALFORMED
        assert recorded["outcome"] == "deny"
        assert "169.254.169.254" in recorded["request"]["path"]
        assert gateway.finance.data()["payments"] == []


class TestRecord:
    def test_no_secret_in_ledger_logs_or_answers(
        self, gateway: Gateway, caplog: pytest.LogCaptureFixture
    ) -> None:
        """Vault values never reach the ledger, Proctor's log lines or its answers,
        even when the agent itself sends them in headers, bodies and queries."""
        caplog.set_level(logging.DEBUG)
        body = {"amount": 1, "vendor": "acme", "memo": f"key {FINANCE_KEY}"}
        with gateway.agent(**{"X-Api-Key": FINANCE_KEY}) as agent:
            own = [
                agent.post("finance/payments", json=body),
                agent.post("finance/payments", json={"amount": BIN_TOKEN}),
                agent.get("finance/nowhere", params={"token": BIN_TOKEN}),
                agent.get("nowhere/x", params={"password": BIN_PASSWORD}),
            ]
            agent.get(f"binbasic/basic-auth/agent-user/{BIN_PASSWORD}")
        ledger = gateway.everything()
        # Proctor's own lines; the agent's httpx (same process here) logs its URLs.
        ours = "\n".join(
            record.getMessage()
            for record in caplog.records
            if record.name.startswith(("proctor", "uvicorn.error"))
        )

        assert [r.status_code for r in own] == [201, 400, 403, 404]
        for secret in SECRETS:
            assert secret.encode() not in ledger
            assert secret not in ours
            # own[0] is json-server echoing the memo: masked on its way back.
            assert not any(secret in r.text for r in own)
        assert b"[redacted" in ledger

    def test_no_secret_the_agent_names_is_recorded_or_said(
        self, gateway: Gateway, caplog: pytest.LogCaptureFixture
    ) -> None:
        """What a path or a header names is recorded and repeated in refusals: a
        vault value as the resource of a mapped route, as a service's name or as
        an approval id is scrubbed from the entry and masked in the answer."""
        caplog.set_level(logging.DEBUG)
        with gateway.agent() as agent:
            named = agent.get(f"finance/invoices/{BIN_TOKEN}")
            service = agent.get(f"{FINANCE_KEY}/invoices")
            approval = agent.post(
                "finance/payments",
                json={"amount": 20_000, "vendor": "acme"},
                headers={"Proctor-Approval": BIN_PASSWORD},
            )
        answers = (named, service, approval)
        entries = [gateway.entry(r.headers["proctor-entry"]) for r in answers]
        ours = "\n".join(
            record.getMessage()
            for record in caplog.records
            if record.name.startswith("proctor")
        )

        assert [r.status_code for r in answers] == [404, 404, 409]
        assert entries[0]["resource"] == 'Payments::Invoice::"[redacted:bin-token]"'
        assert entries[1]["target"] == "[redacted:finance-api-key]"
        assert entries[2]["approval"] == "[redacted:bin-password]"
        for secret in SECRETS:
            assert secret.encode() not in gateway.everything()
            assert secret not in ours
            assert not any(secret in r.text for r in answers)

    def test_ledger_verifies_after_every_kind_of_call(self, gateway: Gateway) -> None:
        """Allowed, held, unmapped, malformed and breaching: the ledger verifies."""
        with gateway.agent() as agent:
            agent.get("finance/invoices/inv-1")
            agent.post("finance/payments", json={"amount": 12_000, "vendor": "acme"})
            agent.delete("finance/invoices/inv-1")
            agent.post(
                "finance/payments",
                content=b"{",
                headers={"Content-Type": "application/json"},
            )
            agent.post("finance/vendors", json={"name": "x"})
        gateway.everything()
        report = verify_ledger(
            gateway.runtime.ledger.store,
            [gateway.runtime.home.verifier()],
            origin=gateway.runtime.config.ledger.origin,
        )

        assert report.size == gateway.runtime.ledger.size
