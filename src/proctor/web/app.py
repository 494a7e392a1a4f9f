"""The console app: pages for auditors and approvers over one open runtime, mounted
by ``proctor serve`` at ``/console``. Templates escape everything they show, and
every answer carries headers that keep it out of frames, caches and other sites."""

from __future__ import annotations

from pathlib import Path

import jinja2
from starlette.applications import Starlette
from starlette.routing import BaseRoute, Mount
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from proctor.forensics import Forensics
from proctor.runtime import Runtime
from proctor.web.activity import ActivityCache
from proctor.web.auth import CookiePolicy, Sessions
from proctor.web.format import FILTERS
from proctor.web.pages import Console
from proctor.web.status import LedgerStatus
from proctor.web.views import account, agents, approvals, entries, search, tasks

HERE = Path(__file__).resolve().parent
TEMPLATES = HERE / "templates"
STATIC = HERE / "static"

# No script runs on these pages and nothing loads from elsewhere; SVG charts are
# inline and styled from the console's own stylesheet.
SECURITY_HEADERS = (
    (
        b"content-security-policy",
        b"default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
        b"frame-ancestors 'none'; base-uri 'none'",
    ),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"same-origin"),
)


def console_app(
    runtime: Runtime,
    *,
    cookies: CookiePolicy | None = None,
    status: LedgerStatus | None = None,
) -> Starlette:
    """Build the console over an open runtime; raises ConfigError for a bad
    ``[console]`` table. The caller keeps and closes the runtime."""
    policy = cookies or CookiePolicy.from_config(runtime.config.raw)
    store = runtime.ledger.store
    forensics = Forensics(
        store,
        verifiers=[runtime.home.verifier()],
        origin=runtime.config.ledger.origin,
    )
    console = Console(
        runtime=runtime,
        forensics=forensics,
        sessions=Sessions(policy.lifetime),
        cookies=policy,
        status=status or LedgerStatus(runtime.home, store),
        templates=templates(),
        activity=ActivityCache(forensics),
    )
    routes: list[BaseRoute] = [
        *account.routes(),
        *tasks.routes(),
        *entries.routes(),
        *search.routes(),
        *agents.routes(),
        *approvals.routes(),
        Mount("/static", app=StaticFiles(directory=STATIC), name="static"),
    ]
    app = Starlette(routes=routes)
    app.state.console = console
    app.add_middleware(SecurityHeaders)

    return app


def templates() -> Jinja2Templates:
    """The console's templates, with autoescaping on for every one of them."""
    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    environment.filters.update(FILTERS)

    return Jinja2Templates(env=environment)


class SecurityHeaders:
    """Add the console's security headers to every answer, static files too."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [
                    *message.get("headers", ()),
                    *SECURITY_HEADERS,
                ]
            await send(message)

        await self.app(scope, receive, sending)
