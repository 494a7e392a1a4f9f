"""Decisions: allow in scope, breach out of it, organisation forbids, approvals, and
every way a decision fails closed, over the finance and git example policies."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cedarpy
import pytest

from proctor.errors import PolicyError
from proctor.policy import (
    ActiveTask,
    Decision,
    Engine,
    EngineCache,
    OrgPolicies,
    Outcome,
    Request,
    Scope,
)
from proctor.policy.cedar import digest_parts

ASSETS = Path(__file__).resolve().parents[2] / "assets" / "policy"
READ = 'Payments::Action::"ReadInvoice"'
PAY = 'Payments::Action::"CreatePayment"'
VENDOR = 'Payments::Action::"CreateVendor"'
OPS = 'Payments::Account::"ops"'
INVOICE = 'Payments::Invoice::"inv-1"'
STATUS = 'mcp::git::Action::"git_status"'
COMMIT = 'mcp::git::Action::"git_commit"'
REPO = 'mcp::git::Repository::"proctor"'
IN_REPO = {"args": {"repo_path": "/srv/repos/proctor"}}

Decide = Callable[..., Decision]


def scope_file(name: str) -> Scope:
    return Scope.from_toml((ASSETS / "scopes" / f"{name}.toml").read_text())


TASKS = {
    "invoices": ("ledger-bot", "alice"),
    "treasury": ("ledger-bot", "bob"),
    "repo": ("coder", "carol"),
}


@pytest.fixture(scope="module")
def org() -> OrgPolicies:
    return OrgPolicies.load(ASSETS / "org")


@pytest.fixture(scope="module")
def engine(org: OrgPolicies) -> Engine:
    tasks = [
        ActiveTask(task, agent, user, scope_file(task))
        for task, (agent, user) in TASKS.items()
    ]
    return Engine(org, tasks)


@pytest.fixture
def decide(engine: Engine) -> Decide:
    """Decide for a task with its own agent and user unless told otherwise."""

    def run(task: str, action: str, resource: str, **fields: Any) -> Decision:
        agent, user = TASKS.get(task, ("ledger-bot", "alice"))
        return engine.decide(
            Request(
                agent=fields.pop("agent", agent),
                user=fields.pop("user", user),
                task=task,
                action=action,
                resource=resource,
                context=fields.pop("context", {}),
                approvals=frozenset(fields.pop("approvals", ())),
            )
        )

    return run


def payment(amount: int, vendor: str = "acme") -> dict[str, object]:
    return {"amount": amount, "vendor": vendor}


class TestAllow:
    """A call the scope permits and nothing forbids goes ahead."""

    def test_reading_an_invoice_is_allowed(self, decide: Decide) -> None:
        """A call the scope permits and nothing forbids is allowed, naming it."""
        decision = decide("invoices", READ, INVOICE)

        assert decision.outcome is Outcome.ALLOW
        assert decision.is_allowed
        assert decision.policy_ids == ("scope:read-invoices",)
        assert not decision.is_breach

    def test_a_small_payment_is_allowed(self, decide: Decide) -> None:
        """A payment within every limit needs no approval."""
        decision = decide("invoices", PAY, OPS, context=payment(500))

        assert decision.outcome is Outcome.ALLOW
        assert decision.policy_ids == ("scope:pay-known-vendors",)

    def test_a_git_status_is_allowed(self, decide: Decide) -> None:
        """An MCP tool call in scope, on a repository the organisation allows."""
        decision = decide("repo", STATUS, REPO, context=IN_REPO)

        assert decision.outcome is Outcome.ALLOW
        assert decision.policy_ids == ("scope:inspect",)

    def test_a_decision_names_the_policy_set_and_scope(
        self, decide: Decide, org: OrgPolicies
    ) -> None:
        """Every decision carries the organisation digest and the scope digest."""
        decision = decide("invoices", READ, INVOICE)

        assert decision.policy_set == org.digest
        assert decision.scope == scope_file("invoices").digest


class TestBreach:
    """A call the scope does not permit is denied and flagged as a breach."""

    @pytest.mark.parametrize(
        ("action", "resource", "context"),
        [
            (PAY, OPS, payment(60000)),
            (PAY, OPS, payment(500, "mallory-holdings")),
            (PAY, 'Payments::Account::"legacy"', payment(500)),
            (STATUS, REPO, IN_REPO),
        ],
    )
    def test_a_call_outside_the_scope_is_a_breach(
        self, decide: Decide, action: str, resource: str, context: dict[str, object]
    ) -> None:
        """Over the limit, an unknown vendor, another account, another service."""
        decision = decide("invoices", action, resource, context=context)

        assert decision.outcome is Outcome.DENY
        assert decision.is_breach
        assert decision.reason == "outside the scope of task 'invoices'"

    def test_a_breach_is_flagged_even_when_the_organisation_forbids_too(
        self, decide: Decide
    ) -> None:
        """Creating a vendor is out of scope: a breach, naming the forbid as well."""
        decision = decide("invoices", VENDOR, OPS, context={"vendor": "new"})

        assert decision.is_breach
        assert decision.policy_ids == ("org-no-agent-vendors",)

    def test_a_commit_outside_the_scope_is_a_breach_not_an_approval(
        self, decide: Decide
    ) -> None:
        """An approval cannot make an out-of-scope call in scope."""
        context = {"args": {"repo_path": "/srv/repos/proctor", "message": "x"}}
        decision = decide(
            "treasury", COMMIT, REPO, context=context, approvals=["maintainer"]
        )

        assert decision.is_breach


class TestOrganisationForbids:
    """Organisation forbids deny calls in scope without a breach."""

    def test_an_organisation_forbid_denies_a_call_in_scope(
        self, decide: Decide
    ) -> None:
        """The treasury scope adds vendors, the organisation forbids it: no breach."""
        decision = decide("treasury", VENDOR, OPS, context={"vendor": "new"})

        assert decision.outcome is Outcome.DENY
        assert not decision.is_breach
        assert decision.policy_ids == ("org-no-agent-vendors",)
        assert decision.reason == "forbidden by org-no-agent-vendors"

    def test_a_frozen_account_is_never_paid_from(self, decide: Decide) -> None:
        """An entity attribute from entities.json decides the forbid."""
        account = 'Payments::Account::"legacy"'
        decision = decide("treasury", PAY, account, context=payment(10))

        assert decision.policy_ids == ("org-frozen-accounts",)
        assert not decision.is_breach

    def test_only_finance_agents_pay(self, org: OrgPolicies) -> None:
        """An agent outside the finance group is refused by group membership."""
        engine = Engine(
            org, [ActiveTask("t", "helper-bot", "bob", scope_file("treasury"))]
        )
        request = Request("helper-bot", "bob", "t", PAY, OPS, payment(10))

        assert engine.decide(request).policy_ids == ("org-payments-by-finance-bots",)

    def test_a_repository_outside_srv_is_refused(self, decide: Decide) -> None:
        """A tool argument decides the organisation's forbid."""
        context = {"args": {"repo_path": "/etc"}}
        decision = decide("repo", STATUS, REPO, context=context)

        assert decision.policy_ids == ("org-git-under-srv",)
        assert not decision.is_breach


