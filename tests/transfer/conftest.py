"""Fixtures: a repository where the toy pipeline ran with failures (the source of merges), targets on both databases."""

from __future__ import annotations

import pytest

from support.pipeline_repo import INPUTS, PIPELINE_YAML, filled_repo_template  # noqa: F401  (a fixture)

RUN = "u/test/job"


@pytest.fixture(params=["sqlite-local", "postgresql-local"])
def backend(request):
    """Merge targets on SQLite and on PostgreSQL (skipped when the server is absent)."""
    return request.param


@pytest.fixture(scope="session")
def ran(request, tmp_path_factory):
    """``(butler, graph, report)``: the toy pipeline run with detector 1 failing (failed and not-run quanta too).

    Shared read-only by the tests: a merge only reads its source.
    """
    from skybutler.pipeline import Pipeline, build_quantum_graph, execute_graph
    from support.pipeline_repo import copy_repository

    butler = copy_repository(request.getfixturevalue("filled_repo_template"), tmp_path_factory.mktemp("ran") / "repo")
    pipeline = Pipeline.from_yaml(PIPELINE_YAML.replace("scale: 3.0", "scale: 3.0\n      fail_detector: 1"))
    graph = build_quantum_graph(butler, pipeline, input_collections=INPUTS, output_run=RUN)
    report = execute_graph(butler, graph)
    assert report.failed and report.succeeded
    yield butler, graph, report
    butler.close()
