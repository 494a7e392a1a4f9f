"""Streaming exports: JSON lines that verify offline against the checkpoint they
name (complete, or selected with proofs), and OCSF API Activity records."""

from __future__ import annotations

import io
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from proctor.errors import LedgerError, VerifyError
from proctor.forensics import Forensics, Selection, export_jsonl, export_ocsf
from proctor.forensics.export import ocsf_record, verify_jsonl
from proctor.ledger.note import Signer, Verifier

from .conftest import ORIGIN, OTHER, PAY, STORY, TASK, Trail, decision


@pytest.fixture
def forensics(trail: Trail) -> Forensics:
    forensics = Forensics(trail.store, verifiers=[trail.verifier], origin=ORIGIN)
    forensics.refresh()
    return forensics


def jsonl(forensics: Forensics, selection: Selection | None = None) -> list[bytes]:
    sink = io.BytesIO()
    export_jsonl(
        forensics.store,
        sink,
        verifiers=forensics.verifiers,
        origin=ORIGIN,
        selection=selection,
        index=forensics.index,
    )
    return sink.getvalue().splitlines()


def ocsf(
    forensics: Forensics, selection: Selection | None = None
) -> list[dict[str, Any]]:
    sink = io.BytesIO()
    export_ocsf(
        forensics.store, sink, forensics.index, origin=ORIGIN, selection=selection
    )
    return [orjson.loads(line) for line in sink.getvalue().splitlines()]


class TestJsonl:
    def test_complete_export_verifies(self, forensics: Forensics, trail: Trail) -> None:
        """Every leaf recomputes and the entries hash to the named checkpoint."""
        lines = jsonl(forensics)
        report = verify_jsonl(lines, [trail.verifier], origin=ORIGIN)

        assert len(lines) == len(STORY) + 1
        assert (report.entries, report.complete) == (len(STORY), True)
        assert report.checkpoint.size == len(STORY)
        assert orjson.loads(lines[0])["checkpoint"].startswith(ORIGIN)

    def test_lines_hold_the_exact_entries(self, forensics: Forensics) -> None:
        """Each line carries the entry as stored, with its index and leaf hash."""
        line = orjson.loads(jsonl(forensics)[5])

        assert line["index"] == 4
        assert line["entry"] == orjson.loads(forensics.store.entry(4))
        assert "proof" not in line

    def test_selected_export_carries_proofs(
        self, forensics: Forensics, trail: Trail
    ) -> None:
        """A task's entries alone verify one by one through their proofs."""
        lines = jsonl(forensics, Selection(task=OTHER))
        report = verify_jsonl(lines, [trail.verifier])

        assert (report.entries, report.complete) == (1, False)
        assert orjson.loads(lines[0])["selection"] == {"task": OTHER}
        assert orjson.loads(lines[1])["proof"]

    def test_time_selection(self, forensics: Forensics) -> None:
        """A range after every entry selects none of them."""
        future = Selection(since=datetime(2999, 1, 1, tzinfo=UTC))

        assert len(jsonl(forensics, future)) == 1

    def test_changed_entry_is_named(self, forensics: Forensics, trail: Trail) -> None:
        """An entry edited after export fails at its own line."""
        lines = jsonl(forensics)
        lines[5] = lines[5].replace(b"1500000", b"1500001", 1)

        with pytest.raises(VerifyError, match="entry 4 does not match its leaf hash"):
            verify_jsonl(lines, [trail.verifier])

    def test_dropped_entry_is_named(self, forensics: Forensics, trail: Trail) -> None:
        """A complete export missing a line says which entry is missing."""
        lines = jsonl(forensics)
        del lines[3]

        with pytest.raises(VerifyError, match="entry 3 where 2 belongs"):
            verify_jsonl(lines, [trail.verifier])

    def test_truncated_export_fails(self, forensics: Forensics, trail: Trail) -> None:
        """A complete export cut short does not reach the checkpoint's root."""
        with pytest.raises(VerifyError, match="do not hash to the checkpoint"):
            verify_jsonl(jsonl(forensics)[:-1], [trail.verifier])

    def test_wrong_proof_fails(self, forensics: Forensics, trail: Trail) -> None:
        """A selected entry whose proof is altered is not in the checkpoint."""
        lines = jsonl(forensics, Selection(task=TASK))
        line = orjson.loads(lines[1])
        line["proof"] = list(reversed(line["proof"]))
        lines[1] = orjson.dumps(line)

        with pytest.raises(VerifyError, match="is not in the checkpoint"):
            verify_jsonl(lines, [trail.verifier])

    def test_other_key_fails(self, forensics: Forensics) -> None:
        """An export verified with a key that did not sign it fails at once."""
        stranger = Verifier.from_key_string(
            Signer.generate(ORIGIN).verifier_key_string()
        )
        with pytest.raises(VerifyError, match="checkpoint does not verify"):
            verify_jsonl(jsonl(forensics), [stranger])

    def test_not_an_export(self, trail: Trail) -> None:
        """Lines that are not an export are refused on the first."""
        with pytest.raises(VerifyError, match="not a proctor-jsonl header"):
            verify_jsonl([b"{}"], [trail.verifier])

    def test_needs_a_checkpoint(self, forensics: Forensics) -> None:
        """Without a checkpoint the home's key verifies, nothing is exported."""
        stranger = Verifier.from_key_string(
            Signer.generate(ORIGIN).verifier_key_string()
        )
        with pytest.raises(LedgerError, match="does not verify"):
            export_jsonl(forensics.store, io.BytesIO(), verifiers=[stranger])


