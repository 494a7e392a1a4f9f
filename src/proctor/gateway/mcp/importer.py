"""Moving a desktop client's ``mcpServers`` into Proctor: each server into
proctor.toml, each value that looks like a secret into the vault, and the client's
file rewritten so that every server it launches is the Proctor bridge instead.

What counts as a secret: an ``env`` variable or header whose name holds TOKEN, SECRET,
PASSWORD, PASSWD, CREDENTIAL or APIKEY anywhere, or KEY, PAT, AUTH, PASS, PWD or
COOKIE as one of its ``_``/``-`` separated words, or that the redactor already treats
as a credential. Such a value goes into the vault as ``<server>.<NAME>`` and the
server names it in ``credentials``; an ``Authorization: Bearer`` header becomes a
bearer credential. A secret-looking value the vault refuses (shorter than eight
characters) stays in place when its name is not unmistakably a credential's, and
otherwise stops that server's import. Everything else stays as plain ``env`` or
``headers``.

Server names become Cedar identifiers (``brave-search`` is ``brave_search``). Servers
over SSE, entries that already launch the bridge, and names already configured are
left as they are and reported.
"""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from proctor.errors import ConfigError, VaultError
from proctor.files import write_private
from proctor.gateway.mcp.config import load_servers
from proctor.gateway.mcp.stdio import TOKEN_FILE_ENV
from proctor.vault.redact import check_value, is_sensitive_name
from proctor.vault.vault import NAME_PATTERN, SecretVersion, Vault

SECRET_WORDS = ("TOKEN", "SECRET", "PASSWORD", "PASSWD", "CREDENTIAL", "APIKEY")
SECRET_PARTS = frozenset({"KEY", "PAT", "AUTH", "PASS", "PWD", "COOKIE"})
TOKEN_FILE = "task.token"  # noqa: S105 - a file name
"""Where, in the home, the rewritten entries read the bridge's task token."""

_LAUNCH_KEYS = frozenset({"command", "args", "env", "cwd", "url", "headers", "type"})
_HTTP_TYPES = frozenset({"http", "streamable-http", "streamableHttp"})
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


@dataclass(frozen=True)
class Moved:
    """One value moved into the vault: where it was and the secret's name."""

    server: str
    place: str
    secret: str


@dataclass(frozen=True)
class Plan:
    """What an import will do; the secret values never show in its repr."""

    servers: tuple[tuple[str, str], ...]
    skipped: tuple[tuple[str, str], ...]
    moved: tuple[Moved, ...]
    toml: str
    document: dict[str, Any]
    secrets: tuple[tuple[str, str], ...] = field(default=(), repr=False)


@dataclass
class _Server:
    """One server being converted: its TOML lines and the secrets it moves."""

    name: str
    lines: list[str] = field(default_factory=list)
    credentials: list[str] = field(default_factory=list)
    moved: list[Moved] = field(default_factory=list)
    secrets: list[tuple[str, str]] = field(default_factory=list)


class _SkipError(Exception):
    """This server stays where it is, for the reason given."""


def is_secret_name(name: str) -> bool:
    """Tell whether an env variable or header called ``name`` looks like a secret."""
    upper = name.upper().replace("-", "_")
    if any(word in upper for word in SECRET_WORDS):
        return True
    return bool(SECRET_PARTS & set(upper.split("_"))) or is_sensitive_name(name)


def plan_import(
    document: object,
    *,
    config_text: str,
    home: Path,
    bridge: Sequence[str],
    source: str,
) -> Plan:
    """Plan the import of an ``mcpServers`` document into a home.

    ``bridge`` is the command that runs ``proctor``; ``config_text`` the home's
    proctor.toml. Raises ConfigError when the document has no ``mcpServers`` table
    or the configuration would no longer load.
    """
    if not isinstance(document, dict) or not isinstance(
        document.get("mcpServers"), dict
    ):
        raise ConfigError(f"{source} has no mcpServers table")
    servers: dict[str, Any] = document["mcpServers"]
    existing = set(load_servers(_parse(config_text)))
    rewritten = dict(servers)
    done: list[tuple[str, str]] = []
    skipped: list[tuple[str, str]] = []
    converted: list[_Server] = []
    for original, entry in servers.items():
        name = server_name(original)
        try:
            if name in existing or name in {server.name for server in converted}:
                raise _SkipError(f"a server named {name} is already configured")
            server = _convert(name, entry)
        except _SkipError as skip:
            skipped.append((original, str(skip)))
            continue
        converted.append(server)
        done.append((original, name))
        rewritten[original] = _bridged(entry, name, home, bridge)
    toml = "".join(_table(server, source) for server in converted)
    _check(config_text, toml)

    return Plan(
        servers=tuple(done),
        skipped=tuple(skipped),
        moved=tuple(moved for server in converted for moved in server.moved),
        toml=toml,
        document={**document, "mcpServers": rewritten},
        secrets=tuple(pair for server in converted for pair in server.secrets),
    )


