"""Checking an agent's request target, query and body, and digesting the request."""

from __future__ import annotations

import hashlib
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proctor.gateway.inbound import (
    EMPTY_DIGEST,
    MAX_QUERY_FIELDS,
    MAX_TARGET_BYTES,
    RECORD_LIMIT,
    Body,
    Problem,
    Target,
    encode_query,
    parse_body,
    parse_query,
    parse_target,
    request_digest,
)
from proctor.gateway.routes import NO_BODY

PREFIX = b"/http/"


def target(raw_path: bytes, raw_query: bytes = b"") -> Target:
    parsed = parse_target(raw_path, raw_query, PREFIX)
    assert isinstance(parsed, Target), parsed
    return parsed


def problem(raw_path: bytes, raw_query: bytes = b"") -> Problem:
    parsed = parse_target(raw_path, raw_query, PREFIX)
    assert isinstance(parsed, Problem), parsed
    return parsed


def body(raw: bytes, content_type: str | None = "application/json") -> Body:
    parsed = parse_body(raw, content_type)
    assert isinstance(parsed, Body), parsed
    return parsed


def refused(raw: bytes, content_type: str | None = "application/json") -> Problem:
    parsed = parse_body(raw, content_type)
    assert isinstance(parsed, Problem), parsed
    return parsed


class TestTargets:
    def test_service_path_and_query_are_split(self) -> None:
        """/http/<service>/<path>?<query> gives its three parts, decoded."""
        parsed = target(b"/http/finance/invoices/inv-1", b"expand=lines")

        assert parsed == Target(
            "finance", "/invoices/inv-1", "/invoices/inv-1", (("expand", "lines"),)
        )

    def test_empty_path_is_the_root(self) -> None:
        """/http/finance/ targets the service's root."""
        assert target(b"/http/finance/").path == "/"

    def test_trailing_slash_is_kept(self) -> None:
        """A trailing slash stays part of the path."""
        assert target(b"/http/finance/invoices/").path == "/invoices/"

    @pytest.mark.parametrize(
        ("raw", "path", "wire"),
        [
            (b"/http/s/a%20b", "/a b", "/a%20b"),
            (b"/http/s/a;b", "/a;b", "/a%3Bb"),
            (b"/http/s/a+b", "/a+b", "/a%2Bb"),
            (b"/http/s/%C3%A9t%C3%A9", "/été", "/%C3%A9t%C3%A9"),
            (b"/http/s/%41%62c", "/Abc", "/Abc"),
            (b"/http/s/a:b@c", "/a:b@c", "/a:b@c"),
            (b"/http/s/100%25", "/100%", "/100%25"),
        ],
    )
    def test_wire_path_is_rebuilt_from_decoded_segments(
        self, raw: bytes, path: str, wire: str
    ) -> None:
        """The upstream gets one canonical encoding of the path that was classified."""
        parsed = target(raw)

        assert (parsed.path, parsed.wire_path) == (path, wire)

    @pytest.mark.parametrize(
        ("raw", "status", "message"),
        [
            (b"/other/finance/x", 400, "below /http/<service>/"),
            (b"http://evil.example/http/finance/x", 400, "below /http/"),
            (b"/http/finance", 404, "names no service"),
            (b"/http/Finance/x", 404, "names no service"),
            (b"/http/fin%61nce/x", 404, "names no service"),
            (b"/http//x", 404, "names no service"),
            (b"/http/s/a%2Fb", 400, "encoded slash"),
            (b"/http/s/a%2fb", 400, "encoded slash"),
            (b"/http/s/a%5Cb", 400, "encoded slash or a backslash"),
            (b"/http/s/a\\b", 400, "backslash"),
            (b"/http/s/../admin", 400, "dot segment"),
            (b"/http/s/x/..", 400, "dot segment"),
            (b"/http/s/./x", 400, "dot segment"),
            (b"/http/s/%2e%2e/admin", 400, "dot segment"),
            (b"/http/s/.%2E/admin", 400, "dot segment"),
            (b"/http/s/..;x/admin", 400, "dot segment"),
            (b"/http/s/%252e%252e/admin", 400, "encoded twice"),
            (b"/http/s/a%252Fb", 400, "encoded twice"),
            (b"/http/s/a%00b", 400, "control character"),
            (b"/http/s/a%0Ab", 400, "control character"),
            (b"/http/s/%ff", 400, "not percent-encoded UTF-8"),
            (b"/http/s/a//b", 400, "empty segment"),
        ],
    )
    def test_unsafe_targets_are_refused(
        self, raw: bytes, status: int, message: str
    ) -> None:
        """Anything an upstream might read differently from Proctor is refused."""
        found = problem(raw)

        assert found.status == status
        assert message in found.reason

    def test_long_target_is_refused(self) -> None:
        """A target longer than the limit is answered 414."""
        found = problem(b"/http/s/" + b"a" * MAX_TARGET_BYTES)

        assert found.status == 414

    def test_query_problem_is_reported(self) -> None:
        """A bad query makes the whole target a problem."""
        assert problem(b"/http/s/x", b"a=%ff").status == 400


