"""HTTP/1.1 as ``proctor serve`` speaks it: uvicorn on uvloop and httptools, with the
request head bounded and the request target kept as the agent sent it.

httptools (llhttp) gathers a header until it ends, however long, so the head is
bounded here, by the bytes that arrive while it is incomplete: past
``MAX_HEAD_BYTES`` the agent gets 431 (unless an answer to an earlier request on
the connection is still going out) and the connection closes, and nothing is
recorded. Below that bound, the door and the API measure each head against their
own, tighter limit and answer 431 with a record of the attempt.

An absolute-form target (``GET http://elsewhere/path HTTP/1.1``) stays whole in the
scope's ``path`` and ``raw_path``, as uvicorn's h11 parser leaves it: httptools would
keep only its path, and the request would pass for one aimed at that path here.

A response's head leaves with its body, in one send: uvicorn writes them separately,
and on loopback each send is a system call that also wakes the agent, which then
finds half an answer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

MAX_HEAD_BYTES = 64 * 1024
"""Request line and headers together, as they arrive: four times the doors' limit
(``proctor.gateway.headers.MAX_HEADER_BYTES``), so that however the bytes are split
into reads, a head over the doors' limit reaches a door to be recorded."""

_REASON = f"the request head is longer than {MAX_HEAD_BYTES} bytes".encode()
_REFUSAL = (
    b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
    b"content-type: text/plain; charset=utf-8\r\n"
    b"content-length: %d\r\n"
    b"connection: close\r\n"
    b"\r\n%s"
) % (len(_REASON), _REASON)


class Pairing:
    """A transport that holds a write back until the next one, to send both at once.

    uvicorn writes a response's head and then its body: held, the head leaves with
    the body in one send. A write with nothing after it in the same round of the
    event loop leaves at the end of the round; closing sends what is held first.
    Everything else is the wrapped transport's.
    """

    def __init__(self, transport: asyncio.Transport) -> None:
        self._transport = transport
        self._held = b""
        self._due = False

    def write(self, data: bytes) -> None:
        if not data:
            return
        if self._held:
            data, self._held = self._held + data, b""
            self._transport.write(data)
            return
        self._held = data
        if not self._due:
            self._due = True
            asyncio.get_running_loop().call_soon(self._send)

    def writelines(self, data: Iterable[bytes]) -> None:
        self.write(b"".join(data))

    def write_eof(self) -> None:
        self._send()
        self._transport.write_eof()

    def get_write_buffer_size(self) -> int:
        return len(self._held) + self._transport.get_write_buffer_size()

    def close(self) -> None:
        self._send()
        self._transport.close()

    def abort(self) -> None:
        self._held = b""
        self._transport.abort()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)

    def _send(self) -> None:
        self._due = False
        data, self._held = self._held, b""
        if data and not self._transport.is_closing():
            self._transport.write(data)


class BoundedHead(HttpToolsProtocol):
    """uvicorn's httptools protocol, refusing a request head that grows too long.

    Every read that arrives while a head is incomplete counts towards its size,
    except a read in which a request ended: most of it was that request's, and
    what a next head got of it cannot be told apart, so the bound holds within
    one read.
    """

    _reading_head = True
    _head_bytes = 0
    _ended = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(Pairing(transport))  # type: ignore[arg-type]

    def data_received(self, data: bytes) -> None:
        self._ended = False
        super().data_received(data)
        if not self._reading_head or self._ended or self.transport.is_closing():
            return
        self._head_bytes += len(data)
        if self._head_bytes > MAX_HEAD_BYTES:
            # While an answer is still going out, a refusal would land inside it.
            if self.cycle is None or self.cycle.response_complete:
                self.transport.write(_REFUSAL)
            self.transport.close()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._reading_head, self._head_bytes = True, 0

    def on_headers_complete(self) -> None:
        self._reading_head = False
        super().on_headers_complete()
        if not self.url.startswith(b"/") and "path" in self.scope:
            target = self.url
            self.scope["raw_path"] = target
            self.scope["path"] = target.decode("latin-1")
            self.scope["query_string"] = b""

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._reading_head, self._head_bytes, self._ended = True, 0, True


def uvicorn_options() -> dict[str, Any]:
    """The uvicorn settings every server of Proctor's runs with."""
    return {"http": BoundedHead, "loop": "uvloop"}
