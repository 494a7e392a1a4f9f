"""The authority's commands end to end on a real SQLite home: people, tasks and their
approval, tokens, approvals of single calls, secrets, policies, reindex and explain."""

from __future__ import annotations

import asyncio
import io
import json
import re
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest

from proctor import kinds
from proctor.gateway.pipeline import Call, Verdict
from proctor.home import Home
from proctor.ledger import entries
from proctor.runtime import Runtime
from proctor.tasks.service import ScopeText

from .conftest import Cli, Result

ASSETS = Path(__file__).resolve().parents[1] / "assets" / "policy"
PAY = 'Payments::Action::"CreatePayment"'
API_KEY = re.compile(r"pk_[0-9a-f]{12}_[A-Za-z0-9_-]{43}")
CANARY = "canary-2c8e4a7d-never-printed"


@pytest.fixture
def org_home(home: Home, monkeypatch: pytest.MonkeyPatch) -> Home:
    """A home with the finance example's organisation policies and no API key set."""
    for source in (ASSETS / "org").iterdir():
        shutil.copy(source, home.policies / source.name)
    monkeypatch.delenv("PROCTOR_API_KEY", raising=False)
    return home


class Proctor:
    """The ``proctor`` command on one home."""

    def __init__(self, cli: Cli, home: Home, monkeypatch: pytest.MonkeyPatch) -> None:
        self.cli = cli
        self.home = home
        self.monkeypatch = monkeypatch

    def __call__(self, *args: str, key: str | None = None) -> Result:
        if key is None:
            self.monkeypatch.delenv("PROCTOR_API_KEY", raising=False)
        else:
            self.monkeypatch.setenv("PROCTOR_API_KEY", key)
        return self.cli(*args, "--home", str(self.home.path))

    def ok(self, *args: str, key: str | None = None) -> Result:
        result = self(*args, key=key)
        assert result.code == 0, result.err
        return result

    def json(self, *args: str, key: str | None = None) -> Any:
        return json.loads(self.ok(*args, "--json", key=key).out)

    def add_user(self, email: str, *options: str) -> str:
        return self.ok("users", "add", email, *options).out.strip()

    def open_task(
        self, scope: str = "invoices.toml", user: str = "alice@example.com"
    ) -> str:
        return self.ok(
            "task",
            "open",
            "--user",
            user,
            "--agent",
            "ledger-bot",
            "--request",
            "Pay December's supplier invoices",
            "--scope",
            str(ASSETS / "scopes" / scope),
        ).out.strip()

    def entries(self) -> list[dict[str, Any]]:
        store = self.home.open_store()
        try:
            return [entries.decode(data) for data in store.entries()]
        finally:
            store.close()

    def feed(self, data: bytes) -> None:
        self.monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))


@pytest.fixture
def proctor(cli: Cli, org_home: Home, monkeypatch: pytest.MonkeyPatch) -> Proctor:
    """Run ``proctor ... --home HOME``."""
    return Proctor(cli, org_home, monkeypatch)


@pytest.fixture
def controller(proctor: Proctor) -> str:
    """The API key of an approver who fills the controller role."""
    return proctor.add_user(
        "controller@example.com", "--role", "approver", "--approves", "controller"
    )


@pytest.fixture
def active(proctor: Proctor, controller: str) -> str:
    """The id of an approved invoices task."""
    task = proctor.open_task()
    proctor.ok("task", "approve", task, "--reason", "fits the request", key=controller)
    return task


def ask_approval(home: Home, task_id: str, amount: int) -> tuple[str, int]:
    """Send one payment through the pipeline; return its approval id and decision."""
    runtime = Runtime.open(home)
    try:
        token = runtime.service.issue_token(task_id, by="test").token
        runtime.service.record_reasoning(
            runtime.service.require_task(task_id), "ACME invoice 42 is due", source="t"
        )
        verdict = asyncio.run(_pay(runtime, token, amount))
    finally:
        runtime.close()
    assert verdict.approval is not None
    assert verdict.entry is not None
    return verdict.approval, verdict.entry


