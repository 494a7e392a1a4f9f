"""Task scopes: a small TOML form, compiled to the Cedar permits that bound one task.

A scope lists what a task may do; anything it does not permit is a breach::

    cedar = '''                                # optional raw Cedar, appended as is;
    @id("no-weekend-payments") forbid (...);   # top-level keys go before [[allow]]
    '''

    [[allow]]                                  # one rule: a permit
    id = "read-invoices"                       # optional; default "allow-<n>"
    action = 'Payments::Action::"ReadInvoice"' # one action uid, or a list of them

    [[allow]]
    id = "pay-known-vendors"
    action = ['Payments::Action::"CreatePayment"']
    resource = 'Payments::Account::"ops"'      # optional: resource in this entity
    when = { amount = { max = 50000 }, vendor = { in = ["acme", "globex"] } }
    approval = { role = "controller", when = { amount = { over = 10000 } } }

``when`` limits fields of the request's context. A key is a context attribute, and a
dotted key or a nested table reaches into records (``args.repo_path``). Each value is
a table of tests, all of which must hold: ``eq`` (string, integer or boolean), ``in``
(a list of strings or integers), ``min``/``max`` (integer, inclusive), ``over``/
``under`` (integer, exclusive) and ``like`` (a string where ``*`` matches anything).
A call lacking a field a rule tests is not permitted by that rule.

``approval = "role"`` makes every call of the rule wait for an approver holding that
role; ``approval = { role, when }`` only the calls that also match ``when``. Approval
follows the engine's pattern: the permit carries ``@approval("role")`` and reads
``context.approved``.

Rule ``n`` compiles to a permit ``@id("scope:<id>")`` and, with a conditional
approval, a second permit ``@id("scope:<id>:approval")``. Raw Cedar policies keep
their own ``@id``, which every policy must carry. The scope's digest is the SHA-256
of the compiled Cedar (see :func:`proctor.policy.cedar.digest_parts`), so editing a
comment in the TOML leaves it unchanged and changing a limit does not.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from proctor.errors import PolicyError
from proctor.policy.cedar import (
    RESERVED_CONTEXT,
    cedar_string,
    digest_parts,
    inspect_policies,
    is_entity_uid,
    require_clean,
)

SCOPE_PART = "scope.cedar"

_RULE_KEYS = frozenset({"id", "action", "resource", "when", "approval"})
_RULE_ID = re.compile(r"^[A-Za-z0-9_.-]+$")
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_CEDAR_WORDS = frozenset(
    {"true", "false", "if", "then", "else", "in", "is", "like", "has", "__cedar"}
)
_INT_MAX = 2**63 - 1
_COMPARISONS = {"min": ">=", "max": "<=", "over": ">", "under": "<"}
_TESTS = frozenset({"eq", "in", "like", *_COMPARISONS})


@dataclass(frozen=True, slots=True)
class Scope:
    """A task's scope as Cedar text, with its digest and the text it was written in."""

    cedar: str
    digest: str
    source: str

    @classmethod
    def from_toml(cls, text: str) -> Scope:
        """Compile a scope written in the TOML form; raise PolicyError if wrong."""
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise PolicyError(f"scope is not valid toml: {exc}") from exc

        return cls.from_mapping(data, source=text)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], *, source: str = "") -> Scope:
        """Compile a scope already read from TOML or JSON; raise PolicyError."""
        unknown = sorted(set(data) - {"allow", "cedar"})
        if unknown:
            raise PolicyError(f"scope has unknown keys: {', '.join(unknown)}")

        rules = _list_of_tables(data.get("allow", []), "allow")
        raw = data.get("cedar", "")
        if not isinstance(raw, str):
            raise PolicyError("scope key cedar must be a string of cedar policies")
        return cls.from_cedar(compile_rules(rules) + raw, source=source)

    @classmethod
    def from_cedar(cls, text: str, *, source: str | None = None) -> Scope:
        """Take a scope written directly in Cedar; raise PolicyError if unusable."""
        _, problems = inspect_policies(text, source="scope")
        require_clean(problems)

        digest = digest_parts({SCOPE_PART: text})
        return cls(cedar=text, digest=digest, source=text if source is None else source)


