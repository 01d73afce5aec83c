"""The batch service's rows: submissions, jobs, quanta, their state changes, QC matches, and the reports.

The tables are defined in `skybutler.registry.schema` (`batch_tables`); `skybutler.batch`
builds the rows and calls these functions, which are the only ones that touch the
batch tables with SQL. States and failure classes are plain strings here (the values of
`skybutler.batch.states`, a layer above this one).

Times are stored as naive UTC, as every time in the registry: an aware datetime is
converted to UTC, a naive one is taken to be UTC already, and reads return naive UTC.

Writes are bulk (`skybutler.registry._bulk`): a submission of 10^5 quanta is one
compiled ``executemany`` per table on SQLite and one ``COPY`` on PostgreSQL, and
`record_states` applies any number of state changes with one bulk update per kind of
row and set of fields plus one bulk insert of events, in one transaction.
"""

from __future__ import annotations

import dataclasses
import datetime
import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

import sqlalchemy as sa

from ..errors import BatchError
from ..model import DataId, new_id
from ._bulk import execute_many, insert_rows, now_utc, update_rows, utc
from .schema import wall_seconds

if TYPE_CHECKING:
    from ._registry import Registry

__all__ = [
    "StateChange",
    "create_submission",
    "delete_submission",
    "events",
    "failures",
    "files_of_type",
    "get_submission",
    "insert_dependencies",
    "insert_jobs",
    "insert_quanta",
    "job_dependencies",
    "jobs",
    "list_submissions",
    "progress",
    "qc_matches",
    "quanta",
    "record_qc",
    "record_states",
    "time_per_task",
]

_CHUNK = 500  # ids per IN list
_LOOKUP = 5000  # ids per IN list of a bulk lookup (well under SQLite's and PostgreSQL's limits on parameters)

Kind = Literal["submission", "job", "quantum"]


@dataclasses.dataclass(frozen=True)
class StateChange:
    """One state change of a submission, a job or a quantum, for `record_states`.

    Parameters
    ----------
    kind
        ``"submission"``, ``"job"`` or ``"quantum"``.
    id
        The submission's, job's or quantum's id.
    state
        The new state (a `skybutler.batch.states.JobState` value).
    time
        When it happened (converted to naive UTC).
    submission_id
        The submission it belongs to (its own id for a submission).
    attempt
        The attempt it happened in; also recorded as the row's current attempt.
    detail
        Free text kept with the event (e.g. the engine's message).
    fields
        Other columns of the row to set with the state, e.g. ``failure_class``,
        ``reason``, ``exit_code``, ``host``, ``start_time``, ``wall_time`` of a job or
        ``execution_id`` of a quantum (``run``, a run name, for a submission).
    """

    kind: Kind
    id: uuid.UUID
    state: str
    time: datetime.datetime
    submission_id: uuid.UUID
    attempt: int | None = None
    detail: str | None = None
    fields: Mapping[str, Any] = dataclasses.field(default_factory=dict)


def _check_width(table: sa.Table, row: Mapping[str, Any], what: str) -> None:
    """Refuse text wider than its column on SQLite too (PostgreSQL would, with a less clear message)."""
    for name, value in row.items():
        length = getattr(table.c[name].type, "length", None)
        if length is not None and isinstance(value, str) and len(value) > length:
            raise BatchError(f"{what}: {name} is {len(value)} characters long, more than the {length} allowed")


def _rows(table: sa.Table, items: Sequence[Mapping[str, Any]], defaults: Mapping[str, Any], what: str,
          ) -> list[dict[str, Any]]:
    """Rows for ``table``: ``defaults`` filled in, times in UTC, too wide text and unknown keys refused.

    Every row gets the same keys (one executemany needs them; a column some rows leave
    out is NULL there). This runs once per row of 10^5: the checks are per column
    kind, not per value.
    """
    keys = set(defaults)
    for item in items:
        keys.update(item)
    unknown = keys - set(table.c.keys())
    if unknown:
        raise BatchError(f"{what}: unknown column(s) {', '.join(sorted(unknown))} of {table.name}")
    base = {**dict.fromkeys(keys), **defaults}
    widths = [(c.name, c.type.length) for c in table.c
              if c.name in keys and isinstance(c.type, sa.String) and c.type.length is not None]
    times = [c.name for c in table.c if c.name in keys and isinstance(c.type, sa.DateTime)]
    out = []
    for item in items:
        row = {**base, **item}
        for name, length in widths:
            value = row[name]
            if isinstance(value, str) and len(value) > length:
                raise BatchError(f"{what}: {name} is {len(value)} characters long, more than the {length} allowed")
        for name in times:
            row[name] = utc(row[name])
        out.append(row)
    return out


