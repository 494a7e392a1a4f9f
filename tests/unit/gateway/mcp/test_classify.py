"""Tests for classifying a tools/call: the Call the pipeline decides, what is
forwarded, Proctor's _meta keys, and the digests that bind approvals and outcomes."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

import rfc8785
from hypothesis import given
from hypothesis import strategies as st

from proctor.gateway.mcp.classify import (
    APPROVAL_KEY,
    MAX_NOTE,
    MAX_RECORDED_ARGS,
    REASONING_KEY,
    TOOL_CALL_KEY,
    TRACEPARENT_KEY,
    call_digest,
    classify,
    recordable,
    result_digest,
)
from proctor.gateway.mcp.config import McpServer
from proctor.gateway.pipeline import MALFORMED

GIT = McpServer.from_table(
    "git", {"command": "x", "resource": 'mcp::git::Repository::"{repo_path}"'}
)
TIME = McpServer.from_table("time", {"command": "x"})
TRACE = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

json_scalars = st.one_of(
    st.text(max_size=20),
    st.integers(min_value=-(2**53) + 1, max_value=2**53 - 1),
    st.booleans(),
    st.none(),
)
arguments = st.dictionaries(
    st.text(alphabet="abcdefghij_", min_size=1, max_size=8),
    st.recursive(
        json_scalars,
        lambda inner: (
            st.lists(inner, max_size=3)
            | st.dictionaries(
                st.text(alphabet="xyz", min_size=1, max_size=3), inner, max_size=3
            )
        ),
        max_leaves=8,
    ),
    max_size=5,
)


def recorded(request: Mapping[str, object]) -> dict[str, Any]:
    """The arguments as a request records them."""
    arguments = request["arguments"]
    assert isinstance(arguments, dict)
    return arguments


class TestCall:
    def test_tool_call_becomes_action_resource_and_args(self) -> None:
        """The pipeline sees the tool's action, the filled resource and the args."""
        found = classify(GIT, "git_status", {"repo_path": "/r"}, None)
        call = found.call

        assert found.problem is None
        assert (call.door, call.target) == ("mcp", "git")
        assert call.action == 'mcp::git::Action::"git_status"'
        assert call.resource == 'mcp::git::Repository::"/r"'
        assert call.context == {"args": {"repo_path": "/r"}}
        assert call.request == {
            "method": "tools/call",
            "tool": "git_status",
            "arguments": {"repo_path": "/r"},
        }
        assert call.digest == call_digest("git", "git_status", {"repo_path": "/r"})
        assert found.arguments == {"repo_path": "/r"}

    def test_no_arguments_is_an_empty_record(self) -> None:
        """A tool called without arguments gives Cedar an empty args record."""
        found = classify(TIME, "now", None, None)

        assert found.call.context == {"args": {}}
        assert found.arguments == {}


class TestMeta:
    def test_proctor_keys_are_read_and_kept_back(self) -> None:
        """Reasoning, tool-call id, trace and approval go to the Call, not onward."""
        meta = {
            REASONING_KEY: "because",
            TOOL_CALL_KEY: "call_1",
            TRACEPARENT_KEY: TRACE,
            APPROVAL_KEY: "apr_0123456789abcdef",
            "io.modelcontextprotocol/protocolVersion": "2026-07-28",
            "progressToken": 4,
            "com.example/ticket": "OPS-1",
        }
        found = classify(TIME, "now", {}, meta)
        call = found.call

        assert (call.note, call.tool_call, call.trace) == ("because", "call_1", TRACE)
        assert call.approval == "apr_0123456789abcdef"
        assert found.meta == {"com.example/ticket": "OPS-1"}

    def test_long_reasoning_is_kept_for_its_own_entry(self) -> None:
        """Reasoning beyond a note's length is not squeezed into the decision."""
        text = "x" * (MAX_NOTE + 1)
        found = classify(TIME, "now", {}, {REASONING_KEY: text})

        assert found.call.note is None
        assert found.reasoning == text

    def test_unknown_or_odd_proctor_keys_make_the_call_malformed(self) -> None:
        """A key Proctor does not read, or a value that is not text, is refused."""
        for meta in (
            {"dev.proctor/sudo": "yes"},
            {TOOL_CALL_KEY: 12},
            {TRACEPARENT_KEY: "0" * 300},
            {REASONING_KEY: "   "},
        ):
            found = classify(TIME, "now", {}, meta)
            assert found.call.action == MALFORMED
            assert found.problem is not None
            assert found.call.request["problem"] == found.problem


