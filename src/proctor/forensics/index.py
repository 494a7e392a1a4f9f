"""The entry index: a projection of the ledger into one SQL table, kept beside the
entries in the same database, so ``find`` and ``trace`` answer from indexes.

It is derived, not append-only: a watermark says how many entries it has folded in,
each query first catches up from there, and ``rebuild`` drops it and folds every
entry again. A row holds what the searches filter on; the entry itself is always
read back from the ledger.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol, runtime_checkable

from proctor import kinds
from proctor.errors import EntryError, StoreError, VerifyError
from proctor.ledger import entries
from proctor.storage.interface import ProjectionStore, ProjectionWriter, Store

log = logging.getLogger(__name__)

VERSION = 3
"""Bump when a row's columns or meaning change: an older index is rebuilt."""
TABLE = "entry_index"
STATE = "entry_index_state"
ACTIONS = "entry_index_actions"
ENTRIES = "entries"
CHUNK = 5000
"""Entries folded per transaction while catching up."""
BULK = 50_000
"""A backlog this large on an empty index is loaded before its indexes are built."""
IN_LIST = 500
"""Values bound per ``IN (...)`` list; longer lists are queried in parts."""

COLUMNS = (
    "idx",
    "time_us",
    "type",
    "task",
    "agent",
    "initiator",
    "action",
    "outcome",
    "breach",
    "approval",
    "amount",
    "refers",
)
"""The row of one entry. ``initiator`` is the task's user (``user`` is reserved in
PostgreSQL); ``refers`` is the entry this one is about: the decision of a completion,
a breach or an approval request, the breach of a quarantine."""
ACTION = COLUMNS.index("action")

_SECONDARY = (
    ("entry_index_task", "task, idx", ""),
    ("entry_index_action", "action, idx", ""),
    ("entry_index_action_amount", "action, amount", ""),
    ("entry_index_agent", "agent, idx", ""),
    ("entry_index_user", "initiator, idx", ""),
    ("entry_index_type", "type, idx", ""),
    ("entry_index_outcome", "outcome, idx", ""),
    ("entry_index_time", "time_us, idx", ""),
    ("entry_index_amount", "amount", " WHERE amount IS NOT NULL"),
    ("entry_index_approval", "approval", " WHERE approval IS NOT NULL"),
    ("entry_index_refers", "refers", " WHERE refers IS NOT NULL"),
    ("entry_index_breach", "breach, idx", " WHERE breach = 1"),
)

_REFERS_DECISION = frozenset(
    {kinds.CALL_COMPLETED, kinds.BREACH, kinds.APPROVAL_REQUESTED}
)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


@runtime_checkable
class HasProjections(Protocol):
    """A store that offers SQL for projections (both of Proctor's stores do)."""

    def projections(self) -> ProjectionStore: ...


@dataclass(frozen=True)
class _Dialect:
    marker: str
    integer: str
    key: str
    lock: str | None
    steered: bool
    """Whether searches must steer the planner: SQLite keeps no statistics of
    values (without stat4), so it cannot tell a narrow range from a wide one."""

    @classmethod
    def of(cls, name: str) -> _Dialect:
        if name == "sqlite":
            # INTEGER PRIMARY KEY makes idx the rowid: joins and ranges need no index.
            return cls("?", "INTEGER", "INTEGER PRIMARY KEY", None, steered=True)
        if name == "postgresql":
            return cls(
                "%s",
                "BIGINT",
                "BIGINT PRIMARY KEY",
                "SELECT pg_advisory_xact_lock(hashtext(%s))",
                steered=False,
            )
        raise StoreError(f"no entry index for a {name!r} database")


def micros(stamp: str) -> int:
    """Return an entry's RFC 3339 time as microseconds since the epoch."""
    moment = datetime.fromisoformat(stamp)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)

    return (moment - _EPOCH) // _MICROSECOND


