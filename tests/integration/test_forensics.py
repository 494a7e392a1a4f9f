"""Forensics on ledgers the real pipeline wrote, on SQLite and on PostgreSQL: the
trace of a task, the approver of a large payment found in one command, breaches,
exports that verify, and an index whose rebuild equals its incremental catch-up."""

from __future__ import annotations

import asyncio
import hashlib
import io
import shutil
import sqlite3
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pytest

from proctor import kinds
from proctor.forensics import Forensics, Selection, build_query, export_jsonl
from proctor.forensics.export import verify_jsonl
from proctor.forensics.index import ACTIONS, COLUMNS, STATE, TABLE, Index
from proctor.gateway.pipeline import Call, Pipeline, Verdict
from proctor.home import Home
from proctor.ledger import entries
from proctor.runtime import Runtime
from proctor.tasks.people import Person
from proctor.tasks.service import ScopeText
from proctor.tasks.state import Task

from .conftest import Cli, Result

ASSETS = Path(__file__).resolve().parents[1] / "assets" / "policy"
PAY = 'Payments::Action::"CreatePayment"'
READ = 'Payments::Action::"ReadInvoice"'
VENDOR = 'Payments::Action::"CreateVendor"'
CONTROLLER = "controller@example.com"


def corrupt_leaf(home: Home, index: int) -> None:
    """Zero the stored leaf hash of entry ``index``, past the append-only guards."""
    ledger = home.config().ledger
    where = f"WHERE level = 0 AND idx = {int(index)}"
    if ledger.database_url is None:
        db = sqlite3.connect(home.ledger_db)
        triggers = db.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'")
        for (name,) in triggers.fetchall():
            db.execute(f'DROP TRIGGER "{name}"')
        db.execute(f"UPDATE nodes SET hash = zeroblob(32) {where}")
        db.commit()
        db.close()
        return
    with psycopg.connect(ledger.database_url, autocommit=True) as db:
        # A superuser's replica role fires no triggers, the guards among them.
        db.execute("SET session_replication_role = replica")
        nodes = f'"{ledger.database_schema}".nodes'
        db.execute(f"UPDATE {nodes} SET hash = decode(repeat('00', 32), 'hex') {where}")


def edit_index(home: Home, statement: str) -> None:
    """Run SQL on the entry index's tables (``{table}``, ``{actions}``, ``{state}``)
    as anyone with write access could."""
    ledger = home.config().ledger
    names = {"table": TABLE, "actions": ACTIONS, "state": STATE}
    if ledger.database_url is None:
        with sqlite3.connect(home.ledger_db) as db:
            db.execute(statement.format(**names))
        return
    schema = f'"{ledger.database_schema}"'
    with psycopg.connect(ledger.database_url, autocommit=True) as db:
        db.execute(
            statement.format(**{key: f"{schema}.{name}" for key, name in names.items()})
        )


def verify_edited(story: Story, cli: Cli, statement: str) -> Result:
    """Edit the index with ``statement``, run `proctor verify` on it, then put the
    index back with `proctor reindex`; return what verify said."""
    home = str(story.home.path)
    edit_index(story.home, statement)
    verified = cli("verify", "--home", home)
    cli("reindex", "--home", home)

    return verified


def call(action: str, context: dict[str, Any], *, approval: str | None = None) -> Call:
    resource = (
        'Payments::Invoice::"inv-1"' if action == READ else 'Payments::Account::"ops"'
    )
    request = {"method": "POST", "path": "/payments", "body": context}
    digest = hashlib.sha256(
        repr((action, sorted(context.items()))).encode()
    ).hexdigest()
    return Call(
        "http",
        "finance",
        action,
        resource,
        context,
        request,
        digest,
        credential="finance-api-key",
        approval=approval,
    )


