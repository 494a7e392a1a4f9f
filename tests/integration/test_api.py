"""The HTTP API end to end through the served app: who may read, approve and manage,
what a task token opens, the JSON refusals, the request log line and the OpenAPI
document; the main flow again on PostgreSQL."""

from __future__ import annotations

import asyncio
import logging
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.types import Message

from proctor import kinds
from proctor.gateway.pipeline import Call, Verdict
from proctor.home import Home
from proctor.ledger import entries
from proctor.ledger.verify import verify_ledger
from proctor.runtime import Runtime
from proctor.serve import Front, build_app, is_loopback

ASSETS = Path(__file__).resolve().parents[1] / "assets" / "policy"
INVOICES = (ASSETS / "scopes" / "invoices.toml").read_text(encoding="utf-8")
TREASURY_FREE = """
[[allow]]
id = "read-invoices"
action = 'Payments::Action::"ReadInvoice"'
"""
PAY = 'Payments::Action::"CreatePayment"'
CANARY = "canary-5b1d2e9f-not-for-anyone"


@dataclass
class Api:
    """The served app driven through httpx, one event loop per request."""

    app: Front
    keys: dict[str, str]

    def request(
        self, method: str, path: str, *, who: str | None = None, **kwargs: Any
    ) -> httpx.Response:
        headers = dict(kwargs.pop("headers", {}))
        if who is not None:
            headers["Authorization"] = f"Bearer {self.keys.get(who, who)}"
        return asyncio.run(self._send(method, path, headers=headers, **kwargs))

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.request("POST", path, **kwargs)

    async def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        transport = httpx.ASGITransport(app=self.app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://proctor.test"
        ) as client:
            return await client.request(method, path, **kwargs)


def open_runtime(home: Home) -> Runtime:
    for source in (ASSETS / "org").iterdir():
        shutil.copy(source, home.policies / source.name)
    runtime = Runtime.open(home)
    runtime.secrets.vault.set("finance-api-key", CANARY)
    return runtime


def make_api(runtime: Runtime) -> Api:
    people = runtime.people
    keys = {
        "admin": people.add("admin@example.com", ["admin"]),
        "controller": people.add(
            "controller@example.com", ["approver"], ["controller"]
        ),
        "auditor": people.add("auditor@example.com", ["auditor"]),
        "alice": people.add("alice@example.com", ["approver"], ["controller"]),
    }
    return Api(build_app(runtime), keys)


@pytest.fixture
def runtime(home: Home) -> Iterator[Runtime]:
    """A runtime on SQLite over the finance example's organisation policies."""
    runtime = open_runtime(home)
    yield runtime
    runtime.close()


@pytest.fixture
def api(runtime: Runtime) -> Api:
    """The served app with an admin, a controller, an auditor and alice (a user)."""
    return make_api(runtime)


def open_task(api: Api, scope: str = INVOICES, **fields: Any) -> dict[str, Any]:
    body = {"agent": "ledger-bot", "request": "Pay December's invoices", "scope": scope}
    reply = api.post("/v1/tasks", who="alice", json={**body, **fields})
    assert reply.status_code == 201, reply.text
    return dict(reply.json()["task"])


def active_task(api: Api) -> dict[str, Any]:
    task = open_task(api)
    reply = api.post(
        f"/v1/tasks/{task['id']}/approve",
        who="controller",
        json={"reason": "fits the request"},
    )
    assert reply.status_code == 200, reply.text
    return dict(reply.json()["task"])


def token_for(api: Api, task_id: str) -> str:
    reply = api.post(f"/v1/tasks/{task_id}/tokens", who="alice")
    assert reply.status_code == 201, reply.text
    return str(reply.json()["token"])


def ask_approval(runtime: Runtime, token: str, amount: int = 20000) -> str:
    """Send one payment through the pipeline so that it waits for a controller."""
    pipeline = runtime.pipeline()
    context = {"amount": amount, "vendor": "acme"}

    async def send() -> Verdict:
        claims = await pipeline.authenticate(
            token, door="http", target="finance", request={}
        )
        assert not isinstance(claims, Verdict)
        call = Call(
            "http",
            "finance",
            PAY,
            'Payments::Account::"ops"',
            context,
            {"method": "POST", "path": "/payments", "body": context},
            f"{amount:064d}",
            credential="finance-api-key",
        )
        return await pipeline.authorize(claims, call)

    verdict = asyncio.run(send())
    assert verdict.approval is not None
    return verdict.approval


