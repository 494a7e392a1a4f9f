"""Downstream MCP servers from ``[mcp.servers.<name>]`` in proctor.toml, and how each
tool maps to a Cedar action, resource and context.

The keys are those of the ``mcpServers`` JSON that desktop clients write, plus the
vault credentials and the Cedar mapping::

    [mcp.servers.git]                     # a stdio server Proctor launches
    command = "mcp-server-git"
    args = ["--repository", "/srv/repos/proctor"]
    env = { GIT_AUTHOR_NAME = "Proctor" } # plain values only: secrets are in the vault
    cwd = "/srv/repos"
    credentials = [{ secret = "git.TOKEN", style = "env", name = "GITHUB_TOKEN" }]
    resource = 'mcp::git::Repository::"{repo_path}"'   # default for every tool
    timeout = 60                          # seconds a tool call may take

    [mcp.servers.git.tools.git_commit]    # optional, per tool
    resource = 'mcp::git::Repository::"{repo_path}"'
    policy_args = ["repo_path", "message"]
    action = 'mcp::git::Action::"git_commit"'

    [mcp.servers.search]                  # a Streamable HTTP server Proctor calls
    url = "https://search.example.com/mcp"
    headers = { "X-Client" = "proctor" }
    credentials = [{ secret = "search.key", style = "bearer" }]

A server has ``command`` or ``url``, never both. Credentials are vault injections
(:class:`proctor.vault.Injection`): style ``env`` for stdio servers, ``header``,
``bearer`` or ``basic`` for remote ones. A literal ``env`` or ``headers`` value under a
name that is a credential's (``*_TOKEN``, ``Authorization``, ...) is refused: it
belongs in the vault.

The Cedar mapping. A server's name is a Cedar identifier; its namespace is
``mcp::<name>`` unless ``namespace`` says otherwise. A call of tool ``t`` is action
``<namespace>::Action::"t"`` (``action`` overrides it per tool) on the resource
``<namespace>::Server::"<name>"`` unless ``resource`` gives a template: ``Type::"text"``
whose ``{arg}`` placeholders are filled from the call's arguments (strings and whole
numbers), written as a Cedar string literal so an argument can never change the
type. The context is ``{ args: <the arguments> }``.

Arguments and the Cedar schema. Cedar's schema check refuses a context attribute the
schema does not declare, so by default every argument the agent sends must be
declared in the action's ``args`` record (optional ones with ``?``): an argument the
schema does not know is denied, and the decision entry names it. ``policy_args``
(per server or per tool) lists the only arguments Cedar sees; the others are still
recorded but decide nothing. Arguments set to JSON ``null`` are left out of the
context, as Cedar has no null.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any
from urllib.parse import urlsplit

from proctor.errors import ConfigError
from proctor.policy.cedar import cedar_string, is_entity_uid
from proctor.vault.inject import Injection, Style
from proctor.vault.redact import is_sensitive_name

SERVER_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")
"""A server's name: a Cedar identifier, also a URL segment and a vault-name prefix."""

TOOL_NAME = re.compile(r"[A-Za-z0-9_.-]{1,128}")
"""The MCP specification's tool names (2025-11-25, Tools: tool names)."""

DEFAULT_TIMEOUT = 60.0
MAX_KEPT_RULES = 1024
ALL_ARGS = "all"

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_NAMESPACE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:::[A-Za-z_][A-Za-z0-9_]*)*")
_TEMPLATE = re.compile(r'((?:[A-Za-z_][A-Za-z0-9_]*::)*[A-Za-z_][A-Za-z0-9_]*)::"(.*)"')
_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
_SERVER_KEYS = frozenset(
    {
        "command",
        "args",
        "env",
        "cwd",
        "url",
        "headers",
        "credentials",
        "namespace",
        "resource",
        "policy_args",
        "timeout",
        "tools",
    }
)
_TOOL_KEYS = frozenset({"action", "resource", "policy_args"})
_STDIO_STYLES = frozenset({Style.ENV})
_REMOTE_STYLES = frozenset({Style.HEADER, Style.BEARER, Style.BASIC})


class Transport(StrEnum):
    """How Proctor reaches a downstream server."""

    STDIO = "stdio"
    HTTP = "http"


@dataclass(frozen=True)
class ResourceTemplate:
    """``Type::"text {arg} text"``: a Cedar uid whose id is filled from arguments."""

    type: str
    text: str

    @classmethod
    def parse(cls, value: object, where: str) -> ResourceTemplate:
        """Read ``Type::"..."``; raises ConfigError on anything else."""
        match = _TEMPLATE.fullmatch(value) if isinstance(value, str) else None
        if match is None or any(char in match[2] for char in '"\\'):
            raise ConfigError(
                f'{where} resource must read Type::"id" with {{arg}} placeholders, '
                f"got {value!r}"
            )
        stripped = _PLACEHOLDER.sub("", match[2])
        if "{" in stripped or "}" in stripped:
            raise ConfigError(f"{where} resource has a brace outside a placeholder")

        return cls(match[1], match[2])

    @property
    def names(self) -> tuple[str, ...]:
        """The arguments the template reads, in order."""
        return tuple(_PLACEHOLDER.findall(self.text))

    def fill(self, arguments: Mapping[str, object]) -> str:
        """Return the uid for ``arguments``; raises ValueError naming the argument."""

        def value(match: re.Match[str]) -> str:
            name = match[1]
            found = arguments.get(name)
            if isinstance(found, bool) or not isinstance(found, str | int):
                raise ValueError(
                    f"resource needs argument {name!r} as a string or whole number"
                )
            return str(found)

        return f"{self.type}::{cedar_string(_PLACEHOLDER.sub(value, self.text))}"


