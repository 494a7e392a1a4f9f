"""Scopes: the TOML form compiles to Cedar permits, refuses what it cannot express,
and digests what Cedar will evaluate."""

from __future__ import annotations

from pathlib import Path

import cedarpy
import pytest
from hypothesis import given
from hypothesis import strategies as st

from proctor.errors import PolicyError
from proctor.policy.cedar import cedar_string, digest_parts
from proctor.policy.scope import Scope

ASSETS = Path(__file__).resolve().parents[2] / "assets" / "policy"
PAY = 'Payments::Action::"CreatePayment"'
READ = 'Payments::Action::"ReadInvoice"'
RULE = f"[[allow]]\naction = '{PAY}'\n"


def compile_toml(text: str) -> str:
    return Scope.from_toml(text).cedar


def allows(cedar: str, context: dict[str, object], action: str = PAY) -> bool:
    """Evaluate ``cedar`` for one request without a schema."""
    request = {
        "principal": 'Proctor::Agent::"bot"',
        "action": action,
        "resource": 'Payments::Account::"ops"',
        "context": {"approved": False, **context},
    }
    return bool(cedarpy.is_authorized(request, cedar, "[]").allowed)


class TestActions:
    """Rules name their actions and resource in the permit's scope."""

    def test_one_action_compiles_to_an_equality(self) -> None:
        """A single action uid becomes `action ==` in a permit with the rule's @id."""
        cedar = compile_toml(f"[[allow]]\nid = 'read'\naction = '{READ}'\n")

        assert '@id("scope:read")' in cedar
        assert f"action == {READ}" in cedar

    def test_several_actions_compile_to_a_list(self) -> None:
        """A list of actions becomes `action in [...]`."""
        cedar = compile_toml(f"[[allow]]\naction = ['{READ}', '{PAY}']\n")

        assert f"action in [{READ}, {PAY}]" in cedar

    def test_rules_are_numbered_when_they_have_no_id(self) -> None:
        """Rules without an id are named allow-<n> in order."""
        cedar = compile_toml(
            f"[[allow]]\naction = '{READ}'\n[[allow]]\naction = '{PAY}'\n"
        )

        assert '@id("scope:allow-1")' in cedar
        assert '@id("scope:allow-2")' in cedar

    def test_resource_limits_the_permit_to_an_entity(self) -> None:
        """A resource uid becomes `resource in` that entity."""
        text = f"[[allow]]\naction = '{PAY}'\nresource = 'Payments::Account::\"ops\"'\n"

        assert 'resource in Payments::Account::"ops"' in compile_toml(text)

    def test_a_rule_without_limits_permits_any_context(self) -> None:
        """A rule without when permits its actions whatever the call carries."""
        cedar = compile_toml(f"[[allow]]\naction = '{PAY}'\n")

        assert allows(cedar, {"amount": 10**9})


class TestLimits:
    """when tables become conditions on the context."""

    SCOPE = f"""
[[allow]]
action = '{PAY}'
when = {{ amount = {{ min = 10, max = 500 }}, vendor = {{ in = ["acme", "globex"] }} }}
"""

    @pytest.mark.parametrize(
        ("context", "allowed"),
        [
            ({"amount": 10, "vendor": "acme"}, True),
            ({"amount": 500, "vendor": "globex"}, True),
            ({"amount": 9, "vendor": "acme"}, False),
            ({"amount": 501, "vendor": "acme"}, False),
            ({"amount": 100, "vendor": "mallory"}, False),
            ({"vendor": "acme"}, False),
        ],
    )
    def test_limits_bound_the_context(
        self, context: dict[str, object], allowed: bool
    ) -> None:
        """min/max are inclusive, in is membership, and a missing field is refused."""
        assert allows(compile_toml(self.SCOPE), context) is allowed

    @pytest.mark.parametrize(
        ("tests", "value", "allowed"),
        [
            ("over = 5", 6, True),
            ("over = 5", 5, False),
            ("under = 5", 4, True),
            ("under = 5", 5, False),
            ("eq = 5", 5, True),
            ("eq = 5", 6, False),
            ("in = [1, 2]", 2, True),
            ('eq = "x"', "x", True),
            ("eq = true", True, True),
            ('like = "acme-*"', "acme-eu", True),
            ('like = "acme-*"', "globex", False),
        ],
    )
    def test_each_test_means_what_the_docstring_says(
        self, tests: str, value: object, allowed: bool
    ) -> None:
        """over/under are exclusive, eq is equality and like matches * as anything."""
        cedar = compile_toml(RULE + f"when.field = {{ {tests} }}\n")

        assert allows(cedar, {"field": value}) is allowed

    def test_dotted_fields_reach_into_records_with_guards(self) -> None:
        """args.repo_path checks each level with `has` before reading it."""
        cedar = compile_toml(
            f"[[allow]]\naction = '{PAY}'\n"
            'when = { args.repo_path = { like = "/srv/*" } }\n'
        )

        assert "context has args" in cedar
        assert "context.args has repo_path" in cedar
        assert allows(cedar, {"args": {"repo_path": "/srv/x"}})
        assert not allows(cedar, {"args": {}})

    def test_odd_field_names_are_quoted(self) -> None:
        """A field that is not a Cedar identifier is read with a string key."""
        cedar = compile_toml(RULE + 'when = { "dry-run" = { eq = true } }\n')

        assert 'context["dry-run"]' in cedar
        assert allows(cedar, {"dry-run": True})

    def test_quoted_dotted_keys_split_like_nested_tables(self) -> None:
        """A quoted "a.b" key and a nested table compile to the same Cedar."""
        quoted = compile_toml(RULE + 'when = { "args.x" = { eq = 1 } }\n')
        nested = compile_toml(RULE + "when.args.x = { eq = 1 }\n")

        assert quoted == nested