def compile_rules(rules: list[Mapping[str, Any]]) -> str:
    """Return the Cedar permits for the ``[[allow]]`` rules; raise PolicyError."""
    policies: list[str] = []
    seen: set[str] = set()
    for number, rule in enumerate(rules, start=1):
        rule_id = _rule_id(rule, number)
        if rule_id in seen:
            raise PolicyError(f"scope rule id {rule_id!r} is used twice")
        seen.add(rule_id)
        policies.extend(_compile_rule(rule, rule_id))
    return "".join(policies)


def _compile_rule(rule: Mapping[str, Any], rule_id: str) -> Iterator[str]:
    where = f"scope rule {rule_id!r}"
    unknown = sorted(set(rule) - _RULE_KEYS)
    if unknown:
        hint = (
            " (top-level keys go before the first [[allow]])"
            if "cedar" in unknown
            else ""
        )
        raise PolicyError(f"{where} has unknown keys: {', '.join(unknown)}{hint}")

    head = _head(rule, where)
    guards, tests = _split(rule.get("when", {}), where)
    role, gate = _approval(rule.get("approval"), where)
    if role is None:
        yield _permit(f"scope:{rule_id}", None, head, [*guards, *tests])
        return

    if gate is None:
        gated = ["context.approved", *guards, *tests]
        yield _permit(f"scope:{rule_id}", role, head, gated)
        return

    # Calls outside the approval condition need no approval, but must still carry
    # every field the condition reads, so a call that omits one is not let through.
    gate_guards, gate_tests = gate
    guards += [guard for guard in gate_guards if guard not in guards]
    plain = [*guards, *tests, f"!({' && '.join(gate_tests)})"]
    yield _permit(f"scope:{rule_id}", None, head, plain)
    gated = ["context.approved", *guards, *tests, *gate_tests]
    yield _permit(f"scope:{rule_id}:approval", role, head, gated)


def _rule_id(rule: Mapping[str, Any], number: int) -> str:
    rule_id = rule.get("id", f"allow-{number}")
    if not isinstance(rule_id, str) or not _RULE_ID.match(rule_id):
        raise PolicyError(
            f"scope rule #{number} id must be letters, digits, '_', '.' or '-'"
        )

    return rule_id


def _head(rule: Mapping[str, Any], where: str) -> str:
    actions = rule.get("action")
    if isinstance(actions, str):
        actions = [actions]
    if not isinstance(actions, list) or not actions:
        raise PolicyError(f"{where} needs action: an action uid or a list of them")
    for action in actions:
        _require_uid(action, f"{where} action")
    action = (
        f"action == {actions[0]}"
        if len(actions) == 1
        else f"action in [{', '.join(actions)}]"
    )

    resource = rule.get("resource")
    if resource is None:
        return f"principal,\n  {action},\n  resource"
    _require_uid(resource, f"{where} resource")
    return f"principal,\n  {action},\n  resource in {resource}"


def _approval(
    value: object, where: str
) -> tuple[str | None, tuple[list[str], list[str]] | None]:
    if value is None:
        return None, None
    if isinstance(value, str):
        value = {"role": value}
    if not isinstance(value, Mapping) or set(value) - {"role", "when"}:
        raise PolicyError(f"{where} approval must be a role or {{ role, when }}")

    role = value.get("role")
    if not isinstance(role, str) or not role.strip():
        raise PolicyError(f"{where} approval needs a role")
    if "when" not in value:
        return role, None
    guards, tests = _split(value["when"], f"{where} approval")
    if not tests:
        raise PolicyError(f"{where} approval when sets no condition")
    return role, (guards, tests)


def _split(value: object, where: str) -> tuple[list[str], list[str]]:
    """Return the ``has`` guards and the tests for one ``when`` table."""
    if not isinstance(value, Mapping):
        raise PolicyError(f"{where} when must be a table of context fields")

    guards: list[str] = []
    tests: list[str] = []
    for path, checks in _leaves(value, (), where):
        base = "context"
        for name in path:
            guard = f"{base} has {_attribute_name(name)}"
            if guard not in guards:
                guards.append(guard)
            base = _access(base, name)
        tests.extend(_tests(base, checks, f"{where} field {'.'.join(path)}"))
    return guards, tests


