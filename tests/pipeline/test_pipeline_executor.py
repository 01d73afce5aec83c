"""The single-node executor: dependency order, failures stop only descendants, resume, nothing half-written."""

from __future__ import annotations

from pathlib import Path

import pytest

from skybutler import ExecutionError
from skybutler.pipeline import Pipeline, QuantumGraph, build_quantum_graph, execute_graph
from skybutler.provenance import ExecutionStatus
from skybutler.registry import provenance_sql
from support.pipeline_repo import INPUTS, PIPELINE_YAML

RUN = "u/test/run1"


def _graph(repo, pipeline, **kwargs):
    return build_quantum_graph(repo, pipeline, input_collections=INPUTS, output_run=RUN, **kwargs)


def _with_config(**overrides) -> Pipeline:
    p = Pipeline.from_yaml(PIPELINE_YAML)
    data = p.to_mapping()
    data["tasks"]["make_calexp"]["config"].update(overrides)
    return Pipeline.from_mapping(data)


def test_every_quantum_runs_and_writes_its_outputs_with_the_graphs_ids_and_names(repo, pipeline, tmp_path):
    graph = _graph(repo, pipeline)
    graph.write(tmp_path / "g.qg")
    seen = []
    report = execute_graph(repo.root, tmp_path / "g.qg", progress=seen.append)
    assert report.ok and len(report.succeeded) == len(graph) == len(seen)
    assert {k: v["succeeded"] for k, v in report.counts().items()} == graph.counts()
    files = repo.registry.get_files([r.id for q in graph for r in q.output_refs()])
    for q in graph:
        for ref in q.output_refs():
            assert files[ref.id].path == ref.extra["path"]
    q = graph.by_task("make_calexp")[0]
    assert repo.get(q.outputs["calexp"][0]).sum() == pytest.approx(16 * (10 - 1) * 3.0)
    log = repo.get(q.log)
    assert "level 10.0 bias 1.0" in log and "[stdout] printed by make_calexp" in log
    config_ref = graph.init_outputs["make_calexp"]
    assert repo.get(config_ref) == pipeline.tasks["make_calexp"].config.to_dict()
    assert repo.get(graph.by_task("coadd")[0].outputs["coadd"][0])["visits"]


def test_dependency_order_is_respected(repo, pipeline):
    graph = _graph(repo, pipeline)
    order = []
    execute_graph(repo, graph, progress=lambda o: order.append(o.quantum_id))
    position = {qid: i for i, qid in enumerate(order)}
    for q in graph:
        assert all(position[u] < position[q.id] for u in q.upstream)


def test_a_second_run_skips_what_exists(repo, pipeline):
    graph = _graph(repo, pipeline)
    assert execute_graph(repo, graph).ok
    again = execute_graph(repo, graph)
    assert len(again.skipped) == len(graph) and again.ok
    counts = provenance_sql.execution_counts(repo.registry, run=RUN)
    assert {label: n for label, status, n in counts if status == "succeeded"} == graph.counts()
    assert [label for label, *_ in counts][0] == "make_calexp"


def test_a_failed_quantum_stops_only_its_descendants_and_a_second_run_resumes(repo, tmp_path):
    flag = tmp_path / "broken"
    flag.write_text("detector 2 is broken while this file exists")
    graph = _graph(repo, _with_config(fail_detector=2, fail_while_exists=str(flag)))
    report = execute_graph(repo, graph)

    failed = {q.quantum_id for q in report.failed}
    assert {(o.task_label, o.data_id["detector"]) for o in report.failed} == {("make_calexp", 2)}
    assert len(failed) == 4 and all("RuntimeError: detector 2 is broken" in o.reason for o in report.failed)
    blocked = graph.descendants(failed)
    assert {o.quantum_id for o in report.not_run} == blocked
    assert {graph[q].task_label for q in blocked} >= {"gather_visit", "make_warp"}
    assert len(report.succeeded) == len(graph) - len(failed) - len(blocked) > 0
    assert all("upstream quantum failed: make_calexp" in o.reason for o in report.not_run)

    # Nothing of a failed quantum was written: no dataset, no file, no log.
    for qid in failed:
        refs = graph[qid].output_refs()
        assert not repo.registry.get_datasets([r.id for r in refs])
        assert not any(repo.datastore.exists(r.extra["path"]) for r in refs)
    rows = provenance_sql.executions(repo.registry, run=RUN, status="failed")
    assert len(rows) == 4 and all(r["reason"].startswith("RuntimeError") for r in rows)
    assert "Traceback" in rows[0]["details"]
    assert len(provenance_sql.executions(repo.registry, run=RUN, status="not_run")) == len(blocked)

    flag.unlink()
    second = execute_graph(repo, graph)
    assert second.ok
    assert {o.quantum_id for o in second.succeeded} == failed | blocked
    assert len(second.skipped) == len(report.succeeded)