def entry(runtime: Runtime, index: int) -> dict[str, Any]:
    return entries.decode(runtime.ledger.store.entry(index))


def refused(reply: httpx.Response, status: int) -> str:
    """Check a refusal's status and shape and return its reason."""
    assert reply.status_code == status, reply.text
    body = reply.json()
    assert set(body) == {"error", "reason"}
    return str(body["reason"])


class TestAuthentication:
    def test_no_credentials_is_401(self, api: Api) -> None:
        """A request without Authorization gets 401 and a Bearer challenge."""
        reply = api.get("/v1/tasks")

        assert "Bearer" in refused(reply, 401)
        assert reply.json()["error"] == "unauthenticated"
        assert reply.headers["www-authenticate"] == "Bearer"

    def test_unknown_key_is_401(self, api: Api) -> None:
        """A well-formed key nobody holds is refused, naming only its public id."""
        key = "pk_0123456789ab_" + "A" * 43
        reason = refused(api.get("/v1/tasks", who=key), 401)

        assert "0123456789ab" in reason
        assert "A" * 43 not in reason

    def test_malformed_key_is_401(self, api: Api) -> None:
        """Anything that is not a person's key is refused."""
        assert "malformed" in refused(api.get("/v1/tasks", who="not-a-key"), 401)

    def test_every_role_reads(self, api: Api) -> None:
        """Auditors, approvers and admins may all read tasks and approvals."""
        for who in ("auditor", "controller", "admin"):
            assert api.get("/v1/tasks", who=who).status_code == 200
            assert api.get("/v1/approvals", who=who).status_code == 200


class TestOpenTask:
    def test_person_opens_a_task_for_themselves(
        self, api: Api, runtime: Runtime
    ) -> None:
        """The user is the person asking; the entry index comes back with the task."""
        reply = api.post(
            "/v1/tasks",
            who="alice",
            json={"agent": "ledger-bot", "request": "Pay", "scope": INVOICES},
        )
        body = reply.json()
        opened = entry(runtime, body["entry"])

        assert reply.status_code == 201
        assert body["task"]["user"] == "alice@example.com"
        assert body["task"]["state"] == "pending_approval"
        assert body["task"]["roles"] == ["controller"]
        assert opened["type"] == kinds.TASK_OPENED
        assert opened["by"] == "api:alice@example.com"

    def test_only_an_admin_names_another_user(self, api: Api) -> None:
        """A non-admin may not open a task in someone else's name; an admin may."""
        body = {"agent": "bot", "request": "Read", "scope": TREASURY_FREE}
        other = {**body, "user": "Bob@Example.com"}

        assert "only an admin" in refused(
            api.post("/v1/tasks", who="auditor", json=other), 403
        )
        reply = api.post("/v1/tasks", who="admin", json=other)
        assert reply.status_code == 201
        assert reply.json()["task"]["user"] == "bob@example.com"
        assert reply.json()["task"]["state"] == "active"

    def test_user_must_be_an_address(self, api: Api) -> None:
        """A user that is not an email address is a bad request."""
        body = {"agent": "b", "request": "r", "scope": TREASURY_FREE, "user": "bob"}

        assert "not an email" in refused(
            api.post("/v1/tasks", who="admin", json=body), 400
        )

    def test_bad_scope_is_400(self, api: Api) -> None:
        """A scope that does not compile is refused with its reason."""
        body = {"agent": "bot", "request": "x", "scope": "permit(", "format": "cedar"}

        refused(api.post("/v1/tasks", who="alice", json=body), 400)

    def test_malformed_body_is_400(self, api: Api) -> None:
        """Missing or unknown fields are refused as one-line reasons."""
        reason = refused(api.post("/v1/tasks", who="alice", json={"agent": "x"}), 400)
        extra = {"agent": "x", "request": "y", "scope": TREASURY_FREE, "admin": True}

        assert "body.request" in reason
        assert "body.admin" in refused(
            api.post("/v1/tasks", who="alice", json=extra), 400
        )

    def test_oversized_body_is_413(self, api: Api) -> None:
        """A body over the limit is refused before it is parsed."""
        body = {"agent": "x", "request": "y", "scope": "#" * 300_000}

        refused(api.post("/v1/tasks", who="alice", json=body), 413)

    def test_oversized_headers_are_431(self, api: Api) -> None:
        """Headers over the bound are refused even when they arrive in one piece."""
        reply = api.get("/v1/tasks", who="auditor", headers={"X-Big": "a" * 20_000})

        assert "headers" in refused(reply, 431)

    def test_oversized_chunked_body_is_413(self, api: Api) -> None:
        """A body that declares no length is counted as it arrives."""

        async def chunks() -> AsyncIterator[bytes]:
            for _ in range(4):
                yield b" " * 100_000

        reply = api.post(
            "/v1/tasks",
            who="alice",
            content=chunks(),
            headers={"Content-Type": "application/json"},
        )

        assert "over" in refused(reply, 413)