class Agent:
    """Calls through the pipeline as a front door would, and reports outcomes."""

    def __init__(self, runtime: Runtime, task: Task) -> None:
        self.pipeline: Pipeline = runtime.pipeline()
        self.token = runtime.service.issue_token(task.id, by="test").token

    def send(self, action: str, context: dict[str, Any], **kwargs: Any) -> Verdict:
        async def go() -> Verdict:
            claims = await self.pipeline.authenticate(
                self.token, door="http", target="finance", request={"path": "/payments"}
            )
            if isinstance(claims, Verdict):
                return claims
            verdict = await self.pipeline.authorize(
                claims, call(action, context, **kwargs)
            )
            if verdict.allowed:
                await self.pipeline.complete(
                    verdict, status=201, size=17, digest="0" * 64, latency_us=900
                )
            return verdict

        return asyncio.run(go())


@dataclass(frozen=True)
class Story:
    """What the scenario did, by entry index."""

    home: Home
    task: str
    other: str
    held: int
    released: int
    granted: int
    small: int
    refused: int
    breach: int


def open_task(runtime: Runtime, controller: Person, user: str, request: str) -> Task:
    text = (ASSETS / "scopes" / "invoices.toml").read_text()
    task = runtime.service.open_task(
        user=user,
        agent="ledger-bot",
        request=request,
        scope=ScopeText.parse(text, format="toml"),
        by="test",
    )
    return runtime.service.approve_task(task.id, controller, "scope fits the request")


@pytest.fixture
def story(store_home: Home) -> Story:
    """Alice's task: a read, a held payment approved and released, a small one, a
    held one refused, then a breach that quarantines it; and Bob's task: a read."""
    for source in (ASSETS / "org").iterdir():
        shutil.copy(source, store_home.policies / source.name)
    runtime = Runtime.open(store_home)
    try:
        key = runtime.people.add(CONTROLLER, ["approver"], ["controller"])
        controller = runtime.people.authenticate(key)
        task = open_task(
            runtime, controller, "alice@example.com", "Pay December's invoices"
        )
        agent = Agent(runtime, task)
        runtime.service.record_reasoning(task, "invoice inv-1 is due", source="api")
        agent.send(READ, {})
        runtime.service.record_reasoning(task, "acme must be paid", source="api")
        held = agent.send(PAY, {"amount": 12_000, "vendor": "acme"})
        assert held.approval is not None
        assert held.entry is not None
        granted = runtime.service.grant(held.approval, controller, "invoice checked")
        released = agent.send(
            PAY, {"amount": 12_000, "vendor": "acme"}, approval=held.approval
        )
        small = agent.send(PAY, {"amount": 4_000, "vendor": "globex"})
        refused = agent.send(PAY, {"amount": 30_000, "vendor": "acme"})
        assert refused.approval is not None
        runtime.service.deny(refused.approval, controller, "wrong vendor account")
        breach = agent.send(VENDOR, {"vendor": "shady-ltd"})
        other = open_task(runtime, controller, "bob@example.com", "Read the invoices")
        Agent(runtime, other).send(READ, {})
        runtime.ledger.checkpoint()
    finally:
        runtime.close()
    assert None not in (released.entry, small.entry, refused.entry, breach.entry)
    return Story(
        store_home,
        task.id,
        other.id,
        held.entry,
        released.entry,  # type: ignore[arg-type]
        granted.decided,  # type: ignore[arg-type]
        small.entry,  # type: ignore[arg-type]
        refused.entry,  # type: ignore[arg-type]
        breach.entry,  # type: ignore[arg-type]
    )


class TestTrace:
    def test_story_in_order(self, story: Story) -> None:
        """The trace runs from the request to the quarantine, entry by entry."""
        with Forensics.open(story.home) as forensics:
            trace = forensics.trace(story.task)
        types = [event.type for event in trace.events]

        assert types[:3] == [kinds.TASK_OPENED, kinds.TASK_APPROVED, kinds.TOKEN_ISSUED]
        assert types[-3:] == [kinds.DECISION, kinds.BREACH, kinds.TASK_QUARANTINED]
        assert [e.index for e in trace.events] == sorted(e.index for e in trace.events)
        assert trace.state == "quarantined"
        assert trace.request == "Pay December's invoices"
        released = next(e for e in trace.events if e.index == story.released)
        assert f"granted by {CONTROLLER} #{story.granted}" in released.summary
        assert released.tone == "allow"
        assert trace.counts["call.completed"] == 3


