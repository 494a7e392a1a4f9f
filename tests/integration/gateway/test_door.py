"""The HTTP door's own safety, over real sockets: a real uvicorn in front, real httpbin
behind. The pipeline here is the allow-by-action double of doubles.py, so these tests
prove what the door sends, strips, refuses and reports; test_gateway.py proves the
same path end to end with the real pipeline and ledger.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import time
import tomllib
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import httpx
import pytest
from starlette.applications import Starlette

from proctor.gateway.http import DoorSettings, HttpDoor
from proctor.gateway.routes import MALFORMED, UNMAPPED, load_services
from proctor.gateway.wire import MAX_HEAD_BYTES

from .conftest import (
    Agent,
    AppServer,
    agent_factory,
    free_port,
    raw_exchange,
    status_of,
)
from .doubles import TOKEN, PipelineDouble

SECRETS = {
    "bin-key": "bin-secret-4f1c2a9e77",
    "bearer-key": "bearer-secret-8d03b6e1aa",
    "basic-pass": "passwd-5e6f7a8b9c",
    "wrong-pass": "not-the-password-3c2d1e",
    "query-key": "query-secret-0b9a8c7d6e",
}
ALLOWED = {
    'Bin::Action::"ReadHeaders"',
    'Bin::Action::"Get"',
    'Bin::Action::"Pay"',
    'Bin::Action::"Put"',
    'Bin::Action::"Stream"',
    'Bin::Action::"Redirect"',
    'Bin::Action::"Drip"',
    'Bin::Action::"Delay"',
}
SERVICES = """
[services.bin]
base_url = "{httpbin}"
credential = {{ secret = "bin-key", style = "header", name = "X-Api-Key" }}
max_body = 4096

[[services.bin.routes]]
method = "GET"
path = "/headers"
action = 'Bin::Action::"ReadHeaders"'

[[services.bin.routes]]
method = "GET"
path = "/get"
action = 'Bin::Action::"Get"'

[[services.bin.routes]]
method = "GET"
path = "/gzip"
action = 'Bin::Action::"Get"'

[[services.bin.routes]]
method = "GET"
path = "/response-headers"
action = 'Bin::Action::"Get"'

[[services.bin.routes]]
method = "POST"
path = "/anything/pay"
action = 'Bin::Action::"Pay"'
context.amount = {{ from = "body.amount", type = "long" }}
context.vendor = "body.vendor"

[[services.bin.routes]]
method = "PUT"
path = "/anything/{{item}}"
action = 'Bin::Action::"Put"'
resource = 'Bin::Item::"{{item}}"'

[[services.bin.routes]]
method = "GET"
path = "/stream-bytes/{{n}}"
action = 'Bin::Action::"Stream"'

[[services.bin.routes]]
method = "GET"
path = "/redirect-to"
action = 'Bin::Action::"Redirect"'

[[services.bin.routes]]
method = "GET"
path = "/absolute-redirect/{{n}}"
action = 'Bin::Action::"Redirect"'

[[services.bin.routes]]
method = "GET"
path = "/status/{{code}}"
action = 'Bin::Action::"Denied"'

[[services.bin.routes]]
method = "GET"
path = "/drip"
action = 'Bin::Action::"Drip"'

[services.slow]
base_url = "{httpbin}"
timeout = 1

[[services.slow.routes]]
method = "GET"
path = "/delay/{{n}}"
action = 'Bin::Action::"Delay"'

[[services.slow.routes]]
method = "GET"
path = "/drip"
action = 'Bin::Action::"Drip"'

[services.bearer]
base_url = "{httpbin}"
credential = {{ secret = "bearer-key", style = "bearer" }}

[[services.bearer.routes]]
method = "GET"
path = "/bearer"
action = 'Bin::Action::"Get"'

[services.basic]
base_url = "{httpbin}"
credential = {{ secret = "basic-pass", style = "basic", username = "user" }}

