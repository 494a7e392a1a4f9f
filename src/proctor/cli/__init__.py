"""The ``proctor`` command: one Typer app, one module per command group.

Data goes to stdout and diagnostics to stderr. Exit codes: 0 success, 1 a failed
verification or a finding, 2 bad usage or configuration.
"""

from __future__ import annotations

import sys

import click
import typer

from proctor.cli import demo, export, home, ledger
from proctor.errors import ConfigError, ProctorError, VerifyError

app = typer.Typer(
    name="proctor",
    help="A gateway and flight recorder for AI agents.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
home.register(app)
ledger.register(app)
demo.register(app)
export.register(app)


def main() -> None:
    """Run the command line, mapping Proctor's errors to one line and an exit code."""
    try:
        app(standalone_mode=False)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        sys.exit(130)
    except VerifyError as exc:
        print(f"proctor: verification failed: {exc}", file=sys.stderr)
        sys.exit(1)
    except ConfigError as exc:
        print(f"proctor: {exc}", file=sys.stderr)
        sys.exit(2)
    except ProctorError as exc:
        print(f"proctor: {exc}", file=sys.stderr)
        sys.exit(1)
    except click.ClickException as exc:
        exc.show()
        sys.exit(2)
