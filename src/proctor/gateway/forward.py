"""Sending an allowed call upstream and streaming the answer back unchanged.

One ``aiohttp`` session serves every service (its pool keeps connections alive), with
no cookie jar (one agent's cookies must never reach another's call), no proxy from
the environment, no redirects followed and no decompression: the agent gets the
upstream's bytes, and their size and SHA-256 are what the ledger records, except
that any vault value in them is masked on the way (an upstream that echoes the
credential Proctor injected must not hand it to the agent). Every upstream is
asked for ``identity``; an answer compressed anyway is refused, as it could not be
looked into.
``aiohttp`` was chosen by measurement (issue 4): about 0.3 ms of CPU per call on
the reference machine, where ``httpx.AsyncClient`` took 1.7 to 3.4 ms.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass

import aiohttp
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send
from yarl import URL

from proctor.errors import GatewayError
from proctor.gateway.routes import ServiceConfig
from proctor.vault import Masking

log = logging.getLogger(__name__)

AGENT_GONE = "the agent went away before the response was sent"

# Requests are not retried upstream: a POST may not be safe to send twice.
_SKIP_AUTO_HEADERS = frozenset({"User-Agent", "Accept", "Accept-Encoding"})


@dataclass(frozen=True)
class Failure:
    """The upstream could not be reached or did not answer: the status to return."""

    status: int
    reason: str


@dataclass(frozen=True)
class Delivery:
    """What went back to the agent: upstream status, bytes, their digest, or error."""

    status: int
    size: int
    digest: str | None
    error: str | None = None
    masked: int = 0


class Upstream:
    """The shared client session: open at startup, closed at shutdown."""

    def __init__(self, *, limit: int = 512, limit_per_host: int = 128) -> None:
        self._limit = limit
        self._limit_per_host = limit_per_host
        self._session: aiohttp.ClientSession | None = None
        self._timeouts: dict[float, aiohttp.ClientTimeout] = {}

    async def open(self) -> None:
        """Create the session and its connection pool."""
        connector = aiohttp.TCPConnector(
            limit=self._limit,
            limit_per_host=self._limit_per_host,
            ttl_dns_cache=60,
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            cookie_jar=aiohttp.DummyCookieJar(),
            auto_decompress=False,
            trust_env=False,
            skip_auto_headers=_SKIP_AUTO_HEADERS,
        )

    async def close(self) -> None:
        """Close the session and every pooled connection."""
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def send(
        self,
        service: ServiceConfig,
        method: str,
        url: str,
        headers: Mapping[str, str],
        body: bytes,
    ) -> aiohttp.ClientResponse | Failure:
        """Send one request and return the response once its headers arrive.

        ``url`` must already be percent-encoded. Returns a Failure (502 or 504, with
        a reason naming the service, never the URL, which may hold a credential)
        instead of raising; raises GatewayError when the session is not open.
        """
        if self._session is None:
            raise GatewayError("the upstream session is not open; start the app first")
        try:
            return await self._session.request(
                method,
                URL(url, encoded=True),
                headers=headers,
                data=body or None,
                allow_redirects=False,
                timeout=self._timeout(service.timeout),
            )
        except TimeoutError:
            return Failure(504, _silent(service))
        except aiohttp.ClientConnectorError as exc:
            return Failure(
                502, f"cannot connect to service {service.name}: {_why(exc)}"
            )
        except aiohttp.ClientError as exc:
            return Failure(502, _broken(service, exc))

    def _timeout(self, seconds: float) -> aiohttp.ClientTimeout:
        timeout = self._timeouts.get(seconds)
        if timeout is None:
            # No total: a long download is fine while the upstream keeps sending.
            timeout = aiohttp.ClientTimeout(
                total=None, sock_connect=seconds, sock_read=seconds
            )
            self._timeouts[seconds] = timeout

        return timeout


class Relay(StreamingResponse):
    """Streams an upstream response to the agent, masked, then reports what passed.

    ``on_done`` runs exactly once, when the stream ends, fails or the agent goes
    away, so the outcome is always recorded. When the upstream fails mid-body the
    connection to the agent is broken off rather than ended cleanly, so a truncated
    body never looks complete.

    Starlette's own ``__call__`` opens an anyio task group per response to notice a
    disconnect; measured, that was the largest cost of a brokered call. Here a
    plain task watches for the disconnect, and only once a body spans more than
    one chunk (a response that arrives whole is handed over at once); on a
    disconnect it closes the upstream response, which ends the stream.
    """

    def __init__(
        self,
        upstream: aiohttp.ClientResponse,
        headers: list[tuple[bytes, bytes]],
        service: ServiceConfig,
        on_done: Callable[[Delivery], Awaitable[None]],
        *,
        masking: Masking,
    ) -> None:
        super().__init__(_empty(), status_code=upstream.status)
        self.raw_headers = headers
        self._upstream = upstream
        self._service = service
        self._on_done = on_done
        self._masking = masking
        self._gone = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Stream to the agent, stopping early if the agent hangs up."""
        await self._relay(send, receive)

    async def stream_response(self, send: Send) -> None:
        """Send the status, headers and body chunks as they arrive upstream."""
        await self._relay(send, None)

    async def _relay(self, send: Send, receive: Receive | None) -> None:
        size, digest, error = 0, hashlib.sha256(), None
        content = self._upstream.content
        watcher: asyncio.Task[None] | None = None
        try:
            await send(
                {
                    "type": "http.response.start",
                    "status": self.status_code,
                    "headers": self.raw_headers,
                }
            )
            async for chunk in content.iter_any():
                size += len(chunk)
                digest.update(chunk)
                passed = self._masking.feed(chunk, last=content.at_eof())
                if passed:
                    await send(
                        {
                            "type": "http.response.body",
                            "body": passed,
                            "more_body": True,
                        }
                    )
                if self._gone:
                    break
                if watcher is None and receive is not None and not content.at_eof():
                    watcher = asyncio.ensure_future(self._watch(receive))
            if self._gone:
                error = AGENT_GONE
            else:
                rest = self._masking.finish()
                await send(
                    {"type": "http.response.body", "body": rest, "more_body": False}
                )
        except TimeoutError as exc:
            error = _silent(self._service)
            raise GatewayError(error) from exc
        except aiohttp.ClientError as exc:
            if self._gone:
                # The watcher closed the upstream under the read: the agent left.
                error = AGENT_GONE
                return
            error = _broken(self._service, exc)
            raise GatewayError(error) from exc
        except BaseException:
            error = "the stream was cancelled before it ended"
            raise
        finally:
            if watcher is not None:
                watcher.cancel()
            await self._finish(size, None if error else digest.hexdigest(), error)

    async def _watch(self, receive: Receive) -> None:
        # The request body was read in full, so the next message is the disconnect.
        while (await receive())["type"] != "http.disconnect":
            continue
        self._gone = True
        self._upstream.close()

    async def _finish(self, size: int, digest: str | None, error: str | None) -> None:
        if error is None:
            self._upstream.release()
        else:
            self._upstream.close()
        masked = self._masking.masked
        delivery = Delivery(self._upstream.status, size, digest, error, masked)
        try:
            await self._on_done(delivery)
        except Exception:
            log.exception("recording the outcome of a call failed")


async def _empty() -> AsyncIterator[bytes]:
    # The body comes from the upstream in stream_response; this is never iterated.
    nothing: tuple[bytes, ...] = ()
    for chunk in nothing:
        yield chunk


def is_encoded(answer: aiohttp.ClientResponse) -> bool:
    """Tell whether the answer's body is compressed or otherwise content-coded."""
    codings = answer.headers.getall("Content-Encoding", [])
    return any(
        coding.strip().lower() not in {"", "identity"}
        for value in codings
        for coding in value.split(",")
    )


def _why(exc: aiohttp.ClientConnectorError) -> str:
    # The system's own words for the error number; asyncio's message names the
    # upstream's address, which the agent has no business knowing.
    number = exc.os_error.errno
    return os.strerror(number) if number else type(exc.os_error).__name__


def _silent(service: ServiceConfig) -> str:
    return f"service {service.name} did not answer within {service.timeout:g} s"


def _broken(service: ServiceConfig, exc: BaseException) -> str:
    # aiohttp's messages can quote the URL, and the URL may carry a credential.
    return f"service {service.name} failed: {type(exc).__name__}"