# -- writing ----------------------------------------------------------------------------


def create_submission(registry: Registry, *, name: str, campaign: str, run: str | None, engine: str,
                      directory: str, config: str, n_jobs: int, n_quanta: int, state: str = "pending",
                      time: datetime.datetime | None = None) -> uuid.UUID:
    """Record a new submission (attempt 1) and return its id.

    Parameters
    ----------
    name
        Unique among submissions; an existing one raises `BatchError` (a restart is a
        new attempt of the existing submission, not a new submission).
    run
        The output run, registered here if it is not yet (a RUN collection).
    config
        The campaign YAML as submitted.
    """
    t = registry.tables.batch_submission
    when = utc(time) or now_utc()
    submission_id = new_id()
    row = {"id": submission_id, "name": name, "campaign": campaign, "attempt": 1, "state": state, "engine": engine,
           "directory": directory, "config": config, "created": when, "updated": when, "n_jobs": n_jobs,
           "n_quanta": n_quanta}
    _check_width(t, row, f"Submission {name!r}")
    exists = BatchError(f"Submission {name!r} exists; use batch restart")
    with registry.transaction() as conn:
        if conn.execute(sa.select(t.c.id).where(t.c.name == name)).first() is not None:
            raise exists
        if run is not None:
            registry.register_collection(run)
            row["run_id"] = registry.run_id(run)
        # Another process may have made it since the check: the unique name refuses it
        # (raising inside the transaction also undoes the run's registration).
        if conn.execute(registry.database.insert_new(t), row).rowcount == 0:
            raise exists
    return submission_id


def delete_submission(registry: Registry, name_or_id: str | uuid.UUID) -> bool:
    """Delete a submission with its jobs, quanta, events and QC matches; False if there is none."""
    found = get_submission(registry, name_or_id)
    if found is None:
        return False
    t = registry.tables.batch_submission
    with registry.transaction() as conn:
        # The other tables follow by ON DELETE CASCADE (SQLite enforces foreign keys here).
        conn.execute(sa.delete(t).where(t.c.id == found["id"]))
    return True


def insert_jobs(registry: Registry, submission_id: uuid.UUID, jobs: Sequence[Mapping[str, Any]],
                ) -> dict[str, uuid.UUID]:
    """Insert the jobs of a submission (one bulk insert); returns their ids by name.

    Each mapping holds columns of ``batch_job``: ``name`` is required; ``tasks`` may be a
    sequence of task labels (stored comma-separated); ``id`` is made if absent; defaults
    are ``cluster=""``, ``attempt=1``, ``state="pending"``, ``n_quanta=0``, ``manifest=""``.
    A name given twice, or already in the submission, raises `BatchError`.
    """
    t = registry.tables.batch_job
    items = []
    for job in jobs:
        item = dict(job)
        if not isinstance(item.get("tasks", ""), str):
            item["tasks"] = ",".join(item["tasks"])
        items.append(item)
    defaults = {"submission_id": submission_id, "cluster": "", "tasks": "", "attempt": 1, "state": "pending",
                "n_quanta": 0, "manifest": ""}
    rows = _rows(t, items, defaults, f"Jobs of submission {submission_id}")
    ids: dict[str, uuid.UUID] = {}
    for row in rows:
        if "name" not in row:
            raise BatchError(f"Jobs of submission {submission_id}: a job has no name")
        if row["name"] in ids:
            raise BatchError(f"Job {row['name']!r} is given twice in submission {submission_id}")
        if row.get("id") is None:
            row["id"] = new_id()
        ids[row["name"]] = row["id"]
    with registry.transaction() as conn:
        names = list(ids)
        for i in range(0, len(names), _CHUNK):
            dup = conn.execute(sa.select(t.c.name).where(t.c.submission_id == submission_id,
                                                         t.c.name.in_(names[i:i + _CHUNK]))).scalar()
            if dup is not None:
                raise BatchError(f"Job {dup!r} exists in submission {submission_id}")
        insert_rows(conn, t, rows)
    return ids