[[services.basic.routes]]
method = "GET"
path = "/basic-auth/{{user}}/{{password}}"
action = 'Bin::Action::"Get"'

[services.wrongbasic]
base_url = "{httpbin}"
credential = {{ secret = "wrong-pass", style = "basic", username = "user" }}

[[services.wrongbasic.routes]]
method = "GET"
path = "/basic-auth/{{user}}/{{password}}"
action = 'Bin::Action::"Get"'

[services.query]
base_url = "{httpbin}"
credential = {{ secret = "query-key", style = "query", name = "api_key" }}

[[services.query.routes]]
method = "GET"
path = "/anything/q"
action = 'Bin::Action::"Get"'

[services.down]
base_url = "http://127.0.0.1:{closed}"
credential = {{ secret = "query-key", style = "query", name = "api_key" }}

[[services.down.routes]]
method = "GET"
path = "/x"
action = 'Bin::Action::"Get"'

[services.nocred]
base_url = "{httpbin}"
credential = {{ secret = "not-in-vault", style = "header", name = "X-Key" }}

[[services.nocred.routes]]
method = "GET"
path = "/get"
action = 'Bin::Action::"Get"'
"""

T = TypeVar("T")


def eventually(probe: Callable[[], T], *, timeout: float = 10.0) -> T:
    """Wait for ``probe`` to return something truthy (outcomes are reported after
    the last byte has gone to the agent)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = probe()
        if found:
            return found
        time.sleep(0.01)
    pytest.fail("nothing happened in time")


class Door:
    """The door under test: its server, its double, and agents to drive it."""

    def __init__(self, server: AppServer, double: PipelineDouble) -> None:
        self.server = server
        self.double = double
        self.agent: Agent = agent_factory(server.url)

    def client(self, **headers: str) -> httpx.Client:
        return self.agent(TOKEN, **headers)

    def raw(self, *parts: bytes) -> bytes:
        return raw_exchange(self.server.port, *parts)


@pytest.fixture(scope="module")
def door_server(httpbin: str) -> Iterator[Door]:
    """One door over the double and httpbin for the whole module."""
    text = SERVICES.format(httpbin=httpbin, closed=free_port())
    double = PipelineDouble(secrets=SECRETS, allowed=set(ALLOWED))
    door = HttpDoor(
        double,
        load_services(tomllib.loads(text)),
        settings=DoorSettings(body_timeout=1.0),
    )
    app = Starlette(routes=[door.route()], lifespan=door.lifespan)
    with AppServer(app) as server:
        yield Door(server, double)


@pytest.fixture
def door(door_server: Door) -> Door:
    """The module's door with the double's records cleared."""
    door_server.server.settle()
    door_server.double.reset()
    return door_server


def echoed_headers(response: httpx.Response) -> dict[str, str]:
    headers: dict[str, str] = response.json()["headers"]
    return {name.lower(): value for name, value in headers.items()}


def as_sent_upstream(door: Door, response: httpx.Response, secret: str) -> Any:
    """The JSON the upstream answered, from the masked answer the agent got.

    The stars stand where the upstream echoed ``secret``; put back, the bytes
    must be the ones whose digest the outcome recorded.
    """
    outcome = eventually(lambda: door.double.completions)[0]
    upstream = response.content.replace(b"*" * len(secret), secret.encode())

    assert secret.encode() not in response.content
    assert outcome.masked >= 1
    assert hashlib.sha256(upstream).hexdigest() == outcome.digest
    return json.loads(upstream)


