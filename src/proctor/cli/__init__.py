"""The ``proctor`` command: one Typer app, one module per command group.

Data goes to stdout and diagnostics to stderr. Exit codes: 0 success, 1 a failed
verification or a finding, 2 bad usage or configuration.
"""

from __future__ import annotations

import sys

import click
import typer

from proctor.cli import (
    approvals,
    demo,
    explain,
    export,
    forensics,
    home,
    ledger,
    mcp,
    policy,
    reindex,
    secrets,
    serve,
    tasks,
    tokens,
    users,
)
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
tasks.register(app)
tokens.register(app)
approvals.register(app)
users.register(app)
secrets.register(app)
policy.register(app)
reindex.register(app)
explain.register(app)
serve.register(app)
mcp.register(app)
forensics.register(app)


def main() -> None:
    """Run the command line, mapping Proctor's errors to one line and an exit code."""
    try:
        # Outside standalone mode click answers typer.Exit by returning its code.
        code = app(standalone_mode=False)
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
    except (click.ClickException, typer.TyperException) as exc:
        # Typer carries its own copy of click: its usage errors are TyperExceptions.
        print(f"proctor: {exc.format_message()}", file=sys.stderr)
        sys.exit(2)
    except OSError as exc:
        # A path given on the command line that cannot be read or written.
        print(f"proctor: {_os_problem(exc)}", file=sys.stderr)
        sys.exit(2)
    if isinstance(code, int) and code:
        sys.exit(code)


def _os_problem(exc: OSError) -> str:
    reason = exc.strerror or type(exc).__name__
    if exc.filename is None:
        return reason.lower()

    return f"{exc.filename}: {reason.lower()}"