class TestScopeApproval:
    def test_controller_approves(self, api: Api, runtime: Runtime) -> None:
        """A named approver activates the task; the entry records who and why."""
        task = open_task(api)
        reply = api.post(
            f"/v1/tasks/{task['id']}/approve",
            who="controller",
            json={"reason": "fits the request"},
        )
        body = reply.json()
        approved = entry(runtime, body["entry"])

        assert reply.status_code == 200
        assert body["task"]["state"] == "active"
        assert body["entry"] == body["task"]["entries"]["approved"]
        assert approved["approver"] == "controller@example.com"
        assert approved["reason"] == "fits the request"

    def test_auditor_cannot_approve(self, api: Api) -> None:
        """An auditor reads but does not approve."""
        task = open_task(api)
        reply = api.post(
            f"/v1/tasks/{task['id']}/approve", who="auditor", json={"reason": "ok"}
        )

        assert "not an approver" in refused(reply, 403)

    def test_user_cannot_approve_their_own_task(self, api: Api) -> None:
        """Separation of duties: the user who asked may not approve, even as a
        controller."""
        task = open_task(api)
        reply = api.post(
            f"/v1/tasks/{task['id']}/approve", who="alice", json={"reason": "mine"}
        )

        assert "may not approve" in refused(reply, 403)

    def test_task_token_cannot_approve(self, api: Api) -> None:
        """The agent's task token opens nothing but reasoning."""
        token = token_for(api, active_task(api)["id"])
        task = open_task(api)
        reply = api.post(
            f"/v1/tasks/{task['id']}/approve", who=token, json={"reason": "me"}
        )

        refused(reply, 401)

    def test_reject_ends_the_task(self, api: Api) -> None:
        """A rejected task never becomes active; approving it afterwards conflicts."""
        task = open_task(api)
        path = f"/v1/tasks/{task['id']}"
        reply = api.post(f"{path}/reject", who="controller", json={"reason": "vague"})

        assert reply.json()["task"]["state"] == "rejected"
        assert reply.json()["entry"] == reply.json()["task"]["entries"]["ended"]
        refused(
            api.post(f"{path}/approve", who="controller", json={"reason": "x"}), 409
        )

    def test_reason_is_required(self, api: Api) -> None:
        """An approval without a reason is refused."""
        task = open_task(api)
        reply = api.post(f"/v1/tasks/{task['id']}/approve", who="controller", json={})

        assert "body.reason" in refused(reply, 400)


class TestManageTask:
    def test_read_one_and_all(self, api: Api) -> None:
        """A task reads with its scope's text; the list filters by state."""
        task = open_task(api)
        shown = api.get(f"/v1/tasks/{task['id']}", who="auditor").json()
        pending = api.get("/v1/tasks?state=pending_approval", who="auditor").json()
        active = api.get("/v1/tasks?state=active", who="auditor").json()

        assert "pay-known-vendors" in shown["scope"]["text"]
        assert [found["id"] for found in pending] == [task["id"]]
        assert active == []

    def test_unknown_task_is_404(self, api: Api) -> None:
        """An id no task has is 404 for reading and for changing."""
        refused(api.get("/v1/tasks/tsk_nothing", who="auditor"), 404)
        refused(
            api.post("/v1/tasks/tsk_nothing/revoke", who="admin", json={"reason": "x"}),
            404,
        )

    def test_user_and_admin_manage_others_do_not(
        self, api: Api, runtime: Runtime
    ) -> None:
        """Revoke and close are for an admin or the task's user, never an auditor."""
        first, second = active_task(api), active_task(api)

        refused(
            api.post(
                f"/v1/tasks/{first['id']}/revoke", who="auditor", json={"reason": "x"}
            ),
            403,
        )
        revoked = api.post(
            f"/v1/tasks/{first['id']}/revoke", who="alice", json={"reason": "wrong"}
        ).json()
        closed = api.post(f"/v1/tasks/{second['id']}/close", who="admin").json()

        assert revoked["task"]["state"] == "revoked"
        assert entry(runtime, revoked["entry"])["by"] == "api:alice@example.com"
        assert closed["task"]["state"] == "closed"
        assert entry(runtime, closed["entry"])["reason"] == "done"

    def test_ended_task_conflicts(self, api: Api) -> None:
        """Revoking a closed task is a 409 conflict."""
        task = active_task(api)
        api.post(f"/v1/tasks/{task['id']}/close", who="admin", json={"reason": "ok"})
        reply = api.post(
            f"/v1/tasks/{task['id']}/revoke", who="admin", json={"reason": "again"}
        )

        assert "closed" in refused(reply, 409)


