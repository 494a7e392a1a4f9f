"""``proctor demo`` end to end: the finance story plays to the end and exits 0, the
home it keeps answers the commands it prints, and a step that does not behave as
told makes it exit 1 naming that step."""

from __future__ import annotations

import queue
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import httpx
import pytest

from proctor.demo.play import run
from proctor.demo.scenario import CONTROLLER, Scenario

from .conftest import Cli

BUDGET_SECONDS = 90.0
STOP_SECONDS = 30.0
KEY_LINES = (
    "quarantine_on_breach = false",
    'ap-clerk@example.com asks: "Pay ACME\'s March invoices."',
    "controller@example.com approved the scope",
    "200, allowed by scope:read-invoices",
    "flagged as a breach at that moment",
    "alert to the security inbox: breach",
    "the task stays active",
    "428, held for approval apr_",
    "201, allowed with the controller's approval",
    "the finance API recorded PAY-0001: $10,000.00 to acme for INV-2026-0342",
    f"{CONTROLLER} approved it at",
    "each inclusion proof checked again here",
    "proctor verify: OK",
    "proctor verify: FAILED, as it must",
    "Every step behaved as told",
)
VENDOR_FORBID = re.compile(r'@id\("org-no-agent-vendors"\)\nforbid \([^;]*\);')
ADD_VENDORS = """
[[allow]]
id = "add-vendors"
action = 'Payments::Action::"CreateVendor"'
"""
PAY_ANY_AMOUNT = """
[[allow]]
id = "read-invoices"
action = 'Payments::Action::"ReadInvoice"'

[[allow]]
id = "pay-acme"
action = 'Payments::Action::"CreatePayment"'
when = { vendor = { eq = "acme" } }
"""


def installed() -> str:
    return str(Path(sys.executable).parent / "proctor")


class Output:
    """A process's output lines, read in a thread so a wait can time out."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._source = process.stdout
        self._pump = threading.Thread(target=self._read, daemon=True)
        self._pump.start()

    def _read(self) -> None:
        assert self._source is not None
        for line in self._source:
            self._lines.put(line)
        self._lines.put(None)

    def until(self, marker: str) -> str:
        """Return the output up to the first line holding ``marker``."""
        seen: list[str] = []
        deadline = time.monotonic() + BUDGET_SECONDS
        while time.monotonic() < deadline:
            line = self._lines.get(timeout=BUDGET_SECONDS)
            if line is None:
                break
            seen.append(line)
            if marker in line:
                return "".join(seen)
        pytest.fail(f"no line with {marker!r}:\n{''.join(seen)}")

    def finish(self) -> None:
        """Wait for the end of the output (the process has exited)."""
        self._pump.join(timeout=STOP_SECONDS)


def task_of(output: str) -> str:
    found = re.search(r"task (tsk_[0-9a-f]+) opened", output)
    assert found is not None, output
    return found[1]


def released_of(output: str) -> str:
    found = re.search(
        r"allowed with the controller's approval \(decision #(\d+)", output
    )
    assert found is not None, output
    return found[1]


class TestStory:
    def test_plays_to_the_end(self, cli: Cli, tmp_path: Path) -> None:
        """Every step behaves as told, well within the budget, and says so."""
        started = time.monotonic()
        result = cli("demo", "--home", str(tmp_path / "demo"))
        elapsed = time.monotonic() - started

        assert result.code == 0, result.out + result.err
        for line in KEY_LINES:
            assert line in result.out
        assert elapsed < BUDGET_SECONDS

    def test_kept_home_answers_the_printed_commands(
        self, cli: Cli, tmp_path: Path
    ) -> None:
        """The commands the demo prints work on the home it keeps."""
        home = str(tmp_path / "demo")
        played = cli("demo", "--home", home)
        task, released = task_of(played.out), released_of(played.out)

        verified = cli("verify", "--home", home)
        trace = cli("trace", task, "--home", home)
        explained = cli("explain", released, "--home", home)
        breaches = cli("breaches", "--home", home)

        assert played.code == 0, played.out
        assert f"proctor trace {task} --home {home}" in played.out
        assert f"proctor explain {released} --home {home}" in played.out
        assert verified.code == 0, verified.err
        assert trace.code == 0
        assert "BREACH" in trace.out
        assert explained.code == 0
        assert CONTROLLER in explained.out
        assert breaches.code == 1
        assert (Path(home) / "serve.log").is_file()

    def test_refuses_a_home_in_use(self, cli: Cli, tmp_path: Path) -> None:
        """A --home that already holds files is left alone, with usage exit 2."""
        (tmp_path / "busy").mkdir()
        (tmp_path / "busy" / "notes.txt").write_text("mine")

        result = cli("demo", "--home", str(tmp_path / "busy"))

        assert result.code == 2
        assert "not empty" in result.err
        assert (tmp_path / "busy" / "notes.txt").read_text() == "mine"

    def test_refuses_a_postgres_ledger(
        self, cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The demo tampers with a SQLite file, so it will not run elsewhere."""
        monkeypatch.setenv("PROCTOR_DATABASE_URL", "postgresql://nobody@127.0.0.1/x")

        result = cli("demo", "--home", str(tmp_path / "demo"))

        assert result.code == 2
        assert "unset PROCTOR_DATABASE_URL" in result.err
        assert not (tmp_path / "demo").exists()


