"""Policy tests: a TOML or JSON file of requests and the outcome each must get, run
against an organisation policies folder and one task's scope (``proctor policy test``).

The file, in TOML (JSON has the same shape)::

    policies = "../org"                  # organisation policies folder, from this file
    scope = "../scopes/invoices.toml"    # the task's scope: a TOML or .cedar file,
                                         # or an inline table in the scope TOML form

    [task]                               # optional; these are the defaults
    id = "task-1"
    agent = "agent"
    user = "user"

    [[case]]
    name = "a small payment to a known vendor"
    action = 'Payments::Action::"CreatePayment"'
    resource = 'Payments::Account::"ops"'
    context = { amount = 500, vendor = "acme" }   # optional
    approvals = ["controller"]           # optional: roles that approved this request
    agent = "other-agent"                # optional: override [task]'s agent, user, id
    expect = "allow"                     # allow | deny | breach | needs_approval
    policy_ids = ["scope:pay"]           # optional: the determining policies, any order
    approvers = ["controller"]           # optional: the roles still to approve

``deny`` expects a deny that is not a breach; ``breach`` a deny outside the scope.
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from proctor.errors import PolicyError
from proctor.policy.engine import ActiveTask, Decision, Engine, Request
from proctor.policy.org import OrgPolicies
from proctor.policy.scope import Scope

EXPECTATIONS = ("allow", "deny", "breach", "needs_approval")
_CASE_KEYS = frozenset(
    {
        "name",
        "action",
        "resource",
        "context",
        "approvals",
        "agent",
        "user",
        "task",
        "expect",
        "policy_ids",
        "approvers",
    }
)


@dataclass(frozen=True, slots=True)
class CaseResult:
    """One case's decision and what, if anything, differed from the expectation."""

    name: str
    expected: str
    decision: Decision
    failures: tuple[str, ...]

    @property
    def passed(self) -> bool:
        """Tell whether the decision met every expectation."""
        return not self.failures


def run_policy_tests(file: Path) -> list[CaseResult]:
    """Run every case in ``file`` and return the results in order.

    Raises PolicyError if the file, the policies or the scope cannot be used.
    """
    data = _read(file)
    org = OrgPolicies.load(file.parent / _string(data, "policies", str(file)))
    scope = _scope(data.get("scope"), file)
    task = _task(data.get("task", {}), scope)
    engine = Engine(org, [task])

    cases = data.get("case")
    if not isinstance(cases, list) or not cases:
        raise PolicyError(f"{file}: no [[case]] to run")
    return [
        _run(engine, task, case, f"{file} case #{n}") for n, case in enumerate(cases, 1)
    ]


def _run(engine: Engine, task: ActiveTask, case: object, where: str) -> CaseResult:
    if not isinstance(case, Mapping):
        raise PolicyError(f"{where} is not a table")
    unknown = sorted(set(case) - _CASE_KEYS)
    if unknown:
        raise PolicyError(f"{where} has unknown keys: {', '.join(unknown)}")
    expected = case.get("expect")
    if expected not in EXPECTATIONS:
        raise PolicyError(f"{where} expect must be one of {', '.join(EXPECTATIONS)}")

    decision = engine.decide(_request(task, case, where))
    return CaseResult(
        name=str(case.get("name", where)),
        expected=expected,
        decision=decision,
        failures=tuple(_failures(case, expected, decision)),
    )


def _request(task: ActiveTask, case: Mapping[str, Any], where: str) -> Request:
    context = case.get("context", {})
    approvals = case.get("approvals", [])
    if not isinstance(context, Mapping):
        raise PolicyError(f"{where} context must be a table")
    if not isinstance(approvals, list) or not all(
        isinstance(a, str) for a in approvals
    ):
        raise PolicyError(f"{where} approvals must be a list of roles")

    return Request(
        agent=_string(case, "agent", where, task.agent),
        user=_string(case, "user", where, task.user),
        task=_string(case, "task", where, task.task),
        action=_string(case, "action", where),
        resource=_string(case, "resource", where),
        context=dict(context),
        approvals=frozenset(approvals),
    )


def _failures(case: Mapping[str, Any], expected: str, decision: Decision) -> list[str]:
    got = "breach" if decision.is_breach else decision.outcome.value
    failures = [] if got == expected else [f"expected {expected}, got {got}"]
    for key, actual in (
        ("policy_ids", decision.policy_ids),
        ("approvers", decision.approvers),
    ):
        wanted = case.get(key)
        if wanted is not None and sorted(wanted) != sorted(actual):
            failures.append(f"expected {key} {sorted(wanted)}, got {sorted(actual)}")
    return failures


def _read(file: Path) -> dict[str, Any]:
    try:
        text = file.read_text(encoding="utf-8")
        data = json.loads(text) if file.suffix == ".json" else tomllib.loads(text)
    except (OSError, UnicodeDecodeError) as exc:
        raise PolicyError(f"cannot read policy tests {file}: {exc}") from exc
    except (ValueError, tomllib.TOMLDecodeError) as exc:
        raise PolicyError(f"policy tests {file} are malformed: {exc}") from exc
    if not isinstance(data, dict):
        raise PolicyError(f"policy tests {file} must hold a table")
    return data


def _scope(value: object, file: Path) -> Scope:
    if isinstance(value, Mapping):
        return Scope.from_mapping(value)
    if not isinstance(value, str):
        raise PolicyError(f"{file}: scope must name a scope file or be a table")

    path = file.parent / value
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PolicyError(f"{file}: cannot read scope {path}: {exc}") from exc
    return Scope.from_cedar(text) if path.suffix == ".cedar" else Scope.from_toml(text)


def _task(value: object, scope: Scope) -> ActiveTask:
    if not isinstance(value, Mapping):
        raise PolicyError("policy tests [task] must be a table")

    return ActiveTask(
        task=_string(value, "id", "[task]", "task-1"),
        agent=_string(value, "agent", "[task]", "agent"),
        user=_string(value, "user", "[task]", "user"),
        scope=scope,
    )


def _string(
    table: Mapping[str, Any], key: str, where: str, default: str | None = None
) -> str:
    value = table.get(key, default)
    if not isinstance(value, str) or not value:
        raise PolicyError(f"{where} needs {key} as a non-empty string")
    return value
