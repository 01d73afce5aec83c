"""What a finished (or restarted) batch submission must leave in the central repository, as assertions."""

from __future__ import annotations

import sqlalchemy as sa

from skybutler.pipeline import QuantumGraph


def run_prefix(graph: QuantumGraph) -> str:
    """The first path component every planned output of the graph's run shares (the run's directory)."""
    tops = {r.extra["path"].split("/", 1)[0] for q in graph for r in q.output_refs()}
    assert len(tops) == 1, tops
    return tops.pop()


def _run_rows(butler, graph: QuantumGraph) -> tuple[list, set[str]]:
    """Rows (id, file path, generating execution, its status and quantum) of the run's datasets; every file path."""
    registry = butler.registry
    t = registry.tables
    with registry.transaction() as conn:
        run_id = conn.execute(sa.select(t.collection.c.id).where(t.collection.c.name == graph.run)).scalar_one()
        rows = conn.execute(
            sa.select(t.dataset.c.id, t.file.c.path, t.generated.c.execution_id, t.execution.c.status,
                      t.execution.c.quantum_id)
            .select_from(t.dataset.outerjoin(t.file, t.file.c.dataset_id == t.dataset.c.id)
                         .outerjoin(t.generated, t.generated.c.dataset_id == t.dataset.c.id)
                         .outerjoin(t.execution, t.execution.c.id == t.generated.c.execution_id))
            .where(t.dataset.c.run_id == run_id)).all()
        known_paths = set(conn.execute(sa.select(t.file.c.path)).scalars())
    return rows, known_paths


def assert_nothing_half_registered(butler, graph: QuantumGraph) -> None:
    """Every dataset row of the run has its file row, and each planned output registered has its
    generating execution, which exists, succeeded and ran the quantum that planned it."""
    rows, _ = _run_rows(butler, graph)
    planned = {r.id: q.id for q in graph for r in q.output_refs()}
    ids = [r.id for r in rows]
    assert len(ids) == len(set(ids)), "a dataset has two file rows or two generating executions"
    no_file = [r.id for r in rows if r.path is None]
    assert no_file == [], f"dataset rows without a file row: {no_file[:5]}"
    for row in rows:
        if row.id in planned:
            assert row.execution_id is not None, f"output {row.id} has no generating execution"
            assert row.status == "succeeded" and row.quantum_id == planned[row.id], row


def assert_run_complete_and_whole(butler, graph: QuantumGraph) -> None:
    """Every planned output registered exactly once, nothing half-registered, no stray file in the run.

    - each output the graph planned is a dataset of the run with its planned id, its file row
      at its planned path, and that file in the central datastore;
    - the run holds nothing else besides the task configurations and the campaign and
      pipeline files (no second copy of any output);
    - `assert_nothing_half_registered`;
    - every file under the run's directory in the datastore is named by a file row.
    """
    assert_nothing_half_registered(butler, graph)
    rows, known_paths = _run_rows(butler, graph)
    planned = {r.id: r for q in graph for r in q.output_refs()}
    assert len(rows) == len(planned) + len(graph.init_outputs) + 2
    by_id = {r.id: r for r in rows}
    assert set(planned) <= set(by_id), f"{len(set(planned) - set(by_id))} planned outputs not registered"
    for dataset_id, ref in planned.items():
        row = by_id[dataset_id]
        assert row.path == ref.extra["path"]
        assert butler.datastore.exists(row.path), row.path
    prefix = run_prefix(graph) + "/"
    stray = [p for p in butler.datastore.walk() if p.startswith(prefix) and p not in known_paths]
    assert stray == [], f"files under the run's directory that no row names: {stray[:5]}"


def executions_per_task(butler, run: str) -> dict[str, int]:
    """Executions of the run per task label (from the registry's provenance)."""
    from skybutler.registry import batch_sql

    return {r["task_label"]: r["executions"] for r in batch_sql.time_per_task(butler.registry, run)}
