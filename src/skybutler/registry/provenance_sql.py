"""Provenance rows: executions and the used / wasGeneratedBy / wasDerivedFrom edges.

The tables are defined in `skybutler.registry.schema`; `skybutler.provenance`
builds the records and calls these functions, which are the only ones that
touch the provenance tables with SQL.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from ..errors import QueryError

if TYPE_CHECKING:
    from ._registry import Registry
    from .schema import Tables

__all__ = [
    "delete_run_provenance",
    "edges_of_executions",
    "execution_counts",
    "execution_edges",
    "executions",
    "executions_by_id",
    "generating_executions",
    "get_execution",
    "insert_executions",
    "lineage",
    "runs_have_executions",
    "touching_executions",
]

_CHUNK = 500


def insert_executions(registry: Registry, executions: Sequence[Mapping[str, Any]], *,
                      used: Iterable[tuple[uuid.UUID, uuid.UUID, str | None]] = (),
                      generated: Iterable[tuple[uuid.UUID, uuid.UUID, str | None]] = (),
                      derived: Iterable[tuple[uuid.UUID, uuid.UUID]] = ()) -> None:
    """Insert executions and their edges in one transaction (joins an open one).

    Parameters
    ----------
    executions
        Rows of the ``execution`` table; ``run`` (a run name) may replace ``run_id``.
    used
        ``(execution_id, dataset_id, path)``: the execution read that dataset from that file.
    generated
        ``(execution_id, dataset_id, path)``: the execution wrote that dataset to that file.
    derived
        ``(dataset_id, source_id)``: the dataset was derived from the source dataset.
    """
    t = registry.tables
    columns = {c.name for c in t.execution.columns}
    rows = []
    for e in executions:
        row = {k: v for k, v in e.items() if k in columns}
        if "run" in e and e["run"] is not None and "run_id" not in row:
            row["run_id"] = registry.run_id(e["run"])
        rows.append(row)
    used_rows = [{"execution_id": e, "dataset_id": d, "path": p} for e, d, p in used]
    gen_rows = [{"execution_id": e, "dataset_id": d, "path": p} for e, d, p in generated]
    der_rows = [{"dataset_id": d, "source_id": s} for d, s in dict.fromkeys(derived)]
    with registry.transaction() as conn:
        for table, data in ((t.execution, rows), (t.used, used_rows), (t.generated, gen_rows), (t.derived, der_rows)):
            for i in range(0, len(data), _CHUNK):
                conn.execute(sa.insert(table), data[i:i + _CHUNK])


def delete_run_provenance(conn: sa.Connection, tables: Tables, run_id: int, datasets: sa.Select) -> None:
    """Delete a run's executions with their used / wasGeneratedBy edges, and the wasDerivedFrom edges of ``datasets``.

    Part of removing a run (`skybutler.registry.Registry.remove_run`), in its transaction;
    ``datasets`` selects the ids of the run's datasets (from a table of them: it is read
    once per statement). The executions' edges are deleted only when the run has
    executions, the wasDerivedFrom edges only when there are any: most runs have no
    provenance, and a DELETE that finds nothing still costs a pass over the run's ids.
    """
    ex, derived = tables.execution, tables.derived
    if conn.execute(sa.select(sa.exists().where(ex.c.run_id == run_id))).scalar():
        run_execs = sa.select(ex.c.id).where(ex.c.run_id == run_id)
        conn.execute(sa.delete(tables.used).where(tables.used.c.execution_id.in_(run_execs)))
        conn.execute(sa.delete(tables.generated).where(tables.generated.c.execution_id.in_(run_execs)))
        conn.execute(sa.delete(ex).where(ex.c.run_id == run_id))
    if conn.execute(sa.select(sa.exists().select_from(derived))).scalar():
        conn.execute(sa.delete(derived).where(derived.c.dataset_id.in_(datasets)))


def _execution_select(registry: Registry) -> sa.Select:
    ex, c = registry.tables.execution, registry.tables.collection
    return sa.select(ex, c.c.name.label("run")).select_from(ex.outerjoin(c, c.c.id == ex.c.run_id))


def get_execution(registry: Registry, execution_id: uuid.UUID) -> dict[str, Any] | None:
    """One execution row (with its run name) or None."""
    ex = registry.tables.execution
    with registry.database.read() as conn:
        row = conn.execute(_execution_select(registry).where(ex.c.id == execution_id)).mappings().first()
    return dict(row) if row is not None else None


def generating_executions(registry: Registry, dataset_ids: Sequence[uuid.UUID],
                          ) -> dict[uuid.UUID, tuple[dict[str, Any], str | None]]:
    """For each dataset that some execution wrote: that execution's row and the file it wrote."""
    ex, gen = registry.tables.execution, registry.tables.generated
    out: dict[uuid.UUID, tuple[dict[str, Any], str | None]] = {}
    ids = list(dataset_ids)
    with registry.database.read() as conn:
        for i in range(0, len(ids), _CHUNK):
            stmt = (_execution_select(registry).add_columns(gen.c.dataset_id.label("generated_dataset_id"),
                                                            gen.c.path.label("generated_path"))
                    .join(gen, gen.c.execution_id == ex.c.id).where(gen.c.dataset_id.in_(ids[i:i + _CHUNK])))
            for row in conn.execute(stmt).mappings():
                rec = dict(row)
                did, path = rec.pop("generated_dataset_id"), rec.pop("generated_path")
                out[did] = (rec, path)
    return out


