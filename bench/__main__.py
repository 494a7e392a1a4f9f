"""Run the benchmarks named on the command line (groups or single ones), else all.

``python -m bench`` runs everything; ``python -m bench ledger`` runs the ledger group;
``python -m bench ledger.verify`` runs one benchmark.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

from bench import forensics, http_gateway, ledger, mcp_gateway

BENCHMARKS: dict[str, Callable[[], None]] = {
    **ledger.BENCHMARKS,
    **forensics.BENCHMARKS,
    **mcp_gateway.BENCHMARKS,
    **http_gateway.BENCHMARKS,
}


def selected(names: list[str]) -> list[str]:
    """Expand group names (the part before the dot) to their benchmarks, in order."""
    if not names:
        return list(BENCHMARKS)
    chosen = [
        key
        for key in BENCHMARKS
        if any(key == name or key.startswith(name + ".") for name in names)
    ]
    unknown = [
        name
        for name in names
        if not any(key == name or key.startswith(name + ".") for key in BENCHMARKS)
    ]
    if unknown:
        raise SystemExit(f"unknown benchmark {unknown}; known: {list(BENCHMARKS)}")

    return chosen


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("names", nargs="*", help="benchmarks or groups, e.g. ledger")
    arguments = parser.parse_args()
    for name in selected(arguments.names):
        BENCHMARKS[name]()


if __name__ == "__main__":
    main()
