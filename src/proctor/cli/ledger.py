"""Ledger commands: verify, checkpoint, proof and log."""

from __future__ import annotations

import base64
import math
import sys
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer
from rich.markup import escape

from proctor.cli.common import HomeOption, JsonOption, emit_json, err, locate, out
from proctor.errors import ConfigError, NoteError, VerifyError
from proctor.forensics.index import check_index
from proctor.ledger import entries, merkle, proofs
from proctor.ledger.checkpoint import open_checkpoint
from proctor.ledger.note import Verifier
from proctor.ledger.tiles import verify_tiles
from proctor.ledger.verify import Report, unsigned_since, verify_ledger

CLOCK_SKEW = 60.0
"""Seconds an entry's time may run ahead of this machine's clock (another writer's
clock) before --signed-within counts it as false."""

proof_app = typer.Typer(
    help="Print inclusion and consistency proofs.", no_args_is_help=True
)
log_app = typer.Typer(help="Read the ledger's entries.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.command("verify")(verify_command)
    app.command("checkpoint")(checkpoint_command)
    app.add_typer(proof_app, name="proof")
    app.add_typer(log_app, name="log")


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def verify_command(
    *,
    home: HomeOption = None,
    tiles: Annotated[
        Path | None, typer.Option(help="Verify a tlog-tiles folder instead of a home.")
    ] = None,
    key: Annotated[
        str | None,
        typer.Option(
            help="Verifier key (name+hash+base64), or a file holding it such as a "
            "home's log.vkey; needed with --tiles."
        ),
    ] = None,
    trusted_checkpoint: Annotated[
        Path | None,
        typer.Option(help="A checkpoint kept outside the home that must still hold."),
    ] = None,
    signed_within: Annotated[
        float | None,
        typer.Option(
            min=0,
            help="Fail when an entry after the latest checkpoint was recorded more "
            "than this many seconds ago (0: when any entry is unsigned).",
        ),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Recompute every leaf, the tree and every checkpoint; exit 1 on a failure."""
    _check_bound(signed_within, tiles=tiles is not None)
    trusted = trusted_checkpoint.read_bytes() if trusted_checkpoint else None
    try:
        if tiles is not None:
            result = _verify_tiles(tiles, key, trusted)
        else:
            result = _verify_home(home, key, trusted, signed_within)
    except VerifyError as exc:
        if as_json:
            emit_json(
                {
                    "ok": False,
                    "error": str(exc),
                    "index": exc.index,
                    "checkpoint": exc.checkpoint,
                }
            )
            raise typer.Exit(1) from exc
        raise
    if as_json:
        emit_json({"ok": True, **result})
        return
    out.print(f"OK: {result['size']} entries verified, root {result['root']}")
    err.print(
        f"{result['checkpoints']} checkpoints verified; latest signed size "
        f"{result['signed_size']}; "
        + (
            f"{_entries(result['unsigned'])} no signature covers, checked against "
            "stored hashes"
            if result["unsigned"]
            else "a signature covers every entry"
        )
        + (
            f" (the first recorded at {result['unsigned_since']})"
            if result.get("unsigned_since")
            else ""
        )
        + (
            f"; trusted checkpoint at size {result['trusted_size']} holds"
            if result["trusted_size"] is not None
            else ""
        )
        + (
            f"; the entry index agrees on {result['indexed']} entries"
            if result.get("indexed") is not None
            else ""
        )
    )


def _check_bound(signed_within: float | None, *, tiles: bool) -> None:
    if signed_within is None:
        return
    if not math.isfinite(signed_within):
        raise ConfigError("--signed-within takes a finite number of seconds")
    if tiles:
        raise ConfigError("--signed-within checks a home's ledger, not --tiles")


def _verify_home(
    path: Path | None,
    key: str | None,
    trusted: bytes | None,
    signed_within: float | None = None,
) -> dict[str, Any]:
    home = locate(path)
    verifier = _verifier(key) if key else home.verifier()
    with closing(home.open_store()) as store:
        report = verify_ledger(
            store, [verifier], origin=home.config().ledger.origin, trusted=trusted
        )
        since = unsigned_since(store, report)
        if signed_within is not None:
            _check_signed(report, since, signed_within)
        indexed = check_index(store)

    return {
        **_summary(report),
        "unsigned_since": since.isoformat() if since else None,
        "indexed": indexed,
    }


def _check_signed(report: Report, since: datetime | None, within: float) -> None:
    # Unsigned entries rest on stored hashes alone, which whoever can write the
    # database can rewrite too, times included: a signer that stopped leaves them
    # so. A time ahead of this clock, or none, is not taken on trust.
    if report.unsigned <= 0:
        return
    seconds = (datetime.now(UTC) - since).total_seconds() if since else None
    if seconds is not None and within > 0 and -CLOCK_SKEW <= seconds <= within:
        return
    if seconds is None:
        waited = "has no readable time with its UTC offset"
    elif seconds < 0:
        waited = f"claims to be recorded {-seconds:.1f} s from now"
    else:
        waited = f"was recorded {seconds:.1f} s ago"
    first = report.covered
    raise VerifyError(
        f"no signed checkpoint covers {_entries(report.unsigned)} from entry "
        f"{first}, which {waited}; --signed-within allows {within + 0:g} s",
        index=first,
    )


def _entries(count: int) -> str:
    return f"{count} entry" if count == 1 else f"{count} entries"


def _verifier(key: str) -> Verifier:
    # No verifier key is also the name of a file, so a name that is one is read.
    path = Path(key)
    text = path.read_text(encoding="utf-8").strip() if path.is_file() else key
    try:
        return Verifier.from_key_string(text)
    except NoteError as exc:
        raise ConfigError(f"--key: {exc}") from exc


def _verify_tiles(
    folder: Path, key: str | None, trusted: bytes | None
) -> dict[str, Any]:
    if not key:
        raise ConfigError("--tiles needs --key with the log's verifier key")
    if not folder.is_dir():
        raise ConfigError(f"--tiles {folder} is not a folder")
    verifiers = [_verifier(key)]
    checkpoint = verify_tiles(folder, verifiers)
    trusted_size = None
    if trusted is not None:
        pinned = open_checkpoint(trusted, verifiers)
        if pinned.size > checkpoint.size:
            raise VerifyError(
                f"the log was truncated: the trusted checkpoint is at size "
                f"{pinned.size} but the log's is at {checkpoint.size}",
                checkpoint=pinned.size,
            )
        # Both checkpoints now hold over the same entries, so the log extends it.
        verify_tiles(folder, verifiers, checkpoint=trusted)
        trusted_size = pinned.size

    return {
        "size": checkpoint.size,
        "root": b64(checkpoint.root),
        "checkpoints": 1,
        "signed_size": checkpoint.size,
        "unsigned": 0,
        "unsigned_since": None,
        "trusted_size": trusted_size,
    }


def _summary(report: Report) -> dict[str, Any]:
    return {
        "size": report.size,
        "root": b64(report.root),
        "checkpoints": report.checkpoints,
        "signed_size": report.signed_size,
        "unsigned": report.unsigned,
        "trusted_size": report.trusted_size,
    }


def checkpoint_command(home: HomeOption = None) -> None:
    """Sign a checkpoint of the ledger now and print it."""
    ledger = locate(home).open_ledger()
    try:
        note = ledger.checkpoint()
    finally:
        ledger.close()
        ledger.store.close()
    out.print(note.decode("utf-8"), end="")


@proof_app.command("inclusion")
def inclusion_command(
    index: int,
    size: Annotated[
        int | None, typer.Option(help="Tree size (default: the latest checkpoint's).")
    ] = None,
    home: HomeOption = None,
) -> None:
    """Print the proof that entry INDEX is in the tree of SIZE entries, as JSON."""
    with closing(locate(home).open_store()) as store:
        if size is None:
            latest = store.latest_checkpoint()
            size = latest.size if latest else store.size()
        proof = proofs.inclusion_proof(store, index, size)
        emit_json(
            {
                "index": index,
                "size": size,
                "leaf_hash": b64(merkle.leaf_hash(store.entry(index))),
                "root": b64(proofs.root(store, size)),
                "proof": [b64(node) for node in proof],
            }
        )


@proof_app.command("consistency")
def consistency_command(old: int, new: int, home: HomeOption = None) -> None:
    """Print the proof that the tree of OLD entries is a prefix of NEW, as JSON."""
    with closing(locate(home).open_store()) as store:
        proof = proofs.consistency_proof(store, old, new)
        emit_json(
            {
                "old_size": old,
                "new_size": new,
                "old_root": b64(proofs.root(store, old)),
                "new_root": b64(proofs.root(store, new)),
                "proof": [b64(node) for node in proof],
            }
        )


@log_app.command("show")
def show_command(
    start: Annotated[int, typer.Option("--from", help="First entry index.")] = 0,
    limit: Annotated[int, typer.Option(help="How many entries at most.")] = 50,
    home: HomeOption = None,
    as_json: JsonOption = False,
) -> None:
    """Print entries in order, one line each (or one JSON object per line)."""
    with closing(locate(home).open_store()) as store:
        for data in store.entries(start, start + limit):
            if as_json:
                sys.stdout.write(data.decode("utf-8") + "\n")
                continue
            out.print(_line(entries.decode(data)))


def _line(entry: dict[str, Any]) -> str:
    index, stamp, kind = (escape(str(entry.get(key))) for key in entries.ENVELOPE)
    fields = "  ".join(
        f"[dim]{escape(key)}=[/dim]{escape(orjson.dumps(value).decode())}"
        for key, value in sorted(entry.items())
        if key not in entries.ENVELOPE
    )

    return f"[bold]#{index}[/bold] {stamp} [cyan]{kind}[/cyan]  {fields}"