def server_name(original: str) -> str:
    """The Cedar identifier a server is configured under."""
    name = re.sub(r"[^A-Za-z0-9_]", "_", original)[:63] or "_"
    return name if re.match(r"[A-Za-z_]", name) else f"_{name}"[:63]


def toml_string(value: str) -> str:
    """``value`` as a TOML basic string (TOML 1.0, strings)."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    out = []
    for char in escaped:
        code = ord(char)
        if char == "\n":
            out.append("\\n")
        elif char == "\t":
            out.append("\\t")
        elif code < 0x20 or code == 0x7F:
            out.append(f"\\u{code:04x}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


def toml_key(key: str) -> str:
    """``key`` bare when TOML allows it, else quoted."""
    return key if _BARE_KEY.fullmatch(key) else toml_string(key)


def _convert(name: str, entry: object) -> _Server:
    if not isinstance(entry, dict):
        raise _SkipError("not a table")
    if _is_bridge(entry):
        raise _SkipError("already launched through the proctor bridge")
    kind = entry.get("type")
    server = _Server(name)
    if kind == "sse":
        raise _SkipError("the sse transport is not supported: stdio or streamable http")
    if "url" in entry and "command" not in entry and kind in (None, *_HTTP_TYPES):
        _remote(server, entry)
    elif "command" in entry and "url" not in entry and kind in (None, "stdio"):
        _local(server, entry)
    else:
        raise _SkipError("needs a command (stdio) or a url (streamable http)")

    return server


def _local(server: _Server, entry: Mapping[str, Any]) -> None:
    command, args = entry.get("command"), entry.get("args", [])
    env, cwd = entry.get("env", {}), entry.get("cwd")
    if not isinstance(command, str) or not command:
        raise _SkipError("command is not a string")
    if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
        raise _SkipError("args is not a list of strings")
    if not isinstance(env, dict) or not all(isinstance(v, str) for v in env.values()):
        raise _SkipError("env is not a table of strings")
    server.lines.append(f"command = {toml_string(command)}")
    if args:
        server.lines.append(f"args = [{', '.join(toml_string(a) for a in args)}]")
    plain: dict[str, str] = {}
    for key, value in env.items():
        if not _ENV_NAME.fullmatch(key):
            raise _SkipError(f"env {key!r} is not an environment variable name")
        if _moves(server, "env", key, value):
            server.credentials.append(_credential(server, key, "env", key))
        else:
            plain[key] = value
    if plain:
        server.lines.append(f"env = {_inline(plain)}")
    if isinstance(cwd, str) and cwd:
        server.lines.append(f"cwd = {toml_string(cwd)}")


def _remote(server: _Server, entry: Mapping[str, Any]) -> None:
    url, headers = entry.get("url"), entry.get("headers", {})
    if not isinstance(url, str) or not url:
        raise _SkipError("url is not a string")
    if not isinstance(headers, dict) or not all(
        isinstance(v, str) for v in headers.values()
    ):
        raise _SkipError("headers is not a table of strings")
    server.lines.append(f"url = {toml_string(url)}")
    plain: dict[str, str] = {}
    for key, value in headers.items():
        if not _HEADER_NAME.fullmatch(key):
            raise _SkipError(f"header {key!r} is not a header name")
        scheme, _, token = value.partition(" ")
        if key.lower() == "authorization" and scheme.lower() == "bearer" and token:
            _moves(server, "header", key, token.strip(), force=True)
            server.credentials.append(_credential(server, key, "bearer", None))
        elif _moves(server, "header", key, value):
            server.credentials.append(_credential(server, key, "header", key))
        else:
            plain[key] = value
    if plain:
        server.lines.append(f"headers = {_inline(plain)}")


def _moves(
    server: _Server, place: str, key: str, value: str, *, force: bool = False
) -> bool:
    """Take ``value`` into the server's secrets when it looks like one."""
    if not force and not is_secret_name(key):
        return False
    secret = f"{server.name}.{key}"
    if not NAME_PATTERN.fullmatch(secret):
        raise _SkipError(f"{key} would be vault secret {secret!r}, not a valid name")
    try:
        check_value(value, name=secret)
    except VaultError:
        if force or is_sensitive_name(key):
            raise _SkipError(
                f"{key} holds a credential the vault refuses (fewer than 8 "
                "characters?); set it with proctor secrets set"
            ) from None
        return False
    server.secrets.append((secret, value))
    server.moved.append(Moved(server.name, f"{place} {key}", secret))

    return True


