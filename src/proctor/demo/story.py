"""The story ``proctor demo`` plays, steps 1 to 4: a user asks for work, a controller
approves its scope, and a scripted agent reads invoices, tries to add a vendor (a
breach) and pays ACME once the controller approves that exact payment. Every step
checks its own outcome; :mod:`proctor.demo.audit` reads the ledger back after."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import orjson

from proctor import kinds
from proctor.demo.agent import Attempt, FinanceAgent
from proctor.demo.scenario import (
    AGENT,
    CONTROLLER,
    CONTROLLER_ROLE,
    CREDENTIAL,
    REQUEST,
    SERVICE,
    USER,
    Scenario,
    prepare,
)
from proctor.demo.servers import Inbox, Served, logs_to
from proctor.demo.steps import SETUP, Step, alert, money, ok, say
from proctor.examples.finance.api import API_KEY_HEADER, create_app
from proctor.files import write_private
from proctor.gateway.headers import ENTRY_HEADER
from proctor.gateway.wire import uvicorn_options
from proctor.home import Home
from proctor.ledger import entries
from proctor.runtime import Runtime
from proctor.serve import build_app
from proctor.tasks.state import ApprovalState, TaskState

WAIT_SECONDS = 5.0
KEYS = "keys"
"""The folder of a demo home holding its people's API keys."""
T = TypeVar("T")


@dataclass
class Stage:
    """Everything one run of the story works with, set up before step 1."""

    home: Home
    runtime: Runtime
    proctor: Served
    finance: Served
    inbox: Inbox
    user: httpx.Client
    controller: httpx.Client
    books: httpx.Client
    """The finance team's own view of their API, with its key, not through Proctor."""

    def entry(self, index: int) -> dict[str, Any]:
        """Read one entry of the ledger."""
        return entries.decode(self.runtime.ledger.store.entry(index))

    def completion(self, decision: int) -> dict[str, Any] | None:
        """Wait for the outcome of an allowed call (recorded after its last byte)."""

        def find() -> dict[str, Any] | None:
            store = self.runtime.ledger.store
            for raw in store.entries(decision + 1):
                found = entries.decode(raw)
                if (
                    found["type"] == kinds.CALL_COMPLETED
                    and found.get("decision") == decision
                ):
                    return found
            return None

        return eventually(find)


@dataclass(frozen=True)
class Paid:
    """What step 4 established: the held call, its approval and the released call."""

    held: int
    approval: str
    granted: int
    released: int
    amount: int
    payment: str


@contextmanager
def set_up(home: Home, scenario: Scenario) -> Iterator[Stage]:
    """Start the alert inbox, the finance API and Proctor over a staged home, and
    stop them all when the block ends."""
    with ExitStack() as stack:
        with Step(SETUP, "a fresh home, the finance API, Proctor"):
            started = _start(stack, home, scenario)
        yield started


def _start(stack: ExitStack, home: Home, scenario: Scenario) -> Stage:
    stack.enter_context(logs_to(home.path / "serve.log"))
    inbox = Inbox()
    inbox_server = stack.enter_context(Served("alert inbox", inbox.app()))
    finance_key = "fin_" + secrets.token_urlsafe(24)
    finance = stack.enter_context(Served("finance API", create_app(finance_key)))
    prepare(
        home, scenario, finance_url=finance.url, alerts_url=f"{inbox_server.url}/alerts"
    )
    runtime = Runtime.open(home)
    stack.callback(runtime.close)
    # Whoever set the home up publishes its policies, not the first user to ask.
    runtime.service.publish_policies(by="demo")
    runtime.secrets.vault.set(CREDENTIAL, finance_key)
    user_key = _add_person(runtime, USER, ["auditor"])
    controller_key = _add_person(runtime, CONTROLLER, ["approver"], [CONTROLLER_ROLE])
    proctor = stack.enter_context(
        Served(
            "Proctor",
            build_app(runtime),
            server_header=False,
            proxy_headers=False,
            **uvicorn_options(),
        )
    )
    clients = [
        _client(proctor.url, {"Authorization": f"Bearer {user_key}"}),
        _client(proctor.url, {"Authorization": f"Bearer {controller_key}"}),
        _client(finance.url, {API_KEY_HEADER: finance_key}),
    ]
    for client in clients:
        stack.callback(client.close)
    _tell_setup(home, proctor, finance)

    return Stage(home, runtime, proctor, finance, inbox, *clients)


