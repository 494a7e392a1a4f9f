"""``proctor secrets``: put upstream credentials in the vault; their values are never
shown, only names, versions and keyed fingerprints."""

from __future__ import annotations

import getpass
import sys
from typing import Annotated

import typer

from proctor import kinds
from proctor.cli.common import HomeOption, JsonOption, emit_json, locate
from proctor.cli.session import note, operator, recording, say, usage_error
from proctor.ledger.canonical import MAX_ENTRY_BYTES
from proctor.vault import Vault, load_master_key

secrets_app = typer.Typer(
    help="Store secrets in the vault and list them (never their values).",
    no_args_is_help=True,
)


def register(app: typer.Typer) -> None:
    app.add_typer(secrets_app, name="secrets")


@secrets_app.command("set")
def set_command(
    name: Annotated[str, typer.Argument(metavar="NAME", help="The secret's name.")],
    home: HomeOption = None,
    as_json: JsonOption = False,
) -> None:
    """Store the value read from stdin as NAME's next version, and record that.

    Pipe the value in (``proctor secrets set NAME < file``); at a terminal it is
    asked for without echo. An empty value is refused.
    """
    value = _read_value(name)
    located = locate(home)
    vault = Vault(located.vault, load_master_key(located.path))
    version = vault.set(name, value)
    with recording(home) as ledger:
        entry = ledger.append(
            kinds.SECRET_ROTATED,
            {
                "secret": version.name,
                "version": version.version,
                "fingerprint": version.fingerprint,
                "by": operator(),
            },
        ).index
    if as_json:
        emit_json(
            {
                "name": version.name,
                "version": version.version,
                "fingerprint": version.fingerprint,
                "entry": entry,
            }
        )
        return
    say(
        f"{version.name}  version {version.version}  fingerprint "
        f"{version.fingerprint}  (entry {entry})"
    )


@secrets_app.command("list")
def list_command(home: HomeOption = None, as_json: JsonOption = False) -> None:
    """List every secret's name, latest version and fingerprint."""
    located = locate(home)
    listed = Vault(located.vault, load_master_key(located.path)).list()
    views = [
        {
            "name": info.name,
            "version": info.version,
            "fingerprint": info.fingerprint,
            "created": info.created,
        }
        for info in listed
    ]
    if as_json:
        emit_json(views)
        return
    for view in views:
        say(
            f"{view['name']}  version {view['version']}  fingerprint "
            f"{view['fingerprint']}  since {view['created']}"
        )
    note(f"{len(views)} secrets")


def _read_value(name: str) -> str:
    """Read the value without ever echoing it; exit 2 when there is none."""
    if sys.stdin is None:
        usage_error(f"no value for secret {name!r}: stdin is closed")
    if sys.stdin.isatty():
        value = getpass.getpass(f"value of secret {name}: ")
    else:
        data = sys.stdin.buffer.read(MAX_ENTRY_BYTES + 1)
        if len(data) > MAX_ENTRY_BYTES:
            usage_error(f"the value of secret {name!r} is over {MAX_ENTRY_BYTES} bytes")
        try:
            value = data.decode("utf-8")
        except UnicodeDecodeError:
            usage_error(f"the value of secret {name!r} is not UTF-8 text")
    # The newline that `echo` or a file adds is not part of the secret.
    value = value.rstrip("\r\n")
    if not value:
        usage_error(
            f"no value for secret {name!r} on stdin; pipe it in, e.g. "
            f"`proctor secrets set {name} < value-file`"
        )

    return value
