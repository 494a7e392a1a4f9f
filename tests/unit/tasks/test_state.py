"""The authority projection: folding entries in order rebuilds tasks and approvals."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from proctor import kinds
from proctor.ledger.log import CheckpointPolicy, Ledger
from proctor.ledger.note import Signer
from proctor.storage.sqlite import SqliteStore
from proctor.tasks.state import Authority, TaskState


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    store = SqliteStore(tmp_path / "ledger.db")
    ledger = Ledger(
        store,
        Signer.generate("proctor.test/state"),
        origin="proctor.test/state",
        policy=CheckpointPolicy(every=1000, interval=0),
    )
    yield ledger
    ledger.close()
    store.close()


def opened(task: str, roles: list[str]) -> dict[str, Any]:
    return {
        "task": task,
        "user": "u@example.com",
        "agent": "bot",
        "request": "do it",
        "scope": {"digest": "d", "cedar": "", "text": "", "format": "toml"},
        "expires": "2999-01-01T00:00:00.000000Z",
        "approval": {"roles": roles, "policies": []},
    }


class TestTasks:
    def test_needs_every_named_approver(self, ledger: Ledger) -> None:
        """A scope needing a controller and a CFO is active only after both."""
        authority = Authority(ledger.store)
        ledger.append(kinds.TASK_OPENED, opened("t1", ["controller", "cfo"]))
        ledger.append(
            kinds.TASK_APPROVED,
            {"task": "t1", "approver": "c@example.com", "role": "controller"},
        )
        authority.sync()
        halfway = authority.task("t1")
        ledger.append(
            kinds.TASK_APPROVED,
            {"task": "t1", "approver": "f@example.com", "role": "cfo"},
        )
        authority.sync()
        done = authority.task("t1")

        assert halfway is not None
        assert halfway.state is TaskState.PENDING
        assert done is not None
        assert done.state is TaskState.ACTIVE
        assert done.granted_roles == ("controller", "cfo")

    def test_entry_naming_an_unknown_task_is_skipped(self, ledger: Ledger) -> None:
        """An approval of a task no entry opened leaves the projection usable."""
        authority = Authority(ledger.store)
        ledger.append(
            kinds.TASK_APPROVED,
            {"task": "ghost", "approver": "x@example.com", "role": "controller"},
        )
        ledger.append(kinds.TASK_OPENED, opened("t2", []))
        authority.sync()
        task = authority.task("t2")

        assert authority.task("ghost") is None
        assert task is not None
        assert task.state is TaskState.ACTIVE
        assert authority.applied == 2

    def test_ended_task_stays_ended(self, ledger: Ledger) -> None:
        """A revoked task is not revived by a later close."""
        authority = Authority(ledger.store)
        ledger.append(kinds.TASK_OPENED, opened("t3", []))
        ledger.append(kinds.TASK_REVOKED, {"task": "t3", "by": "ops", "reason": "stop"})
        ledger.append(kinds.TASK_CLOSED, {"task": "t3", "by": "ops", "reason": "done"})
        authority.sync()
        task = authority.task("t3")

        assert task is not None
        assert task.state is TaskState.REVOKED
        assert task.ended == 1


class TestListening:
    def test_own_appends_are_folded_without_reading_them_back(
        self, ledger: Ledger, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """As the ledger's listener, the projection takes each entry as appended."""
        authority = Authority(ledger.store)
        ledger.listen(authority.fold_appended)
        reads: list[int] = []
        reading = ledger.store.entries

        def counted(start: int = 0, end: int | None = None) -> Iterator[bytes]:
            reads.append(start)
            return reading(start, end)

        monkeypatch.setattr(ledger.store, "entries", counted)
        ledger.append(kinds.TASK_OPENED, opened("t4", []))
        ledger.append(kinds.TASK_REVOKED, {"task": "t4", "by": "ops", "reason": "x"})
        task = authority.task("t4")

        assert reads == []
        assert authority.applied == 2
        assert task is not None
        assert task.state is TaskState.REVOKED

    def test_entries_appended_elsewhere_are_read_first(
        self, ledger: Ledger, tmp_path: Path
    ) -> None:
        """An entry another writer slipped in is folded before this ledger's next."""
        authority = Authority(ledger.store)
        ledger.listen(authority.fold_appended)
        ledger.append(kinds.TASK_OPENED, opened("t5", []))
        other = SqliteStore(tmp_path / "ledger.db")
        try:
            elsewhere = Ledger(
                other,
                Signer.generate("proctor.test/state"),
                origin="proctor.test/state",
                policy=CheckpointPolicy(every=1000, interval=0),
            )
            elsewhere.append(
                kinds.TASK_REVOKED, {"task": "t5", "by": "cli", "reason": "stop"}
            )
            elsewhere.close()
        finally:
            other.close()
        ledger.append(kinds.TASK_OPENED, opened("t6", []))
        revoked = authority.task("t5")

        assert authority.applied == 3
        assert revoked is not None
        assert revoked.state is TaskState.REVOKED
        assert authority.task("t6") is not None
