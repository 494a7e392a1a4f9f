"""``proctor demo``: a short self-check of the ledger on the embedded SQLite store.

It creates a home, appends entries from concurrent writers, signs a checkpoint, proves
an entry's inclusion, verifies the whole ledger, then tampers with a copy and shows the
verifier naming the changed entry. Any step that does not behave exits non-zero.
"""

from __future__ import annotations

import shutil
import sqlite3
import tempfile
import threading
from contextlib import closing
from pathlib import Path

import typer

from proctor.cli.common import HomeOption, out
from proctor.errors import VerifyError
from proctor.home import Home, init
from proctor.ledger import merkle, proofs
from proctor.ledger.checkpoint import open_checkpoint
from proctor.ledger.log import Ledger
from proctor.ledger.verify import verify_ledger

WRITERS = 8
PER_WRITER = 125


class DemoError(Exception):
    """A step of the demo did not behave as told."""


def register(app: typer.Typer) -> None:
    app.command("demo")(demo_command)


def demo_command(home: HomeOption = None) -> None:
    """Show the ledger at work on a fresh home; exit 1 if any step misbehaves."""
    with tempfile.TemporaryDirectory(prefix="proctor-demo-") as scratch:
        where = home or Path(scratch) / "home"
        try:
            run(init(Home(where), origin="proctor.demo/ledger"), Path(scratch))
        except DemoError as exc:
            out.print(f"[red]demo failed:[/red] {exc}")
            raise typer.Exit(1) from exc
    out.print("[green]demo finished: every step behaved as expected[/green]")


def run(home: Home, scratch: Path) -> None:
    out.print(f"[bold]1.[/bold] Created a Proctor home at {home.path}")
    ledger = home.open_ledger()
    try:
        append_concurrently(ledger)
        note = ledger.checkpoint()
    finally:
        ledger.close()
        ledger.store.close()
    out.print("[bold]3.[/bold] Signed a checkpoint (C2SP signed note):")
    out.print(note.decode("utf-8"), end="")
    prove_inclusion(home, note, index=421)
    verify(home, "[bold]5.[/bold] proctor verify on the ledger")
    tamper_copy(home, scratch / "tampered", index=421)


def append_concurrently(ledger: Ledger) -> None:
    def writer(number: int) -> None:
        for step in range(PER_WRITER):
            fields = {"writer": number, "step": step, "amount": 100 * step}
            ledger.append("demo.payment", fields)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(WRITERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    expected = WRITERS * PER_WRITER
    if ledger.size != expected:
        raise DemoError(f"expected {expected} entries, the ledger holds {ledger.size}")
    out.print(
        f"[bold]2.[/bold] {WRITERS} writers appended {expected} entries, each durable "
        "before it was acknowledged"
    )


def prove_inclusion(home: Home, note: bytes, *, index: int) -> None:
    checkpoint = open_checkpoint(note, [home.verifier()])
    with closing(home.open_store()) as store:
        leaf = merkle.leaf_hash(store.entry(index))
        proof = proofs.inclusion_proof(store, index, checkpoint.size)
    merkle.verify_inclusion(leaf, index, checkpoint.size, proof, checkpoint.root)
    out.print(
        f"[bold]4.[/bold] Entry {index} is in the signed tree of {checkpoint.size}: "
        f"an inclusion proof of {len(proof)} hashes verifies against the checkpoint"
    )


def verify(home: Home, title: str) -> None:
    with closing(home.open_store()) as store:
        report = verify_ledger(
            store, [home.verifier()], origin=home.config().ledger.origin
        )
    out.print(
        f"{title}: [green]OK[/green], {report.size} entries and "
        f"{report.checkpoints} checkpoints verified"
    )


def tamper_copy(home: Home, copy_path: Path, *, index: int) -> None:
    shutil.copytree(home.path, copy_path)
    copy = Home(copy_path)
    db = sqlite3.connect(copy.ledger_db)
    for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'"):
        db.execute(f'DROP TRIGGER "{name}"')
    db.execute(
        "UPDATE entries SET body = CAST(replace(CAST(body AS TEXT), "
        "'\"amount\":', '\"amount\":9') AS BLOB) WHERE idx = ?",
        (index,),
    )
    db.commit()
    db.close()
    out.print(
        f"[bold]6.[/bold] Copied the ledger and changed the amount in entry {index}"
    )
    try:
        verify(copy, "   proctor verify on the copy")
    except VerifyError as exc:
        if exc.index != index:
            raise DemoError(
                f"the verifier named entry {exc.index}, not {index}"
            ) from exc
        out.print(f"   proctor verify on the copy: [red]FAILED[/red] as it must: {exc}")
        return
    raise DemoError("the verifier accepted a tampered ledger")
