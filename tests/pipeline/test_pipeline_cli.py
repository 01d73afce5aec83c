"""The pipeline and provenance commands: thin shells over the library."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from skybutler.cli import main
from skybutler.cli.pipeline_cmds import parse_size
from skybutler.pipeline import QuantumGraph
from support.pipeline_repo import PIPELINE_YAML


@pytest.fixture
def pipeline_file(tmp_path):
    path = tmp_path / "toy.yaml"
    path.write_text(PIPELINE_YAML)
    return path


def _invoke(*args):
    result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    return result


def test_pipeline_show_lists_tasks_and_dataset_types(pipeline_file, monkeypatch):
    from skybutler.cli import pipeline_cmds

    monkeypatch.setattr(pipeline_cmds.console, "width", 200)
    result = _invoke("pipeline", "show", pipeline_file)
    assert result.exit_code == 0, result.output
    for word in ("make_calexp", "support.toy_tasks:MakeCalexp", "visit_summary", "(input)"):
        assert word in result.output
    result = _invoke("pipeline", "show", f"{pipeline_file}#coaddition", "--format", "yaml")
    assert "make_warp" in result.output and "make_calexp:" not in result.output


def test_pipeline_show_reports_a_bad_pipeline_in_one_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("tasks:\n  x: support.toy_tasks:Missing\n")
    result = _invoke("pipeline", "show", bad)
    assert result.exit_code == 1 and "Error: Task 'x'" in result.output and "Traceback" not in result.output


def test_graph_then_run_then_provenance(repo, pipeline_file, tmp_path):
    qg, dot, mmd = tmp_path / "g.qg", tmp_path / "g.dot", tmp_path / "g.mmd"
    result = _invoke("pipeline", "graph", repo.root, pipeline_file, "-i", "HSC/raw/all,HSC/calib",
                     "--output-run", "u/cli/run", "--where", "visit = :v", "--bind", "v=903334",
                     "--save", qg, "--dot", dot, "--mermaid", mmd)
    assert result.exit_code == 0, result.output
    assert "The query matches" in result.output and "make_calexp" in result.output
    graph = QuantumGraph.read(qg)
    assert graph.counts()["make_calexp"] == 4
    assert dot.read_text().startswith("digraph") and mmd.read_text().startswith("flowchart")

    result = _invoke("pipeline", "graph", repo.root, pipeline_file, "-i", "HSC/raw/all,HSC/calib",
                     "--output-run", "u/cli/run2", "--max-quanta", "3")
    assert result.exit_code == 1 and "limit of 3" in result.output

    result = _invoke("pipeline", "run", repo.root, qg, "-j", "1")
    assert result.exit_code == 0, result.output
    assert "succeeded" in result.output

    coadd = graph.by_task("coadd")[0].outputs["coadd"][0]
    result = _invoke("provenance", "show", repo.root, coadd.id)
    assert result.exit_code == 0 and "coadd" in result.output and "succeeded" in result.output
    result = _invoke("provenance", "show", repo.root, coadd.id, "--format", "json")
    assert json.loads(result.output)["execution"]["task_label"] == "coadd"
    result = _invoke("provenance", "lineage", repo.root, coadd.id, "--up", "--format", "json")
    assert {e["dataset_type"] for e in json.loads(result.output)} == {"warp", "calexp", "raw", "bias"}
    raw = graph.by_task("make_calexp")[0].inputs["raw"][0]
    result = _invoke("provenance", "lineage", repo.root, raw.id, "--down")
    assert result.exit_code == 0 and "calexp" in result.output
    result = _invoke("provenance", "export", repo.root, coadd.id, "--format", "provn")
    assert result.output.startswith("document")
    out = tmp_path / "prov.json"
    result = _invoke("provenance", "export", repo.root, coadd.id, "-o", out)
    assert "entity" in json.loads(out.read_text())


def test_a_failed_run_exits_with_status_1(repo, tmp_path):
    path = tmp_path / "failing.yaml"
    path.write_text(PIPELINE_YAML.replace("scale: 3.0", "scale: 3.0\n      fail_detector: 0"))
    qg = tmp_path / "g.qg"
    assert _invoke("pipeline", "graph", repo.root, f"{path}#single_frame", "-i", "HSC/raw/all",
                   "-i", "HSC/calib", "-o", "u/cli/fail", "--save", qg).exit_code == 0
    result = _invoke("pipeline", "run", repo.root, qg)
    assert result.exit_code == 1
    assert "FAILED make_calexp" in result.output and "RuntimeError" in result.output


def test_sizes_are_read_in_powers_of_1024():
    assert parse_size("2GB") == 2 * 1024 ** 3 and parse_size("500MiB") == 500 * 1024 ** 2
    assert parse_size("1.5k") == 1536 and parse_size("1000") == 1000 and parse_size(None) is None
