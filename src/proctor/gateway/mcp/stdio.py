"""The stdio front door: a bridge an MCP client launches as its server command,
speaking MCP on stdin and stdout and relaying every message to one downstream
server, each tool call brokered.

The task token comes from ``PROCTOR_TASK_TOKEN``, or from the file named by
``PROCTOR_TASK_TOKEN_FILE`` (owner-only, as every secret file in a home), read again
for each request so that a fresh token can replace an expired one without
restarting the client. Each request is authenticated on its own, so a revoked token
or a quarantined task stops at the next call.

The SDK's stdio transport frames the messages; the bridge hands it its stdin and
stdout as non-blocking pipes on the event loop rather than the SDK's default
of a worker thread per line read and written, which costs about a millisecond a
call. While it serves, descriptors 0 and 1 point at the null device and at stderr,
so nothing else in the process can write on the wire, and both are put back after.

A client stops the bridge by closing its stdin (and, two seconds later, SIGTERM;
later still, SIGKILL). SIGTERM, or SIGHUP, ends the bridge as the end of stdin
does: what it was relaying is cancelled, the outcomes under way are written, a
checkpoint is signed over the last entries, and only then is the downstream
server stopped, since a server slow to stop could outlast the client's patience.
A kill cannot break the record, only leave it short: each decision was durable
before its call went out, and each outcome is written as its answer goes back, so
a kill in that instant leaves a decision without its outcome entry.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import signal
import stat
import threading
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import cast

import anyio
from mcp.server.stdio import stdio_server

from proctor.errors import ConfigError
from proctor.files import read_private
from proctor.gateway.mcp.config import McpServer
from proctor.gateway.mcp.downstream import Sink, Source, connect
from proctor.gateway.mcp.proxy import Broker
from proctor.gateway.mcp.relay import Relay
from proctor.gateway.pipeline import Pipeline

log = logging.getLogger(__name__)

TOKEN_ENV = "PROCTOR_TASK_TOKEN"  # noqa: S105 - a variable name, not a token
TOKEN_FILE_ENV = "PROCTOR_TASK_TOKEN_FILE"  # noqa: S105 - a variable name
MAX_LINE = 64 * 1024 * 1024
"""Bytes one message may take on stdin."""
ENDING = (signal.SIGTERM, signal.SIGHUP)
"""Signals that end the bridge as the end of stdin does: a client's stop, and the
terminal it ran in going away."""


def environment_token(environ: Mapping[str, str]) -> Callable[[], str | None]:
    """Return a function giving the task token the environment names, or None."""

    def token() -> str | None:
        value = environ.get(TOKEN_ENV, "").strip()
        if value:
            return value
        path = environ.get(TOKEN_FILE_ENV, "").strip()
        if not path:
            return None
        try:
            return read_private(Path(path)).decode("utf-8").strip() or None
        except (ConfigError, UnicodeDecodeError) as exc:
            log.error("task token file unusable: %s", exc)
            return None

    return token


async def serve_stdio(
    pipeline: Pipeline, server: McpServer, token: Callable[[], str | None]
) -> None:
    """Serve ``server``'s tools on this process's stdin and stdout until EOF
    or SIGTERM.

    Raises GatewayError when the downstream server cannot be started.
    """
    broker = Broker(pipeline, server)
    with anyio.CancelScope() as scope, _cancelled_on_terminate(scope):
        async with connect(server, pipeline.secret) as downstream:
            relay = Relay(broker, downstream)
            try:
                async with agent_streams() as (read, write):
                    await relay.serve(read, write, lambda _: token(), hears=True)
            finally:
                with anyio.CancelScope(shield=True):
                    await broker.settle()
                    # Sign before stopping the downstream, which may be slow to go
                    # while the client's kill is already on its way.
                    await pipeline.seal()


@contextmanager
def _cancelled_on_terminate(scope: anyio.CancelScope) -> Iterator[None]:
    # Signals reach only the main thread; elsewhere (a test's thread, an embedding
    # application) whoever owns the process decides what SIGTERM does.
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    loop = asyncio.get_running_loop()
    for number in ENDING:
        loop.add_signal_handler(number, _terminated, scope, number)
    try:
        yield
    finally:
        for number in ENDING:
            loop.remove_signal_handler(number)


def _terminated(scope: anyio.CancelScope, number: signal.Signals) -> None:
    log.info("%s: stopping the bridge", number.name)
    scope.cancel()


@asynccontextmanager
async def agent_streams() -> AsyncIterator[tuple[Source, Sink]]:
    """The SDK's stdio transport on this process's stdin and stdout."""
    if not (_is_pipe(0) and _is_pipe(1)):
        # A regular file cannot be watched by the loop: the SDK's threads read it.
        async with stdio_server() as streams:
            yield streams
        return
    async with _pipes() as (stdin, stdout):
        # stdio_server only iterates its stdin and writes and flushes its stdout.
        opened = stdio_server(
            cast("anyio.AsyncFile[str]", stdin), cast("anyio.AsyncFile[str]", stdout)
        )
        async with opened as streams:
            yield streams


class _Lines:
    """Newline-delimited text read from a pipe, without a thread."""

    def __init__(self, reader: asyncio.StreamReader) -> None:
        self._reader = reader

    def __aiter__(self) -> _Lines:
        return self

    async def __anext__(self) -> str:
        line = await self._reader.readline()
        if not line:
            raise StopAsyncIteration
        return line.decode("utf-8", errors="replace")


class _Writer:
    """Text written to a pipe, without a thread."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self._writer = writer

    async def write(self, text: str) -> None:
        self._writer.write(text.encode("utf-8"))

    async def flush(self) -> None:
        await self._writer.drain()


@asynccontextmanager
async def _pipes() -> AsyncIterator[tuple[_Lines, _Writer]]:
    loop = asyncio.get_running_loop()
    wire_in = _divert(0, os.open(os.devnull, os.O_RDONLY))
    wire_out = _divert(1, os.dup(2))
    try:
        reader = asyncio.StreamReader(limit=MAX_LINE)
        reading, _ = await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader),
            os.fdopen(wire_in, "rb", buffering=0, closefd=False),
        )
        writing, protocol = await loop.connect_write_pipe(
            lambda: asyncio.StreamReaderProtocol(asyncio.StreamReader()),
            os.fdopen(wire_out, "wb", buffering=0, closefd=False),
        )
        try:
            writer = asyncio.StreamWriter(writing, protocol, None, loop)
            yield _Lines(reader), _Writer(writer)
        finally:
            reading.close()
            writing.close()
    finally:
        _restore(0, wire_in)
        _restore(1, wire_out)


def _is_pipe(fd: int) -> bool:
    try:
        mode = os.fstat(fd).st_mode
    except OSError:
        return False
    return stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)


def _divert(fd: int, replacement: int) -> int:
    # The wire moves to a private descriptor; fd now leads somewhere harmless.
    wire = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 3)
    os.dup2(replacement, fd)
    os.close(replacement)

    return wire


def _restore(fd: int, wire: int) -> None:
    os.dup2(wire, fd)
    os.close(wire)
