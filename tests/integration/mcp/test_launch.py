"""A downstream server that exits before it answers: the link says so in one clear
error, and the bridge a client launched ends with that line, not a traceback."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest

from proctor.errors import GatewayError
from proctor.gateway.mcp.config import McpServer
from proctor.gateway.mcp.downstream import connect
from proctor.home import Home, init

from .conftest import BIN

pytestmark = pytest.mark.slow

QUITTER = {"command": sys.executable, "args": ["-c", "pass"]}
"""A server command that starts and exits at once."""


def test_connect_to_a_server_that_exits_raises_one_gateway_error() -> None:
    server = McpServer.from_table("quitter", QUITTER)

    async def open_link() -> None:
        async with connect(server, lambda name: ""):
            pytest.fail("a server that exited cannot be linked to")

    with pytest.raises(GatewayError, match="mcp server quitter"):
        asyncio.run(open_link())


def test_the_bridge_to_a_server_that_exits_ends_with_one_line(tmp_path: Path) -> None:
    home = init(Home(tmp_path / "home"), origin="proctor.test/launch")
    with home.config_file.open("a", encoding="utf-8") as config:
        config.write(
            f'\n[mcp.servers.quitter]\ncommand = "{sys.executable}"\n'
            'args = ["-c", "pass"]\n'
        )

    done = subprocess.run(
        [str(BIN / "proctor"), "mcp", "stdio", "quitter", "--home", str(home.path)],
        input=b"",
        capture_output=True,
        timeout=60,
        check=False,
    )

    errors = done.stderr.decode()
    assert done.returncode == 1
    assert "Traceback" not in errors
    assert errors.strip().splitlines()[-1] == (
        "proctor: mcp server quitter closed the link"
    )