class TestMisbehaviour:
    def test_vendor_let_through_fails_step_3(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Policies that let the agent add a vendor make the demo fail at step 3."""
        scenario = Scenario.finance()
        org, found = VENDOR_FORBID.subn("", scenario.policies["finance.cedar"])
        assert found == 1
        lax = replace(
            scenario,
            policies={**scenario.policies, "finance.cedar": org},
            scope=scenario.scope + ADD_VENDORS,
        )

        code = run(lax, home=tmp_path / "home")
        output = capsys.readouterr().out

        assert code == 1
        assert "step 3 did not behave as told" in output
        assert "adding a vendor answered 201" in output
        assert "acme-holdings" in output
        assert "Step 4" not in output

    def test_unapproved_large_payment_fails_step_4(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A scope paying any amount without a controller makes step 4 fail."""
        lax = replace(Scenario.finance(), scope=PAY_ANY_AMOUNT)

        code = run(lax, home=tmp_path / "home")
        output = capsys.readouterr().out

        assert code == 1
        assert "step 4 did not behave as told: the payment answered 201" in output


@pytest.mark.slow
class TestInstalled:
    def test_command_runs_in_budget(self, tmp_path: Path) -> None:
        """The installed ``proctor demo`` exits 0 well within the 90 s budget."""
        started = time.monotonic()
        done = subprocess.run(
            [installed(), "demo"],
            capture_output=True,
            text=True,
            timeout=BUDGET_SECONDS,
            cwd=tmp_path,
            check=False,
        )
        elapsed = time.monotonic() - started

        assert done.returncode == 0, done.stdout + done.stderr
        assert "Every step behaved as told" in done.stdout
        assert elapsed < BUDGET_SECONDS
        explore = done.stdout.split("Explore further", 1)[1]
        assert "proctor trace tsk_" not in explore, "its home is gone by now"
        assert "proctor demo --home DIR" in explore

    def test_keep_running_serves_until_interrupted(self, tmp_path: Path) -> None:
        """With --keep-running the servers answer until Ctrl-C, then all stops."""
        with subprocess.Popen(
            [installed(), "demo", "--keep-running"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=tmp_path,
        ) as process:
            output = Output(process)
            try:
                shown = output.until("Ctrl-C")
                api = re.search(r"API +(http://\S+)", shown)
                home = re.search(r"home +(\S+)", shown)
                assert api is not None, shown
                assert home is not None, shown
                assert httpx.get(api[1], timeout=10.0).status_code == 200
                process.send_signal(signal.SIGINT)
                process.wait(timeout=STOP_SECONDS)
            finally:
                if process.poll() is None:
                    process.kill()
                    process.wait()
                output.finish()

        assert process.returncode == 0
        assert not Path(home[1]).exists()