def test_files_left_by_an_attempt_killed_mid_commit_do_not_block_the_retry(repo, pipeline):
    graph = _graph(repo, pipeline.subset("make_calexp"), where="visit = 903334")
    q = graph.by_task("make_calexp")[0]
    orphan = q.outputs["calexp"][0].extra["path"]
    path = Path(repo.root) / orphan  # what a kill between rename and commit leaves
    path.parent.mkdir(parents=True)
    path.write_bytes(b"half")
    report = execute_graph(repo, graph)
    assert report.ok
    assert repo.get(q.outputs["calexp"][0]).shape == (4, 4)


def test_a_run_refuses_a_different_configuration_for_the_same_task(repo, pipeline):
    assert execute_graph(repo, _graph(repo, pipeline.subset("make_calexp"), where="visit = 903334")).ok
    other = _with_config(scale=9.0).subset("make_calexp")
    graph = _graph(repo, other, where="visit = 903336")
    with pytest.raises(ExecutionError, match="different configuration for task 'make_calexp'"):
        execute_graph(repo, graph)


def test_worker_processes_run_the_graph_and_survive_a_killed_worker(repo, tmp_path):
    graph = _graph(repo, _with_config(kill_detector=1).subset("single_frame"), where="visit IN (903334, 903336)")
    graph.write(tmp_path / "g.qg")
    report = execute_graph(repo.root, QuantumGraph.read(tmp_path / "g.qg"), processes=2)
    assert {(o.task_label, o.data_id["detector"]) for o in report.failed} == {("make_calexp", 1)}
    assert len(report.failed) == 2 and all(o.reason.startswith("WorkerDied") for o in report.failed)
    assert {o.task_label for o in report.not_run} == {"gather_visit"} and len(report.not_run) == 2
    assert len(report.succeeded) == 6
    rows = provenance_sql.executions(repo.registry, run=RUN, status="failed")
    assert len(rows) == 2 and rows[0]["reason"].startswith("WorkerDied")


def test_a_quantum_over_its_memory_limit_fails_with_memory_error(repo):
    graph = _graph(repo, _with_config(allocate_bytes=2_000_000_000).subset("make_calexp"),
                   where="visit = 903334 AND detector IN (0, 1)")
    report = execute_graph(repo, graph, processes=2, memory_limit=300_000_000)
    assert len(report.failed) == 2
    assert all(o.reason.startswith("MemoryError") for o in report.failed)


def test_in_memory_repositories_run_in_one_process_only(tmp_path, pipeline):
    from skybutler import Butler
    from support.pipeline_repo import fill_repository

    butler = Butler.create(tmp_path / "mem", registry="sqlite://", datastore="memory://executor-test")
    fill_repository(butler)
    graph = _graph(butler, pipeline.subset("single_frame"))
    with pytest.raises(ExecutionError, match="in-memory"):
        execute_graph(butler, graph, processes=2)
    report = execute_graph(butler, graph)
    assert report.ok
    assert report.counts()["gather_visit"] == {ExecutionStatus.SUCCEEDED.value: 4}


# -- what a dying worker is reported as ------------------------------------------------------

DYING = {"description": "one detector's worker dies",
         "tasks": {"die": {"class": "support.dying_tasks:Die", "config": {"detector": 1}}}}


