"""What the door reads from headers, strips going out, and lets back in."""

from __future__ import annotations

import pytest

from proctor.gateway.headers import (
    IDENTITY,
    MAX_ID,
    MAX_NOTE,
    Relocation,
    inbound_headers,
    outbound_headers,
    read_meta,
)

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
RELOCATION = Relocation.for_service("http://up.example:8081/api/", "/http/finance")


def raw(*pairs: tuple[str, str]) -> list[tuple[bytes, bytes]]:
    return [(name.encode(), value.encode()) for name, value in pairs]


class TestOutbound:
    @pytest.mark.parametrize(
        "name",
        [
            "connection",
            "keep-alive",
            "proxy-connection",
            "proxy-authorization",
            "proxy-anything",
            "te",
            "trailer",
            "transfer-encoding",
            "upgrade",
            "host",
            "content-length",
            "expect",
            "authorization",
            "proctor-approval",
            "proctor-reasoning",
            "proctor-anything",
            "accept-encoding",
            "x-http-method-override",
            "x-http-method",
            "x-method-override",
            "x-original-method",
            "x-original-url",
            "x-rewrite-url",
            "forwarded",
            "x-forwarded-for",
            "x-forwarded-proto",
            "x-real-ip",
        ],
    )
    def test_hop_by_hop_and_proctor_headers_go(self, name: str) -> None:
        """Hop-by-hop, framing, the task token, Proctor's own headers, method
        overrides and forwarding claims go; identity is asked for instead."""
        sent = outbound_headers(raw((name, "x"), ("accept", "application/json")))

        assert sent == IDENTITY | {"accept": "application/json"}

    def test_headers_named_by_connection_go(self) -> None:
        """A header listed in Connection is hop-by-hop too (RFC 9110 §7.6.1)."""
        sent = outbound_headers(
            raw(
                ("connection", "keep-alive, X-Secret-Hop"),
                ("connection", "x-other"),
                ("x-secret-hop", "1"),
                ("x-other", "2"),
                ("x-kept", "3"),
            )
        )

        assert sent == IDENTITY | {"x-kept": "3"}

    def test_proctor_cookies_go_and_others_stay(self) -> None:
        """Cookies meant for Proctor never reach the upstream; the rest do."""
        sent = outbound_headers(
            raw(("cookie", "proctor_session=abc; theme=dark"), ("cookie", "lang=en"))
        )

        assert sent == IDENTITY | {"cookie": "theme=dark; lang=en"}

    def test_cookie_header_of_only_proctor_cookies_goes(self) -> None:
        """A Cookie header left empty is not sent at all."""
        assert outbound_headers(raw(("cookie", "Proctor-Console=1"))) == IDENTITY

    def test_repeated_headers_are_joined(self) -> None:
        """Repeats travel as one comma-separated header (RFC 9110 §5.3)."""
        sent = outbound_headers(raw(("accept", "a/b"), ("accept", "c/d")))

        assert sent == IDENTITY | {"accept": "a/b, c/d"}

    def test_utf8_values_go_upstream_as_they_came(self) -> None:
        """A value in UTF-8 is the same text upstream, so the same bytes once the
        client encodes it (aiohttp writes headers in UTF-8)."""
        sent = outbound_headers([(b"x-note", "café ✓".encode())])

        assert sent["x-note"].encode("utf-8") == "café ✓".encode()

    def test_trace_and_ordinary_headers_pass(self) -> None:
        """traceparent and application headers go upstream unchanged."""
        sent = outbound_headers(
            raw(("traceparent", TRACEPARENT), ("x-request-id", "r1"))
        )

        assert sent == IDENTITY | {"traceparent": TRACEPARENT, "x-request-id": "r1"}


class TestInbound:
    def test_hop_by_hop_and_forged_entries_go(self) -> None:
        """An upstream cannot forge Proctor-Entry or set hop-by-hop headers."""
        kept = inbound_headers(
            [
                (b"Content-Type", b"application/json"),
                (b"Proctor-Entry", b"1"),
                (b"Transfer-Encoding", b"chunked"),
                (b"Connection", b"close, X-Hop"),
                (b"X-Hop", b"1"),
                (b"Set-Cookie", b"a=1"),
            ],
            relocation=RELOCATION,
        )

        assert kept == [(b"content-type", b"application/json"), (b"set-cookie", b"a=1")]

    @pytest.mark.parametrize(
        ("location", "expected"),
        [
            (b"http://up.example:8081/api/x?y=1", b"/http/finance/x?y=1"),
            (b"http://up.example:8081/api", b"/http/finance"),
            (b"/api/invoices/2", b"/http/finance/invoices/2"),
            (b"/apix", b"/apix"),
            (b"http://up.example:8081/apix", b"http://up.example:8081/apix"),
            (b"//up.example:8081/api/x", b"//up.example:8081/api/x"),
            (b"https://elsewhere.example/", b"https://elsewhere.example/"),
            (b"relative/path", b"relative/path"),
        ],
    )
    def test_redirects_into_the_service_come_back_through_proctor(
        self, location: bytes, expected: bytes
    ) -> None:
        """A Location inside the upstream is rewritten below /http/<service>."""
        kept = inbound_headers([(b"Location", location)], relocation=RELOCATION)

        assert kept == [(b"location", expected)]

    def test_service_without_path_relocates_every_absolute_path(self) -> None:
        """With a bare base URL, any absolute path is the upstream's."""
        relocation = Relocation.for_service("http://up.example", "/http/bin")

        assert relocation.apply(b"/get") == b"/http/bin/get"


