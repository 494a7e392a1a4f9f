"""Forensics benchmarks: ``find`` and ``trace`` on a 1,000,000-entry ledger shaped
like the gateway's (decisions with their reasoning, approvals, outcomes and breaches
across 2,000 tasks), after the entry index has caught up; and the one-time build of
that index from nothing.

Target (from the forensics issue): ``find`` and ``trace`` under 200 ms each.
"""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bench.report import OUT, Table, percentile, record
from bench.stores import PG_URL, drop_schema, postgres_reachable, postgres_version
from proctor import kinds
from proctor.forensics import Forensics, Query, build_query
from proctor.forensics.index import Index
from proctor.home import Home, init
from proctor.ledger import entries, merkle
from proctor.ledger.checkpoint import Checkpoint, sign_checkpoint
from proctor.ledger.note import Signer, Verifier
from proctor.storage.interface import Batch, Store, StoredCheckpoint
from proctor.storage.postgres import PostgresStore
from proctor.storage.sqlite import SqliteStore

SIZE = 1_000_000
TASKS = 2_000
ACTIVE = 40
"""Tasks running at once; each runs for about SIZE / TASKS entries."""
AGENTS = 40
USERS = 300
ORIGIN = "bench.proctor.test/forensics"
FORMAT = "v1"
"""Bump when the generated entries change, so cached ledgers are built again."""
START = datetime(2026, 11, 1, tzinfo=UTC)
SPAN = timedelta(days=30)
CHECKPOINT_EVERY = 1000
REPEATS = 20
CLI_REPEATS = 5
TARGET_MS = 200.0
PAY = 'Payments::Action::"CreatePayment"'
ACTIONS = (
    (PAY, 'Payments::Account::"ops"', 25),
    ('Payments::Action::"ReadInvoice"', 'Payments::Invoice::"inv"', 30),
    ('Payments::Action::"ListInvoices"', 'Payments::Account::"ops"', 15),
    ('Crm::Action::"ReadContact"', 'Crm::Contact::"c"', 10),
    ('Crm::Action::"UpdateContact"', 'Crm::Contact::"c"', 5),
    ('mcp::git::Action::"git_log"', 'mcp::git::Repository::"srv"', 10),
    ('mcp::git::Action::"git_commit"', 'mcp::git::Repository::"srv"', 5),
)
VENDORS = ("acme", "globex", "initech", "umbrella", "hooli", "stark")
POLICY_SET = "5e" * 32


# Building a ledger shaped like the gateway's.


@dataclass
class _Task:
    id: str
    user: str
    agent: str
    opened: int
    approved: int
    budget: int
    reasoning: list[int] = field(default_factory=list)


class Writer:
    """Turns (type, fields) into batches of valid entries, each with its checkpoint."""

    def __init__(self, store: Store, signer: Signer, size: int) -> None:
        self.store, self.signer, self.size = store, signer, size
        self.edge = merkle.CompactRange()
        self.rows: list[bytes] = []
        self.nodes: list[tuple[int, int, bytes]] = []
        self.start = 0

    @property
    def next(self) -> int:
        return self.edge.size

    def add(self, kind: str, fields: dict[str, Any]) -> int:
        index = self.edge.size
        moment = START + SPAN * (index / self.size)
        data = entries.encode(
            index, moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ"), kind, fields
        )
        self.rows.append(data)
        self.nodes.extend(self.edge.append(merkle.leaf_hash(data)))
        if len(self.rows) == CHECKPOINT_EVERY:
            self.flush()
        return index

    def flush(self) -> None:
        if not self.rows:
            return
        self.store.append(Batch(self.start, self.rows, self.nodes))
        end = self.edge.size
        note = sign_checkpoint(Checkpoint(ORIGIN, end, self.edge.root()), self.signer)
        self.store.add_checkpoint(StoredCheckpoint(end, note))
        self.start, self.rows, self.nodes = end, [], []
        if end % 100_000 == 0:
            print(f"  built {end:,} of {self.size:,} entries", file=sys.stderr)