@dataclass(frozen=True)
class ToolOverride:
    """What ``[mcp.servers.<name>.tools.<tool>]`` changes for one tool."""

    action: str | None = None
    resource: ResourceTemplate | None = None
    policy_args: tuple[str, ...] | None = None
    sets_policy_args: bool = False


@dataclass(frozen=True)
class ToolRule:
    """How calls of one tool are classified."""

    action: str
    resource: ResourceTemplate
    policy_args: tuple[str, ...] | None = None

    def context_args(self, arguments: Mapping[str, Any]) -> dict[str, Any]:
        """The arguments Cedar sees: the listed ones (or all), nulls left out."""
        chosen = (
            arguments.items()
            if self.policy_args is None
            else ((key, arguments[key]) for key in self.policy_args if key in arguments)
        )
        return {key: value for key, value in chosen if value is not None}


@dataclass(frozen=True)
class McpServer:
    """One downstream MCP server and the Cedar mapping of its tools."""

    name: str
    transport: Transport
    command: str | None = None
    args: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    cwd: str | None = None
    url: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    credentials: tuple[Injection, ...] = ()
    namespace: str = ""
    resource: ResourceTemplate | None = None
    policy_args: tuple[str, ...] | None = None
    timeout: float = DEFAULT_TIMEOUT
    tools: Mapping[str, ToolOverride] = field(default_factory=dict)
    _rules: dict[str, ToolRule] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    @classmethod
    def from_table(cls, name: str, table: Mapping[str, Any]) -> McpServer:
        """Build from one ``[mcp.servers.<name>]`` table; raises ConfigError."""
        where = f"[mcp.servers.{name}]"
        if not SERVER_NAME.fullmatch(name):
            raise ConfigError(
                f"{where}: a server name is a letter or '_' then letters, digits or "
                "'_' (it names the cedar namespace mcp::<name>)"
            )
        unknown = sorted(set(table) - _SERVER_KEYS)
        if unknown:
            raise ConfigError(f"{where} has unknown key {unknown[0]!r}")
        transport = _transport(table, where)
        namespace = table.get("namespace", f"mcp::{name}")
        if not isinstance(namespace, str) or not _NAMESPACE.fullmatch(namespace):
            raise ConfigError(
                f"{where} namespace must be a cedar path like mcp::{name}"
            )
        resource = table.get("resource")
        tools = _tools(table.get("tools", {}), where)

        return cls(
            name=name,
            transport=transport,
            command=_optional_text(table, "command", where),
            args=_strings(table.get("args", []), f"{where} args"),
            env=_plain_values(table.get("env", {}), f"{where} env", _env_name),
            cwd=_optional_text(table, "cwd", where),
            url=_url(table.get("url"), where),
            headers=_plain_values(
                table.get("headers", {}), f"{where} headers", _header_name
            ),
            credentials=_credentials(table.get("credentials", []), transport, where),
            namespace=namespace,
            resource=None
            if resource is None
            else ResourceTemplate.parse(resource, where),
            policy_args=_policy_args(table.get("policy_args", ALL_ARGS), where),
            timeout=_timeout(table.get("timeout", DEFAULT_TIMEOUT), where),
            tools=tools,
        )

    def action(self, tool: str) -> str:
        """The Cedar action uid of ``tool`` (a valid tool name)."""
        override = self.tools.get(tool)
        if override is not None and override.action is not None:
            return override.action
        return f"{self.namespace}::Action::{cedar_string(tool)}"

    def rule(self, tool: str) -> ToolRule:
        """How calls of ``tool`` are classified: per-tool keys over the server's."""
        known = self._rules.get(tool)
        if known is not None:
            return known
        rule = self._rule(tool)
        # Tool names come from agents: keep a bounded few, work out the rest.
        if len(self._rules) < MAX_KEPT_RULES:
            self._rules[tool] = rule

        return rule

    def _rule(self, tool: str) -> ToolRule:
        override = self.tools.get(tool) or ToolOverride()
        resource = override.resource or self.resource
        if resource is None:
            resource = ResourceTemplate(f"{self.namespace}::Server", self.name)
        policy_args = (
            override.policy_args if override.sets_policy_args else self.policy_args
        )

        return ToolRule(self.action(tool), resource, policy_args)