def execution_edges(registry: Registry, execution_id: uuid.UUID) -> dict[str, list[tuple[uuid.UUID, str | None]]]:
    """What one execution used and generated: ``{"used": [(id, path)], "generated": [(id, path)]}``."""
    t = registry.tables
    with registry.database.read() as conn:
        used = conn.execute(sa.select(t.used.c.dataset_id, t.used.c.path)
                            .where(t.used.c.execution_id == execution_id).order_by(t.used.c.dataset_id)).all()
        gen = conn.execute(sa.select(t.generated.c.dataset_id, t.generated.c.path)
                           .where(t.generated.c.execution_id == execution_id)
                           .order_by(t.generated.c.dataset_id)).all()
    return {"used": [tuple(r) for r in used], "generated": [tuple(r) for r in gen]}  # type: ignore[misc]


def derived_edges(registry: Registry, dataset_ids: Sequence[uuid.UUID]) -> list[tuple[uuid.UUID, uuid.UUID]]:
    """``(dataset_id, source_id)`` edges of wasDerivedFrom that start at any of ``dataset_ids``."""
    dv = registry.tables.derived
    ids = list(dataset_ids)
    out: list[tuple[uuid.UUID, uuid.UUID]] = []
    with registry.database.read() as conn:
        for i in range(0, len(ids), _CHUNK):
            out += [tuple(r) for r in conn.execute(  # type: ignore[misc]
                sa.select(dv.c.dataset_id, dv.c.source_id).where(dv.c.dataset_id.in_(ids[i:i + _CHUNK]))).all()]
    return out


def runs_have_executions(registry: Registry, run_ids: Sequence[int]) -> bool:
    """Whether any execution belongs to one of the runs ``run_ids`` (one indexed EXISTS query)."""
    if not run_ids:
        return False
    ex = registry.tables.execution
    stmt = sa.select(sa.exists().where(ex.c.run_id.in_(list(run_ids))))
    with registry.database.read() as conn:
        return bool(conn.execute(stmt).scalar())


def touching_executions(registry: Registry, dataset_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, int | None]:
    """Executions that generated or used any of ``dataset_ids``: execution id -> its run's collection id."""
    ex, gen, used = registry.tables.execution, registry.tables.generated, registry.tables.used
    ids = list(dataset_ids)
    out: dict[uuid.UUID, int | None] = {}
    with registry.database.read() as conn:
        for i in range(0, len(ids), _CHUNK):
            chunk = ids[i:i + _CHUNK]
            for edge in (gen, used):
                stmt = (sa.select(ex.c.id, ex.c.run_id).join(edge, edge.c.execution_id == ex.c.id)
                        .where(edge.c.dataset_id.in_(chunk)))
                out.update((r[0], r[1]) for r in conn.execute(stmt))
    return out


def executions_by_id(registry: Registry, execution_ids: Sequence[uuid.UUID]) -> list[dict[str, Any]]:
    """Execution rows (with their run name, as ``run``) of those ids that exist, in id order."""
    ex = registry.tables.execution
    ids = sorted(execution_ids)
    out: list[dict[str, Any]] = []
    with registry.database.read() as conn:
        for i in range(0, len(ids), _CHUNK):
            stmt = _execution_select(registry).where(ex.c.id.in_(ids[i:i + _CHUNK])).order_by(ex.c.id)
            out += [dict(r) for r in conn.execute(stmt).mappings()]
    return out