def send_approved(home: Home, task_id: str, approval: str, amount: int) -> int:
    """Send the approved payment again, and record that upstream answered 200."""
    runtime = Runtime.open(home)
    try:
        token = runtime.service.issue_token(task_id, by="test").token
        verdict = asyncio.run(_pay(runtime, token, amount, approval=approval))
        assert verdict.allowed, verdict.reason
        asyncio.run(
            runtime.pipeline().complete(
                verdict, status=200, size=17, digest="ab" * 32, latency_us=4200
            )
        )
    finally:
        runtime.close()
    assert verdict.entry is not None
    return verdict.entry


async def _pay(
    runtime: Runtime, token: str, amount: int, *, approval: str | None = None
) -> Verdict:
    pipeline = runtime.pipeline()
    claims = await pipeline.authenticate(
        token, door="http", target="finance", request={}
    )
    assert not isinstance(claims, Verdict)
    context = {"amount": amount, "vendor": "acme"}
    call = Call(
        "http",
        "finance",
        PAY,
        'Payments::Account::"ops"',
        context,
        {"method": "POST", "path": "/payments", "body": context},
        f"{amount:064d}",
        credential="finance-api-key",
        approval=approval,
    )
    return await pipeline.authorize(claims, call)


class TestUsers:
    def test_add_prints_the_key_once_and_records_the_person(
        self, proctor: Proctor
    ) -> None:
        """The key is on stdout alone; the entry and the listing hold only its id."""
        result = proctor.ok(
            "users",
            "add",
            "Ann@Example.com",
            "--role",
            "approver",
            "--approves",
            "controller",
            "--approves",
            "cfo",
        )
        key = result.out.strip()
        listed = proctor.json("users", "list")
        added = [e for e in proctor.entries() if e["type"] == kinds.PERSON_ADDED]

        assert API_KEY.fullmatch(key)
        assert "shown once" in result.err
        assert listed[0]["email"] == "ann@example.com"
        assert listed[0]["approves"] == ["cfo", "controller"]
        assert added[0]["roles"] == ["approver"]
        assert added[0]["key_id"] == listed[0]["key_id"]
        assert key not in json.dumps(listed) + json.dumps(added)
        text = proctor.ok("users", "list").out
        assert "ann@example.com  approver  approves cfo,controller" in text
        assert key not in text

    def test_rotate_ends_the_old_key(self, proctor: Proctor, controller: str) -> None:
        """A rotated key replaces the old one, and the rotation is an entry."""
        task = proctor.open_task()
        new = proctor.ok("users", "rotate", "controller@example.com").out.strip()
        old = proctor("task", "approve", task, "--reason", "x", key=controller)

        assert API_KEY.fullmatch(new)
        assert old.code == 1
        assert "not valid" in old.err
        proctor.ok("task", "approve", task, "--reason", "x", key=new)
        assert any(e["type"] == kinds.PERSON_ROTATED for e in proctor.entries())

    def test_unknown_role_is_bad_usage(self, proctor: Proctor) -> None:
        """A role that does not exist is refused before anything is written."""
        result = proctor("users", "add", "bob@example.com", "--role", "boss")

        assert result.code == 2
        assert proctor.json("users", "list") == []