def build(store: Store, signer: Signer, size: int) -> None:
    """Fill an empty store with ``size`` entries of tasks, calls and their stories."""
    rng = random.Random(size)
    out = Writer(store, signer, size)
    out.add(
        kinds.POLICY_PUBLISHED,
        {"digest": POLICY_SET, "files": {"org.cedar": "forbid(...);"}, "by": "bench"},
    )
    per_task = size // TASKS
    active: list[_Task] = []
    opened = 0
    while out.next < size:
        while len(active) < ACTIVE and opened < TASKS:
            active.append(_open(out, rng, opened, per_task))
            opened += 1
        if not active:
            active.append(_open(out, rng, opened, per_task))
            opened += 1
        task = rng.choice(active)
        if not _step(out, rng, task) or task.budget <= 0:
            if task.budget <= 0:
                out.add(
                    kinds.TASK_CLOSED,
                    {"task": task.id, "by": "bench", "reason": "done"},
                )
            active.remove(task)
    out.flush()


def _open(out: Writer, rng: random.Random, number: int, per_task: int) -> _Task:
    task_id = f"tsk_{number:016x}"
    user = f"user-{rng.randrange(USERS):03d}@example.com"
    agent = f"agent-{rng.randrange(AGENTS):02d}"
    opened = out.add(
        kinds.TASK_OPENED,
        {
            "task": task_id,
            "user": user,
            "agent": agent,
            "request": f"Handle the invoices of batch {number}",
            "scope": {
                "format": "toml",
                "text": "[[allow]]",
                "cedar": "permit(...);",
                "digest": "5c" * 32,
                "actions": [a for a, _, _ in ACTIONS[:3]],
            },
            "expires": "2999-01-01T00:00:00.000000Z",
            "approval": {"roles": ["controller"], "policies": ["org-scope"]},
            "policy_set": POLICY_SET,
            "by": "bench",
        },
    )
    approved = out.add(
        kinds.TASK_APPROVED,
        {
            "task": task_id,
            "approver": "controller@example.com",
            "role": "controller",
            "reason": "fits",
            "scope_digest": "5c" * 32,
        },
    )
    out.add(
        kinds.TOKEN_ISSUED,
        {
            "task": task_id,
            "jti": f"{number:032x}",
            "agent": agent,
            "user": user,
            "expires": "2999-01-01T00:00:00.000000Z",
            "by": "bench",
        },
    )
    budget = rng.randint(per_task // 2, per_task * 3 // 2)

    return _Task(task_id, user, agent, opened, approved, budget)


def _step(out: Writer, rng: random.Random, task: _Task) -> bool:
    """Write one event of the task; False when the task ended with a breach."""
    before = out.next
    roll = rng.random()
    if roll < 0.2:
        task.reasoning.append(
            out.add(
                kinds.REASONING,
                {
                    "task": task.id,
                    "agent": task.agent,
                    "text": f"step {before}: the next invoice is due",
                    "source": "api",
                },
            )
        )
    else:
        action, resource = _action(rng)
        context = _context(rng, action)
        if roll < 0.2005:
            _breach(out, task, context)
            return False
        if roll < 0.26 and action == PAY:
            _approved_call(
                out, rng, task, action=action, resource=resource, context=context
            )
        elif roll < 0.31:
            _call(out, task, action, resource, context, outcome="deny")
        else:
            _call(out, task, action, resource, context, outcome="allow")
    task.budget -= out.next - before

    return True


def _action(rng: random.Random) -> tuple[str, str]:
    action, resource, _ = rng.choices(ACTIONS, weights=[w for _, _, w in ACTIONS])[0]
    return action, resource


def _context(rng: random.Random, action: str) -> dict[str, Any]:
    if action != PAY:
        return {"id": f"r-{rng.randrange(10_000)}"}
    # Amounts in cents, most small, a long tail of large transfers.
    amount = int(10 ** rng.uniform(2, 7))
    return {"amount": amount, "vendor": rng.choice(VENDORS), "currency": "EUR"}


def _decision(
    task: _Task, action: str, resource: str, context: dict[str, Any], **fields: Any
) -> dict[str, Any]:
    body = dict(context)
    decision = {
        "task": task.id,
        "agent": task.agent,
        "user": task.user,
        "task_opened": task.opened,
        "scope": "5c" * 32,
        "scope_approved": task.approved,
        "scope_approver": "controller@example.com",
        "door": "http",
        "target": action.split("::", maxsplit=1)[0].lower(),
        "action": action,
        "resource": resource,
        "context": context,
        "request": {
            "method": "POST",
            "path": "/v1/" + action.rsplit('"', 2)[-2].lower(),
            "query": [],
            "headers": {
                "content-type": "application/json",
                "user-agent": f"{task.agent}/1.4",
            },
            "body": body,
        },
        "request_digest": hashlib.sha256(f"{task.id}/{body}".encode()).hexdigest(),
        "credential": "finance-api-key",
        "outcome": "allow",
        "reason": "allowed by scope:pay",
        "policies": ["scope:pay"],
        "policy_set": POLICY_SET,
        "policy_entry": 0,
        "errors": [],
        "breach": False,
        "approval": None,
        "reasoning": list(task.reasoning),
    }
    task.reasoning.clear()
    decision.update(fields)

    return decision


def _call(
    out: Writer,
    task: _Task,
    action: str,
    resource: str,
    context: dict[str, Any],
    *,
    outcome: str,
    approval: str | None = None,
) -> int:
    reason = "allowed by scope:pay" if outcome == "allow" else "no policy permits this"
    index = out.add(
        kinds.DECISION,
        _decision(
            task,
            action,
            resource,
            context,
            outcome=outcome,
            reason=reason,
            approval=approval,
            policies=["scope:pay"] if outcome == "allow" else [],
        ),
    )
    if outcome == "allow":
        out.add(
            kinds.CALL_COMPLETED,
            {
                "task": task.id,
                "decision": index,
                "status": 201,
                "size": 180,
                "digest": "9d" * 32,
                "latency_us": 48_000,
            },
        )

    return index


def _approved_call(
    out: Writer,
    rng: random.Random,
    task: _Task,
    *,
    action: str,
    resource: str,
    context: dict[str, Any],
) -> None:
    approval = f"apr_{out.next:016x}"
    held = out.add(
        kinds.DECISION,
        _decision(
            task,
            action,
            resource,
            context,
            outcome="needs_approval",
            reason="needs approval by controller",
            approval=approval,
        ),
    )
    out.add(
        kinds.APPROVAL_REQUESTED,
        {
            "approval": approval,
            "task": task.id,
            "agent": task.agent,
            "user": task.user,
            "action": action,
            "resource": resource,
            "request_digest": "77" * 32,
            "context": context,
            "roles": ["controller"],
            "policies": ["scope:pay:approval"],
            "reason": "needs approval by controller",
            "expires": "2999-01-01T00:00:00.000000Z",
            "decision": held,
        },
    )
    approver = f"approver-{rng.randrange(12):02d}@example.com"
    if rng.random() < 0.8:
        out.add(
            kinds.APPROVAL_GRANTED,
            {
                "approval": approval,
                "task": task.id,
                "approver": approver,
                "role": "controller",
                "reason": "invoice checked",
                "request_digest": "77" * 32,
            },
        )
        _call(out, task, action, resource, context, outcome="allow", approval=approval)
    else:
        out.add(
            kinds.APPROVAL_DENIED,
            {
                "approval": approval,
                "task": task.id,
                "approver": approver,
                "reason": "wrong account",
            },
        )


def _breach(out: Writer, task: _Task, context: dict[str, Any]) -> None:
    action = 'Payments::Action::"CreateVendor"'
    decision = out.add(
        kinds.DECISION,
        _decision(
            task,
            action,
            'Payments::Account::"ops"',
            context,
            outcome="deny",
            reason="outside the scope",
            policies=["org-no-agent-vendors"],
            breach=True,
        ),
    )
    breach = out.add(
        kinds.BREACH,
        {
            "task": task.id,
            "agent": task.agent,
            "user": task.user,
            "decision": decision,
            "action": action,
            "resource": 'Payments::Account::"ops"',
            "scope": "5c" * 32,
            "scope_entry": task.approved,
            "policies": ["org-no-agent-vendors"],
            "reason": "outside the scope",
            "quarantine": True,
        },
    )
    out.add(
        kinds.TASK_QUARANTINED,
        {"task": task.id, "reason": f"breach at entry {breach}", "breach": breach},
    )


# Cached ledgers.


@dataclass(frozen=True)
class Cached:
    backend: str
    vkey: str
    open: Callable[[], Store]
    where: str
    """The SQLite file, or the PostgreSQL schema."""


def cached_sqlite(size: int) -> Cached:
    """The SQLite forensics ledger of ``size`` entries, built once under bench/out/."""
    path = OUT / f"forensics-{FORMAT}-{size}.db"
    vkey = path.with_suffix(".vkey")
    if not (path.exists() and vkey.exists()):
        print(f"building a {size:,}-entry sqlite ledger in {path}", file=sys.stderr)
        OUT.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".partial")
        for leftover in OUT.glob(partial.name + "*"):
            leftover.unlink()
        signer = Signer.generate(ORIGIN)
        with closing(SqliteStore(partial)) as store:
            build(store, signer, size)
        partial.rename(path)
        vkey.write_text(signer.verifier_key_string() + "\n", encoding="ascii")

    return Cached(
        "sqlite",
        vkey.read_text(encoding="ascii").strip(),
        lambda: SqliteStore(path),
        str(path),
    )


