"""``proctor trace``, ``proctor find`` and ``proctor breaches``: the ledger's story
read back, one line per event, every line naming its entry."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, NoReturn

import orjson
import typer
from rich.text import Text

from proctor.cli.common import HomeOption, JsonOption, emit_json, err, locate, out
from proctor.errors import QueryError
from proctor.forensics import (
    DecisionStory,
    Findings,
    Forensics,
    Query,
    TaskStory,
    build_query,
)
from proctor.forensics.proof import Proof
from proctor.forensics.service import MAX_SCAN

TaskArgument = Annotated[str, typer.Argument(metavar="TASK", help="The task id.")]
SinceOption = Annotated[
    str | None,
    typer.Option(help="From this time: RFC 3339, or back from now like 24h or 7d."),
]
UntilOption = Annotated[
    str | None, typer.Option(help="Up to this time: RFC 3339, or like 1h.")
]
LimitOption = Annotated[int, typer.Option(help="Show at most this many, newest first.")]
ProveOption = Annotated[
    bool,
    typer.Option(
        "--prove",
        help="Prove every cited entry against the latest checkpoint, on the spot.",
    ),
]

STYLES = {
    "allow": "green",
    "deny": "red",
    "held": "yellow",
    "breach": "bold red",
    "approval": "cyan",
    "reasoning": "magenta",
    "task": "bold",
    "end": "blue",
    "outcome": "green",
    "info": "dim",
}
LABELS = {
    "allow": "ALLOW",
    "deny": "DENY",
    "held": "HELD",
    "breach": "BREACH",
    "approval": "APPROVE",
    "reasoning": "REASON",
    "task": "TASK",
    "end": "END",
    "outcome": "RESULT",
    "info": "INFO",
}
TONE_OF = {"allow": "allow", "deny": "deny", "needs_approval": "held"}
NOTICE = 10_000
"""An index backlog this large is announced before it is folded in."""


def register(app: typer.Typer) -> None:
    app.command("trace")(trace_command)
    app.command("find")(find_command)
    app.command("breaches")(breaches_command)


def trace_command(
    task: TaskArgument, home: HomeOption = None, as_json: JsonOption = False
) -> None:
    """Tell a task's story in order: request, scope, reasoning, calls, approvals,
    outcomes, breaches and quarantine, one line per entry."""
    with opened(home) as forensics:
        story = forensics.trace(task)
    if as_json:
        emit_json(story)
        return
    for line in trace_lines(story):
        out.print(line)
    err.print(f"{len(story.events)} entries for task {story.task}", markup=False)


def find_command(
    *,
    action: Annotated[
        list[str] | None,
        typer.Option(help="An action uid, or its short name (CreatePayment)."),
    ] = None,
    agent: Annotated[str | None, typer.Option(help="The agent that called.")] = None,
    user: Annotated[str | None, typer.Option(help="The user behind the task.")] = None,
    task: Annotated[str | None, typer.Option(help="The task id.")] = None,
    decision: Annotated[
        str | None, typer.Option(help="allow, deny or needs_approval.")
    ] = None,
    breach: Annotated[
        bool, typer.Option("--breach", help="Only calls flagged as breaches.")
    ] = False,
    since: SinceOption = None,
    until: UntilOption = None,
    where: Annotated[
        list[str] | None,
        typer.Option(
            help="A context comparison: amount>=1000000, vendor=acme (repeatable)."
        ),
    ] = None,
    entry_type: Annotated[
        list[str] | None,
        typer.Option("--type", help="Entry types to search (default: decision)."),
    ] = None,
    limit: LimitOption = 20,
    scan: Annotated[
        int,
        typer.Option(
            help="Read at most this many candidates to check --where terms on "
            "context values other than amount.",
            min=1,
        ),
    ] = MAX_SCAN,
    prove: ProveOption = False,
    home: HomeOption = None,
    as_json: JsonOption = False,
) -> None:
    """Find calls by action, agent, user, task, decision, breach, time and context,
    each with its task, approval and approver, outcome and the entries proving it."""
    query = _query(
        actions=action or (),
        agent=agent,
        user=user,
        task=task,
        decision=decision,
        breach=breach,
        since=since,
        until=until,
        where=where or (),
        types=entry_type or ("decision",),
        limit=limit,
    )
    with opened(home) as forensics:
        findings = forensics.find(query, proofs=prove, scan=scan)
    _report(findings, as_json=as_json, what=("match", "matches"))


def breaches_command(
    *,
    task: Annotated[str | None, typer.Option(help="Only this task.")] = None,
    agent: Annotated[str | None, typer.Option(help="Only this agent.")] = None,
    since: SinceOption = None,
    until: UntilOption = None,
    limit: LimitOption = 50,
    prove: ProveOption = False,
    home: HomeOption = None,
    as_json: JsonOption = False,
) -> None:
    """List calls outside their task's scope, newest first; exit 1 if there are any."""
    query = _query(task=task, agent=agent, since=since, until=until, limit=limit)
    with opened(home) as forensics:
        findings = forensics.breaches(query, proofs=prove)
    _report(findings, as_json=as_json, what=("breach", "breaches"))
    if findings.results:
        raise typer.Exit(1)


