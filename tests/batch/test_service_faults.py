"""The process driving a submission dies or is told to stop: the campaign still completes, whole.

``skybutler batch submit`` runs in a subprocess of its own (as an operator's would),
with real jobs on the local engine; the test kills it with SIGKILL at a chosen moment,
or cancels the submission from another process, then restarts it through the library
and checks that every planned output is registered exactly once, that nothing is
half-registered and that no file of the run is left that no row names.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from skybutler import BatchError
from skybutler.batch import api
from skybutler.batch.states import TERMINAL_STATES, JobState
from skybutler.pipeline import QuantumGraph
from skybutler.registry import batch_sql
from support.batch_campaign import FEW_JOBS, make_campaign
from support.batch_checks import (
    assert_nothing_half_registered,
    assert_run_complete_and_whole,
    executions_per_task,
)
from support.pipeline_repo import fill_repository

TESTS_DIR = Path(__file__).resolve().parent.parent
NAME = "toy_r1_a1"  # the submission of the toy campaign's run toy/r1/a1


def _slow_campaign(directory: Path, *, sleep_s: float, marker: Path | None = None, **overrides) -> Path:
    """The toy campaign whose ``make_calexp`` sleeps ``sleep_s`` per quantum (while ``marker`` exists).

    In five jobs (`FEW_JOBS`), not the default's sixteen: a kill lands among jobs that ran, run
    and wait all the same (four visit jobs, two at a time, then one that stages in their
    outputs), and each job is one more process and merge on a busy machine.
    """
    path = make_campaign(directory, **{"clustering": FEW_JOBS, **overrides})
    pipeline_file = directory / "toy_pipeline.yaml"
    pipe = yaml.safe_load(pipeline_file.read_text())
    config = {"scale": 3.0, "sleep_s": sleep_s}
    if marker is not None:
        config["sleep_while_exists"] = str(marker)
    pipe["tasks"]["make_calexp"] = {"class": "support.slow_tasks:SlowCalexp", "config": config}
    pipeline_file.write_text(yaml.safe_dump(pipe))
    return path


def _cli(*args: str, module: str | None = None) -> list[str]:
    if module is None:
        return [sys.executable, "-c", "from skybutler.cli import main; main()", *args]
    return [sys.executable, "-m", module, *args]


def _env() -> dict[str, str]:
    """This environment, with the tests directory on PYTHONPATH (jobs import the toy tasks from it)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(TESTS_DIR), env.get("PYTHONPATH")) if p)
    return env


def _start(argv: list[str], log: Path) -> subprocess.Popen:
    with open(log, "wb") as out:
        return subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=_env(), start_new_session=True)


def _wait_for(condition: Callable[[], bool], what: str, proc: subprocess.Popen | None = None,
              log: Path | None = None, timeout: float = 120.0) -> None:
    """Poll ``condition``; fail when the submit process ``proc`` ends first or after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not condition():
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"the submit process ended ({proc.returncode}) before {what}:\n"
                        f"{log.read_text() if log else ''}")
        if time.monotonic() > deadline:
            pytest.fail(f"no {what} after {timeout} s:\n{log.read_text() if log else ''}")
        time.sleep(0.05)


def _job_states(repo) -> list[str]:
    row = batch_sql.get_submission(repo.registry, NAME)
    return [] if row is None else [j["state"] for j in batch_sql.jobs(repo.registry, row["id"])]


def _stop(proc: subprocess.Popen) -> None:
    """Make sure the submit process is gone (and reaped) whatever the test did."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (an orphan not reaped yet) has stopped running.
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z"
    return False


