"""Exports that stream: the entries as JSON lines with their leaf hashes and the
checkpoint they verify against, and the decisions as OCSF API Activity records.

Memory stays flat for any ledger: entries are read and written a page at a time, and
a selection (``--since``/``--until``/``--task``) is read through the entry index.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import IO, Any
from urllib.parse import urlencode

import orjson

from proctor import __version__, kinds
from proctor.errors import EntryError, LedgerError, ProofError, VerifyError
from proctor.forensics.index import Index, micros
from proctor.forensics.proof import Signed, latest_signed, prove_against
from proctor.forensics.story import Entry, approval_story
from proctor.ledger import entries, merkle
from proctor.ledger.canonical import canonical
from proctor.ledger.checkpoint import Checkpoint, open_checkpoint
from proctor.ledger.note import Verifier
from proctor.storage.interface import Store

JSONL_FORMAT = "proctor-jsonl/1"
PAGE = 500
"""Entries read per query and proved per node lookup."""

OCSF_VERSION = "1.3.0"
API_ACTIVITY = 6003
APPLICATION_ACTIVITY = 6
_ACTIVITIES = {
    "POST": (1, "Create"),
    "GET": (2, "Read"),
    "HEAD": (2, "Read"),
    "PUT": (3, "Update"),
    "PATCH": (3, "Update"),
    "DELETE": (4, "Delete"),
}
_SEVERITIES = {1: "Informational", 2: "Low", 3: "Medium", 4: "High"}
_STATUSES = {0: "Unknown", 1: "Success", 2: "Failure"}


@dataclass(frozen=True)
class Selection:
    """Which entries an export holds: all of them, or a time range and a task."""

    since: datetime | None = None
    until: datetime | None = None
    task: str | None = None

    @property
    def is_everything(self) -> bool:
        return self.since is None and self.until is None and self.task is None

    def describe(self) -> dict[str, str]:
        described = {
            "since": _stamp(self.since),
            "until": _stamp(self.until),
            "task": self.task,
        }
        return {key: value for key, value in described.items() if value is not None}


def selected(
    store: Store,
    index: Index | None,
    selection: Selection,
    end: int,
    *,
    types: Sequence[str] = (),
) -> Iterator[tuple[int, bytes]]:
    """Stream the entries below ``end`` that ``selection`` and ``types`` admit.

    Without a selection or types the ledger is read in order directly; otherwise
    through the entry index (which must be caught up), a page at a time.
    """
    if selection.is_everything and not types:
        yield from enumerate(store.entries(0, end))
        return
    if index is None:
        raise LedgerError("a selected export needs the entry index")
    where, bound = _where(selection, types, index, end)
    after = -1
    while True:
        page = index.select(where, bound, limit=PAGE, after=after, descending=False)
        yield from page
        if len(page) < PAGE:
            return
        after = page[-1][0]


def _where(
    selection: Selection, types: Sequence[str], index: Index, end: int
) -> tuple[str, list[object]]:
    marker = index.marker
    clauses: list[str] = []
    bound: list[object] = []
    if types:
        clauses.append(f"i.type IN ({', '.join(marker for _ in types)})")
        bound.extend(types)
    if selection.task is not None:
        clauses.append(f"i.task = {marker}")
        bound.append(selection.task)
    since = micros(selection.since.isoformat()) if selection.since else None
    until = micros(selection.until.isoformat()) if selection.until else None
    ranged, values = index.time_clauses(since, until)
    clauses.extend(ranged)
    bound.extend(values)
    clauses.append(f"i.idx < {marker}")
    bound.append(end)

    return " AND ".join(clauses), bound


# JSON lines.


def export_jsonl(
    store: Store,
    out: IO[bytes],
    *,
    verifiers: Sequence[Verifier],
    origin: str | None = None,
    selection: Selection | None = None,
    index: Index | None = None,
) -> int:
    """Write a header naming the latest checkpoint, then one line per entry.

    Each line holds the entry's index, its leaf hash and the entry; a selected
    export adds each entry's inclusion proof, a complete one lets a verifier
    recompute the root. Returns how many entries were written. Raises LedgerError
    when there is no checkpoint or it does not verify with ``verifiers``.
    """
    chosen = selection or Selection()
    signed = latest_signed(store, verifiers, origin)
    checkpoint = signed.checkpoint
    if checkpoint is None:
        raise LedgerError(signed.problem or "the latest checkpoint does not verify")
    complete = chosen.is_everything
    header = {
        "format": JSONL_FORMAT,
        "origin": checkpoint.origin,
        "size": checkpoint.size,
        "root": _b64(checkpoint.root),
        "checkpoint": signed.note,
        "complete": complete,
        "selection": chosen.describe(),
    }
    out.write(orjson.dumps(header) + b"\n")
    rows = selected(store, index, chosen, checkpoint.size)
    written = 0
    for page in _pages(rows):
        proofs = {} if complete else _proofs(store, page, signed)
        for position, data in page:
            out.write(_line(position, data, proofs.get(position)))
            written += 1

    return written


def _line(position: int, data: bytes, proof: Sequence[str] | None) -> bytes:
    leaf = _b64(merkle.leaf_hash(data))
    # The stored bytes are canonical JSON already: written as they are, they stay
    # the exact bytes the leaf hash covers.
    line = b'{"index":%d,"leaf_hash":"%s","entry":%s' % (position, leaf.encode(), data)
    if proof is not None:
        line += b',"proof":' + orjson.dumps(list(proof))

    return line + b"}\n"


def _proofs(
    store: Store, page: Sequence[tuple[int, bytes]], signed: Signed
) -> dict[int, tuple[str, ...]]:
    proofs = {}
    for proof in prove_against(store, dict(page), signed):
        if not proof.verified:
            raise LedgerError(f"entry {proof.index} does not prove: {proof.problem}")
        proofs[proof.index] = proof.hashes

    return proofs


@dataclass(frozen=True)
class JsonlReport:
    """What verifying a JSON lines export established."""

    checkpoint: Checkpoint
    entries: int
    complete: bool


def verify_jsonl(
    lines: Iterable[bytes], verifiers: Sequence[Verifier], *, origin: str | None = None
) -> JsonlReport:
    """Verify an export offline: the checkpoint's signature, every leaf hash
    recomputed from its entry, and the root (complete export) or each proof.

    Raises VerifyError naming the first line that fails.
    """
    stream = iter(lines)
    checkpoint, complete = _header(next(stream, b""), verifiers, origin)
    edge = merkle.CompactRange()
    count = 0
    for count, raw in enumerate(stream, 1):
        position, leaf, proof = _checked_line(raw, count)
        if complete:
            if position != edge.size:
                raise VerifyError(
                    f"line {count + 1}: entry {position} where {edge.size} belongs",
                    index=edge.size,
                )
            edge.append(leaf)
            continue
        try:
            merkle.verify_inclusion(
                leaf, position, checkpoint.size, proof, checkpoint.root
            )
        except ProofError as exc:
            raise VerifyError(
                f"line {count + 1}: entry {position} is not in the checkpoint: {exc}",
                index=position,
            ) from exc
    if complete and (edge.size != checkpoint.size or edge.root() != checkpoint.root):
        raise VerifyError(
            f"the {edge.size} entries do not hash to the checkpoint's root at size "
            f"{checkpoint.size}",
            checkpoint=checkpoint.size,
        )

    return JsonlReport(checkpoint, count, complete)


def _header(
    raw: bytes, verifiers: Sequence[Verifier], origin: str | None
) -> tuple[Checkpoint, bool]:
    try:
        header = orjson.loads(raw)
        note = str(header["checkpoint"]).encode()
        complete = header["complete"] is True
    except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
        raise VerifyError("line 1 is not a proctor-jsonl header") from exc
    try:
        checkpoint = open_checkpoint(note, verifiers, origin=origin)
    except LedgerError as exc:
        raise VerifyError(f"the export's checkpoint does not verify: {exc}") from exc
    if (header.get("size"), header.get("root")) != (
        checkpoint.size,
        _b64(checkpoint.root),
    ):
        raise VerifyError("the header's size or root is not its checkpoint's")

    return checkpoint, complete


def _checked_line(raw: bytes, number: int) -> tuple[int, bytes, list[bytes]]:
    try:
        line = orjson.loads(raw)
        position, entry = int(line["index"]), line["entry"]
        claimed = base64.b64decode(line["leaf_hash"], validate=True)
        proof = [
            base64.b64decode(node, validate=True) for node in line.get("proof", ())
        ]
        data = canonical(entry)
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, EntryError) as exc:
        raise VerifyError(f"line {number + 1} is not an exported entry: {exc}") from exc
    leaf = merkle.leaf_hash(data)
    if leaf != claimed or entry.get("index") != position:
        raise VerifyError(
            f"line {number + 1}: entry {position} does not match its leaf hash",
            index=position,
        )

    return position, leaf, proof


# OCSF.


def export_ocsf(
    store: Store,
    out: IO[bytes],
    index: Index,
    *,
    origin: str,
    selection: Selection | None = None,
) -> int:
    """Write one OCSF API Activity record per decision, one JSON object a line.

    ``index`` must be caught up. Returns how many records were written.
    """
    written = 0
    rows = selected(
        store, index, selection or Selection(), store.size(), types=(kinds.DECISION,)
    )
    for page in _pages(rows):
        decisions = [entries.decode(data) for _, data in page]
        approvals = [str(d["approval"]) for d in decisions if d.get("approval")]
        about_rows = index.related([position for position, _ in page], approvals)
        about = [entries.decode(data) for _, data in about_rows]
        for decision in decisions:
            record = ocsf_record(decision, about, origin=origin)
            out.write(orjson.dumps(record) + b"\n")
            written += 1

    return written


def ocsf_record(
    decision: Entry, about: Sequence[Entry], *, origin: str
) -> dict[str, Any]:
    """Map one decision (and the entries about it) to an OCSF 1.3 API Activity.

    The decision and its policies go in ``actor.authorizations``, the task in
    ``metadata.correlation_uid`` and ``actor.session``; what OCSF has no place for
    (approval, breach, digests, entry indexes) goes in ``unmapped``.
    """
    index = int(decision["index"])
    request = decision.get("request") or {}
    request = request if isinstance(request, dict) else {}
    activity_id, activity = _activity(request.get("method"))
    completion = _about(index, kinds.CALL_COMPLETED, about)
    breach = _about(index, kinds.BREACH, about)
    severity = _severity(decision)
    status = _status(decision, completion)
    user, agent, task = (
        decision.get("user"),
        decision.get("agent"),
        decision.get("task"),
    )
    record: dict[str, Any] = {
        "class_uid": API_ACTIVITY,
        "class_name": "API Activity",
        "category_uid": APPLICATION_ACTIVITY,
        "category_name": "Application Activity",
        "activity_id": activity_id,
        "activity_name": activity,
        "type_uid": API_ACTIVITY * 100 + activity_id,
        "type_name": f"API Activity: {activity}",
        "time": micros(str(decision["time"])) // 1000,
        "severity_id": severity,
        "severity": _SEVERITIES[severity],
        "status_id": status,
        "status": _STATUSES[status],
        "status_code": str(decision.get("outcome")),
        "status_detail": decision.get("reason"),
        "message": (
            f"{decision.get('outcome')}: {decision.get('action')} for task {task}"
        ),
        "metadata": {
            "version": OCSF_VERSION,
            "product": {
                "name": "Proctor",
                "vendor_name": "Proctor",
                "version": __version__,
            },
            "uid": f"{origin}/{index}",
            "sequence": index,
            "original_time": decision["time"],
            "correlation_uid": task,
            "log_name": origin,
        },
        "actor": {
            "user": _user(user),
            "app_name": agent,
            "session": {"uid": task},
            "authorizations": _authorizations(decision),
        },
        "api": _api(decision, index, origin, completion),
        "src_endpoint": {"name": agent},
        "dst_endpoint": {"svc_name": decision.get("target")},
        "resources": [_resource(decision.get("resource"))],
        "unmapped": _unmapped(decision, about, completion, breach),
    }
    http = _http_request(decision, request)
    if http:
        record["http_request"] = http
    if completion is not None and isinstance(completion.get("status"), int):
        record["http_response"] = {"code": completion["status"]}

    return record


def _activity(method: object) -> tuple[int, str]:
    if not isinstance(method, str):
        return 0, "Unknown"
    return _ACTIVITIES.get(method.upper(), (99, method))


def _severity(decision: Entry) -> int:
    if decision.get("breach") is True:
        return 4
    return {"allow": 1, "needs_approval": 2}.get(str(decision.get("outcome")), 3)


def _status(decision: Entry, completion: Entry | None) -> int:
    if decision.get("outcome") != "allow":
        return 2
    if completion is None:
        return 0
    code = completion.get("status")
    failed = completion.get("error") or not isinstance(code, int) or code >= 400

    return 2 if failed else 1


def _user(user: object) -> dict[str, Any]:
    described: dict[str, Any] = {"uid": user, "name": user}
    if isinstance(user, str) and "@" in user:
        described["email_addr"] = user
    return described


def _authorizations(decision: Entry) -> list[dict[str, Any]]:
    outcome = decision.get("outcome")
    policies = decision.get("policies") or ()
    if not policies:
        return [{"decision": outcome}]
    return [
        {
            "decision": outcome,
            "policy": {
                "uid": policy,
                "name": policy,
                "version": decision.get("policy_set"),
            },
        }
        for policy in policies
    ]


def _api(
    decision: Entry, index: int, origin: str, completion: Entry | None
) -> dict[str, Any]:
    api: dict[str, Any] = {
        "operation": decision.get("action"),
        "service": {"name": decision.get("target")},
        "request": {
            "uid": f"{origin}/{index}",
            "data": {"digest": decision.get("request_digest")},
        },
    }
    if completion is not None:
        response: dict[str, Any] = {"code": completion.get("status")}
        if completion.get("error"):
            response["error"] = completion.get("error")
        api["response"] = response

    return api


def _resource(resource: object) -> dict[str, Any]:
    text = str(resource)
    kind = text.rsplit("::", 1)[0] if "::" in text else None
    return {"uid": text, "type": kind}


def _http_request(decision: Entry, request: Mapping[str, Any]) -> dict[str, Any]:
    if decision.get("door") != "http" or not isinstance(request.get("path"), str):
        return {}
    url: dict[str, Any] = {"path": request["path"]}
    query = request.get("query")
    if isinstance(query, list) and query:
        url["query_string"] = urlencode(
            [tuple(pair) for pair in query if len(pair) == 2]
        )
    http: dict[str, Any] = {"http_method": request.get("method"), "url": url}
    headers = request.get("headers")
    if isinstance(headers, dict) and isinstance(headers.get("user-agent"), str):
        http["user_agent"] = headers["user-agent"]

    return http


def _unmapped(
    decision: Entry,
    about: Sequence[Entry],
    completion: Entry | None,
    breach: Entry | None,
) -> dict[str, Any]:
    unmapped: dict[str, Any] = {
        "entry": decision["index"],
        "task": decision.get("task"),
        "decision": decision.get("outcome"),
        "policies": list(decision.get("policies") or ()),
        "policy_set": decision.get("policy_set"),
        "scope": decision.get("scope"),
        "scope_approver": decision.get("scope_approver"),
        "request_digest": decision.get("request_digest"),
        "credential": decision.get("credential"),
        "context": decision.get("context"),
        "breach": decision.get("breach") is True,
        "reasoning": list(decision.get("reasoning") or ()),
    }
    approval = decision.get("approval")
    if approval:
        story = approval_story(str(approval), decision, about)
        unmapped["approval"] = {
            "id": story.id,
            "state": story.state,
            "requested": story.requested,
            "approvers": [s.approver for s in story.signoffs if s.granted],
            "denied_by": [s.approver for s in story.signoffs if not s.granted],
            "entries": [s.index for s in story.signoffs],
            "binds_request": story.binds,
        }
    if completion is not None:
        unmapped["completion"] = completion["index"]
    if breach is not None:
        unmapped["breach_entry"] = breach["index"]

    return unmapped


def _about(index: int, kind: str, about: Sequence[Entry]) -> Entry | None:
    return next(
        (e for e in about if e["type"] == kind and e.get("decision") == index), None
    )


# Helpers.


def _pages(rows: Iterable[tuple[int, bytes]]) -> Iterator[list[tuple[int, bytes]]]:
    page: list[tuple[int, bytes]] = []
    for row in rows:
        page.append(row)
        if len(page) == PAGE:
            yield page
            page = []
    if page:
        yield page


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _stamp(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
