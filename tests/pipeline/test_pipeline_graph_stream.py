"""Streamed graphs: built straight into the file one quantum at a time, read back one at a time."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from skybutler import GraphError
from skybutler.pipeline import GRAPH_VERSION, Pipeline, QuantumGraph, QuantumGraphBuilder
from skybutler.pipeline._graph_file import GraphWriter
from support.pipeline_repo import INPUTS, PIPELINE_YAML, copy_repository

RUN = "u/test/run1"
DATA = Path(__file__).parent / "data"


# The tests share module fixtures (the repository and its streamed graph): on one xdist worker (--dist loadgroup in
# pyproject.toml) they are built once per run, not once per worker.
pytestmark = pytest.mark.xdist_group("graph-stream")


@pytest.fixture(scope="module")
def butler(filled_repo_template, tmp_path_factory):
    butler = copy_repository(filled_repo_template, tmp_path_factory.mktemp("stream") / "repo")
    yield butler
    butler.close()


def _builder(butler, **kwargs):
    kwargs.setdefault("input_collections", INPUTS)
    kwargs.setdefault("output_run", RUN)
    return QuantumGraphBuilder(butler, Pipeline.from_yaml(PIPELINE_YAML), **kwargs)


def _shape(quanta):
    """What a graph says, without the ids a build makes anew: quanta by (task, data id)."""
    quanta = list(quanta)
    name = {q.id: (q.task_label, tuple(q.data_id.items())) for q in quanta}
    made = {r.id for q in quanta for r in q.output_refs()}

    def refs(group):
        # Existing inputs keep their ids; planned datasets are named by type, data id and file name.
        return {k: [(r.dataset_type.name, tuple(r.data_id.items()), r.run, r.extra.get("path"),
                     None if r.id in made else r.id) for r in v] for k, v in group.items()}

    return sorted((name[q.id], dict(q.data_id.implied), refs(q.inputs), refs(q.outputs),
                   (q.log.dataset_type.name, q.log.extra["path"]), sorted(name[u] for u in q.upstream))
                  for q in quanta)


@pytest.fixture(scope="module")
def streamed(butler, tmp_path_factory):
    path = tmp_path_factory.mktemp("streamed") / "g.qg"
    header = _builder(butler).write(path)
    return path, header


def test_a_streamed_graph_is_the_graph_build_makes(butler, streamed):
    path, header = streamed
    built = _builder(butler).build()
    read = QuantumGraph.read(path)
    assert _shape(read) == _shape(built)
    assert header["counts"] == read.counts() == built.counts()
    assert header["skipped"] == {} and header["run"] == RUN
    assert QuantumGraph.read_header(path) == header
    # The order of the file: tasks in dependency order, each quantum after those it reads from.
    seen: set[uuid.UUID] = set()
    for q in read:
        assert set(q.upstream) <= seen
        seen.add(q.id)


def test_the_streamed_file_is_plain_json_lines_every_version_1_reader_reads(streamed):
    path, header = streamed
    first, second, *_ = path.read_bytes().split(b"\n", 2)
    # The header line was reserved first and filled in last: padded with spaces, still one JSON object.
    assert first.endswith(b" ") and json.loads(first) == header
    assert header["format"] == "skybutler-quantum-graph" and header["version"] == GRAPH_VERSION == 1
    assert json.loads(second)["task"] == header["task_order"][0]


def test_quanta_stream_back_one_at_a_time_by_task(streamed):
    path, header = streamed
    whole = QuantumGraph.read(path)
    stream = QuantumGraph.iter_quanta(path)
    first = next(stream)
    assert first.to_dict() == next(iter(whole)).to_dict()
    assert [q.to_dict() for q in stream] == [q.to_dict() for q in list(whole)[1:]]
    coadds = list(QuantumGraph.iter_quanta(path, tasks=["coadd"]))
    assert [q.id for q in coadds] == [q.id for q in whole.by_task("coadd")] and coadds
    with pytest.raises(GraphError, match="no task 'nope'"):
        list(QuantumGraph.iter_quanta(path, tasks=["nope"]))


def test_quantum_ids_come_from_the_index_alone(streamed):
    path, header = streamed
    whole = QuantumGraph.read(path)
    assert QuantumGraph.quantum_ids(path) == sorted(q.id for q in whole)
    assert QuantumGraph.quantum_ids(path, tasks=["gather_visit"]) == sorted(q.id for q in
                                                                            whole.by_task("gather_visit"))
    for qid in QuantumGraph.quantum_ids(path)[::5]:
        assert QuantumGraph.read_quantum(path, qid).to_dict() == whole[qid].to_dict()


def test_the_builder_holds_no_quantum_it_has_written(butler, tmp_path, monkeypatch):
    builder = _builder(butler)
    ahead: list[int] = []
    add = GraphWriter.add

    def counting_add(writer, label, quantum_id, line):
        # How many quanta the builder has made that the file does not have yet.
        ahead.append(builder.quanta_made - writer.written)
        add(writer, label, quantum_id, line)

    monkeypatch.setattr(GraphWriter, "add", counting_add)
    header = builder.write(tmp_path / "g.qg")
    assert len(ahead) == sum(header["counts"].values()) > 20
    assert max(ahead) == 1


def test_prerequisites_found_a_chunk_of_quanta_at_a_time_are_the_same(butler, tmp_path, monkeypatch):
    whole = _builder(butler).build()
    # Observation times are read for a chunk of quanta at a time; chunks of 3 cross many boundaries.
    monkeypatch.setattr("skybutler.pipeline._builder_parts.CHUNK", 3)
    _builder(butler).write(tmp_path / "g.qg")
    assert _shape(QuantumGraph.read(tmp_path / "g.qg")) == _shape(whole)


def test_a_stopped_build_leaves_no_graph_that_looks_complete(butler, tmp_path, monkeypatch):
    directory = tmp_path / "graphs"
    directory.mkdir()
    path = directory / "g.qg"
    path.write_text("previous")
    add = GraphWriter.add
    partial: list[Path] = []

    class KilledError(Exception):
        pass

    def dying_add(writer, label, quantum_id, line):
        if writer.written == 20:
            # What a killed build leaves: a temporary beside the file, which no reader takes for a graph.
            (partial_file,) = [p for p in directory.iterdir() if p.name != "g.qg"]
            partial.append(partial_file)
            with pytest.raises(GraphError, match="not a skybutler quantum graph|truncated"):
                QuantumGraph.read(partial_file)
            raise KilledError
        add(writer, label, quantum_id, line)

    monkeypatch.setattr(GraphWriter, "add", dying_add)
    with pytest.raises(KilledError):
        _builder(butler).write(path)
    assert partial and [p.name for p in directory.iterdir()] == ["g.qg"] and path.read_text() == "previous"


def test_a_streamed_build_that_fails_writes_nothing(butler, tmp_path):
    with pytest.raises(GraphError, match="The graph is empty"):
        _builder(butler, where="visit = 1").write(tmp_path / "empty.qg")
    assert list(tmp_path.iterdir()) == []


def test_a_file_of_the_first_layout_still_reads(tmp_path):
    # Written by skybutler before graphs were streamed (no padding after the header).
    path = DATA / "graph_v1_unpadded.qg"
    header = QuantumGraph.read_header(path)
    assert header["version"] == 1 and not path.read_bytes().split(b"\n", 1)[0].endswith(b" ")
    graph = QuantumGraph.read(path)
    assert len(graph) == sum(header["counts"].values()) > 0
    assert [q.id for q in QuantumGraph.iter_quanta(path)] == list(graph.quanta)
    qid = next(iter(graph.quanta))
    assert QuantumGraph.read_quantum(path, qid).to_dict() == graph[qid].to_dict()


def test_quantum_lines_are_utf8_json_whatever_the_text(tmp_path):
    from skybutler.pipeline._graph_file import dumps, dumps_line, loads

    record = {"id": "x", "data_id": {"patch": "8,6", "name": "é\u2028\n\t\"'\\"}, "n": [1, -2, 10**15]}
    line = dumps_line(record)
    assert b"\n" not in line and loads(line, tmp_path, "line") == record == json.loads(dumps(record))


def test_an_output_run_that_exists_before_its_dataset_types_is_built_into(butler, tmp_path):
    # A batch submission registers the run before anything of the pipeline is registered.
    butler.registry.register_collection("u/test/fresh")
    header = _builder(butler, output_run="u/test/fresh").write(tmp_path / "g.qg")
    assert set(header["init_outputs"]) == set(header["task_order"])
    assert all(r["run"] == "u/test/fresh" for r in header["init_outputs"].values())
