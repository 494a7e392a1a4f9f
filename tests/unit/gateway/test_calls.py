"""The Call an HTTP request becomes, before the pipeline decides and records it."""

from __future__ import annotations

from proctor.gateway.calls import (
    MAX_RECORDED_PATH,
    classified_call,
    malformed_call,
    recorded_query,
    summary,
)
from proctor.gateway.classify import classify
from proctor.gateway.headers import Meta
from proctor.gateway.inbound import Body, Problem, Target, parse_body, request_digest
from proctor.gateway.pipeline import Call
from proctor.gateway.routes import MALFORMED, UNMAPPED, ServiceConfig
from proctor.vault.redact import Redactor

SECRET = "sk-live-7f3e9a1c"
FINANCE = ServiceConfig.from_table(
    "finance",
    {
        "base_url": "http://127.0.0.1:8081",
        "credential": {"secret": "finance-key", "style": "bearer"},
        "routes": [
            {
                "method": "POST",
                "path": "/payments",
                "action": 'Payments::Action::"CreatePayment"',
                "context": {"amount": {"from": "body.amount", "type": "long"}},
            }
        ],
    },
)
META = Meta(approval="apr_1", note="due", trace=None, tool_call="call_1")


def scrub(value: object) -> object:
    return Redactor([SECRET]).scrub(value)


def body(raw: bytes) -> Body:
    parsed = parse_body(raw, "application/json")
    assert isinstance(parsed, Body)
    return parsed


def payment(
    path: str = "/payments", query: tuple[tuple[str, str], ...] = ()
) -> tuple[Call, Target, Body]:
    target = Target("finance", path, path, query)
    sent = body(b'{"amount": 5}')
    classified = classify(FINANCE, "POST", path, query, sent.json)
    call = classified_call(
        method="POST",
        service=FINANCE,
        target=target,
        body=sent,
        headers={"accept": "*/*"},
        classified=classified,
        meta=META,
        scrub=scrub,
    )
    return call, target, sent


class TestClassifiedCall:
    def test_carries_the_classification_and_the_request(self) -> None:
        """Action, context, the request as sent, the credential name and headers."""
        call, target, sent = payment()

        assert call.action == 'Payments::Action::"CreatePayment"'
        assert call.context == {"amount": 5}
        assert call.request == {
            "method": "POST",
            "path": "/payments",
            "query": [],
            "headers": {"accept": "*/*"},
            "body": {"amount": 5},
        }
        assert call.credential == "finance-key"
        assert call.digest == request_digest(
            "POST", "finance", target, sent.digest, {"accept": "*/*"}
        )
        assert (call.approval, call.note, call.tool_call) == ("apr_1", "due", "call_1")

    def test_unmapped_request_records_why(self) -> None:
        """An unmapped request keeps its reason under problem."""
        call, _, _ = payment("/refunds")

        assert call.action == UNMAPPED
        assert call.request["problem"] == "no route of service 'finance' maps POST"

    def test_sensitive_query_values_are_removed(self) -> None:
        """?api_key=... loses its value by name, a vault value by value."""
        query = (("api_key", "anything"), ("note", f"x{SECRET}"), ("page", "2"))

        assert recorded_query(query, scrub) == [
            ["api_key", "[redacted]"],
            ["note", "x[redacted]"],
            ["page", "2"],
        ]

    def test_query_digest_uses_real_values(self) -> None:
        """The digest binds the query as sent, not as recorded."""
        first, _, _ = payment(query=(("api_key", "a"),))
        second, _, _ = payment(query=(("api_key", "b"),))

        assert first.request["query"] == second.request["query"]
        assert first.digest != second.digest


class TestMalformedCall:
    def test_records_the_problem_on_the_service(self) -> None:
        """A refused request is a Malformed call on the service it named."""
        described = summary("GET", b"/http/fin/../x", Problem(400, "dot segment"))
        call = malformed_call(service="fin", summary=described, meta=META)

        assert call.action == MALFORMED
        assert call.resource == 'Proctor::Service::"fin"'
        assert call.request == {
            "method": "GET",
            "path": "/http/fin/../x",
            "problem": "dot segment",
        }
        assert len(call.digest) == 64

    def test_summary_has_no_query_and_a_capped_path(self) -> None:
        """The summary never holds the query, and the path is cut to the cap."""
        described = summary("GET", b"/http/x/" + b"a" * 5000, None)

        assert set(described) == {"method", "path"}
        assert len(str(described["path"])) == MAX_RECORDED_PATH
