"""Every refusal as ``{"error", "reason"}`` with a fitting status; reasons are scrubbed
of vault values and a server fault never shows its details."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from proctor.errors import (
    AuthError,
    EntryError,
    LedgerError,
    PolicyError,
    ProctorError,
    StoreError,
    TaskError,
    TokenError,
)

log = logging.getLogger(__name__)

CODES = {
    400: "bad_request",
    401: "unauthenticated",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "too_large",
    431: "headers_too_large",
    500: "internal",
    503: "unavailable",
}

_STATUS: tuple[tuple[type[ProctorError], int], ...] = (
    (EntryError, 400),
    (PolicyError, 400),
    (TokenError, 401),
    (AuthError, 403),
    (TaskError, 409),
    (LedgerError, 503),
    (StoreError, 503),
)
_UNAVAILABLE = "the ledger cannot record this now, so nothing was changed"
_INTERNAL = "the server cannot do this now; its log says why"


def install(api: FastAPI) -> None:
    """Answer every refusal of ``api`` with one JSON shape."""
    api.add_exception_handler(HTTPException, _http)
    api.add_exception_handler(RequestValidationError, _invalid)
    api.add_exception_handler(ProctorError, _proctor)


def refusal(request: Request, status: int, reason: str) -> JSONResponse:
    """The JSON body of a refusal, with every vault value removed from the reason."""
    runtime = getattr(request.app.state, "runtime", None)
    if runtime is not None:
        reason = runtime.secrets.scrub_text(reason)
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None

    return JSONResponse(
        {"error": CODES.get(status, "refused"), "reason": reason},
        status_code=status,
        headers=headers,
    )


def status_of(exc: ProctorError) -> int:
    """The HTTP status that says what kind of refusal ``exc`` is."""
    for kind, status in _STATUS:
        if isinstance(exc, kind):
            return status
    return 500


async def _http(request: Request, exc: Exception) -> JSONResponse:
    if not isinstance(exc, HTTPException):  # pragma: no cover - registered for it
        raise exc
    return refusal(request, exc.status_code, str(exc.detail))


async def _invalid(request: Request, exc: Exception) -> JSONResponse:
    if not isinstance(exc, RequestValidationError):  # pragma: no cover
        raise exc
    problems = [
        f"{'.'.join(str(part) for part in error['loc'])}: {error['msg'].lower()}"
        for error in exc.errors()[:3]
    ]
    return refusal(request, 400, "; ".join(problems) or "the request is malformed")


async def _proctor(request: Request, exc: Exception) -> JSONResponse:
    if not isinstance(exc, ProctorError):  # pragma: no cover
        raise exc
    status = status_of(exc)
    if status >= 500:
        log.error("api request failed path=%s error=%s", request.url.path, exc)
        return refusal(request, status, _UNAVAILABLE if status == 503 else _INTERNAL)
    return refusal(request, status, str(exc))