def ask(stage: Stage, scenario: Scenario) -> tuple[str, str]:
    """Step 1: the user opens the task, the controller approves its scope; return
    the task id and the agent's task token."""
    with Step(1, "the user asks; a controller approves the scope") as step:
        say(f'{USER} asks: "{REQUEST}"')
        body = {"agent": AGENT, "request": REQUEST, "scope": scenario.scope}
        reply = stage.user.post("/v1/tasks", json=body)
        step.check(reply.status_code == 201, _refused("opening the task", reply))
        opened = reply.json()
        task = opened["task"]
        step.check(task["state"] == TaskState.PENDING, f"the task is {task['state']}")
        step.check(
            task["roles"] == [CONTROLLER_ROLE],
            f"the task waits for {task['roles']}, not a {CONTROLLER_ROLE}",
        )
        policies = stage.entry(opened["entry"])["approval"]["policies"]
        ok(
            f"task {task['id']} opened (#{opened['entry']}), pending: "
            f"{', '.join(policies)} wants a {CONTROLLER_ROLE} for a scope that pays"
        )
        say(f"scope: {', '.join(task['scope']['actions'])}", "dim")

        reason = "Read invoices, pay ACME within the usual limits: fits the request."
        reply = stage.controller.post(
            f"/v1/tasks/{task['id']}/approve", json={"reason": reason}
        )
        step.check(reply.status_code == 200, _refused("approving the scope", reply))
        approved = reply.json()
        step.check(
            approved["task"]["state"] == TaskState.ACTIVE
            and approved["task"]["approver"] == CONTROLLER,
            f"after approval the task is {approved['task']['state']}",
        )
        ok(f"{CONTROLLER} approved the scope (#{approved['entry']}); task active")

        reply = stage.user.post(f"/v1/tasks/{task['id']}/tokens")
        step.check(reply.status_code == 201, _refused("issuing a token", reply))
        token = reply.json()
        ok(
            f"the agent got a task token (#{token['entry']}), valid until "
            f"{token['expires'][:19]}Z; the finance API key stays in Proctor's vault"
        )

        return str(task["id"]), str(token["token"])


def read(stage: Stage, agent: FinanceAgent) -> int:
    """Step 2: the agent reads the invoices; return the decision's entry."""
    with Step(2, "the agent reads the invoices") as step:
        attempt = agent.read_invoices()
        _show(attempt)
        response = attempt.response
        step.check(response.status_code == 200, _refused("reading invoices", response))
        index = _entry_of(step, response)
        decision = stage.entry(index)
        step.check(
            decision["type"] == kinds.DECISION and decision["outcome"] == "allow",
            f"entry #{index} is not an allowing decision",
        )
        step.check(
            attempt.reasoning in decision["reasoning"],
            f"decision #{index} does not cite reasoning #{attempt.reasoning}",
        )
        step.check(decision["credential"] == CREDENTIAL, "no credential was named")
        completion = stage.completion(index)
        step.check(completion is not None, f"no outcome recorded for #{index}")
        ok(
            f"200, allowed by {', '.join(decision['policies'])} (decision #{index}, "
            f"citing reasoning #{attempt.reasoning}; outcome "
            f"#{_index(completion)}); the finance API took the key Proctor added"
        )
        step.check(len(agent.invoices) == 1, "expected one open invoice of ACME")
        for invoice in agent.invoices:
            say(
                f"open: {invoice['id']} {money(invoice['amount'])} "
                f"{invoice['description']}"
            )
            if invoice.get("note"):
                say(f'note: "{invoice["note"]}"', "dim")

        return index