class TestApproval:
    """Approval-gated policies give needs-approval until the roles approve."""

    def test_a_payment_over_the_scope_threshold_needs_a_controller(
        self, decide: Decide
    ) -> None:
        """The scope's approval-gated permit gives needs-approval naming the role."""
        decision = decide("invoices", PAY, OPS, context=payment(20000))

        assert decision.outcome is Outcome.NEEDS_APPROVAL
        assert decision.approvers == ("controller",)
        assert decision.policy_ids == ("scope:pay-known-vendors:approval",)
        assert not decision.is_allowed

    def test_the_controllers_approval_allows_it(self, decide: Decide) -> None:
        """Re-deciding with the approval bound to the request allows it."""
        decision = decide(
            "invoices", PAY, OPS, context=payment(20000), approvals=["controller"]
        )

        assert decision.outcome is Outcome.ALLOW
        assert decision.policy_ids == ("scope:pay-known-vendors:approval",)
        assert decision.reason.endswith("with approval by controller")

    def test_another_roles_approval_does_not_count(self, decide: Decide) -> None:
        """An approval by the wrong role leaves the request waiting."""
        decision = decide(
            "invoices", PAY, OPS, context=payment(20000), approvals=["cfo"]
        )

        assert decision.outcome is Outcome.NEEDS_APPROVAL
        assert decision.approvers == ("controller",)

    def test_the_organisation_can_require_approval(self, decide: Decide) -> None:
        """An approval-gated organisation forbid gives needs-approval by its role."""
        decision = decide("treasury", PAY, OPS, context=payment(200000))

        assert decision.outcome is Outcome.NEEDS_APPROVAL
        assert decision.approvers == ("cfo",)
        assert decision.policy_ids == ("org-cfo-over-100k",)

    def test_the_organisations_approver_lifts_its_forbid(self, decide: Decide) -> None:
        """With the CFO's approval the scope's permit decides."""
        decision = decide(
            "treasury", PAY, OPS, context=payment(200000), approvals=["cfo"]
        )

        assert decision.outcome is Outcome.ALLOW
        assert decision.policy_ids == ("scope:pay-anyone",)

    def test_a_commit_needs_a_maintainer(self, decide: Decide) -> None:
        """The git example: commits wait for a maintainer, then go through."""
        context = {"args": {"repo_path": "/srv/repos/proctor", "message": "tidy"}}
        waiting = decide("repo", COMMIT, REPO, context=context)
        approved = decide(
            "repo", COMMIT, REPO, context=context, approvals=["maintainer"]
        )

        assert waiting.approvers == ("maintainer",)
        assert approved.outcome is Outcome.ALLOW

    def test_both_the_scope_and_the_organisation_may_require_approval(
        self, org: OrgPolicies
    ) -> None:
        """Every gate's role is needed; each approval narrows what is missing."""
        scope = Scope.from_toml(
            f"[[allow]]\nid = 'pay'\naction = '{PAY}'\n"
            "approval = { role = 'controller', when = { amount = { over = 10000 } } }\n"
        )
        engine = Engine(org, [ActiveTask("t", "ledger-bot", "bob", scope)])

        def approvers(*roles: str) -> tuple[str, ...]:
            request = Request(
                "ledger-bot", "bob", "t", PAY, OPS, payment(200000), frozenset(roles)
            )
            decision = engine.decide(request)
            return decision.approvers if not decision.is_allowed else ("allowed",)

        assert approvers() == ("cfo", "controller")
        assert approvers("controller") == ("cfo",)
        assert approvers("cfo") == ("controller",)
        assert approvers("cfo", "controller") == ("allowed",)

    def test_an_approval_does_not_widen_a_hard_forbid(self, decide: Decide) -> None:
        """A forbid without @approval stays a deny whatever approvals are given."""
        decision = decide(
            "treasury", VENDOR, OPS, context={"vendor": "x"}, approvals=["cfo"]
        )

        assert decision.outcome is Outcome.DENY


