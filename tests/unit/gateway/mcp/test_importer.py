"""Tests for planning an mcpServers import: which values move into the vault, what
proctor.toml gains, and what the client's file becomes."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proctor.errors import ConfigError
from proctor.gateway.mcp.config import load_servers
from proctor.gateway.mcp.importer import (
    Plan,
    is_secret_name,
    plan_import,
    server_name,
    toml_key,
    toml_string,
)

HOME = Path("/home/ada/.proctor")
BRIDGE = ["/usr/local/bin/proctor"]
CONFIG = '[ledger]\norigin = "proctor.test/import"\n'
SECRET = "ghp_FAKE0123456789abcdef"


def plan(servers: dict[str, Any], config: str = CONFIG) -> Plan:
    """Plan the import of these servers into a home with ``config``."""
    return plan_import(
        {"mcpServers": servers, "theme": "dark"},
        config_text=config,
        home=HOME,
        bridge=BRIDGE,
        source="claude_desktop_config.json",
    )


class TestSecretNames:
    @pytest.mark.parametrize(
        "name",
        [
            "GITHUB_PERSONAL_ACCESS_TOKEN",
            "BRAVE_API_KEY",
            "OPENAI_KEY",
            "AWS_SECRET_ACCESS_KEY",
            "PGPASSWORD",
            "slack-bot-token",
            "X-Api-Key",
            "Authorization",
            "GITLAB_PAT",
        ],
    )
    def test_credentials_are_recognised(self, name: str) -> None:
        """Names that say token, key, secret or password move to the vault."""
        assert is_secret_name(name)

    @pytest.mark.parametrize(
        "name", ["GIT_AUTHOR_NAME", "KEYBOARD_LAYOUT", "PATH", "TZ", "X-Client"]
    )
    def test_ordinary_names_stay(self, name: str) -> None:
        """Names that merely contain the letters of a word are left alone."""
        assert not is_secret_name(name)


class TestPlan:
    def test_stdio_server_moves_its_token_to_the_vault(self) -> None:
        """The token becomes an env credential; the plain variable stays."""
        entry = {
            "command": "npx",
            "args": ["-y", "@modelcontextprotocol/server-github"],
            "env": {"GITHUB_PERSONAL_ACCESS_TOKEN": SECRET, "LOG_LEVEL": "info"},
            "alwaysAllow": ["search"],
        }
        done = plan({"github": entry})
        table = tomllib.loads(CONFIG + done.toml)["mcp"]["servers"]["github"]

        assert done.servers == (("github", "github"),)
        assert done.secrets == (("github.GITHUB_PERSONAL_ACCESS_TOKEN", SECRET),)
        assert SECRET not in done.toml
        assert SECRET not in repr(done)
        assert table["env"] == {"LOG_LEVEL": "info"}
        assert table["credentials"] == [
            {
                "secret": "github.GITHUB_PERSONAL_ACCESS_TOKEN",
                "style": "env",
                "name": "GITHUB_PERSONAL_ACCESS_TOKEN",
            }
        ]
        assert done.document["theme"] == "dark"
        assert done.document["mcpServers"]["github"] == {
            "alwaysAllow": ["search"],
            "command": "/usr/local/bin/proctor",
            "args": ["mcp", "stdio", "github", "--home", str(HOME)],
            "env": {"PROCTOR_TASK_TOKEN_FILE": str(HOME / "task.token")},
        }

    def test_remote_server_moves_its_bearer_and_keys(self) -> None:
        """Authorization: Bearer becomes a bearer credential, an API key a header."""
        entry = {
            "type": "http",
            "url": "https://mcp.example.com/mcp",
            "headers": {
                "Authorization": f"Bearer {SECRET}",
                "X-Api-Key": "k-0123456789",
                "X-Client": "desk",
            },
        }
        done = plan({"search": entry})
        server = load_servers(tomllib.loads(CONFIG + done.toml))["search"]

        assert dict(server.headers) == {"X-Client": "desk"}
        assert [(c.style, c.secret) for c in server.credentials] == [
            ("bearer", "search.Authorization"),
            ("header", "search.X-Api-Key"),
        ]
        assert dict(done.secrets) == {
            "search.Authorization": SECRET,
            "search.X-Api-Key": "k-0123456789",
        }

    def test_names_become_cedar_identifiers(self) -> None:
        """brave-search is configured as brave_search; the file keeps its key."""
        done = plan({"brave-search": {"command": "brave"}})

        assert done.servers == (("brave-search", "brave_search"),)
        assert done.document["mcpServers"]["brave-search"]["args"][2] == "brave_search"
        assert server_name("1password") == "_1password"

    @pytest.mark.parametrize(
        ("entry", "reason"),
        [
            ({"type": "sse", "url": "https://h/sse"}, "sse transport"),
            ({"command": "proctor", "args": ["mcp", "stdio", "x"]}, "already launched"),
            ({"command": "x", "url": "https://h/mcp"}, "needs a command"),
            ({"command": ["x"]}, "command is not a string"),
            ({"command": "x", "env": {"GITHUB_TOKEN": "short"}}, "vault refuses"),
            ({"command": "x", "env": {"MY-VAR": "v"}}, "not an environment variable"),
            ("npx", "not a table"),
        ],
    )
    def test_servers_that_cannot_move_stay_as_they_are(
        self, entry: object, reason: str
    ) -> None:
        """A server left behind is reported with the reason, its entry untouched."""
        done = plan({"odd": entry})

        assert done.servers == ()
        assert done.skipped[0][0] == "odd"
        assert reason in done.skipped[0][1]
        assert done.document["mcpServers"]["odd"] == entry

    def test_short_value_under_a_loose_name_stays_plain(self) -> None:
        """MAX_TOKENS=1000 looks like a secret by name, but the vault refuses it."""
        done = plan({"llm": {"command": "x", "env": {"MAX_TOKENS": "1000"}}})

        assert done.secrets == ()
        assert 'env = { MAX_TOKENS = "1000" }' in done.toml

    def test_configured_names_are_not_replaced(self) -> None:
        """A server already in proctor.toml is skipped, not overwritten."""
        config = CONFIG + '\n[mcp.servers.git]\ncommand = "mcp-server-git"\n'
        done = plan({"git": {"command": "other"}}, config)

        assert done.servers == ()
        assert "already configured" in done.skipped[0][1]

    def test_document_without_servers_is_refused(self) -> None:
        """A file with no mcpServers table is not a client configuration."""
        with pytest.raises(ConfigError, match="has no mcpServers table"):
            plan_import([], config_text=CONFIG, home=HOME, bridge=BRIDGE, source="f")

    def test_configuration_that_would_break_is_refused(self) -> None:
        """Appended tables that would not load stop the whole import."""
        with pytest.raises(ConfigError, match="does not parse"):
            plan({"git": {"command": "x"}}, "mcp = {}\n" + CONFIG)


class TestToml:
    @given(st.text())
    def test_strings_round_trip(self, text: str) -> None:
        """Any text written as a TOML string reads back the same."""
        assert tomllib.loads(f"k = {toml_string(text)}")["k"] == text

    @given(st.text(min_size=1))
    def test_keys_round_trip(self, key: str) -> None:
        """Any key, bare or quoted, reads back the same."""
        assert tomllib.loads(f"{toml_key(key)} = 1") == {key: 1}
