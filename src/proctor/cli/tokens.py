"""``proctor token``: hand a task token to an agent process, or revoke one."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from proctor.cli.common import HomeOption, JsonOption, emit_json
from proctor.cli.session import ReasonOption, note, opened, operator
from proctor.tasks.views import stamp

token_app = typer.Typer(help="Issue and revoke task tokens.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(token_app, name="token")


@token_app.command("issue")
def issue_command(
    task_id: Annotated[str, typer.Argument(metavar="TASK", help="An active task.")],
    home: HomeOption = None,
    as_json: JsonOption = False,
) -> None:
    """Print a new task token for TASK's agent, and nothing else, on stdout."""
    with opened(home) as runtime:
        issued = runtime.service.issue_token(task_id, by=operator())
    claims = issued.claims
    if as_json:
        emit_json(
            {
                "token": issued.token,
                "task": claims.task,
                "jti": claims.jti,
                "expires": stamp(claims.expires),
                "entry": issued.entry,
            }
        )
        return
    sys.stdout.write(issued.token + "\n")
    note(
        f"token {claims.jti} for {claims.agent} on task {claims.task} expires "
        f"{stamp(claims.expires)} (entry {issued.entry})"
    )


@token_app.command("revoke")
def revoke_command(
    task_id: Annotated[str, typer.Argument(metavar="TASK", help="The task.")],
    jti: Annotated[str, typer.Argument(metavar="JTI", help="The token's jti.")],
    reason: ReasonOption,
    home: HomeOption = None,
    as_json: JsonOption = False,
) -> None:
    """Revoke one token of TASK; it fails from its next call on."""
    with opened(home) as runtime:
        entry = runtime.service.revoke_token(task_id, jti, by=operator(), reason=reason)
    if as_json:
        emit_json({"entry": entry, "task": task_id, "jti": jti})
        return
    note(f"revoked token {jti} of task {task_id} (entry {entry})")
