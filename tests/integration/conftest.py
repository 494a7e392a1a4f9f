"""Fixtures for tests that drive the ``proctor`` command and real homes."""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from proctor.cli import main
from proctor.home import Home, init


@dataclass(frozen=True)
class Result:
    """What one run of the command printed and how it exited."""

    code: int
    out: str
    err: str


Cli = Callable[..., Result]


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Cli:
    """Run ``proctor ARGS`` in this process and return its exit code and output."""

    def run(*args: str) -> Result:
        capsys.readouterr()
        monkeypatch.setattr(sys, "argv", ["proctor", *args])
        try:
            main()
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        captured = capsys.readouterr()

        return Result(code, captured.out, captured.err)

    return run


@pytest.fixture
def home(tmp_path: Path) -> Home:
    """A fresh home on the embedded SQLite store."""
    return init(Home(tmp_path / "home"), origin="proctor.test/ledger")
