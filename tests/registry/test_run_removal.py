"""Removing a run removes its provenance too (through `provenance_sql`), and nothing of other runs."""

from __future__ import annotations

import sqlalchemy as sa

from skybutler.pipeline import build_quantum_graph, execute_graph
from skybutler.registry import provenance_sql
from support.pipeline_repo import INPUTS, filled_repo_template, pipeline, repo  # noqa: F401


def _rows(butler):
    t = butler.registry.tables
    with butler.registry.engine.connect() as conn:
        return {name: conn.execute(sa.select(sa.func.count()).select_from(getattr(t, name))).scalar_one()
                for name in ("execution", "used", "generated", "derived")}


def test_removing_a_run_deletes_its_executions_and_edges_and_keeps_the_other_runs(repo, pipeline):  # noqa: F811
    subset = pipeline.subset("make_calexp,gather_visit")
    for run in ("u/test/kept", "u/test/gone"):
        assert execute_graph(repo, build_quantum_graph(repo, subset, input_collections=INPUTS, output_run=run)).ok
    both = _rows(repo)
    assert all(n > 0 for n in both.values()), both
    kept = provenance_sql.executions(repo.registry, run="u/test/kept")

    repo.remove_runs(["u/test/gone"])

    # The two runs ran the same quanta: each held half of every kind of row.
    assert _rows(repo) == {name: n // 2 for name, n in both.items()}
    assert provenance_sql.executions(repo.registry, run="u/test/kept") == kept
    assert provenance_sql.executions(repo.registry) == kept
