"""Search with the filters of ``proctor find``: action, agent, user, task, decision,
breach, time range, context comparisons such as ``amount>=1000000`` and entry type.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from proctor.errors import QueryError
from proctor.forensics import Event, Finding, Findings, build_query
from proctor.forensics.query import DEFAULT_LIMIT, OUTCOMES
from proctor.forensics.story import event
from proctor.web.auth import Viewer
from proctor.web.pages import console_of, page, render, url_with

LIMITS = (20, 50, 100, 200)
MOST = LIMITS[-1]
"""Results a page shows at most: each decision's story costs a few index reads."""
FIELDS = (
    "action",
    "agent",
    "user",
    "task",
    "decision",
    "since",
    "until",
    "where",
    "type",
    "limit",
    "breach",
    "prove",
)


def routes() -> list[Route]:
    return [Route("/search", page(search_page), methods=["GET"])]


@dataclass(frozen=True)
class Result:
    """One finding as a row: the entry's summary line, and its story if a call."""

    summary: Event
    finding: Finding


async def search_page(request: Request, viewer: Viewer) -> Response:
    """Show the search form and, once submitted, what it found, newest first."""
    params = request.query_params
    form = {name: params.get(name, "") for name in FIELDS}
    asked = any(form[name] for name in FIELDS if name not in ("limit", "type"))
    asked = asked or "go" in params
    limit = _limit(form["limit"])
    findings: Findings | None = None
    error: str | None = None
    if asked:
        try:
            query = build_query(
                actions=_words(form["action"]),
                agent=form["agent"] or None,
                user=form["user"] or None,
                task=form["task"] or None,
                decision=form["decision"] or None,
                breach=bool(form["breach"]),
                since=form["since"] or None,
                until=form["until"] or None,
                where=[line for line in form["where"].splitlines() if line.strip()],
                types=_words(form["type"]) or ("decision",),
                limit=limit,
            )
            findings = await run_in_threadpool(
                console_of(request).forensics.find, query, proofs=bool(form["prove"])
            )
        except QueryError as exc:
            error = str(exc)
    results = (
        tuple(Result(event(f.entry, {}), f) for f in findings.results)
        if findings
        else ()
    )
    more = None
    if findings is not None and findings.more and limit < MOST:
        more = url_with(request, limit=min(MOST, limit * 2))

    return render(
        request,
        "search.html",
        {
            "section": "search",
            "form": form,
            "limit": limit,
            "limits": LIMITS,
            "outcomes": OUTCOMES,
            "findings": findings,
            "results": results,
            "error": error,
            "more": more,
        },
        viewer=viewer,
        status=400 if error else 200,
    )


def _words(text: str) -> tuple[str, ...]:
    """Split a field holding several values, by commas or spaces."""
    return tuple(word for word in re.split(r"[,\s]+", text) if word)


def _limit(text: str) -> int:
    if text.isdigit():
        return min(max(int(text), 1), MOST)
    return DEFAULT_LIMIT
