"""Proctor's benchmarks: each prints a markdown table and records it, with the machine
and the exact command, in its own section of docs/PERFORMANCE.md.

Run them all with ``make bench`` (``python -m bench``), or one group or benchmark by
name, e.g. ``python -m bench ledger`` or ``python -m bench ledger.verify``.
"""