class TestTokens:
    def test_user_gets_a_token_for_the_agent(self, api: Api, runtime: Runtime) -> None:
        """The task's user hands a token to the agent; the handing out is an entry."""
        task = active_task(api)
        body = api.post(f"/v1/tasks/{task['id']}/tokens", who="alice").json()
        issued = entry(runtime, body["entry"])

        assert issued["type"] == kinds.TOKEN_ISSUED
        assert issued["jti"] == body["jti"]
        assert runtime.service.authenticate(body["token"])[1].id == task["id"]

    def test_auditor_gets_no_token(self, api: Api) -> None:
        """Only an admin or the task's user may hand out its tokens."""
        task = active_task(api)

        refused(api.post(f"/v1/tasks/{task['id']}/tokens", who="auditor"), 403)
        assert (
            api.post(f"/v1/tasks/{task['id']}/tokens", who="admin").status_code == 201
        )

    def test_pending_task_gets_no_token(self, api: Api) -> None:
        """A task waiting for its approver has no tokens yet."""
        task = open_task(api)
        reply = api.post(f"/v1/tasks/{task['id']}/tokens", who="alice")

        assert "not active" in refused(reply, 409)


class TestReasoning:
    def test_task_token_records_reasoning(self, api: Api, runtime: Runtime) -> None:
        """The agent's token records a reasoning step and gets its entry index."""
        task = active_task(api)
        token = token_for(api, task["id"])
        reply = api.post(
            f"/v1/tasks/{task['id']}/reasoning",
            who=token,
            json={"text": "invoice 42 is due", "tool_call": "call-1"},
        )
        recorded = entry(runtime, reply.json()["entry"])

        assert reply.status_code == 201
        assert recorded["type"] == kinds.REASONING
        assert recorded["text"] == "invoice 42 is due"
        assert recorded["tool_call"] == "call-1"
        assert recorded["source"] == "api"

    def test_token_of_another_task_is_403(self, api: Api) -> None:
        """A token speaks only for its own task."""
        first, second = active_task(api), active_task(api)
        token = token_for(api, first["id"])
        reply = api.post(
            f"/v1/tasks/{second['id']}/reasoning", who=token, json={"text": "x"}
        )

        assert first["id"] in refused(reply, 403)

    def test_person_key_is_not_a_task_token(self, api: Api) -> None:
        """Reasoning is the agent's: a person's key is refused."""
        task = active_task(api)
        reply = api.post(
            f"/v1/tasks/{task['id']}/reasoning", who="admin", json={"text": "x"}
        )

        refused(reply, 401)

    def test_revoked_task_token_is_401(self, api: Api) -> None:
        """Revocation takes effect on the token's next use."""
        task = active_task(api)
        token = token_for(api, task["id"])
        api.post(f"/v1/tasks/{task['id']}/revoke", who="admin", json={"reason": "x"})
        reply = api.post(
            f"/v1/tasks/{task['id']}/reasoning", who=token, json={"text": "still?"}
        )

        assert "revoked" in refused(reply, 401)

    def test_blank_text_is_400(self, api: Api) -> None:
        """Reasoning without words is refused."""
        task = active_task(api)
        token = token_for(api, task["id"])
        reply = api.post(
            f"/v1/tasks/{task['id']}/reasoning", who=token, json={"text": "   "}
        )

        assert "empty" in refused(reply, 400)