def insert_dependencies(registry: Registry, pairs: Iterable[tuple[uuid.UUID, uuid.UUID]]) -> None:
    """Record that each ``job_id`` waits for its ``upstream_id`` (pairs already recorded are skipped)."""
    t = registry.tables.batch_job_dependency
    rows = [{"job_id": j, "upstream_id": u} for j, u in dict.fromkeys(pairs)]
    with registry.transaction() as conn:
        execute_many(conn, registry.database.insert_new(t), rows, insert=True)


def insert_quanta(registry: Registry, submission_id: uuid.UUID, rows: Iterable[Mapping[str, Any]]) -> int:
    """Insert the quanta of a submission (one bulk insert); returns how many.

    Each mapping holds ``quantum_id``, ``job_id``, ``task_label`` and either
    ``data_id_key`` or ``data_id`` (a mapping, encoded as `DataId.key` as in the
    dataset and execution tables); ``state`` defaults to ``"pending"``, ``attempt``
    to 1, ``updated`` to now.
    """
    t = registry.tables.batch_quantum
    now = now_utc()
    items = []
    for row in rows:
        item = dict(row)
        if "data_id" in item:
            data_id = item.pop("data_id")
            item["data_id_key"] = (data_id if isinstance(data_id, DataId) else DataId(data_id)).key()
        items.append(item)
    out = _rows(t, items, {"submission_id": submission_id, "state": "pending", "attempt": 1, "updated": now},
                f"Quanta of submission {submission_id}")
    with registry.transaction() as conn:
        insert_rows(conn, t, out)
    return len(out)


_TABLE_OF = {"submission": "batch_submission", "job": "batch_job", "quantum": "batch_quantum"}
_KEY_OF = {"submission": "id", "job": "id", "quantum": "quantum_id"}
_FIXED = {"id", "quantum_id", "submission_id", "state"}


def _field_values(registry: Registry, change: StateChange, table: sa.Table) -> dict[str, Any]:
    """A change's ``fields`` as column values: names checked, times in UTC, ``run`` as ``run_id``."""
    values = {k: utc(v) for k, v in change.fields.items()}
    if change.kind == "submission" and "run" in values:
        run = values.pop("run")
        values["run_id"] = registry.run_id(run) if run is not None else None
    bad = sorted(k for k in values if k in _FIXED or k not in table.c)
    if bad:
        raise BatchError(f"State change of {change.kind} {change.id}: cannot set {', '.join(bad)} "
                         f"(settable: {', '.join(c.name for c in table.c if c.name not in _FIXED)})")
    _check_width(table, values, f"State change of {change.kind} {change.id}")
    return values


