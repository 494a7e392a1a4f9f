"""One run of ``proctor demo``: a fresh home, the six steps of the story, what to
explore next, and the exit code that says whether every step behaved as told."""

from __future__ import annotations

import os
import signal
import tempfile
import threading
import time
from pathlib import Path

import httpx
from rich.text import Text

from proctor.cli.common import out
from proctor.config import DATABASE_URL_ENV
from proctor.demo.agent import FinanceAgent
from proctor.demo.audit import read_back, tamper
from proctor.demo.scenario import CONTROLLER, REQUEST, USER, Scenario
from proctor.demo.steps import StepError, command, say
from proctor.demo.story import Paid, Stage, ask, breach, key_file, pay, read, set_up
from proctor.errors import ConfigError
from proctor.home import Home, init

ORIGIN = "demo.proctor.local/finance"
"""The checkpoint origin of a demo home's ledger."""


def run(
    scenario: Scenario, *, home: Path | None = None, keep_running: bool = False
) -> int:
    """Play the story; return 0 when every step behaved as told, 1 when one did not.

    Without ``home`` the demo works in a temporary home, removed at the end.
    Raises ConfigError when ``home`` exists and is not empty, or when
    ``$PROCTOR_DATABASE_URL`` would put the ledger elsewhere than SQLite.
    """
    if os.environ.get(DATABASE_URL_ENV):
        raise ConfigError(
            f"the demo runs on the embedded SQLite ledger; unset {DATABASE_URL_ENV}"
        )
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="proctor-demo-") as scratch:
        folder = Path(scratch)
        created = init(Home(home or folder / "home"), origin=ORIGIN)
        out.print(
            Text.assemble(
                ("Proctor demo", "bold"), f' · a finance agent is asked: "{REQUEST}"'
            )
        )
        try:
            _play(
                scenario,
                created,
                folder,
                kept=home is not None,
                started=started,
                keep_running=keep_running,
            )
        except StepError as exc:
            out.print()
            out.print(Text.assemble(("✗ ", "bold red"), (str(exc), "bold red")))
            return 1

    return 0


def _play(
    scenario: Scenario,
    home: Home,
    scratch: Path,
    *,
    kept: bool,
    started: float,
    keep_running: bool,
) -> None:
    with set_up(home, scenario) as stage:
        task, token = ask(stage, scenario)
        with FinanceAgent(stage.proctor.url, token, task) as agent:
            read(stage, agent)
            breach(stage, agent)
            paid = pay(stage, agent)
        read_back(stage, task, paid)
        tamper(stage, paid, scratch)
        out.print()
        out.print(
            Text.assemble(
                ("✓ Every step behaved as told", "bold green"),
                f" in {time.perf_counter() - started:.1f} s.",
            )
        )
        _explore(stage, task, paid, kept=kept, keep_running=keep_running)
        if keep_running:
            _wait()


def _explore(
    stage: Stage, task: str, paid: Paid, *, kept: bool, keep_running: bool
) -> None:
    """Show the commands that tell the same story, and where the servers are."""
    home = stage.home.path
    out.print()
    out.print(Text("Explore further", style="bold"))
    if not (kept or keep_running):
        say(
            "This home was temporary and is removed now. Run `proctor demo --home "
            "DIR` to keep it, or add --keep-running to explore it while it is up: "
            "`proctor trace`, `explain`, `breaches` and `verify` then read the "
            "same story back.",
            "dim",
        )
        return
    command(f"proctor trace {task} --home {home}")
    command(f"proctor explain {paid.released} --home {home}")
    command(f"proctor breaches --home {home}")
    command(f"proctor verify --home {home}")
    if keep_running:
        console = f"{stage.proctor.url}/console"
        if _is_served(console):
            say(f"console  {console}")
            for email in (CONTROLLER, USER):
                path = key_file(stage.home, email)
                say(f"         sign in as {email} with the key in {path}")
        else:
            say("console  not in this build yet; the API is served meanwhile:")
        say(f"API      {stage.proctor.url}/v1/openapi.json")
        say(f"logs     {home / 'serve.log'}")


def _is_served(url: str) -> bool:
    try:
        return httpx.get(url, timeout=5.0).status_code != httpx.codes.NOT_FOUND
    except httpx.HTTPError:
        return False


def _wait() -> None:
    """Block until Ctrl-C, or SIGTERM, so the servers and the home stay up."""
    stop = threading.Event()
    main = threading.current_thread() is threading.main_thread()
    # SIGTERM ends the wait like Ctrl-C, so the home is still cleaned up; and Ctrl-C
    # works even when whoever started the demo left SIGINT ignored (a shell does,
    # for a command it runs in the background).
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.set()) if main else None
    interrupt = (
        signal.signal(signal.SIGINT, signal.default_int_handler) if main else None
    )
    try:
        # Told inside the try: a Ctrl-C right after the line still stops cleanly.
        say("The servers stay up until you press Ctrl-C.", "bold")
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        if main:
            signal.signal(signal.SIGTERM, previous)
            signal.signal(signal.SIGINT, interrupt)
    say("stopping")
