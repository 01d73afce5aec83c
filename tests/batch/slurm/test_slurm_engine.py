"""The slurm engine: one sbatch per job on the real single-node cluster; how Slurm's words map to job reports.

Jobs here are `support.engine_jobs.job` (a small JSON "manifest" says what to do); the
batch scripts export PYTHONPATH so that the job's fresh interpreter finds it.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from skybutler.batch.engines import EngineJob, EngineState, JobReport, make_engine
from skybutler.batch.engines.slurm import JOB_ID_FILE, SlurmJobInfo, slurm_report
from skybutler.batch.manifest import Resources
from support.engine_jobs import ENTRY, write_manifest

TESTS_DIR = Path(__file__).resolve().parents[2]
FINAL = {EngineState.EXITED, EngineState.CANCELLED, EngineState.LOST}


def scontrol(slurm_id: str) -> dict[str, str]:
    out = subprocess.run(["scontrol", "-o", "show", "job", slurm_id], capture_output=True, text=True,
                         check=True).stdout
    return dict(item.partition("=")[::2] for item in out.split())


def finish(engine, names, timeout: float = 60.0) -> dict[str, JobReport]:
    """Poll until every job named is final; each final state must come exactly once."""
    finals: dict[str, JobReport] = {}
    deadline = time.monotonic() + timeout
    while set(finals) != set(names):
        assert time.monotonic() < deadline, f"not final after {timeout} s: {sorted(set(names) - set(finals))}"
        for report in engine.poll():
            if report.state in FINAL:
                assert report.name not in finals, f"{report.name} reported final twice"
                finals[report.name] = report
        time.sleep(0.05)
    return finals


@pytest.mark.slurm
def test_slurm_runs_each_job_as_a_batch_job_with_its_resources_exits_signals_and_cancels(slurm_cluster, tmp_path):
    engine = make_engine("slurm", {"entry": ENTRY, "status_interval_s": 0.2,
                                   "worker_init": f"export PYTHONPATH={TESTS_DIR}"}, work_dir=tmp_path)

    def submit(name, resources=None, **spec) -> EngineJob:
        job = EngineJob(name, write_manifest(tmp_path / name / "manifest.json", **spec),
                        tmp_path / name / "attempt_1", resources or Resources())
        engine.submit(job)
        return job

    try:
        ok = submit("ok", stdout="hello out", stderr="hello err")
        submit("two", then="exit:2")
        submit("killed", then="SIGKILL")
        wide = submit("wide", Resources(cores=2, memory_mb=300, wall_time_s=150), sleep=60)
        submit("impossible", Resources(memory_mb=10**8))
        reports = finish(engine, ["ok", "two", "killed", "impossible"])
        assert reports["ok"] == JobReport("ok", EngineState.EXITED, 0, None)
        assert reports["two"] == JobReport("two", EngineState.EXITED, 2, None)
        assert reports["killed"] == JobReport("killed", EngineState.EXITED, -9, "killed by SIGKILL (Killed)")
        assert (ok.attempt_dir / "stdout.log").read_text() == "hello out\n"
        assert (ok.attempt_dir / "stderr.log").read_text() == "hello err\n"
        # A request no node can meet: sbatch refuses it, and says why.
        assert reports["impossible"].state == EngineState.LOST
        assert reports["impossible"].reason.startswith("sbatch failed:")
        assert "Memory specification can not be satisfied" in reports["impossible"].reason

        # The job's cores, memory and wall time (in Slurm's minutes, rounded up) reach sbatch.
        slurm_id = (wide.attempt_dir / JOB_ID_FILE).read_text().strip()
        shown = scontrol(slurm_id)
        assert (shown["NumCPUs"], shown["MinMemoryNode"], shown["TimeLimit"]) == ("2", "300M", "00:03:00")
        assert shown["StdErr"] == str((wide.attempt_dir / "stderr.log").resolve())
        engine.cancel(["wide"])
        assert finish(engine, ["wide"])["wide"].state == EngineState.CANCELLED
        assert scontrol(slurm_id)["JobState"] == "CANCELLED"
    finally:
        engine.close()


@pytest.mark.slurm
def test_without_a_wall_time_the_partition_default_applies(slurm_cluster, tmp_path):
    engine = make_engine("slurm", {"entry": ENTRY, "status_interval_s": 0.2,
                                   "worker_init": f"export PYTHONPATH={TESTS_DIR}"})
    try:
        job = EngineJob("free", write_manifest(tmp_path / "manifest.json", sleep=60), tmp_path / "attempt_1")
        engine.submit(job)
        slurm_id = (job.attempt_dir / JOB_ID_FILE).read_text().strip()
        assert scontrol(slurm_id)["TimeLimit"] == "UNLIMITED"  # the test partition's MaxTime
        script = next(p for p in job.attempt_dir.iterdir() if p.name.startswith("skybutler.free."))
        assert "--time" not in script.read_text()
    finally:
        engine.close()


def test_slurm_states_map_to_job_reports(tmp_path):
    job = EngineJob("j", tmp_path / "manifest.json", tmp_path / "attempt_1", Resources(memory_mb=500, wall_time_s=90))
    assert slurm_report(job, SlurmJobInfo("COMPLETED", "0:0")) == JobReport("j", EngineState.EXITED, 0, None)
    assert slurm_report(job, SlurmJobInfo("FAILED", "3:0", "NonZeroExitCode")) == JobReport(
        "j", EngineState.EXITED, 3, None)
    assert slurm_report(job, SlurmJobInfo("FAILED", "0:15")) == JobReport(
        "j", EngineState.EXITED, -15, "killed by SIGTERM (Terminated)")
    # Killed by OverMemoryKill: told by slurmstepd's line in the job's stderr, not by the state.
    job.attempt_dir.mkdir()
    (job.attempt_dir / "stderr.log").write_text(
        "slurmstepd-n1: error: StepId=7.batch exceeded memory limit (629145600 > 524288000), being killed\n"
        "slurmstepd-n1: error: Exceeded job memory limit\n")
    oom = slurm_report(job, SlurmJobInfo("FAILED", "0:9"))
    assert (oom.state, oom.exit_code) == (EngineState.EXITED, -9)
    assert oom.reason.startswith("OUT_OF_MEMORY: Slurm killed the job for exceeding its memory request of 500 MiB")
    # With cgroups Slurm says so itself.
    assert slurm_report(job, SlurmJobInfo("OUT_OF_MEMORY", "0:125")).reason.startswith(
        "OUT_OF_MEMORY: the job exceeded its memory request of 500 MiB")
    assert slurm_report(job, SlurmJobInfo("TIMEOUT", "0:15", "TimeLimit")) == JobReport(
        "j", EngineState.EXITED, -15, "wall time limit of 90 s exceeded (Slurm TIMEOUT, reason TimeLimit)")
    assert slurm_report(job, SlurmJobInfo("CANCELLED", "0:15"), cancelled=True) == JobReport(
        "j", EngineState.CANCELLED, -15, "cancelled")
    outside = slurm_report(job, SlurmJobInfo("CANCELLED", "0:0", "None", "CANCELLED by 0"))
    assert outside == JobReport("j", EngineState.CANCELLED, 0, "cancelled by scancel outside skybutler "
                                                                "(Slurm CANCELLED by 0)")
    lost = slurm_report(job, SlurmJobInfo("NODE_FAIL", "0:0", "NodeDown"))
    assert (lost.state, lost.reason) == (EngineState.LOST, "Slurm NODE_FAIL, reason NodeDown: the job or its "
                                                           "node was lost")
