"""Provenance: every execution recorded, used / wasGeneratedBy / wasDerivedFrom, lineage, W3C PROV export."""

from __future__ import annotations

import json
import uuid

import pytest
from prov.model import ProvDocument

from skybutler import ConfigError, DatasetNotFoundError
from skybutler.pipeline import build_quantum_graph, execute_graph
from skybutler.provenance import (
    config_hash,
    execution_summary,
    export_provenance,
    lineage,
    provenance_of,
    to_prov_document,
)
from support.pipeline_repo import INPUTS, fill_repository

RUN = "u/test/prov"


def _run(butler, pipeline):
    graph = build_quantum_graph(butler, pipeline, input_collections=INPUTS, output_run=RUN)
    report = execute_graph(butler, graph)
    assert report.ok
    return graph


# The tests share module fixtures (the toy pipeline's run): on one xdist worker (--dist loadgroup in
# pyproject.toml) they are built once per run, not once per worker.
pytestmark = pytest.mark.xdist_group("provenance")


@pytest.fixture(scope="module")
def done(filled_repo_template, tmp_path_factory):
    """A repository where the whole toy pipeline ran (shared: these tests only read it)."""
    from skybutler.pipeline import Pipeline
    from support.pipeline_repo import PIPELINE_YAML, copy_repository

    butler = copy_repository(filled_repo_template, tmp_path_factory.mktemp("prov") / "repo")
    yield butler, _run(butler, Pipeline.from_yaml(PIPELINE_YAML))
    butler.close()


def test_every_execution_records_where_when_how_long_and_with_what(done, pipeline):
    repo, graph = done
    q = graph.by_task("make_calexp")[0]
    prov = provenance_of(repo, q.outputs["calexp"][0])
    ex = prov.execution
    assert ex["task_label"] == "make_calexp" and ex["status"] == "succeeded" and ex["run"] == RUN
    assert ex["quantum_id"] == q.id and ex["data_id_key"] == q.data_id.key()
    assert ex["host"] and ex["start_time"] <= ex["end_time"]
    assert ex["cpu_time"] >= 0 and ex["peak_memory"] > 10_000_000
    assert {"python", "skybutler", "numpy"} <= set(ex["software"])
    task = pipeline.tasks["make_calexp"]
    assert ex["config_hash"] == config_hash(task.import_path(), task.config.to_dict())
    assert ex["details"]["task_class"] == "support.toy_tasks:MakeCalexp"
    assert ex["details"]["log_dataset_id"] == str(q.log.id)


def test_used_and_generated_name_datasets_and_their_actual_files(done):
    repo, graph = done
    q = graph.by_task("make_calexp")[0]
    prov = provenance_of(repo, q.outputs["calexp"][0])
    files = repo.registry.get_files([r.id for r in q.input_refs()])
    assert {u.id: u.path for u in prov.used} == {i: f.path for i, f in files.items()}
    config = graph.init_outputs["make_calexp"]
    assert (prov.config.id, prov.config.path) == (config.id, config.extra["path"])
    assert repo.get(prov.config.ref) == {"scale": 3.0, "fail_detector": None, "fail_while_exists": None,
                                         "kill_detector": None, "kill_while_exists": None, "allocate_bytes": 0}
    assert {o.id: o.path for o in prov.outputs} == {r.id: r.extra["path"] for r in q.output_refs()}
    assert {d.id for d in prov.derived_from} == {r.id for r in q.input_refs()}


def test_a_coadd_derives_only_from_the_warps_it_reported_using(done):
    repo, graph = done
    q = next(q for q in graph.by_task("coadd") if len(q.inputs["warps"]) > 1)
    coadd = q.outputs["coadd"][0]
    prov = provenance_of(repo, coadd)
    kept = set(repo.get(coadd)["visits"])
    assert {d.ref.data_id["visit"] for d in prov.derived_from} == kept
    assert {u.ref.data_id["visit"] for u in prov.contributing_only} == {
        r.data_id["visit"] for r in q.inputs["warps"]} - kept
    assert json.dumps(prov.to_dict())