class TestFailClosed:
    """Whatever cannot be decided cleanly is denied, saying why."""

    def test_an_unknown_principal_is_denied(self, decide: Decide) -> None:
        """Cedar would silently deny; Proctor denies and says whom it did not know."""
        decision = decide("invoices", READ, INVOICE, agent="mallory")

        assert decision.outcome is Outcome.DENY
        assert decision.reason == 'unknown principal Proctor::Agent::"mallory"'
        assert not decision.is_breach

    def test_a_task_without_an_active_scope_is_denied(self, decide: Decide) -> None:
        """No scope in force for the task: deny, naming the task."""
        decision = decide("closed-task", READ, INVOICE)

        assert decision.reason == "task 'closed-task' has no active scope"
        assert decision.scope is None

    def test_another_tasks_agent_is_denied(self, decide: Decide) -> None:
        """A known agent using another task's id is refused."""
        decision = decide("repo", READ, INVOICE, agent="ledger-bot", user="carol")

        assert decision.reason == "agent 'ledger-bot' is not the agent of task 'repo'"

    def test_another_user_is_denied(self, decide: Decide) -> None:
        """The user must be the one who started the task."""
        decision = decide("invoices", READ, INVOICE, user="mallory")

        assert decision.reason == "user 'mallory' did not start task 'invoices'"

    @pytest.mark.parametrize("field", ["task", "user", "approved"])
    def test_a_call_cannot_set_proctors_context_fields(
        self, decide: Decide, field: str
    ) -> None:
        """task, user and approved come from Proctor, never from the call."""
        decision = decide("invoices", READ, INVOICE, context={field: True})

        assert decision.outcome is Outcome.DENY
        assert (
            decision.reason
            == f"context field {field} is set by proctor, not by the call"
        )

    def test_an_empty_policy_set_denies(self) -> None:
        """No organisation policies and an empty scope: deny, saying so."""
        schema = (ASSETS / "org" / "schema.cedarschema").read_text()
        org = OrgPolicies.from_parts({"schema.cedarschema": schema})
        engine = Engine(org, [ActiveTask("t", "bot", "u", Scope.from_toml(""))])

        decision = engine.decide(Request("bot", "u", "t", READ, INVOICE))

        assert decision.outcome is Outcome.DENY
        assert decision.reason == "the scope of task 't' is empty"

    def test_a_policy_failing_to_evaluate_denies_with_the_error(
        self, decide: Decide
    ) -> None:
        """A forbid reading an account missing from the entities is an error: deny."""
        ghost = 'Payments::Account::"ghost"'
        decision = decide("treasury", PAY, ghost, context=payment(10))

        assert decision.outcome is Outcome.DENY
        assert not decision.is_breach
        assert decision.reason == "a policy failed to evaluate"
        assert decision.errors == (
            "error while evaluating policy `org-frozen-accounts`: "
            'entity `Payments::Account::"ghost"` does not exist',
        )

    def test_an_error_in_the_scope_itself_denies(self, org: OrgPolicies) -> None:
        """An overflowing scope condition is an error, not a breach."""
        scope = Scope.from_cedar(
            f'@id("big") permit (principal, action == {PAY}, resource)'
            " when { context.amount * 4611686018427387904 > 0 };"
        )
        engine = Engine(org, [ActiveTask("t", "ledger-bot", "bob", scope)])

        decision = engine.decide(
            Request("ledger-bot", "bob", "t", PAY, OPS, payment(10))
        )

        assert decision.outcome is Outcome.DENY
        assert not decision.is_breach
        assert "overflow" in decision.errors[0]
        assert "`big`" in decision.errors[0]

    @pytest.mark.parametrize(
        ("action", "context", "error"),
        [
            (PAY, {"amount": 10}, "attribute `vendor`"),
            (PAY, {"amount": "10", "vendor": "acme"}, "is not valid for"),
            (PAY, {"amount": 2**70, "vendor": "acme"}, "failed to build request"),
            (PAY, {"amount": 1.5, "vendor": "acme"}, "failed to build request"),
            (READ, {"note": "extra"}, "`note` should not exist"),
            ('Payments::Action::"Refund"', {}, "does not exist in the supplied schema"),
            ('Payments::Action::"ReadInvoice', {}, "parse action"),
        ],
    )
    def test_a_malformed_request_is_denied(
        self, decide: Decide, action: str, context: dict[str, object], error: str
    ) -> None:
        """Cedar's NoDecision (schema mismatch, bad uid) is a deny with its error."""
        decision = decide("invoices", action, OPS, context=context)

        assert decision.outcome is Outcome.DENY
        assert decision.reason == "cedar could not evaluate the request"
        assert error in decision.errors[0]

    def test_a_context_that_is_not_json_is_denied(self, decide: Decide) -> None:
        """A value the binding cannot even serialise is a deny, not an exception."""
        decision = decide("invoices", READ, INVOICE, context={"when": object()})

        assert decision.outcome is Outcome.DENY
        assert "not JSON serializable" in decision.errors[0]

    def test_an_entity_escape_in_a_tool_argument_is_refused(
        self, decide: Decide
    ) -> None:
        """An argument shaped like a Cedar entity reference fails the schema."""
        forged = {"__entity": {"type": "Proctor::Agent", "id": "admin"}}
        context = {"args": {"repo_path": forged}}
        decision = decide("repo", STATUS, REPO, context=context)

        assert decision.outcome is Outcome.DENY
        assert decision.reason == "cedar could not evaluate the request"


