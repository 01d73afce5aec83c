"""Two `batch restart`s of one submission at once: exactly one runs it.

Two runners of one submission each hand the same jobs over as new attempts and remove,
before each attempt, the files an earlier attempt staged out that no row names
(`skybutler.batch.attempts.remove_unmerged_outputs`): one runner's removal can then delete
files the other's job staged out and its merge is about to name. `restart` refuses while
another process runs the submission; the check and the marking must be one step.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from skybutler import BatchError
from skybutler.batch import api
from skybutler.batch.attempts import remove_unmerged_outputs
from skybutler.batch.service import RunSummary, SubmissionRunner
from skybutler.batch.states import JobState


def test_two_restarts_at_once_run_the_submission_once(finished, local_engine, monkeypatch):
    """Restart A has found no runner alive and is held; restart B starts and runs; A then goes on.

    Before: A went on to run the submission beside B (both had found no runner).
    """
    repo, result = finished
    a_checked, a_go, b_running, b_go = (threading.Event() for _ in range(4))
    ran: list[str] = []
    really_live_runner = api.live_runner

    def live_runner(directory):  # noqa: ANN001, ANN202
        found = really_live_runner(directory)
        if threading.current_thread().name == "restart-a":
            a_checked.set()
            assert a_go.wait(timeout=60)
        return found

    def run(runner):  # noqa: ANN001, ANN202 - stands for the loop; B's is held until A has gone on
        ran.append(threading.current_thread().name)
        if threading.current_thread().name == "restart-b":
            b_running.set()
            assert b_go.wait(timeout=60)
        return RunSummary(runner.name, JobState.SUCCEEDED)

    monkeypatch.setattr(api, "live_runner", live_runner)
    monkeypatch.setattr(SubmissionRunner, "run", run)
    outcome: dict[str, BaseException | RunSummary] = {}

    def restart() -> None:
        name = threading.current_thread().name
        try:
            outcome[name] = api.restart(repo, result.name, engine=local_engine)
        except BaseException as err:  # reported by the test
            outcome[name] = err
        finally:
            if name == "restart-a":
                b_go.set()

    a, b = threading.Thread(target=restart, name="restart-a"), threading.Thread(target=restart, name="restart-b")
    try:
        a.start()
        assert a_checked.wait(timeout=60)
        b.start()
        assert b_running.wait(timeout=60)
        a_go.set()
        a.join(timeout=60)
        b_go.set()
        b.join(timeout=60)
    finally:
        a_go.set()
        b_go.set()
    assert ran == ["restart-b"], outcome
    assert isinstance(outcome["restart-a"], BatchError), outcome
    assert "is being run by" in str(outcome["restart-a"])
    assert isinstance(outcome["restart-b"], RunSummary)
    assert isinstance(api.restart(repo, result.name, engine=local_engine), RunSummary)  # once B is over


def test_stage_out_never_keeps_a_file_a_removal_still_has_to_delete(tmp_path, monkeypatch):
    """The run's removal committed and is deleting its files; a job stages out the same bytes to one of them.

    Before: stage-out found the file with the same size and checksum, kept it as a repeated
    attempt's, and the merge named it; the removal then deleted it. Now it is a problem that
    names the removal (the job fails and is retried once the removal is over).
    """
    import shutil

    from skybutler import Butler, _butler_remove
    from skybutler.batch.staging import StagedOutput, stage_out

    root = str(tmp_path / "repo")
    butler = Butler.create(root, run="r")
    butler.register_dataset_type("meta", [], "dict")
    ref = butler.put({"version": 1}, "meta")
    (record,) = butler.registry.get_files([ref.id]).values()
    scratch = tmp_path / "scratch.json"
    shutil.copyfile(f"{root}/{record.path}", scratch)  # the job wrote the same bytes again
    committed, release = threading.Event(), threading.Event()
    really_delete = _butler_remove.delete_files

    def slow_delete(datastore, paths):  # noqa: ANN001, ANN202 - the rows are gone, the files not yet
        committed.set()
        assert release.wait(timeout=60)
        return really_delete(datastore, paths)

    monkeypatch.setattr(_butler_remove, "delete_files", slow_delete)
    removal = threading.Thread(target=Butler(root).remove_runs, args=(["r"],))
    removal.start()
    try:
        assert committed.wait(timeout=60)
        result = stage_out([StagedOutput(scratch, record.path, ref.id, record.size, record.checksum,
                                         record.checksum_algorithm)], root)
    finally:
        release.set()
        removal.join(timeout=60)
        butler.close()
    assert result.staged == set(), result
    (problem,) = result.problems
    assert "still to be deleted by the removal of 'r'" in problem and record.path in problem


def test_stage_out_refuses_a_path_an_interrupted_removal_lists_even_when_its_file_is_gone(tmp_path, monkeypatch):
    """The removal deleted the file, then stopped (crash) with its list left: the path is free on disk.

    A job staging out there placed its file; finishing the removal (any later removal does)
    found no row naming the path until the merge and deleted it, so the merge named a file
    that was gone. Now the path is refused while the list stands, and staged once finished.
    """
    import os

    from skybutler import Butler
    from skybutler.batch.staging import StagedOutput, stage_out
    from support.removals import remove_crashing_after_the_files

    root = str(tmp_path / "repo")
    butler = Butler.create(root, run="r")
    butler.register_dataset_type("meta", [], "dict")
    ref = butler.put({"version": 1}, "meta")
    (record,) = butler.registry.get_files([ref.id]).values()
    remove_crashing_after_the_files(lambda: butler.remove_runs(["r"]), monkeypatch)  # the file went, the list stays
    assert not os.path.exists(f"{root}/{record.path}")

    scratch = tmp_path / "scratch.json"
    scratch.write_bytes(b'{"version": 2}\n')
    output = StagedOutput(scratch, record.path, ref.id, scratch.stat().st_size, None, "md5")
    refused = stage_out([output], root)
    (problem,) = refused.problems
    assert "still to be deleted by the removal of 'r'" in problem and record.path in problem
    assert not os.path.exists(f"{root}/{record.path}")

    assert butler.finish_removals() == {"r": 1}
    assert stage_out([output], root).copied == [record.path]
    butler.close()


def _merge_after(monkeypatch, before_merge) -> list:
    """Make the runner call ``before_merge(runner, job, outcome)`` (once, for the first outcome with outputs)
    before merging it; returns the list of ``(job name, attempt, output)`` it was called with."""
    seen: list = []
    real_merge = SubmissionRunner._merge

    def merge(self, job, outcome):  # noqa: ANN001, ANN202
        if not seen and outcome.outputs:
            seen.append((job.name, job.attempt, outcome.outputs[0]))
            before_merge(self, job, outcome)
        return real_merge(self, job, outcome)

    monkeypatch.setattr(SubmissionRunner, "_merge", merge)
    return seen


def test_a_staged_output_deleted_before_its_merge_fails_the_merge_and_the_retry_completes(
        repo, write_campaign, local_engine, monkeypatch):
    """Between a job's stage-out and its merge, one of its files is deleted (an operator, a clean-up).

    Before: the merge committed the dataset's row without its file, and the job succeeded.
    Now the merge refuses, naming the dataset, its data id and the file, commits nothing of
    the job, and the job's retry (a merge failure is a system failure) stages it out again.
    """
    from skybutler.pipeline import QuantumGraph
    from skybutler.registry import batch_sql
    from support.batch_campaign import FEW_JOBS
    from support.batch_checks import assert_run_complete_and_whole

    seen = _merge_after(monkeypatch, lambda runner, job, outcome: runner.butler.datastore.remove(
        [outcome.outputs[0].path]))
    result = api.submit(repo, write_campaign(clustering=FEW_JOBS), engine=local_engine)
    (name, attempt, output), = seen
    row = batch_sql.get_submission(repo.registry, result.name)
    assert result.summary.state == JobState.SUCCEEDED, batch_sql.failures(repo.registry, row["id"])
    assert_run_complete_and_whole(repo, QuantumGraph.read(result.directory / "graph.qgraph"))
    (retried,) = [e["detail"] for e in batch_sql.events(repo.registry, row["id"])
                  if e["kind"] == "job" and "automatic retry" in (e["detail"] or "")]
    assert "automatic retry after merge: merging its outcome failed" in retried, retried
    assert f"the file {output.path!r} of dataset {output.dataset_type} {{" in retried, retried
    assert f"(dataset {output.dataset_id}) is missing" in retried, retried
    (job,) = [j for j in batch_sql.jobs(repo.registry, row["id"]) if j["name"] == name]
    assert job["attempt"] == attempt + 1


def test_a_job_whose_merge_failed_half_way_is_retried_without_clashing_with_what_was_merged(
        repo, write_campaign, local_engine, monkeypatch):
    """A job's merge commits some of its bounded transactions, then one fails; the job is retried.

    See `_merge_failing_half_way_then_retried`.
    """
    _merge_failing_half_way_then_retried(repo, write_campaign, local_engine, monkeypatch)


@pytest.mark.parametrize("backend", ["postgresql-local"])
def test_a_job_whose_merge_failed_half_way_on_postgresql_is_retried_without_clashing(
        backend, make_butler, write_campaign, local_engine, monkeypatch):
    from support.pipeline_repo import fill_repository

    butler = make_butler()
    fill_repository(butler)
    _merge_failing_half_way_then_retried(butler, write_campaign, local_engine, monkeypatch)


def _merge_failing_half_way_then_retried(repo, write_campaign, local_engine, monkeypatch) -> None:
    """A job's merge commits some of its bounded transactions, then one fails; the job is retried.

    The merge goes one execution per transaction here, and the file of the job's last
    output is deleted before it, so the executions before it are merged and its own is not.
    Before: the retry ran every quantum of the job again, as if nothing had been merged;
    the new attempt's logs differ from the merged ones, so its stage-out refused them and
    the job failed for good. Now the quanta whose outputs were merged count as done and
    the retry runs only the rest: every output once, one execution per quantum.
    """
    import functools

    from skybutler.batch import service
    from skybutler.pipeline import QuantumGraph
    from skybutler.registry import batch_sql
    from support.batch_campaign import FEW_JOBS
    from support.batch_checks import assert_run_complete_and_whole, executions_per_task

    monkeypatch.setattr(service, "merge_run", functools.partial(service.merge_run, chunk_size=1))
    seen = _merge_after(monkeypatch, lambda runner, job, outcome: runner.butler.datastore.remove(
        [outcome.outputs[-1].path]))
    result = api.submit(repo, write_campaign(clustering=FEW_JOBS), engine=local_engine)
    (name, attempt, _), = seen
    row = batch_sql.get_submission(repo.registry, result.name)
    assert result.summary.state == JobState.SUCCEEDED, [f["reason"] for f in batch_sql.failures(repo.registry,
                                                                                              row["id"])]
    graph = QuantumGraph.read(result.directory / "graph.qgraph")
    assert_run_complete_and_whole(repo, graph)
    assert executions_per_task(repo, graph.run) == graph.counts()
    (job,) = [j for j in batch_sql.jobs(repo.registry, row["id"]) if j["name"] == name]
    assert job["attempt"] == attempt + 1
    progress = batch_sql.progress(repo.registry, row["id"])
    assert all(set(c) == {"succeeded"} for c in progress.values()), progress
    # The merge was half way: the retry found some of the job's quanta merged.
    assert any(e["detail"] == "merged by an earlier attempt" for e in batch_sql.events(repo.registry, row["id"]))


def test_an_output_stage_out_refused_is_not_merged_with_the_scratch_file_row(
        repo, write_campaign, local_engine, monkeypatch):
    """A file of the same size, other bytes and no row is at a job's planned output path when it stages out.

    Stage-out refuses to replace it and the job fails (staging). Before, its outcome was
    merged all the same: the refused output kept the scratch registry's file row, which
    named the other file at that path (its size matched, so no check saw it), its quantum
    counted as done, and the jobs downstream failed to stage it in (checksum). Now an
    outcome with outputs not staged out is not merged; the retry, as for any attempt,
    removes what no row names at its paths and runs the job again.
    """
    import io

    import numpy as np

    from skybutler.pipeline import QuantumGraph
    from skybutler.registry import batch_sql
    from support.batch_campaign import FEW_JOBS
    from support.batch_checks import assert_run_complete_and_whole

    placed: list[str] = []
    real_hand_over = SubmissionRunner._hand_over

    def hand_over(self, job):  # noqa: ANN001, ANN202
        if not placed and "make_calexp" in job.plan.task_labels:
            path = self.graph[job.plan.quanta[0]].outputs["calexp"][0].extra["path"]
            other = io.BytesIO()
            np.save(other, np.zeros((4, 4)))  # a calexp's size (4 x 4 float64), not its values
            full = Path(self.butler.datastore.url(path))
            full.parent.mkdir(parents=True, exist_ok=True)
            full.write_bytes(other.getvalue())
            placed.append(path)
        return real_hand_over(self, job)

    monkeypatch.setattr(SubmissionRunner, "_hand_over", hand_over)
    result = api.submit(repo, write_campaign(clustering=FEW_JOBS), engine=local_engine)
    row = batch_sql.get_submission(repo.registry, result.name)
    assert result.summary.state == JobState.SUCCEEDED, [f["reason"] for f in batch_sql.failures(repo.registry,
                                                                                              row["id"])]
    assert_run_complete_and_whole(repo, QuantumGraph.read(result.directory / "graph.qgraph"))
    (path,) = placed
    (record,) = [r for r in repo.registry.get_files(
        [ref.id for ref in repo.query_datasets("calexp", collections=[result.run])]).values() if r.path == path]
    assert repo.datastore.checksum(path, record.checksum_algorithm) == f"{record.checksum_algorithm}:{record.checksum}"
    (retried,) = [e["detail"] for e in batch_sql.events(repo.registry, row["id"])
                  if e["kind"] == "job" and "automatic retry" in (e["detail"] or "")]
    assert retried.startswith("automatic retry after staging:") and path in retried, retried


def test_a_retry_never_removes_an_earlier_attempts_output_that_a_put_stored_meanwhile(tmp_path):
    """Before a retry, files an earlier attempt staged out that no row names are removed.

    Between that lookup and the removal, a put of the same dataset took the file for a
    crashed write's leftover, replaced it and committed. Before: the removal deleted the
    put's file (a stored dataset without its file). Now the files are looked up again
    while writers of file rows are kept out.
    """
    from types import SimpleNamespace

    from skybutler import Butler
    from skybutler.model import DataId, DatasetRef, new_dataset_id

    root = str(tmp_path / "repo")
    butler = Butler.create(root, run="r")
    butler.register_dataset_type("meta", [], "dict")
    dataset_type = butler.registry.get_dataset_type("meta")
    planned = DatasetRef(new_dataset_id(), dataset_type, DataId(), "r")
    path = butler.file_namer(dataset_type, "r")(planned)
    Path(butler.datastore.url(path)).parent.mkdir(parents=True)
    Path(butler.datastore.url(path)).write_bytes(b'{"attempt": 1}')  # staged out, never merged
    planned = DatasetRef(planned.id, dataset_type, DataId(), "r", extra={"path": path})
    user = Butler(root, run="r")
    stored = []
    really_exists = butler.datastore.exists

    def exists_then_put(p):  # noqa: ANN001, ANN202 - the runner found the file; a put stores the dataset now
        found = really_exists(p)
        if not stored:
            stored.append(user.put({"by": "user"}, "meta"))
        return found

    butler.datastore.exists = exists_then_put  # type: ignore[method-assign]
    quantum = SimpleNamespace(output_refs=lambda: [planned])
    remove_unmerged_outputs(butler, [quantum])

    (ref,) = stored
    assert Butler(root).get(ref) == {"by": "user"}
