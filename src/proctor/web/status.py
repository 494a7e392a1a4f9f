"""The ledger's verification status for the console: the whole ledger verified in the
background, the result kept by ledger size, so pages show it without waiting.

A full verification reads every entry, which takes seconds on a large ledger; a page
shows the latest result, says when it was reached and whether entries came since,
and starts a new run when the ledger grew and the last run is old enough. A large
ledger is verified in a child process: in a thread, hashing a million entries would
hold the interpreter lock and slow every page while it runs.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from proctor.errors import ProctorError, VerifyError
from proctor.forensics.index import check_index
from proctor.home import Home
from proctor.ledger.verify import Report, verify_ledger
from proctor.storage.interface import Store

log = logging.getLogger(__name__)

MIN_INTERVAL = 30.0
"""Seconds between the end of one run and the start of the next."""
IN_PROCESS = 50_000
"""Ledgers up to this size are verified in a thread (well under a second)."""
CHILD = "proctor.web.verification"
"""The module a child process runs; nothing imports it, so ``-m`` runs it fresh."""
CHILD_TIMEOUT = 3600.0
"""Seconds a child process may take to verify the ledger (about 15 s a million)."""

OK, FAILED, ERROR = "ok", "failed", "error"


@dataclass(frozen=True)
class Verification:
    """One run of ``verify_ledger`` over the whole ledger, and what it found."""

    outcome: str
    size: int
    verified_at: datetime
    seconds: float
    reason: str | None = None
    index: int | None = None
    checkpoints: int = 0
    signed_size: int = 0

    @property
    def is_ok(self) -> bool:
        return self.outcome == OK

    @property
    def unsigned(self) -> int:
        """Entries past the latest checkpoint, checked against stored hashes only."""
        return self.size - self.signed_size


@dataclass(frozen=True)
class Status:
    """What a page shows: the latest result, the ledger's size now, and whether a
    run is under way."""

    latest: Verification | None
    size: int
    running: bool

    @property
    def is_current(self) -> bool:
        return self.latest is not None and self.latest.size >= self.size

    @property
    def behind(self) -> int:
        """Entries appended since the latest result."""
        return self.size - self.latest.size if self.latest else self.size


class LedgerStatus:
    """Verifies a home's ledger in the background and remembers the latest result."""

    def __init__(
        self,
        home: Home,
        store: Store,
        *,
        min_interval: float = MIN_INTERVAL,
        in_process: int = IN_PROCESS,
    ) -> None:
        self._home = home
        self._store = store
        self.min_interval = min_interval
        self.in_process = in_process
        self._lock = threading.Lock()
        self._latest: Verification | None = None
        self._thread: threading.Thread | None = None
        self._finished = 0.0

    def status(self, *, wait: float = 0.0) -> Status:
        """Return the status now, starting a run when the result is stale.

        ``wait`` seconds at most are spent waiting for a run under way on a small
        ledger, so it shows a fresh result on the first page that asks; a large
        ledger's run takes seconds, and nobody waits for it.
        """
        size = self._store.size()
        thread = self._start_if_stale(size)
        if thread is not None and wait > 0 and size <= self.in_process:
            thread.join(wait)
        with self._lock:
            running = self._thread is not None and self._thread.is_alive()
            return Status(self._latest, size, running)

    def join(self, timeout: float | None = None) -> None:
        """Wait for a run under way to end (for tests and shutdown)."""
        with self._lock:
            thread = self._thread
        if thread is not None:
            thread.join(timeout)

    def _start_if_stale(self, size: int) -> threading.Thread | None:
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                return self._thread
            latest = self._latest
            if latest is not None and latest.size >= size:
                return None
            if latest is not None and (
                time.monotonic() - self._finished < self.min_interval
            ):
                return None
            self._thread = threading.Thread(
                target=self._run,
                args=(size,),
                name="proctor-console-verify",
                daemon=True,
            )
            self._thread.start()
            return self._thread

    def _run(self, size: int) -> None:
        if size <= self.in_process:
            result = verify_store(self._home, self._store)
        else:
            result = _verify_apart(self._home.path)
        with self._lock:
            self._latest = result
            self._finished = time.monotonic()
        log.info(
            "ledger verified outcome=%s size=%d seconds=%.3f",
            result.outcome,
            result.size,
            result.seconds,
        )


def verify_store(home: Home, store: Store) -> Verification:
    """Verify the whole ledger in ``store`` with the home's key; never raises."""
    started = time.monotonic()
    size = _size(store)
    try:
        verifier, origin = home.verifier(), home.config().ledger.origin
        report = verify_ledger(store, [verifier], origin=origin)
        # Searches answer from the entry index: it must agree with the entries too.
        check_index(store)
    except VerifyError as exc:
        return Verification(
            FAILED, size, _now(), _since(started), str(exc), index=exc.index
        )
    except ProctorError as exc:
        return Verification(
            ERROR, size, _now(), _since(started), f"could not verify: {exc}"
        )
    except Exception as exc:
        # A background run has nobody to raise to: the page says it instead.
        log.exception("ledger verification crashed")
        return Verification(
            ERROR, size, _now(), _since(started), f"could not verify: {exc!r}"
        )

    return _report(report, started)


def verify_home(path: str) -> Verification:
    """Open the home at ``path`` and verify its ledger; never raises."""
    home = Home(Path(path))
    try:
        store = home.open_store()
    except ProctorError as exc:
        return Verification(ERROR, 0, _now(), 0.0, f"could not verify: {exc}")
    try:
        return verify_store(home, store)
    finally:
        store.close()


def _verify_apart(path: Path) -> Verification:
    started = time.monotonic()
    command = [sys.executable, "-m", CHILD, str(path)]
    try:
        done = subprocess.run(  # noqa: S603 - our own interpreter and module
            command, capture_output=True, timeout=CHILD_TIMEOUT, check=True
        )
        return _parse(orjson.loads(done.stdout))
    except (OSError, subprocess.SubprocessError, ValueError, KeyError) as exc:
        log.warning("ledger verification process failed: %r", exc)
        return Verification(
            ERROR, 0, _now(), _since(started), "could not verify: the process failed"
        )


def _parse(found: dict[str, Any]) -> Verification:
    return Verification(
        outcome=str(found["outcome"]),
        size=int(found["size"]),
        verified_at=datetime.fromisoformat(found["verified_at"]),
        seconds=float(found["seconds"]),
        reason=found.get("reason"),
        index=found.get("index"),
        checkpoints=int(found.get("checkpoints", 0)),
        signed_size=int(found.get("signed_size", 0)),
    )


def _report(report: Report, started: float) -> Verification:
    return Verification(
        OK,
        report.size,
        _now(),
        _since(started),
        checkpoints=report.checkpoints,
        signed_size=report.signed_size,
    )


def _size(store: Store) -> int:
    try:
        return store.size()
    except ProctorError:
        return 0


def _since(started: float) -> float:
    return time.monotonic() - started


def _now() -> datetime:
    return datetime.now(UTC)
