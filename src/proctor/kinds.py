"""The entry types Proctor writes, one constant each, and what their fields carry.

Every state change is an entry; the tables of tasks and approvals are projections of
these (see :mod:`proctor.tasks.state`) and ``proctor reindex`` rebuilds them.
"""

from __future__ import annotations

POLICY_PUBLISHED = "policy.published"
"""An organisation policy set came into force: ``digest`` and every file's full text."""

PERSON_ADDED = "person.added"
"""An approver, auditor or admin got a key: ``person``, ``roles``, ``key_id``."""

PERSON_ROTATED = "person.rotated"
"""A person's API key was replaced, ending the old one: ``person``, ``key_id``."""

SECRET_ROTATED = "secret.rotated"
"""A vault secret got a new version: ``secret``, ``version``, ``fingerprint``."""

TASK_OPENED = "task.opened"
"""A user delegated work: ``task``, ``user``, ``agent``, ``request`` in their words,
``scope`` (text, format, Cedar, digest), ``expires`` and the ``approval`` it needs."""

TASK_APPROVED = "task.approved"
"""An approver approved a task's scope: ``task``, ``approver``, ``role``, ``reason``."""

TASK_REJECTED = "task.rejected"
"""An approver refused a task's scope: ``task``, ``approver``, ``reason``."""

TASK_REVOKED = "task.revoked"
"""A task was revoked: ``task``, ``by``, ``reason``. Its tokens stop working."""

TASK_CLOSED = "task.closed"
"""A task's work is done: ``task``, ``by``, ``reason``."""

TASK_QUARANTINED = "task.quarantined"
"""A breach stopped a task: ``task``, ``reason``, ``breach`` (the entry index)."""

TOKEN_ISSUED = "token.issued"
"""A task token was handed out: ``task``, ``jti``, ``agent``, ``user``, ``expires``."""

TOKEN_REVOKED = "token.revoked"
"""One task token was revoked: ``task``, ``jti``, ``by``, ``reason``."""

REASONING = "reasoning.recorded"
"""The agent said why: ``task``, ``text``, ``source``; ``trace``, ``tool_call``."""

DECISION = "decision"
"""One call decided: who, which task, the request as sent (secrets removed), the
action, the outcome, the policies and digests, the approval and the reasoning."""

APPROVAL_REQUESTED = "approval.requested"
"""A call waits for a person: ``approval``, ``task``, ``action``, ``request_digest``,
the key ``context``, the ``roles`` needed, ``reason``, ``expires``, ``decision``."""

APPROVAL_GRANTED = "approval.granted"
"""An approver released one exact call: ``approval``, ``task``, ``approver``, ``role``,
``reason``."""

APPROVAL_DENIED = "approval.denied"
"""An approver refused one exact call: ``approval``, ``task``, ``approver``,
``reason``."""

BREACH = "breach"
"""A call outside the task's approved scope: ``task``, ``decision``, ``action``,
``scope`` digest, ``policies``, and whether the task is ``quarantined``."""

CALL_COMPLETED = "call.completed"
"""What came back: ``task``, ``decision``, ``status``, ``size``, ``digest``,
``latency_us``, or ``error``."""

AUTH_REFUSED = "auth.refused"
"""A call without a usable task token: ``reason`` and what the request was."""
