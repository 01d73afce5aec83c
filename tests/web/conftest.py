"""Fixtures of the web view's tests: the demo's repository (built once per test run), small synthetic ones.

The demo repository is read by every test and changed by none, so it is built once per
run, even under pytest-xdist: the first worker builds it under a lock in the run's shared
temporary directory, the others wait and use it.
"""

from __future__ import annotations

import datetime
import fcntl
import os
from pathlib import Path

import pytest

HOSTILE = '<script>alert("pwned")</script>'
"""A value that would run script if a page wrote it unescaped."""


def service_missing(what: str) -> None:
    # As tests/conftest.py's _service_missing: fail instead of skipping when services are required.
    if os.environ.get("SKYBUTLER_REQUIRE_SERVICES") == "1":
        pytest.fail(f"{what} is not available and SKYBUTLER_REQUIRE_SERVICES=1")
    pytest.skip(f"{what} is not available")


def _shared_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory every xdist worker of this run sees (the run's base, not the worker's)."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


@pytest.fixture(scope="session")
def demo_repo(tmp_path_factory) -> Path:
    """The repository of ``skybutler demo`` with one visit per band (the DMTN-059 campaign run by the batch service)."""
    from skybutler.demo.run import run_demo

    shared = _shared_dir(tmp_path_factory)
    root = shared / "web_demo"
    done = shared / "web_demo.done"
    with open(shared / "web_demo.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if not done.exists():
                report = run_demo(root, jobs=2, visits=1)
                assert report.jobs["states"] == {"succeeded": report.jobs["jobs"]}, report.jobs
                done.write_text("ok")
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return root / "repo"


@pytest.fixture(scope="session")
def demo_butler(demo_repo):
    """A read-only butler on the demo repository (for the figures the pages must show)."""
    from skybutler import Butler

    butler = Butler(demo_repo, writeable=False)
    yield butler
    butler.close()


@pytest.fixture(scope="session")
def demo_submission(demo_butler) -> dict:
    """The demo's submission row."""
    from skybutler.registry import batch_sql

    (row,) = batch_sql.list_submissions(demo_butler.registry)
    return row


def make_submission(butler, name: str, *, run: str, tasks: dict[str, int], jobs_per_task: int = 1,
                    state: str = "running", quantum_state: str = "pending", reason: str | None = None,
                    qc_line: str | None = None, directory: str = "/nonexistent") -> dict:
    """A submission recorded through the batch tables as the service would, without running anything.

    ``tasks`` maps a task label to its number of quanta, spread over ``jobs_per_task`` jobs
    each. ``reason`` fails the first job with that reason and exit code 3; ``qc_line``
    records one QC match of severity ``error`` on it. Returns the submission's row.
    """
    from skybutler.model import new_id
    from skybutler.registry import batch_sql

    registry = butler.registry
    sid = batch_sql.create_submission(registry, name=name, campaign="synthetic", run=run, engine="local",
                                      directory=directory, config="", n_jobs=len(tasks) * jobs_per_task,
                                      n_quanta=sum(tasks.values()), state=state)
    jobs = [{"name": f"{task}_{i:04d}", "tasks": [task], "n_quanta": 0, "cluster": task}
            for task in tasks for i in range(jobs_per_task)]
    ids = batch_sql.insert_jobs(registry, sid, jobs)
    quanta = []
    for task, n in tasks.items():
        for i in range(n):
            quanta.append({"quantum_id": new_id(), "job_id": ids[f"{task}_{i % jobs_per_task:04d}"],
                           "task_label": task, "data_id_key": f"detector={i % 100}|visit={i // 100}",
                           "state": quantum_state})
    batch_sql.insert_quanta(registry, sid, quanta)
    first = ids[jobs[0]["name"]]
    now = datetime.datetime.now(datetime.UTC)
    if reason is not None:
        batch_sql.record_states(registry, [batch_sql.StateChange(
            "job", first, "failed", now, sid, attempt=1,
            fields={"failure_class": "task", "reason": reason, "exit_code": 3, "host": "node-1"})])
    if qc_line is not None:
        batch_sql.record_qc(registry, sid, first, [{"severity": "error", "pattern": "boom", "line_number": 7,
                                                    "line": qc_line, "task_label": jobs[0]["tasks"][0]}])
    row = batch_sql.get_submission(registry, sid)
    assert row is not None
    return {**row, "quanta": quanta, "job_ids": ids}