def _leaves(
    table: Mapping[str, Any], prefix: tuple[str, ...], where: str
) -> Iterator[tuple[tuple[str, ...], Mapping[str, Any]]]:
    for key, value in table.items():
        path = (*prefix, *key.split("."))
        if any(not name for name in path):
            raise PolicyError(f"{where} has an empty field name in {key!r}")
        if not isinstance(value, Mapping) or not value:
            raise PolicyError(f"{where} field {'.'.join(path)} needs a table of tests")
        nested = [isinstance(item, Mapping) for item in value.values()]
        if all(nested):
            yield from _leaves(value, path, where)
        elif any(nested):
            raise PolicyError(f"{where} field {'.'.join(path)} mixes tests and fields")
        else:
            if len(path) == 1 and path[0] in RESERVED_CONTEXT:
                raise PolicyError(f"{where} cannot limit reserved field {path[0]}")
            yield path, value


def _tests(base: str, checks: Mapping[str, Any], where: str) -> Iterator[str]:
    unknown = sorted(set(checks) - _TESTS)
    if unknown:
        raise PolicyError(f"{where} has unknown tests: {', '.join(unknown)}")

    for name, value in checks.items():
        if name == "eq":
            yield f"{base} == {_literal(value, where)}"
        elif name == "in":
            yield f"{_set(value, where)}.contains({base})"
        elif name == "like":
            if not isinstance(value, str):
                raise PolicyError(f"{where} like needs a string pattern")
            # In a Cedar pattern literal an unescaped * is the wildcard.
            yield f"{base} like {cedar_string(value)}"
        else:
            yield f"{base} {_COMPARISONS[name]} {_integer(value, f'{where} {name}')}"


def _literal(value: object, where: str) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return _integer(value, where)
    if isinstance(value, str):
        return cedar_string(value)
    raise PolicyError(f"{where} eq needs a string, an integer or a boolean")


def _set(value: object, where: str) -> str:
    if not isinstance(value, list) or not value:
        raise PolicyError(f"{where} in needs a non-empty list")
    kinds = {type(item) for item in value}
    if kinds not in ({str}, {int}):
        raise PolicyError(f"{where} in needs a list of strings or of integers")
    return f"[{', '.join(_literal(item, where) for item in value)}]"


def _integer(value: object, where: str) -> str:
    if isinstance(value, bool) or not isinstance(value, int):
        raise PolicyError(f"{where} needs an integer")
    if not -_INT_MAX - 1 <= value <= _INT_MAX:
        raise PolicyError(f"{where} is outside cedar's 64-bit integers")
    return str(value)


def _attribute_name(name: str) -> str:
    return name if _is_identifier(name) else cedar_string(name)


def _access(base: str, name: str) -> str:
    return f"{base}.{name}" if _is_identifier(name) else f"{base}[{cedar_string(name)}]"


def _is_identifier(name: str) -> bool:
    return _IDENT.match(name) is not None and name not in _CEDAR_WORDS


def _require_uid(value: object, where: str) -> None:
    if not isinstance(value, str) or not is_entity_uid(value):
        raise PolicyError(
            f'{where} must be an entity uid like Type::"id", got {value!r}'
        )


def _permit(policy_id: str, role: str | None, head: str, conditions: list[str]) -> str:
    annotations = f"@id({cedar_string(policy_id)})\n"
    if role is not None:
        annotations += f"@approval({cedar_string(role)})\n"
    body = f"permit (\n  {head}\n)"
    if conditions:
        body += "\nwhen {\n  " + " &&\n  ".join(conditions) + "\n}"
    return f"{annotations}{body};\n\n"


def _list_of_tables(value: object, key: str) -> list[Mapping[str, Any]]:
    if not isinstance(value, list) or not all(isinstance(v, Mapping) for v in value):
        raise PolicyError(f"scope key {key} must be a list of tables ([[{key}]])")

    return value