class TestTasks:
    def test_open_waits_for_a_controller(self, proctor: Proctor) -> None:
        """A paying scope is opened pending, naming the role it waits for."""
        task = proctor.open_task()
        shown = proctor.json("task", "show", task)

        assert task.startswith("tsk_")
        assert shown["state"] == "pending_approval"
        assert shown["roles"] == ["controller"]
        assert shown["request"] == "Pay December's supplier invoices"
        assert "pay-known-vendors" in shown["scope"]["text"]

    def test_human_show_and_list(self, proctor: Proctor) -> None:
        """The text forms carry the state, the waiting role and the scope."""
        task = proctor.open_task()
        shown = proctor.ok("task", "show", task).out
        listed = proctor.ok("task", "list").out

        assert "state     pending_approval (waits for controller)" in shown
        assert "scope as written:" in shown
        assert listed.startswith(f"{task}  pending_approval")

    def test_approver_key_activates_it(self, proctor: Proctor, controller: str) -> None:
        """The approver's own key approves; the entry names them and the reason."""
        task = proctor.open_task()
        result = proctor.json(
            "task", "approve", task, "--reason", "fits the request", key=controller
        )
        approved = proctor.entries()[result["entry"]]

        assert result["task"]["state"] == "active"
        assert approved["approver"] == "controller@example.com"
        assert approved["reason"] == "fits the request"

    def test_approve_needs_a_key(self, proctor: Proctor, controller: str) -> None:
        """Without PROCTOR_API_KEY or --api-key-file the command is bad usage."""
        task = proctor.open_task()
        result = proctor("task", "approve", task, "--reason", "x")

        assert result.code == 2
        assert "PROCTOR_API_KEY" in result.err
        assert len(result.err.strip().splitlines()) == 1

    def test_key_file_must_be_private(
        self, proctor: Proctor, controller: str, tmp_path: Path
    ) -> None:
        """A key file others can read is refused; a private one works."""
        task = proctor.open_task()
        key_file = tmp_path / "key"
        key_file.write_text(controller + "\n")
        key_file.chmod(0o644)
        loose = proctor(
            "task", "approve", task, "--reason", "x", "--api-key-file", str(key_file)
        )
        key_file.chmod(0o600)
        private = proctor(
            "task", "approve", task, "--reason", "x", "--api-key-file", str(key_file)
        )

        assert loose.code == 2
        assert private.code == 0, private.err

    def test_user_may_not_approve_their_own_task(self, proctor: Proctor) -> None:
        """Separation of duties holds even when the user is a controller."""
        key = proctor.add_user(
            "alice@example.com", "--role", "approver", "--approves", "controller"
        )
        task = proctor.open_task(user="Alice@Example.com")
        result = proctor("task", "approve", task, "--reason", "mine", key=key)

        assert result.code == 1
        assert "may not approve" in result.err

    def test_user_in_other_case_may_not_approve(self, proctor: Proctor) -> None:
        """A task opened for Alice@Example.com is alice@example.com's: she may not
        approve it, even when the user reached the service as written."""
        key = proctor.add_user(
            "alice@example.com", "--role", "approver", "--approves", "controller"
        )
        runtime = Runtime.open(proctor.home)
        try:
            task = runtime.service.open_task(
                user="Alice@Example.com",
                agent="ledger-bot",
                request="Pay",
                scope=ScopeText.parse(
                    (ASSETS / "scopes" / "invoices.toml").read_text(), format="toml"
                ),
                by="test",
            )
        finally:
            runtime.close()
        result = proctor("task", "approve", task.id, "--reason", "mine", key=key)

        assert result.code == 1
        assert "may not approve" in result.err

    def test_auditor_is_not_an_approver(self, proctor: Proctor) -> None:
        """An auditor's key does not approve."""
        key = proctor.add_user("audit@example.com", "--role", "auditor")
        task = proctor.open_task()
        result = proctor("task", "reject", task, "--reason", "x", key=key)

        assert result.code == 1
        assert "lacks the approver role" in result.err

    def test_reject_revoke_close_and_list(
        self, proctor: Proctor, controller: str, active: str
    ) -> None:
        """Each ending is recorded and the list filters by state."""
        rejected = proctor.open_task()
        closed = proctor.open_task("repo.toml")
        proctor.ok("task", "reject", rejected, "--reason", "vague", key=controller)
        proctor.ok("task", "revoke", active, "--reason", "wrong vendor")
        proctor.ok("task", "close", closed)
        again = proctor("task", "revoke", active, "--reason", "again")
        states = {t["id"]: t["state"] for t in proctor.json("task", "list")}

        assert states == {rejected: "rejected", active: "revoked", closed: "closed"}
        assert [t["id"] for t in proctor.json("task", "list", "--state", "closed")] == [
            closed
        ]
        assert again.code == 1
        assert proctor.entries()[-1]["by"].startswith("cli:")

    def test_unknown_task_is_bad_usage(self, proctor: Proctor) -> None:
        """Showing a task that does not exist exits 2 with one line."""
        result = proctor("task", "show", "tsk_nothing")

        assert result.code == 2
        assert "no task" in result.err


