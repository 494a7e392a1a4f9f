"""Organisation policies: `validate` names every problem in a policies folder, and
loading refuses what validation would report."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from proctor.errors import PolicyError
from proctor.policy import OrgPolicies, Problem, validate

ASSETS = Path(__file__).resolve().parents[2] / "assets" / "policy"


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """A private copy of the example organisation policies."""
    copy = tmp_path / "policies"
    shutil.copytree(ASSETS / "org", copy)
    return copy


def messages(problems: list[Problem]) -> list[str]:
    return [str(problem) for problem in problems]


class TestValidate:
    """validate lists every problem in a policies folder."""

    def test_the_example_policies_are_valid(self) -> None:
        """The finance and git examples have no problem."""
        assert validate(ASSETS / "org") == []

    def test_a_missing_folder_is_a_problem(self, tmp_path: Path) -> None:
        """A folder that does not exist is reported, not raised."""
        assert messages(validate(tmp_path / "nope")) == [
            f"{tmp_path / 'nope'}: policies folder does not exist"
        ]

    def test_a_missing_schema_is_a_problem(self, folder: Path) -> None:
        """The schema is required: requests and policies are type-checked."""
        (folder / "schema.cedarschema").unlink()

        assert messages(validate(folder)) == [
            "schema.cedarschema: the schema is missing"
        ]

    def test_an_unparsable_schema_is_a_problem(self, folder: Path) -> None:
        """Schema syntax errors are reported against the schema file."""
        (folder / "schema.cedarschema").write_text("namespace X { entity }")

        assert messages(validate(folder))[0].startswith(
            "schema.cedarschema: cannot parse the schema"
        )

    def test_an_unparsable_policy_file_is_a_problem(self, folder: Path) -> None:
        """Cedar syntax errors name the file."""
        (folder / "broken.cedar").write_text(
            "forbid (principal, action, resource) when {"
        )

        assert messages(validate(folder))[0].startswith(
            "broken.cedar: cannot parse cedar"
        )

    def test_an_organisation_permit_is_a_problem(self, folder: Path) -> None:
        """Permits would widen every task's scope, so the organisation only forbids."""
        (folder / "wide.cedar").write_text(
            '@id("all") permit (principal, action, resource);'
        )

        assert messages(validate(folder)) == [
            "wide.cedar [all]: organisation policies only forbid; "
            "permits belong in a task's scope"
        ]

    def test_every_policy_needs_an_id(self, folder: Path) -> None:
        """A policy without @id (or with an empty one) is named by its position."""
        (folder / "anon.cedar").write_text(
            '@id("ok") forbid (principal, action, resource);\n'
            "@id forbid (principal, action, resource);\n"
        )

        assert messages(validate(folder)) == [
            "anon.cedar: forbid policy #2 has no @id annotation"
        ]

    def test_ids_are_unique_across_files(self, folder: Path) -> None:
        """The same @id in two files is reported against the later file."""
        (folder / "zz.cedar").write_text(
            '@id("org-no-agent-vendors") forbid (principal, action, resource);'
        )

        assert messages(validate(folder)) == [
            "zz.cedar [org-no-agent-vendors]: @id is already used in another file"
        ]

    def test_ids_are_unique_within_a_file(self, folder: Path) -> None:
        """The same @id twice in one file is a duplicate."""
        (folder / "twice.cedar").write_text(
            '@id("x") forbid (principal, action, resource);\n'
            '@id("x") forbid (principal, action, resource);\n'
        )

        assert messages(validate(folder)) == ["twice.cedar [x]: duplicate @id"]

    @pytest.mark.parametrize(
        ("policy", "problem"),
        [
            (
                '@id("g") @approval("cfo") forbid (principal, action, resource);',
                "@approval is set but context.approved is never read",
            ),
            (
                '@id("g") forbid (principal, action, resource) '
                "unless { context.approved };",
                "reads context.approved but has no @approval(role)",
            ),
            (
                '@id("g") @approval("") forbid (principal, action, resource) '
                "unless { context.approved };",
                "@approval names no approver role",
            ),
        ],
    )
    def test_approval_annotation_and_context_go_together(
        self, folder: Path, policy: str, problem: str
    ) -> None:
        """@approval(role) and reading context.approved come as a pair."""
        (folder / "gate.cedar").write_text(policy)

        assert messages(validate(folder)) == [f"gate.cedar [g]: {problem}"]

    def test_templates_are_a_problem(self, folder: Path) -> None:
        """Scopes are linked per task by the engine, so Cedar templates are refused."""
        (folder / "slots.cedar").write_text(
            '@id("t") forbid (principal == ?principal, action, resource);'
        )

        assert messages(validate(folder)) == [
            "slots.cedar [t]: policy templates are not supported"
        ]

    def test_a_policy_the_schema_rejects_is_a_problem(self, folder: Path) -> None:
        """Schema validation errors name the policy by its @id."""
        refund = 'action == Payments::Action::"Refund"'
        (folder / "typo.cedar").write_text(
            f'@id("typo") forbid (principal, {refund}, resource);'
        )

        found = messages(validate(folder))

        assert found[0].startswith(
            "typo.cedar [typo]: for policy `typo`, unrecognized action"
        )

    def test_entities_the_schema_rejects_are_a_problem(self, folder: Path) -> None:
        """An account without its frozen attribute does not conform."""
        account = '{"type": "Payments::Account", "id": "x"}'
        (folder / "entities.json").write_text(
            f'[{{"uid": {account}, "attrs": {{}}, "parents": []}}]'
        )

        assert messages(validate(folder))[0].startswith(
            "entities.json: unusable entities"
        )

    def test_entities_are_optional(self, folder: Path) -> None:
        """Without entities.json the engine knows only the tasks' agents."""
        (folder / "entities.json").unlink()
        (folder / "payments.cedar").unlink()

        assert validate(folder) == []

    def test_a_schema_without_agents_is_a_problem(self, folder: Path) -> None:
        """Every principal is a Proctor::Agent, so the schema must declare it."""
        (folder / "schema.cedarschema").write_text(
            "namespace Payments { entity Account; }"
        )
        for name in ("payments.cedar", "git.cedar", "entities.json"):
            (folder / name).unlink()

        assert messages(validate(folder)) == [
            "schema.cedarschema: declares no entity Proctor::Agent "
            "without required attributes"
        ]

    def test_an_unreadable_file_is_a_problem(self, folder: Path) -> None:
        """A policy file that is not UTF-8 is reported, naming the file."""
        (folder / "latin.cedar").write_bytes(b"// caf\xe9\n")

        assert messages(validate(folder))[0].startswith("latin.cedar: cannot read")


