"""What every benchmark shares: the machine it ran on, percentiles, markdown tables, and
its own section of docs/PERFORMANCE.md, replaced on every run."""

from __future__ import annotations

import os
import platform
import re
import sqlite3
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PERFORMANCE = REPO / "docs" / "PERFORMANCE.md"
OUT = REPO / "bench" / "out"
"""Cached ledgers and scratch files; git-ignored."""

PREAMBLE = """\
# Performance

Figures recorded by `make bench` (`python -m bench`). Each section is rewritten by the
benchmark named in it, with the machine it ran on and the exact command; the notes at
the end are written by hand.
"""


@dataclass(frozen=True)
class Table:
    """A markdown table: a header row and rows of cells already formatted."""

    header: Sequence[str]
    rows: Sequence[Sequence[str]]

    def to_markdown(self) -> str:
        lines = [_row(self.header), _row(["---"] * len(self.header))]
        lines.extend(_row(row) for row in self.rows)

        return "\n".join(lines) + "\n"


def _row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def cpu_model() -> str:
    """Return the CPU model named in /proc/cpuinfo, or the platform's guess."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8")
    except OSError:
        return platform.processor() or "unknown"
    found = re.search(r"^model name\s*:\s*(.+)$", text, re.MULTILINE)

    return found.group(1).strip() if found else "unknown"


def machine(extra: Sequence[str] = ()) -> str:
    """Describe the machine and software in one line."""
    parts = [
        f"{len(os.sched_getaffinity(0))} CPUs (nproc)",
        cpu_model(),
        f"Python {platform.python_version()}",
        f"SQLite {sqlite3.sqlite_version}",
        *extra,
        platform.platform(terse=True),
    ]

    return ", ".join(parts)


def command() -> str:
    """Return the command line that is running, as a reader would type it."""
    arguments = " ".join(sys.argv[1:])
    return f".venv/bin/python -m bench {arguments}".rstrip()


def percentile(values: Sequence[float], fraction: float) -> float:
    """Return the nearest-rank percentile of ``values`` (not empty)."""
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(fraction * len(ordered)) - 1))

    return ordered[rank]


def record(key: str, title: str, body: str, *, extra: Sequence[str] = ()) -> None:
    """Print a benchmark's section and put it in docs/PERFORMANCE.md under ``key``.

    The section sits between two HTML comments naming ``key``; a run replaces it and
    leaves every other section and the hand-written notes alone.
    """
    stamp = datetime.now(UTC).strftime("%Y-%m-%d")
    section = (
        f"## {title}\n\n{body.rstrip()}\n\n"
        f"Machine: {machine(extra)}. Recorded {stamp} with `{command()}`.\n"
    )
    print(section)
    begin, end = f"<!-- bench:{key} -->", f"<!-- /bench:{key} -->"
    block = f"{begin}\n{section}{end}\n"
    text = PERFORMANCE.read_text(encoding="utf-8") if PERFORMANCE.exists() else ""
    text = text or PREAMBLE
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end) + r"\n?", re.DOTALL)
    if pattern.search(text):
        text = pattern.sub(lambda _: block, text, count=1)
    else:
        text = _insert_before_notes(text, block)
    PERFORMANCE.parent.mkdir(parents=True, exist_ok=True)
    PERFORMANCE.write_text(text, encoding="utf-8")


def _insert_before_notes(text: str, block: str) -> str:
    # New sections go above the hand-written notes, so the notes stay last.
    notes = text.find("\n## Notes")
    if notes < 0:
        return text.rstrip("\n") + "\n\n" + block

    return text[: notes + 1] + block + "\n" + text[notes + 1 :]
