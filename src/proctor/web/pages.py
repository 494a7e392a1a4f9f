"""What every console page shares: the console's parts, rendering with escaping on,
the signed-in guard, CSRF-checked form posts, pagination and refusals."""

from __future__ import annotations

import logging
import threading
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, cast
from urllib.parse import parse_qs, urlencode

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.templating import Jinja2Templates

from proctor.errors import (
    AuthError,
    LedgerError,
    ProctorError,
    QueryError,
    StoreError,
    TaskError,
)
from proctor.forensics import Forensics
from proctor.runtime import Runtime
from proctor.tasks.state import ApprovalState
from proctor.web.activity import ActivityCache
from proctor.web.auth import (
    COOKIE,
    CSRF_FIELD,
    SECURE_COOKIE,
    CookiePolicy,
    Session,
    Sessions,
    Viewer,
    is_valid_csrf,
    viewer_of,
)
from proctor.web.status import LedgerStatus

log = logging.getLogger(__name__)

MAX_FORM = 16 * 1024
"""Bytes a console form may post: a reason and a key fit many times over."""
BEHIND = 20_000
"""Entries the entry index may lag before pages wait for a background catch-up."""
FORM_TYPE = "application/x-www-form-urlencoded"

Form = Mapping[str, list[str]]
PageHandler = Callable[[Request, Viewer], Awaitable[Response]]
FormHandler = Callable[[Request, Viewer, Form], Awaitable[Response]]
Endpoint = Callable[[Request], Awaitable[Response]]


@dataclass
class Console:
    """The open parts the console's pages read: one per served app."""

    runtime: Runtime
    forensics: Forensics
    sessions: Sessions
    cookies: CookiePolicy
    status: LedgerStatus
    templates: Jinja2Templates
    activity: ActivityCache
    _catching_up: threading.Thread | None = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _pending: tuple[int, int] = (-1, 0)

    def lag(self) -> tuple[int, int]:
        """Return how many entries the index holds and the ledger's size; if the
        index lags far behind, fold the backlog in on a background thread."""
        applied = self.forensics.index.applied()
        size = self.runtime.ledger.store.size()
        if size - applied > BEHIND:
            with self._lock:
                running = self._catching_up is not None and self._catching_up.is_alive()
                if not running:
                    self._catching_up = threading.Thread(
                        target=self._catch_up, name="proctor-console-index", daemon=True
                    )
                    self._catching_up.start()
        return applied, size

    def pending_approvals(self) -> int:
        """How many calls wait for a person now, counted once per ledger change."""
        authority = self.runtime.service.authority
        authority.sync()
        with self._lock:
            if self._pending[0] == authority.applied:
                return self._pending[1]
        now = datetime.now(UTC)
        count = sum(
            1
            for approval in authority.approvals()
            if approval.state_at(now) is ApprovalState.PENDING
        )
        with self._lock:
            self._pending = (authority.applied, count)

        return count

    def _catch_up(self) -> None:
        try:
            self.forensics.refresh()
        except Exception:
            # Nobody waits on this thread: the next page tries again.
            log.exception("entry index catch-up failed")


def console_of(request: Request) -> Console:
    """The console that the request's app serves."""
    return cast(Console, request.app.state.console)


def base_of(request: Request) -> str:
    """The path the console is mounted at (``/console``), for links."""
    return str(request.scope.get("root_path", "")).rstrip("/")


def cookie_name(request: Request) -> str:
    """The session cookie's name for this connection: ``__Host-`` when Secure."""
    secure = console_of(request).cookies.is_secure(request.url.scheme)
    return SECURE_COOKIE if secure else COOKIE


def session_of(request: Request) -> Session | None:
    return console_of(request).sessions.get(request.cookies.get(cookie_name(request)))


def render(
    request: Request,
    name: str,
    context: Mapping[str, Any],
    *,
    viewer: Viewer | None,
    status: int = 200,
    session: Session | None = None,
) -> Response:
    """Render a template with what every page shows; never cached by the browser."""
    console = console_of(request)
    held = viewer.session if viewer else session
    flash = console.sessions.take_flash(held) if held else None
    common = {
        "base": base_of(request),
        "viewer": viewer,
        "csrf": held.csrf if held else "",
        "csrf_field": CSRF_FIELD,
        "flash": flash,
        "pending": console.pending_approvals() if viewer else 0,
        "section": context.get("section", ""),
    }
    return console.templates.TemplateResponse(
        request,
        name,
        {**common, **context},
        status_code=status,
        headers={"Cache-Control": "no-store"},
    )


