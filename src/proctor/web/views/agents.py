"""Calls and denials over time, per agent: counts from the entry index drawn as
stacked bars in inline SVG, one chart per agent."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from proctor.errors import QueryError
from proctor.forensics import Activity
from proctor.forensics.query import parse_time
from proctor.web.auth import Viewer
from proctor.web.format import when
from proctor.web.pages import Console, console_of, page, page_number, pager, render

AGENTS_PER_PAGE = 20
MAX_BARS = 60
WIDTHS = (
    60,
    300,
    900,
    1800,
    3600,
    3 * 3600,
    6 * 3600,
    12 * 3600,
    86400,
    7 * 86400,
    30 * 86400,
)
"""Bucket widths in seconds, the narrowest that keeps a chart under MAX_BARS."""
SPANS = ("1h", "24h", "7d", "30d", "90d")
CHART_WIDTH = 600
CHART_HEIGHT = 64
LAYERS = (("allow", "bar-allow"), ("needs_approval", "bar-held"), ("deny", "bar-deny"))
"""Outcomes stacked from the bottom, and the class that colours each."""


def routes() -> list[Route]:
    return [Route("/agents", page(agents_page), methods=["GET"])]


@dataclass(frozen=True)
class Layer:
    """One outcome's part of every bar, drawn as a single SVG path."""

    css: str
    path: str


@dataclass(frozen=True)
class Bar:
    """Where one bucket's whole bar stands, for its tooltip."""

    x: float
    width: float
    top: float
    title: str


@dataclass(frozen=True)
class AgentChart:
    """One agent's decisions in the range: totals and a bar per bucket."""

    agent: str
    calls: int
    allowed: int
    denied: int
    held: int
    peak: int
    layers: tuple[Layer, ...]
    bars: tuple[Bar, ...]

    @property
    def denied_share(self) -> str:
        return f"{self.denied / self.calls:.0%}" if self.calls else "-"


async def agents_page(request: Request, viewer: Viewer) -> Response:
    """Per agent, decisions per bucket of time in the chosen range."""
    params = request.query_params
    since_text = params.get("since") or "7d"
    until_text = params.get("until") or ""
    agent = params.get("agent") or None
    now = datetime.now(UTC)
    number = page_number(request)
    start = (number - 1) * AGENTS_PER_PAGE
    shown = slice(start, start + AGENTS_PER_PAGE)
    error = None
    try:
        since = parse_time(since_text, now=now, what="since")
        until = parse_time(until_text, now=now, what="until") if until_text else now
        if until <= since:
            raise QueryError("until must come after since")
        width = bucket_width(until - since)
        count, charts = await run_in_threadpool(
            lambda: read_charts(
                console_of(request),
                since=since,
                until=until,
                width=width,
                agent=agent,
                shown=shown,
            )
        )
    except QueryError as exc:
        error = str(exc)
        since, until, width = now - timedelta(days=7), now, 3600
        count, charts = 0, ()

    return render(
        request,
        "agents.html",
        {
            "section": "agents",
            "charts": charts,
            "count": count,
            "since": since_text,
            "until": until_text,
            "agent": agent or "",
            "spans": SPANS,
            "range": (when(since), when(until)),
            "width": _width_text(width),
            "error": error,
            "pager": pager(request, number, more=start + AGENTS_PER_PAGE < count),
            "chart_width": CHART_WIDTH,
            "chart_height": CHART_HEIGHT,
        },
        viewer=viewer,
        status=400 if error else 200,
    )


def read_charts(
    console: Console,
    *,
    since: datetime,
    until: datetime,
    width: int,
    agent: str | None,
    shown: slice,
) -> tuple[int, tuple[AgentChart, ...]]:
    """Count decisions in the range and lay out the charts of the agents shown."""
    rows = console.activity.activity(
        since=since, until=until, bucket=width, agent=agent
    )
    return build_charts(rows, since=since, until=until, width=width, shown=shown)


def bucket_width(span: timedelta) -> int:
    """The narrowest bucket, in seconds, that draws ``span`` in MAX_BARS bars."""
    seconds = span.total_seconds()
    for width in WIDTHS:
        if seconds / width <= MAX_BARS:
            return width
    return math.ceil(seconds / MAX_BARS)


def build_charts(
    rows: Sequence[Activity],
    *,
    since: datetime,
    until: datetime,
    width: int,
    shown: slice = slice(None),
) -> tuple[int, tuple[AgentChart, ...]]:
    """Count the agents, busiest first, and lay out a chart for each one ``shown``,
    scaled to its own peak."""
    first = int(since.timestamp()) // width
    count = int(until.timestamp()) // width - first + 1
    table: dict[str, dict[int, dict[str, int]]] = {}
    starts: dict[str, int] = {}
    for row in rows:
        if row.start not in starts:
            starts[row.start] = int(_parse(row.start).timestamp()) // width - first
        bucket = starts[row.start]
        if not 0 <= bucket < count:
            continue
        per = table.setdefault(row.agent or "(none)", {}).setdefault(bucket, {})
        outcome = row.outcome or "deny"
        per[outcome] = per.get(outcome, 0) + row.count
    busiest = sorted(table, key=lambda agent: (-_calls(table[agent]), agent))
    charts = tuple(
        _chart(agent, table[agent], first=first, count=count, width=width)
        for agent in busiest[shown]
    )

    return len(busiest), charts


def _calls(buckets: dict[int, dict[str, int]]) -> int:
    return sum(sum(per.values()) for per in buckets.values())


def _chart(
    agent: str,
    buckets: dict[int, dict[str, int]],
    *,
    first: int,
    count: int,
    width: int,
) -> AgentChart:
    peak = max((sum(per.values()) for per in buckets.values()), default=0)
    step = CHART_WIDTH / count
    wide = round(max(step - 1, 1), 2)
    paths: dict[str, list[str]] = {css: [] for _, css in LAYERS}
    bars = []
    for bucket, per in sorted(buckets.items()):
        x = round(bucket * step, 2)
        bottom = float(CHART_HEIGHT)
        for outcome, css in LAYERS:
            height = CHART_HEIGHT * per.get(outcome, 0) / peak if peak else 0.0
            if height > 0:
                bottom -= height
                paths[css].append(f"M{x} {bottom:.2f}h{wide}v{height:.2f}h-{wide}z")
        start = datetime.fromtimestamp((first + bucket) * width, UTC)
        title = (
            f"{when(start)}: {per.get('allow', 0)} allowed, "
            f"{per.get('deny', 0)} denied, {per.get('needs_approval', 0)} held"
        )
        bars.append(Bar(x, wide, round(bottom, 2), title))
    total = {
        outcome: sum(per.get(outcome, 0) for per in buckets.values())
        for outcome, _ in LAYERS
    }

    return AgentChart(
        agent=agent,
        calls=sum(sum(per.values()) for per in buckets.values()),
        allowed=total["allow"],
        denied=total["deny"],
        held=total["needs_approval"],
        peak=peak,
        layers=tuple(Layer(css, "".join(parts)) for css, parts in paths.items()),
        bars=tuple(bars),
    )


def _parse(stamp: str) -> datetime:
    moment = datetime.fromisoformat(stamp)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _width_text(seconds: int) -> str:
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds % size == 0:
            amount = seconds // size
            return f"{amount} {unit}" + ("s" if amount != 1 else "")
    return f"{seconds} seconds"
