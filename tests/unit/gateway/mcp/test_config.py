"""Tests for [mcp.servers.<name>]: the mcpServers keys, credentials from the vault
only, and how each tool maps to a Cedar action, resource and context."""

from __future__ import annotations

import tomllib
from typing import Any

import pytest

from proctor.errors import ConfigError
from proctor.gateway.mcp.config import (
    McpServer,
    ResourceTemplate,
    Transport,
    load_servers,
)
from proctor.vault.inject import Style

GIT = """
[mcp.servers.git]
command = "mcp-server-git"
args = ["--repository", "/srv/repos/proctor"]
env = { GIT_AUTHOR_NAME = "Proctor" }
cwd = "/srv/repos"
credentials = [{ secret = "git.TOKEN", style = "env", name = "GITHUB_TOKEN" }]
resource = 'mcp::git::Repository::"{repo_path}"'
policy_args = ["repo_path"]

[mcp.servers.git.tools.git_commit]
policy_args = "all"

[mcp.servers.git.tools.git_log]
action = 'mcp::git::Action::"read"'
resource = 'mcp::git::Log::"{repo_path}"'
"""

SEARCH = """
[mcp.servers.search]
url = "https://search.example.com/mcp"
headers = { "X-Client" = "proctor" }
credentials = [{ secret = "search.key", style = "bearer" }]
"""


def servers(text: str) -> dict[str, McpServer]:
    """Load the servers of a proctor.toml fragment."""
    return load_servers(tomllib.loads(text))


def server(table: dict[str, Any], name: str = "srv") -> McpServer:
    """Build one server from a table."""
    return McpServer.from_table(name, table)


class TestServers:
    def test_stdio_server_keeps_the_mcpservers_keys(self) -> None:
        """command, args, env and cwd read as a desktop client writes them."""
        git = servers(GIT)["git"]

        assert git.transport is Transport.STDIO
        assert git.command == "mcp-server-git"
        assert git.args == ("--repository", "/srv/repos/proctor")
        assert dict(git.env) == {"GIT_AUTHOR_NAME": "Proctor"}
        assert git.cwd == "/srv/repos"
        assert [(c.style, c.name) for c in git.credentials] == [
            (Style.ENV, "GITHUB_TOKEN")
        ]

    def test_remote_server_keeps_url_and_headers(self) -> None:
        """url and headers describe a Streamable HTTP server."""
        search = servers(SEARCH)["search"]

        assert search.transport is Transport.HTTP
        assert search.url == "https://search.example.com/mcp"
        assert dict(search.headers) == {"X-Client": "proctor"}
        assert search.credentials[0].style is Style.BEARER

    def test_no_mcp_table_means_no_servers(self) -> None:
        """A home without [mcp] configures nothing."""
        assert load_servers({"ledger": {}}) == {}

    @pytest.mark.parametrize(
        ("table", "message"),
        [
            ({"command": "x", "url": "http://h/mcp"}, "not both"),
            ({}, "needs command"),
            ({"url": "http://h/mcp", "args": ["a"]}, "are for stdio servers"),
            ({"command": "x", "headers": {"A": "b"}}, "servers reached by url"),
            ({"command": "x", "color": "red"}, "unknown key 'color'"),
            ({"url": "ftp://h/mcp"}, "must be http"),
            ({"command": "x", "args": "--help"}, "list of strings"),
            ({"command": "x", "timeout": 0}, "positive number"),
            ({"command": "x", "policy_args": "some"}, "policy_args"),
            ({"command": "x", "namespace": "mcp::bad-name"}, "cedar path"),
        ],
    )
    def test_wrong_tables_are_refused(
        self, table: dict[str, Any], message: str
    ) -> None:
        """Each mistake is named."""
        with pytest.raises(ConfigError, match=message):
            server(table)

    @pytest.mark.parametrize("name", ["brave-search", "1password", "a b", ""])
    def test_server_names_are_cedar_identifiers(self, name: str) -> None:
        """The name becomes the namespace mcp::<name>, so it must be an identifier."""
        with pytest.raises(ConfigError, match="server name"):
            server({"command": "x"}, name)

    def test_mcp_must_hold_only_servers(self) -> None:
        """A stray key under [mcp] is refused rather than ignored."""
        with pytest.raises(ConfigError, match="unknown key 'server'"):
            load_servers({"mcp": {"server": {}}})