def test_lineage_up_goes_back_to_the_raws_through_used_inputs_only(done):
    repo, graph = done
    q = next(q for q in graph.by_task("coadd") if len(q.inputs["warps"]) > 1)
    coadd = q.outputs["coadd"][0]
    kept = set(repo.get(coadd)["visits"])
    up = lineage(repo, coadd, direction="up")
    by_depth = {}
    for e in up:
        by_depth.setdefault(e.depth, set()).add(e.dataset.ref.dataset_type.name)
    assert by_depth == {1: {"warp"}, 2: {"calexp"}, 3: {"raw", "bias"}}
    assert {e.dataset.ref.data_id["visit"] for e in up if e.depth == 1} == kept
    assert {e.task_label for e in up if e.depth == 2} == {"make_calexp"}
    assert all(e.task_label is None for e in up if e.depth == 3)  # raws were not made here


def test_lineage_down_reaches_every_product_of_a_raw(done):
    repo, graph = done
    q = graph.by_task("make_calexp")[0]
    raw = q.inputs["raw"][0]
    down = lineage(repo, raw, direction="down")
    names = {(e.depth, e.dataset.ref.dataset_type.name) for e in down}
    assert (1, "calexp") in names and (2, "visit_summary") in names and (2, "warp") in names
    warps = {e.dataset.id for e in down if e.dataset.ref.dataset_type.name == "warp"}
    assert warps == {r.id for w in graph.by_task("make_warp") for r in w.outputs["warp"]
                     if q.outputs["calexp"][0] in w.inputs["calexps"]}
    coadds = [e for e in down if e.dataset.ref.dataset_type.name == "coadd"]
    assert all(e.depth == 3 for e in coadds)


def test_an_ingested_dataset_has_no_execution_and_an_unknown_id_is_not_found(done):
    repo, graph = done
    raw = graph.by_task("make_calexp")[0].inputs["raw"][0]
    prov = provenance_of(repo, raw.id)
    assert prov.execution is None and prov.dataset.ref == raw
    with pytest.raises(DatasetNotFoundError):
        provenance_of(repo, uuid.uuid4())
    with pytest.raises(DatasetNotFoundError, match="not a dataset id"):
        provenance_of(repo, "calexp")


def test_execution_summary_counts_executions_per_task(done):
    repo, graph = done
    summary = execution_summary(repo, run=RUN)
    assert {label: n for label, status, n in summary} == graph.counts()
    assert summary[0][0] == "make_calexp"


def test_w3c_prov_export_parses_and_holds_the_lineage(done):
    repo, graph = done
    q = next(q for q in graph.by_task("coadd") if len(q.inputs["warps"]) > 1)
    coadd = q.outputs["coadd"][0]
    text = export_provenance(repo, coadd, format="json")
    doc = ProvDocument.deserialize(content=text, format="json")
    data = json.loads(text)
    assert f"skybutler:dataset-{coadd.id}" in data["entity"]
    assert len(data["activity"]) == 1 + len([e for e in lineage(repo, coadd) if e.task_label])
    assert data["wasDerivedFrom"] and data["used"] and data["wasGeneratedBy"] and data["wasAssociatedWith"]
    assert doc == to_prov_document(repo, coadd)
    provn = export_provenance(repo, coadd, format="provn")
    assert provn.startswith("document") and "wasGeneratedBy(" in provn and "used(" in provn
    with pytest.raises(ConfigError, match="Unknown PROV format 'xml'"):
        export_provenance(repo, coadd, format="xml")


@pytest.mark.parametrize("backend", ["sqlite-local", "postgresql-local"])
def test_lineage_queries_work_on_both_databases(make_butler, pipeline):
    butler = make_butler()
    fill_repository(butler)
    graph = _run(butler, pipeline.subset("make_calexp,gather_visit"))
    summary = graph.by_task("gather_visit")[0].outputs["summary"][0]
    up = lineage(butler, summary)
    assert {e.dataset.ref.dataset_type.name for e in up} == {"calexp", "raw", "bias"}
    assert lineage(butler, graph.by_task("make_calexp")[0].inputs["raw"][0], direction="down")
