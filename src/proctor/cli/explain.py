"""``proctor explain``: the story of one decision, read from the ledger alone."""

from __future__ import annotations

from contextlib import closing
from typing import Annotated, Any

import orjson
import typer

from proctor.cli.common import HomeOption, JsonOption, emit_json, locate
from proctor.cli.session import say, usage_error
from proctor.errors import TaskError
from proctor.tasks.explain import WINDOW, Entry, Explanation, explain


def register(app: typer.Typer) -> None:
    app.command("explain")(explain_command)


def explain_command(
    entry: Annotated[
        int,
        typer.Argument(
            metavar="ENTRY",
            help="A decision's entry index (or a breach, call or approval request).",
        ),
    ],
    window: Annotated[
        int,
        typer.Option(help="Entries after the decision read for its outcome.", min=1),
    ] = WINDOW,
    home: HomeOption = None,
    as_json: JsonOption = False,
) -> None:
    """Show who, what, under which scope and policies, approved by whom, and the
    outcome of one decision, from the ledger's entries alone."""
    with closing(locate(home).open_store()) as store:
        try:
            story = explain(store, entry, window=window)
        except TaskError as exc:
            usage_error(str(exc))
    if as_json:
        emit_json(story.to_json())
        return
    for line in describe(story):
        say(line)


def describe(story: Explanation) -> list[str]:
    """Lay out an explanation as labelled lines."""
    decision = story.decision
    outcome = str(decision.get("outcome"))
    if story.breach is not None:
        outcome += f" (breach #{story.breach['index']})"
    lines = [
        f"decision #{decision['index']} at {decision['time']}: {outcome}",
        _row("reason", decision.get("reason")),
        *_task(story),
        *_call(decision),
        _row("policies", ", ".join(decision.get("policies", ())) or "-"),
        _row("policy set", _policy_set(story)),
        *_approval(story),
        _row("outcome", _outcome(story.outcome)),
    ]
    lines += [_row("problem", problem) for problem in story.problems]

    return lines


def _task(story: Explanation) -> list[str]:
    decision, opened, approved = story.decision, story.opened, story.approved
    task = str(decision.get("task"))
    if opened is not None:
        task += f", opened #{opened['index']} at {opened['time']} by {opened.get('by')}"
    scope = str(decision.get("scope"))
    if approved is not None:
        scope += (
            f", approved #{approved['index']} at {approved['time']} by "
            f"{approved.get('approver')} as {approved.get('role')}: "
            f"{_quote(approved.get('reason'))}"
        )
    elif decision.get("scope_approver") is None:
        scope += ", active without an approver"
    lines = [
        _row("task", task),
        _row("user", decision.get("user")),
        _row("agent", decision.get("agent")),
        _row("request", _quote(opened.get("request")) if opened else "-"),
        _row("scope", scope),
    ]
    lines += [
        _row("reasoning", f"#{step['index']} at {step['time']}: {_quote(step['text'])}")
        for step in story.reasoning
    ] or [_row("reasoning", "-")]

    return lines


def _call(decision: Entry) -> list[str]:
    return [
        _row("call", f"{decision.get('door')} {decision.get('target')}"),
        _row("action", f"{decision.get('action')} on {decision.get('resource')}"),
        _row("context", _json(decision.get("context"))),
        _row("as sent", _json(decision.get("request"))),
        _row("digest", decision.get("request_digest")),
        _row("credential", decision.get("credential") or "-"),
    ]


def _policy_set(story: Explanation) -> str:
    text = str(story.decision.get("policy_set"))
    if story.policy is not None:
        text += f" (published #{story.policy['index']} by {story.policy.get('by')})"
    return text


def _approval(story: Explanation) -> list[str]:
    approval_id = story.decision.get("approval")
    if not approval_id:
        return [_row("approval", "-")]
    lines = [_row("approval", approval_id)]
    for step in story.approval:
        what = str(step["type"]).removeprefix("approval.")
        if step["type"] == "approval.requested":
            detail = f"needs {', '.join(step.get('roles', ()))}: {step.get('reason')}"
        else:
            role = f" as {step['role']}" if step.get("role") else ""
            detail = f"by {step.get('approver')}{role}: {_quote(step.get('reason'))}"
        lines.append(_row(f"  {what}", f"#{step['index']} at {step['time']} {detail}"))

    return lines


def _outcome(entry: Entry | None) -> str:
    if entry is None:
        return "no completed call names this decision"
    if entry.get("error"):
        return f"call.completed #{entry['index']}: error {entry['error']}"
    latency = int(entry.get("latency_us") or 0) / 1000
    return (
        f"call.completed #{entry['index']}: status {entry.get('status')}, "
        f"{entry.get('size')} bytes, {latency:.1f} ms"
    )


def _row(label: str, value: Any) -> str:
    return f"{label:<12} {value}"


def _quote(text: object) -> str:
    return orjson.dumps(str(text)).decode()


def _json(value: object) -> str:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()
