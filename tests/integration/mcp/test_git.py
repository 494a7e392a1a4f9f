"""mcp-server-git on a real repository: a task scoped to read it may look at it, is
refused, recorded and flagged for a write, and the repository stays exactly as it
was; a commit the organisation gates goes through once a maintainer approves it."""

from __future__ import annotations

from pathlib import Path

import httpx2
import pytest
from mcp import Client, MCPError

from proctor.gateway.mcp.classify import APPROVAL_KEY, ENTRY_KEY
from proctor.gateway.mcp.proxy import DENIED, NEEDS_APPROVAL
from proctor.home import Home
from proctor.runtime import Runtime
from proctor.tasks.people import Person
from proctor.tasks.state import TaskState

from .conftest import (
    Opener,
    bridge,
    entry,
    git,
    meta,
    outcome,
    over_http,
    refusal,
    run,
    snapshot,
    text,
    verify,
)

pytestmark = pytest.mark.slow


def size(runtime: Runtime) -> int:
    """How many entries the ledger holds, whoever wrote them."""
    return runtime.ledger.store.size()


READS = {
    "git_status",
    "git_log",
    "git_diff",
    "git_diff_unstaged",
    "git_diff_staged",
    "git_show",
    "git_branch",
}
WRITES = {"git_commit", "git_add", "git_reset", "git_create_branch", "git_checkout"}


class TestReadTask:
    def test_list_shows_only_the_tools_the_task_may_call(
        self, http_door: str, open_task: Opener
    ) -> None:
        """tools/list hides git_commit and every other write from a read task."""
        agent = open_task("read-repo.toml")

        async def scenario() -> set[str]:
            async with over_http(f"{http_door}/git", agent.token) as client:
                listed = await client.list_tools()
                return {tool.name for tool in listed.tools}

        names = run(scenario())

        assert names == READS
        assert not names & WRITES

    def test_reads_are_allowed_and_answered(
        self, http_door: str, open_task: Opener, repo: Path, runtime: Runtime
    ) -> None:
        """git_status, git_log and git_diff go through and answer as the server did."""
        agent = open_task("read-repo.toml")
        path = str(repo)

        async def scenario() -> list[object]:
            async with over_http(f"{http_door}/git", agent.token) as client:
                return [
                    await client.call_tool("git_status", {"repo_path": path}),
                    await client.call_tool(
                        "git_log", {"repo_path": path, "max_count": 5}
                    ),
                    await client.call_tool(
                        "git_diff", {"repo_path": path, "target": "HEAD~1"}
                    ),
                ]

        status, log, diff = run(scenario())

        assert "notes.txt" in text(status)
        assert "Say hello" in text(log)
        assert "Start the ledger tools" in text(log)
        assert "diff --git a/app.py b/app.py" in text(diff)
        for result in (status, log, diff):
            decision = entry(runtime, result.meta[ENTRY_KEY])
            assert decision["outcome"] == "allow"
            assert decision["resource"] == f'mcp::git::Repository::"{path}"'
            assert decision["policies"] == ["scope:read-repository"]
            assert outcome(runtime, decision["index"])["digest"]

    @pytest.mark.parametrize(
        "write",
        [
            ("git_commit", {"message": "Sneak this in"}),
            ("git_reset", {}),
            ("git_add", {"files": ["app.py"]}),
        ],
        ids=["commit", "reset", "add"],
    )
    def test_write_is_denied_recorded_flagged_and_changes_nothing(
        self,
        http_door: str,
        open_task: Opener,
        repo: Path,
        runtime: Runtime,
        write: tuple[str, dict[str, object]],
    ) -> None:
        """A write outside the scope is a breach: refused, recorded, task stopped."""
        tool, extra = write
        arguments = {"repo_path": str(repo), **extra}
        agent = open_task("read-repo.toml")
        before = snapshot(repo)

        async def scenario() -> tuple[MCPError, int]:
            async with over_http(f"{http_door}/git", agent.token) as client:
                denied = await refusal(client, tool, arguments)
            # The breach quarantined the task: its token no longer opens the door.
            headers = {"Authorization": f"Bearer {agent.token}"}
            async with httpx2.AsyncClient(headers=headers) as http:
                after = await http.post(f"{http_door}/git", json={})
            return denied, after.status_code

        denied, after = run(scenario())
        decision = entry(runtime, denied.data["entry"])
        breach = entry(runtime, denied.data["breach"])
        later = [entry(runtime, i) for i in range(decision["index"], size(runtime))]

        assert snapshot(repo) == before
        assert denied.code == DENIED
        assert f"entry {decision['index']}" in denied.message
        assert decision["outcome"] == "deny"
        assert decision["breach"] is True
        assert decision["action"] == f'mcp::git::Action::"{tool}"'
        assert decision["request"]["arguments"] == arguments
        assert breach["type"] == "breach"
        assert breach["decision"] == decision["index"]
        task = runtime.service.require_task(agent.task.id)
        assert task.state is TaskState.QUARANTINED
        assert after == 401
        assert not [e for e in later if e["type"] == "call.completed"]

    def test_another_repository_is_outside_the_scope(
        self, http_door: str, open_task: Opener, work: Path, runtime: Runtime
    ) -> None:
        """The scope names one repository: reading another one is a breach."""
        agent = open_task("read-repo.toml")

        async def scenario() -> MCPError:
            async with over_http(f"{http_door}/work", agent.token) as client:
                return await refusal(client, "git_status", {"repo_path": str(work)})

        denied = run(scenario())

        assert denied.code == DENIED
        assert entry(runtime, denied.data["entry"])["resource"] == (
            f'mcp::git::Repository::"{work}"'
        )