class TestFind:
    def test_who_approved_the_transfer(self, story: Story) -> None:
        """One query names the approver, when, the exact request and the proofs."""
        with Forensics.open(story.home) as forensics:
            found = forensics.find(
                build_query(
                    actions=["CreatePayment"], where=["amount>=10000"], decision="allow"
                ),
                proofs=True,
            )

        (finding,) = found.results
        answer = finding.story
        assert answer is not None
        assert answer.approval is not None
        (signoff,) = answer.approval.signoffs
        assert (signoff.approver, signoff.index) == (CONTROLLER, story.granted)
        assert signoff.reason == "invoice checked"
        assert answer.approval.binds is True
        assert answer.approval.held == story.held
        assert answer.request["body"] == {"amount": 12_000, "vendor": "acme"}
        assert answer.completion is not None
        assert answer.completion.status == 201
        assert answer.reasoning[0].text == "acme must be paid"
        assert answer.task.scope_approval is not None
        assert all(proof.verified for proof in answer.proofs)
        assert story.granted in {proof.index for proof in answer.proofs}

    @pytest.mark.parametrize(
        ("filters", "expected"),
        [
            ({"user": "bob@example.com"}, 1),
            ({"decision": "needs_approval"}, 2),
            ({"breach": True}, 1),
            ({"where": ["vendor=globex"]}, 1),
            ({"actions": ["CreatePayment"], "where": ["amount>=10000"]}, 3),
            ({"since": "1h"}, 7),
        ],
    )
    def test_filters(
        self, story: Story, filters: dict[str, Any], expected: int
    ) -> None:
        """Filters on user, decision, breach, context and time narrow the results."""
        with Forensics.open(story.home) as forensics:
            found = forensics.find(build_query(**filters))

        assert len(found.results) == expected

    def test_breaches(self, story: Story) -> None:
        """The breach is listed with its quarantine."""
        with Forensics.open(story.home) as forensics:
            (finding,) = forensics.breaches(build_query()).results

        assert finding.index == story.breach
        assert finding.story is not None
        assert finding.story.breach_record is not None
        assert finding.story.breach_record.quarantined is not None


class TestIndex:
    def test_rebuild_equals_incremental(self, story: Story) -> None:
        """Rows caught up while the ledger grew equal rows rebuilt in one pass."""
        with Forensics.open(story.home) as forensics:
            forensics.refresh()
            incremental = rows(forensics.index)
            rebuilt_count = forensics.index.rebuild(forensics.store)
            rebuilt = rows(forensics.index)

        assert rebuilt_count == len(incremental)
        assert rebuilt == incremental

    def test_index_lives_beside_the_ledger(self, story: Story) -> None:
        """The index is in the ledger's database and verification ignores it."""
        with Forensics.open(story.home) as forensics:
            forensics.refresh()
            size = forensics.store.size()
            assert Index.of(forensics.store).applied() == size


def rows(index: Index) -> list[tuple[Any, ...]]:
    table = index.sql.table(TABLE)
    return index.sql.query(f"SELECT {', '.join(COLUMNS)} FROM {table} ORDER BY idx")


class TestExports:
    def test_jsonl_verifies(self, story: Story) -> None:
        """A complete and a selected export both verify against their checkpoint."""
        verifier = story.home.verifier()
        with Forensics.open(story.home) as forensics:
            forensics.refresh()
            for selection in (Selection(), Selection(task=story.other)):
                sink = io.BytesIO()
                export_jsonl(
                    forensics.store,
                    sink,
                    verifiers=[verifier],
                    selection=selection,
                    index=forensics.index,
                )
                report = verify_jsonl(sink.getvalue().splitlines(), [verifier])
                assert report.complete is selection.is_everything
                assert report.entries > 0


