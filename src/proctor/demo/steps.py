"""How one step of the demo runs: its heading, the lines that tell a person what
happened, the checks that it behaved as told, and the error naming the step when
one did not."""

from __future__ import annotations

from types import TracebackType

import httpx
from rich.text import Text

from proctor.cli.common import out
from proctor.errors import ProctorError

SETUP = 0
"""The number of the setting up that comes before step 1."""

# What a step may raise when an answer is not what it should be: a missing field, a
# wrong type, a refused connection, or one of Proctor's own errors.
_TRANSLATED = (
    httpx.HTTPError,
    ProctorError,
    LookupError,
    TypeError,
    ValueError,
    RuntimeError,
    OSError,
)


class StepError(Exception):
    """A step of the demo did not behave as told."""

    def __init__(self, step: int, reason: str) -> None:
        where = "setting up" if step == SETUP else f"step {step}"
        super().__init__(f"{where} did not behave as told: {reason}")
        self.step = step
        self.reason = reason


class Step:
    """One step on screen: ``with Step(3, "title") as step: step.check(...)``.

    Anything unexpected raised inside becomes a StepError naming this step.
    """

    def __init__(self, number: int, title: str) -> None:
        self.number = number
        self.title = title

    def __enter__(self) -> Step:
        heading = "Setting up" if self.number == SETUP else f"Step {self.number}"
        out.print()
        out.print(Text.assemble((heading, "bold cyan"), (f" · {self.title}", "bold")))
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if isinstance(error, _TRANSLATED):
            raise StepError(self.number, f"{type(error).__name__}: {error}") from error

    def check(self, holds: bool, failure: str) -> None:
        """Raise StepError with ``failure`` unless ``holds``."""
        if not holds:
            raise StepError(self.number, failure)

    def fail(self, failure: str) -> StepError:
        """Return the StepError for ``failure``, for the caller to raise."""
        return StepError(self.number, failure)


def say(text: str, style: str = "") -> None:
    """Tell what happens, indented under the step's heading."""
    out.print(Text.assemble("  ", (text, style)))


def ok(text: str) -> None:
    """Tell that a check held."""
    out.print(Text.assemble(("  ✓ ", "bold green"), text))


def alert(text: str) -> None:
    """Show an alert as its receiver got it."""
    out.print(Text.assemble(("  ! ", "bold red"), (text, "red")))


def command(text: str) -> None:
    """Show a command a person can run to see the same."""
    out.print(Text.assemble(("  $ ", "dim"), (text, "bold")))


def money(cents: int) -> str:
    """Write whole cents as dollars: ``1000000`` is ``$10,000.00``."""
    return f"${cents // 100:,}.{cents % 100:02d}"