class TestMeta:
    @pytest.mark.parametrize(
        ("value", "token"),
        [
            ("Bearer abc.def", "abc.def"),
            ("bearer   abc ", "abc"),
            ("Basic dXNlcjpwdw==", None),
            ("Bearer ", None),
            ("abc", None),
        ],
    )
    def test_bearer_token(self, value: str, token: str | None) -> None:
        """Only a Bearer Authorization carries a task token."""
        assert read_meta(raw(("authorization", value))).token == token

    def test_missing_headers_read_as_nothing(self) -> None:
        """A request without Proctor headers has no token, note or wait."""
        meta = read_meta([])

        assert (meta.token, meta.approval, meta.note, meta.trace, meta.wait) == (
            None,
            None,
            None,
            None,
            0.0,
        )

    def test_proctor_headers_are_read(self) -> None:
        """Approval, reasoning, trace and tool call come into the call."""
        meta = read_meta(
            raw(
                ("proctor-approval", "apr_0123"),
                ("proctor-reasoning", "invoice inv-1 is due"),
                ("traceparent", TRACEPARENT),
                ("proctor-tool-call", "call_42"),
            )
        )

        assert (meta.approval, meta.note, meta.trace, meta.tool_call) == (
            "apr_0123",
            "invoice inv-1 is due",
            TRACEPARENT,
            "call_42",
        )
        assert meta.problem is None

    def test_long_reasoning_is_cut(self) -> None:
        """A note longer than the cap is cut, with an ellipsis."""
        note = read_meta(raw(("proctor-reasoning", "x" * 5000))).note

        assert note is not None
        assert len(note) == MAX_NOTE
        assert note.endswith("…")

    def test_reasoning_is_utf8_without_control_characters(self) -> None:
        """Reasoning sent as UTF-8 reads back as text, controls removed."""
        meta = read_meta([(b"proctor-reasoning", "payé\x07 ok".encode())])

        assert meta.note == "payé ok"

    def test_a_value_that_is_not_utf8_is_a_problem(self) -> None:
        """Bytes that are no UTF-8 text cannot be forwarded as they came: a 400."""
        text = read_meta([(b"x-note", "café".encode())])
        binary = read_meta([(b"x-note", b"caf\xe9\xff")])

        assert text.problem is None
        assert binary.problem == "the value of x-note is not UTF-8 text"

    @pytest.mark.parametrize("coding", [b"gzip, chunked", b"identity", b"chunked, x"])
    def test_a_coding_besides_chunked_is_a_problem(self, coding: bytes) -> None:
        """Proctor reads chunked bodies only; another coding would be forwarded
        as if it were none (RFC 9112 §6.1)."""
        meta = read_meta([(b"transfer-encoding", coding)])
        chunked = read_meta([(b"transfer-encoding", b"Chunked")])

        assert meta.problem == "chunked is the only transfer coding accepted"
        assert chunked.problem is None

    @pytest.mark.parametrize("name", ["proctor-approval", "proctor-tool-call"])
    def test_overlong_ids_are_a_problem(self, name: str) -> None:
        """An approval or tool-call id past the cap makes the request a 400."""
        meta = read_meta(raw((name, "a" * (MAX_ID + 1))))

        assert meta.problem is not None
        assert f"longer than {MAX_ID}" in meta.problem

    @pytest.mark.parametrize(
        "value",
        [
            "garbage",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
        ],
    )
    def test_invalid_traceparent_is_ignored(self, value: str) -> None:
        """A traceparent that does not parse is dropped (W3C Trace Context §3.2)."""
        assert read_meta(raw(("traceparent", value))).trace is None

    @pytest.mark.parametrize(
        ("value", "wait"),
        [
            ("wait=30", 30.0),
            ("respond-async, wait=5", 5.0),
            ("handling=strict; wait=7", 7.0),
            ("wait=abc", 0.0),
            ("nowait=3", 0.0),
        ],
    )
    def test_prefer_wait(self, value: str, wait: float) -> None:
        """Prefer: wait=N asks to hold the call for approval (RFC 7240 §4.3)."""
        assert read_meta(raw(("prefer", value))).wait == wait

    def test_size_counts_every_header(self) -> None:
        """The header size covers names, values and separators."""
        assert read_meta(raw(("a", "bc"), ("d", ""))).size == (1 + 2 + 4) + (1 + 4)