def index_row(entry: Mapping[str, Any], floor: int = 0) -> tuple[object, ...]:
    """Return the index row of one decoded entry, in the order of COLUMNS.

    ``floor`` is the time of the entry before it: a row's time never goes back, so
    time ranges resolve to index ranges exactly (an entry from a writer whose clock
    lagged is searched at the time of the entry before it). Raises EntryError when
    the entry has no readable time, which no writer of Proctor's leaves.
    """
    kind = str(entry.get("type"))
    refers = None
    if kind in _REFERS_DECISION:
        refers = _integer(entry.get("decision"))
    elif kind == kinds.TASK_QUARANTINED:
        refers = _integer(entry.get("breach"))
    context = entry.get("context")
    amount = _integer(context.get("amount")) if isinstance(context, dict) else None
    breach = kind == kinds.BREACH or (
        kind == kinds.DECISION and entry.get("breach") is True
    )

    return (
        int(entry["index"]),
        max(floor, _time(entry)),
        kind,
        _text(entry.get("task")),
        _text(entry.get("agent")),
        _text(entry.get("user")),
        _text(entry.get("action")),
        _text(entry.get("outcome")) if kind == kinds.DECISION else None,
        1 if breach else 0,
        _text(entry.get("approval")),
        amount,
        refers,
    )


def _time(entry: Mapping[str, Any]) -> int:
    stamp = entry.get("time")
    try:
        return micros(str(stamp))
    except (ValueError, OverflowError) as exc:
        raise EntryError(
            f"entry {entry.get('index')} has no readable time: {str(stamp)[:40]!r}"
        ) from exc