def record_states(registry: Registry, changes: Sequence[StateChange]) -> None:
    """Record state changes in one transaction: an event row each, and the current state of each row.

    Changes apply in the order given: a row changed several times ends in its last
    state, with the fields of every change (later ones win). An event of a quantum also
    names the quantum's job, so a job's history can include its quanta. A submission's
    ``updated`` becomes the latest time among its changes. A change naming a row that does
    not exist raises `BatchError` and records nothing.
    """
    if not changes:
        return
    tables: dict[str, sa.Table] = {kind: getattr(registry.tables, name) for kind, name in _TABLE_OF.items()}
    state_width = 32  # the width of every state column
    latest: dict[tuple[str, uuid.UUID], tuple[str, dict[str, Any]]] = {}
    touched: dict[uuid.UUID, datetime.datetime] = {}
    event_rows = []
    # Plain loops: this runs once per change, 10^5 of them for a large submission.
    for change in changes:
        kind: str = change.kind
        state = change.state
        if kind not in tables:
            raise BatchError(f"State change of unknown kind {kind!r} (submission, job or quantum)")
        if len(state) > state_width:
            raise BatchError(f"State change of {kind} {change.id}: state {state[:40]!r}... is longer than "
                             f"{state_width} characters")
        when = utc(change.time)
        key = (kind, change.id)
        found = latest.get(key)
        values = found[1] if found is not None else {}
        if change.fields:
            values.update(_field_values(registry, change, tables[kind]))
        if change.attempt is not None:
            values["attempt"] = change.attempt
        if kind == "quantum":
            values["updated"] = when
        latest[key] = (state, values)
        if touched.get(change.submission_id, when) <= when:
            touched[change.submission_id] = when
        event_rows.append({"submission_id": change.submission_id, "job_id": change.id if kind == "job" else None,
                           "quantum_id": change.id if kind == "quantum" else None, "attempt": change.attempt,
                           "state": state, "time": when, "detail": change.detail})
    # One bulk UPDATE per kind of row and set of columns, for all rows with that set.
    groups: dict[tuple[str, tuple[str, ...]], list[dict[str, Any]]] = {}
    for (row_kind, row_id), (state, values) in latest.items():
        groups.setdefault((row_kind, tuple(sorted(values))), []).append(
            {_KEY_OF[row_kind]: row_id, "state": state, **values})
    with registry.transaction() as conn:
        for (row_kind, _names), rows in groups.items():
            id_column = _KEY_OF[row_kind]
            if update_rows(conn, tables[row_kind], id_column, rows) < len(rows):
                _raise_missing(conn, tables[row_kind], id_column, row_kind, [r[id_column] for r in rows])
        sub = registry.tables.batch_submission
        conn.execute(sa.update(sub).where(sub.c.id == sa.bindparam("k_id"), sub.c.updated < sa.bindparam("v_time"))
                     .values(updated=sa.bindparam("v_time")),
                     [{"k_id": s, "v_time": when} for s, when in touched.items()])
        _insert_events(conn, registry, event_rows)


def _insert_events(conn: sa.Connection, registry: Registry, rows: list[dict[str, Any]]) -> None:
    """Insert event rows in the order given (event ids follow it); a quantum's event gets its job's id.

    SQLite looks the job up in the INSERT itself (an index lookup per row); PostgreSQL,
    whose bulk path is COPY (values only), reads the jobs of the quanta first.
    """
    event, quantum = registry.tables.batch_event, registry.tables.batch_quantum
    if conn.dialect.name == "sqlite":
        # Bind parameters may not take their column's name in an INSERT's VALUES.
        values: dict[str, Any] = {c: sa.bindparam(f"e_{c}", type_=event.c[c].type) for c in rows[0]}
        values["job_id"] = sa.func.coalesce(values["job_id"], sa.select(quantum.c.job_id).where(
            quantum.c.quantum_id == sa.bindparam("e_quantum_id", type_=sa.Uuid)).scalar_subquery())
        execute_many(conn, sa.insert(event).values(values), [{f"e_{k}": v for k, v in r.items()} for r in rows])
        return
    quantum_ids = list({r["quantum_id"] for r in rows if r["quantum_id"] is not None})
    job_of: dict[uuid.UUID, uuid.UUID] = {}
    for i in range(0, len(quantum_ids), _LOOKUP):
        job_of.update(conn.execute(sa.select(quantum.c.quantum_id, quantum.c.job_id).where(
            quantum.c.quantum_id.in_(quantum_ids[i:i + _LOOKUP]))).all())
    for r in rows:
        if r["quantum_id"] is not None:
            r["job_id"] = job_of[r["quantum_id"]]
    insert_rows(conn, event, rows)


def _raise_missing(conn: sa.Connection, table: sa.Table, key: str, kind: str, ids: list[uuid.UUID]) -> None:
    found: set[uuid.UUID] = set()
    for i in range(0, len(ids), _CHUNK):
        found.update(conn.execute(sa.select(table.c[key]).where(table.c[key].in_(ids[i:i + _CHUNK]))).scalars())
    missing = [str(i) for i in ids if i not in found]
    if missing:
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        raise BatchError(f"State change of unknown {kind} {', '.join(missing[:5])}{more}")