class TestLoading:
    """Unusable policies and scopes are refused before any decision."""

    def test_a_policy_without_an_id_is_refused(self, tmp_path: Path) -> None:
        """cedarpy names policies by position unless every one has an @id."""
        folder = copy_org(tmp_path)
        (folder / "extra.cedar").write_text("forbid (principal, action, resource);\n")

        with pytest.raises(
            PolicyError, match=r"extra.cedar: forbid policy #1 has no @id"
        ):
            OrgPolicies.load(folder)

    def test_a_scope_naming_an_unknown_action_is_refused(
        self, org: OrgPolicies
    ) -> None:
        """Scopes are type-checked against the schema when the engine is built."""
        scope = Scope.from_toml("[[allow]]\naction = 'Payments::Action::\"Refund\"'\n")

        with pytest.raises(PolicyError, match="unrecognized action"):
            Engine(org, [ActiveTask("t", "bot", "u", scope)])

    def test_a_scope_may_not_reuse_an_organisation_id(self, org: OrgPolicies) -> None:
        """Policy ids stay unambiguous across the organisation and the scope."""
        policy = f"permit (principal, action == {READ}, resource);"
        scope = Scope.from_cedar(f'@id("org-no-agent-vendors") {policy}')

        with pytest.raises(PolicyError, match="also an organisation policy"):
            Engine(org, [ActiveTask("t", "bot", "u", scope)])

    def test_a_task_may_be_active_once(self, org: OrgPolicies) -> None:
        """Two active tasks with one id are refused."""
        task = ActiveTask("t", "bot", "u", scope_file("invoices"))

        with pytest.raises(PolicyError, match="active twice"):
            Engine(org, [task, task])

    def test_an_agent_clashing_with_the_schema_is_refused(self, tmp_path: Path) -> None:
        """Agents need no required attributes: Proctor adds them per task."""
        folder = copy_org(tmp_path)
        schema = (folder / "schema.cedarschema").read_text()
        schema = schema.replace(
            "entity Agent in [AgentGroup];", "entity Agent { team: String };"
        )
        (folder / "schema.cedarschema").write_text(schema)
        (folder / "entities.json").unlink()

        with pytest.raises(PolicyError, match="without required attributes"):
            OrgPolicies.load(folder)


