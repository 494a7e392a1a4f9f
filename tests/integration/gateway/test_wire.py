"""HTTP/1.1 on the wire (uvicorn on httptools, as every Proctor server runs it): the
request head is bounded while it arrives, bodies are not mistaken for heads, and an
absolute-form target reaches the app whole."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator

import pytest
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.types import Receive, Scope, Send

from proctor.gateway.wire import MAX_HEAD_BYTES
from tests.integration.gateway.conftest import AppServer, raw_exchange, status_of

STREAM_PIECES = 6


async def echo(scope: Scope, receive: Receive, send: Send) -> None:
    """Say what arrived, whatever the target: the raw target and the body's size."""
    if scope["type"] != "http":
        return
    body = await Request(scope, receive).body()
    target = scope["raw_path"].decode("latin-1")
    await JSONResponse({"target": target, "body": len(body)})(scope, receive, send)


async def streaming(scope: Scope, receive: Receive, send: Send) -> None:
    """Answer /stream slowly, in pieces; anything else as echo does."""
    if scope["type"] != "http" or scope["path"] != "/stream":
        await echo(scope, receive, send)
        return

    async def pieces() -> AsyncIterator[bytes]:
        for number in range(STREAM_PIECES):
            yield b"piece %d;" % number
            await asyncio.sleep(0.3)

    await StreamingResponse(pieces())(scope, receive, send)


@pytest.fixture(scope="module")
def server() -> Iterator[AppServer]:
    with AppServer(echo) as running:
        yield running


def answer_of(raw: bytes) -> dict[str, object]:
    body = raw.split(b"\r\n\r\n", 1)[1]
    found: dict[str, object] = json.loads(body)
    return found


def test_a_head_growing_past_the_limit_is_cut_off(server: AppServer) -> None:
    """Header bytes arriving in pieces past the limit get 431 and a closed line."""
    piece = b"X-Pad: " + b"a" * 4000 + b"\r\n"
    count = MAX_HEAD_BYTES // len(piece) + 2
    parts = [b"GET /x HTTP/1.1\r\nHost: t\r\n"] + [piece] * count + [b"\r\n"]
    answer = raw_exchange(server.port, *parts)

    assert status_of(answer) == 431
    assert str(MAX_HEAD_BYTES).encode() in answer


def test_a_head_within_the_limit_passes(server: AppServer) -> None:
    """Just under the limit, in pieces, the request reaches the app."""
    piece = b"X-Pad: " + b"a" * 3000 + b"\r\n"
    count = (MAX_HEAD_BYTES - 200) // len(piece)
    parts = [b"GET /x HTTP/1.1\r\nHost: t\r\n"] + [piece] * count
    answer = raw_exchange(server.port, *parts, b"Connection: close\r\n\r\n")

    assert status_of(answer) == 200
    assert answer_of(answer) == {"target": "/x", "body": 0}


def test_a_large_body_is_not_counted_as_head(server: AppServer) -> None:
    """A body many times the head limit, sent with its head, is read whole."""
    body = b"b" * (MAX_HEAD_BYTES * 8)
    head = (
        b"POST /upload HTTP/1.1\r\nHost: t\r\nConnection: close\r\n"
        b"Content-Length: %d\r\n\r\n" % len(body)
    )
    answer = raw_exchange(server.port, head + body[:1000], body[1000:])

    assert status_of(answer) == 200
    assert answer_of(answer) == {"target": "/upload", "body": len(body)}


def test_a_long_read_that_ends_a_request_is_not_a_head(server: AppServer) -> None:
    """A body longer than the bound, arriving in one read after its head, ends its
    request: it is answered, not cut off as if it were a head."""
    body = b"b" * (MAX_HEAD_BYTES + 14_000)
    head = (
        b"POST /whole HTTP/1.1\r\nHost: t\r\nConnection: close\r\n"
        b"Content-Length: %d\r\n\r\n" % len(body)
    )
    answer = raw_exchange(server.port, head, body)

    assert status_of(answer) == 200
    assert answer_of(answer) == {"target": "/whole", "body": len(body)}


def test_each_request_on_a_connection_has_its_own_limit(server: AppServer) -> None:
    """Heads of several requests on one kept-alive connection are not added up."""
    pad = b"X-Pad: " + b"a" * (MAX_HEAD_BYTES // 2) + b"\r\n"
    request = b"GET /again HTTP/1.1\r\nHost: t\r\n" + pad + b"\r\n"
    last = b"GET /last HTTP/1.1\r\nHost: t\r\n" + pad + b"Connection: close\r\n\r\n"
    answer = raw_exchange(server.port, request, request, request, last)

    assert answer.count(b"HTTP/1.1 200 OK") == 4
    assert b"431" not in answer


def test_an_absolute_target_reaches_the_app_whole(server: AppServer) -> None:
    """An absolute URL is not reduced to its path: the app sees what was sent."""
    answer = raw_exchange(
        server.port,
        b"GET http://169.254.169.254/x?y=1 HTTP/1.1\r\nHost: t\r\n"
        b"Connection: close\r\n\r\n",
    )

    assert status_of(answer) == 200
    assert answer_of(answer)["target"] == "http://169.254.169.254/x?y=1"


def test_a_long_head_during_an_answer_ends_the_line_without_a_refusal() -> None:
    """A head past the limit, pipelined while an answer still streams, closes the
    connection: no 431 is spliced into the answer going out."""
    pad = b"X-Pad: " + b"a" * (MAX_HEAD_BYTES + 100)
    with AppServer(streaming) as running:
        answer = raw_exchange(
            running.port,
            b"GET /stream HTTP/1.1\r\nHost: t\r\n\r\n",
            b"GET /next HTTP/1.1\r\nHost: t\r\n" + pad,
        )

    assert status_of(answer) == 200
    assert b"piece 0;" in answer
    assert b"431" not in answer
    assert b"piece %d;" % (STREAM_PIECES - 1) not in answer
