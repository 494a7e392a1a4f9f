"""Steps 5 and 6 of the demo: the ledger read back as an auditor would (the task's
trace, who approved the $10,000 transfer with proof, ``proctor verify``), then a
copy of the ledger changed by hand and caught by the verifier."""

from __future__ import annotations

import base64
import shutil
import sqlite3
from contextlib import closing
from pathlib import Path

from rich.text import Text

from proctor.cli.common import out
from proctor.cli.forensics import decision_lines, trace_lines
from proctor.demo.scenario import CONTROLLER, CREDENTIAL
from proctor.demo.steps import Step, command, money, ok, say
from proctor.demo.story import Paid, Stage
from proctor.errors import VerifyError
from proctor.forensics import DecisionStory, Forensics, Proof, build_query
from proctor.home import Home
from proctor.ledger import merkle
from proctor.ledger.checkpoint import open_checkpoint
from proctor.ledger.verify import Report, verify_ledger

EXPECTED_COUNTS = {
    "decision.allow": 2,
    "decision.deny": 1,
    "decision.needs_approval": 1,
    "breach": 1,
    "approval.requested": 1,
    "approval.granted": 1,
}
"""What the trace of steps 1 to 4 must hold, by entry type (and decision outcome)."""


def read_back(stage: Stage, task: str, paid: Paid) -> None:
    """Step 5: the task's trace, who approved the transfer with proof, verify."""
    with Step(5, "what the ledger says") as step:
        stage.proctor.settle()
        stage.runtime.ledger.checkpoint()
        home = stage.home
        where = f"amount>={paid.amount}"
        with Forensics.open(home) as forensics:
            trace = forensics.trace(task)
            found = forensics.find(
                build_query(actions=["CreatePayment"], where=[where], decision="allow"),
                proofs=True,
            )
        command(f"proctor trace {task} --home {home.path}")
        for line in trace_lines(trace):
            out.print(Text.assemble("  ", line))
        wrong = {
            kind: trace.counts.get(kind, 0)
            for kind, count in EXPECTED_COUNTS.items()
            if trace.counts.get(kind, 0) != count
        }
        step.check(not wrong, f"the trace does not hold what happened: {wrong}")
        indexes = [event.index for event in trace.events]
        step.check(indexes == sorted(indexes), "the trace is out of ledger order")
        step.check(paid.released in indexes, f"#{paid.released} is not in the trace")
        ok(f"{len(trace.events)} entries tell task {task}'s story, in order")

        out.print()
        say(f"Who approved the {money(paid.amount)} transfer?", "bold")
        command(
            f"proctor find --action CreatePayment --where '{where}' --decision allow "
            f"--prove --home {home.path}"
        )
        step.check(len(found.results) == 1, f"{len(found.results)} calls found")
        answer = found.results[0].story
        step.check(answer is not None, "the finding has no story")
        if answer is not None:
            _answer(step, home, answer, paid)
        _verify(step, stage)


def tamper(stage: Stage, paid: Paid, scratch: Path) -> None:
    """Step 6: change one recorded amount in a copy; verify must name the entry."""
    with Step(6, "someone changes a recorded amount") as step:
        copy = Home(scratch / "tampered")
        _copy_public(stage.home, copy)
        old, new = paid.amount, paid.amount // 10
        _change_amount(copy.ledger_db, paid.released, old, new)
        say(
            f"copied the ledger to {copy.path}, dropped its triggers as anyone "
            f"holding the file could, and changed the amount in decision "
            f"#{paid.released} from {money(old)} to {money(new)}"
        )
        command(f"proctor verify --home {copy.path}")
        try:
            _report(copy)
        except VerifyError as exc:
            step.check(
                exc.index == paid.released,
                f"the verifier named entry {exc.index}, not {paid.released}",
            )
            ok(f"proctor verify: FAILED, as it must: {exc}")
            return
        raise step.fail("the verifier accepted a changed ledger")


