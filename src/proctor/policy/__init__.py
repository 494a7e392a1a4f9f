"""Policy: Cedar decisions over the organisation's policies and each task's scope.

``OrgPolicies.load(folder)`` reads and checks the organisation's policies,
``Scope.from_toml(text)`` compiles a task's scope, ``Engine(org, tasks)`` (or
``EngineCache().get(org, tasks)``) decides a ``Request`` into a ``Decision``.
``validate(folder)`` and ``run_policy_tests(file)`` back ``proctor policy validate``
and ``proctor policy test``.
"""

from proctor.policy.cedar import Problem, digest_parts
from proctor.policy.engine import (
    ActiveTask,
    Decision,
    Engine,
    EngineCache,
    Outcome,
    Request,
)
from proctor.policy.org import OrgPolicies, validate
from proctor.policy.scope import Scope
from proctor.policy.suite import CaseResult, run_policy_tests

__all__ = [
    "ActiveTask",
    "CaseResult",
    "Decision",
    "Engine",
    "EngineCache",
    "OrgPolicies",
    "Outcome",
    "Problem",
    "Request",
    "Scope",
    "digest_parts",
    "run_policy_tests",
    "validate",
]