class TestCommands:
    def test_find_names_the_approver(self, story: Story, cli: Cli) -> None:
        """`proctor find` answers who approved the payment, as text and JSON."""
        home = str(story.home.path)
        args = (
            "find",
            "--home",
            home,
            "--action",
            PAY,
            "--where",
            "amount>=10000",
            "--decision",
            "allow",
        )
        text = cli(*args, "--prove")
        data = cli(*args, "--json")

        assert text.code == 0
        assert f"granted by {CONTROLLER} (controller)" in text.out
        assert "verified" in text.out
        finding = orjson.loads(data.out)["results"][0]
        assert finding["story"]["approval"]["signoffs"][0]["approver"] == CONTROLLER

    def test_where_refusal_is_bad_usage(self, story: Story, cli: Cli) -> None:
        """A malformed --where exits 2 with the reason on stderr."""
        result = cli("find", "--home", str(story.home.path), "--where", "amount>=lots")

        assert result.code == 2
        assert "amount compares integers" in result.err
        assert result.out == ""

    def test_trace_lines_carry_entry_indexes(self, story: Story, cli: Cli) -> None:
        """Every line of `proctor trace` after the heading starts with its entry."""
        result = cli("trace", "--home", str(story.home.path), story.task)
        lines = result.out.splitlines()[3:]

        assert result.code == 0
        assert all(line.lstrip().startswith("#") for line in lines)
        assert any("BREACH" in line for line in lines)
        trace = orjson.loads(
            cli("trace", "--home", str(story.home.path), story.task, "--json").out
        )
        assert trace["state"] == "quarantined"

    def test_explain_exits_one_when_a_proof_fails(self, story: Story, cli: Cli) -> None:
        """With a stored leaf hash corrupted, explain says so and exits 1."""
        home = str(story.home.path)
        sound = cli("explain", "--home", home, str(story.released))
        corrupt_leaf(story.home, story.released)
        broken = cli("explain", "--home", home, str(story.released))

        assert sound.code == 0
        assert broken.code == 1
        assert "NOT proven" in broken.out

    def test_verify_checks_the_entry_index(self, story: Story, cli: Cli) -> None:
        """An index row hidden, changed or invented, so that a search would miss or
        make up a call, fails `proctor verify`, naming the entry; a sound index is
        reported, and `proctor reindex` repairs an edited one."""
        home = str(story.home.path)
        cli("breaches", "--home", home)
        sound = cli("verify", "--home", home)
        hidden = verify_edited(
            story, cli, f"DELETE FROM {{table}} WHERE idx = {story.breach}"
        )
        changed = verify_edited(
            story,
            cli,
            f"UPDATE {{table}} SET outcome = 'allow' WHERE idx = {story.refused}",
        )
        invented = verify_edited(
            story,
            cli,
            "INSERT INTO {table} (idx, time_us, type, breach) "
            "VALUES (100000, 0, 'decision', 1)",
        )
        repaired = cli("verify", "--home", home)

        assert sound.code == 0
        assert "the entry index agrees" in sound.err
        assert hidden.code == 1
        assert f"row for entry {story.breach} is missing" in hidden.err
        assert changed.code == 1
        assert f"row for entry {story.refused} was changed (outcome)" in changed.err
        assert invented.code == 1
        assert "a row for entry 100000 that no entry gives" in invented.err
        assert repaired.code == 0, "proctor reindex rebuilds the index"

    def test_verify_checks_the_list_of_actions(self, story: Story, cli: Cli) -> None:
        """Searches find an action by its short name through the index's list of
        actions: an action taken off the list, which would hide every payment from
        `find --action CreatePayment`, or one put on it, fails `proctor verify`."""
        home = str(story.home.path)
        cli("breaches", "--home", home)
        edit_index(story.home, f"DELETE FROM {{actions}} WHERE action = '{PAY}'")
        hidden = cli("verify", "--home", home)
        found = cli("find", "--home", home, "--action", "CreatePayment")
        cli("reindex", "--home", home)
        invented = verify_edited(
            story,
            cli,
            "INSERT INTO {actions} (action) VALUES ('Payments::Action::\"Refund\"')",
        )
        repaired = cli("verify", "--home", home)
        with closing(story.home.open_store()) as store:
            actions = [entries.decode(data).get("action") for data in store.entries()]
        first = actions.index(PAY)

        assert "no action in the ledger is named CreatePayment" in found.err
        assert hidden.code == 1
        assert f"lacks {PAY}, first named by entry {first}" in hidden.err
        assert invented.code == 1
        assert 'names Payments::Action::"Refund"' in invented.err
        assert repaired.code == 0, repaired.err

    def test_verify_refuses_rows_below_the_first_entry(
        self, story: Story, cli: Cli
    ) -> None:
        """A row at index -1, later than every entry, would end every search with
        an --until bound before the first entry: verify names it."""
        home = str(story.home.path)
        cli("breaches", "--home", home)
        forged = verify_edited(
            story,
            cli,
            "INSERT INTO {table} (idx, time_us, type, breach) "
            "SELECT -1, max(time_us) + 1, 'call.completed', 0 FROM {table}",
        )
        repaired = cli("verify", "--home", home)

        assert forged.code == 1
        assert "a row for entry -1 that no entry gives" in forged.err
        assert repaired.code == 0, repaired.err

    def test_verify_notices_rows_without_their_state(
        self, story: Story, cli: Cli
    ) -> None:
        """The index's state says how many entries its rows cover; without it the
        check would have nothing to go by. Verify says so, and the next search
        folds every entry again instead of failing on the rows left behind."""
        home = str(story.home.path)
        cli("breaches", "--home", home)
        edit_index(
            story.home,
            f"UPDATE {{table}} SET agent = 'other' WHERE idx = {story.breach}",
        )
        edit_index(story.home, "DROP TABLE {state}")
        orphaned = cli("verify", "--home", home)
        searched = cli("breaches", "--home", home, "--json")
        rebuilt = cli("verify", "--home", home)

        assert orphaned.code == 1
        assert "rows without the state" in orphaned.err
        assert searched.code == 1, searched.err
        results = orjson.loads(searched.out)["results"]
        assert story.breach in [found["index"] for found in results]
        assert rebuilt.code == 0, rebuilt.err
        assert "the entry index agrees" in rebuilt.err

    def test_trace_unknown_task_fails(self, story: Story, cli: Cli) -> None:
        """Tracing a task no entry names exits 1 and says so."""
        result = cli("trace", "--home", str(story.home.path), "tsk_missing")

        assert result.code == 1
        assert "no entry names task" in result.err

    def test_breaches_exit_one_when_found(self, story: Story, cli: Cli) -> None:
        """Breaches are findings: listed, and the command exits 1."""
        found = cli("breaches", "--home", str(story.home.path), "--json")
        none = cli("breaches", "--home", str(story.home.path), "--task", story.other)

        assert found.code == 1
        assert orjson.loads(found.out)["results"][0]["index"] == story.breach
        assert none.code == 0

    def test_exports(self, story: Story, cli: Cli, tmp_path: Path) -> None:
        """jsonl to a file verifies; ocsf streams decisions; tiles still work."""
        home = str(story.home.path)
        target = tmp_path / "ledger.jsonl"
        jsonl = cli("export", "--home", home, "--format", "jsonl", "--out", str(target))
        ocsf = cli("export", "--home", home, "--format", "ocsf", "--task", story.task)
        tiles = cli("export", "--home", home, "--out", str(tmp_path / "tiles"))
        bad = cli(
            "export",
            "--home",
            home,
            "--task",
            story.task,
            "--out",
            str(tmp_path / "t2"),
        )

        assert jsonl.code == 0
        verify_jsonl(target.read_bytes().splitlines(), [story.home.verifier()])
        records = [orjson.loads(line) for line in ocsf.out.splitlines()]
        assert {record["class_uid"] for record in records} == {6003}
        assert len(records) == 6
        assert tiles.code == 0
        assert (tmp_path / "tiles" / "checkpoint").is_file()
        assert bad.code == 2