def _credential(server: _Server, key: str, style: str, name: str | None) -> str:
    parts = [f"secret = {toml_string(f'{server.name}.{key}')}"]
    parts.append(f"style = {toml_string(style)}")
    if name is not None:
        parts.append(f"name = {toml_string(name)}")
    return "{ " + ", ".join(parts) + " }"


def _inline(values: Mapping[str, str]) -> str:
    pairs = ", ".join(f"{toml_key(k)} = {toml_string(v)}" for k, v in values.items())
    return "{ " + pairs + " }"


def _table(server: _Server, source: str) -> str:
    lines = [
        "",
        f"# Imported by proctor mcp import from {_comment(source)}.",
        f"[mcp.servers.{server.name}]",
        *server.lines,
    ]
    if server.credentials:
        lines.append("credentials = [")
        lines.extend(f"  {credential}," for credential in server.credentials)
        lines.append("]")

    return "\n".join(lines) + "\n"


def _bridged(
    entry: Mapping[str, Any], name: str, home: Path, bridge: Sequence[str]
) -> dict[str, Any]:
    kept = {key: value for key, value in entry.items() if key not in _LAUNCH_KEYS}
    return {
        **kept,
        "command": bridge[0],
        "args": [*bridge[1:], "mcp", "stdio", name, "--home", str(home)],
        "env": {TOKEN_FILE_ENV: str(home / TOKEN_FILE)},
    }


def _is_bridge(entry: Mapping[str, Any]) -> bool:
    args = entry.get("args")
    command = entry.get("command")
    return (
        isinstance(command, str)
        and Path(command).name == "proctor"
        and isinstance(args, list)
        and args[:2] == ["mcp", "stdio"]
    )


def _comment(text: str) -> str:
    return " ".join(text.split())


def _parse(text: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"proctor.toml does not parse: {exc}") from exc


def _check(config_text: str, appended: str) -> None:
    # The appended tables must leave a file that parses and whose servers load.
    separator = "" if config_text.endswith("\n") or not config_text else "\n"
    load_servers(_parse(config_text + separator + appended))


def apply_import(
    plan: Plan, *, config_file: Path, config_text: str, vault: Vault, file: Path
) -> tuple[Path, list[SecretVersion]]:
    """Carry out a plan; return the backup's path and the secrets' new versions.

    In this order: back up ``file``, store the secrets, extend proctor.toml, then
    rewrite ``file``, so that a failure part-way leaves the client working. The
    backup holds the original secrets: it is owner-only, and whoever imports
    deletes it once the clients work. Raises ConfigError when proctor.toml changed
    since the plan was made or a file cannot be written, VaultError from the vault.
    """
    original = file.read_bytes()
    backup = _backup(file, original)
    versions = [vault.set(name, value) for name, value in plan.secrets]
    if config_file.read_text(encoding="utf-8") != config_text:
        raise ConfigError(f"{config_file} changed during the import; run it again")
    separator = "" if config_text.endswith("\n") or not config_text else "\n"
    text = config_text + separator + plan.toml
    write_private(config_file, text.encode("utf-8"))
    document = json.dumps(plan.document, indent=2, ensure_ascii=False) + "\n"
    write_private(file, document.encode("utf-8"))

    return backup, versions


def _backup(file: Path, original: bytes) -> Path:
    backup = file.with_name(file.name + ".proctor-backup")
    if backup.exists():
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        backup = file.with_name(f"{file.name}.proctor-backup-{stamp}")
    write_private(backup, original, exclusive=True)

    return backup