class TestInjection:
    def test_header_credential_replaces_the_agents_own(self, door: Door) -> None:
        """The vault's X-Api-Key goes upstream, the agent's one and its token never;
        httpbin's echo of it comes back masked."""
        with door.client(**{"X-Api-Key": "agent-made-up-key"}) as agent:
            response = agent.get("bin/headers")
        echoed = as_sent_upstream(door, response, SECRETS["bin-key"])
        seen = {name.lower(): value for name, value in echoed["headers"].items()}

        assert response.status_code == 200
        assert seen["x-api-key"] == SECRETS["bin-key"]
        assert "authorization" not in seen
        assert TOKEN not in response.text

    def test_bearer_credential_is_exact(self, door: Door) -> None:
        """httpbin's /bearer echoes exactly the vault's token, not the agent's; the
        agent sees it masked."""
        with door.client() as agent:
            response = agent.get("bearer/bearer")

        assert response.status_code == 200
        assert response.json() == {
            "authenticated": True,
            "token": "*" * len(SECRETS["bearer-key"]),
        }
        assert as_sent_upstream(door, response, SECRETS["bearer-key"]) == {
            "authenticated": True,
            "token": SECRETS["bearer-key"],
        }

    def test_basic_credential_is_exact(self, door: Door) -> None:
        """httpbin's /basic-auth accepts the injected user and password."""
        password = SECRETS["basic-pass"]
        with door.client() as agent:
            response = agent.get(f"basic/basic-auth/user/{password}")

        assert response.status_code == 200
        assert response.json() == {"authenticated": True, "user": "user"}

    def test_wrong_basic_credential_is_refused_upstream(self, door: Door) -> None:
        """A different password fails at httpbin: the check is on the real bytes."""
        password = SECRETS["basic-pass"]
        with door.client() as agent:
            response = agent.get(f"wrongbasic/basic-auth/user/{password}")

        outcome = eventually(lambda: door.double.completions)[0]

        assert response.status_code == 401
        assert outcome.status == 401

    def test_query_credential_replaces_the_agents_own(self, door: Door) -> None:
        """An api_key the agent sent is replaced; other parameters pass."""
        with door.client() as agent:
            response = agent.get("query/anything/q", params={"api_key": "x", "n": "1"})
        echoed = as_sent_upstream(door, response, SECRETS["query-key"])

        assert echoed["args"] == {"api_key": SECRETS["query-key"], "n": "1"}

    def test_missing_secret_is_a_clear_503(self, door: Door) -> None:
        """A credential absent from the vault stops the call before it leaves."""
        with door.client() as agent:
            response = agent.get("nocred/get")
        outcome = door.double.outcome()

        assert response.status_code == 503
        assert response.json()["error"] == "credential_unavailable"
        assert "not-in-vault" in response.json()["reason"]
        assert outcome.error is not None
        assert outcome.status is None


class TestStripping:
    def test_method_overrides_and_forwarding_headers_never_leave(
        self, door: Door
    ) -> None:
        """A GET cannot ask the upstream to act as a DELETE, nor claim a client."""
        headers = {
            "X-HTTP-Method-Override": "DELETE",
            "X-HTTP-Method": "DELETE",
            "X-Method-Override": "DELETE",
            "X-Forwarded-For": "10.0.0.1",
            "X-Forwarded-Host": "admin.internal",
            "Forwarded": "for=10.0.0.1",
            "X-Real-IP": "10.0.0.1",
        }
        with door.client(**headers) as agent:
            seen = echoed_headers(agent.get("bin/headers"))

        assert not {name.lower() for name in headers} & seen.keys()

    def test_only_the_servers_date_comes_back(self, door: Door) -> None:
        """The upstream's Date gives way to the server's: one Date per answer."""
        with door.client() as agent:
            response = agent.get("bin/headers")

        assert len(response.headers.get_list("date")) == 1

    def test_hop_by_hop_and_proctor_headers_never_leave(self, door: Door) -> None:
        """Connection-named, Proctor-* and Proxy-* headers stay at the door."""
        headers = {
            "Connection": "X-Hop-Secret",
            "X-Hop-Secret": "1",
            "Proxy-Authorization": "Basic eDp5",
            "Proctor-Reasoning": "checking headers",
            "Cookie": "proctor_session=abc; theme=dark",
            "X-Kept": "yes",
        }
        with door.client(**headers) as agent:
            seen = echoed_headers(agent.get("bin/headers"))

        assert "x-hop-secret" not in seen
        assert "proxy-authorization" not in seen
        assert not any(name.startswith("proctor-") for name in seen)
        assert seen["cookie"] == "theme=dark"
        assert seen["x-kept"] == "yes"

    def test_call_records_what_was_sent_without_the_credential(
        self, door: Door
    ) -> None:
        """The call handed to the pipeline holds the stripped headers, no secret."""
        with door.client(**{"Proctor-Reasoning": "invoice is due"}) as agent:
            agent.get("bin/headers")
        call = door.double.last()

        assert call.note == "invoice is due"
        assert call.credential == "bin-key"
        assert "authorization" not in call.request["headers"]  # type: ignore[operator]
        assert SECRETS["bin-key"] not in json.dumps(call.request)

    def test_forged_entry_from_upstream_is_replaced(self, door: Door) -> None:
        """Proctor-Entry names the decision, whatever the upstream said."""
        with door.client() as agent:
            response = agent.get(
                "bin/response-headers",
                params={"Proctor-Entry": "1", "Keep-Alive": "timeout=99"},
            )
        outcome = eventually(lambda: door.double.completions)[0]

        assert response.status_code == 200
        assert response.headers.get_list("proctor-entry") == [
            str(outcome.verdict.entry)
        ]
        assert "keep-alive" not in response.headers


