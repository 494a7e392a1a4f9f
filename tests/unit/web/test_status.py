"""The ledger's verification status, verified in a thread or in a child process."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from proctor.home import Home, init
from proctor.web import verification
from proctor.web.status import FAILED, OK, LedgerStatus, verify_home


def write(home: Home, count: int) -> None:
    ledger = home.open_ledger()
    try:
        for number in range(count):
            ledger.append("test.note", {"number": number})
        ledger.checkpoint()
    finally:
        ledger.close()
        ledger.store.close()


def home_with_entries(tmp_path: Path, count: int = 5) -> Home:
    home = init(Home(tmp_path / "home"), origin="proctor.test/status")
    write(home, count)
    return home


class TestVerifyHome:
    def test_sound_ledger_is_ok(self, tmp_path: Path) -> None:
        """Every entry, the tree and the checkpoint check out."""
        found = verify_home(str(home_with_entries(tmp_path).path))

        assert found.outcome == OK
        assert found.size == 5
        assert found.checkpoints >= 1

    def test_changed_entry_fails_naming_it(self, tmp_path: Path) -> None:
        """An entry changed in the database fails the run and is named."""
        home = home_with_entries(tmp_path)
        with sqlite3.connect(home.ledger_db) as connection:
            connection.execute("DROP TRIGGER entries_no_update")
            connection.execute(
                "UPDATE entries SET body = CAST(replace(CAST(body AS TEXT), "
                "'\"number\":3', '\"number\":9') AS BLOB) WHERE idx = 3"
            )
        found = verify_home(str(home.path))

        assert found.outcome == FAILED
        assert found.index == 3
        assert "entry 3" in str(found.reason)

    def test_child_prints_json(self, tmp_path: Path) -> None:
        """``python -m proctor.web.verification HOME`` prints one JSON result."""
        home = home_with_entries(tmp_path)
        done = subprocess.run(
            [sys.executable, "-m", "proctor.web.verification", str(home.path)],
            capture_output=True,
            check=True,
        )

        assert orjson.loads(done.stdout)["outcome"] == OK

    def test_child_main_in_process(
        self, tmp_path: Path, capsysbinary: pytest.CaptureFixture[bytes]
    ) -> None:
        """The child's entry point prints the result, and refuses bad usage."""
        home = home_with_entries(tmp_path)

        assert verification.main([str(home.path)]) == 0
        assert orjson.loads(capsysbinary.readouterr().out)["size"] == 5
        assert verification.main([]) == 2

    def test_missing_home_is_an_error_not_a_crash(self, tmp_path: Path) -> None:
        """A home that cannot be opened gives an error result, never raises."""
        found = verify_home(str(tmp_path / "nowhere"))

        assert found.outcome == "error"
        assert "could not verify" in str(found.reason)


class TestLedgerStatus:
    def test_small_ledger_is_ready_on_first_look(self, tmp_path: Path) -> None:
        """A small ledger is verified in a thread while the first page waits."""
        home = home_with_entries(tmp_path)
        store = home.open_store()
        try:
            status = LedgerStatus(home, store).status(wait=5.0)
        finally:
            store.close()

        assert status.latest is not None
        assert status.latest.is_ok
        assert status.is_current

    def test_large_ledger_is_verified_apart(self, tmp_path: Path) -> None:
        """Past the in-process size, a child process verifies, nobody waiting."""
        home = home_with_entries(tmp_path)
        store = home.open_store()
        try:
            status = LedgerStatus(home, store, in_process=0)
            first = status.status(wait=5.0)
            status.join(60)
            after = status.status()
        finally:
            store.close()

        assert first.running
        assert after.latest is not None
        assert after.latest.outcome == OK
        assert after.latest.size == 5

    def test_result_is_kept_until_the_ledger_grows(self, tmp_path: Path) -> None:
        """Same size, same result; more entries and the interval past, a new run."""
        home = home_with_entries(tmp_path)
        store = home.open_store()
        try:
            status = LedgerStatus(home, store, min_interval=0.0)
            first = status.status(wait=5.0).latest
            again = status.status(wait=5.0).latest
            write(home, 2)
            grown = status.status(wait=5.0)
        finally:
            store.close()

        assert again is first
        assert grown.latest is not None
        assert grown.latest.size == 7
        assert grown.behind == 0