class TestQuery:
    def test_pairs_are_decoded_in_order(self) -> None:
        """Repeats, blanks and "+" as space survive decoding."""
        assert parse_query(b"b=2&a=1&b=&c&d=x+y%2Bz") == (
            ("b", "2"),
            ("a", "1"),
            ("b", ""),
            ("c", ""),
            ("d", "x y+z"),
        )

    def test_empty_query(self) -> None:
        """No query is no pairs."""
        assert parse_query(b"") == ()

    @pytest.mark.parametrize(
        ("raw", "message"),
        [
            (b"a=%ff", "not percent-encoded UTF-8"),
            ("a=é".encode(), "not percent-encoded UTF-8"),
            (b"a=%00", "control character"),
            (b"&".join([b"a=1"] * (MAX_QUERY_FIELDS + 1)), "more than 256 fields"),
        ],
    )
    def test_bad_queries_are_refused(self, raw: bytes, message: str) -> None:
        """A query that does not decode cleanly is a 400."""
        found = parse_query(raw)

        assert isinstance(found, Problem)
        assert message in found.reason

    @given(
        st.lists(
            st.tuples(
                st.text(st.characters(min_codepoint=0x20, exclude_categories=["Cs"])),
                st.text(st.characters(min_codepoint=0x20, exclude_categories=["Cs"])),
            ).filter(lambda pair: pair[0] != "" or pair[1] != ""),
            max_size=8,
        )
    )
    def test_encoding_round_trips(self, pairs: list[tuple[str, str]]) -> None:
        """What the door sends decodes to exactly the pairs it classified."""
        pairs = [pair for pair in pairs if "\x7f" not in "".join(pair)]

        assert parse_query(encode_query(pairs).encode("ascii")) == tuple(pairs)


class TestJsonBodies:
    def test_json_is_parsed_and_recorded(self) -> None:
        """A small JSON body is kept parsed, with the digest of its bytes."""
        raw = b'{"amount": 5, "vendor": "acme"}'
        parsed = body(raw)

        assert parsed.json == {"amount": 5, "vendor": "acme"}
        assert parsed.recorded == parsed.json
        assert parsed.digest == hashlib.sha256(raw).hexdigest()

    @pytest.mark.parametrize(
        "content_type",
        [
            "application/json",
            "Application/JSON; charset=UTF-8",
            'application/json; charset="utf-8"',
            "application/vnd.api+json",
            "application/problem+json",
        ],
    )
    def test_json_media_types(self, content_type: str) -> None:
        """JSON and +json types are read as JSON, whatever their case."""
        assert body(b"[1]", content_type).json == [1]

    @pytest.mark.parametrize(
        ("raw", "content_type", "status", "message"),
        [
            (b"{", "application/json", 400, "not valid JSON"),
            (b"", "application/json", 400, "is empty"),
            (b'{"a": NaN}', "application/json", 400, "not valid JSON"),
            (b'{"a": 1} {"b": 2}', "application/json", 400, "not valid JSON"),
            (b'"\xff"', "application/json", 400, "not valid JSON"),
            (b"\xef\xbb\xbf{}", "application/json", 400, "not valid JSON"),
            (b'"\\ud800"', "application/json", 400, "not valid JSON"),
            (b'{"a": 1, "a": 2}', "application/json", 400, "repeats the key 'a'"),
            (b'[{"x": {"b": 1, "b": 1}}]', "application/json", 400, "repeats"),
            (b"[" * 2000 + b"]" * 2000, "application/json", 400, "depth limit"),
            (b"{}", "application/json; charset=latin-1", 415, "must be UTF-8"),
        ],
    )
    def test_bad_json_is_refused(
        self, raw: bytes, content_type: str, status: int, message: str
    ) -> None:
        """Malformed, ambiguous or mis-encoded JSON gets a clear 4xx."""
        found = refused(raw, content_type)

        assert found.status == status
        assert message in found.reason

    def test_json_too_deep_for_the_duplicate_check_is_refused(self) -> None:
        """Nesting that orjson accepts but the key check cannot follow is a 400."""
        raw = b'{"a":' * 1020 + b"1" + b"}" * 1020

        assert refused(raw).reason == "the JSON body nests too deeply"

    def test_deep_json_is_recorded_by_digest(self) -> None:
        """Nesting deeper than the ledger keeps is recorded by digest."""
        raw = b"[" * 40 + b"]" * 40

        assert body(raw).recorded == {
            "sha256": hashlib.sha256(raw).hexdigest(),
            "size": 80,
        }

    @pytest.mark.parametrize(
        "raw",
        [
            b'{"amount": 1.5}',
            b'{"big": 9007199254740992}',
            '{"clé": 1}'.encode(),
            json.dumps({"x": "y" * RECORD_LIMIT}).encode(),
        ],
    )
    def test_unrecordable_json_is_recorded_by_digest(self, raw: bytes) -> None:
        """JSON the ledger cannot hold as it is (floats, huge, non-ASCII keys) is
        recorded by its digest and size."""
        parsed = body(raw)

        assert parsed.recorded == {
            "sha256": hashlib.sha256(raw).hexdigest(),
            "size": len(raw),
        }


