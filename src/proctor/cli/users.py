"""``proctor users``: the people who approve, audit and administer, each with a key."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from proctor import kinds
from proctor.cli.common import HomeOption, JsonOption, emit_json, locate
from proctor.cli.session import note, operator, recording, say
from proctor.errors import LedgerError, ProctorError
from proctor.tasks.people import People, Role

users_app = typer.Typer(
    help="Add people, list them and rotate their API keys.", no_args_is_help=True
)

EmailArgument = Annotated[str, typer.Argument(metavar="EMAIL", help="Their email.")]


def register(app: typer.Typer) -> None:
    app.add_typer(users_app, name="users")


@users_app.command("add")
def add_command(
    email: EmailArgument,
    roles: Annotated[
        list[Role],
        typer.Option("--role", help="approver, auditor or admin; repeat for more."),
    ],
    approves: Annotated[
        list[str] | None,
        typer.Option(
            "--approves",
            help="An approval role a policy names (controller); repeat for more.",
        ),
    ] = None,
    home: HomeOption = None,
) -> None:
    """Add a person and print their API key on stdout, once: it is kept nowhere."""
    people = People(locate(home).people)
    api_key = people.add(email, roles, approves or ())
    person = people.get(email)
    try:
        with recording(home) as ledger:
            entry = ledger.append(
                kinds.PERSON_ADDED,
                {
                    "person": person.email,
                    "roles": sorted(str(role) for role in person.roles),
                    "approves": sorted(person.approves),
                    "key_id": person.key_id,
                    "by": operator(),
                },
            ).index
    except ProctorError:
        # No entry, no person: an addition the ledger does not show never happened.
        people.remove(person.email)
        raise
    sys.stdout.write(api_key + "\n")
    note(
        f"added {person.email} (key {person.key_id}, entry {entry}); the key above "
        "is shown once"
    )


@users_app.command("list")
def list_command(home: HomeOption = None, as_json: JsonOption = False) -> None:
    """List everyone with their roles and public key ids, never their keys."""
    people = People(locate(home).people).list()
    views = [
        {
            "email": person.email,
            "roles": sorted(str(role) for role in person.roles),
            "approves": sorted(person.approves),
            "key_id": person.key_id,
            "created": person.created,
        }
        for person in people
    ]
    if as_json:
        emit_json(views)
        return
    for view in views:
        approves = ",".join(view["approves"]) or "-"
        say(
            f"{view['email']}  {','.join(view['roles'])}  approves {approves}  "
            f"key {view['key_id']}  since {view['created']}"
        )
    note(f"{len(views)} people")


@users_app.command("rotate")
def rotate_command(email: EmailArgument, home: HomeOption = None) -> None:
    """Replace a person's API key, ending the old one; print the new key once."""
    people = People(locate(home).people)
    api_key = people.rotate_key(email)
    person = people.get(email)
    try:
        with recording(home) as ledger:
            entry = ledger.append(
                kinds.PERSON_ROTATED,
                {"person": person.email, "key_id": person.key_id, "by": operator()},
            ).index
    except ProctorError as exc:
        # The old key is gone either way; a new one the ledger does not show is
        # not handed out, so rotating again is the way back.
        raise LedgerError(
            f"the key of {person.email} was replaced but not recorded ({exc}); "
            "run rotate again"
        ) from exc
    sys.stdout.write(api_key + "\n")
    note(
        f"rotated the key of {person.email} (now {person.key_id}, entry {entry}); "
        "the old key no longer works"
    )
