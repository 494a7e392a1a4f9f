"""Bounds on what one request may bring, answered in the API's own refusal shape.

The wire (:mod:`proctor.gateway.wire`) bounds a head while it arrives, at a bound
four times this one; heads are counted here against this one, and bodies as they
arrive, declared or chunked.
"""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from proctor.api.errors import refusal

MAX_HEADER_BYTES = 16 * 1024
MAX_BODY_BYTES = 256 * 1024


class Limits:
    """Refuse headers over ``headers`` bytes (431) and bodies over ``body`` (413)."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        headers: int = MAX_HEADER_BYTES,
        body: int = MAX_BODY_BYTES,
    ) -> None:
        self.app = app
        self.headers = headers
        self.body = body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        refused = self._refusal(scope)
        if refused is not None:
            await refusal(Request(scope), *refused)(scope, receive, send)
            return
        seen = 0

        async def bounded() -> Message:
            # A chunked body declares no length: count it as it arrives.
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.body:
                    raise HTTPException(413, self._too_large())
            return message

        await self.app(scope, bounded, send)

    def _refusal(self, scope: Scope) -> tuple[int, str] | None:
        size = sum(len(name) + len(value) + 4 for name, value in scope["headers"])
        if size > self.headers:
            return 431, f"the request headers are over {self.headers} bytes"
        declared = Headers(scope=scope).get("content-length", "")
        if declared.isdigit() and int(declared) > self.body:
            return 413, self._too_large()
        return None

    def _too_large(self) -> str:
        return f"the request body is over {self.body} bytes"