class TestStreaming:
    def test_body_streams_through_with_its_digest(self, door: Door) -> None:
        """100 KiB in 4 KiB chunks arrive whole; size and SHA-256 are reported."""
        with door.client() as agent:
            response = agent.get(
                "bin/stream-bytes/102400", params={"chunk_size": 4096, "seed": 7}
            )
        outcome = eventually(lambda: door.double.completions)[0]

        assert response.status_code == 200
        assert len(response.content) == 102400
        assert outcome.size == 102400
        assert outcome.digest == hashlib.sha256(response.content).hexdigest()
        assert outcome.error is None
        assert outcome.latency_us > 0

    def test_compressed_answer_is_refused(self, door: Door) -> None:
        """httpbin's /gzip compresses even when asked for identity: the body could
        hide an echoed credential, so it is not passed on, and that is recorded."""
        with door.client(**{"Accept-Encoding": "gzip"}) as agent:
            response = agent.get("bin/gzip")
        outcome = eventually(lambda: door.double.completions)[0]

        assert response.status_code == 502
        assert response.json()["error"] == "upstream_failed"
        assert "compressed" in response.json()["reason"]
        assert outcome.status is None
        assert outcome.error is not None
        assert "compressed" in outcome.error

    def test_identity_is_asked_for_and_nothing_else(self, door: Door) -> None:
        """The agent's Accept-Encoding gives way to identity; no User-Agent is
        added on the agent's behalf."""
        with door.client(**{"Accept-Encoding": "gzip, br"}) as agent:
            del agent.headers["user-agent"]
            seen = echoed_headers(agent.get("bin/headers"))

        assert seen["accept-encoding"] == "identity"
        assert "user-agent" not in seen

    def test_agent_leaving_mid_stream_is_reported(self, door: Door) -> None:
        """An agent that hangs up early still gets its call's outcome recorded."""
        with (
            door.client() as agent,
            agent.stream(
                "GET", "bin/drip", params={"duration": 4, "numbytes": 4, "delay": 0}
            ) as response,
        ):
            next(response.iter_raw(1))
        outcome = eventually(lambda: door.double.completions)[0]

        assert outcome.error == "the agent went away before the response was sent"
        assert outcome.digest is None


class TestRedirects:
    def test_relative_redirect_points_back_through_proctor(self, door: Door) -> None:
        """A redirect to the upstream's own path comes back below /http/bin."""
        with door.client() as agent:
            response = agent.get("bin/redirect-to", params={"url": "/get"})

        assert response.status_code == 302
        assert response.headers["location"] == "/http/bin/get"

    def test_absolute_redirect_points_back_through_proctor(self, door: Door) -> None:
        """An absolute URL into the upstream is rewritten too, and not followed."""
        with door.client() as agent:
            response = agent.get("bin/absolute-redirect/1")
        outcome = eventually(lambda: door.double.completions)[0]

        assert response.headers["location"] == "/http/bin/get"
        assert outcome.status == 302


