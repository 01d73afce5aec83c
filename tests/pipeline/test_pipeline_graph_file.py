"""The graph file: plain versioned data, atomic, one quantum readable alone, damage reported."""

from __future__ import annotations

import json
import re

import pytest

from skybutler import GraphError
from skybutler.pipeline import GRAPH_VERSION, QuantumGraph, build_quantum_graph
from support.pipeline_repo import INPUTS

# The tests share module fixtures (the built graph): on one xdist worker (--dist loadgroup in
# pyproject.toml) they are built once per run, not once per worker.
pytestmark = pytest.mark.xdist_group("graph-file")


@pytest.fixture(scope="module")
def graph(filled_repo_template, tmp_path_factory):
    from skybutler.pipeline import Pipeline
    from support.pipeline_repo import PIPELINE_YAML, copy_repository

    butler = copy_repository(filled_repo_template, tmp_path_factory.mktemp("graph") / "repo")
    yield build_quantum_graph(butler, Pipeline.from_yaml(PIPELINE_YAML), input_collections=INPUTS,
                              output_run="u/test/run1")
    butler.close()


def test_a_written_graph_reads_back_identical(graph, tmp_path):
    path = tmp_path / "g.qg"
    graph.write(path)
    again = QuantumGraph.read(path)
    assert [q.to_dict() for q in again] == [q.to_dict() for q in graph]
    assert again.counts() == graph.counts()
    assert again.init_outputs == graph.init_outputs
    assert again.header["pipeline"] == graph.header["pipeline"]
    assert [r.extra["path"] for q in again for r in q.output_refs()] == [
        r.extra["path"] for q in graph for r in q.output_refs()]


def test_the_file_is_plain_json_lines_with_a_versioned_header(graph, tmp_path):
    path = tmp_path / "g.qg"
    graph.write(path)
    lines = path.read_bytes().splitlines()
    header = json.loads(lines[0])
    assert header["format"] == "skybutler-quantum-graph" and header["version"] == GRAPH_VERSION
    assert header["counts"] == graph.counts()
    first = json.loads(lines[1])
    assert first["task"] == "make_calexp" and "raw" in first["inputs"]
    assert QuantumGraph.read_header(path)["run"] == "u/test/run1"


def test_one_quantum_or_one_task_is_read_without_the_rest(graph, tmp_path):
    path = tmp_path / "g.qg"
    graph.write(path)
    for q in list(graph)[::7]:
        assert QuantumGraph.read_quantum(path, q.id).to_dict() == q.to_dict()
    coadds = QuantumGraph.read(path, tasks=["coadd"])
    assert [q.id for q in coadds] == [q.id for q in graph.by_task("coadd")]
    some = [q.id for q in graph.by_task("gather_visit")][:2]
    assert [q.id for q in QuantumGraph.read(path, quanta=some)] == some
    with pytest.raises(GraphError, match="no quantum"):
        QuantumGraph.read_quantum(path, "00000000-0000-7000-8000-000000000000")
    with pytest.raises(GraphError, match="no task 'nope'"):
        QuantumGraph.read(path, tasks=["nope"])


def test_writing_is_atomic_and_leaves_no_temporary_file(graph, tmp_path):
    tmp_path = tmp_path / "graphs"
    tmp_path.mkdir()
    path = tmp_path / "g.qg"
    path.write_text("previous")
    graph.write(path)
    assert [p.name for p in tmp_path.iterdir()] == ["g.qg"]

    class BoomError(Exception):
        pass

    def broken():
        raise BoomError

    broken_graph = QuantumGraph(graph.header, graph)
    broken_graph.counts = broken  # fail half-way through a write
    with pytest.raises(BoomError):
        broken_graph.write(path)
    assert [p.name for p in tmp_path.iterdir()] == ["g.qg"]
    assert len(QuantumGraph.read(path)) == len(graph)


def test_a_newer_format_version_is_refused(graph, tmp_path):
    path = tmp_path / "g.qg"
    graph.write(path)
    data = path.read_bytes()
    first, rest = data.split(b"\n", 1)
    header = json.loads(first)
    header["version"] = GRAPH_VERSION + 1
    path.write_bytes(json.dumps(header).encode() + b"\n" + rest)
    with pytest.raises(GraphError, match=rf"format version {GRAPH_VERSION + 1}.*Upgrade skybutler"):
        QuantumGraph.read(path)


@pytest.mark.parametrize("keep", [0.999, 0.5, 0.01])
def test_a_truncated_file_is_reported(graph, tmp_path, keep):
    path = tmp_path / "g.qg"
    graph.write(path)
    data = path.read_bytes()
    path.write_bytes(data[:int(len(data) * keep)])
    with pytest.raises(GraphError, match="truncated|damaged"):
        QuantumGraph.read(path)


def test_something_else_is_not_a_graph(tmp_path):
    path = tmp_path / "x.qg"
    path.write_text('{"hello": 1}\n')
    with pytest.raises(GraphError, match="not a skybutler quantum graph"):
        QuantumGraph.read(path)
    with pytest.raises(GraphError, match="Cannot open"):
        QuantumGraph.read(tmp_path / "missing.qg")


def test_dot_and_mermaid_show_quanta_and_datasets(graph):
    dot = graph.to_dot()
    assert dot.startswith("digraph quantum_graph {") and dot.rstrip().endswith("}")
    assert dot.count("shape=box") == len(graph)
    assert "make_calexp\\ninstrument=HSC" in dot and " -> " in dot
    mermaid = graph.to_mermaid()
    assert mermaid.startswith("flowchart LR")
    assert len(re.findall(r"^  q\d+\[", mermaid, re.M)) == len(graph) and " --> " in mermaid


def test_descendants_follow_the_edges(graph):
    calexp_q = graph.by_task("make_calexp")[0]
    below = graph.descendants([calexp_q.id])
    labels = {graph[q].task_label for q in below}
    assert labels == {"gather_visit", "make_warp", "coadd"}
    assert all(calexp_q.id not in graph[q].upstream or graph[q].task_label != "coadd" for q in below)