class TestSecretsStayInTheVault:
    @pytest.mark.parametrize(
        ("table", "message"),
        [
            ({"command": "x", "env": {"GITHUB_TOKEN": "ghp_x"}}, "in the vault"),
            (
                {"url": "http://h/mcp", "headers": {"Authorization": "Bearer x"}},
                "vault",
            ),
            ({"url": "http://h/mcp", "headers": {"X-Api-Key": "k"}}, "in the vault"),
            ({"url": "http://u:p@h/mcp"}, "must not carry credentials"),
        ],
    )
    def test_literal_credentials_are_refused(
        self, table: dict[str, Any], message: str
    ) -> None:
        """A secret written into proctor.toml is refused and sent to the vault."""
        with pytest.raises(ConfigError, match=message):
            server(table)

    @pytest.mark.parametrize(
        ("table", "style"),
        [
            ({"command": "x"}, {"secret": "s", "style": "bearer"}),
            ({"command": "x"}, {"secret": "s", "style": "header", "name": "X-Key"}),
            ({"url": "http://h/mcp"}, {"secret": "s", "style": "env", "name": "K"}),
            ({"url": "http://h/mcp"}, {"secret": "s", "style": "query", "name": "k"}),
        ],
    )
    def test_credentials_go_where_the_transport_reads_them(
        self, table: dict[str, Any], style: dict[str, str]
    ) -> None:
        """Environment for stdio servers; headers for remote ones."""
        with pytest.raises(ConfigError, match="server takes style"):
            server({**table, "credentials": [style]})

    def test_two_credentials_in_one_slot_are_refused(self) -> None:
        """Bearer and basic both fill Authorization: only one may."""
        credentials = [
            {"secret": "a", "style": "bearer"},
            {"secret": "b", "style": "basic"},
        ]
        with pytest.raises(ConfigError, match="two credentials for authorization"):
            server({"url": "http://h/mcp", "credentials": credentials})


class TestCedarMapping:
    def test_defaults_name_the_tool_and_the_server(self) -> None:
        """Action mcp::<server>::Action::"<tool>" on the server itself."""
        rule = server({"command": "x"}, "time").rule("get_current_time")

        assert rule.action == 'mcp::time::Action::"get_current_time"'
        assert rule.resource.fill({}) == 'mcp::time::Server::"time"'
        assert rule.policy_args is None

    def test_tool_tables_override_the_server(self) -> None:
        """Per-tool action, resource and policy_args win over the server's."""
        git = servers(GIT)["git"]
        log, commit, status = (
            git.rule("git_log"),
            git.rule("git_commit"),
            git.rule("git_status"),
        )

        assert log.action == 'mcp::git::Action::"read"'
        assert log.resource.fill({"repo_path": "/r"}) == 'mcp::git::Log::"/r"'
        assert commit.policy_args is None
        assert status.policy_args == ("repo_path",)
        assert status.resource.fill({"repo_path": "/r"}) == (
            'mcp::git::Repository::"/r"'
        )

    def test_namespace_can_be_shared(self) -> None:
        """A second server of the same kind reuses its namespace and schema."""
        work = server({"command": "x", "namespace": "mcp::git"}, "work")

        assert work.rule("git_status").action == 'mcp::git::Action::"git_status"'
        assert work.rule("git_status").resource.fill({}) == 'mcp::git::Server::"work"'

    def test_context_sees_listed_arguments_without_nulls(self) -> None:
        """policy_args limits what Cedar sees, and JSON null counts as absent."""
        status = servers(GIT)["git"].rule("git_status")
        commit = servers(GIT)["git"].rule("git_commit")
        arguments = {"repo_path": "/r", "message": "m", "contains": None}

        assert status.context_args(arguments) == {"repo_path": "/r"}
        assert commit.context_args(arguments) == {"repo_path": "/r", "message": "m"}


class TestResourceTemplate:
    def test_argument_is_written_as_a_cedar_string(self) -> None:
        """Quotes and backslashes in an argument cannot end the id early."""
        template = ResourceTemplate.parse('mcp::git::Repository::"{repo_path}"', "t")

        assert template.fill({"repo_path": 'a"b\\c'}) == (
            'mcp::git::Repository::"a\\"b\\\\c"'
        )
        assert template.fill({"repo_path": 7}) == 'mcp::git::Repository::"7"'
        assert template.names == ("repo_path",)

    @pytest.mark.parametrize("value", [None, True, 1.5, ["x"], {"a": 1}])
    def test_missing_or_odd_arguments_are_refused(self, value: object) -> None:
        """Only strings and whole numbers fill a placeholder."""
        template = ResourceTemplate.parse('T::"{name}"', "t")
        with pytest.raises(ValueError, match="argument 'name'"):
            template.fill({"name": value} if value is not None else {})

    @pytest.mark.parametrize(
        "text", ['T::"a{b"', "T::x", 'T::"a\\"b"', '::"x"', 'T::"{1x}"']
    )
    def test_malformed_templates_are_refused(self, text: str) -> None:
        """A template is Type::"text" with {identifier} placeholders."""
        with pytest.raises(ConfigError, match="resource"):
            ResourceTemplate.parse(text, "t")
