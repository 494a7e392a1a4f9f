"""A writer for the crash test: appends to a home's ledger from several threads and
acknowledges every durable entry on stdout until it is killed.

Run as ``python crash_writer.py HOME THREADS``. Each acknowledgement is one line,
``INDEX LEAF_HASH FIELDS_DIGEST`` (hashes in hex), written only after ``append``
returned, so every line names an entry the ledger promised to keep.
"""

from __future__ import annotations

import hashlib
import itertools
import sys
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from proctor.home import Home
from proctor.ledger.canonical import canonical
from proctor.ledger.log import Ledger

KIND = "test.crash"


def fields_digest(fields: Mapping[str, Any]) -> str:
    """Return the SHA-256 of the canonical JSON of an entry's own fields, in hex."""
    return hashlib.sha256(canonical(dict(fields))).hexdigest()


def fields_for(writer: int, step: int) -> dict[str, Any]:
    """The fields of one writer's ``step``-th entry: unique, and about 300 bytes."""
    return {
        "writer": writer,
        "step": step,
        "action": "http.request",
        "request": {"method": "POST", "url": f"https://api.test/w/{writer}/{step}"},
        "note": "x" * 200,
    }


class Acknowledger:
    """Write one acknowledgement line per durable entry, whole and flushed."""

    def __init__(self) -> None:
        self._lock = threading.Lock()

    def write(self, index: int, leaf_hash: bytes, digest: str) -> None:
        line = f"{index} {leaf_hash.hex()} {digest}\n"
        with self._lock:
            sys.stdout.write(line)
            sys.stdout.flush()


def append_forever(ledger: Ledger, writer: int, acks: Acknowledger) -> None:
    """Append this writer's entries one after another, acknowledging each."""
    for step in itertools.count():
        fields = fields_for(writer, step)
        receipt = ledger.append(KIND, fields)
        acks.write(receipt.index, receipt.leaf_hash, fields_digest(fields))


def main(argv: list[str]) -> None:
    """Open the home's ledger and append from ``THREADS`` threads until killed."""
    home, threads = Home(Path(argv[1])), int(argv[2])
    ledger = home.open_ledger()
    acks = Acknowledger()
    writers = [
        threading.Thread(target=append_forever, args=(ledger, number, acks))
        for number in range(threads)
    ]
    for thread in writers:
        thread.start()
    for thread in writers:
        thread.join()


if __name__ == "__main__":
    main(sys.argv)