class TestMalformed:
    def test_invalid_tool_name_is_malformed(self) -> None:
        """A tool name outside the specification's alphabet is never classified."""
        found = classify(TIME, 'now"; permit', {}, None)

        assert found.call.action == MALFORMED
        assert found.call.resource == 'mcp::time::Server::"time"'
        assert found.call.context == {}
        assert found.problem == "the tool name is not a valid MCP tool name"

    def test_resource_argument_missing_is_malformed(self) -> None:
        """A resource read from an argument needs that argument."""
        found = classify(GIT, "git_status", {}, None)

        assert found.call.action == MALFORMED
        assert "repo_path" in str(found.problem)

    def test_float_argument_cannot_be_decided_on(self) -> None:
        """Cedar has no floats, so a float argument Cedar would see is refused."""
        found = classify(TIME, "sleep", {"seconds": 1.5}, None)

        assert found.call.action == MALFORMED
        assert "cannot be decided on" in str(found.problem)
        assert set(recorded(found.call.request)) == {"sha256", "size"}

    def test_large_arguments_for_cedar_are_refused(self) -> None:
        """What Cedar sees must fit in an entry beside everything else."""
        found = classify(TIME, "write", {"text": "x" * MAX_RECORDED_ARGS}, None)

        assert found.call.action == MALFORMED
        assert "policy_args" in str(found.problem)

    def test_large_arguments_cedar_does_not_see_are_recorded_as_a_digest(self) -> None:
        """policy_args keeps a big argument out of Cedar; the entry keeps its digest."""
        server = McpServer.from_table("fs", {"command": "x", "policy_args": ["path"]})
        big = {"path": "/tmp/a", "text": "x" * MAX_RECORDED_ARGS}
        found = classify(server, "write", big, None)
        kept = recorded(found.call.request)

        assert found.problem is None
        assert found.call.context == {"args": {"path": "/tmp/a"}}
        assert set(kept) == {"sha256", "size"}
        assert found.arguments == big


class TestDigests:
    @given(arguments)
    def test_call_digest_is_sha256_of_rfc8785(self, args: dict[str, Any]) -> None:
        """The digest any verifier can recompute with a complete RFC 8785 encoder."""
        expected = hashlib.sha256(
            rfc8785.dumps({"server": "git", "tool": "t", "arguments": args})
        ).hexdigest()

        assert call_digest("git", "t", args) == expected

    def test_key_order_does_not_matter(self) -> None:
        """Canonical JSON sorts keys, so the same call has the same digest."""
        assert call_digest("s", "t", {"a": 1, "b": 2}) == call_digest(
            "s", "t", {"b": 2, "a": 1}
        )

    def test_floats_and_huge_integers_still_digest(self) -> None:
        """Values outside the entry format get a digest rather than an error."""
        assert len(call_digest("s", "t", {"x": 0.5})) == 64
        assert len(call_digest("s", "t", {"x": 2**60})) == 64

    def test_result_digest_covers_content_structure_and_error_flag(self) -> None:
        """structuredContent counts when present; _meta and resultType do not."""
        plain = {"content": [{"type": "text", "text": "hi"}], "isError": False}
        framed = {**plain, "_meta": {"x": 1}, "resultType": "complete"}
        structured = {**plain, "structuredContent": {"a": 1}}
        body = json.dumps(plain, sort_keys=True, separators=(",", ":")).encode()

        assert result_digest(plain) == result_digest(framed)
        assert result_digest(plain) == (hashlib.sha256(body).hexdigest(), len(body))
        assert result_digest(structured) != result_digest(plain)

    def test_recordable_keeps_small_values(self) -> None:
        """Arguments an entry can hold are kept as they are."""
        assert recordable({"a": [1, "b"]}) == {"a": [1, "b"]}
