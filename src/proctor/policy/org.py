"""Organisation policies: the Cedar files, schema and entities under a home's
``policies/`` folder, checked, parsed once and digested.

The folder holds::

    schema.cedarschema  required, Cedar schema syntax. It declares the entity type
                        Proctor::Agent (every principal is one, with no required
                        attributes) and, for every action, a context with
                        task: String, user: String, approved: Bool and whatever the
                        call carries (amount, vendor, args, ...).
    *.cedar             organisation policies, read in name order. Every policy has
                        a unique @id. They only forbid: what a task may do is its
                        scope's business, so an organisation permit (which would
                        widen every task) is refused. A forbid an approver can lift
                        carries @approval("role") and `unless { context.approved }`.
    entities.json       optional, Cedar JSON entities (agent groups, accounts, ...).

The digest is :func:`proctor.policy.cedar.digest_parts` over these files, named as
above, so the ledger's "policy set published" entry, holding the same texts, lets a
verifier recompute it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import cedarpy

from proctor.errors import PolicyError
from proctor.policy.cedar import (
    AGENT_TYPE,
    PolicyInfo,
    Problem,
    digest_parts,
    inspect_policies,
    positions,
    rename_positions,
    require_clean,
)
from proctor.policy.scope import SCOPE_PART, Scope

SCHEMA = "schema.cedarschema"
ENTITIES = "entities.json"


@dataclass(frozen=True, eq=False)
class OrgPolicies:
    """The organisation's policy set, parsed once: texts, digest and Cedar handles."""

    parts: Mapping[str, str]
    digest: str
    cedar: str
    policies: cedarpy.PolicySet
    schema: cedarpy.Schema
    entities: cedarpy.Entities
    infos: tuple[PolicyInfo, ...]
    agents: frozenset[str] = field(default_factory=frozenset)

    @classmethod
    def load(cls, folder: Path) -> OrgPolicies:
        """Read and check the policies folder; raise PolicyError naming each problem."""
        parts, problems = read_folder(folder)
        require_clean(problems)

        return cls.from_parts(parts)

    @classmethod
    def from_parts(cls, parts: Mapping[str, str]) -> OrgPolicies:
        """Build from texts named as in the folder; raise PolicyError if unusable."""
        built = _build(parts)
        if isinstance(built, list):
            require_clean(built)
            raise PolicyError("organisation policies are unusable")  # pragma: no cover

        return built

    @property
    def ids(self) -> frozenset[str]:
        """The @id of every organisation policy."""
        return frozenset(info.id for info in self.infos)

    def check_scope(self, scope: Scope) -> list[Problem]:
        """Return what stops ``scope`` from running beside these policies."""
        infos, problems = inspect_policies(scope.cedar, source=SCOPE_PART)
        problems += [
            Problem(SCOPE_PART, "@id is also an organisation policy's", info.id)
            for info in infos
            if info.id in self.ids
        ]
        if not problems:
            problems += _schema_problems(scope.cedar, self.schema, SCOPE_PART, infos)
        return problems


def validate(folder: Path) -> list[Problem]:
    """Check an organisation policies folder and return every problem found.

    An empty list means ``OrgPolicies.load(folder)`` succeeds. Problems cover a
    missing or unparsable schema, unparsable policies, a missing or duplicate @id,
    templates, organisation permits, @approval without context.approved (or the
    reverse), policies the schema does not type-check, and entities that do not
    conform to the schema.
    """
    parts, problems = read_folder(folder)
    if problems:
        return problems

    built = _build(parts)
    return built if isinstance(built, list) else []


def read_folder(folder: Path) -> tuple[dict[str, str], list[Problem]]:
    """Read the schema, the ``*.cedar`` files and ``entities.json`` from ``folder``."""
    if not folder.is_dir():
        return {}, [Problem(str(folder), "policies folder does not exist")]

    names = [SCHEMA, *sorted(p.name for p in folder.glob("*.cedar")), ENTITIES]
    parts: dict[str, str] = {}
    problems: list[Problem] = []
    for name in names:
        path = folder / name
        # A missing schema is reported by _build, with the other problems.
        if name in {SCHEMA, ENTITIES} and not path.exists():
            continue
        try:
            parts[name] = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            problems.append(Problem(name, f"cannot read: {exc}"))
    return parts, problems


