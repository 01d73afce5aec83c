"""Engines run jobs in fresh processes and report how each ended: the local engine and Parsl, for real.

Jobs here are `support.engine_jobs.job`, told by a small JSON "manifest" what to do
(sleep, print, exit with a code, kill itself, allocate memory). One local engine is
started per module (its fork server costs a second or two) and shared by the tests,
each of which waits for its own jobs to end; Parsl is started once, by one test
(10-30 s on two busy cores: interchange, worker pool and workers each import Parsl).
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import psutil
import pytest

from skybutler.batch.engines import EngineJob, EngineState, JobReport, make_engine
from skybutler.batch.engines.local import LocalEngine
from skybutler.batch.manifest import Resources
from skybutler.errors import BatchError, ConfigError
from support.engine_jobs import ENTRY, write_manifest

FINAL = {EngineState.EXITED, EngineState.CANCELLED, EngineState.LOST}
TESTS_DIR = Path(__file__).resolve().parents[1]


def submit(engine, root: Path, name: str, resources: Resources | None = None, **spec) -> EngineJob:
    job = EngineJob(name, write_manifest(root / name / "manifest.json", **spec), root / name / "attempt_1",
                    resources or Resources())
    engine.submit(job)
    return job


def wait_until(predicate, timeout: float = 30.0, what: str = "the condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def finish(engine, names, timeout: float = 30.0) -> dict[str, JobReport]:
    """Poll until every job named is final; checks that each final state is reported exactly once."""
    names = set(names)
    finals: dict[str, JobReport] = {}
    seen: Counter[str] = Counter()
    deadline = time.monotonic() + timeout
    while set(finals) != names:
        assert time.monotonic() < deadline, f"jobs still not final after {timeout} s: {sorted(names - set(finals))}"
        for report in engine.poll():
            if report.state in FINAL and report.name in names:
                seen[report.name] += 1
                finals[report.name] = report
        time.sleep(0.02)
    for _ in range(3):  # a few more polls: no final state comes twice
        for report in engine.poll():
            assert report.name not in names, f"{report.name} reported again after its final state: {report}"
        time.sleep(0.02)
    assert all(seen[name] == 1 for name in names), seen
    return finals


def running(engine, names) -> bool:
    states = {r.name: r.state for r in engine.poll()}
    return all(states.get(name) == EngineState.RUNNING for name in names)


def times(job: EngineJob) -> tuple[float, float]:
    start, end = (job.attempt_dir / "times").read_text().split()
    return float(start), float(end)


# -- the local engine --------------------------------------------------------------------


@pytest.fixture(scope="module")
def local_engine():
    engine = LocalEngine(max_workers=2, entry=ENTRY, cancel_grace_s=0.5)
    yield engine
    engine.close()


def test_local_job_name_is_refused_while_a_job_of_that_name_is_not_reported(local_engine, tmp_path):
    submit(local_engine, tmp_path, "twice")
    with pytest.raises(BatchError, match="'twice' was already submitted"):
        submit(local_engine, tmp_path, "twice")
    finish(local_engine, ["twice"])
    submit(local_engine, tmp_path, "twice")  # reported final: the name is free again
    assert finish(local_engine, ["twice"])["twice"].exit_code == 0


def test_local_exit_code_is_what_the_entry_returns_and_output_goes_to_the_attempts_logs(local_engine, tmp_path):
    ok = submit(local_engine, tmp_path, "ok", stdout="hello out", stderr="hello err")
    two = submit(local_engine, tmp_path, "two", then="exit:2")
    reports = finish(local_engine, ["ok", "two"])
    assert reports["ok"] == JobReport("ok", EngineState.EXITED, 0, None)
    assert reports["two"] == JobReport("two", EngineState.EXITED, 2, None)
    assert (ok.attempt_dir / "stdout.log").read_text() == "hello out\n"
    assert (ok.attempt_dir / "stderr.log").read_text() == "hello err\n"
    assert (two.attempt_dir / "stdout.log").exists()


def test_local_job_killed_by_a_signal_reports_minus_the_signal_number(local_engine, tmp_path):
    submit(local_engine, tmp_path, "killed", then="SIGKILL")
    submit(local_engine, tmp_path, "segv", then="SIGSEGV")
    reports = finish(local_engine, ["killed", "segv"])
    assert (reports["killed"].state, reports["killed"].exit_code) == (EngineState.EXITED, -9)
    assert reports["killed"].reason.startswith("killed by SIGKILL")
    assert (reports["segv"].exit_code, reports["segv"].reason) == (-11, "killed by SIGSEGV (Segmentation fault)")


def test_local_entry_that_raises_exits_1_with_the_exception_as_reason_and_traceback_in_stderr(local_engine, tmp_path):
    job = submit(local_engine, tmp_path, "raises", then="raise:bad data in visit 903334")
    report = finish(local_engine, ["raises"])["raises"]
    assert (report.state, report.exit_code) == (EngineState.EXITED, 1)
    assert report.reason == "the job's entry raised RuntimeError: bad data in visit 903334"
    assert "Traceback" in (job.attempt_dir / "stderr.log").read_text()


def test_local_memory_limit_caps_the_jobs_address_space(local_engine, tmp_path):
    submit(local_engine, tmp_path, "greedy", Resources(memory_mb=300), then="allocate:1000")
    submit(local_engine, tmp_path, "modest", Resources(memory_mb=300), then="allocate:50")
    reports = finish(local_engine, ["greedy", "modest"])
    assert (reports["greedy"].exit_code, reports["modest"].exit_code) == (1, 0)
    assert reports["greedy"].reason.startswith("OUT_OF_MEMORY: the job's entry raised MemoryError")


def test_local_memory_kill_stops_a_job_whose_processes_together_go_over_its_limit(local_engine, tmp_path):
    # Three forked children of 80 MiB each: every process stays under the address-space
    # cap of 200 MiB, their sum does not.
    submit(local_engine, tmp_path, "forks", Resources(memory_mb=200), then="fork_allocate:3:80")
    report = finish(local_engine, ["forks"])["forks"]
    assert (report.state, report.exit_code) == (EngineState.EXITED, -9)
    assert report.reason.startswith("OUT_OF_MEMORY: memory limit of 200 MiB exceeded")


def test_local_wall_time_limit_kills_the_job(local_engine, tmp_path):
    submit(local_engine, tmp_path, "slow", Resources(wall_time_s=1), sleep=30)
    start = time.monotonic()
    report = finish(local_engine, ["slow"])["slow"]
    assert report == JobReport("slow", EngineState.EXITED, -9, "wall time limit of 1 s exceeded")
    assert time.monotonic() - start < 10  # not the 30 s it asked for


def test_local_runs_at_most_max_workers_jobs_at_once_and_queues_the_rest(local_engine, tmp_path):
    jobs = [submit(local_engine, tmp_path, f"j{i}", sleep=0.5) for i in range(4)]
    states = Counter(r.state for r in local_engine.poll())
    assert states[EngineState.QUEUED] >= 2 and states[EngineState.RUNNING] <= 2
    reports = finish(local_engine, [j.name for j in jobs])
    assert {r.exit_code for r in reports.values()} == {0}
    spans = [times(job) for job in jobs]
    for start, _ in spans:
        assert sum(1 for s, e in spans if s <= start < e) <= 2
    assert min(e for _, e in spans[:2]) <= max(s for s, _ in spans[2:])  # the last two waited


def test_local_job_asking_for_more_cores_than_free_waits(local_engine, tmp_path):
    first = submit(local_engine, tmp_path, "one_core", sleep=0.5)
    wide = submit(local_engine, tmp_path, "two_cores", Resources(cores=2))
    finish(local_engine, ["one_core", "two_cores"])
    assert times(wide)[0] >= times(first)[1] - 0.05


def test_local_cancel_stops_running_jobs_and_drops_queued_ones(local_engine, tmp_path):
    submit(local_engine, tmp_path, "long", sleep=30)
    stubborn = submit(local_engine, tmp_path, "stubborn", sleep=30, ignore_term=True)
    queued = submit(local_engine, tmp_path, "queued", sleep=30)
    wait_until(lambda: running(local_engine, ["long", "stubborn"]) and (stubborn.attempt_dir / "job.pid").exists(),
               what="both jobs to run")
    local_engine.cancel(["long", "stubborn", "queued", "never-submitted"])
    reports = finish(local_engine, ["long", "stubborn", "queued"])
    assert reports["queued"] == JobReport("queued", EngineState.CANCELLED, None, "cancelled before it started")
    assert (reports["long"].state, reports["long"].exit_code) == (EngineState.CANCELLED, -15)
    # SIGTERM ignored: SIGKILL after the grace period.
    assert (reports["stubborn"].state, reports["stubborn"].exit_code) == (EngineState.CANCELLED, -9)
    assert not (queued.attempt_dir / "job.pid").exists()


def test_local_close_cancels_running_jobs_kills_their_children_and_stops_the_fork_server(tmp_path):
    before = {p.pid for p in psutil.Process().children()}
    engine = LocalEngine(max_workers=1, entry=ENTRY, cancel_grace_s=0.5)
    job = submit(engine, tmp_path, "forks", then="fork_allocate:2:1")
    wait_until(lambda: (job.attempt_dir / "job.pid").exists(), what="the job to start")  # written whole
    job_process = psutil.Process(int((job.attempt_dir / "job.pid").read_text().split()[1]))
    family = wait_until(lambda: len(kids := job_process.children()) == 2 and kids, what="the job's children")
    engine.close()
    for proc in [job_process, *family]:
        assert not proc.is_running() or proc.status() == psutil.STATUS_ZOMBIE
    # The fork server is gone too (multiprocessing's resource tracker, shared by all, may stay).
    assert [p.cmdline() for p in psutil.Process().children() if p.pid not in before
            and not any("resource_tracker" in part for part in p.cmdline())] == []
    with pytest.raises(BatchError, match="'late': the local engine is closed"):
        submit(engine, tmp_path, "late")
    engine.close()  # closing twice is harmless


def test_local_engine_settings_are_checked_when_it_is_made(tmp_path):
    engine = make_engine("local", {"max_workers": 3, "entry": ENTRY}, work_dir=tmp_path)
    assert isinstance(engine, LocalEngine) and engine.max_workers == 3
    engine.close()
    with pytest.raises(ConfigError, match="module:function"):
        make_engine("local", {"entry": "no_colon_here"})
    with pytest.raises(ConfigError, match="start_method"):
        make_engine("local", {"start_method": "fork"})
    with pytest.raises(ConfigError, match="workers"):
        make_engine("local", {"workers": 2})


# -- the Parsl engine ---------------------------------------------------------------------


parsl = pytest.importorskip("parsl")


def test_parsl_runs_jobs_on_real_workers_reports_exits_signals_wall_time_and_cancels(tmp_path):
    """One Parsl start (several seconds) for everything that needs real workers, whatever pytest-xdist does."""
    from skybutler.batch.engines.parsl import ParslEngine

    # Workers run jobs with a fresh interpreter: it finds the test entry through PYTHONPATH.
    engine = ParslEngine(
        provider={"name": "local", "init_blocks": 1, "min_blocks": 1, "max_blocks": 1,
                  "worker_init": f"export PYTHONPATH={TESTS_DIR}"},
        executor={"max_workers_per_node": 2}, entry=ENTRY, cancel_grace_s=0.5, work_dir=tmp_path / "submission")
    try:
        # Exit codes, signals, captured output, wall time.
        ok = submit(engine, tmp_path, "ok", stdout="hello out", stderr="hello err")
        submit(engine, tmp_path, "two", then="exit:2")
        submit(engine, tmp_path, "killed", then="SIGKILL")
        submit(engine, tmp_path, "slow", Resources(wall_time_s=1), sleep=30)
        reports = finish(engine, ["ok", "two", "killed", "slow"], timeout=120)  # the first wait for Parsl to start
        assert reports["ok"] == JobReport("ok", EngineState.EXITED, 0, None)
        assert reports["two"] == JobReport("two", EngineState.EXITED, 2, None)
        assert reports["killed"] == JobReport("killed", EngineState.EXITED, -9, "killed by SIGKILL (Killed)")
        assert reports["slow"] == JobReport("slow", EngineState.EXITED, -9, "wall time limit of 1 s exceeded")
        assert (ok.attempt_dir / "stdout.log").read_text() == "hello out\n"
        assert (ok.attempt_dir / "stderr.log").read_text() == "hello err\n"
        assert int((ok.attempt_dir / "job.pid").read_text().split()[1]) > 0
        assert (tmp_path / "submission" / "parsl").is_dir()  # Parsl's run directory, not the current one

        # Cancel: both workers busy, a third job queued behind them.
        jobs = [submit(engine, tmp_path, name, sleep=30) for name in ("long", "other")]
        queued = submit(engine, tmp_path, "queued", sleep=30)
        wait_until(lambda: all((job.attempt_dir / "job.pid").exists() for job in jobs), what="both jobs to run")
        assert {r.name: r.state for r in engine.poll()} == {
            "long": EngineState.RUNNING, "other": EngineState.RUNNING, "queued": EngineState.QUEUED}
        engine.cancel(["long", "other", "queued"])
        reports = finish(engine, ["long", "other", "queued"])
        assert reports["queued"] == JobReport("queued", EngineState.CANCELLED, None, "cancelled before it started")
        for name in ("long", "other"):
            assert (reports[name].state, reports[name].exit_code) == (EngineState.CANCELLED, -15)
        # The queued job reaches a worker once the others are gone, sees it was cancelled, runs nothing.
        time.sleep(1.0)
        assert not (queued.attempt_dir / "job.pid").exists()
    finally:
        engine.close()
    # Closing stops Parsl's worker pool and interchange: none is left among our descendants.
    left = [p.cmdline() for p in psutil.Process().children(recursive=True)
            if any("process_worker_pool" in part or "interchange" in part for part in p.cmdline())]
    assert left == []


def test_parsl_results_map_to_job_states(tmp_path):
    from parsl.app.errors import BashExitFailure
    from parsl.executors.high_throughput.errors import ManagerLost, WorkerLost

    from skybutler.batch.engines.parsl import result_report

    job = EngineJob("j", tmp_path / "manifest.json", tmp_path / "attempt_1", Resources(wall_time_s=5))
    assert result_report(job, None) == JobReport("j", EngineState.EXITED, 0, None)
    assert result_report(job, BashExitFailure("job", 3)) == JobReport("j", EngineState.EXITED, 3, None)
    assert result_report(job, BashExitFailure("job", 137)) == JobReport(  # a shell's 128 + SIGKILL
        "j", EngineState.EXITED, -9, "killed by SIGKILL (Killed)")
    assert result_report(job, BashExitFailure("job", -15), cancelled=True) == JobReport(
        "j", EngineState.CANCELLED, -15, "cancelled (killed by SIGTERM (Terminated))")
    assert result_report(job, WorkerLost(7, "node042")) == JobReport(
        "j", EngineState.LOST, None, "WorkerLost: Task failure due to loss of worker 7 on host node042")
    assert result_report(job, ManagerLost(b"m1", "node042")).state == EngineState.LOST
    # A SIGKILL is the wall time only when timeout says it sent it.
    job.attempt_dir.mkdir()
    (job.attempt_dir / "stderr.log").write_text("some output\ntimeout: sending signal KILL to command 'python'\n")
    assert result_report(job, BashExitFailure("job", -9)).reason == "wall time limit of 5 s exceeded"


def test_parsl_engine_is_made_by_short_names_without_starting_parsl(tmp_path):
    from skybutler.batch.engines.parsl import ParslEngine

    engine = make_engine("parsl", {"provider": {"name": "slurm", "partition": "normal", "max_blocks": 4},
                                   "launcher": {"name": "srun"}, "executor": {"max_workers_per_node": 8}},
                         work_dir=tmp_path)
    assert isinstance(engine, ParslEngine)
    (htex,) = engine.config.executors
    assert type(htex.provider).__name__ == "SlurmProvider" and type(htex.provider.launcher).__name__ == "SrunLauncher"
    assert htex.provider.partition == "normal" and htex.max_workers_per_node == 8
    assert Path(engine.run_dir) == tmp_path / "parsl"
    assert not (tmp_path / "parsl").exists()
    engine.close()


def test_parsl_unknown_provider_launcher_or_setting_is_a_config_error_naming_the_choices():
    with pytest.raises(ConfigError, match=r"unknown provider 'sge'; choose one of \[.*'local'.*'slurm'"):
        make_engine("parsl", {"provider": {"name": "sge"}})
    with pytest.raises(ConfigError, match=r"unknown launcher 'mpi'; choose one of \[.*'srun'"):
        make_engine("parsl", {"launcher": {"name": "mpi"}})
    with pytest.raises(ConfigError, match="provider 'local'"):
        make_engine("parsl", {"provider": {"name": "local", "partition": "x"}})
    with pytest.raises(ConfigError, match="executor"):
        make_engine("parsl", {"executor": {"workers_per_node": 2}})