class TestLoad:
    """Loading refuses problems and keeps what decisions need."""

    def test_loading_names_every_problem(self, folder: Path) -> None:
        """OrgPolicies.load raises one PolicyError listing the problems."""
        (folder / "a.cedar").write_text("forbid (principal, action, resource);")
        (folder / "b.cedar").write_text(
            '@id("b") permit (principal, action, resource);'
        )

        with pytest.raises(
            PolicyError, match=r"a.cedar: .*no @id.*; b.cedar \[b\]: .*only forbid"
        ):
            OrgPolicies.load(folder)

    def test_loading_keeps_ids_in_file_order(self) -> None:
        """Policies are read in file name order, each file top to bottom."""
        org = OrgPolicies.load(ASSETS / "org")

        assert [info.id for info in org.infos] == [
            "org-git-under-srv",
            "org-git-commit-approval",
            "org-no-agent-vendors",
            "org-payments-by-finance-bots",
            "org-cfo-over-100k",
            "org-frozen-accounts",
            "org-payment-scopes-need-controller",
        ]
        assert org.ids == frozenset(info.id for info in org.infos)

    def test_loading_reads_the_agents_in_entities(self) -> None:
        """Agents declared in entities.json are known principals."""
        assert OrgPolicies.load(ASSETS / "org").agents == frozenset({"ledger-bot"})

    def test_from_parts_refuses_a_missing_schema(self) -> None:
        """Building from texts needs the schema too."""
        with pytest.raises(PolicyError, match="the schema is missing"):
            OrgPolicies.from_parts({"a.cedar": ""})