@contextmanager
def opened(home: Path | None) -> Iterator[Forensics]:
    """Open a home's ledger for questions, its entry index caught up (saying so on
    stderr when that takes a while: the first time on a large ledger)."""
    with Forensics.open(locate(home)) as forensics:
        backlog = forensics.backlog()
        if backlog >= NOTICE:
            err.print(f"indexing {backlog:,} entries; later questions start from here")
        forensics.refresh()
        yield forensics


def _query(**fields: Any) -> Query:
    try:
        return build_query(**fields)
    except QueryError as exc:
        _usage(str(exc))


def _usage(message: str) -> NoReturn:
    err.print(f"proctor: {message}", markup=False)
    raise typer.Exit(2)


def _report(findings: Findings, *, as_json: bool, what: tuple[str, str]) -> None:
    if as_json:
        emit_json(findings)
        return
    for finding in findings.results:
        if finding.story is not None:
            for line in decision_lines(finding.story):
                out.print(line)
        else:
            out.print(_entry_line(finding.index, finding.time, finding.entry))
        out.print()
    more = " (more: raise --limit or narrow the search)" if findings.more else ""
    count = len(findings.results)
    noun = what[0] if count == 1 else what[1]
    err.print(f"{count} {noun}{more}", markup=False)
    if findings.note:
        err.print(f"note: {findings.note}", markup=False)


# Rendering, shared with any command that shows a task or a decision.


def trace_lines(story: TaskStory) -> list[Text]:
    """Lay out a task's story: a short heading, then one line per entry."""
    approvers = ", ".join(
        f"{s.approver} (#{s.index})" for s in story.signoffs if s.granted
    )
    scope = story.scope
    actions = ", ".join(scope.get("actions") or ()) or "-"
    lines = [
        Text.assemble(
            ("task ", "bold"),
            (story.task, "bold"),
            f" · {story.state} · {story.user} via {story.agent}",
        ),
        Text(f"request  {_quoted(story.request)}"),
        Text(
            f"scope    {str(scope.get('digest'))[:12]} · {actions} · "
            f"approved by {approvers or 'nobody'}"
        ),
    ]
    width = len(str(story.events[-1].index)) + 1 if story.events else 2
    for event in story.events:
        lines.append(
            _event_line(event.index, event.time, event.tone, event.summary, width)
        )

    return lines


def decision_lines(story: DecisionStory) -> list[Text]:
    """Lay out everything behind one call, one fact a line, each naming its entry."""
    tone = "breach" if story.breach else TONE_OF.get(story.outcome, "info")
    head = _event_line(
        story.index,
        story.time,
        tone,
        f"{story.action}{_context(story.context)}",
        len(str(story.index)) + 1,
    )
    task = story.task
    lines = [
        head,
        _fact(
            "task",
            f"{task.id} · {task.user} via {task.agent}: {_quoted(task.request)}"
            + _at(task.opened),
        ),
        _fact("scope", _scope(story)),
    ]
    lines.extend(
        _fact("reasoning", f"{_quoted(step.text)} (#{step.index})")
        for step in story.reasoning
    )
    lines.append(_fact("request", _request(story)))
    lines.append(_fact("decided", _decided(story)))
    if story.approval is not None:
        lines.extend(_fact("approval", text) for text in _approval(story))
    if story.completion is not None:
        lines.append(_fact("outcome", _completion(story)))
    if story.breach_record is not None:
        record = story.breach_record
        quarantined = (
            f", quarantine #{record.quarantined}" if record.quarantined else ""
        )
        lines.append(
            _fact("breach", f"{record.reason} (#{record.index}{quarantined})", "red")
        )
    entries = " · ".join(f"{what} #{index}" for what, index in story.evidence.items())
    lines.append(_fact("entries", entries))
    if story.proofs:
        lines.append(_proofs(story.proofs))

    return lines


