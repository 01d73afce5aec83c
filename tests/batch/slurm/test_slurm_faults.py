"""Jobs Slurm ends: one cancelled with ``scancel`` from outside, one killed for exceeding its memory request.

The toy campaign runs on the slurm engine with `slurm_tasks.SlurmCalexp` as make_calexp:
on one visit it holds more memory than the job asked for (Slurm's OverMemoryKill ends
the job), on another it sleeps until a test thread, seeing it run, cancels its Slurm
job with ``scancel``. No automatic retries: both are reported with their reasons, and
`batch restart` runs them again, the out-of-memory one with twice the memory (seen by
``scontrol show job``), so that this time it fits and the campaign completes.
"""

from __future__ import annotations

import subprocess
import threading
from pathlib import Path

import pytest
import yaml

from skybutler.batch import api
from skybutler.batch.engines.slurm import JOB_ID_FILE
from skybutler.pipeline import QuantumGraph
from skybutler.registry import batch_sql
from support.batch_campaign import make_campaign
from support.batch_checks import assert_run_complete_and_whole, executions_per_task

pytestmark = pytest.mark.slurm

HERE = Path(__file__).resolve().parent
TESTS_DIR = HERE.parents[1]
HOG_VISIT, SLEEP_VISIT = 903334, 903338
MEMORY_MB = 400
"""The jobs' memory request: the hog's 350 MiB on top of a toy job's ~150 MiB goes over it, not over twice it."""


def _campaign(directory: Path, hog_marker: Path, sleep_marker: Path) -> Path:
    path = make_campaign(directory, engine={"name": "slurm", "settings": {
        "status_interval_s": 0.25,
        # The job's fresh interpreter finds the test tasks (and support.toy_tasks) through PYTHONPATH.
        "worker_init": f"export PYTHONPATH={HERE}:{TESTS_DIR}"}},
        retry={"max_attempts": 1}, resources={"default": {"memory_mb": MEMORY_MB}},
        # The single-frame steps of the two visits only (a job each): every Slurm job costs seconds of
        # interpreter start.
        tasks=["make_calexp", "gather_visit"], where=f"visit IN ({HOG_VISIT}, {SLEEP_VISIT})",
        clustering={"clusters": [{"name": "visit", "tasks": ["make_calexp", "gather_visit"], "dimensions": ["visit"]}]})
    pipeline_file = directory / "toy_pipeline.yaml"
    pipe = yaml.safe_load(pipeline_file.read_text())
    # Two markers, one per behaviour: the restart keeps the hog (more memory must be why it succeeds).
    pipe["tasks"]["make_calexp"] = {"class": "slurm_tasks:SlurmCalexp", "config": {
        "scale": 3.0, "hog_visit": HOG_VISIT, "hog_mb": 350, "hog_while_exists": str(hog_marker),
        "sleep_visit": SLEEP_VISIT, "sleep_while_exists": str(sleep_marker), "report_dir": str(directory)}}
    pipeline_file.write_text(yaml.safe_dump(pipe))
    return path


def _scancel_when_running(report: Path, done: list[str], stop: threading.Event) -> None:
    """Wait for the sleeping quantum to say its Slurm job id, then cancel that job as an operator would."""
    while not (report.exists() and report.read_text()) and not stop.wait(0.1):
        pass
    if report.exists() and report.read_text():
        slurm_id = report.read_text().strip()
        subprocess.run(["scancel", slurm_id], check=True)
        done.append(slurm_id)


def _job_of_visit(butler, row, visit: int) -> dict:
    """The job row of the visit's make_calexp quanta."""
    graph = QuantumGraph.read(Path(row["directory"]) / "graph.qgraph")
    ids = {q.id for q in graph if q.task_label == "make_calexp" and q.data_id["visit"] == visit}
    (job_id,) = {q["job_id"] for q in batch_sql.quanta(butler.registry, row["id"]) if q["quantum_id"] in ids}
    return next(j for j in batch_sql.jobs(butler.registry, row["id"]) if j["id"] == job_id)


def _scontrol(slurm_id: str) -> dict[str, str]:
    out = subprocess.run(["scontrol", "-o", "show", "job", slurm_id], capture_output=True, text=True,
                         check=True).stdout
    return dict(item.partition("=")[::2] for item in out.split())


def test_scancel_and_memory_kills_are_reported_with_their_reasons_and_restart_runs_them_again(
        slurm_cluster, repo, tmp_path):
    hog_marker, sleep_marker = tmp_path / "hog", tmp_path / "sleep"
    hog_marker.touch()
    sleep_marker.touch()
    campaign = _campaign(tmp_path, hog_marker, sleep_marker)
    cancelled: list[str] = []
    stop = threading.Event()
    watcher = threading.Thread(target=_scancel_when_running, args=(tmp_path / str(SLEEP_VISIT), cancelled, stop))
    watcher.start()
    try:
        result = api.submit(repo, campaign)
    finally:
        stop.set()
        sleep_marker.unlink()  # the sleeper stops, should the scancel have missed it
        watcher.join()
    assert cancelled, "the sleeping job never said its Slurm job id"
    row = batch_sql.get_submission(repo.registry, result.name)

    hog = _job_of_visit(repo, row, HOG_VISIT)
    assert (hog["state"], hog["failure_class"], hog["exit_code"]) == ("failed", "out_of_memory", -9)
    assert hog["reason"].startswith(f"OUT_OF_MEMORY: Slurm killed the job for exceeding its memory request of "
                                    f"{MEMORY_MB} MiB")
    sleeper = _job_of_visit(repo, row, SLEEP_VISIT)
    assert (sleeper["state"], sleeper["failure_class"]) == ("cancelled", "cancelled")
    assert "cancelled by scancel" in sleeper["reason"]
    # What an operator reads (`skybutler batch report`): the memory kill, with its reason.
    (reported,) = api.report(repo, result.name).failures
    assert (reported["job"], reported["failure_class"], reported["reason"]) == (
        hog["name"], "out_of_memory", hog["reason"])
    job_dir = Path(row["directory"]) / "jobs"
    first_hog_id = (job_dir / hog["name"] / "attempt_1" / JOB_ID_FILE).read_text().strip()
    assert _scontrol(first_hog_id)["MinMemoryNode"] == f"{MEMORY_MB}M"
    assert "Exceeded job memory limit" in (job_dir / hog["name"] / "attempt_1" / "stderr.log").read_text()
    assert (job_dir / sleeper["name"] / "attempt_1" / JOB_ID_FILE).read_text().strip() == cancelled[0]

    summary = api.restart(repo, result.name)
    assert summary.state.value == "succeeded", summary
    hog = _job_of_visit(repo, row, HOG_VISIT)
    assert (hog["state"], hog["attempt"], hog["memory_mb"]) == ("succeeded", 2, 2 * MEMORY_MB)
    second_hog_id = (job_dir / hog["name"] / "attempt_2" / JOB_ID_FILE).read_text().strip()
    assert _scontrol(second_hog_id)["MinMemoryNode"] == f"{2 * MEMORY_MB}M"
    assert _job_of_visit(repo, row, SLEEP_VISIT)["attempt"] == 2
    graph = QuantumGraph.read(Path(row["directory"]) / "graph.qgraph")
    assert_run_complete_and_whole(repo, graph)
    assert executions_per_task(repo, row["run"])["make_calexp"] == len(
        [q for q in graph if q.task_label == "make_calexp"])
