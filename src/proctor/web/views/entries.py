"""One entry's full story: for a call, everything behind it with an inclusion proof of
every entry it cites; for any other entry, the entry and its own proof. Beside it,
the verification status of the whole ledger."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from proctor.errors import QueryError
from proctor.forensics import DecisionStory, Event, Proof
from proctor.forensics.proof import prove
from proctor.forensics.story import event
from proctor.ledger import entries
from proctor.web.auth import Viewer
from proctor.web.pages import Console, console_of, page, refuse, render

STATUS_WAIT = 0.25
"""Seconds the page waits for a verification run under way (small ledgers)."""


def routes() -> list[Route]:
    return [Route("/entries/{index:int}", page(entry_page), methods=["GET"])]


@dataclass(frozen=True)
class EntryView:
    """What the entry page shows: the entry, and its story when it is about a call."""

    index: int
    entry: dict[str, Any]
    summary: Event
    story: DecisionStory | None
    proofs: tuple[Proof, ...]
    evidence: tuple[tuple[str, int, Proof | None], ...]
    checkpoint: str | None


async def entry_page(request: Request, viewer: Viewer) -> Response:
    """Show entry ``index`` with its story, its proofs and the ledger's status."""
    console = console_of(request)
    index = int(request.path_params["index"])
    size = await run_in_threadpool(console.runtime.ledger.store.size)
    if index >= size:
        return refuse(
            request,
            viewer,
            404,
            "No such entry",
            f"the ledger holds {size:,} entries; there is no entry {index}",
        )
    view = await run_in_threadpool(read_entry, console, index)
    status = await run_in_threadpool(console.status.status, wait=STATUS_WAIT)

    return render(
        request,
        "entry.html",
        {"section": "entries", "view": view, "status": status},
        viewer=viewer,
    )


def read_entry(console: Console, index: int) -> EntryView:
    """Tell the story behind entry ``index``, proofs verified on the spot."""
    forensics = console.forensics
    body = forensics.store.entry(index)
    entry = entries.decode(body)
    try:
        story: DecisionStory | None = forensics.explain(index, proofs=True)
    except QueryError:
        story = None
    if story is not None:
        proofs = story.proofs
    else:
        proofs = prove(
            forensics.store, {index: body}, forensics.verifiers, forensics.origin
        )
    by_index = {proof.index: proof for proof in proofs}
    evidence = (
        tuple((what, at, by_index.get(at)) for what, at in story.evidence.items())
        if story is not None
        else ()
    )
    notes = [proof.checkpoint for proof in proofs if proof.checkpoint]

    return EntryView(
        index=index,
        entry=entry,
        summary=event(entry, {}),
        story=story,
        proofs=proofs,
        evidence=evidence,
        checkpoint=notes[0] if notes else None,
    )