def refuse(
    request: Request,
    viewer: Viewer | None,
    status: int,
    title: str,
    reason: str,
    *,
    session: Session | None = None,
) -> Response:
    """Answer with an error page; the reason is scrubbed of vault values."""
    clean = console_of(request).runtime.secrets.scrub_text(reason)
    return render(
        request,
        "error.html",
        {"title": title, "reason": clean},
        viewer=viewer,
        status=status,
        session=session,
    )


def to_sign_in(request: Request) -> Response:
    """Send a signed-out visitor to the sign-in page, remembering where they were."""
    wanted = request.url.path
    if request.url.query:
        wanted += "?" + request.url.query
    target = base_of(request) + "/sign-in"
    if request.method == "GET":
        target += "?" + urlencode({"next": wanted})

    return RedirectResponse(target, status_code=303)


def page(handler: PageHandler) -> Endpoint:
    """Guard a page: signed-in viewers only, the index caught up, errors as pages."""

    async def endpoint(request: Request) -> Response:
        console = console_of(request)
        viewer = viewer_of(console.runtime.people, session_of(request))
        if viewer is None:
            return to_sign_in(request)
        applied, size = await run_in_threadpool(console.lag)
        if size - applied > BEHIND:
            return render(
                request,
                "indexing.html",
                {"applied": applied, "size": size},
                viewer=viewer,
                status=503,
            )
        try:
            return await handler(request, viewer)
        except ProctorError as exc:
            status, title = _refusal(exc)
            return refuse(request, viewer, status, title, str(exc))

    return endpoint


def action(handler: FormHandler) -> Endpoint:
    """Guard a form post: signed in, same origin, a valid CSRF token."""

    async def endpoint(request: Request) -> Response:
        console = console_of(request)
        session = session_of(request)
        viewer = viewer_of(console.runtime.people, session)
        if viewer is None:
            return to_sign_in(request)
        form = await read_form(request)
        if isinstance(form, Response):
            return form
        refused = check_post(request, viewer.session, form)
        if refused is not None:
            return refuse(request, viewer, 403, "Refused", refused)
        try:
            return await handler(request, viewer, form)
        except ProctorError as exc:
            status, title = _refusal(exc)
            return refuse(request, viewer, status, title, str(exc))

    return endpoint


def check_post(request: Request, session: Session, form: Form) -> str | None:
    """Why a post is refused (foreign origin, missing or wrong token), or None."""
    origin = request.headers.get("origin")
    if origin is not None and origin != f"{request.url.scheme}://{request.url.netloc}":
        log.warning("console post refused reason=foreign-origin")
        return "this form was sent from another site"
    if not is_valid_csrf(session, first(form, CSRF_FIELD)):
        log.warning("console post refused reason=csrf")
        return "this form has expired or did not come from this console; reload it"

    return None


async def read_form(request: Request) -> Form | Response:
    """Parse a small urlencoded form body; anything else is refused."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != FORM_TYPE:
        return Response("send the console's own form", status_code=415)
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM:
            return Response("this form is too large", status_code=413)
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return Response("this form is not utf-8", status_code=400)

    return parse_qs(text, keep_blank_values=True, max_num_fields=64)


def first(form: Form, name: str, default: str = "") -> str:
    """The first value a form gave for ``name``."""
    values = form.get(name)
    return values[0] if values else default


def page_number(request: Request) -> int:
    """The ``page`` query parameter, 1 when absent or nonsense, at most 10,000."""
    raw = request.query_params.get("page", "1")
    number = int(raw) if raw.isdigit() else 1
    return min(max(number, 1), 10_000)


def url_with(request: Request, **changes: object) -> str:
    """This page's path and query with some parameters changed (None drops one)."""
    params = [(k, v) for k, v in request.query_params.multi_items() if k not in changes]
    params += [(k, str(v)) for k, v in changes.items() if v is not None]
    query = urlencode(params)

    return request.url.path + ("?" + query if query else "")


@dataclass(frozen=True)
class Pager:
    """Links to the pages before and after this one."""

    number: int
    previous: str | None
    next: str | None


def pager(request: Request, number: int, *, more: bool) -> Pager:
    return Pager(
        number,
        url_with(request, page=number - 1) if number > 1 else None,
        url_with(request, page=number + 1) if more else None,
    )


def _refusal(exc: ProctorError) -> tuple[int, str]:
    if isinstance(exc, QueryError):
        return 400, "Cannot search that"
    if isinstance(exc, AuthError):
        return 403, "Not allowed"
    if isinstance(exc, TaskError):
        return 409, "Cannot do that now"
    if isinstance(exc, StoreError | LedgerError):
        return 503, "The ledger cannot answer now"
    return 500, "Something went wrong"