class TestApproval:
    """approval compiles to the @approval permit pattern."""

    def test_a_role_gates_every_call_of_the_rule(self) -> None:
        """approval = "role" annotates the permit and requires context.approved."""
        cedar = compile_toml(RULE + "approval = 'controller'\n")

        assert '@approval("controller")' in cedar
        assert not allows(cedar, {})
        assert allows(cedar, {"approved": True})

    def test_a_conditional_approval_splits_the_rule(self) -> None:
        """approval with when gives a plain permit and an approval-gated one."""
        cedar = compile_toml(
            f"[[allow]]\nid = 'pay'\naction = '{PAY}'\n"
            "when = { amount = { max = 50000 } }\n"
            "approval = { role = 'controller', when = { amount = { over = 10000 } } }\n"
        )

        assert '@id("scope:pay")' in cedar
        assert '@id("scope:pay:approval")' in cedar
        assert allows(cedar, {"amount": 10000})
        assert not allows(cedar, {"amount": 10001})
        assert allows(cedar, {"amount": 10001, "approved": True})
        assert not allows(cedar, {"amount": 50001, "approved": True})

    def test_the_plain_permit_needs_the_fields_the_approval_reads(self) -> None:
        """A call without the field the approval condition tests is not let through."""
        cedar = compile_toml(
            f"[[allow]]\naction = '{PAY}'\n"
            "approval = { role = 'controller', when = { amount = { over = 10000 } } }\n"
        )

        assert not allows(cedar, {})


class TestRawCedar:
    """A scope may carry or be raw Cedar."""

    def test_raw_cedar_is_appended(self) -> None:
        """The cedar key's policies follow the compiled rules unchanged."""
        raw = '@id("no-ops") forbid (principal, action, resource);\n'
        cedar = compile_toml(f"cedar = '''\n{raw}'''\n[[allow]]\naction = '{READ}'\n")

        assert cedar.endswith(raw)

    def test_a_scope_may_be_written_in_cedar(self) -> None:
        """Scope.from_cedar keeps the text as the scope."""
        text = f'@id("read") permit (principal, action == {READ}, resource);'

        assert Scope.from_cedar(text).cedar == text

    def test_an_empty_scope_compiles_to_nothing(self) -> None:
        """A scope with no rules is empty Cedar; the engine denies under it."""
        assert Scope.from_toml("").cedar == ""


