"""Policy tests: a file of requests and expected outcomes runs against the
organisation's policies and one scope, reporting each case that differs."""

from __future__ import annotations

from pathlib import Path

import pytest

from proctor.errors import PolicyError
from proctor.policy import Outcome, run_policy_tests

CASES = Path(__file__).resolve().parents[2] / "assets" / "policy" / "cases"

HEAD = """
policies = "{org}"
scope = "{scope}"
[task]
id = "t"
agent = "ledger-bot"
user = "alice"
"""
CASE = """
[[case]]
name = "read"
action = 'Payments::Action::"ReadInvoice"'
resource = 'Payments::Invoice::"inv-1"'
expect = "{expect}"
"""

MINIMAL = "[[case]]\nexpect = 'allow'\naction = 'a'\nresource = 'r'\n"


def write(tmp_path: Path, body: str, *, scope: str = "scopes/invoices.toml") -> Path:
    assets = CASES.parent
    path = tmp_path / "cases.toml"
    path.write_text(HEAD.format(org=assets / "org", scope=assets / scope) + body)
    return path


class TestRun:
    """Cases run and report their differences."""

    @pytest.mark.parametrize("name", ["invoices.toml", "invoices.json"])
    def test_the_example_cases_pass(self, name: str) -> None:
        """Every case in the example files meets its expectation."""
        results = run_policy_tests(CASES / name)

        assert results
        assert [result.failures for result in results if not result.passed] == []

    def test_a_wrong_expectation_is_reported(self, tmp_path: Path) -> None:
        """A case whose decision differs fails, saying what was expected and got."""
        [result] = run_policy_tests(write(tmp_path, CASE.format(expect="deny")))

        assert not result.passed
        assert result.failures == ("expected deny, got allow",)
        assert result.decision.outcome is Outcome.ALLOW

    def test_policy_ids_and_approvers_are_compared(self, tmp_path: Path) -> None:
        """Optional policy_ids and approvers must match the decision."""
        body = CASE.format(expect="allow") + 'policy_ids = ["x"]\napprovers = ["cfo"]\n'

        [result] = run_policy_tests(write(tmp_path, body))

        assert result.failures == (
            "expected policy_ids ['x'], got ['scope:read-invoices']",
            "expected approvers ['cfo'], got []",
        )

    def test_a_breach_is_not_a_plain_deny(self, tmp_path: Path) -> None:
        """expect = "deny" fails on a breach: the two are told apart."""
        body = CASE.format(expect="deny").replace("ReadInvoice", "CreateVendor")
        body = body.replace('Payments::Invoice::"inv-1"', 'Payments::Account::"ops"')
        body += 'context = { vendor = "x" }\n'

        [result] = run_policy_tests(write(tmp_path, body))

        assert result.failures == ("expected deny, got breach",)

    def test_a_scope_may_be_inline_or_cedar(self, tmp_path: Path) -> None:
        """The scope may be a table in the file or a .cedar file."""
        cedar = tmp_path / "scope.cedar"
        read = 'action == Payments::Action::"ReadInvoice"'
        cedar.write_text(f'@id("r") permit (principal, {read}, resource);')
        inline = tmp_path / "inline.toml"
        inline.write_text(
            f'policies = "{CASES.parent / "org"}"\n'
            "[[scope.allow]]\naction = 'Payments::Action::\"ReadInvoice\"'\n"
            + CASE.format(expect="allow")
        )

        from_cedar = run_policy_tests(
            write(tmp_path, CASE.format(expect="allow"), scope=str(cedar))
        )

        assert from_cedar[0].passed
        assert run_policy_tests(inline)[0].passed


class TestMalformed:
    """A malformed test file is refused."""

    @pytest.mark.parametrize(
        ("body", "match"),
        [
            ("", "no \\[\\[case\\]\\] to run"),
            ("[[case]]\nexpect = 'maybe'\n", "expect must be one of"),
            ("[[case]]\nexpect = 'allow'\nverb = 1\n", "unknown keys: verb"),
            ("[[case]]\nexpect = 'allow'\n", "needs action"),
            (f"{MINIMAL}context = 3\n", "context must be a table"),
            (f"{MINIMAL}approvals = 'x'\n", "approvals must be a list"),
        ],
    )
    def test_a_malformed_case_file_is_refused(
        self, tmp_path: Path, body: str, match: str
    ) -> None:
        """Mistakes in the file raise PolicyError naming the case."""
        with pytest.raises(PolicyError, match=match):
            run_policy_tests(write(tmp_path, body))

    def test_a_case_that_is_not_a_table_is_refused(self, tmp_path: Path) -> None:
        """Each case is a table (a JSON object)."""
        path = tmp_path / "cases.json"
        org, scope = CASES.parent / "org", CASES.parent / "scopes" / "invoices.toml"
        path.write_text(f'{{"policies": "{org}", "scope": "{scope}", "case": [3]}}')

        with pytest.raises(PolicyError, match="case #1 is not a table"):
            run_policy_tests(path)

    def test_a_file_that_does_not_parse_is_refused(self, tmp_path: Path) -> None:
        """Broken TOML or JSON raises PolicyError."""
        path = tmp_path / "cases.json"
        path.write_text("{")

        with pytest.raises(PolicyError, match="are malformed"):
            run_policy_tests(path)

    def test_a_missing_file_is_refused(self, tmp_path: Path) -> None:
        """A missing test file raises PolicyError."""
        with pytest.raises(PolicyError, match="cannot read policy tests"):
            run_policy_tests(tmp_path / "absent.toml")

    @pytest.mark.parametrize(
        ("head", "match"),
        [
            (
                'policies = "nowhere"\nscope = "s.toml"\n',
                "policies folder does not exist",
            ),
            (f'policies = "{CASES.parent / "org"}"\nscope = 3\n', "scope must name"),
            (
                f'policies = "{CASES.parent / "org"}"\nscope = "absent.toml"\n',
                "cannot read scope",
            ),
            (
                f'policies = "{CASES.parent / "org"}"\nscope = {{}}\ntask = 3\n',
                "must be a table",
            ),
        ],
    )
    def test_bad_policies_scope_or_task_are_refused(
        self, tmp_path: Path, head: str, match: str
    ) -> None:
        """The policies folder, the scope and [task] are checked first."""
        path = tmp_path / "cases.toml"
        path.write_text(head)

        with pytest.raises(PolicyError, match=match):
            run_policy_tests(path)
