"""Verify one cached ledger in a fresh process and print the time it took and the
process's peak memory, as one JSON object on stdout.

Run by ``bench.ledger`` as ``python -m bench.verify_child sqlite PATH VKEY`` or
``python -m bench.verify_child postgres SCHEMA VKEY``, so that the peak resident size
belongs to this verification alone.
"""

from __future__ import annotations

import json
import resource
import sys
import time
from contextlib import closing
from pathlib import Path

from bench.stores import ORIGIN, PG_URL
from proctor.ledger.note import Verifier
from proctor.ledger.verify import verify_ledger
from proctor.storage.interface import Store
from proctor.storage.postgres import PostgresStore
from proctor.storage.sqlite import SqliteStore


def peak_rss_mib() -> float:
    """Return this process's peak resident set size so far, in MiB.

    Linux keeps ``ru_maxrss`` across fork and exec, so a child started by a large
    parent reports the parent's peak; VmHWM belongs to this process's own memory.
    """
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text(encoding="ascii").splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def open_store(backend: str, where: str) -> Store:
    """Open the ledger named on the command line."""
    if backend == "sqlite":
        return SqliteStore(Path(where))
    return PostgresStore(PG_URL, schema=where)


def main(argv: list[str]) -> None:
    """Verify the ledger and print its size, seconds and peak memory as JSON."""
    backend, where, vkey = argv[1:4]
    verifier = Verifier.from_key_string(vkey)
    with closing(open_store(backend, where)) as store:
        before = peak_rss_mib()
        began = time.perf_counter()
        report = verify_ledger(store, [verifier], origin=ORIGIN)
        seconds = time.perf_counter() - began
    result = {
        "size": report.size,
        "checkpoints": report.checkpoints,
        "seconds": seconds,
        "rss_before_mib": before,
        "peak_rss_mib": peak_rss_mib(),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv)
