"""Cedar helpers shared by the policy modules: reading policy annotations, naming
policies by their ``@id``, writing Cedar literals and digesting policy text.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import lru_cache

import cedarpy
from cedarpy import pst

from proctor.errors import PolicyError

AGENT_TYPE = "Proctor::Agent"

# Attributes Proctor itself puts in every request's context (see engine.Request).
RESERVED_CONTEXT = frozenset({"task", "user", "approved"})

_POSITION = re.compile(r"`(policy\d+)`")
_NAME = r"[A-Za-z_][A-Za-z0-9_]*"
_UID = re.compile(rf'^((?:{_NAME}::)*{_NAME})::"([^"\\]*)"$')
_UID_ESCAPED = re.compile(rf'^(?:{_NAME}::)*{_NAME}::"(?:[^"\\]|\\.)*"$')
_PART_NAME = re.compile(r"^[^\n]+$")


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with a policy file, a schema or a scope."""

    source: str
    message: str
    policy: str | None = None

    def __str__(self) -> str:
        where = f"{self.source} [{self.policy}]" if self.policy else self.source
        return f"{where}: {self.message}"


@dataclass(frozen=True, slots=True)
class PolicyInfo:
    """What Proctor needs to know about one parsed policy."""

    position: str
    id: str
    effect: str
    approval: str | None
    reads_approved: bool


def inspect_policies(
    text: str, *, source: str
) -> tuple[tuple[PolicyInfo, ...], list[Problem]]:
    """Parse Cedar ``text`` and return its policies in order with every problem found.

    A policy needs a unique, non-empty ``@id``; ``@approval("role")`` and reading
    ``context.approved`` go together; templates are refused (scopes are linked per
    task by the engine, not by Cedar slots).
    """
    try:
        tree = cedarpy.policies_to_pst(text)
    except ValueError as exc:
        return (), [Problem(source, f"cannot parse cedar: {exc}")]

    problems = [
        Problem(
            source, "policy templates are not supported", template.annotations.get("id")
        )
        for template in tree.templates.values()
    ]
    infos = tuple(_info(tree.static_policies[key]) for key in _by_position(tree))
    seen: set[str] = set()
    for info in infos:
        problems.extend(_problems(info, source, seen))
        seen.add(info.id)
    return infos, problems


def inspect_set(policies: cedarpy.PolicySet) -> tuple[PolicyInfo, ...]:
    """Return the policies of a parsed set in Cedar's positional order."""
    tree = policies.to_pst()
    return tuple(_info(tree.static_policies[key]) for key in _by_position(tree))


def require_clean(problems: list[Problem]) -> None:
    """Raise PolicyError naming every problem, if there is any."""
    if problems:
        raise PolicyError("; ".join(str(problem) for problem in problems))


def positions(infos: tuple[PolicyInfo, ...]) -> dict[str, str]:
    """Map Cedar's positional ids (``policy0``) to the policies' ``@id``."""
    return {info.position: info.id for info in infos}


def rename_positions(message: str, ids: Mapping[str, str]) -> str:
    """Replace Cedar's positional policy ids in ``message`` with their ``@id``."""
    return _POSITION.sub(lambda match: f"`{ids.get(match[1], match[1])}`", message)


def cedar_string(value: str) -> str:
    """Return ``value`` as a Cedar string literal."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    escaped = "".join(
        f"\\u{{{ord(char):x}}}" if ord(char) < 0x20 or ord(char) == 0x7F else char
        for char in escaped
    )
    return f'"{escaped}"'


def is_entity_uid(text: str) -> bool:
    """Tell whether ``text`` reads as one Cedar entity uid, ``Type::"id"``."""
    return _UID_ESCAPED.match(text) is not None


def uid_json(text: str) -> dict[str, str] | str:
    """Return the request form of a Cedar uid: a type/id dict when plain, else text.

    Cedar reads the dict form far faster than surface syntax; a uid with escapes is
    left as text for Cedar itself to read (and refuse, if malformed).
    """
    parts = _split_uid(text)
    if parts is None:
        return text

    return {"type": parts[0], "id": parts[1]}


def digest_parts(parts: Mapping[str, str]) -> str:
    """Return the SHA-256 hex digest of named texts in their canonical concatenation.

    Each part, in name order, contributes ``name LF byte-length LF text LF`` (UTF-8),
    so no two different sets of parts share a byte string. Raises PolicyError on a
    part name that is empty or holds a line feed.
    """
    digest = hashlib.sha256()
    for name in sorted(parts):
        if not _PART_NAME.match(name):
            raise PolicyError(f"policy part name {name!r} is empty or has a line feed")
        body = parts[name].encode()
        digest.update(f"{name}\n{len(body)}\n".encode() + body + b"\n")
    return digest.hexdigest()


@lru_cache(maxsize=4096)
def _split_uid(text: str) -> tuple[str, str] | None:
    match = _UID.match(text)
    return None if match is None else (match[1], match[2])


def _by_position(tree: pst.PolicySet) -> list[str]:
    return sorted(tree.static_policies, key=lambda key: int(key.removeprefix("policy")))


def _info(policy: pst.Template) -> PolicyInfo:
    return PolicyInfo(
        position=policy.id,
        id=policy.annotations.get("id", ""),
        effect=policy.effect,
        approval=policy.annotations.get("approval"),
        reads_approved=any(_reads_approved(node) for node in _walk(policy.clauses)),
    )


def _problems(info: PolicyInfo, source: str, seen: set[str]) -> Iterator[Problem]:
    name = info.id or None
    if not info.id:
        number = int(info.position.removeprefix("policy")) + 1
        yield Problem(source, f"{info.effect} policy #{number} has no @id annotation")
    elif info.id in seen:
        yield Problem(source, "duplicate @id", name)
    if info.approval is not None and not info.approval:
        yield Problem(source, "@approval names no approver role", name)
    if info.approval and not info.reads_approved:
        yield Problem(
            source, "@approval is set but context.approved is never read", name
        )
    if info.reads_approved and info.approval is None:
        yield Problem(source, "reads context.approved but has no @approval(role)", name)


def _reads_approved(node: object) -> bool:
    return (
        isinstance(node, pst.GetAttr)
        and isinstance(node.base, pst.Var)
        and node.base.name == "context"
        and node.attr == "approved"
    )


def _walk(node: object) -> Iterator[object]:
    # An explicit stack: policy trees may nest deeper than the recursion limit.
    stack = [node]
    while stack:
        current = stack.pop()
        yield current
        if isinstance(current, tuple):
            stack.extend(current)
        elif isinstance(current, Mapping):
            stack.extend(current.values())
        elif dataclasses.is_dataclass(current) and not isinstance(current, type):
            stack.extend(getattr(current, f.name) for f in dataclasses.fields(current))