class TestDigest:
    """The policy-set digest is stable and changes with any text."""

    def test_the_digest_is_stable(self, org: OrgPolicies) -> None:
        """Loading the same folder twice gives the same digest."""
        assert OrgPolicies.load(ASSETS / "org").digest == org.digest

    def test_the_digest_covers_every_file(self, org: OrgPolicies) -> None:
        """The digest is the canonical digest of the schema, policies and entities."""
        assert sorted(org.parts) == [
            "entities.json",
            "git.cedar",
            "payments.cedar",
            "schema.cedarschema",
        ]
        assert org.digest == digest_parts(org.parts)

    @pytest.mark.parametrize(
        "name", ["payments.cedar", "schema.cedarschema", "entities.json"]
    )
    def test_any_change_changes_the_digest(
        self, tmp_path: Path, org: OrgPolicies, name: str
    ) -> None:
        """Even a new comment or a trailing newline gives a different digest."""
        folder = copy_org(tmp_path)
        with (folder / name).open("a") as handle:
            handle.write("\n")

        assert OrgPolicies.load(folder).digest != org.digest

    def test_parts_cannot_run_into_each_other(self) -> None:
        """Names and lengths are framed, so shifting text between parts changes it."""
        assert digest_parts({"a": "bc"}) != digest_parts({"ab": "c"})
        assert digest_parts({"a": "b", "c": ""}) != digest_parts({"a": "b\nc\n0\n"})

    def test_a_part_name_with_a_line_feed_is_refused(self) -> None:
        """The framing relies on names without line feeds."""
        with pytest.raises(PolicyError, match="line feed"):
            digest_parts({"a\nb": ""})