def record_qc(registry: Registry, submission_id: uuid.UUID, job_id: uuid.UUID,
              matches: Sequence[Mapping[str, Any]]) -> int:
    """Record log QC matches of one job; returns how many were new.

    Each mapping holds ``severity``, ``pattern``, ``line_number`` and ``line``, and
    optionally ``quantum_id``, ``execution_id`` and ``task_label`` (the step whose
    output matched). A match the job has already (same execution, quantum, pattern, line)
    is not recorded again: an outcome merged twice (a merger died first) adds nothing.
    """
    t = registry.tables.batch_qc_match
    rows = _rows(t, matches, {"submission_id": submission_id, "job_id": job_id},
                 f"QC matches of job {job_id}")
    key_columns = ("execution_id", "quantum_id", "pattern", "line_number")
    with registry.transaction() as conn:
        held = {tuple(r) for r in conn.execute(
            sa.select(*[t.c[c] for c in key_columns]).where(t.c.job_id == job_id))}
        new, seen = [], set(held)
        for row in rows:
            key = tuple(row.get(c) for c in key_columns)
            if key not in seen:
                seen.add(key)
                new.append(row)
        insert_rows(conn, t, new)
    return len(new)


# -- reading ----------------------------------------------------------------------------


def _job_counts(conn: sa.Connection, registry: Registry, submission_ids: Sequence[uuid.UUID] | None,
                ) -> dict[uuid.UUID, dict[str, int]]:
    j = registry.tables.batch_job
    stmt = sa.select(j.c.submission_id, j.c.state, sa.func.count()).group_by(j.c.submission_id, j.c.state)
    if submission_ids is not None:
        stmt = stmt.where(j.c.submission_id.in_(list(submission_ids)))
    out: dict[uuid.UUID, dict[str, int]] = {}
    for sid, state, n in conn.execute(stmt):
        out.setdefault(sid, {})[state] = int(n)
    return out


def _submission_select(registry: Registry) -> sa.Select:
    s, c = registry.tables.batch_submission, registry.tables.collection
    return sa.select(s, c.c.name.label("run")).select_from(s.outerjoin(c, c.c.id == s.c.run_id))


def get_submission(registry: Registry, name_or_id: str | uuid.UUID) -> dict[str, Any] | None:
    """A submission's row, with ``run`` (its name; None once removed) and ``jobs`` (counts per state).

    ``name_or_id`` is its name, or its id (a `uuid.UUID` or the text of one that is not a name).
    """
    s = registry.tables.batch_submission
    with registry.database.read() as conn:
        row = None
        if isinstance(name_or_id, str):
            row = conn.execute(_submission_select(registry).where(s.c.name == name_or_id)).mappings().first()
            if row is None:
                try:
                    name_or_id = uuid.UUID(name_or_id)
                except ValueError:
                    return None
        if row is None:
            row = conn.execute(_submission_select(registry).where(s.c.id == name_or_id)).mappings().first()
        if row is None:
            return None
        return {**row, "jobs": _job_counts(conn, registry, [row["id"]]).get(row["id"], {})}


def list_submissions(registry: Registry) -> list[dict[str, Any]]:
    """Every submission, oldest first, as `get_submission` gives it."""
    s = registry.tables.batch_submission
    with registry.database.read() as conn:
        rows = conn.execute(_submission_select(registry).order_by(s.c.created, s.c.name)).mappings().all()
        counts = _job_counts(conn, registry, None)
    return [{**r, "jobs": counts.get(r["id"], {})} for r in rows]


def _job_dict(row: sa.RowMapping) -> dict[str, Any]:
    out = dict(row)
    out["tasks"] = out["tasks"].split(",") if out["tasks"] else []
    return out