def _answer(step: Step, home: Home, answer: DecisionStory, paid: Paid) -> None:
    """Check and show the answer to "who approved it?" with its proofs."""
    approval = answer.approval
    step.check(answer.index == paid.released, f"found #{answer.index}")
    step.check(
        approval is not None and approval.id == paid.approval,
        "the transfer names no approval",
    )
    signoffs = [s for s in approval.signoffs if s.granted] if approval else []
    step.check(
        [(s.approver, s.index) for s in signoffs] == [(CONTROLLER, paid.granted)],
        f"the approvers found are {[s.approver for s in signoffs]}",
    )
    step.check(
        approval is not None and approval.binds is True,
        "the approval does not bind the transfer's exact request",
    )
    for line in decision_lines(answer):
        out.print(Text.assemble("  ", line))
    signoff = signoffs[0]
    request = answer.request
    ok(
        f"{signoff.approver} approved it at {signoff.time} (#{signoff.index}), for "
        f"exactly {request.get('method')} {request.get('path')} with digest "
        f"{str(answer.request_digest)[:16]}…"
    )
    step.check(bool(answer.proofs), "no inclusion proof came with the answer")
    step.check(
        all(proof.verified for proof in answer.proofs),
        f"a proof failed: {[p.problem for p in answer.proofs if not p.verified]}",
    )
    for proof in answer.proofs:
        _check_proof(step, home, proof)
    ok(
        f"the {len(answer.proofs)} entries behind that answer are in the signed "
        f"checkpoint of size {answer.proofs[0].size}: each inclusion proof checked "
        "again here, with the log's public key"
    )


def _check_proof(step: Step, home: Home, proof: Proof) -> None:
    """Check one proof from the entry's bytes and the signed note, independently."""
    step.check(proof.checkpoint is not None, f"#{proof.index} has no checkpoint")
    checkpoint = open_checkpoint(
        str(proof.checkpoint).encode(),
        [home.verifier()],
        origin=home.config().ledger.origin,
    )
    with closing(home.open_store()) as store:
        leaf = merkle.leaf_hash(store.entry(proof.index))
    step.check(
        base64.b64encode(leaf).decode() == proof.leaf_hash,
        f"entry #{proof.index}'s leaf hash differs from its proof's",
    )
    hashes = [base64.b64decode(node) for node in proof.hashes]
    merkle.verify_inclusion(leaf, proof.index, checkpoint.size, hashes, checkpoint.root)


def _verify(step: Step, stage: Stage) -> None:
    home = stage.home
    report = _report(home)
    command(f"proctor verify --home {home.path}")
    ok(
        f"proctor verify: OK, {report.size} entries and {report.checkpoints} signed "
        f"checkpoint{'' if report.checkpoints == 1 else 's'} recomputed from the "
        "entries"
    )
    secret = stage.runtime.secrets.vault.get(CREDENTIAL)
    with closing(home.open_store()) as store:
        leaked = [
            index for index, raw in enumerate(store.entries()) if secret.encode() in raw
        ]
    step.check(not leaked, f"the finance API key is in entries {leaked}")
    ok("the finance API key is in no entry, as it never was in the agent's hands")


def _report(home: Home) -> Report:
    with closing(home.open_store()) as store:
        return verify_ledger(
            store, [home.verifier()], origin=home.config().ledger.origin
        )


def _copy_public(home: Home, copy: Home) -> None:
    """Copy what verifying needs, never a private key: config, public key, ledger."""
    copy.path.mkdir(mode=0o700)
    shutil.copy(home.config_file, copy.config_file)
    shutil.copy(home.log_vkey, copy.log_vkey)
    # The backup API copies a live WAL database consistently.
    with (
        closing(sqlite3.connect(home.ledger_db)) as source,
        closing(sqlite3.connect(copy.ledger_db)) as target,
    ):
        source.backup(target)


def _change_amount(database: Path, index: int, old: int, new: int) -> None:
    """Rewrite one amount in one entry, as someone with the file could."""
    with closing(sqlite3.connect(database)) as db:
        triggers = db.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'")
        for (name,) in triggers.fetchall():
            db.execute(f'DROP TRIGGER "{name}"')
        (body,) = db.execute(
            "SELECT body FROM entries WHERE idx = ?", (index,)
        ).fetchone()
        before = f'"amount":{old}'.encode()
        if before not in body:
            raise ValueError(f"entry #{index} records no amount of {old}")
        changed = bytes(body).replace(before, f'"amount":{new}'.encode(), 1)
        db.execute("UPDATE entries SET body = ? WHERE idx = ?", (changed, index))
        db.commit()