def load_servers(raw: Mapping[str, Any]) -> dict[str, McpServer]:
    """Read every ``[mcp.servers.<name>]`` of proctor.toml; raises ConfigError."""
    mcp = raw.get("mcp", {})
    if not isinstance(mcp, Mapping):
        raise ConfigError("[mcp] must be a table")
    unknown = sorted(set(mcp) - {"servers"})
    if unknown:
        raise ConfigError(f"[mcp] has unknown key {unknown[0]!r}")
    servers = mcp.get("servers", {})
    if not isinstance(servers, Mapping) or not all(
        isinstance(table, Mapping) for table in servers.values()
    ):
        raise ConfigError("[mcp.servers] must hold one table per server")

    return {name: McpServer.from_table(name, table) for name, table in servers.items()}


def _transport(table: Mapping[str, Any], where: str) -> Transport:
    has_command, has_url = "command" in table, "url" in table
    if has_command == has_url:
        raise ConfigError(f"{where} needs command (stdio) or url (http), not both")
    if has_url and any(key in table for key in ("args", "env", "cwd")):
        raise ConfigError(f"{where}: args, env and cwd are for stdio servers")
    if has_command and "headers" in table:
        raise ConfigError(f"{where}: headers are for servers reached by url")
    return Transport.STDIO if has_command else Transport.HTTP


def _tools(value: object, where: str) -> dict[str, ToolOverride]:
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where} tools must be a table of tool tables")

    return {tool: _tool(tool, table, where) for tool, table in value.items()}


def _tool(tool: str, table: object, where: str) -> ToolOverride:
    here = f"{where} tool {tool!r}"
    if not TOOL_NAME.fullmatch(tool) or not isinstance(table, Mapping):
        raise ConfigError(f"{here}: not a tool name with a table")
    unknown = sorted(set(table) - _TOOL_KEYS)
    if unknown:
        raise ConfigError(f"{here} has unknown key {unknown[0]!r}")
    action = table.get("action")
    if action is not None and (
        not isinstance(action, str) or not is_entity_uid(action)
    ):
        raise ConfigError(f'{here} action must be a uid like Ns::Action::"x"')
    resource = table.get("resource")
    sets = "policy_args" in table

    return ToolOverride(
        action=action,
        resource=None if resource is None else ResourceTemplate.parse(resource, here),
        policy_args=_policy_args(table["policy_args"], here) if sets else None,
        sets_policy_args=sets,
    )


def _policy_args(value: object, where: str) -> tuple[str, ...] | None:
    if value == ALL_ARGS:
        return None
    if not isinstance(value, list) or not all(
        isinstance(item, str) and _IDENTIFIER.fullmatch(item) for item in value
    ):
        raise ConfigError(f'{where} policy_args must be "all" or a list of names')
    return tuple(value)


def _credentials(
    value: object, transport: Transport, where: str
) -> tuple[Injection, ...]:
    if not isinstance(value, list) or not all(isinstance(v, Mapping) for v in value):
        raise ConfigError(f"{where} credentials must be a list of tables")
    allowed = _STDIO_STYLES if transport is Transport.STDIO else _REMOTE_STYLES
    injections = tuple(Injection.from_config(item) for item in value)
    slots: set[tuple[str, str]] = set()
    for injection in injections:
        if injection.style not in allowed:
            styles = ", ".join(sorted(allowed))
            raise ConfigError(
                f"{where} credential {injection.secret!r}: a {transport} server takes "
                f"style {styles}, not {injection.style}"
            )
        if injection.slot in slots:
            raise ConfigError(f"{where} has two credentials for {injection.slot[1]}")
        slots.add(injection.slot)

    return injections


def _plain_values(
    value: object, where: str, check: Callable[[str, str], None]
) -> dict[str, str]:
    if not isinstance(value, Mapping) or not all(
        isinstance(item, str) for item in value.values()
    ):
        raise ConfigError(f"{where} must be a table of strings")
    for name in value:
        check(name, where)
        if is_sensitive_name(name):
            raise ConfigError(
                f"{where} {name} holds a credential: put it in the vault and name it "
                "in credentials"
            )
    return dict(value)


def _env_name(name: str, where: str) -> None:
    if not _IDENTIFIER.fullmatch(name):
        raise ConfigError(f"{where}: {name!r} is not an environment variable name")


def _header_name(name: str, where: str) -> None:
    if not re.fullmatch(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+", name):
        raise ConfigError(f"{where}: {name!r} is not a header name")


def _url(value: object, where: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ConfigError(f"{where} url must be a string")
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{where} url must be http(s)://host/path, got {value!r}")
    if parts.username or parts.password:
        raise ConfigError(f"{where} url must not carry credentials; use the vault")
    return value


def _optional_text(table: Mapping[str, Any], key: str, where: str) -> str | None:
    value = table.get(key)
    if value is not None and (not isinstance(value, str) or not value):
        raise ConfigError(f"{where} {key} must be a non-empty string")
    return value


def _strings(value: object, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{where} must be a list of strings")
    return tuple(value)


def _timeout(value: object, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise ConfigError(f"{where} timeout must be a positive number of seconds")
    return float(value)