def jobs(registry: Registry, submission_id: uuid.UUID, *, states: Iterable[str] | None = None,
         tasks: Iterable[str] | None = None) -> list[dict[str, Any]]:
    """The jobs of a submission by name, optionally only those in ``states`` or running any of ``tasks``.

    Each is its ``batch_job`` row, with ``tasks`` as a list of task labels.
    """
    j = registry.tables.batch_job
    stmt = sa.select(j).where(j.c.submission_id == submission_id).order_by(j.c.name)
    if states is not None:
        stmt = stmt.where(j.c.state.in_(list(states)))
    if tasks is not None:
        # Labels are stored comma-separated: match ",label," inside ",tasks,".
        padded = sa.literal(",") + j.c.tasks + sa.literal(",")
        stmt = stmt.where(sa.or_(sa.false(), *(padded.contains(f",{label},", autoescape=True) for label in tasks)))
    with registry.database.read() as conn:
        return [_job_dict(r) for r in conn.execute(stmt).mappings()]


def job_dependencies(registry: Registry, submission_id: uuid.UUID) -> dict[str, list[str]]:
    """Every job of a submission with the names of the jobs it waits for (sorted; empty for none)."""
    j, d = registry.tables.batch_job, registry.tables.batch_job_dependency
    up = j.alias("upstream")
    with registry.database.read() as conn:
        out: dict[str, list[str]] = {name: [] for name in conn.execute(
            sa.select(j.c.name).where(j.c.submission_id == submission_id).order_by(j.c.name)).scalars()}
        stmt = (sa.select(j.c.name, up.c.name).select_from(d.join(j, j.c.id == d.c.job_id)
                                                          .join(up, up.c.id == d.c.upstream_id))
                .where(j.c.submission_id == submission_id).order_by(j.c.name, up.c.name))
        for name, upstream in conn.execute(stmt):
            out[name].append(upstream)
    return out


def quanta(registry: Registry, submission_id: uuid.UUID, *, states: Iterable[str] | None = None,
           job_id: uuid.UUID | None = None) -> list[dict[str, Any]]:
    """The quanta of a submission (``batch_quantum`` rows with ``job``, the job's name), by task and data id."""
    q, j = registry.tables.batch_quantum, registry.tables.batch_job
    stmt = (sa.select(q, j.c.name.label("job")).join(j, j.c.id == q.c.job_id)
            .where(q.c.submission_id == submission_id).order_by(q.c.task_label, q.c.data_id_key))
    if states is not None:
        stmt = stmt.where(q.c.state.in_(list(states)))
    if job_id is not None:
        stmt = stmt.where(q.c.job_id == job_id)
    with registry.database.read() as conn:
        return [dict(r) for r in conn.execute(stmt).mappings()]


def progress(registry: Registry, submission_id: uuid.UUID) -> dict[str, dict[str, int]]:
    """Quanta per task and state (one GROUP BY over an index), tasks by label.

    The registry does not know the pipeline's order of tasks; a caller that does reorders.
    """
    q = registry.tables.batch_quantum
    stmt = (sa.select(q.c.task_label, q.c.state, sa.func.count())
            .where(q.c.submission_id == submission_id).group_by(q.c.task_label, q.c.state)
            .order_by(q.c.task_label, q.c.state))
    out: dict[str, dict[str, int]] = {}
    with registry.database.read() as conn:
        for label, state, n in conn.execute(stmt):
            out.setdefault(label, {})[state] = int(n)
    return out


def failures(registry: Registry, submission_id: uuid.UUID) -> list[dict[str, Any]]:
    """The failed jobs of a submission by name: ``job, tasks, failure_class, reason, exit_code, attempt, host, end_time``."""
    j = registry.tables.batch_job
    stmt = (sa.select(j.c.name.label("job"), j.c.tasks, j.c.failure_class, j.c.reason, j.c.exit_code,
                      j.c.attempt, j.c.host, j.c.end_time)
            .where(j.c.submission_id == submission_id, j.c.state == "failed").order_by(j.c.name))
    with registry.database.read() as conn:
        return [_job_dict(r) for r in conn.execute(stmt).mappings()]


