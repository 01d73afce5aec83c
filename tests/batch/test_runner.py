"""The job runner: stage in, run in a scratch repository, gather, junk, stage out, outcome — never the central database."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest

from skybutler import Image
from skybutler.batch.manifest import (
    JobManifest,
    JobOutcome,
    OutputFile,
    PlannedOutput,
    QCPattern,
    StagedInput,
    read_json_model,
)
from skybutler.batch.runner import EXIT_BAD_MANIFEST, EXIT_OK, job_main, read_status, run_job
from skybutler.datastore import Datastore
from skybutler.pipeline import GraphExecutor, Input, Output, Pipeline, QuantumGraph, Task, build_quantum_graph
from skybutler.transfer.subset import write_subset
from support.pipeline_repo import INPUTS, copy_repository, filled_repo_template  # noqa: F401

RUN = "u/batch/run1"

STRAY = "written by a task that forgot its output directory"


class StrayWriter(Task):
    """Makes an image with a header, and leaves a stray file in its working directory."""

    dimensions = ("visit", "detector")
    calexp = Input("calexp", ("visit", "detector"), "array")
    image = Output("stamp", ("visit", "detector"), "image")

    def run(self, calexp):
        Path("stray.txt").write_text(STRAY)
        self.log.warning("seeing is poor on detector %s", 1)
        return {"image": Image(np.asarray(calexp, dtype=np.float32),
                               header={"SEEING": 0.75, "OBJECT": "field 7"})}


def _pipeline(*, stray: bool = False, gather: bool = False, fail_detector: int | None = None,
              allocate_bytes: int = 0) -> Pipeline:
    tasks = {"make_calexp": {"class": "support.toy_tasks:MakeCalexp",
                             "config": {"fail_detector": fail_detector, "allocate_bytes": allocate_bytes}}}
    if gather:
        tasks["gather_visit"] = {"class": "support.toy_tasks:GatherVisit"}
    if stray:
        tasks["stray"] = {"class": f"{__name__}:StrayWriter"}
    return Pipeline.from_mapping({"description": "runner tests", "tasks": tasks})


def _file_input(butler, ref) -> StagedInput:
    record = butler.registry.get_files([ref.id])[ref.id]
    return StagedInput(dataset_id=ref.id, source=str(Path(butler.datastore.root) / record.path), path=record.path,
                       size=record.size, checksum=record.checksum, checksum_algorithm=record.checksum_algorithm)


def make_job(central, directory: Path, pipeline: Pipeline, *, where: str, **manifest) -> Path:
    """A submission directory with one job of every quantum of the graph; returns its manifest path.

    The central run already holds the task configurations, as after a submission; the
    subset holds the records, dataset types, inputs (configurations included) and their files.
    """
    graph = build_quantum_graph(central, pipeline, input_collections=INPUTS, output_run=RUN, where=where)
    GraphExecutor(central, graph).prepare()  # output dataset types and configurations, centrally
    directory.mkdir(parents=True)
    graph.write(directory / "graph.qgraph")
    job_dir = directory / "jobs" / "job_1"
    job_dir.mkdir(parents=True)
    produced = {r.id for q in graph for r in q.output_refs()}
    refs = {r.id: r for q in graph for r in q.input_refs() if r.id not in produced}
    refs |= {r.id: r for r in graph.init_outputs.values()}
    write_subset(central.registry, job_dir / "subset.sqlite3", dataset_types=graph.dataset_types.values(),
                 data_ids=[*(q.data_id for q in graph), *(r.data_id for r in refs.values())],
                 refs=refs.values(), files=central.registry.get_files(list(refs)), runs=[RUN])
    outputs = [PlannedOutput(dataset_id=r.id, dataset_type=r.dataset_type.name, quantum_id=q.id,
                             path=r.extra["path"]) for q in graph for r in q.output_refs()]
    config = central.config.model_dump(mode="json")
    values = dict(submission="sub", job="job_1", run=RUN, graph="../../graph.qgraph", quanta=[q.id for q in graph],
                  inputs=[_file_input(central, r) for r in refs.values()], outputs=outputs,
                  destination=central.datastore.root,
                  repository_config={"templates": config["templates"], "formats": config["formats"],
                                     "datastore": {"checksum": config["datastore"]["checksum"]}})
    values.update(manifest)
    path = job_dir / "manifest.json"
    path.write_text(JobManifest(**values).model_dump_json(indent=1))
    return path


@pytest.fixture
def central(filled_repo_template, tmp_path):  # noqa: F811 - the fixture imported above
    butler = copy_repository(filled_repo_template, tmp_path / "central")
    yield butler
    butler.close()


def _graph(manifest: Path) -> QuantumGraph:
    return QuantumGraph.read(manifest.parent / "../../graph.qgraph")


def _manifest(path: Path) -> JobManifest:
    return JobManifest.model_validate_json(path.read_text())


def _file_matches(root: str, output: OutputFile) -> bool:
    store = Datastore(root, checksum=output.checksum_algorithm or "md5")
    return (store.size(output.path) == output.size
            and store.checksum(output.path) == f"{output.checksum_algorithm}:{output.checksum}")


def test_a_job_stages_its_outputs_to_the_destination_and_lists_them_with_their_checksums(central, tmp_path):
    manifest = make_job(central, tmp_path / "sub", _pipeline(gather=True), where="visit = 903334")
    attempt = manifest.parent / "attempt_1"
    outcome = run_job(manifest, attempt)

    assert outcome.state == "succeeded" and outcome.failure_class is None and outcome.attempt == 1
    planned = {p.dataset_id: p.path for p in _manifest(manifest).outputs}
    assert {o.dataset_id: o.path for o in outcome.outputs} == planned  # every output, logs included
    assert all(_file_matches(central.datastore.root, o) for o in outcome.outputs)
    assert {o.format for o in outcome.outputs} == {"npy", "json", "txt"}
    assert [q.status for q in outcome.quanta] == ["succeeded"] * 5
    assert read_json_model(attempt / "outcome" / "outcome.json", JobOutcome, version=1) == outcome
    # The central registry knows nothing of them until the merge: the job never opened it.
    assert not central.registry.get_datasets(list(planned))
    scratch = sqlite3.connect(attempt / "outcome" / outcome.registry)
    assert scratch.execute("SELECT count(*) FROM execution WHERE status = 'succeeded'").fetchone() == (5,)
    assert not (attempt / "scratch").exists() and outcome.junk is None
    assert outcome.host and outcome.software["python"] and outcome.wall_time > 0
    assert set(outcome.stage_seconds) >= {"stage_in", "run", "stage_out"}
    assert (attempt / "job.pid").read_text().split()[1].isdigit()


def test_status_lines_follow_the_job_through_its_states_in_order(central, tmp_path):
    manifest = make_job(central, tmp_path / "sub", _pipeline(gather=True), where="visit = 903334")
    run_job(manifest, manifest.parent / "attempt_1")
    events = read_status(manifest.parent / "attempt_1")
    job_states = [e.state for e in events if e.quantum_id is None]
    assert job_states == ["staging_in", "running", "staging_out", "succeeded"]
    graph = _graph(manifest)
    per_quantum = [e for e in events if e.quantum_id is not None]
    assert {e.quantum_id for e in per_quantum} == set(graph.quanta) and {e.state for e in per_quantum} == {"succeeded"}
    states = [e.state for e in events]
    assert states.index("running") < states.index("succeeded") < states.index("staging_out")
    gather = next(q.id for q in graph if q.task_label == "gather_visit")
    assert [e.quantum_id for e in per_quantum][-1] == gather  # after the calexps it reads
    assert [e.time for e in events] == sorted(e.time for e in events)


@pytest.mark.parametrize("damage", ["checksum", "size", "missing"])
def test_an_input_that_is_missing_or_not_what_the_manifest_says_fails_the_job_before_any_task_runs(
        central, tmp_path, damage):
    manifest = make_job(central, tmp_path / "sub", _pipeline(), where="visit = 903334 AND detector = 1")
    m = _manifest(manifest)
    raw = next(i for i in m.inputs if "/raw/" in i.path)
    if damage == "checksum":
        raw.checksum = "0" * 32
    elif damage == "size":
        raw.size += 1
    else:
        raw.source += ".gone"
    manifest.write_text(m.model_dump_json())
    attempt = manifest.parent / "attempt_1"

    outcome = run_job(manifest, attempt)

    assert (outcome.state, outcome.failure_class) == ("failed", "staging")
    assert raw.path in outcome.reason and str(raw.dataset_id) in outcome.reason
    expected = {"checksum": "the manifest says " + "0" * 32, "size": f"the manifest says {raw.size}",
                "missing": "no such file"}[damage]
    assert expected in outcome.reason
    assert [e.state for e in read_status(attempt)] == ["staging_in", "failed"]
    assert outcome.outputs == [] and {q.status for q in outcome.quanta} == {"not_run"}
    assert not any(Datastore(central.datastore.root).exists(p.path) for p in m.outputs)
    assert outcome.registry == "" and not (attempt / "outcome" / "registry.sqlite3").exists()


@pytest.mark.parametrize("mode", ["link", "copy"])
def test_local_inputs_are_hard_linked_or_copied_as_the_manifest_asks_and_scratch_is_kept_when_asked(
        central, tmp_path, mode):
    manifest = make_job(central, tmp_path / "sub", _pipeline(), where="visit = 903334 AND detector = 1",
                        stage_mode=mode, keep_scratch=True)
    attempt = manifest.parent / "attempt_1"
    assert run_job(manifest, attempt).state == "succeeded"
    for i in _manifest(manifest).inputs:
        staged = attempt / "scratch" / "datastore" / i.path
        assert staged.read_bytes() == Path(i.source).read_bytes()
        assert (staged.stat().st_ino == Path(i.source).stat().st_ino) == (mode == "link")
    assert (attempt / "scratch" / "skybutler.yaml").is_file()


def test_a_failing_task_fails_its_quantum_blocks_its_descendants_and_the_rest_is_staged(central, tmp_path):
    manifest = make_job(central, tmp_path / "sub", _pipeline(gather=True, fail_detector=2),
                        where="visit = 903334", qc=[QCPattern(pattern=r"detector \d is broken", severity="error")])
    attempt = manifest.parent / "attempt_1"
    outcome = run_job(manifest, attempt)

    by_status = {}
    for q in outcome.quanta:
        by_status.setdefault(q.status, []).append(q)
    assert [q.data_id["detector"] for q in by_status["failed"]] == [2]
    assert [q.task_label for q in by_status["not_run"]] == ["gather_visit"]
    assert len(by_status["succeeded"]) == 3
    assert (outcome.state, outcome.failure_class) == ("failed", "task")
    assert "RuntimeError: detector 2 is broken" in outcome.reason
    succeeded = {q.quantum_id for q in by_status["succeeded"]}
    assert {o.quantum_id for o in outcome.outputs} == succeeded and len(outcome.outputs) == 6  # calexp + log each
    assert all(_file_matches(central.datastore.root, o) for o in outcome.outputs)
    # The failure's log tail and traceback are matched too.
    failed = by_status["failed"][0]
    assert any(m.quantum_id == failed.quantum_id and m.execution_id == failed.execution_id for m in outcome.qc)
    events = {(e.quantum_id, e.state) for e in read_status(attempt)}
    assert (failed.quantum_id, "failed") in events and (by_status["not_run"][0].quantum_id, "blocked") in events
    assert (attempt / "scratch").is_dir()  # kept for the operator


def test_a_quantum_over_its_memory_limit_fails_the_job_as_out_of_memory(central, tmp_path):
    manifest = make_job(central, tmp_path / "sub", _pipeline(allocate_bytes=2_000_000_000),
                        where="visit = 903334 AND detector = 1", memory_limit_mb=300)
    outcome = run_job(manifest, manifest.parent / "attempt_1")
    assert (outcome.state, outcome.failure_class) == ("failed", "out_of_memory")
    assert "memory limit of 300 MiB" in outcome.reason


def test_qc_patterns_match_log_lines_of_the_tasks_they_name(central, tmp_path):
    qc = [QCPattern(pattern=r"level 1\d\.0", severity="info", tasks=["make_calexp"]),
          QCPattern(pattern=r"level", severity="warning", tasks=["gather_visit"]),
          QCPattern(pattern=r"printed by", severity="debug")]
    manifest = make_job(central, tmp_path / "sub", _pipeline(gather=True), where="visit = 903334 AND detector = 1",
                        qc=qc)
    outcome = run_job(manifest, manifest.parent / "attempt_1")
    graph = _graph(manifest)
    calexp = next(q for q in graph if q.task_label == "make_calexp")
    matches = [(m.pattern, m.severity, m.task_label, m.quantum_id) for m in outcome.qc]
    assert matches == [(r"level 1\d\.0", "info", "make_calexp", calexp.id),
                       ("printed by", "debug", "make_calexp", calexp.id)]
    staged_log = next(o for o in outcome.outputs if o.dataset_id == calexp.log.id)
    log = (Path(central.datastore.root) / staged_log.path).read_text()  # line numbers are the log's
    first = outcome.qc[0]
    assert log.splitlines()[first.line_number - 1] == first.line and "level 10.0 bias 1.0" in first.line
    assert first.execution_id == next(q.execution_id for q in outcome.quanta if q.quantum_id == calexp.id)


def test_a_stray_file_goes_into_the_junk_tarball_and_never_to_the_destination(central, tmp_path):
    # The first FITS output of the test process imports astropy (about 0.5 s).
    manifest = make_job(central, tmp_path / "sub", _pipeline(stray=True), where="visit = 903334 AND detector = 1",
                        metadata_keys={"stamp": ["SEEING", "OBJECT", "NOSUCHKEY"]})
    attempt = manifest.parent / "attempt_1"
    outcome = run_job(manifest, attempt)

    assert outcome.state == "succeeded" and outcome.junk == "junk.tar.gz"
    with tarfile.open(attempt / "outcome" / outcome.junk) as tar:
        assert tar.getnames() == ["stray.txt"]
        assert tar.extractfile("stray.txt").read().decode() == STRAY
    assert not list(Path(central.datastore.root).rglob("stray.txt"))
    stamp = next(o for o in outcome.outputs if o.dataset_type == "stamp")
    assert stamp.format == "fits" and stamp.metadata == {"SEEING": 0.75, "OBJECT": "field 7"}
    assert not (Path.cwd() / "stray.txt").exists()


def _remove_logs(store: Datastore, outcome: JobOutcome) -> None:
    # A log differs from one attempt to the next (times, execution ids): the service removes
    # unregistered leftovers at planned paths before a new attempt, as a put replaces a file no row names.
    store.remove([o.path for o in outcome.outputs if o.dataset_type.endswith("_log")])


def test_a_repeated_attempt_keeps_identical_files_at_the_destination(central, tmp_path):
    manifest = make_job(central, tmp_path / "sub", _pipeline(), where="visit = 903334 AND detector = 1")
    first = run_job(manifest, manifest.parent / "attempt_1")
    calexp = next(o for o in first.outputs if o.dataset_type == "calexp")
    path = Path(central.datastore.root) / calexp.path
    inode = path.stat().st_ino
    _remove_logs(Datastore(central.datastore.root), first)
    again = run_job(manifest, manifest.parent / "attempt_2")
    assert again.state == "succeeded" and again.attempt == 2, again.reason
    assert [o.path for o in again.outputs] == [o.path for o in first.outputs]
    assert next(o.checksum for o in again.outputs if o.dataset_type == "calexp") == calexp.checksum
    assert path.stat().st_ino == inode  # kept, not replaced


def test_a_different_file_at_the_destination_fails_the_job_and_is_not_overwritten(central, tmp_path):
    manifest = make_job(central, tmp_path / "sub", _pipeline(), where="visit = 903334 AND detector = 1")
    m = _manifest(manifest)
    calexp = next(p for p in m.outputs if p.dataset_type == "calexp")
    there = Path(central.datastore.root) / calexp.path
    there.parent.mkdir(parents=True)
    there.write_bytes(b"someone else's calexp")

    outcome = run_job(manifest, manifest.parent / "attempt_1")

    assert (outcome.state, outcome.failure_class) == ("failed", "staging")
    assert calexp.path in outcome.reason and "not overwritten" in outcome.reason
    assert there.read_bytes() == b"someone else's calexp"
    assert [o.dataset_type for o in outcome.outputs] == ["make_calexp_log"]  # the log still went out
    assert [q.status for q in outcome.quanta] == ["succeeded"]


def test_an_output_written_elsewhere_than_planned_fails_the_job_naming_both_paths(central, tmp_path):
    manifest = make_job(central, tmp_path / "sub", _pipeline(), where="visit = 903334 AND detector = 1")
    m = _manifest(manifest)
    m.repository_config["templates"] = {"default": "{run}/elsewhere/{dataset_type}_{data_id}"}
    manifest.write_text(m.model_dump_json())
    outcome = run_job(manifest, manifest.parent / "attempt_1")
    assert (outcome.state, outcome.failure_class) == ("failed", "staging")
    assert "elsewhere" in outcome.reason and "planned at" in outcome.reason and outcome.outputs == []


@pytest.mark.s3
def test_inputs_are_fetched_from_and_outputs_staged_out_to_an_object_store(central, tmp_path, s3_bucket):
    bucket, options = s3_bucket
    root = f"s3://{bucket}/central"
    manifest = make_job(central, tmp_path / "sub", _pipeline(), where="visit = 903334 AND detector = 1",
                        destination=root, destination_options=options)
    m = _manifest(manifest)
    import fsspec

    fs = fsspec.filesystem("s3", **options)
    for i in m.inputs:  # the central datastore on S3: inputs are URLs, with the destination's options
        fs.put_file(i.source, f"{bucket}/central/{i.path}")
        i.source = f"{root}/{i.path}"
    manifest.write_text(m.model_dump_json())
    outcome = run_job(manifest, manifest.parent / "attempt_1")
    assert outcome.state == "succeeded" and len(outcome.outputs) == 2, outcome.reason
    store = Datastore(f"s3://{bucket}/central", storage_options=options)
    for o in outcome.outputs:
        assert store.checksum(o.path) == f"{o.checksum_algorithm}:{o.checksum}" and store.size(o.path) == o.size
    _remove_logs(store, outcome)
    again = run_job(manifest, manifest.parent / "attempt_2")  # the same calexp there: kept
    assert again.state == "succeeded", again.reason


def test_job_main_returns_3_for_an_unreadable_manifest_and_0_for_a_failed_job(central, tmp_path, capsys):
    bad = tmp_path / "manifest.json"
    bad.write_text("{not json")
    assert job_main(str(bad), str(tmp_path / "attempt_1")) == EXIT_BAD_MANIFEST
    assert "cannot read the job manifest" in capsys.readouterr().err
    manifest = make_job(central, tmp_path / "sub", _pipeline(fail_detector=1), where="visit = 903334 AND detector = 1")
    assert job_main(str(manifest), str(manifest.parent / "attempt_1")) == EXIT_OK
    assert json.loads((manifest.parent / "attempt_1/outcome/outcome.json").read_text())["state"] == "failed"


def test_job_main_writes_a_failed_outcome_when_something_unexpected_happens(central, tmp_path, capsys):
    manifest = make_job(central, tmp_path / "sub", _pipeline(), where="visit = 903334 AND detector = 1")
    (tmp_path / "sub" / "graph.qgraph").write_bytes(b"not a graph")
    attempt = manifest.parent / "attempt_1"
    assert job_main(str(manifest), str(attempt)) == 1
    assert "GraphError" in capsys.readouterr().err
    outcome = read_json_model(attempt / "outcome" / "outcome.json", JobOutcome, version=1)
    assert outcome.state == "failed" and "GraphError" in outcome.reason
    assert [e.state for e in read_status(attempt)] == ["failed"]


def test_a_job_runs_in_a_fresh_process_from_the_command_line(central, tmp_path):
    # About 1 s (a fresh interpreter importing skybutler): the one test of the process an engine starts.
    manifest = make_job(central, tmp_path / "sub", _pipeline(), where="visit = 903334 AND detector = 1")
    attempt = manifest.parent / "attempt_3"
    done = subprocess.run([sys.executable, "-m", "skybutler.batch.runner", str(manifest), str(attempt)],
                          capture_output=True, text=True, timeout=60,
                          env={"PYTHONPATH": str(Path(__file__).parent.parent), "PATH": "/usr/bin:/bin",
                               "SKYBUTLER_REGISTRY_DB": "postgresql://nobody@127.0.0.1:1/central"})
    assert done.returncode == 0, done.stderr
    outcome = read_json_model(attempt / "outcome" / "outcome.json", JobOutcome, version=1)
    assert outcome.state == "succeeded" and outcome.attempt == 3
    # The worker's override for the central database (unreachable here) did not reach the scratch repository.
    assert all(_file_matches(central.datastore.root, o) for o in outcome.outputs)
    assert int((attempt / "job.pid").read_text().split()[1]) != os.getpid()