class TestApprovals:
    def test_pending_approval_is_listed_and_shown(
        self, api: Api, runtime: Runtime
    ) -> None:
        """A call waiting for a controller is listed with its context and roles."""
        task = active_task(api)
        approval = ask_approval(runtime, token_for(api, task["id"]))
        listed = api.get("/v1/approvals?state=pending", who="auditor").json()
        shown = api.get(f"/v1/approvals/{approval}", who="auditor").json()

        assert [found["id"] for found in listed] == [approval]
        assert shown["context"] == {"amount": 20000, "vendor": "acme"}
        assert shown["roles"] == ["controller"]
        assert shown["task"] == task["id"]

    def test_controller_grants_once(self, api: Api, runtime: Runtime) -> None:
        """A grant is recorded with who and why; a second answer conflicts."""
        task = active_task(api)
        approval = ask_approval(runtime, token_for(api, task["id"]))
        path = f"/v1/approvals/{approval}"
        reply = api.post(f"{path}/approve", who="controller", json={"reason": "ok"})
        granted = entry(runtime, reply.json()["entry"])

        assert reply.json()["approval"]["state"] == "granted"
        assert granted["type"] == kinds.APPROVAL_GRANTED
        assert granted["approver"] == "controller@example.com"
        refused(api.post(f"{path}/deny", who="controller", json={"reason": "x"}), 409)

    def test_deny_is_recorded(self, api: Api, runtime: Runtime) -> None:
        """A denial is recorded with who and why."""
        task = active_task(api)
        approval = ask_approval(runtime, token_for(api, task["id"]))
        reply = api.post(
            f"/v1/approvals/{approval}/deny",
            who="controller",
            json={"reason": "not on the list"},
        )

        assert reply.json()["approval"]["state"] == "denied"
        assert entry(runtime, reply.json()["entry"])["reason"] == "not on the list"

    def test_who_may_not_approve_a_call(self, api: Api, runtime: Runtime) -> None:
        """Neither an auditor, nor the agent's token, nor the task's user approves."""
        task = active_task(api)
        token = token_for(api, task["id"])
        path = f"/v1/approvals/{ask_approval(runtime, token)}/approve"

        refused(api.post(path, who="auditor", json={"reason": "x"}), 403)
        refused(api.post(path, who=token, json={"reason": "x"}), 401)
        assert "may not approve" in refused(
            api.post(path, who="alice", json={"reason": "x"}), 403
        )

    def test_unknown_approval_is_404(self, api: Api) -> None:
        """An id no approval has is 404."""
        refused(api.get("/v1/approvals/apr_nothing", who="auditor"), 404)
        refused(
            api.post(
                "/v1/approvals/apr_nothing/approve",
                who="controller",
                json={"reason": "x"},
            ),
            404,
        )


class TestSecretsStayOut:
    def test_canary_is_scrubbed_from_entries_bodies_and_errors(
        self, api: Api, runtime: Runtime
    ) -> None:
        """A vault value pasted into a request never comes back or enters the ledger."""
        task = open_task(api, request=f"use {CANARY} to pay")
        missing = api.get(f"/v1/tasks/{CANARY}", who="auditor")

        assert CANARY not in str(task)
        assert CANARY not in missing.text
        assert missing.status_code == 404
        for data in runtime.ledger.store.entries():
            assert CANARY.encode() not in data


class TestServedApp:
    def test_openapi_is_served(self, api: Api) -> None:
        """The OpenAPI document names every endpoint and the bearer scheme."""
        document = api.get("/v1/openapi.json").json()
        paths = document["paths"]

        assert document["openapi"].startswith("3.")
        for path in (
            "/tasks",
            "/tasks/{task_id}",
            "/tasks/{task_id}/approve",
            "/tasks/{task_id}/tokens",
            "/tasks/{task_id}/reasoning",
            "/approvals",
            "/approvals/{approval_id}/deny",
        ):
            assert path in paths
        assert document["components"]["securitySchemes"]["bearer"]["scheme"] == (
            "bearer"
        )

    def test_one_log_line_per_request(
        self, api: Api, caplog: pytest.LogCaptureFixture
    ) -> None:
        """Each request logs one INFO line with its path and status, no credentials."""
        with caplog.at_level(logging.INFO, logger="proctor.serve"):
            api.get("/v1/tasks", who="auditor")
        lines = [r.getMessage() for r in caplog.records if r.name == "proctor.serve"]

        assert len(lines) == 1
        assert "path=/v1/tasks status=200" in lines[0]
        assert api.keys["auditor"] not in caplog.text

    def test_lifespan_opens_and_closes_the_door(self, api: Api) -> None:
        """The app starts and stops cleanly around its gateway door."""

        messages = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
        answers: list[str] = []

        async def receive() -> dict[str, str]:
            return messages.pop(0)

        async def send(message: Message) -> None:
            answers.append(message["type"])

        asyncio.run(api.app({"type": "lifespan"}, receive, send))

        assert answers == ["lifespan.startup.complete", "lifespan.shutdown.complete"]

    def test_ledger_failure_is_503(self, api: Api, runtime: Runtime) -> None:
        """When the ledger cannot record, nothing changes and the reason says so."""
        runtime.ledger.close()
        reply = api.post(
            "/v1/tasks",
            who="alice",
            json={"agent": "bot", "request": "Read", "scope": TREASURY_FREE},
        )

        assert "nothing was changed" in refused(reply, 503)
        assert api.get("/v1/tasks", who="auditor").json() == []

    def test_loopback_is_recognised(self) -> None:
        """Only loopback addresses count as local."""
        assert is_loopback("127.0.0.1")
        assert is_loopback("::1")
        assert is_loopback("localhost")
        assert not is_loopback("0.0.0.0")
        assert not is_loopback("example.com")