def _job_pids(directory: Path) -> list[int]:
    pids = []
    for path in directory.glob("jobs/*/attempt_*/job.pid"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            pids.append(int(path.read_text().split()[1]))
    return pids


def _check_restart_completes(repo, local_engine) -> None:
    summary = api.restart(repo, NAME, engine=local_engine)
    row = batch_sql.get_submission(repo.registry, NAME)
    assert summary.state == JobState.SUCCEEDED, batch_sql.failures(repo.registry, row["id"])
    graph = QuantumGraph.read(Path(row["directory"]) / "graph.qgraph")
    assert_run_complete_and_whole(repo, graph)
    # One execution per quantum: none merged twice, none of an attempt killed before its outcome.
    assert executions_per_task(repo, graph.run) == graph.counts()
    progress = batch_sql.progress(repo.registry, row["id"])
    assert all(set(c) == {"succeeded"} for c in progress.values()), progress


def _kill_after_a_job_succeeded_then_restart(repo, tmp_path, local_engine) -> None:
    campaign = _slow_campaign(tmp_path, sleep_s=0.3)
    log = tmp_path / "submit.log"
    proc = _start(_cli("batch", "submit", str(repo.root), str(campaign), "--quiet"), log)
    try:
        _wait_for(lambda: JobState.SUCCEEDED.value in _job_states(repo), "job succeeded", proc, log)
        os.kill(proc.pid, signal.SIGKILL)  # the submitting process only: its jobs run on, orphaned
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        _stop(proc)
    states = _job_states(repo)
    assert not all(JobState(s) in TERMINAL_STATES for s in states), "killed too late: every job had ended"
    _check_restart_completes(repo, local_engine)


def test_submit_killed_after_a_job_succeeded_is_completed_by_restart(repo, tmp_path, local_engine):
    _kill_after_a_job_succeeded_then_restart(repo, tmp_path, local_engine)


@pytest.mark.parametrize("backend", ["postgresql-local"])
def test_submit_killed_after_a_job_succeeded_on_postgresql_is_completed_by_restart(backend, make_butler, tmp_path,
                                                                                  local_engine):
    butler = make_butler()
    fill_repository(butler)
    _kill_after_a_job_succeeded_then_restart(butler, tmp_path, local_engine)


def test_submit_killed_inside_a_merge_transaction_is_completed_by_restart(repo, tmp_path, local_engine):
    campaign = _slow_campaign(tmp_path, sleep_s=0.0)
    log = tmp_path / "submit.log"
    # The second outcome merged kills the process after its dataset rows, before its file rows and commit.
    proc = _start(_cli("merge", "2", "batch", "submit", str(repo.root), str(campaign), "--quiet",
                       module="support.kill_points"), log)
    try:
        assert proc.wait(timeout=180) == -signal.SIGKILL, log.read_text()
    finally:
        _stop(proc)
    row = batch_sql.get_submission(repo.registry, NAME)
    directory = Path(row["directory"])
    graph = QuantumGraph.read(directory / "graph.qgraph")
    quanta_of: dict = {}
    for q in batch_sql.quanta(repo.registry, row["id"]):
        quanta_of.setdefault(q["job_id"], []).append(q["quantum_id"])
    # Jobs that ended (an outcome) but whose success is not recorded: their merge was killed, or
    # committed just before the kill. A merge is all or nothing: each has all its outputs or none.
    unrecorded = [j for j in batch_sql.jobs(repo.registry, row["id"])
                  if j["state"] != JobState.SUCCEEDED.value
                  and (directory / "jobs" / j["name"] / f"attempt_{j['attempt']}" / "outcome" / "outcome.json").exists()]
    registered = []
    for job in unrecorded:
        outputs = [r.id for qid in quanta_of[job["id"]] for r in graph[qid].output_refs()]
        registered.append(len(repo.registry.get_datasets(outputs)) / len(outputs))
    assert set(registered) <= {0.0, 1.0} and 0.0 in registered, registered
    assert_nothing_half_registered(repo, graph)
    _check_restart_completes(repo, local_engine)


def test_submit_killed_between_the_transactions_of_a_merge_is_completed_by_restart(repo, tmp_path, local_engine):
    """Part of a job's outcome is merged when the runner dies; the restart merges the rest, once.

    A merge is idempotent: the restart merges the same outcome again, skipping what is
    there. Nothing merged is run again, deleted, or registered twice.
    """
    campaign = _slow_campaign(tmp_path, sleep_s=0.0)
    log = tmp_path / "submit.log"
    proc = _start(_cli("merged", "2", "batch", "submit", str(repo.root), str(campaign), "--quiet",
                       module="support.kill_points"), log)
    try:
        assert proc.wait(timeout=180) == -signal.SIGKILL, log.read_text()
    finally:
        _stop(proc)
    row = batch_sql.get_submission(repo.registry, NAME)
    directory = Path(row["directory"])
    graph = QuantumGraph.read(directory / "graph.qgraph")
    quanta_of: dict = {}
    for q in batch_sql.quanta(repo.registry, row["id"]):
        quanta_of.setdefault(q["job_id"], []).append(q["quantum_id"])
    merging = [j for j in batch_sql.jobs(repo.registry, row["id"]) if j["state"] == JobState.MERGING.value]
    registered = []
    for job in merging:
        outputs = [r.id for qid in quanta_of[job["id"]] for r in graph[qid].output_refs()]
        registered.append(len(repo.registry.get_datasets(outputs)) / len(outputs))
    assert any(0.0 < r < 1.0 for r in registered), registered  # killed half way through a merge
    assert_nothing_half_registered(repo, graph)
    _check_restart_completes(repo, local_engine)


def test_cancel_from_another_process_stops_running_jobs_and_restart_completes_after(repo, tmp_path, local_engine):
    marker = tmp_path / "keep-sleeping"
    marker.touch()
    campaign = _slow_campaign(tmp_path, sleep_s=60.0, marker=marker,
                              engine={"name": "local", "settings": {"max_workers": 2, "cancel_grace_s": 0.5}})
    log = tmp_path / "submit.log"
    proc = _start(_cli("batch", "submit", str(repo.root), str(campaign), "--quiet"), log)
    try:
        _wait_for(lambda: _job_states(repo).count(JobState.RUNNING.value) == 2, "two jobs running", proc, log)
        directory = Path(batch_sql.get_submission(repo.registry, NAME)["directory"])
        running = _job_pids(directory)
        assert len(running) == 2 and all(_alive(p) for p in running)
        # A second runner of the same submission would run its jobs twice: refused.
        with pytest.raises(BatchError, match=f"being run by process {proc.pid} "):
            api.restart(repo, NAME, engine=local_engine)
        cancel = subprocess.run(_cli("batch", "cancel", str(repo.root), NAME), env=_env(), capture_output=True,
                                text=True, timeout=120)
        assert cancel.returncode == 0, cancel.stdout + cancel.stderr
        # The submitting process notices within a second, stops its jobs and ends (not succeeded: status 1).
        assert proc.wait(timeout=60) == 1, log.read_text()
    finally:
        _stop(proc)
    assert "cancelled" in log.read_text()
    assert not any(_alive(p) for p in running)
    row = batch_sql.get_submission(repo.registry, NAME)
    assert row["state"] == JobState.CANCELLED.value
    states = _job_states(repo)
    assert JobState.CANCELLED.value in states
    assert all(JobState(s) in TERMINAL_STATES for s in states), states
    progress = batch_sql.progress(repo.registry, row["id"])
    assert not any(c.get("running") for c in progress.values()), progress
    marker.unlink()
    _check_restart_completes(repo, local_engine)


def test_submit_killed_between_handing_a_job_over_and_recording_it_is_completed_by_restart(
        repo, tmp_path, local_engine):
    campaign = _slow_campaign(tmp_path, sleep_s=0.0)
    log = tmp_path / "submit.log"
    # Dies right after the engine took the first job: the registry still says pending, the job runs on.
    proc = _start(_cli("hand_over", "1", "batch", "submit", str(repo.root), str(campaign), "--quiet",
                       module="support.kill_points"), log)
    try:
        assert proc.wait(timeout=180) == -signal.SIGKILL, log.read_text()
    finally:
        _stop(proc)
    row = batch_sql.get_submission(repo.registry, NAME)
    assert set(_job_states(repo)) == {JobState.PENDING.value}
    # The orphaned job finishes, its outputs staged out to their planned paths, none registered.
    [attempt] = Path(row["directory"]).glob("jobs/*/attempt_1")
    _wait_for(lambda: (attempt / "outcome" / "outcome.json").exists(), "the orphaned job's outcome")
    _check_restart_completes(repo, local_engine)


def test_submit_killed_while_recording_its_quanta_is_submitted_again_by_restart(repo, tmp_path, local_engine):
    campaign = _slow_campaign(tmp_path, sleep_s=0.0)
    log = tmp_path / "submit.log"
    proc = _start(_cli("record", "1", "batch", "submit", str(repo.root), str(campaign), "--quiet",
                       module="support.kill_points"), log)
    try:
        assert proc.wait(timeout=180) == -signal.SIGKILL, log.read_text()
    finally:
        _stop(proc)
    row = batch_sql.get_submission(repo.registry, NAME)
    assert row is not None and batch_sql.progress(repo.registry, row["id"]) == {}  # jobs, no quanta
    # Nothing ran: a restart submits the campaign again, as it was submitted.
    summary = api.restart(repo, NAME, engine=local_engine)
    assert summary.state == JobState.SUCCEEDED
    row = batch_sql.get_submission(repo.registry, NAME)
    assert sum(row["jobs"].values()) == row["n_jobs"]
    graph = QuantumGraph.read(Path(row["directory"]) / "graph.qgraph")
    assert_run_complete_and_whole(repo, graph)
    assert executions_per_task(repo, graph.run) == graph.counts()


def test_submitting_again_after_a_submit_killed_while_recording_starts_afresh(repo, tmp_path, local_engine):
    campaign = _slow_campaign(tmp_path, sleep_s=0.0)
    log = tmp_path / "submit.log"
    proc = _start(_cli("record", "1", "batch", "submit", str(repo.root), str(campaign), "--quiet",
                       module="support.kill_points"), log)
    try:
        assert proc.wait(timeout=180) == -signal.SIGKILL, log.read_text()
    finally:
        _stop(proc)
    result = api.submit(repo, campaign, engine=local_engine)
    assert result.summary is not None and result.summary.state == JobState.SUCCEEDED
    assert_run_complete_and_whole(repo, QuantumGraph.read(result.directory / "graph.qgraph"))