def cached_postgres(size: int) -> Cached:
    """The PostgreSQL forensics ledger of ``size`` entries, in a kept schema."""
    schema = f"proctor_bench_forensics_{FORMAT}_{size}"
    vkey = OUT / f"postgres-{schema}.vkey"

    def opener() -> Store:
        return PostgresStore(PG_URL, schema=schema)

    if vkey.exists():
        with closing(opener()) as store:
            latest = store.latest_checkpoint()
            # The last task's story may run a few entries past ``size``.
            complete = latest is not None and latest.size == store.size() >= size
            if complete:
                return Cached(
                    "postgres",
                    vkey.read_text(encoding="ascii").strip(),
                    opener,
                    schema,
                )
        vkey.unlink()
    print(f"building a {size:,}-entry postgresql ledger in {schema}", file=sys.stderr)
    drop_schema(schema)
    signer = Signer.generate(ORIGIN)
    with closing(opener()) as store:
        build(store, signer, size)
    OUT.mkdir(parents=True, exist_ok=True)
    vkey.write_text(signer.verifier_key_string() + "\n", encoding="ascii")

    return Cached("postgres", signer.verifier_key_string(), opener, schema)


def cached(size: int) -> Iterator[Cached]:
    yield cached_sqlite(size)
    if postgres_reachable() is None:
        yield cached_postgres(size)