class TestRefusals:
    """A scope the form cannot express is refused with a reason."""

    @pytest.mark.parametrize(
        ("text", "match"),
        [
            ("alow = []", "unknown keys: alow"),
            ("allow = 3", "list of tables"),
            ("cedar = 3", "cedar must be a string"),
            ("[[allow]]\nid = 'x'", "needs action"),
            ("[[allow]]\naction = []", "needs action"),
            ("[[allow]]\naction = 'ReadInvoice'", "entity uid"),
            (f"[[allow]]\naction = '{READ}'\nresource = 'ops'", "resource must be"),
            (f"[[allow]]\naction = '{READ}'\nverb = 1", "unknown keys: verb"),
            (f"[[allow]]\nid = 'a b'\naction = '{READ}'", "id must be"),
            (
                f"[[allow]]\nid = 'a'\naction = '{READ}'\n[[allow]]\nid = 'a'\n",
                "used twice",
            ),
            (RULE + "when = 3", "table of context fields"),
            (RULE + "when.amount = 3", "needs a table of tests"),
            (
                RULE + "when.amount = { most = 3 }",
                "unknown tests",
            ),
            (RULE + "when.amount = { max = '3' }", "integer"),
            (RULE + "when.amount = { max = true }", "integer"),
            (RULE + "when.amount = { max = 1e3 }", "integer"),
            (
                RULE + "when.amount = { max = 9223372036854775808 }",
                "64-bit",
            ),
            (
                RULE + "when.vendor = { in = [] }",
                "non-empty list",
            ),
            (
                RULE + "when.vendor = { in = ['a', 1] }",
                "strings or of integers",
            ),
            (RULE + "when.vendor = { eq = [1] }", "eq needs"),
            (
                RULE + "when.vendor = { like = 1 }",
                "string pattern",
            ),
            (
                RULE + "when.approved = { eq = true }",
                "reserved field approved",
            ),
            (
                RULE + "when.args = { x = { eq = 1 }, max = 3 }",
                "mixes tests",
            ),
            (
                RULE + "when = { 'a..b' = { eq = 1 } }",
                "empty field name",
            ),
            (RULE + "approval = 3", "approval must be"),
            (
                RULE + "approval = { who = 'x' }",
                "approval must be",
            ),
            (RULE + "approval = ' '", "approval needs a role"),
            (
                RULE + "approval = { role = 'c', when = {} }",
                "sets no condition",
            ),
            ("[[allow", "not valid toml"),
        ],
    )
    def test_a_wrong_scope_is_refused(self, text: str, match: str) -> None:
        """Every mistake is a PolicyError naming what is wrong."""
        with pytest.raises(PolicyError, match=match):
            Scope.from_toml(text)

    def test_raw_cedar_without_an_id_is_refused(self) -> None:
        """Every policy in a scope carries an @id, raw Cedar included."""
        with pytest.raises(PolicyError, match="has no @id"):
            Scope.from_toml("cedar = 'permit (principal, action, resource);'")

    def test_raw_cedar_that_does_not_parse_is_refused(self) -> None:
        """Unparsable raw Cedar is refused when the scope is compiled."""
        with pytest.raises(PolicyError, match="cannot parse cedar"):
            Scope.from_cedar("permit (principal, action, resource) when {")

    def test_raw_cedar_may_not_reuse_a_rule_id(self) -> None:
        """A raw policy named like a compiled rule is a duplicate @id."""
        raw = '@id("scope:allow-1") forbid (principal, action, resource);'
        with pytest.raises(PolicyError, match="duplicate @id"):
            Scope.from_toml(f"cedar = '{raw}'\n[[allow]]\naction = '{READ}'\n")

    def test_an_approval_gate_without_a_role_is_refused(self) -> None:
        """Raw Cedar that reads context.approved must say who approves."""
        raw = '@id("x") permit (principal, action, resource) when { context.approved };'
        with pytest.raises(PolicyError, match="no @approval"):
            Scope.from_cedar(raw)


class TestDigest:
    """The scope digest follows the compiled Cedar."""

    def test_the_digest_covers_the_compiled_cedar(self) -> None:
        """The scope digest is the canonical digest of its Cedar under scope.cedar."""
        scope = Scope.from_toml((ASSETS / "scopes" / "invoices.toml").read_text())

        assert scope.digest == digest_parts({"scope.cedar": scope.cedar})

    def test_comments_do_not_change_the_digest(self) -> None:
        """Two TOML texts compiling to the same Cedar share a digest."""
        plain = Scope.from_toml(f"[[allow]]\naction = '{READ}'\n")
        commented = Scope.from_toml(f"# read only\n[[allow]]\naction = '{READ}' # ok\n")

        assert plain.digest == commented.digest
        assert plain.source != commented.source

    def test_a_changed_limit_changes_the_digest(self) -> None:
        """Raising a limit gives a different digest."""
        low = Scope.from_toml(RULE + "when.amount = { max = 5 }\n")
        high = Scope.from_toml(RULE + "when.amount = { max = 6 }\n")

        assert low.digest != high.digest


class TestStrings:
    """Strings reach Cedar unchanged."""

    @given(st.text(st.characters(exclude_categories=["Cs"])))
    def test_any_string_limit_matches_exactly_itself(self, value: str) -> None:
        """cedar_string escapes any text so Cedar compares it exactly."""
        literal = cedar_string(value)
        policy = (
            f"permit (principal, action, resource) when {{ context.v == {literal} }};"
        )

        assert allows(policy, {"v": value})
        assert not allows(policy, {"v": value + "x"})