class TestApprovedCommit:
    def test_list_shows_a_tool_that_needs_approval(
        self, http_door: str, open_task: Opener, work: Path
    ) -> None:
        """A tool the organisation gates behind an approver is still listed."""
        agent = open_task("commit-repo.toml", repository=work)

        async def scenario() -> set[str]:
            async with over_http(f"{http_door}/work", agent.token) as client:
                listed = await client.list_tools()
                return {tool.name for tool in listed.tools}

        assert run(scenario()) == {"git_status", "git_log", "git_commit"}

    def test_commit_waits_for_a_maintainer_then_goes_through_once(
        self,
        http_door: str,
        open_task: Opener,
        work: Path,
        runtime: Runtime,
        maintainer: Person,
    ) -> None:
        """The organisation gates commits: refused with an approval id, then allowed."""
        agent = open_task("commit-repo.toml", repository=work)
        arguments = {"repo_path": str(work), "message": "Record the invoice notes"}
        head = git(work, "rev-parse", "HEAD")

        async def ask() -> MCPError:
            async with over_http(f"{http_door}/work", agent.token) as client:
                return await refusal(client, "git_commit", arguments)

        waiting = run(ask())
        approval = waiting.data["approval"]
        assert waiting.code == NEEDS_APPROVAL
        assert git(work, "rev-parse", "HEAD") == head

        runtime.service.grant(approval, maintainer, "notes belong in the repo")

        async def retry() -> tuple[object, MCPError]:
            async with over_http(f"{http_door}/work", agent.token) as client:
                retrying = {APPROVAL_KEY: approval}
                done = await client.call_tool(
                    "git_commit", arguments, meta=meta(retrying)
                )
                again = await refusal(client, "git_commit", arguments, retrying)
                return done, again

        done, again = run(retry())
        decision = entry(runtime, done.meta[ENTRY_KEY])

        assert decision["outcome"] == "allow"
        assert decision["approval"] == approval
        assert git(work, "log", "-1", "--format=%s").strip() == arguments["message"]
        assert git(work, "rev-parse", "HEAD~1") == head
        assert again.code == DENIED
        assert f"approval {approval} is used" in again.message


class TestBridge:
    def test_bridge_launched_like_a_desktop_client(
        self, home: Home, open_task: Opener, repo: Path, runtime: Runtime
    ) -> None:
        """The bridge subprocess lists, allows reads, refuses reset; verify passes."""
        agent = open_task("read-repo.toml")
        before = snapshot(repo)
        path = str(repo)

        async def scenario() -> tuple[set[str], object, MCPError]:
            env = {"PROCTOR_TASK_TOKEN": agent.token}
            async with Client(bridge(home, "git", env)) as client:
                listed = await client.list_tools()
                status = await client.call_tool("git_status", {"repo_path": path})
                reset = await refusal(client, "git_reset", {"repo_path": path})
                return {tool.name for tool in listed.tools}, status, reset

        names, status, reset = run(scenario())
        decision = entry(runtime, reset.data["entry"])

        assert names == READS
        assert "notes.txt" in text(status)
        assert reset.code == DENIED
        assert decision["breach"] is True
        assert decision["policies"] == ["org-git-no-reset"]
        assert snapshot(repo) == before
        checked = verify(home)
        assert checked.returncode == 0, checked.stderr