# Measuring.


@dataclass(frozen=True)
class Run:
    backend: str
    question: str
    times: list[float]
    results: int

    def row(self) -> list[str]:
        p50 = percentile(self.times, 0.50) * 1000
        worst = max(self.times) * 1000
        return [
            self.backend,
            self.question,
            f"{self.results:,}" if self.results >= 0 else "-",
            f"{p50:.1f}",
            f"{percentile(self.times, 0.95) * 1000:.1f}",
            f"{worst:.1f}",
            f"< {TARGET_MS:g}",
            "yes" if percentile(self.times, 0.95) * 1000 < TARGET_MS else "**no**",
        ]


def timed(call: Callable[[], int], repeats: int = REPEATS) -> tuple[list[float], int]:
    """Time ``call`` after one untimed warm-up; return the times and its last count."""
    count = call()
    times = []
    for _ in range(repeats):
        began = time.perf_counter()
        count = call()
        times.append(time.perf_counter() - began)

    return times, count


def questions(
    forensics: Forensics, rng: random.Random
) -> list[tuple[str, Callable[[], int]]]:
    """The searches and traces to time, as an auditor would type them."""
    end = START + SPAN

    def find(query: Query, *, proofs: bool = False) -> Callable[[], int]:
        return lambda: len(forensics.find(query, proofs=proofs).results)

    table = forensics.index.sql.table("entry_index")
    m = forensics.index.marker
    opened = forensics.index.sql.query(
        f"SELECT task FROM {table} WHERE type = {m}", [kinds.TASK_OPENED]
    )
    tasks = [str(row[0]) for row in rng.sample(opened, REPEATS + 1)]
    traced = iter(tasks * 2)
    decided = forensics.index.sql.query(
        f"SELECT idx FROM {table} WHERE type = {m} AND approval IS NOT NULL",
        [kinds.DECISION],
    )
    explained = iter([int(row[0]) for row in rng.sample(decided, REPEATS + 1)] * 2)

    def trace() -> int:
        return len(forensics.trace(next(traced)).events)

    def explain() -> int:
        return len(forensics.explain(next(explained)).proofs)

    approver = build_query(
        actions=["CreatePayment"], where=["amount>=1000000"], decision="allow", limit=20
    )
    day = (end - timedelta(hours=24)).isoformat()
    first = (START + timedelta(hours=24)).isoformat()
    return [
        (
            "find --action CreatePayment --where amount>=1000000 --decision allow",
            find(approver),
        ),
        ("  the same with --prove", find(approver, proofs=True)),
        (
            "find --action CreatePayment --where amount>=9999000 (rare)",
            find(build_query(actions=["CreatePayment"], where=["amount>=9999000"])),
        ),
        (
            "find --agent agent-07 --decision deny",
            find(build_query(agent="agent-07", decision="deny", limit=20)),
        ),
        (
            "find --user user-123@example.com",
            find(build_query(user="user-123@example.com", limit=20)),
        ),
        ("find --breach", find(build_query(breach=True, limit=20))),
        ("find --since (last 24 h)", find(build_query(since=day, limit=20))),
        ("find --until (first 24 h)", find(build_query(until=first, limit=20))),
        ("find --task T", find(build_query(task=tasks[0], limit=20))),
        (
            "find --action CreatePayment --where vendor=acme (checked per entry)",
            find(
                build_query(actions=["CreatePayment"], where=["vendor=acme"], limit=20)
            ),
        ),
        (
            "find --where vendor=nobody (no match: reads its 10,000 budget)",
            find(build_query(where=["vendor=nobody"], limit=20)),
        ),
        ("trace T (random tasks, ~500 entries each)", trace),
        ("explain ENTRY (a call with an approval, with proofs)", explain),
    ]