def edges_of_executions(registry: Registry, execution_ids: Sequence[uuid.UUID],
                        ) -> tuple[list[tuple[uuid.UUID, uuid.UUID, str | None]],
                                   list[tuple[uuid.UUID, uuid.UUID, str | None]]]:
    """``(used, generated)`` edges ``(execution_id, dataset_id, path)`` of many executions, in bulk."""
    t = registry.tables
    ids = list(execution_ids)
    used: list[tuple[uuid.UUID, uuid.UUID, str | None]] = []
    generated: list[tuple[uuid.UUID, uuid.UUID, str | None]] = []
    with registry.database.read() as conn:
        for i in range(0, len(ids), _CHUNK):
            chunk = ids[i:i + _CHUNK]
            for table, out in ((t.used, used), (t.generated, generated)):
                out += [(r[0], r[1], r[2]) for r in conn.execute(
                    sa.select(table.c.execution_id, table.c.dataset_id, table.c.path)
                    .where(table.c.execution_id.in_(chunk)))]
    return used, generated


def lineage(registry: Registry, dataset_id: uuid.UUID, *, direction: str = "up",
            max_depth: int = 1000) -> list[tuple[uuid.UUID, int]]:
    """Ancestors (``"up"``) or descendants (``"down"``) through wasDerivedFrom, with their depth.

    One recursive common table expression (SQLite and PostgreSQL alike); each dataset
    appears once, at its smallest depth (1 = a direct parent or child).
    """
    if direction not in ("up", "down"):
        raise QueryError(f"direction must be 'up' or 'down', not {direction!r}")
    dv = registry.tables.derived
    start, nxt = (dv.c.dataset_id, dv.c.source_id) if direction == "up" else (dv.c.source_id, dv.c.dataset_id)
    walk = sa.select(nxt.label("node"), sa.literal(1, sa.Integer).label("depth")).where(
        start == dataset_id).cte("lineage", recursive=True)
    step = (sa.select(nxt, (walk.c.depth + 1).label("depth"))
            .join(walk, start == walk.c.node).where(walk.c.depth < max_depth))
    walk = walk.union_all(step)
    stmt = (sa.select(walk.c.node, sa.func.min(walk.c.depth).label("depth"))
            .group_by(walk.c.node).order_by(sa.func.min(walk.c.depth), walk.c.node))
    with registry.database.read() as conn:
        return [(r[0], int(r[1])) for r in conn.execute(stmt).all()]


def executions(registry: Registry, *, run: str | None = None, task_label: str | None = None,
               status: str | None = None, quantum_ids: Sequence[uuid.UUID] | None = None,
               ) -> list[dict[str, Any]]:
    """Execution rows, oldest first, filtered by run, task label, status or quantum ids."""
    ex = registry.tables.execution
    stmt = _execution_select(registry)
    if run is not None:
        stmt = stmt.where(ex.c.run_id == registry.run_id(run))
    if task_label is not None:
        stmt = stmt.where(ex.c.task_label == task_label)
    if status is not None:
        stmt = stmt.where(ex.c.status == status)
    if quantum_ids is not None:
        stmt = stmt.where(ex.c.quantum_id.in_(list(quantum_ids)))
    stmt = stmt.order_by(ex.c.start_time, ex.c.id)
    with registry.database.read() as conn:
        return [dict(r) for r in conn.execute(stmt).mappings()]


def execution_counts(registry: Registry, *, run: str | None = None) -> list[tuple[str, str, int]]:
    """``(task_label, status, count)`` per task and status, tasks in order of their first execution."""
    ex = registry.tables.execution
    stmt = sa.select(ex.c.task_label, ex.c.status, sa.func.count(), sa.func.min(ex.c.start_time))
    if run is not None:
        stmt = stmt.where(ex.c.run_id == registry.run_id(run))
    stmt = stmt.group_by(ex.c.task_label, ex.c.status)
    with registry.database.read() as conn:
        rows = [tuple(r) for r in conn.execute(stmt).all()]
    first: dict[str, Any] = {}
    for label, _status, _n, start in rows:
        if start is not None and (label not in first or start < first[label]):
            first[label] = start
    rows.sort(key=lambda r: (first.get(r[0]) is None, first.get(r[0]) or 0, r[0], r[1]))
    return [(r[0], r[1], int(r[2])) for r in rows]