class TestOtherBodies:
    def test_empty_body(self) -> None:
        """No body: no JSON, nothing recorded, the digest of nothing."""
        parsed = body(b"", None)

        assert (parsed.json, parsed.recorded, parsed.digest) == (
            NO_BODY,
            None,
            EMPTY_DIGEST,
        )

    def test_text_is_recorded_as_text(self) -> None:
        """A small UTF-8 text body is recorded as it is."""
        assert body("héllo".encode(), "text/plain; charset=utf-8").recorded == "héllo"

    def test_invalid_utf8_text_is_refused(self) -> None:
        """A text body claiming UTF-8 must be UTF-8."""
        assert "not valid UTF-8" in refused(b"\xff", "text/plain").reason

    def test_large_text_is_recorded_by_digest(self) -> None:
        """Text over the record limit is kept by digest."""
        raw = b"a" * (RECORD_LIMIT + 1)

        assert body(raw, "text/plain").recorded == {
            "sha256": hashlib.sha256(raw).hexdigest(),
            "size": len(raw),
        }

    @pytest.mark.parametrize(
        "content_type",
        [None, "application/octet-stream", "text/plain; charset=latin-1"],
    )
    def test_other_bodies_pass_as_bytes(self, content_type: str | None) -> None:
        """Binary and other bodies pass through, recorded by digest only."""
        parsed = body(b"\x00\xff", content_type)

        assert parsed.json is NO_BODY
        assert parsed.recorded == {
            "sha256": hashlib.sha256(b"\x00\xff").hexdigest(),
            "size": 2,
        }

    def test_form_bodies_are_not_recorded_in_clear(self) -> None:
        """A form body may carry password=...: only its digest is recorded."""
        parsed = body(b"user=a&password=hunter2", "application/x-www-form-urlencoded")

        assert "hunter2" not in json.dumps(parsed.recorded)


class TestRequestDigest:
    def digest(
        self,
        raw_path: bytes,
        raw_query: bytes = b"",
        *,
        method: str = "POST",
        headers: dict[str, str] | None = None,
    ) -> str:
        return request_digest(
            method,
            "finance",
            target(raw_path, raw_query),
            "b" * 64,
            {"accept": "application/json"} if headers is None else headers,
        )

    def test_query_order_does_not_matter(self) -> None:
        """Reordered query pairs are the same request."""
        assert self.digest(b"/http/finance/p", b"a=1&b=2") == self.digest(
            b"/http/finance/p", b"b=2&a=1"
        )

    def test_equivalent_encodings_share_a_digest(self) -> None:
        """Two spellings of one path are one request."""
        assert self.digest(b"/http/finance/%61") == self.digest(b"/http/finance/a")

    def test_every_part_counts(self) -> None:
        """Method, path, query, service and body each change the digest."""
        base = self.digest(b"/http/finance/p", b"a=1")
        others = {
            self.digest(b"/http/finance/p", b"a=1", method="PUT"),
            self.digest(b"/http/finance/q", b"a=1"),
            self.digest(b"/http/finance/p", b"a=2"),
            request_digest(
                "POST", "other", target(b"/http/finance/p", b"a=1"), "b" * 64, {}
            ),
            request_digest(
                "POST", "finance", target(b"/http/finance/p", b"a=1"), "c" * 64, {}
            ),
            self.digest(b"/http/finance/p", b"a=1", headers={"x-extra": "sneaky"}),
        }

        assert base not in others
        assert len(others) == 6

    def test_trace_context_and_prefer_do_not_count(self) -> None:
        """A retry's own trace context and wait are the same request; any other
        header is not."""
        plain = {"accept": "application/json"}
        traced = {
            **plain,
            "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "tracestate": "vendor=1",
            "prefer": "wait=30",
        }

        assert self.digest(b"/http/finance/p", headers=traced) == self.digest(
            b"/http/finance/p", headers=plain
        )
        assert self.digest(b"/http/finance/p", headers=plain) != self.digest(
            b"/http/finance/p", headers={**plain, "idempotency-key": "k1"}
        )