class TestRefusals:
    def test_denied_call_is_answered_by_the_verdict(self, door: Door) -> None:
        """A denied action gets the verdict's status and body, and is not sent."""
        with door.client() as agent:
            response = agent.get("bin/status/200")

        assert response.status_code == 403
        assert response.json()["error"] == "deny"
        assert response.headers["proctor-entry"] == str(response.json()["entry"])
        assert door.double.completions == []

    def test_unmapped_route_is_recorded_and_refused(self, door: Door) -> None:
        """A route no map names goes to the pipeline as Unmapped and stops."""
        with door.client() as agent:
            response = agent.delete("bin/anything/x")
        call = door.double.last()

        assert response.status_code == 403
        assert call.action == UNMAPPED
        assert call.resource == 'Proctor::Service::"bin"'
        assert door.double.completions == []

    def test_unmapped_route_is_never_sent_even_if_allowed(self, door: Door) -> None:
        """Fail closed: a policy allowing Unmapped still sends nothing."""
        door.double.allow_all = True
        with door.client() as agent:
            response = agent.get("bin/anything/admin")

        assert response.status_code == 403
        assert response.json()["reason"] == "only mapped routes are forwarded"
        assert door.double.outcome().error == "not sent: not a mapped call"

    def test_malformed_call_is_never_sent_even_if_allowed(self, door: Door) -> None:
        """Fail closed: a body that does not fit its route is never forwarded."""
        door.double.allow_all = True
        with door.client() as agent:
            response = agent.post("bin/anything/pay", json={"vendor": "acme"})

        assert response.status_code == 400
        assert door.double.outcome().status is None

    def test_missing_token_is_refused_and_reported(self, door: Door) -> None:
        """No token: 401 with an entry, the attempt described without its query."""
        with door.agent(None) as agent:
            response = agent.get("bin/get", params={"api_key": "leak-me"})

        assert response.status_code == 401
        assert response.headers["proctor-entry"] == str(response.json()["entry"])
        assert door.double.refused == [{"method": "GET", "path": "/http/bin/get"}]
        assert door.double.calls == []

    def test_bad_request_without_token_is_still_401(self, door: Door) -> None:
        """Authentication comes first; the problem is noted in the refusal record."""
        with door.agent("wrong") as agent:
            response = agent.get("nowhere/x")

        assert response.status_code == 401
        assert "no service named 'nowhere'" in str(door.double.refused[0]["problem"])


def malformed(door: Door, response: httpx.Response, status: int, error: str) -> str:
    """Check a 4xx answer for a recorded Malformed call and return its reason."""
    call = door.double.last()
    body: dict[str, Any] = response.json()

    assert response.status_code == status, response.text
    assert body["error"] == error
    assert body["action"] == MALFORMED
    assert body["entry"] == int(response.headers["proctor-entry"])
    assert call.action == MALFORMED
    assert call.request["problem"] == body["reason"]
    assert door.double.completions == []
    reason: str = body["reason"]
    return reason