def time_per_task(registry: Registry, run: str | None) -> list[dict[str, Any]]:
    """Executions and their times per task in a run, from the ``execution`` table.

    ``run`` None (a submission whose run was removed) has none.

    Each item: ``task_label``, ``executions``, ``wall_seconds_sum``, ``wall_seconds_mean``,
    ``wall_seconds_max`` (over executions with both times), ``cpu_seconds_sum``,
    ``peak_memory_max`` (bytes); tasks in the order of their first start.
    """
    if run is None:
        return []
    ex = registry.tables.execution
    wall = wall_seconds(registry.dialect, ex.c.start_time, ex.c.end_time)
    stmt = (sa.select(ex.c.task_label, sa.func.count().label("executions"),
                      sa.func.sum(wall).label("wall_seconds_sum"), sa.func.avg(wall).label("wall_seconds_mean"),
                      sa.func.max(wall).label("wall_seconds_max"), sa.func.sum(ex.c.cpu_time).label("cpu_seconds_sum"),
                      sa.func.max(ex.c.peak_memory).label("peak_memory_max"))
            .where(ex.c.run_id == registry.run_id(run)).group_by(ex.c.task_label)
            .order_by(sa.func.min(ex.c.start_time), ex.c.task_label))
    with registry.database.read() as conn:
        rows = conn.execute(stmt).mappings().all()
    floats = ("wall_seconds_sum", "wall_seconds_mean", "wall_seconds_max", "cpu_seconds_sum")
    return [{**r, "executions": int(r["executions"]),
             **{k: float(r[k]) if r[k] is not None else None for k in floats},
             "peak_memory_max": int(r["peak_memory_max"]) if r["peak_memory_max"] is not None else None}
            for r in rows]


def qc_matches(registry: Registry, submission_id: uuid.UUID, *, severity: str | None = None,
               ) -> list[dict[str, Any]]:
    """QC matches of a submission in the order recorded (``batch_qc_match`` rows with ``job``, its name)."""
    m, j = registry.tables.batch_qc_match, registry.tables.batch_job
    stmt = (sa.select(m, j.c.name.label("job")).join(j, j.c.id == m.c.job_id)
            .where(m.c.submission_id == submission_id).order_by(m.c.id))
    if severity is not None:
        stmt = stmt.where(m.c.severity == severity)
    with registry.database.read() as conn:
        return [dict(r) for r in conn.execute(stmt).mappings()]


def events(registry: Registry, submission_id: uuid.UUID, *, since_id: int = 0,
           limit: int | None = None) -> list[dict[str, Any]]:
    """State changes of a submission after event ``since_id``, in order (what a live view polls).

    Each is its ``batch_event`` row with ``kind`` (``"submission"``, ``"job"`` or
    ``"quantum"``) and ``job`` (the job's name, or None).
    """
    e, j = registry.tables.batch_event, registry.tables.batch_job
    stmt = (sa.select(e, j.c.name.label("job")).select_from(e.outerjoin(j, j.c.id == e.c.job_id))
            .where(e.c.submission_id == submission_id, e.c.id > since_id).order_by(e.c.id).limit(limit))
    with registry.database.read() as conn:
        rows = conn.execute(stmt).mappings().all()
    return [{**r, "kind": "quantum" if r["quantum_id"] is not None else "job" if r["job_id"] is not None
             else "submission"} for r in rows]


def files_of_type(registry: Registry, run: str | None, dataset_type: str) -> list[dict[str, Any]]:
    """The files of one dataset type in a run: ``dataset_id``, ``data_id`` (a `DataId`), ``path``, ``size``.

    Sorted by data id; paths are relative to the datastore root as stored. ``run`` None
    (a submission whose run was removed) has none.
    """
    type_id, dt = registry.dataset_type_records.find(dataset_type)
    if run is None:
        return []
    d, f = registry.tables.dataset, registry.tables.file
    dims = list(dt.dimensions)
    stmt = (sa.select(d.c.id, f.c.path, f.c.size, *[d.c[k] for k in dims]).join(f, f.c.dataset_id == d.c.id)
            .where(d.c.run_id == registry.run_id(run), d.c.dataset_type_id == type_id)
            .order_by(d.c.data_id_key))
    with registry.database.read() as conn:
        return [{"dataset_id": r[0], "data_id": DataId(dict(zip(dims, r[3:], strict=True))), "path": r[1],
                 "size": int(r[2])} for r in conn.execute(stmt)]