def _build(parts: Mapping[str, str]) -> OrgPolicies | list[Problem]:
    """Return the parsed policies, or every problem found (never an empty list)."""
    if SCHEMA not in parts:
        return [Problem(SCHEMA, "the schema is missing")]
    try:
        schema = cedarpy.Schema.from_str(parts[SCHEMA])
    except ValueError as exc:
        return [Problem(SCHEMA, f"cannot parse the schema: {exc}")]

    seen: set[str] = set()
    problems: list[Problem] = []
    for name in _policy_names(parts):
        infos, file_problems = inspect_policies(parts[name], source=name)
        if not file_problems:
            file_problems = _org_problems(name, infos, seen)
        if not file_problems:
            file_problems = _schema_problems(parts[name], schema, name, infos)
        problems += file_problems
        seen.update(info.id for info in infos)
    entities, agents, entity_problems = _entities(parts.get(ENTITIES), schema)
    problems += entity_problems
    if problems or entities is None:
        return problems

    return _assemble(parts, schema, entities, agents)


def _assemble(
    parts: Mapping[str, str],
    schema: cedarpy.Schema,
    entities: cedarpy.Entities,
    agents: frozenset[str],
) -> OrgPolicies:
    # One parse of the concatenation numbers Cedar's positional ids in file order,
    # which is how evaluation errors are named back to their @id.
    cedar = "\n".join(parts[name] for name in _policy_names(parts))
    infos, problems = inspect_policies(cedar, source="policies")
    require_clean(problems)

    return OrgPolicies(
        parts=dict(parts),
        digest=digest_parts(parts),
        cedar=cedar,
        policies=cedarpy.PolicySet.from_str(cedar),
        schema=schema,
        entities=entities,
        infos=infos,
        agents=agents,
    )


def _policy_names(parts: Mapping[str, str]) -> list[str]:
    return sorted(name for name in parts if name.endswith(".cedar"))


def _org_problems(
    source: str, infos: tuple[PolicyInfo, ...], seen: set[str]
) -> list[Problem]:
    problems = [
        Problem(source, "@id is already used in another file", info.id)
        for info in infos
        if info.id in seen
    ]
    problems += [
        Problem(
            source,
            "organisation policies only forbid; permits belong in a task's scope",
            info.id,
        )
        for info in infos
        if info.effect == "permit"
    ]
    return problems


def _schema_problems(
    text: str, schema: cedarpy.Schema, source: str, infos: tuple[PolicyInfo, ...]
) -> list[Problem]:
    result = cedarpy.validate_policies(text, schema)
    ids = positions(infos)
    return [
        Problem(source, rename_positions(error.error, ids), ids.get(error.policy_id))
        for error in result.errors
    ]


def _entities(
    text: str | None, schema: cedarpy.Schema
) -> tuple[cedarpy.Entities | None, frozenset[str], list[Problem]]:
    try:
        # An agent entity proves the schema declares Proctor::Agent: every
        # decision's principal is one.
        cedarpy.Entities.from_json_str(json.dumps([agent_entity("probe")]), schema)
    except ValueError:
        message = f"declares no entity {AGENT_TYPE} without required attributes"
        return None, frozenset(), [Problem(SCHEMA, message)]
    if text is None:
        return cedarpy.Entities.from_json_str("[]", schema), frozenset(), []

    try:
        entities = cedarpy.Entities.from_json_str(text, schema)
        agents = frozenset(_agent_ids(json.loads(text)))
    except ValueError as exc:
        return None, frozenset(), [Problem(ENTITIES, f"unusable entities: {exc}")]
    return entities, agents, []


def _agent_ids(document: object) -> list[str]:
    if not isinstance(document, list):
        return []

    return [
        str(item["uid"]["id"])
        for item in document
        if isinstance(item, dict)
        and isinstance(item.get("uid"), dict)
        and item["uid"].get("type") == AGENT_TYPE
    ]


def agent_entity(agent: str) -> dict[str, object]:
    """Return the Cedar JSON entity for an agent with no attributes or groups."""
    return {"uid": {"type": AGENT_TYPE, "id": agent}, "attrs": {}, "parents": []}