def breach(stage: Stage, agent: FinanceAgent) -> int:
    """Step 3: the agent tries to add a vendor; return the breach's entry."""
    with Step(3, "the agent tries to add a new vendor") as step:
        vendors = _vendors(stage)
        attempt = agent.add_payee()
        _show(attempt)
        response = attempt.response
        step.check(
            response.status_code == 403,
            f"adding a vendor answered {response.status_code}, not 403 denied; "
            f"the finance API now lists {', '.join(_vendors(stage))}",
        )
        index = _entry_of(step, response)
        decision = stage.entry(index)
        step.check(
            decision["outcome"] == "deny" and decision["breach"] is True,
            f"decision #{index} is not flagged as a breach",
        )
        found = response.json().get("breach")
        step.check(isinstance(found, int), "the refusal names no breach entry")
        flagged = stage.entry(found)
        step.check(
            flagged["type"] == kinds.BREACH and flagged["decision"] == index,
            f"entry #{found} is not the breach of decision #{index}",
        )
        forbids = ", ".join(decision["policies"])
        also = f"; {forbids} forbids it too" if forbids else ""
        ok(f"403, denied (decision #{index}): {decision['reason']}{also}")
        ok(f"flagged as a breach at that moment (#{found})")

        alerts = eventually(
            lambda: [a for a in stage.inbox.alerts if a.get("entry") == found] or None
        )
        step.check(alerts is not None, "no breach alert reached the inbox")
        for sent in alerts or ():
            alert(
                f"alert to the security inbox: breach #{sent['entry']}, agent "
                f"{sent['agent']} on task {sent['task']} for {sent['user']}: "
                f"{sent['action']} is outside the scope; quarantine "
                f"{str(sent['quarantine']).lower()}"
            )
        step.check(_vendors(stage) == vendors, "the finance API's vendors changed")
        ok(f"the finance API never saw the call: its vendors are {', '.join(vendors)}")

        state = stage.user.get(f"/v1/tasks/{agent.task}").json()["state"]
        step.check(
            flagged["quarantine"] is False and state == TaskState.ACTIVE,
            f"the task is {state}; the demo needs it active for step 4",
        )
        ok(
            "the task stays active, only because this demo set "
            "quarantine_on_breach = false"
        )

        return int(found)


def pay(stage: Stage, agent: FinanceAgent) -> Paid:
    """Step 4: a payment held for approval, approved by the controller, released."""
    amount = int(agent.invoices[0]["amount"]) if agent.invoices else 0
    with Step(4, f"the agent asks for a {money(amount)} payment to ACME") as step:
        attempt = agent.pay()
        _show(attempt)
        response = attempt.response
        step.check(response.status_code == 428, _refused("the payment", response))
        held = _entry_of(step, response)
        approval = str(response.json()["approval"])
        decision = stage.entry(held)
        step.check(
            decision["outcome"] == "needs_approval"
            and decision["approval"] == approval,
            f"decision #{held} does not hold the call for {approval}",
        )
        ok(f"428, held for approval {approval} (#{held}): {decision['reason']}")

        granted = _approve(step, stage, approval, decision, attempt)
        retry = agent.retry(attempt, approval)
        _show(retry, approval=approval)
        step.check(
            retry.response.status_code == 201, _refused("the retry", retry.response)
        )
        released = _entry_of(step, retry.response)
        allowed = stage.entry(released)
        step.check(
            allowed["outcome"] == "allow"
            and allowed["approval"] == approval
            and allowed["request_digest"] == decision["request_digest"],
            f"decision #{released} is not the approved call",
        )
        completion = stage.completion(released)
        step.check(completion is not None, f"no outcome recorded for #{released}")
        ok(
            f"201, allowed with the {CONTROLLER_ROLE}'s approval (decision "
            f"#{released}, outcome #{_index(completion)})"
        )
        payment = _recorded_payment(step, stage, attempt.body or {})

        return Paid(held, approval, granted, released, amount, payment)


def eventually(probe: Callable[[], T | None]) -> T | None:
    """Return the first answer of ``probe`` that is not None, within a few seconds."""
    deadline = time.monotonic() + WAIT_SECONDS
    while True:
        found = probe()
        if found is not None or time.monotonic() > deadline:
            return found
        time.sleep(0.02)


def _approve(
    step: Step,
    stage: Stage,
    approval: str,
    decision: dict[str, Any],
    attempt: Attempt,
) -> int:
    """The controller reviews the held call through the API, then approves it."""
    shown = stage.controller.get(f"/v1/approvals/{approval}")
    step.check(shown.status_code == 200, _refused("showing the approval", shown))
    waiting = shown.json()
    body = attempt.body or {}
    step.check(
        waiting["state"] == ApprovalState.PENDING
        and waiting["context"].get("amount") == body.get("amount")
        and waiting["request_digest"] == decision["request_digest"],
        f"approval {approval} does not show the held call",
    )
    say(
        f"{CONTROLLER} reviews {approval}: pay {money(body['amount'])} to "
        f"{body['vendor']} for {body['invoice']}, asked at "
        f"#{waiting['entries']['requested']}"
    )
    reason = f"{body['invoice']} matches ACME's March contract; ACME is on file."
    reply = stage.controller.post(
        f"/v1/approvals/{approval}/approve", json={"reason": reason}
    )
    step.check(reply.status_code == 200, _refused("approving the payment", reply))
    answer = reply.json()
    step.check(
        answer["approval"]["state"] == ApprovalState.GRANTED,
        f"approval {approval} is {answer['approval']['state']}",
    )
    ok(
        f"{CONTROLLER} approved it (#{answer['entry']}): it releases this exact "
        f"request (digest {decision['request_digest'][:16]}…), once"
    )

    return int(answer["entry"])


