"""``proctor policy``: check the organisation's policies, run policy tests, and
publish the policy set so every later decision names it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from proctor.cli.common import HomeOption, JsonOption, emit_json, locate
from proctor.cli.session import note, opened, operator, say
from proctor.policy import OrgPolicies, run_policy_tests, validate

policy_app = typer.Typer(
    help="Validate, test and publish the organisation's policies.",
    no_args_is_help=True,
)


def register(app: typer.Typer) -> None:
    app.add_typer(policy_app, name="policy")


@policy_app.command("validate")
def validate_command(home: HomeOption = None, as_json: JsonOption = False) -> None:
    """Check the home's policies folder; exit 1 and name each problem if any."""
    folder = locate(home).policies
    problems = validate(folder)
    digest = None if problems else OrgPolicies.load(folder).digest
    if as_json:
        emit_json(
            {
                "ok": not problems,
                "digest": digest,
                "problems": [
                    {
                        "source": problem.source,
                        "policy": problem.policy,
                        "message": problem.message,
                    }
                    for problem in problems
                ],
            }
        )
    else:
        for problem in problems:
            say(str(problem))
        if digest is not None:
            say(f"OK: {folder} is valid, policy set {digest}")
    if problems:
        note(f"{len(problems)} problems in {folder}")
        raise typer.Exit(1)


@policy_app.command("test")
def run_tests_command(
    file: Annotated[
        Path, typer.Argument(metavar="FILE", help="Policy tests, TOML or JSON.")
    ],
    as_json: JsonOption = False,
) -> None:
    """Run every case in FILE against its policies and scope; exit 1 if one fails."""
    results = run_policy_tests(file)
    failed = [result for result in results if not result.passed]
    if as_json:
        emit_json(
            [
                {
                    "name": result.name,
                    "expected": result.expected,
                    "outcome": result.decision.outcome.value,
                    "breach": result.decision.is_breach,
                    "policies": list(result.decision.policy_ids),
                    "passed": result.passed,
                    "failures": list(result.failures),
                }
                for result in results
            ]
        )
    else:
        for result in results:
            verdict = "PASS" if result.passed else "FAIL"
            why = f": {'; '.join(result.failures)}" if result.failures else ""
            say(f"{verdict}  {result.name}{why}")
    note(f"{len(results) - len(failed)} passed, {len(failed)} failed")
    if failed:
        raise typer.Exit(1)


@policy_app.command("publish")
def publish_command(home: HomeOption = None, as_json: JsonOption = False) -> None:
    """Record the policy set as an entry, unless it is already the one in force."""
    with opened(home) as runtime:
        entry = runtime.service.publish_policies(by=operator())
        published = runtime.service.authority.published_policy()
        digest = runtime.service.org.digest
    in_force = published[0] if published else None
    if as_json:
        emit_json({"digest": digest, "entry": in_force, "changed": entry is not None})
        return
    if entry is None:
        say(f"policy set {digest} is already in force (entry {in_force})")
    else:
        say(f"published policy set {digest} (entry {entry})")
