"""What the authority's command groups share: who is acting, and the home opened for
one command (the whole runtime to change things, the projection alone to read)."""

from __future__ import annotations

import getpass
import os
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer

from proctor.cli.common import err, locate, out
from proctor.errors import ConfigError
from proctor.files import read_private
from proctor.home import Home
from proctor.ledger.log import Ledger
from proctor.tasks.people import People, Person, Role
from proctor.tasks.state import Authority

if TYPE_CHECKING:
    from proctor.runtime import Runtime

API_KEY_ENV = "PROCTOR_API_KEY"

ApiKeyFileOption = Annotated[
    Path | None,
    typer.Option(
        "--api-key-file",
        help=f"A file (mode 0600) holding your API key; else ${API_KEY_ENV}.",
        show_default=False,
    ),
]
ReasonOption = Annotated[str, typer.Option("--reason", help="Why; recorded as said.")]


def operator() -> str:
    """Name the person at this terminal as entries record them: ``cli:<login>``."""
    try:
        login = getpass.getuser()
    except (OSError, KeyError):
        # No login name in the environment or the password database: the uid
        # still says which account ran the command.
        login = f"uid{os.getuid()}"

    return f"cli:{login}"


def approver(home: Home, key_file: Path | None) -> Person:
    """Authenticate the approver's own API key from ``key_file`` or the environment.

    Raises ConfigError when no key is given or the file is unusable, AuthError when
    the key is not valid or its holder is not an approver.
    """
    return People(home.people).authenticate(api_key(key_file), role=Role.APPROVER)


def api_key(key_file: Path | None) -> str:
    """Read an API key from ``key_file``, else the environment; raises ConfigError."""
    if key_file is not None:
        key = read_private(key_file).decode("utf-8", errors="replace").strip()
        if not key:
            raise ConfigError(f"{key_file} holds no api key")
        return key
    key = os.environ.get(API_KEY_ENV, "").strip()
    if not key:
        raise ConfigError(
            f"this command acts as an approver: set {API_KEY_ENV} or pass "
            "--api-key-file with your own api key"
        )

    return key


@contextmanager
def opened(path: Path | None) -> Iterator[Runtime]:
    """Open the home's runtime for a command that records entries, then close it."""
    # Imported here: the gateway costs ~0.6 s to import; only recording commands need it
    from proctor.runtime import Runtime  # noqa: PLC0415

    runtime = Runtime.open(locate(path))
    try:
        yield runtime
    finally:
        runtime.close()


@contextmanager
def recording(path: Path | None) -> Iterator[Ledger]:
    """Open only the home's ledger, for a command that records outside the authority."""
    ledger = locate(path).open_ledger()
    try:
        yield ledger
    finally:
        try:
            ledger.close()
        finally:
            ledger.store.close()


@contextmanager
def projection(path: Path | None) -> Iterator[Authority]:
    """Fold the ledger into a fresh projection for a command that only reads."""
    with closing(locate(path).open_store()) as store:
        authority = Authority(store)
        authority.sync()
        yield authority


def say(text: str) -> None:
    """Write one line of data to stdout, as it is: no markup, no wrapping."""
    out.print(text, markup=False)


def note(text: str) -> None:
    """Write one line of diagnostics to stderr, as it is: no markup, no wrapping."""
    err.print(text, markup=False, soft_wrap=True)


def usage_error(message: str) -> NoReturn:
    """Say what was wrong with the command in one line and exit 2."""
    note(f"proctor: {message}")
    raise typer.Exit(2)