class TestTokens:
    def test_issue_prints_only_the_token(self, proctor: Proctor, active: str) -> None:
        """stdout holds one JWT; the jti and the entry go to stderr."""
        result = proctor.ok("token", "issue", active)
        token = result.out.strip()
        issued = proctor.entries()[-1]

        assert result.out.count("\n") == 1
        assert token.count(".") == 2
        assert issued["type"] == kinds.TOKEN_ISSUED
        assert issued["jti"] in result.err

    def test_revoke_records_the_jti(self, proctor: Proctor, active: str) -> None:
        """A revoked token is named in an entry with the reason."""
        jti = proctor.json("token", "issue", active)["jti"]
        revoked = proctor.json("token", "revoke", active, jti, "--reason", "leaked")
        recorded = proctor.entries()[revoked["entry"]]

        assert recorded["type"] == kinds.TOKEN_REVOKED
        assert recorded["jti"] == jti
        assert recorded["reason"] == "leaked"

    def test_pending_task_gets_no_token(self, proctor: Proctor) -> None:
        """A task waiting for its approver has no tokens yet."""
        result = proctor("token", "issue", proctor.open_task())

        assert result.code == 1
        assert "not active" in result.err
        assert result.out == ""


class TestApprovals:
    def test_pending_approval_is_listed(self, proctor: Proctor, active: str) -> None:
        """A payment over 10,000 waits; the list and show say for whom and why."""
        approval, _ = ask_approval(proctor.home, active, 20000)
        listed = proctor.ok("approvals", "list")
        shown = proctor.ok("approvals", "show", approval)

        assert approval in listed.out
        assert "needs controller" in listed.out
        assert '"amount":20000' in shown.out
        assert "Pay December's supplier invoices" in shown.out

    def test_approve_and_deny(
        self, proctor: Proctor, controller: str, active: str
    ) -> None:
        """Answers are recorded with who and why; pending shows only what waits."""
        granted, _ = ask_approval(proctor.home, active, 20000)
        denied, _ = ask_approval(proctor.home, active, 30000)
        proctor.ok(
            "approvals", "approve", granted, "--reason", "checked", key=controller
        )
        answer = proctor.json(
            "approvals", "deny", denied, "--reason", "no invoice", key=controller
        )
        history = {
            a["id"]: a["state"] for a in proctor.json("approvals", "list", "--all")
        }

        assert history == {granted: "granted", denied: "denied"}
        assert proctor.json("approvals", "list") == []
        assert (
            proctor.entries()[answer["entry"]]["approver"] == "controller@example.com"
        )

    def test_task_user_may_not_approve_a_call(
        self, proctor: Proctor, active: str
    ) -> None:
        """The user who asked for the task may not release its calls."""
        key = proctor.add_user(
            "alice@example.com", "--role", "approver", "--approves", "controller"
        )
        approval, _ = ask_approval(proctor.home, active, 20000)
        result = proctor("approvals", "approve", approval, "--reason", "x", key=key)

        assert result.code == 1
        assert "may not approve" in result.err


