"""``proctor mcp``: the stdio bridge an MCP client launches, and the import of a
desktop client's ``mcpServers`` file into the home."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from proctor import heap, kinds
from proctor.cli.common import HomeOption, JsonOption, emit_json, err, locate, out
from proctor.cli.session import operator
from proctor.errors import ConfigError
from proctor.vault import Vault, load_master_key

if TYPE_CHECKING:
    from proctor.gateway.mcp.importer import Plan
    from proctor.home import Home
    from proctor.vault.vault import SecretVersion

mcp_app = typer.Typer(
    help="Broker MCP servers: the stdio bridge, and importing a client's servers.",
    no_args_is_help=True,
)


def register(app: typer.Typer) -> None:
    app.add_typer(mcp_app, name="mcp")


@mcp_app.command("stdio")
def stdio_command(
    server: Annotated[str, typer.Argument(help="A server in [mcp.servers].")],
    home: HomeOption = None,
) -> None:
    """Serve one configured MCP server on stdin/stdout, every call brokered.

    An MCP client launches this as its server command, with the task token in
    PROCTOR_TASK_TOKEN (or a file named by PROCTOR_TASK_TOKEN_FILE).
    """
    import anyio  # noqa: PLC0415 - only the bridge runs an event loop

    # Imported here: the mcp SDK costs ~1 s to import; only `proctor mcp` needs it
    from proctor.gateway.mcp.config import load_servers  # noqa: PLC0415

    # Imported here: as above
    from proctor.gateway.mcp.stdio import environment_token, serve_stdio  # noqa: PLC0415

    # Imported here: the gateway costs ~0.6 s to import
    from proctor.runtime import Runtime  # noqa: PLC0415

    runtime = Runtime.open(locate(home))
    try:
        servers = load_servers(runtime.config.raw)
        if server not in servers:
            known = ", ".join(sorted(servers)) or "none"
            raise ConfigError(f"no [mcp.servers.{server}] in proctor.toml ({known})")
        token = environment_token(dict(os.environ))
        pipeline = runtime.pipeline()
        heap.settle()
        anyio.run(serve_stdio, pipeline, servers[server], token)
    finally:
        runtime.close()


@mcp_app.command("import")
def import_command(
    file: Annotated[
        Path, typer.Argument(help="A desktop client's JSON file with mcpServers.")
    ],
    home: HomeOption = None,
    command: Annotated[
        str | None,
        typer.Option(help="How clients run proctor (default: this proctor's path)."),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Move FILE's MCP servers into proctor.toml, their secrets into the vault.

    FILE is then rewritten so that its clients launch each server through the
    proctor bridge; the original is kept beside it, owner-only.
    """
    # Imported here: the mcp SDK costs ~1 s to import; only `proctor mcp` needs it
    from proctor.gateway.mcp.importer import (  # noqa: PLC0415
        TOKEN_FILE,
        apply_import,
        plan_import,
    )

    located = locate(home)
    document = _read_json(file)
    config_text = located.config_file.read_text(encoding="utf-8")
    plan = plan_import(
        document,
        config_text=config_text,
        home=located.path.resolve(),
        bridge=[command or _proctor_command()],
        source=str(file),
    )
    backup: Path | None = None
    if plan.servers:
        vault = Vault(located.vault, load_master_key(located.path))
        backup, versions = apply_import(
            plan,
            config_file=located.config_file,
            config_text=config_text,
            vault=vault,
            file=file,
        )
        _record(located, versions)
    token_file = located.path.resolve() / TOKEN_FILE
    if as_json:
        emit_json(_summary(plan, backup, token_file))
        return
    _say(plan, backup, token_file)


def _read_json(file: Path) -> object:
    try:
        return json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"cannot read {file} as json: {exc}") from exc


def _proctor_command() -> str:
    launched = Path(sys.argv[0])
    if launched.name == "proctor" and launched.exists():
        return str(launched.resolve())
    return shutil.which("proctor") or "proctor"


def _record(home: Home, versions: list[SecretVersion]) -> None:
    # The same entry as `proctor secrets set`: which secret got which version.
    if not versions:
        return
    ledger = home.open_ledger()
    try:
        for version in versions:
            ledger.append(
                kinds.SECRET_ROTATED,
                {
                    "secret": version.name,
                    "version": version.version,
                    "fingerprint": version.fingerprint,
                    "by": operator(),
                },
            )
    finally:
        try:
            ledger.close()
        finally:
            ledger.store.close()


def _summary(plan: Plan, backup: Path | None, token_file: Path) -> dict[str, Any]:
    return {
        "imported": [{"from": old, "server": new} for old, new in plan.servers],
        "skipped": [{"server": old, "reason": why} for old, why in plan.skipped],
        "vault": [
            {"server": moved.server, "from": moved.place, "secret": moved.secret}
            for moved in plan.moved
        ],
        "backup": str(backup) if backup else None,
        "token_file": str(token_file),
    }


def _say(plan: Plan, backup: Path | None, token_file: Path) -> None:
    # Names only: a moved secret's value never reaches the terminal.
    for old, new in plan.servers:
        out.print(f"imported {old} as [mcp.servers.{new}]")
    for moved in plan.moved:
        out.print(f"  {moved.place} of {moved.server} -> vault {moved.secret}")
    for old, why in plan.skipped:
        err.print(f"skipped {old}: {why}")
    if backup is not None:
        err.print(
            f"the original file is kept at {backup}: it still holds the secrets, "
            "so delete it once your clients work through proctor"
        )
        err.print(f"the bridge reads the task token from {token_file} (mode 0600)")