def _event_line(index: int, time: str, tone: str, summary: str, width: int) -> Text:
    style = STYLES.get(tone, "")
    return Text.assemble(
        (f"#{index}".rjust(width), "bold"),
        "  ",
        (_when(time), "dim"),
        "  ",
        (f"{LABELS.get(tone, tone.upper()):<7}", style),
        "  ",
        (summary, style if tone in ("breach", "deny") else ""),
    )


def _entry_line(index: int, time: str, entry: Any) -> Text:
    fields = {k: v for k, v in entry.items() if k not in ("index", "time", "type")}
    body = orjson.dumps(fields, option=orjson.OPT_SORT_KEYS).decode()
    return Text.assemble(
        (f"#{index}", "bold"),
        "  ",
        (_when(time), "dim"),
        "  ",
        (str(entry["type"]), "cyan"),
        "  ",
        body,
    )


def _fact(label: str, text: str, style: str = "") -> Text:
    return Text.assemble(("    " + f"{label:<10}", "dim"), (text, style))


def _scope(story: DecisionStory) -> str:
    task = story.task
    signoff = task.scope_approval
    approved = (
        f"approved by {signoff.approver} ({signoff.role}) at {_when(signoff.time)}: "
        f"{_quoted(signoff.reason)} (#{signoff.index})"
        if signoff
        else "needed no approver"
    )
    return f"{str(task.scope)[:12]} · {approved}"


def _request(story: DecisionStory) -> str:
    request = dict(story.request)
    method = request.pop("method", None)
    where = request.pop("path", None) or request.pop("tool", None) or story.target
    rest = (
        orjson.dumps(request, option=orjson.OPT_SORT_KEYS).decode() if request else ""
    )
    credential = f" · credential {story.credential}" if story.credential else ""
    digest = (story.request_digest or "?")[:16]

    return f"{method} {where} {rest} · digest {digest}…{credential}".replace("  ", " ")


def _decided(story: DecisionStory) -> str:
    policies = ", ".join(story.policies) or "no policy"
    policy = story.policy
    published = (
        f" · policy set {str(story.policy_set)[:12]} (#{policy.index}"
        + ("" if policy.matches else ", DIGEST DIFFERS")
        + ")"
        if policy
        else f" · policy set {str(story.policy_set)[:12]}"
    )
    return f"{story.outcome} by {policies}: {story.reason}{published}"


def _approval(story: DecisionStory) -> list[str]:
    approval = story.approval
    if approval is None:
        return []
    lines = [
        f"{approval.id} · {approval.state} · asked of {', '.join(approval.roles)}"
        f"{_at(approval.requested)}: {approval.reason}"
    ]
    for signoff in approval.signoffs:
        verb = "granted" if signoff.granted else "denied"
        lines.append(
            f"{verb} by {signoff.approver} ({signoff.role}) at {_when(signoff.time)}: "
            f"{_quoted(signoff.reason)} (#{signoff.index})"
        )
    if approval.binds is not None:
        lines.append(
            "names this exact request (digest matches)"
            if approval.binds
            else "was given for a DIFFERENT request digest"
        )
    if approval.released is not None and approval.released != story.index:
        lines.append(f"released the call at #{approval.released}")
    if approval.held is not None and approval.held != story.index:
        lines.append(f"the call was first held at #{approval.held}")

    return lines


def _completion(story: DecisionStory) -> str:
    completion = story.completion
    if completion is None:
        return ""
    if completion.error:
        return f"failed: {completion.error} (#{completion.index})"
    latency = (
        f" in {completion.latency_us / 1000:.1f} ms"
        if completion.latency_us is not None
        else ""
    )
    return (
        f"{completion.status}, {completion.size} bytes{latency} (#{completion.index})"
    )


def _proofs(proofs: tuple[Proof, ...]) -> Text:
    failed = [proof for proof in proofs if not proof.verified]
    if not failed:
        size = proofs[0].size
        return _fact(
            "proof",
            f"{len(proofs)} entries included in the signed checkpoint at size "
            f"{size}: verified",
            "green",
        )
    first = failed[0]
    return _fact(
        "proof",
        f"{len(failed)} of {len(proofs)} entries NOT proven; #{first.index}: "
        f"{first.problem}",
        "bold red",
    )


def _context(context: Any) -> str:
    if not context:
        return ""
    parts = [
        f"{key}={value if isinstance(value, str) else orjson.dumps(value).decode()}"
        for key, value in sorted(context.items())
    ]
    return "  " + " ".join(parts)


def _when(stamp: str | None) -> str:
    if not stamp:
        return "-"
    return f"{stamp[:10]} {stamp[11:19]}"


def _at(index: int | None) -> str:
    return f" (#{index})" if index is not None else ""


def _quoted(text: str | None) -> str:
    return f'"{text}"' if text is not None else "-"