class TestSecrets:
    def test_set_and_list_never_print_the_value(self, proctor: Proctor) -> None:
        """Names, versions and fingerprints only: the value is nowhere in output or
        entries."""
        proctor.feed(f"{CANARY}\n".encode())
        first = proctor.ok("secrets", "set", "finance-api-key")
        proctor.feed(f"{CANARY}-v2".encode())
        second = proctor.json("secrets", "set", "finance-api-key")
        listed = proctor.ok("secrets", "list")
        rotated = [e for e in proctor.entries() if e["type"] == kinds.SECRET_ROTATED]

        assert second["version"] == 2
        assert "finance-api-key  version 2" in listed.out
        assert [e["version"] for e in rotated] == [1, 2]
        assert rotated[1]["fingerprint"] == second["fingerprint"]
        everything = first.out + first.err + listed.out + listed.err + str(second)
        assert CANARY not in everything + json.dumps(proctor.entries())

    def test_empty_value_is_refused(self, proctor: Proctor) -> None:
        """Nothing on stdin is bad usage, said in one line, and nothing is stored."""
        proctor.feed(b"\n")
        result = proctor("secrets", "set", "finance-api-key")

        assert result.code == 2
        assert "no value" in result.err
        assert proctor.json("secrets", "list") == []


class TestPolicy:
    def test_validate_and_publish(self, proctor: Proctor) -> None:
        """Valid policies exit 0; publishing records the set once."""
        valid = proctor.ok("policy", "validate")
        first = proctor.json("policy", "publish")
        second = proctor.json("policy", "publish")

        assert "OK" in valid.out
        assert first["changed"] is True
        assert second == {**first, "changed": False}
        assert proctor.entries()[first["entry"]]["digest"] == first["digest"]

    def test_validate_names_problems(self, proctor: Proctor) -> None:
        """A permit in the organisation's policies is a problem: exit 1."""
        (proctor.home.policies / "bad.cedar").write_text(
            '@id("too-kind") permit (principal, action, resource);'
        )
        result = proctor("policy", "validate")

        assert result.code == 1
        assert "too-kind" in result.out

    def test_policy_tests_pass_and_fail(self, cli: Cli, tmp_path: Path) -> None:
        """A passing suite exits 0; one failing case exits 1 and is named."""
        cases = (ASSETS / "cases" / "invoices.toml").read_text()
        wrong = tmp_path / "wrong.toml"
        wrong.write_text(
            cases.replace('"../org"', json.dumps(str(ASSETS / "org")))
            .replace('"../scopes/', json.dumps(str(ASSETS / "scopes"))[:-1] + "/")
            .replace('expect = "needs_approval"', 'expect = "allow"')
        )
        passing = cli("policy", "test", str(ASSETS / "cases" / "invoices.toml"))
        failing = cli("policy", "test", str(wrong))

        assert passing.code == 0, passing.err
        assert failing.code == 1
        assert "FAIL  a payment above 10,000 waits" in failing.out


class TestReindex:
    def test_counts_by_state(
        self, proctor: Proctor, controller: str, active: str
    ) -> None:
        """Replaying every entry counts tasks and approvals by their state now."""
        proctor.open_task()
        approval, _ = ask_approval(proctor.home, active, 20000)
        proctor.ok("approvals", "approve", approval, "--reason", "ok", key=controller)
        ask_approval(proctor.home, active, 25000)
        counts = proctor.json("reindex")

        assert counts["tasks"] == {"active": 1, "pending_approval": 1}
        assert counts["approvals"] == {"granted": 1, "pending": 1}
        assert counts["entries"] == len(proctor.entries())
        text = proctor.ok("reindex").out
        assert "tasks      2 (active 1, pending_approval 1)" in text
        assert "approvals  2 (granted 1, pending 1)" in text


