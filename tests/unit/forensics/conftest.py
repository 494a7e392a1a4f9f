"""A small hand-written ledger of one task's story, written through the real Ledger
into a SQLite file: a held payment approved and released, its outcome, and a breach
that quarantines the task; and a second task of another user."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from proctor import kinds
from proctor.ledger.log import CheckpointPolicy, Ledger
from proctor.ledger.note import Signer, Verifier
from proctor.storage.interface import Store
from proctor.storage.postgres import PostgresStore
from proctor.storage.sqlite import SqliteStore

ORIGIN = "proctor.test/forensics"
TASK = "tsk_0000000000000001"
OTHER = "tsk_0000000000000002"
PAY = 'Payments::Action::"CreatePayment"'
READ = 'Payments::Action::"ReadInvoice"'
VENDOR = 'Payments::Action::"CreateVendor"'
APPROVAL = "apr_00000000000000a1"
DIGEST = "ab" * 32
POLICY_SET = "cd" * 32
SCOPE = "ef" * 32


def decision(**fields: Any) -> dict[str, Any]:
    """A decision entry's fields as the pipeline writes them, with overrides."""
    base: dict[str, Any] = {
        "task": TASK,
        "agent": "ledger-bot",
        "user": "alice@example.com",
        "task_opened": 1,
        "scope": SCOPE,
        "scope_approved": 2,
        "scope_approver": "controller@example.com",
        "door": "http",
        "target": "finance",
        "action": PAY,
        "resource": 'Payments::Account::"ops"',
        "context": {"amount": 1_500_000, "vendor": "acme"},
        "request": {
            "method": "POST",
            "path": "/payments",
            "query": [["ref", "inv-7"]],
            "headers": {"user-agent": "ledger-bot/1.0"},
            "body": {"amount": 1_500_000, "vendor": "acme"},
        },
        "request_digest": DIGEST,
        "credential": "finance-api-key",
        "outcome": "allow",
        "reason": "allowed by scope:pay",
        "policies": ["scope:pay"],
        "policy_set": POLICY_SET,
        "policy_entry": 0,
        "errors": [],
        "breach": False,
        "approval": None,
        "reasoning": [],
    }
    return {**base, **fields}


STORY: list[tuple[str, dict[str, Any]]] = [
    (
        kinds.POLICY_PUBLISHED,
        {"digest": POLICY_SET, "files": {"a.cedar": "x"}, "by": "cli"},
    ),
    (
        kinds.TASK_OPENED,
        {
            "task": TASK,
            "user": "alice@example.com",
            "agent": "ledger-bot",
            "request": "Pay December's invoices",
            "scope": {
                "format": "toml",
                "text": "...",
                "cedar": "...",
                "digest": SCOPE,
                "actions": [PAY, READ],
            },
            "expires": "2999-01-01T00:00:00.000000Z",
            "approval": {"roles": ["controller"], "policies": ["org-scope"]},
            "policy_set": POLICY_SET,
            "by": "cli:ops",
        },
    ),
    (
        kinds.TASK_APPROVED,
        {
            "task": TASK,
            "approver": "controller@example.com",
            "role": "controller",
            "reason": "fits the request",
            "scope_digest": SCOPE,
        },
    ),
    (
        kinds.REASONING,
        {"task": TASK, "agent": "ledger-bot", "text": "acme is due", "source": "api"},
    ),
    (
        kinds.DECISION,
        decision(
            outcome="needs_approval",
            reason="needs approval by controller",
            approval=APPROVAL,
            reasoning=[3],
        ),
    ),
    (
        kinds.APPROVAL_REQUESTED,
        {
            "approval": APPROVAL,
            "task": TASK,
            "agent": "ledger-bot",
            "user": "alice@example.com",
            "action": PAY,
            "resource": 'Payments::Account::"ops"',
            "request_digest": DIGEST,
            "context": {"amount": 1_500_000, "vendor": "acme"},
            "roles": ["controller"],
            "policies": ["scope:pay"],
            "reason": "needs approval by controller",
            "expires": "2999-01-01T00:00:00.000000Z",
            "decision": 4,
        },
    ),
    (
        kinds.APPROVAL_GRANTED,
        {
            "approval": APPROVAL,
            "task": TASK,
            "approver": "controller@example.com",
            "role": "controller",
            "reason": "invoice checked",
            "request_digest": DIGEST,
        },
    ),
    (kinds.DECISION, decision(approval=APPROVAL)),
    (
        kinds.CALL_COMPLETED,
        {
            "task": TASK,
            "decision": 7,
            "status": 201,
            "size": 42,
            "digest": "00" * 32,
            "latency_us": 1500,
        },
    ),
    (
        kinds.DECISION,
        decision(
            action=VENDOR,
            context={"vendor": "evil"},
            outcome="deny",
            reason="outside the scope",
            policies=["org-no-agent-vendors"],
            breach=True,
            request_digest="12" * 32,
        ),
    ),
    (
        kinds.BREACH,
        {
            "task": TASK,
            "agent": "ledger-bot",
            "user": "alice@example.com",
            "decision": 9,
            "action": VENDOR,
            "resource": 'Payments::Account::"ops"',
            "scope": SCOPE,
            "scope_entry": 2,
            "policies": ["org-no-agent-vendors"],
            "reason": "outside the scope",
            "quarantine": True,
        },
    ),
    (
        kinds.TASK_QUARANTINED,
        {"task": TASK, "reason": "breach at entry 10", "breach": 10},
    ),
    (
        kinds.DECISION,
        decision(
            task=OTHER,
            user="bob@example.com",
            action=READ,
            context={},
            scope_approved=None,
            scope_approver=None,
            task_opened=None,
            request_digest="34" * 32,
        ),
    ),
]


@dataclass(frozen=True)
class Trail:
    """The written ledger and the key that verifies its checkpoint."""

    store: Store
    verifier: Verifier
    signer: Signer

    def append(self, kind: str, fields: dict[str, Any]) -> int:
        """Append one more entry (signing a checkpoint over it)."""
        ledger = open_ledger(self.store, self.signer)
        index = ledger.append(kind, fields).index
        ledger.close()
        return index


def open_ledger(store: Store, signer: Signer) -> Ledger:
    return Ledger(
        store, signer, origin=ORIGIN, policy=CheckpointPolicy(every=10_000, interval=0)
    )


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def trail(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Trail]:
    """The story above in a fresh ledger, with a checkpoint over all of it: in a
    SQLite file, and again in a PostgreSQL schema of its own."""
    store: Store
    if request.param == "postgres":
        url, schema = request.getfixturevalue("postgres_schema")
        store = PostgresStore(url, schema=schema)
    else:
        store = SqliteStore(tmp_path / "ledger.db")
    signer = Signer.generate(ORIGIN)
    ledger = open_ledger(store, signer)
    for kind, fields in STORY:
        ledger.append(kind, fields)
    ledger.close()
    yield Trail(store, Verifier.from_key_string(signer.verifier_key_string()), signer)
    store.close()