@pytest.mark.postgres
class TestOnPostgres:
    @pytest.fixture
    def pg_runtime(
        self, home: Home, postgres_schema: tuple[str, str]
    ) -> Iterator[Runtime]:
        """A runtime whose ledger lives in its own PostgreSQL schema."""
        url, schema = postgres_schema
        text = home.config_file.read_text(encoding="utf-8")
        table = f'[ledger]\ndatabase_url = "{url}"\ndatabase_schema = "{schema}"\n'
        home.config_file.write_text(text.replace("[ledger]\n", table, 1))
        runtime = open_runtime(home)
        yield runtime
        runtime.close()

    def test_main_flow(self, pg_runtime: Runtime) -> None:
        """Open, approve, hand out a token, reason, answer an approval: all entries
        in PostgreSQL, and the ledger verifies."""
        api = make_api(pg_runtime)
        task = active_task(api)
        token = token_for(api, task["id"])
        reasoning = api.post(
            f"/v1/tasks/{task['id']}/reasoning", who=token, json={"text": "pay 42"}
        )
        approval = ask_approval(pg_runtime, token)
        granted = api.post(
            f"/v1/approvals/{approval}/approve", who="controller", json={"reason": "ok"}
        )
        pg_runtime.ledger.checkpoint()
        report = verify_ledger(
            pg_runtime.ledger.store,
            [pg_runtime.home.verifier()],
            origin=pg_runtime.ledger.origin,
        )

        assert reasoning.status_code == 201
        assert granted.json()["approval"]["state"] == "granted"
        assert entry(pg_runtime, granted.json()["entry"])["approver"] == (
            "controller@example.com"
        )
        assert report.size == pg_runtime.ledger.size


@pytest.mark.slow
class TestServeCommand:
    def test_serves_on_loopback_and_stops_cleanly(self, home: Home) -> None:
        """proctor serve answers on 127.0.0.1, logs each request, and an interrupt
        stops it with exit 0."""
        server, base = _serve_command(home)
        try:
            reply = _wait_for(f"{base}/v1/openapi.json")
        finally:
            server.send_signal(signal.SIGINT)
            _, logged = server.communicate(timeout=30)

        assert reply.status_code == 200
        assert server.returncode == 0, logged
        assert "path=/v1/openapi.json status=200" in logged

    def test_terminate_signs_what_was_recorded(self, home: Home) -> None:
        """SIGTERM stops proctor serve with exit 0 after it signs a last checkpoint
        over every entry, as an interrupt does."""
        server, base = _serve_command(home)
        try:
            _wait_for(f"{base}/v1/openapi.json")
            refused = httpx.get(f"{base}/http/none/x", timeout=5)
        finally:
            server.send_signal(signal.SIGTERM)
            _, logged = server.communicate(timeout=30)
        store = home.open_store()
        try:
            size, latest = store.size(), store.latest_checkpoint()
        finally:
            store.close()

        assert server.returncode == 0, logged
        assert refused.status_code == 401
        assert latest is not None
        assert latest.size == size > int(refused.headers["proctor-entry"])


def _serve_command(home: Home) -> tuple[subprocess.Popen[str], str]:
    """Start `proctor serve` on a free loopback port; return it and its base URL."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [str(Path(sys.executable).parent / "proctor"), "serve"]
    server = subprocess.Popen(
        [*command, "--home", str(home.path), "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )

    return server, f"http://127.0.0.1:{port}"


def _wait_for(url: str) -> httpx.Response:
    deadline = time.monotonic() + 20
    while True:
        try:
            return httpx.get(url, timeout=2)
        except httpx.TransportError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