class TestExplain:
    @pytest.fixture
    def story(self, proctor: Proctor, controller: str, active: str) -> int:
        """An approved payment that went through: the index of its allowing decision."""
        approval, _ = ask_approval(proctor.home, active, 20000)
        proctor.ok(
            "approvals", "approve", approval, "--reason", "checked", key=controller
        )
        return send_approved(proctor.home, active, approval, 20000)

    @staticmethod
    def published(proctor: Proctor) -> dict[str, Any]:
        """The policy.published entry in force."""
        return next(e for e in proctor.entries() if e["type"] == kinds.POLICY_PUBLISHED)

    def test_human_story(self, proctor: Proctor, story: int, active: str) -> None:
        """The text names task, user, request, scope approver, reasoning, request as
        sent, policies and policy set, approval and approver, outcome and proof."""
        text = proctor.ok("explain", str(story)).out
        policy = self.published(proctor)
        facts = {
            line.split()[0]: line for line in text.splitlines() if line[:4] == "    "
        }

        assert text.startswith(f"#{story} ")
        for expected in (
            "ALLOW",
            f"task      {active} · alice@example.com via ledger-bot",
            '"Pay December\'s supplier invoices"',
            "approved by controller@example.com (controller) at ",
            ': "fits the request" (#',
            'reasoning "ACME invoice 42 is due" (#',
            'POST /payments {"body":{"amount":20000,"vendor":"acme"}}',
            "credential finance-api-key",
            "allow by scope:pay-known-vendors:approval",
            f"policy set {policy['digest'][:12]} (#{policy['index']})",
            "granted by controller@example.com (controller) at ",
            ': "checked" (#',
            "names this exact request (digest matches)",
            "200, 17 bytes in 4.2 ms",
        ):
            assert expected in text, expected
        assert facts["proof"].endswith(": verified"), facts["proof"]
        assert "NOT proven" not in text

    def test_json_story(self, proctor: Proctor, story: int, active: str) -> None:
        """--json carries the same parts, each naming the entry it came from, and
        every cited entry proven against the signed checkpoint."""
        told = proctor.json("explain", str(story))
        types = {e["index"]: e["type"] for e in proctor.entries()}
        policy = self.published(proctor)
        task, approval = told["task"], told["approval"]

        assert task["id"] == active
        assert task["user"] == "alice@example.com"
        assert task["request"] == "Pay December's supplier invoices"
        assert types[task["opened"]] == kinds.TASK_OPENED
        assert task["scope_approval"]["approver"] == "controller@example.com"
        assert types[task["scope_approval"]["index"]] == kinds.TASK_APPROVED
        assert [step["text"] for step in told["reasoning"]] == [
            "ACME invoice 42 is due"
        ]
        assert told["request"]["path"] == "/payments"
        assert told["credential"] == "finance-api-key"
        assert told["policies"] == ["scope:pay-known-vendors:approval"]
        assert told["policy_set"] == policy["digest"]
        assert told["policy"]["index"] == policy["index"]
        assert told["policy"]["matches"] is True
        assert types[approval["requested"]] == kinds.APPROVAL_REQUESTED
        assert [(s["approver"], types[s["index"]]) for s in approval["signoffs"]] == [
            ("controller@example.com", kinds.APPROVAL_GRANTED)
        ]
        assert approval["binds"] is True
        assert told["completion"]["status"] == 200
        assert told["errors"] == []
        assert {p["index"] for p in told["proofs"]} == set(told["evidence"].values())
        assert all(p["verified"] for p in told["proofs"]), told["proofs"]

    def test_a_completed_call_leads_to_its_decision(
        self, proctor: Proctor, story: int
    ) -> None:
        """Explaining the call.completed entry explains its decision."""
        completed = next(
            e["index"] for e in proctor.entries() if e["type"] == kinds.CALL_COMPLETED
        )
        told = proctor.json("explain", str(completed))

        assert told["index"] == story
        assert told["asked"] == completed

    def test_waiting_decision_shows_its_request(
        self, proctor: Proctor, active: str
    ) -> None:
        """A decision that asked for approval names the request it opened, and no
        outcome."""
        approval, decision = ask_approval(proctor.home, active, 20000)
        text = proctor.ok("explain", str(decision)).out

        assert text.startswith(f"#{decision} ")
        assert "HELD" in text
        assert f"approval  {approval} · pending · asked of controller (#" in text
        assert "    outcome" not in text

    def test_other_entries_are_bad_usage(self, proctor: Proctor, active: str) -> None:
        """An entry that is not about a call, or beyond the ledger, exits 2."""
        opened = proctor("explain", "0")
        beyond = proctor("explain", "9999")

        assert opened.code == 2
        assert "explain follows decisions" in opened.err
        assert beyond.code == 2
        assert "no entry 9999" in beyond.err
