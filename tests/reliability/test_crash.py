"""Crash suite: writers killed with SIGKILL at random moments never leave a half-registered dataset.

Each trial copies a filled repository (SQLite + local disk), starts one operation in a
worker process (put, put_many, ingest, remove-runs, ``skybutler pipeline run``), kills
it after a random delay, then checks that:

* the repository opens, every dataset row has its file with the recorded size, and the
  datasets of the operation's runs read back;
* running the same work again completes: every expected dataset exactly once, and every
  file under the root is named by a row (no leftover temporary, no orphan).

The seed is printed (``SKYBUTLER_CRASH_SEED=<seed>`` replays a run), and so is a summary.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import time
from collections import Counter
from multiprocessing.connection import wait
from pathlib import Path

import pytest

from skybutler import Butler
from skybutler.datastore import is_temporary
from skybutler.pipeline import Pipeline, QuantumGraph, QuantumGraphBuilder
from skybutler.registry import pipeline_sql
from support.forkserver import TIMEOUT, start_process
from support.pipeline_repo import INPUTS, PIPELINE_YAML, fill_repository

from . import crash_work as work

KILLS_PER_OP = 6  # x 5 operations: 30 kills that land while the work runs (a new random seed each run)
MAX_TRIALS_PER_OP = 20  # kills that land after the work finished do not count; give up past this


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    """A filled repository with the dataset types, doomed runs and graph the operations use."""
    trial = tmp_path_factory.mktemp("crash-template")
    butler = Butler.create(trial / "repo")
    fill_repository(butler)
    butler.register_dataset_type("meta", ("visit", "detector"), "dict")
    butler.register_dataset_type("img", ("visit", "detector"), "image")
    for k, run in enumerate(work.DOOMED_RUNS):
        butler.put_many([({"doomed": k}, "meta", d) for d in work.DATA_IDS], run=run)
    pipeline = Pipeline.from_yaml(PIPELINE_YAML, source="toy.yaml")
    builder = QuantumGraphBuilder(butler, pipeline, input_collections=INPUTS, output_run=work.PIPELINE_RUN)
    builder.build().write(str(trial / work.GRAPH_FILE))
    work.prepare_ingest(trial)
    butler.close()
    return trial


@pytest.fixture(scope="module")
def seed():
    value = int(os.environ.get("SKYBUTLER_CRASH_SEED", random.SystemRandom().randrange(2**32)))
    print(f"\ncrash suite seed: {value} (replay with SKYBUTLER_CRASH_SEED={value})")
    return value


def _copy(template: Path, dest: Path) -> str:
    shutil.copytree(template, dest)
    return str(dest / "repo")


def _start(op: str, root: str, *args):
    return start_process(work.child, op, root, *args, preload=("reliability.crash_work",), what=op)


def _check_consistent(root: str, op: str, trial_dir: Path, *, complete: bool, runs: list[str] | None = None) -> int:
    """Every row has its file; after a completed retry, every file has its row. Returns datasets checked."""
    butler = Butler(root)
    try:
        records = list(butler.registry.all_files())
        recorded = set()
        for record, ref in records:
            recorded.add(record.path)
            assert butler.datastore.exists(record.path), f"{op}: row {ref} has no file {record.path}"
            assert butler.datastore.size(record.path) == record.size, f"{op}: {record.path} is not whole"
        written_runs = set(runs or work.expected(op, trial_dir)) | {work.PIPELINE_RUN}
        for _, ref in records:
            if ref.run in written_runs:
                butler.get(ref)  # a torn or foreign file fails to read
        if complete:
            stored = set(butler.stored_files())
            temporaries = sorted(p for p in stored if is_temporary(p))
            assert not temporaries, f"{op}: temporaries left after the retry: {temporaries[:3]}"
            assert stored == recorded, f"{op}: files without rows after the retry: {sorted(stored - recorded)[:3]}"
            _check_complete(butler, op, trial_dir, runs)
        return len(records)
    finally:
        butler.close()


def _check_complete(butler: Butler, op: str, trial_dir: Path, runs: list[str] | None = None) -> None:
    every = {work._key(d) for d in work.DATA_IDS}
    expected = {run: {"meta": every} for run in runs} if runs else work.expected(op, trial_dir)
    for run, types in expected.items():
        for dataset_type, data_ids in types.items():
            found = Counter(work._key(r.data_id)
                            for r in butler.query_datasets(dataset_type, collections=[run], find_first=False))
            assert set(found) == data_ids and set(found.values()) == {1}, f"{op}: {run} {dataset_type}: {found}"
    names = {c["name"] for c in butler.registry.collections()}
    if op == "remove_runs":
        assert not names & set(work.DOOMED_RUNS)
        assert list(butler.datastore.pending_removals()) == []
    if op == "pipeline":
        graph = QuantumGraph.read(trial_dir / work.GRAPH_FILE)
        outputs = [r.id for q in graph for r in q.output_refs()]
        assert len(pipeline_sql.existing_dataset_ids(butler.registry, outputs)) == len(outputs)


def _kill_at_random(proc, rng: random.Random, duration: float) -> float:
    """SIGKILL ``proc`` after a delay drawn from ``[0, duration]`` unless its work ends first; joins it.

    Returns the duration to draw the next delays from: ``duration``, or the time the work took
    when it ended first. The one calibrating run may have been slowed by a busy machine (0.46 s
    where the work takes 0.05 s): delays drawn past the work's end kill nothing, and the test
    would run out of trials.
    """
    delay = rng.uniform(0, duration)
    t0 = time.perf_counter()
    if wait([proc.sentinel], delay):  # ended before the delay
        duration = min(duration, time.perf_counter() - t0)
    else:
        with contextlib.suppress(ProcessLookupError):  # it may end between the wait and the kill
            os.kill(proc.pid, signal.SIGKILL)
    proc.join(60)
    return duration


def _duration(op: str, template: Path, tmp_path: Path) -> float:
    """How long ``op`` runs when nobody kills it (the range random kill delays are drawn from)."""
    trial_dir = tmp_path / f"{op}-calibrate"
    root = _copy(template, trial_dir)
    proc = _start(op, root)
    t0 = time.perf_counter()
    proc.join(TIMEOUT)
    assert proc.exitcode == 0, f"{op} failed without being killed (exit code {proc.exitcode})"
    elapsed = time.perf_counter() - t0
    _check_consistent(root, op, trial_dir, complete=True)
    return elapsed


@pytest.mark.parametrize("op", list(work.WORK))
def test_a_writer_killed_at_random_moments_leaves_a_repository_the_retry_completes(op, template, seed, tmp_path,
                                                                                   record_property):
    rng = random.Random(f"{seed}-{op}")
    duration = _duration(op, template, tmp_path)
    kills = trials = checked = 0
    while kills < KILLS_PER_OP and trials < MAX_TRIALS_PER_OP:
        trials += 1
        trial_dir = tmp_path / f"{op}-{trials}"
        root = _copy(template, trial_dir)
        proc = _start(op, root)
        duration = _kill_at_random(proc, rng, duration)
        if proc.exitcode == -signal.SIGKILL:
            kills += 1
        else:
            assert proc.exitcode == 0, f"{op} failed by itself (exit code {proc.exitcode})"

        checked += _check_consistent(root, op, trial_dir, complete=False)
        work.WORK[op](root)  # the retry: the same work, in this process
        checked += _check_consistent(root, op, trial_dir, complete=True)
        shutil.rmtree(trial_dir)
    summary = (f"crash suite {op}: seed {seed}, {trials} trials, {kills} killed mid-work "
               f"(work takes {duration:.2f} s unkilled), {checked} dataset rows checked, 0 lost")
    print(summary)
    record_property("crash_summary", summary)
    assert kills >= KILLS_PER_OP, f"only {kills} of {trials} kills landed while {op} ran: {summary}"


def test_put_many_on_postgresql_killed_at_random_moments_leaves_a_repository_the_retry_completes(
        seed, tmp_path, pg_engine, pg_namespace):
    """A smaller variant on the shared-server registry (files on local disk)."""
    from support.records import insert_records

    root = str(tmp_path / "repo")
    butler = Butler.create(root, registry=pg_engine.url.render_as_string(hide_password=False), namespace=pg_namespace)
    insert_records(butler)
    butler.register_dataset_type("meta", ("visit", "detector"), "dict")
    butler.close()
    rng = random.Random(f"{seed}-postgresql")
    calibration = [f"pg/calibrate/{k}" for k in range(4)]
    proc = _start("put_many", root, calibration)
    t0 = time.perf_counter()
    proc.join(TIMEOUT)
    duration = time.perf_counter() - t0
    assert proc.exitcode == 0
    kills = trials = checked = 0
    while kills < 5 and trials < 15:
        trials += 1
        runs = [f"pg/{trials}/{k}" for k in range(4)]
        proc = _start("put_many", root, runs)
        duration = _kill_at_random(proc, rng, duration)
        kills += proc.exitcode == -signal.SIGKILL
        checked += _check_consistent(root, "put_many", tmp_path, complete=False, runs=runs)
        work.put_many(root, runs)
        checked += _check_consistent(root, "put_many", tmp_path, complete=True, runs=runs)
    summary = (f"crash suite put_many on PostgreSQL: seed {seed}, {trials} trials, {kills} killed mid-work "
               f"(work takes {duration:.2f} s unkilled), {checked} dataset rows checked, 0 lost")
    print(summary)
    assert kills >= 5, summary
