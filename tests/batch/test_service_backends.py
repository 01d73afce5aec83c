"""The batch service end to end on the shared central repository's backends, and through Parsl.

A campaign submitted to a PostgreSQL registry with its files on S3 (moto's server) or
on local disk runs as real jobs in real processes: each job stages its inputs from the
central datastore, runs in scratch, stages its outputs back, and its outcome is merged
into PostgreSQL. Jobs get S3 credentials from their own environment (the documented
``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY``), never from their manifest.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from skybutler.batch import api
from skybutler.batch.engines import make_engine
from skybutler.pipeline import QuantumGraph
from skybutler.registry import batch_sql
from support.batch_campaign import FEW_JOBS, make_campaign
from support.batch_checks import assert_run_complete_and_whole, executions_per_task
from support.pipeline_repo import fill_repository

TESTS_DIR = Path(__file__).resolve().parent.parent


@pytest.fixture
def aws_environment(monkeypatch, s3_server):
    """The moto server's credentials where workers look for them: the environment jobs inherit."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_server["key"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_server["secret"])
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")


# Five jobs (`FEW_JOBS`) rather than the default campaign's sixteen: each job on S3 pays for
# its own S3 session and staging, and what these tests check (staging in from the central
# store, outputs of earlier jobs staged in by a later one, staging out, merging into
# PostgreSQL, credentials never in a manifest) is the same for five jobs as for sixteen;
# test_service.py runs the sixteen on SQLite.
@pytest.mark.parametrize("backend", ["postgresql-s3", "postgresql-local"])
def test_campaign_on_postgresql_central_registry_merges_every_output_once(backend, make_butler, tmp_path,
                                                                         request):
    """Five jobs, not the default campaign's sixteen (`FEW_JOBS`): their number is not the point here."""
    if backend.endswith("s3"):
        request.getfixturevalue("aws_environment")
    butler = make_butler()
    fill_repository(butler)
    # Made after the credentials are in the environment: the engine's processes inherit it.
    engine = make_engine("local", {"max_workers": 2})
    try:
        result = api.submit(butler, make_campaign(tmp_path, clustering=FEW_JOBS), engine=engine)
    finally:
        engine.close()
    assert result.jobs == 5
    assert result.summary is not None and result.summary.state.value == "succeeded", \
        batch_sql.failures(butler.registry, batch_sql.get_submission(butler.registry, result.name)["id"])
    graph = QuantumGraph.read(result.directory / "graph.qgraph")
    assert_run_complete_and_whole(butler, graph)
    assert executions_per_task(butler, result.run) == graph.counts()
    if backend.endswith("s3"):
        assert butler.datastore.url("x").startswith("s3://")
        # The manifests carry the endpoint but no credentials.
        for manifest in result.directory.glob("jobs/*/manifest.json"):
            options = json.loads(manifest.read_text())["destination_options"]
            assert options.get("endpoint_url")
            assert not {"key", "secret"} & set(options)


@pytest.mark.parametrize("backend", ["postgresql-s3"])
def test_failed_jobs_on_s3_are_run_again_by_restart(backend, make_butler, tmp_path, aws_environment):
    """Five jobs, not the default campaign's sixteen (`FEW_JOBS`): their number is not the point here."""
    butler = make_butler()
    fill_repository(butler)
    marker = tmp_path / "broken"
    marker.touch()
    path = make_campaign(tmp_path, pipeline_config={"make_calexp": {"fail_detector": 1,
                                                                    "fail_while_exists": str(marker)}},
                         clustering=FEW_JOBS)
    engine = make_engine("local", {"max_workers": 2})
    try:
        result = api.submit(butler, path, engine=engine)
        assert result.summary is not None and result.summary.state.value == "failed"
        marker.unlink()
        # The new attempts find the outputs of the first ones' succeeded quanta merged, and
        # clear whatever else those attempts left in the bucket, before staging out again.
        assert api.restart(butler, result.name, engine=engine).state.value == "succeeded"
    finally:
        engine.close()
    assert_run_complete_and_whole(butler, QuantumGraph.read(result.directory / "graph.qgraph"))


parsl = pytest.importorskip("parsl")


def test_campaign_on_the_parsl_engine_completes_with_real_workers(repo, tmp_path):
    """Slow (10-30 s): Parsl starts its interchange, worker pool and workers; one test only."""
    # The campaign names the engine; the service makes it (no engine passed in). Workers run
    # each job in a fresh interpreter, which finds the toy tasks through PYTHONPATH.
    settings = {"provider": {"name": "local", "init_blocks": 1, "min_blocks": 1, "max_blocks": 1,
                             "worker_init": f"export PYTHONPATH={TESTS_DIR}"},
                "executor": {"max_workers_per_node": 2}, "cancel_grace_s": 0.5}
    # Two jobs: each starts a fresh interpreter that imports skybutler (seconds on a busy machine);
    # the second stages in what the first staged out, as any number of jobs would.
    two_jobs = {"clusters": [
        {"name": "visits", "tasks": ["make_calexp", "gather_visit"], "dimensions": []},
        {"name": "coaddition", "tasks": ["make_warp", "coadd"], "dimensions": []}]}
    result = api.submit(repo, make_campaign(tmp_path, engine={"name": "parsl", "settings": settings},
                                            clustering=two_jobs))
    assert result.jobs == 2  # every single-frame quantum, then every warp and coadd
    assert result.summary is not None and result.summary.state.value == "succeeded", \
        batch_sql.failures(repo.registry, batch_sql.get_submission(repo.registry, result.name)["id"])
    graph = QuantumGraph.read(result.directory / "graph.qgraph")
    assert_run_complete_and_whole(repo, graph)
    assert executions_per_task(repo, result.run) == graph.counts()
    assert (result.directory / "engine" / "parsl").is_dir()  # Parsl's run directory is the submission's
