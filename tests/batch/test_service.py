"""The batch service end to end: submit a campaign, jobs run shared-nothing, outcomes merged, states recorded.

Every test runs real jobs in real processes (the local engine) against a real
SQLite repository; faults are real too (a task that raises, a process that
SIGKILLs itself, a file removed from the datastore).
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa

from skybutler import BatchError, Butler, ConfigError
from skybutler.batch import api
from skybutler.batch.engines import EngineState, JobReport, make_engine
from skybutler.pipeline import QuantumGraph
from skybutler.registry import batch_sql
from support.batch_campaign import FEW_JOBS, make_campaign

# The default campaign's sixteen jobs run once, in the module's ``finished`` run; the tests of a
# fault (a failing task, a killed or lost job, a missing file) run it in five (`FEW_JOBS`): the
# same visit jobs, then one job staging in all their outputs, so a fault blocks what depends on
# it as it does with sixteen, and each job spared is a process and a merge fewer.

FINISHED = pytest.mark.xdist_group("batch-finished")
"""For the tests that read the module's ``finished`` campaign: on one xdist worker (--dist loadgroup in
pyproject.toml) it runs once per run, not once per worker."""


def _outputs_once(butler: Butler, graph: QuantumGraph) -> None:
    """Every output the graph planned is registered exactly once, with its planned id and a file."""
    planned = {r.id: r for q in graph for r in q.output_refs()}
    found = butler.registry.get_datasets(list(planned))
    assert set(found) == set(planned)
    files = butler.registry.get_files(list(planned))
    assert set(files) == set(planned)
    for ref in planned.values():
        assert files[ref.id].path == ref.extra["path"]
        assert butler.datastore.exists(files[ref.id].path)
    with butler.registry.transaction() as conn:
        n = conn.execute(sa.text("SELECT count(*) FROM dataset d JOIN collection c ON c.id = d.run_id "
                                 "WHERE c.name = :run"), {"run": graph.run}).scalar_one()
    # the run also holds the task configurations and the campaign and pipeline files
    assert n == len(planned) + len(graph.init_outputs) + 2


def _events(butler: Butler, submission: str) -> list[dict]:
    row = batch_sql.get_submission(butler.registry, submission)
    return batch_sql.events(butler.registry, row["id"])


@FINISHED
def test_campaign_runs_as_jobs_and_every_output_is_merged_once(finished):
    repo, result = finished
    assert result.summary is not None and result.summary.state.value == "succeeded", result.summary
    graph = QuantumGraph.read(result.directory / "graph.qgraph")
    _outputs_once(repo, graph)
    # one job per visit for the single-frame steps, one per patch for the warps, one per coadd
    visits = {q.data_id["visit"] for q in graph.by_task("make_calexp")}
    patches = {q.data_id["patch"] for q in graph.by_task("make_warp")}
    assert result.jobs == len(visits) + len(patches) + len(graph.by_task("coadd"))
    # executions merged with provenance: one succeeded execution per quantum
    counts = {t: sum(c.values()) for t, c in batch_sql.progress(repo.registry,
                                                                 batch_sql.get_submission(repo.registry,
                                                                                          result.name)["id"]).items()}
    assert counts == graph.counts()
    rows = batch_sql.time_per_task(repo.registry, result.run)
    assert {r["task_label"]: r["executions"] for r in rows} == graph.counts()


@FINISHED
def test_every_job_state_change_is_a_row_in_order(finished):
    repo, result = finished
    events = _events(repo, result.name)
    sub = batch_sql.get_submission(repo.registry, result.name)
    job = batch_sql.jobs(repo.registry, sub["id"])[0]
    states = [e["state"] for e in events if e["job_id"] == job["id"] and e["quantum_id"] is None]
    expected = ["submitted", "staging_in", "running", "staging_out", "merging", "succeeded"]
    assert [s for s in states if s in expected] == expected
    assert sub["state"] == "succeeded"


@FINISHED
def test_manifest_and_subset_do_not_name_the_central_database(finished):
    repo, result = finished
    registry_file = str(repo.registry.url).split("///")[-1]
    for manifest in result.directory.glob("jobs/*/manifest.json"):
        assert registry_file not in manifest.read_text()


def test_dry_run_plans_and_writes_nothing(repo, write_campaign):
    result = api.submit(repo, write_campaign(), dry_run=True)
    assert result.summary is None
    assert not result.directory.exists()
    assert batch_sql.get_submission(repo.registry, result.name) is None
    assert {row["cluster"] for row in result.clusters} >= {"visit"}
    assert sum(row["quanta"] for row in result.clusters) == result.quanta


@FINISHED
def test_submitting_the_same_campaign_twice_is_refused_with_the_restart_hint(finished, tmp_path):
    repo, result = finished
    with pytest.raises(BatchError, match=f"batch restart {result.name}"):
        api.submit(repo, make_campaign(tmp_path))


def test_task_failure_is_not_retried_blocks_downstream_and_restart_completes(repo, write_campaign, tmp_path, local_engine):
    marker = tmp_path / "broken"
    marker.touch()
    path = write_campaign(pipeline_config={"make_calexp": {"fail_detector": 1, "fail_while_exists": str(marker)}},
                          clustering=FEW_JOBS)
    result = api.submit(repo, path, engine=local_engine)
    assert result.summary.state.value == "failed"
    sub = batch_sql.get_submission(repo.registry, result.name)
    failures = batch_sql.failures(repo.registry, sub["id"])
    assert failures and all(f["failure_class"] == "task" for f in failures)
    assert all(f["attempt"] == 1 for f in failures)  # task failures are not retried by default
    assert any("detector 1 is broken" in (f["reason"] or "") for f in failures)
    progress = batch_sql.progress(repo.registry, sub["id"])
    assert progress["make_calexp"]["failed"] == 4  # detector 1 of each visit
    assert progress["coadd"].get("blocked", 0) > 0
    marker.unlink()
    summary = api.restart(repo, result.name, engine=local_engine)
    assert summary.state.value == "succeeded"
    _outputs_once(repo, QuantumGraph.read(result.directory / "graph.qgraph"))


def test_job_killed_by_sigkill_is_retried_automatically(repo, write_campaign, tmp_path):
    marker = tmp_path / "kill"
    marker.touch()
    # the first attempt of each single-frame job dies; the marker goes after the first death
    path = write_campaign(pipeline_config={"make_calexp": {"kill_detector": 2, "kill_while_exists": str(marker)}},
                          retry={"max_attempts": 3}, clustering=FEW_JOBS)

    class RemoveMarkerAfterFirstDeath:
        """The local engine, with the marker removed once the first job has been killed."""

        def __init__(self):
            self.engine = make_engine("local", {"max_workers": 2})

        def submit(self, job):
            self.engine.submit(job)

        def poll(self):
            reports = self.engine.poll()
            if any(r.state == EngineState.EXITED and r.exit_code == -9 for r in reports):
                marker.unlink(missing_ok=True)
            return reports

        def cancel(self, names):
            self.engine.cancel(names)

        def close(self):
            self.engine.close()

    engine = RemoveMarkerAfterFirstDeath()
    try:
        result = api.submit(repo, path, engine=engine)
    finally:
        engine.close()
    assert result.summary.state.value == "succeeded"
    sub = batch_sql.get_submission(repo.registry, result.name)
    killed = [e for e in batch_sql.events(repo.registry, sub["id"]) if e["state"] == "failed" and e["job_id"]]
    assert killed, "at least one job attempt was recorded as failed"
    jobs = batch_sql.jobs(repo.registry, sub["id"])
    assert max(j["attempt"] for j in jobs) >= 2
    _outputs_once(repo, QuantumGraph.read(result.directory / "graph.qgraph"))


def test_missing_input_file_fails_its_job_at_staging_naming_the_file(repo, write_campaign, local_engine):
    raw = next(iter(repo.query_datasets("raw", collections=["HSC/raw/all"])))
    path = repo.registry.get_files([raw.id])[raw.id].path
    full = Path(repo.datastore.url(path))
    content = full.read_bytes()
    full.unlink()
    result = api.submit(repo, write_campaign(retry={"max_attempts": 1}, clustering=FEW_JOBS), engine=local_engine)
    assert result.summary.state.value == "failed"
    sub = batch_sql.get_submission(repo.registry, result.name)
    failures = batch_sql.failures(repo.registry, sub["id"])
    staging = [f for f in failures if f["failure_class"] == "staging"]
    assert len(staging) == 1
    assert str(raw.id) in staging[0]["reason"] or path in staging[0]["reason"]
    # nothing of that job was registered
    assert batch_sql.progress(repo.registry, sub["id"])["make_calexp"].get("succeeded", 0) == 12
    full.write_bytes(content)
    assert api.restart(repo, result.name, engine=local_engine).state.value == "succeeded"
    _outputs_once(repo, QuantumGraph.read(result.directory / "graph.qgraph"))


def test_a_job_the_engine_loses_is_run_again(repo, write_campaign):
    lost: set[str] = set()

    class LosesTheFirstJob:
        def __init__(self):
            self.engine = make_engine("local", {"max_workers": 2})

        def submit(self, job):
            if not lost:
                lost.add(job.name)  # never started: the engine "forgets" it
                return
            self.engine.submit(job)

        def poll(self):
            reports = self.engine.poll()
            for name in list(lost):
                if name not in {"done"}:
                    reports.append(JobReport(name, EngineState.LOST, reason="worker node vanished"))
                    lost.discard(name)
                    lost.add("done")
            return reports

        def cancel(self, names):
            self.engine.cancel(names)

        def close(self):
            self.engine.close()

    engine = LosesTheFirstJob()
    try:
        result = api.submit(repo, write_campaign(clustering=FEW_JOBS), engine=engine)
    finally:
        engine.close()
    assert result.summary.state.value == "succeeded"
    sub = batch_sql.get_submission(repo.registry, result.name)
    assert any(e["detail"] and "lost" in e["detail"] for e in batch_sql.events(repo.registry, sub["id"]))
    _outputs_once(repo, QuantumGraph.read(result.directory / "graph.qgraph"))


@FINISHED
def test_merging_an_outcome_again_changes_nothing(finished):
    from skybutler.transfer import merge_run

    repo, result = finished
    outcome_registry = next(result.directory.glob("jobs/*/attempt_1/outcome/registry.sqlite3"))
    before = batch_sql.time_per_task(repo.registry, result.run)
    report = merge_run(repo.registry, outcome_registry, run=result.run)
    assert report.datasets_added == 0 and report.executions_added == 0
    assert batch_sql.time_per_task(repo.registry, result.run) == before


@pytest.mark.parametrize("problem, match", [
    ({"colour": "red"}, "colour"),
    ({"pipeline": "nowhere.yaml"}, "nowhere.yaml"),
    ({"templates": {"calexp": "{run}/calexp/{visit}"}}, "unique|detector"),
    ({"exclude": {"data_ids": [{"instrument": "HSC", "visit": 1, "detector": 0}]}}, "matches nothing|visit"),
])
def test_bad_campaign_is_refused_before_anything_is_submitted(repo, write_campaign, problem, match, local_engine):
    path = write_campaign(**problem)
    with pytest.raises((BatchError, ConfigError), match=match):
        api.submit(repo, path, engine=local_engine)
    assert batch_sql.list_submissions(repo.registry) == []
    assert "toy/r1/a1" not in [c["name"] for c in repo.collections.query()]


def test_excluded_data_ids_are_not_processed(repo, write_campaign, local_engine):
    path = write_campaign(exclude={"data_ids": [{"instrument": "HSC", "visit": 903334, "detector": 0}]},
                          clustering=FEW_JOBS)
    result = api.submit(repo, path, engine=local_engine)
    graph = QuantumGraph.read(result.directory / "graph.qgraph")
    assert all(not (q.data_id["visit"] == 903334 and q.data_id.get("detector") == 0)
               for q in graph.by_task("make_calexp"))
    assert len(graph.by_task("make_calexp")) == 15


@FINISHED
def test_status_and_report_answer_the_operator_questions(finished):
    repo, result = finished
    [st] = api.status(repo, result.name)
    assert st.submission["state"] == "succeeded"
    assert all(set(c) == {"succeeded"} for c in st.progress.values())
    rep = api.report(repo, result.name, dataset_type="calexp", qc=True)
    assert len(rep.files) == 16
    assert all(f["path"].endswith(".npy") for f in rep.files)
    assert rep.failures == []


def test_cancel_without_a_running_service_marks_unfinished_jobs(repo, write_campaign, tmp_path, local_engine):
    marker = tmp_path / "broken"
    marker.touch()
    path = write_campaign(pipeline_config={"make_calexp": {"fail_detector": 1, "fail_while_exists": str(marker)}})
    result = api.submit(repo, path, engine=local_engine)
    n = api.cancel(repo, result.name)
    assert n == 0  # every job ended (failed or blocked); nothing left to stop
    assert batch_sql.get_submission(repo.registry, result.name)["state"] == "cancelled"


def test_unknown_submission_is_a_clear_error(repo):
    with pytest.raises(BatchError, match="No submission named 'nope'"):
        api.restart(repo, "nope")
    with pytest.raises(BatchError, match="No submission"):
        api.status(repo, "nope")


@FINISHED
def test_submission_ids_are_uuids(finished):
    repo, result = finished
    assert isinstance(batch_sql.get_submission(repo.registry, result.name)["id"], uuid.UUID)


@FINISHED
def test_outputs_whose_format_cannot_hold_their_identity_are_in_the_run_manifest(finished):
    # calexps of the toy pipeline are npy files: their identity goes to the central run manifest,
    # as a put would write it, so the registry could be rebuilt from the files.
    repo, result = finished
    entries = {e["dataset_id"]: e for e in repo.datastore.manifest_entries() if e["run"] == result.run}
    calexps = list(repo.query_datasets("calexp", collections=[result.run]))
    assert calexps
    for ref in calexps:
        entry = entries[str(ref.id)]
        assert entry["dataset_type"] == "calexp"
        assert entry["path"] == repo.registry.get_files([ref.id])[ref.id].path