class CountingParses:
    """Records every Cedar parse made through cedarpy's handle constructors."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[str] = []
        # PolicySet and Schema are Rust types: swap the module attribute the engine
        # reads. Entities is a Python class the binding itself names: patch methods.
        for name in ("PolicySet", "Schema"):
            monkeypatch.setattr(
                cedarpy, name, self._proxy(name, getattr(cedarpy, name))
            )
        for method in ("from_json_str", "with_added_json_str"):
            original = getattr(cedarpy.Entities, method)
            monkeypatch.setattr(cedarpy.Entities, method, self._spy(method, original))

    def _spy(self, label: str, function: Callable[..., Any]) -> Callable[..., Any]:
        def spy(*args: Any, **kwargs: Any) -> Any:
            self.calls.append(label)
            return function(*args, **kwargs)

        return spy

    def _proxy(self, name: str, handle: Any) -> Any:
        return type(
            name,
            (),
            {
                "from_str": staticmethod(
                    self._spy(f"{name}.from_str", handle.from_str)
                ),
                "from_json_str": staticmethod(
                    self._spy(f"{name}.from_json_str", handle.from_json_str)
                ),
            },
        )


class TestParseOnce:
    """Cedar text is parsed once per policy set and scope, never per call."""

    def test_deciding_parses_nothing(
        self, engine: Engine, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Decisions reuse the handles built with the engine: no parse per call."""
        parses = CountingParses(monkeypatch)
        request = Request("ledger-bot", "alice", "invoices", PAY, OPS, payment(20000))

        outcomes = {engine.decide(request).outcome for _ in range(50)}

        assert outcomes == {Outcome.NEEDS_APPROVAL}
        assert parses.calls == []

    def test_the_cache_keeps_one_engine_per_policy_set_and_scopes(
        self, org: OrgPolicies
    ) -> None:
        """The same organisation digest and active scopes give the same engine."""
        cache = EngineCache()
        tasks = [ActiveTask("t", "ledger-bot", "alice", scope_file("invoices"))]

        assert cache.get(org, tasks) is cache.get(org, list(tasks))

    def test_a_new_task_rebuilds_parsing_only_its_scope(
        self, org: OrgPolicies, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A rebuild reuses parsed scopes and parses just the new one."""
        cache = EngineCache()
        first = ActiveTask("t1", "ledger-bot", "alice", scope_file("invoices"))
        before = cache.get(org, [first])
        parses = CountingParses(monkeypatch)

        second = ActiveTask("t2", "coder", "carol", scope_file("repo"))
        after = cache.get(org, [first, second])

        assert after is not before
        assert parses.calls == ["PolicySet.from_str", "with_added_json_str"]
        request = Request("coder", "carol", "t2", STATUS, REPO, IN_REPO)
        assert after.decide(request).is_allowed

    def test_a_new_policy_set_rebuilds_the_engine(
        self, tmp_path: Path, org: OrgPolicies
    ) -> None:
        """A published policy set change gives a new engine with the new digest."""
        cache = EngineCache()
        tasks = [ActiveTask("t", "ledger-bot", "alice", scope_file("invoices"))]
        before = cache.get(org, tasks)
        folder = copy_org(tmp_path)
        (folder / "payments.cedar").unlink()

        after = cache.get(OrgPolicies.load(folder), tasks)

        assert after is not before
        assert after.org.digest != before.org.digest


def copy_org(tmp_path: Path) -> Path:
    folder = tmp_path / "policies"
    shutil.copytree(ASSETS / "org", folder)
    return folder