def cli_home(ledger: Cached) -> Path:
    """A Proctor home over a cached ledger, for timing the command as people run it."""
    folder = OUT / f"home-{ledger.backend}"
    shutil.rmtree(folder, ignore_errors=True)
    home = init(Home(folder), origin=ORIGIN)
    if ledger.backend == "sqlite":
        for leftover in folder.glob("ledger.db*"):
            leftover.unlink()
        # A hard link: the home's ledger is the cached file itself, not a copy.
        os.link(ledger.where, home.ledger_db)
    else:
        text = home.config_file.read_text(encoding="utf-8")
        table = (
            f'[ledger]\ndatabase_url = "{PG_URL}"\ndatabase_schema = "{ledger.where}"\n'
        )
        home.config_file.write_text(text.replace("[ledger]\n", table, 1))
    home.log_vkey.write_text(ledger.vkey + "\n", encoding="ascii")

    return folder


def cli_runs(ledger: Cached, task: str) -> list[Run]:
    """Wall time of whole ``proctor`` processes, and of importing the CLI alone."""
    folder = str(cli_home(ledger))
    proctor = str(Path(sys.executable).with_name("proctor"))
    commands = {
        "proctor find --action CreatePayment --where amount>=1000000 (process)": [
            proctor,
            "find",
            "--home",
            folder,
            "--action",
            "CreatePayment",
            "--where",
            "amount>=1000000",
            "--decision",
            "allow",
        ],
        "proctor trace T (process)": [proctor, "trace", "--home", folder, task],
        "python -c 'import proctor.cli' (process)": [
            sys.executable,
            "-c",
            "import proctor.cli",
        ],
    }
    runs = []
    for question, command in commands.items():
        print(f"timing: {ledger.backend} {question}", file=sys.stderr)

        def run(command: list[str] = command) -> int:
            subprocess.run(command, check=False, capture_output=True)
            return 1

        times, _ = timed(run, repeats=CLI_REPEATS)
        runs.append(Run(ledger.backend, question, times, -1))

    return runs