class TestBadInput:
    def test_unknown_service(self, door: Door) -> None:
        """Only configured services are reachable: 404, recorded."""
        with door.client() as agent:
            response = agent.get("nowhere/x")

        assert "no service named" in malformed(door, response, 404, "unknown_service")

    @pytest.mark.parametrize(
        "case",
        [
            (b'{"amount": 5,', "application/json", 400, "bad_request", "not valid"),
            (b'{"vendor": "\xff"}', "application/json", 400, "bad_request", "valid"),
            (
                b'{"amount": 1, "amount": 9}',
                "application/json",
                400,
                "bad_request",
                "repeats",
            ),
            (b"amount=5", "text/plain", 415, "unsupported_media_type", "JSON body"),
            (b'{"vendor": "acme"}', "application/json", 400, "bad_request", "missing"),
            (
                b'{"amount": "5", "vendor": "a"}',
                "application/json",
                400,
                "bad_request",
                "whole number",
            ),
            (
                b"{}",
                "application/json; charset=utf-16",
                415,
                "unsupported_media_type",
                "UTF-8",
            ),
        ],
    )
    def test_bad_bodies(
        self, door: Door, case: tuple[bytes, str, int, str, str]
    ) -> None:
        """Malformed, mistyped or mislabelled bodies get a clear, recorded 4xx."""
        content, content_type, status, error, message = case
        with door.client() as agent:
            response = agent.post(
                "bin/anything/pay",
                content=content,
                headers={"Content-Type": content_type},
            )

        assert message in malformed(door, response, status, error)

    def test_declared_oversized_body(self, door: Door) -> None:
        """A Content-Length over the service's limit is refused before reading."""
        with door.client() as agent:
            response = agent.put("bin/anything/big", content=b"x" * 5000)

        assert "4096" in malformed(door, response, 413, "body_too_large")

    def test_streamed_oversized_body(self, door: Door) -> None:
        """A chunked body is cut off once it passes the limit."""

        def chunks() -> Iterator[bytes]:
            for _ in range(10):
                yield b"x" * 1000

        with door.client() as agent:
            response = agent.put("bin/anything/big", content=chunks())

        malformed(door, response, 413, "body_too_large")

    def test_slow_body(self, door: Door) -> None:
        """A body that does not arrive within the door's limit gets 408."""
        answer = door.raw(
            b"PUT /http/bin/anything/slow HTTP/1.1\r\nHost: x\r\n"
            b"Authorization: Bearer " + TOKEN.encode() + b"\r\n"
            b"Content-Length: 100\r\nConnection: close\r\n\r\n" + b"x" * 10
        )

        assert status_of(answer) == 408
        assert door.double.last().action == MALFORMED

    def test_trace_is_never_forwarded(self, door: Door) -> None:
        """TRACE would echo the injected credential back to the agent."""
        with door.client() as agent:
            response = agent.request("TRACE", "bin/get")

        malformed(door, response, 405, "method_not_allowed")

    def test_overlong_approval_id(self, door: Door) -> None:
        """A Proctor-Approval longer than any id is a 400."""
        with door.client(**{"Proctor-Approval": "a" * 500}) as agent:
            response = agent.get("bin/get")

        malformed(door, response, 400, "bad_request")

    @pytest.mark.parametrize(
        "path",
        [
            b"/http/bin/../admin",
            b"/http/bin/%2e%2e/admin",
            b"/http/bin/anything%2Fpay",
            b"/http/bin/%252e%252e/get",
            b"/http/bin/get\\..\\x",
            b"/http/bin//get",
        ],
    )
    def test_smuggling_paths(self, door: Door, path: bytes) -> None:
        """Dot segments, encoded slashes and double encodings never reach upstream."""
        answer = door.raw(
            b"GET " + path + b" HTTP/1.1\r\nHost: x\r\n"
            b"Authorization: Bearer " + TOKEN.encode() + b"\r\n"
            b"Connection: close\r\n\r\n"
        )

        assert status_of(answer) == 400
        assert b"proctor-entry: " in answer.lower()
        assert door.double.last().action == MALFORMED
        assert door.double.completions == []

    def test_absolute_url_target_never_routes(self, door: Door) -> None:
        """GET http://elsewhere/... is not a path below /http/: nothing happens."""
        answer = door.raw(
            b"GET http://169.254.169.254/http/bin/get HTTP/1.1\r\n"
            b"Host: 169.254.169.254\r\n"
            b"Authorization: Bearer " + TOKEN.encode() + b"\r\n"
            b"Connection: close\r\n\r\n"
        )

        assert status_of(answer) == 404
        assert door.double.calls == []
        assert door.double.refused == []

    def test_host_header_does_not_route(self, door: Door) -> None:
        """Whatever Host says, the upstream is the configured base URL."""
        with door.client() as agent:
            response = agent.get("bin/headers", headers={"Host": "evil.example"})

        assert response.status_code == 200
        assert echoed_headers(response)["host"] != "evil.example"

    def test_huge_headers_are_refused_by_the_door(self, door: Door) -> None:
        """Headers past the limit that arrive in one piece (which h11 lets through:
        its limit only bounds an incomplete head) get a recorded 431."""
        with door.client(**{"X-Big": "a" * 20000}) as agent:
            response = agent.get("bin/get")

        malformed(door, response, 431, "headers_too_large")

    def test_huge_incomplete_headers_are_cut_off_on_the_wire(self, door: Door) -> None:
        """A head still growing past the wire's bound is answered 431 before it
        ends (and, below that bound, by the door with a record, above)."""
        answer = door.raw(
            b"GET /http/bin/get HTTP/1.1\r\nHost: x\r\nX-Big: "
            + b"a" * (MAX_HEAD_BYTES + 1000),
            b"\r\nConnection: close\r\n\r\n",
        )

        assert status_of(answer) == 431
        assert door.double.calls == []
        assert door.double.refused == []


