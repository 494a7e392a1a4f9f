"""``proctor mcp import`` end to end: a desktop client's mcpServers file moves into
the home, its secrets into the vault, and the rewritten entry, launched as the client
would launch it, reaches the same server with the secret injected by Proctor."""

from __future__ import annotations

import hashlib
import json
import shutil
import stat
import sys
from pathlib import Path
from typing import Any

import pytest
from mcp import Client, StdioServerParameters

from proctor.files import write_private
from proctor.gateway.mcp.config import Transport, load_servers
from proctor.gateway.mcp.importer import TOKEN_FILE
from proctor.home import Home, init
from proctor.runtime import Runtime
from proctor.tasks.service import ScopeText
from proctor.vault.inject import Style

from ..conftest import Cli
from .conftest import ASSETS, BIN, ECHO, ledger, run, text

pytestmark = pytest.mark.slow

FAKE_TOKEN = "ghp_FAKE0123456789abcdefNOTREAL"
FAKE_BEARER = "sk-live-FAKE-9f8e7d6c5b4a-NOTREAL"


def client_file(folder: Path) -> Path:
    """A claude_desktop_config.json as a person keeps it, secrets in plain text."""
    document = {
        "globalShortcut": "Ctrl+Space",
        "mcpServers": {
            "echo": {
                "command": sys.executable,
                "args": [str(ECHO), "ECHO_API_TOKEN"],
                "env": {"ECHO_API_TOKEN": FAKE_TOKEN, "ECHO_MODE": "plain"},
                "disabled": False,
            },
            "search-remote": {
                "url": "https://mcp.example.com/mcp",
                "headers": {
                    "Authorization": f"Bearer {FAKE_BEARER}",
                    "X-Client": "desk",
                },
            },
            "old-sse": {"type": "sse", "url": "https://mcp.example.com/sse"},
        },
    }
    path = folder / "claude_desktop_config.json"
    path.write_text(json.dumps(document, indent=2), encoding="utf-8")
    return path


@pytest.fixture
def fresh(tmp_path: Path) -> Home:
    """A home with the MCP test policies and no servers yet."""
    home = init(Home(tmp_path / "home"), origin="proctor.test/import")
    for source in (ASSETS / "org").iterdir():
        shutil.copy(source, home.policies / source.name)
    return home


class TestImport:
    def test_round_trip_moves_secrets_and_the_bridge_works(
        self, cli: Cli, fresh: Home, tmp_path: Path
    ) -> None:
        """Secrets end in the vault only, and the rewritten entry runs the bridge."""
        path = client_file(tmp_path)
        original = path.read_text(encoding="utf-8")

        done = cli(
            "mcp",
            "import",
            str(path),
            "--home",
            str(fresh.path),
            "--command",
            str(BIN / "proctor"),
        )
        rewritten = json.loads(path.read_text(encoding="utf-8"))
        config = fresh.config_file.read_text(encoding="utf-8")
        backup = path.with_name(path.name + ".proctor-backup")

        assert done.code == 0, done.err
        for secret in (FAKE_TOKEN, FAKE_BEARER):
            assert secret not in path.read_text(encoding="utf-8")
            assert secret not in config
            assert secret not in done.out + done.err
        assert backup.read_text(encoding="utf-8") == original
        assert stat.S_IMODE(backup.stat().st_mode) == 0o600
        assert rewritten["globalShortcut"] == "Ctrl+Space"
        assert rewritten["mcpServers"]["old-sse"]["type"] == "sse"
        assert "old-sse" in done.err

        servers = load_servers(fresh.config().raw)
        echo, remote = servers["echo"], servers["search_remote"]
        assert dict(echo.env) == {"ECHO_MODE": "plain"}
        assert [(c.style, c.secret, c.name) for c in echo.credentials] == [
            (Style.ENV, "echo.ECHO_API_TOKEN", "ECHO_API_TOKEN")
        ]
        assert remote.transport is Transport.HTTP
        assert dict(remote.headers) == {"X-Client": "desk"}
        assert [c.style for c in remote.credentials] == [Style.BEARER]

        runtime = Runtime.open(fresh)
        try:
            vault = runtime.secrets.vault
            assert vault.get("echo.ECHO_API_TOKEN") == FAKE_TOKEN
            assert vault.get("search_remote.Authorization") == FAKE_BEARER
            kept = json.dumps(ledger(runtime))
            rotated = [e for e in ledger(runtime) if e["type"] == "secret.rotated"]
            assert {e["secret"] for e in rotated} == {
                "echo.ECHO_API_TOKEN",
                "search_remote.Authorization",
            }
            assert FAKE_TOKEN not in kept
            assert FAKE_BEARER not in kept
            token = self._task_token(runtime)
        finally:
            runtime.close()
        write_private(fresh.path / TOKEN_FILE, token.encode())

        received = run(self._launch(rewritten["mcpServers"]["echo"]))

        assert rewritten["mcpServers"]["echo"]["disabled"] is False
        assert received["env_sha256"] == hashlib.sha256(FAKE_TOKEN.encode()).hexdigest()

    def test_second_import_leaves_bridged_entries_alone(
        self, cli: Cli, fresh: Home, tmp_path: Path
    ) -> None:
        """Importing the rewritten file again changes nothing and says why."""
        path = client_file(tmp_path)
        first = cli("mcp", "import", str(path), "--home", str(fresh.path))
        config = fresh.config_file.read_text(encoding="utf-8")
        rewritten = path.read_text(encoding="utf-8")

        again = cli("mcp", "import", str(path), "--home", str(fresh.path), "--json")
        summary = json.loads(again.out)

        assert first.code == 0, first.err
        assert again.code == 0, again.err
        assert summary["imported"] == []
        assert {item["server"] for item in summary["skipped"]} == {
            "echo",
            "search-remote",
            "old-sse",
        }
        assert fresh.config_file.read_text(encoding="utf-8") == config
        assert path.read_text(encoding="utf-8") == rewritten

    @staticmethod
    def _task_token(runtime: Runtime) -> str:
        text = (ASSETS / "scopes" / "echo.toml").read_text(encoding="utf-8")
        task = runtime.service.open_task(
            user="alice@example.com",
            agent="desk-agent",
            request="say hello",
            scope=ScopeText.parse(text, format="toml"),
            by="test",
        )
        return runtime.service.issue_token(task.id, by="test").token

    @staticmethod
    async def _launch(entry: dict[str, Any]) -> dict[str, Any]:
        parameters = StdioServerParameters(
            command=entry["command"], args=entry["args"], env=entry["env"]
        )
        async with Client(parameters) as client:
            result = await client.call_tool("echo", {"text": "hello"})
        answer: dict[str, Any] = json.loads(text(result))
        return answer