def measure(ledger: Cached) -> tuple[float, int, list[Run]]:
    """Build the index from nothing (timed once), then time every question."""
    verifier = Verifier.from_key_string(ledger.vkey)
    with closing(ledger.open()) as store:
        index = Index.of(store)
        print(f"indexing: {ledger.backend}", file=sys.stderr)
        began = time.perf_counter()
        indexed = index.rebuild(store)
        build_seconds = time.perf_counter() - began
        forensics = Forensics(store, verifiers=[verifier], origin=ORIGIN, index=index)
        runs = []
        for question, call in questions(forensics, random.Random(7)):
            print(f"timing: {ledger.backend} {question.strip()}", file=sys.stderr)
            times, count = timed(call)
            runs.append(Run(ledger.backend, question, times, count))
        task = str(forensics.find(build_query(limit=1)).results[0].entry["task"])
    runs.extend(cli_runs(ledger, task))

    return build_seconds, indexed, runs


def bench_forensics() -> None:
    """find and trace on the 1,000,000-entry ledgers, and the index build."""
    load = os.getloadavg()[0]
    builds: list[list[str]] = []
    runs: list[Run] = []
    for ledger in cached(SIZE):
        seconds, indexed, measured = measure(ledger)
        builds.append(
            [
                ledger.backend,
                f"{indexed:,}",
                f"{seconds:.1f}",
                f"{indexed / seconds:,.0f}",
            ]
        )
        runs.extend(measured)
    queries = Table(
        [
            "store",
            "question",
            "results",
            "p50 ms",
            "p95 ms",
            "max ms",
            "target ms",
            "met",
        ],
        [run.row() for run in runs],
    )
    index = Table(["store", "entries", "seconds", "entries/s"], builds)
    body = (
        f"A {SIZE:,}-entry ledger shaped like the gateway's ({TASKS:,} tasks, {AGENTS} "
        f"agents, {USERS} users over 30 days: decisions with reasoning, approvals, "
        "outcomes and breaches), searched through `Forensics` in one process after the "
        "entry index has caught up. Each question runs once untimed, then "
        f"{REPEATS} times; a time includes the index's catch-up check, the search, "
        "reading every entry each story cites, and building the stories (up to 20 "
        "results). Trace and explain times are over random tasks and calls. The "
        "last rows time whole `proctor` processes on a home over the same ledger "
        f"({CLI_REPEATS} runs each), and importing the CLI alone. The machine's "
        f"load average was {load:.1f} when the run began (other work shares it).\n\n"
        + queries.to_markdown()
        + "\nThe process rows are dominated by starting Python and importing the CLI "
        "(the last row): `proctor.cli` imports every command group, the demo and the "
        "server eagerly. The searches themselves take the milliseconds above.\n\n"
        "The one-time index build (from an empty index: rows loaded first, then the "
        "secondary indexes built and analysed); later catch-ups fold in only what was "
        "appended since:\n\n" + index.to_markdown()
    )
    extra = [] if postgres_reachable() else [postgres_version()]
    record("forensics.query", "Forensics: find and trace", body, extra=extra)


BENCHMARKS: dict[str, Callable[[], None]] = {"forensics.query": bench_forensics}


if __name__ == "__main__":
    bench_forensics()