class TestOcsf:
    def test_one_record_per_decision(self, forensics: Forensics) -> None:
        """Every decision becomes one API Activity record, in ledger order."""
        records = ocsf(forensics)

        assert [r["metadata"]["sequence"] for r in records] == [4, 7, 9, 12]

    def test_class_fields(self, forensics: Forensics) -> None:
        """Class, category, activity, type, time, status and metadata are OCSF's."""
        record = ocsf(forensics)[1]

        assert (record["class_uid"], record["category_uid"]) == (6003, 6)
        assert (record["activity_id"], record["activity_name"]) == (1, "Create")
        assert record["type_uid"] == 600301
        assert isinstance(record["time"], int)
        assert (record["severity_id"], record["status_id"]) == (1, 1)
        assert record["metadata"]["version"] == "1.3.0"
        assert record["metadata"]["product"]["name"] == "Proctor"
        assert record["metadata"]["correlation_uid"] == TASK
        assert record["metadata"]["uid"] == f"{ORIGIN}/7"

    def test_carries_decision_policies_task_and_approval(
        self, forensics: Forensics
    ) -> None:
        """The decision, its policies, the task and the approver are all there."""
        record = ocsf(forensics)[1]

        assert record["actor"]["user"]["email_addr"] == "alice@example.com"
        assert record["actor"]["app_name"] == "ledger-bot"
        assert record["actor"]["session"]["uid"] == TASK
        assert record["actor"]["authorizations"] == [
            {
                "decision": "allow",
                "policy": {
                    "uid": "scope:pay",
                    "name": "scope:pay",
                    "version": "cd" * 32,
                },
            }
        ]
        assert record["api"]["operation"] == PAY
        assert record["http_request"]["url"]["query_string"] == "ref=inv-7"
        assert record["http_response"] == {"code": 201}
        approval = record["unmapped"]["approval"]
        assert approval["approvers"] == ["controller@example.com"]
        assert approval["binds_request"] is True

    def test_denials_and_breaches(self, forensics: Forensics) -> None:
        """A held call is low severity, a breach high; both are failures."""
        held, _, breach, _ = ocsf(forensics)

        assert (held["severity_id"], held["status_id"]) == (2, 2)
        assert (breach["severity_id"], breach["status_id"]) == (4, 2)
        assert breach["unmapped"]["breach_entry"] == 10

    def test_task_selection(self, forensics: Forensics) -> None:
        """Only the selected task's decisions are exported."""
        assert [
            r["unmapped"]["entry"] for r in ocsf(forensics, Selection(task=OTHER))
        ] == [12]

    def test_tool_calls_are_other_activity(self) -> None:
        """An MCP tool call is activity 99, named by its method."""
        entry = {
            **decision(door="mcp", request={"method": "tools/call", "tool": "git_log"}),
            "index": 1,
            "time": "2026-12-03T15:00:00Z",
            "type": "decision",
        }
        record = ocsf_record(entry, [], origin=ORIGIN)

        assert (record["activity_id"], record["type_uid"]) == (99, 600399)
        assert record["activity_name"] == "tools/call"
        assert "http_request" not in record
        assert record["status_id"] == 0
