"""Signing in with a personal API key, and signing out."""

from __future__ import annotations

import logging

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from proctor.errors import AuthError
from proctor.web.auth import (
    ANONYMOUS_TTL,
    CSRF_FIELD,
    SECURE_COOKIE,
    Session,
    Viewer,
    console_person,
    viewer_of,
)
from proctor.web.pages import (
    Form,
    action,
    base_of,
    check_post,
    console_of,
    cookie_name,
    first,
    read_form,
    render,
    session_of,
)

log = logging.getLogger(__name__)

MAX_KEY = 200
"""An API key is 59 characters; anything far longer is not one."""


def routes() -> list[Route]:
    return [
        Route("/sign-in", sign_in_form, methods=["GET"]),
        Route("/sign-in", sign_in, methods=["POST"]),
        Route("/sign-out", action(sign_out), methods=["POST"]),
    ]


async def sign_in_form(request: Request) -> Response:
    """Show the sign-in form, in an anonymous session that holds its CSRF token."""
    console = console_of(request)
    session = session_of(request)
    if viewer_of(console.runtime.people, session) is not None:
        return RedirectResponse(landing(request, None), status_code=303)
    wanted = request.query_params.get("next")

    return _form_page(request, session, wanted=wanted, status=200, error=None)


async def sign_in(request: Request) -> Response:
    """Check the posted key; on success start a new signed-in session."""
    console = console_of(request)
    form = await read_form(request)
    if isinstance(form, Response):
        return form
    wanted = first(form, "next") or None
    session = session_of(request)
    refused = _refusal(request, session, form)
    if refused is not None:
        return _form_page(request, session, wanted=wanted, status=403, error=refused)
    key = first(form, "api_key").strip()[:MAX_KEY]
    try:
        person = console_person(console.runtime.people, key)
    except AuthError as exc:
        log.warning("console sign-in refused reason=%s", exc)
        return _form_page(
            request,
            session,
            wanted=wanted,
            status=401,
            error="that key was not accepted: " + str(exc),
        )
    cookie, _ = console.sessions.sign_in(session, person)
    log.info("console sign-in email=%s key_id=%s", person.email, person.key_id)
    response = RedirectResponse(landing(request, wanted), status_code=303)
    set_cookie(
        request, response, cookie, int(console.sessions.lifetime.total_seconds())
    )

    return response


async def sign_out(request: Request, viewer: Viewer, form: Form) -> Response:
    """End the session and forget its cookie."""
    console = console_of(request)
    console.sessions.end(viewer.session)
    log.info("console sign-out email=%s", viewer.person.email)
    response = RedirectResponse(base_of(request) + "/sign-in", status_code=303)
    name = cookie_name(request)
    response.delete_cookie(
        name,
        path=_cookie_path(request, name),
        secure=name == SECURE_COOKIE,
        httponly=True,
        samesite="strict",
    )

    return response


def _refusal(request: Request, session: Session | None, form: Form) -> str | None:
    """Why a sign-in post is refused before its key is even looked at, or None."""
    if session is None:
        return "your sign-in form expired; try again"
    refused = check_post(request, session, form)
    if refused is not None:
        return refused
    # The server's own address decides "loopback", never a header the client sent.
    server = request.scope.get("server")
    host = str(server[0]) if server else None

    return console_of(request).cookies.refuses(request.url.scheme, host)


def landing(request: Request, wanted: str | None) -> str:
    """Where to go after signing in: ``wanted`` if it is a console page, else tasks.

    Only a path inside the console is followed, so the form cannot be used to send
    someone to another site.
    """
    base = base_of(request)
    default = base + "/tasks"
    if not wanted or not wanted.startswith(base + "/"):
        return default
    if "//" in wanted or "\\" in wanted or any(ord(c) < 0x20 for c in wanted):
        return default
    if wanted.startswith(base + "/sign-"):
        return default

    return wanted


def set_cookie(request: Request, response: Response, value: str, max_age: int) -> None:
    """Set the session cookie: HttpOnly, SameSite=Strict, Secure as the policy says."""
    name = cookie_name(request)
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        path=_cookie_path(request, name),
        secure=name == SECURE_COOKIE,
        httponly=True,
        samesite="strict",
    )


def _cookie_path(request: Request, name: str) -> str:
    # A __Host- cookie must have Path=/; a plain one stays within the console.
    if name == SECURE_COOKIE:
        return "/"
    return base_of(request) + "/"


def _form_page(
    request: Request,
    session: Session | None,
    *,
    wanted: str | None,
    status: int,
    error: str | None,
) -> Response:
    console = console_of(request)
    cookie = None
    if session is None:
        cookie, session = console.sessions.begin()
    response = render(
        request,
        "sign_in.html",
        {
            "error": error,
            "next": landing(request, wanted) if wanted else "",
            "section": "sign-in",
            "csrf_name": CSRF_FIELD,
        },
        viewer=None,
        status=status,
        session=session,
    )
    if cookie is not None:
        set_cookie(request, response, cookie, int(ANONYMOUS_TTL.total_seconds()))

    return response