class TestUpstreamFailures:
    def test_unreachable_upstream_is_a_recorded_502(self, door: Door) -> None:
        """A refused connection answers 502 and reports the error, with neither the
        URL nor the upstream's address in it."""
        with door.client() as agent:
            response = agent.get("down/x")
        outcome = door.double.outcome()

        assert response.status_code == 502
        assert response.json()["reason"] == (
            "cannot connect to service down: Connection refused"
        )
        assert response.json()["error"] == "upstream_failed"
        assert response.headers["proctor-entry"] == str(outcome.verdict.entry)
        assert outcome.error is not None
        assert "cannot connect to service down" in outcome.error
        assert SECRETS["query-key"] not in response.text + outcome.error
        assert "127.0.0.1" not in response.text + outcome.error

    def test_silent_upstream_is_a_recorded_504(self, door: Door) -> None:
        """An upstream slower than the service's timeout answers 504."""
        with door.client() as agent:
            response = agent.get("slow/delay/3")

        assert response.status_code == 504
        assert response.json()["error"] == "upstream_timeout"
        assert door.double.outcome().error == "service slow did not answer within 1 s"

    def test_upstream_stalling_mid_body_breaks_the_connection(self, door: Door) -> None:
        """A body cut short never looks complete to the agent."""
        with door.client() as agent, pytest.raises(httpx.RemoteProtocolError):
            agent.get("slow/drip", params={"duration": 6, "numbytes": 3, "delay": 0})
        outcome = eventually(lambda: door.double.completions)[0]

        assert outcome.status == 200
        assert outcome.digest is None
        assert outcome.error == "service slow did not answer within 1 s"


class TestLogs:
    def test_one_line_per_call_and_no_secret(
        self, door: Door, caplog: pytest.LogCaptureFixture
    ) -> None:
        """Every brokered call logs one line with its ids; no secret is ever logged."""
        caplog.set_level(logging.DEBUG)
        with door.client() as agent:
            agent.get("bin/headers")
            agent.get("query/anything/q")
            agent.get("down/x")
            agent.get("bin/status/200")
            agent.post("bin/anything/pay", json={"amount": "x"})
        eventually(lambda: len(door.double.completions) == 3)
        lines = [r.getMessage() for r in caplog.records if r.name.endswith(".http")]
        calls = [line for line in lines if line.startswith("call ")]
        everything = caplog.text + "".join(lines)

        assert len(calls) == 5
        assert all("agent=door-bot task=tsk_door" in line for line in lines)
        assert all("latency_ms=" in line and "decision=" in line for line in calls)
        for secret in SECRETS.values():
            assert secret not in everything
            assert (
                base64.b64encode(f"user:{secret}".encode()).decode() not in everything
            )