def _integer(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


Rows = list[tuple[int, bytes]]
"""Entries as ``(index, canonical bytes)``."""


class Index:
    """The entry index of one ledger, in the ledger's own database."""

    def __init__(self, projections: ProjectionStore) -> None:
        self.sql = projections
        self.dialect = _Dialect.of(projections.dialect)
        self._table = projections.table(TABLE)
        self._state = projections.table(STATE)
        self._actions_table = projections.table(ACTIONS)
        self._entries = projections.table(ENTRIES)
        self._lock_key = f"proctor projection {self._table}"
        self._ready = False
        self._indexed = False
        self._known_actions: set[str] = set()

    @classmethod
    def of(cls, store: Store) -> Index:
        """Return the index of ``store``; raises StoreError when it has no SQL."""
        if not isinstance(store, HasProjections):
            raise StoreError(
                f"a {type(store).__name__} offers no sql for the entry index"
            )
        return cls(store.projections())

    @property
    def marker(self) -> str:
        """The parameter marker of this database's SQL."""
        return self.dialect.marker

    @property
    def steered(self) -> bool:
        """Whether searches steer this database's planner (see ``_Dialect``)."""
        return self.dialect.steered

    # Keeping up with the ledger.

    def applied(self) -> int:
        """Return how many entries the index holds (0 before it exists)."""
        self._ensure()
        rows = self.sql.query(f"SELECT applied FROM {self._state}")  # noqa: S608

        return int(rows[0][0]) if rows else 0

    def catch_up(self, store: Store) -> int:
        """Fold in every entry appended since the last catch-up; return how many.

        Raises StoreError when the database fails and EntryError for an entry that
        is not a JSON object or has no readable time.
        """
        self._ensure()
        size, applied = store.size(), self.applied()
        if applied > size:
            log.warning(
                "entry index ahead of its ledger applied=%d size=%d", applied, size
            )
            return self.rebuild(store)
        bulk = applied == 0 and size >= BULK
        if bulk:
            self._drop_secondary()
        added = 0
        while applied < size:
            end = min(size, applied + CHUNK)
            floor = self._time_before(applied)
            rows = []
            for data in store.entries(applied, end):
                entry = entries.decode(data)
                rows.append(index_row(entry, floor))
                floor = max(floor, _time(entry))
            applied, written = self._write(rows, applied, end)
            added += written
        self._build_secondary(analyze=bulk)
        if added:
            log.info("entry index caught up added=%d applied=%d", added, applied)

        return added

    def _time_before(self, index: int) -> int:
        if index == 0:
            return 0
        rows = self.sql.query(
            f"SELECT time_us FROM {self._table} WHERE idx = {self.marker}",  # noqa: S608
            [index - 1],
        )
        return int(rows[0][0]) if rows else 0

    def time_clauses(
        self, since: int | None, until: int | None
    ) -> tuple[list[str], list[object]]:
        """Clauses over the row alias ``i`` for entries in ``[since, until]``
        (microseconds), as index ranges: row times never go back, so the first row
        at or after ``since`` and the last at or before ``until`` bound the range,
        each found by one seek on the time index."""
        m = self.marker
        clauses: list[str] = []
        bound: list[object] = []
        if since is not None:
            clauses.append(
                f"i.idx >= (SELECT t.idx FROM {self._table} AS t "  # noqa: S608
                f"WHERE t.time_us >= {m} ORDER BY t.time_us, t.idx LIMIT 1)"
            )
            bound.append(since)
        if until is not None:
            clauses.append(
                f"i.idx <= (SELECT t.idx FROM {self._table} AS t "  # noqa: S608
                f"WHERE t.time_us <= {m} ORDER BY t.time_us DESC, t.idx DESC LIMIT 1)"
            )
            bound.append(until)

        return clauses, bound

    def rebuild(self, store: Store) -> int:
        """Drop the index and fold every entry again; return how many."""
        with self.sql.transaction() as tx:
            self._lock(tx)
            for name in (TABLE, STATE, ACTIONS):
                tx.execute(f"DROP TABLE IF EXISTS {self.sql.table(name)}")
        self._ready = self._indexed = False
        self._known_actions.clear()

        return self.catch_up(store)

    def _ensure(self) -> None:
        if self._ready:
            return
        # Reading first keeps a caught-up index free of write transactions, so a
        # search costs no lock and works where writes are not allowed.
        state = self._read_state()
        if state is None:
            with self.sql.transaction() as tx:
                self._lock(tx)
                self._create(tx)
                self._start(tx)
            state = self._read_state() or (VERSION, False)
        self._indexed = state[1]
        self._ready = True

    def _read_state(self) -> tuple[int, bool] | None:
        """The index's version and whether its secondary indexes are built, or None
        when it does not exist yet or was written by another version."""
        try:
            rows = self.sql.query(
                f"SELECT version, indexed FROM {self._state}"  # noqa: S608
            )
        except StoreError:
            return None
        if not rows or int(rows[0][0]) != VERSION:
            return None

        return int(rows[0][0]), bool(rows[0][1])

    def _start(self, tx: ProjectionWriter) -> None:
        rows = tx.execute(f"SELECT version FROM {self._state}")  # noqa: S608
        if rows and int(rows[0][0]) == VERSION:
            return
        if rows:
            log.info("entry index is version %s, rebuilding as %d", rows[0][0], VERSION)
        # Another version's rows, or rows whose state was lost: fold every entry
        # again (on a new index the tables are empty and this costs nothing).
        for name in (TABLE, STATE, ACTIONS):
            tx.execute(f"DROP TABLE IF EXISTS {self.sql.table(name)}")
        self._create(tx)
        tx.execute(
            f"INSERT INTO {self._state} (one, version, applied, indexed) "  # noqa: S608
            f"VALUES (1, {self.marker}, 0, 0)",
            [VERSION],
        )

    def _create(self, tx: ProjectionWriter) -> None:
        d = self.dialect
        tx.execute(
            f"""CREATE TABLE IF NOT EXISTS {self._table} (
                idx {d.key}, time_us {d.integer} NOT NULL, type TEXT NOT NULL,
                task TEXT, agent TEXT, initiator TEXT, action TEXT, outcome TEXT,
                breach {d.integer} NOT NULL, approval TEXT, amount {d.integer},
                refers {d.integer})"""
        )
        tx.execute(
            f"""CREATE TABLE IF NOT EXISTS {self._state} (
                one {d.integer} PRIMARY KEY CHECK (one = 1),
                version {d.integer} NOT NULL, applied {d.integer} NOT NULL,
                indexed {d.integer} NOT NULL)"""
        )
        tx.execute(
            f"CREATE TABLE IF NOT EXISTS {self._actions_table} "
            "(action TEXT PRIMARY KEY)"
        )

    def _lock(self, tx: ProjectionWriter) -> None:
        # PostgreSQL: one index writer at a time across replicas; SQLite's BEGIN
        # IMMEDIATE already serialises writers.
        if self.dialect.lock is not None:
            tx.execute(self.dialect.lock, [self._lock_key])

    def _write(
        self, rows: list[tuple[object, ...]], start: int, end: int
    ) -> tuple[int, int]:
        new = {str(row[6]) for row in rows if row[6] is not None} - self._known_actions
        m = self.marker
        with self.sql.transaction() as tx:
            self._lock(tx)
            current = int(tx.execute(f"SELECT applied FROM {self._state}")[0][0])  # noqa: S608
            if current != start:
                # Another process folded these in meanwhile: go on from where it is.
                return current, 0
            tx.insert(self._table, COLUMNS, rows)
            for action in sorted(new):
                tx.execute(
                    f"INSERT INTO {self._actions_table} (action) VALUES ({m}) "  # noqa: S608
                    "ON CONFLICT DO NOTHING",
                    [action],
                )
            tx.execute(f"UPDATE {self._state} SET applied = {m}", [end])  # noqa: S608
        self._known_actions |= new

        return end, len(rows)

    def _drop_secondary(self) -> None:
        with self.sql.transaction() as tx:
            self._lock(tx)
            for name, _, _ in _SECONDARY:
                tx.execute(f"DROP INDEX IF EXISTS {self.sql.table(name)}")
            tx.execute(f"UPDATE {self._state} SET indexed = 0")  # noqa: S608
        self._indexed = False

    def _build_secondary(self, *, analyze: bool) -> None:
        if self._indexed:
            return
        with self.sql.transaction() as tx:
            self._lock(tx)
            for name, columns, where in _SECONDARY:
                tx.execute(
                    f'CREATE INDEX IF NOT EXISTS "{name}" '
                    f"ON {self._table} ({columns}){where}"
                )
            if analyze:
                # Fresh statistics let the planner pick the narrowest index.
                tx.execute(f"ANALYZE {self._table}")
            tx.execute(f"UPDATE {self._state} SET indexed = 1")  # noqa: S608
        self._indexed = True

    # Checking.

    def exists(self) -> bool:
        """Tell whether this database holds an entry index of this version."""
        return self._read_state() is not None

    def check(self, store: Store) -> int:
        """Compare every row with the one its entry gives; return how many agree.

        The index is a projection that anyone able to write the database could
        edit, and searches answer from it, so a verification covers it too.
        Raises VerifyError naming the first entry whose row is missing, changed or
        extra.
        """
        applied = self.applied()
        if applied > store.size():
            raise VerifyError(
                f"the entry index claims {applied} entries; the ledger holds "
                f"{store.size()}",
                index=store.size(),
            )
        floor = 0
        seen: dict[str, int] = {}
        for start in range(0, applied, CHUNK):
            end = min(applied, start + CHUNK)
            stored = self._rows(start, end)
            for index, data in enumerate(store.entries(start, end), start):
                row, floor = _expected(index, data, floor)
                _compare(index, row, stored.pop(index, None))
                if row[ACTION] is not None:
                    seen.setdefault(str(row[ACTION]), index)
            _refuse_extra(stored)
        # A catch-up may have committed since: its rows are new, not forged; every
        # row past what the index now says it holds is, and so is any below 0.
        _refuse_extra(self._outside(max(applied, self.applied())))
        _compare_actions(seen, self.actions())

        return applied

    def orphaned(self) -> bool:
        """Tell whether rows of an index are here without the state that says how
        many entries they cover: Proctor writes both in one transaction, so only an
        edit of the database leaves the one without the other."""
        try:
            self.sql.query(f"SELECT idx FROM {self._table} LIMIT 1")  # noqa: S608
        except StoreError:
            return False
        try:
            return not self.sql.query(f"SELECT version FROM {self._state}")  # noqa: S608
        except StoreError:
            return True

    def _rows(self, start: int, end: int) -> dict[int, tuple[object, ...]]:
        m = self.marker
        clause = f"idx >= {m} AND idx < {m}"

        return self._select_rows(clause, [start, end])

    def _outside(self, end: int) -> dict[int, tuple[object, ...]]:
        m = self.marker

        return self._select_rows(f"idx < 0 OR idx >= {m}", [end])

    def _select_rows(
        self, clause: str, bound: list[object]
    ) -> dict[int, tuple[object, ...]]:
        statement = f"SELECT {', '.join(COLUMNS)} FROM {self._table} WHERE {clause}"  # noqa: S608

        return {int(row[0]): tuple(row) for row in self.sql.query(statement, bound)}

    # Reading.

    def select(
        self,
        where: str,
        parameters: Sequence[object],
        *,
        limit: int,
        before: int | None = None,
        after: int | None = None,
        descending: bool = True,
    ) -> Rows:
        """Return up to ``limit`` entries whose rows match ``where``, newest first.

        ``where`` is SQL over the row alias ``i`` with the dialect's markers for
        ``parameters``; ``before``/``after`` page by entry index.
        """
        m = self.marker
        clauses, bound = [f"({where})" if where else "1 = 1"], list(parameters)
        if before is not None:
            clauses.append(f"i.idx < {m}")
            bound.append(before)
        if after is not None:
            clauses.append(f"i.idx > {m}")
            bound.append(after)
        order = "DESC" if descending else "ASC"
        bound.append(limit)
        # The rows are chosen first and only then joined with their entries, so no
        # plan reads entries it will not return.
        statement = (
            f"SELECT p.idx, e.body FROM (SELECT i.idx FROM {self._table} AS i "  # noqa: S608
            f"WHERE {' AND '.join(clauses)} ORDER BY i.idx {order} LIMIT {m}) AS p "
            f"JOIN {self._entries} AS e ON e.idx = p.idx ORDER BY p.idx {order}"
        )

        return [
            (int(idx), bytes(body)) for idx, body in self.sql.query(statement, bound)
        ]

    def ids(self, where: str, parameters: Sequence[object], *, limit: int) -> list[int]:
        """Return up to ``limit`` entry indexes whose rows match, in no order.

        Without an order the database is free to use its narrowest index, so a
        search learns cheaply whether few rows match.
        """
        statement = (
            f"SELECT i.idx FROM {self._table} AS i "  # noqa: S608
            f"WHERE {where or '1 = 1'} LIMIT {self.marker}"
        )

        return [int(row[0]) for row in self.sql.query(statement, [*parameters, limit])]

    def task(self, task: str) -> Rows:
        """Return every entry that names ``task``, in ledger order."""
        m = self.marker
        statement = (
            f"SELECT i.idx, e.body FROM {self._table} AS i "  # noqa: S608
            f"JOIN {self._entries} AS e ON e.idx = i.idx "
            f"WHERE i.task = {m} ORDER BY i.idx"
        )

        return [
            (int(idx), bytes(body)) for idx, body in self.sql.query(statement, [task])
        ]

    def related(self, decisions: Iterable[int], approvals: Iterable[str]) -> Rows:
        """Return the entries about these decisions (or breaches) and approvals.

        That is every completion, breach, approval request and quarantine whose
        ``refers`` is one of ``decisions``, and every entry naming one of
        ``approvals``, in ledger order without repeats.
        """
        found: dict[int, bytes] = {}
        for column, values in (
            ("refers", sorted(set(decisions))),
            ("approval", sorted(set(approvals))),
        ):
            for part in _parts(values):
                markers = ", ".join(self.marker for _ in part)
                statement = (
                    f"SELECT i.idx, e.body FROM {self._table} AS i "  # noqa: S608
                    f"JOIN {self._entries} AS e ON e.idx = i.idx "
                    f"WHERE i.{column} IN ({markers})"
                )
                for idx, body in self.sql.query(statement, part):
                    found[int(idx)] = bytes(body)

        return sorted(found.items())

    def bodies(self, indexes: Iterable[int]) -> dict[int, bytes]:
        """Return the entries at ``indexes`` (those that exist) from the ledger."""
        found: dict[int, bytes] = {}
        for part in _parts(sorted(set(indexes))):
            markers = ", ".join(self.marker for _ in part)
            statement = (
                f"SELECT idx, body FROM {self._entries} "  # noqa: S608
                f"WHERE idx IN ({markers})"
            )
            for idx, body in self.sql.query(statement, part):
                found[int(idx)] = bytes(body)

        return found

    def activity(
        self, start: int, end: int, width: int, agent: str | None
    ) -> list[tuple[int, str | None, str | None, int]]:
        """Count decisions in ``[start, end]`` (microseconds) per bucket of ``width``
        microseconds, agent and outcome: ``(bucket number, agent, outcome, count)``.
        """
        m = self.marker
        bound: list[object] = [width, kinds.DECISION, start, end]
        chosen = ""
        if agent is not None:
            chosen = f" AND agent = {m}"
            bound.append(agent)
        statement = (
            f"SELECT time_us / {m} AS bucket, agent, outcome, count(*) "  # noqa: S608
            f"FROM {self._table} WHERE type = {m} AND time_us >= {m} "
            f"AND time_us <= {m}{chosen} GROUP BY bucket, agent, outcome "
            "ORDER BY bucket, agent, outcome"
        )

        return [
            (int(bucket), who, outcome, int(count))
            for bucket, who, outcome, count in self.sql.query(statement, bound)
        ]

    def actions(self) -> list[str]:
        """Return every action uid the ledger has seen, sorted."""
        statement = f"SELECT action FROM {self._actions_table} ORDER BY action"  # noqa: S608

        return [str(row[0]) for row in self.sql.query(statement)]


def check_index(store: Store) -> int | None:
    """Check the entry index of ``store`` when one was built (see Index.check);
    return how many rows agree, or None when there is none. Raises VerifyError."""
    if not isinstance(store, HasProjections):
        return None
    index = Index(store.projections())
    if not index.exists():
        if index.orphaned():
            raise VerifyError(
                "the entry index holds rows without the state that says how many "
                "entries they cover, so it was edited; the next search rebuilds it"
            )
        return None

    return index.check(store)


def _expected(index: int, data: bytes, floor: int) -> tuple[tuple[object, ...], int]:
    """The row entry ``index`` gives, and the floor of the entry after it."""
    try:
        entry = entries.decode(data)
        return index_row(entry, floor), max(floor, _time(entry))
    except EntryError as exc:
        raise VerifyError(
            f"entry {index} cannot be indexed, so searches cannot find it: {exc}",
            index=index,
        ) from exc


def _compare(
    index: int, expected: tuple[object, ...], found: tuple[object, ...] | None
) -> None:
    if found == expected:
        return
    if found is None:
        problem = "is missing, so searches cannot find that entry"
    else:
        changed = [
            column
            for column, want, have in zip(COLUMNS, expected, found, strict=True)
            if want != have
        ]
        problem = f"was changed ({', '.join(changed)}), so searches misreport it"
    raise VerifyError(f"the entry index's row for entry {index} {problem}", index=index)


def _compare_actions(seen: Mapping[str, int], listed: Sequence[str]) -> None:
    # Searches by an action's short name look it up in the list of actions first:
    # one missing from it hides every entry of that action.
    missing = sorted(set(seen) - set(listed), key=seen.__getitem__)
    if missing:
        index = seen[missing[0]]
        raise VerifyError(
            f"the entry index's list of actions lacks {missing[0]}, first named by "
            f"entry {index}, so searches by its name cannot find it",
            index=index,
        )
    extra = sorted(set(listed) - set(seen))
    if extra:
        raise VerifyError(
            f"the entry index's list of actions names {extra[0]}, which no "
            "indexed entry gives"
        )


def _refuse_extra(rows: Mapping[int, tuple[object, ...]]) -> None:
    if rows:
        index = min(rows)
        raise VerifyError(
            f"the entry index holds a row for entry {index} that no entry gives",
            index=index,
        )


def _parts(values: Sequence[Any]) -> list[list[Any]]:
    return [list(values[at : at + IN_LIST]) for at in range(0, len(values), IN_LIST)]