def _recorded_payment(step: Step, stage: Stage, body: dict[str, Any]) -> str:
    """Check on the finance API itself that the payment was made, once."""
    payments = stage.books.get("/payments").json()
    made = [
        payment
        for payment in payments
        if (payment["amount"], payment["vendor"], payment["invoice"])
        == (body.get("amount"), body.get("vendor"), body.get("invoice"))
    ]
    step.check(
        len(made) == 1, f"the finance API holds {len(made)} such payments, not 1"
    )
    ok(
        f"the finance API recorded {made[0]['id']}: {money(made[0]['amount'])} to "
        f"{made[0]['vendor']} for {made[0]['invoice']}"
    )

    return str(made[0]["id"])


def _add_person(
    runtime: Runtime, email: str, roles: list[str], approves: list[str] | None = None
) -> str:
    """Add a person, recorded as ``proctor users add`` records one; return the key,
    also kept in ``keys/<email>.key`` (mode 0600) for the console's sign-in."""
    api_key = runtime.people.add(email, roles, approves or ())
    path = key_file(runtime.home, email)
    path.parent.mkdir(mode=0o700, exist_ok=True)
    write_private(path, f"{api_key}\n".encode())
    person = runtime.people.get(email)
    runtime.ledger.append(
        kinds.PERSON_ADDED,
        {
            "person": person.email,
            "roles": sorted(str(role) for role in person.roles),
            "approves": sorted(person.approves),
            "key_id": person.key_id,
            "by": "demo",
        },
    )

    return api_key


def key_file(home: Home, email: str) -> Path:
    """Where the demo keeps a person's API key in its home."""
    return home.path / KEYS / f"{email}.key"


def _tell_setup(home: Home, proctor: Served, finance: Served) -> None:
    say(f"home     {home.path} (embedded SQLite ledger)")
    say(f"Proctor  {proctor.url}  (API /v1, agents /http/{SERVICE}/...)")
    say(
        f"finance  {finance.url}  (its API key is in Proctor's vault as {CREDENTIAL}; "
        "the agent never holds it)"
    )
    say(f"people   {USER} asks for work; {CONTROLLER} approves as {CONTROLLER_ROLE}")
    say(f"agent    {AGENT}, a script with a plain HTTP client and a task token")
    alert(
        "quarantine_on_breach = false in this home's proctor.toml, so the breach "
        "in step 3 does not stop the task before step 4 (the default quarantines)"
    )


def _show(attempt: Attempt, *, approval: str | None = None) -> None:
    if attempt.reasoning is not None:
        say(f'agent thinks: "{attempt.thought}" (#{attempt.reasoning})', "magenta")
    else:
        say(f'agent notes: "{attempt.thought}"', "magenta")
    sent = f" {orjson.dumps(attempt.body).decode()}" if attempt.body else ""
    query = attempt.response.request.url.query.decode()
    path = f"/http/{SERVICE}{attempt.path}" + (f"?{query}" if query else "")
    header = f"  Proctor-Approval: {approval}" if approval else ""
    say(f"agent → {attempt.method} {path}{sent}{header}", "bold")


def _entry_of(step: Step, response: httpx.Response) -> int:
    value = response.headers.get(ENTRY_HEADER, "")
    step.check(value.isdigit(), f"the answer names no entry ({ENTRY_HEADER}: {value})")
    return int(value)


def _index(entry: dict[str, Any] | None) -> str:
    return str(entry["index"]) if entry else "?"


def _vendors(stage: Stage) -> list[str]:
    return sorted(vendor["id"] for vendor in stage.books.get("/vendors").json())


def _refused(what: str, response: httpx.Response) -> str:
    return f"{what} answered {response.status_code}: {response.text[:300]}"


def _client(base_url: str, headers: dict[str, str]) -> httpx.Client:
    return httpx.Client(base_url=base_url, headers=headers, timeout=30.0)
