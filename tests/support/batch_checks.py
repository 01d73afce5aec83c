"""What a finished (or restarted) batch submission must leave in the central repository, as assertions."""

from __future__ import annotations

import sqlalchemy as sa

from skybutler.pipeline import QuantumGraph


def run_prefix(graph: QuantumGraph) -> str:
    """The first path component every planned output of the graph's run shares (the run's directory)."""
    tops = {r.extra["path"].split("/", 1)[0] for q in graph for r in q.output_refs()}
    assert len(tops) == 1, tops
    return tops.pop()


def assert_run_complete_and_whole(butler, graph: QuantumGraph) -> None:
    """Every planned output registered exactly once, nothing half-registered, no stray file in the run.

    - each output the graph planned is a dataset of the run with its planned id, its file row
      at its planned path, and that file in the central datastore;
    - the run holds nothing else besides the task configurations and the campaign and
      pipeline files (no second copy of any output);
    - every dataset row of the run has its file row; every planned output has its
      generating execution, which exists, succeeded and ran its quantum;
    - every file under the run's directory in the datastore is named by a file row.
    """
    registry = butler.registry
    t = registry.tables
    planned = {r.id: r for q in graph for r in q.output_refs()}
    producer = {r.id: q.id for q in graph for r in q.output_refs()}
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
    ids = [r.id for r in rows]
    assert len(ids) == len(set(ids)), "a dataset has two file rows or two generating executions"
    assert len(ids) == len(planned) + len(graph.init_outputs) + 2
    by_id = {r.id: r for r in rows}
    assert set(planned) <= set(by_id), f"{len(set(planned) - set(by_id))} planned outputs not registered"
    no_file = [r.id for r in rows if r.path is None]
    assert no_file == [], f"dataset rows without a file row: {no_file[:5]}"
    for dataset_id, ref in planned.items():
        row = by_id[dataset_id]
        assert row.path == ref.extra["path"]
        assert butler.datastore.exists(row.path), row.path
        assert row.execution_id is not None, f"output {dataset_id} has no generating execution"
        assert row.status == "succeeded" and row.quantum_id == producer[dataset_id], row
    prefix = run_prefix(graph) + "/"
    stray = [p for p in butler.datastore.walk() if p.startswith(prefix) and p not in known_paths]
    assert stray == [], f"files under the run's directory that no row names: {stray[:5]}"


def executions_per_task(butler, run: str) -> dict[str, int]:
    """Executions of the run per task label (from the registry's provenance)."""
    from skybutler.registry import batch_sql

    return {r["task_label"]: r["executions"] for r in batch_sql.time_per_task(butler.registry, run)}