@pytest.mark.parametrize("how, expected", [
    ("SIGKILL", "killed by SIGKILL (Killed)"),
    ("SIGSEGV", "killed by SIGSEGV (Segmentation fault)"),
    ("exit:3", "exited with code 3"),
])
def test_a_dead_worker_is_reported_as_what_happened_to_it(repo, tmp_path, how, expected):
    from click.testing import CliRunner

    from skybutler.cli import main

    mapping = {**DYING, "tasks": {"die": {**DYING["tasks"]["die"], "config": {"detector": 1, "how": how}}}}
    graph = _graph(repo, Pipeline.from_mapping(mapping), where="visit = 903334")
    graph.write(tmp_path / "g.qg")
    result = CliRunner().invoke(main, ["pipeline", "run", repo.root, str(tmp_path / "g.qg"), "-j", "2"])
    assert result.exit_code == 1
    output = " ".join(result.output.split())  # rich wraps long lines
    assert "FAILED die {instrument=HSC, detector=1, visit=903334}: WorkerDied: the worker process" in output
    assert expected in output
    assert "out-of-memory" not in output and "out of memory" not in output  # no memory limit, no OOM kill
    (row,) = provenance_sql.executions(repo.registry, run=RUN, status="failed")
    assert row["reason"].startswith("WorkerDied") and expected in row["reason"]
    assert len(provenance_sql.executions(repo.registry, run=RUN, status="succeeded")) == 3


def test_death_reasons_say_out_of_memory_only_on_the_kernels_word_or_near_the_limit():
    from skybutler.pipeline.executor import death_reason

    calm = {"/proc/vmstat": 4}
    assert death_reason(-9, oom_before=calm, oom_after=calm) == (
        "WorkerDied: the worker process was killed by SIGKILL (Killed)")
    killed = death_reason(-9, oom_before=calm, oom_after={"/proc/vmstat": 5})
    assert "out-of-memory killer (/proc/vmstat oom_kill 4 -> 5)" in killed
    near = death_reason(-9, oom_before=calm, oom_after=calm, memory_limit=100 << 20, peak_rss=95 << 20)
    assert near.endswith("possibly out of memory (peak resident memory 95 MiB, memory limit 100 MiB)")
    assert "memory" not in death_reason(-9, oom_before=calm, oom_after=calm, memory_limit=100 << 20,
                                        peak_rss=10 << 20)
    # Only SIGKILL is the OOM killer's signal.
    assert "memory" not in death_reason(-11, oom_before=calm, oom_after={"/proc/vmstat": 5})


# -- the same configuration in every process ------------------------------------------------


def test_a_registry_set_by_environment_is_the_one_workers_use(tmp_path, monkeypatch, pipeline):
    from multiprocessing import forkserver

    from skybutler import Butler
    from support.forkserver import forkserver_context
    from support.pipeline_repo import fill_repository

    # The test process's one forkserver keeps the environment it started with: started here,
    # after the override, every process later tests fork from it would open `other`.
    forkserver_context()
    forkserver.ensure_running()
    other = tmp_path / "elsewhere" / "other.sqlite3"
    other.parent.mkdir()
    monkeypatch.setenv("SKYBUTLER_REGISTRY_DB", f"sqlite:///{other}")
    butler = Butler.create(tmp_path / "repo")
    assert "registry.sqlite3" in (tmp_path / "repo" / "skybutler.yaml").read_text()  # the file keeps its value
    fill_repository(butler)
    graph = _graph(butler, pipeline.subset("single_frame"), where="visit = 903334")
    monkeypatch.chdir(tmp_path / "elsewhere")  # and workers do not depend on the working directory
    report = execute_graph(str(tmp_path / "repo"), graph, processes=2)
    assert report.ok, [o.reason for o in report.failed]
    assert len(report.succeeded) == 5
    assert not (tmp_path / "repo" / "registry.sqlite3").exists()
    reopened = Butler(tmp_path / "repo", writeable=False)
    assert len(list(reopened.query_datasets("calexp", collections=[RUN]))) == 4


def test_provenance_never_stores_a_secret_quoted_by_an_error(repo):
    message = "cannot reach postgresql://me:hunter2secret@db/x with secret=s3cr3tvalue"
    mapping = {**DYING, "tasks": {"die": {**DYING["tasks"]["die"], "config": {"how": f"raise:{message}"}}}}
    report = execute_graph(repo, _graph(repo, Pipeline.from_mapping(mapping), where="visit = 903334"))
    (failed,) = report.failed
    (row,) = provenance_sql.executions(repo.registry, run=RUN, status="failed")
    stored = row["reason"] + row["details"]
    assert "postgresql://me:***@db/x" in row["reason"] and "giving up" in row["details"]
    assert "hunter2secret" not in stored and "s3cr3tvalue" not in stored
