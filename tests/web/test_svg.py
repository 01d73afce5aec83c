"""Lineage and quantum-graph pictures: what they show, links, escaping, valid and deterministic SVG."""

from __future__ import annotations

import datetime
import re
import uuid
import xml.etree.ElementTree as ET
from collections import Counter

import pytest

from skybutler import Butler, ConfigError, DatasetNotFoundError, GraphError
from skybutler.model import DataId
from skybutler.pipeline import Pipeline, QuantumGraph, build_quantum_graph, execute_graph
from skybutler.provenance import ExecutionRecord, ExecutionStatus, record_executions
from skybutler.web.svg import _crossings, _Edge, _layers, _Node, _order, _render, graph_svg, lineage_svg
from support.pipeline_repo import INPUTS, PIPELINE_YAML, copy_repository, filled_repo_template  # noqa: F401

SVG = "{http://www.w3.org/2000/svg}"
XLINK = "{http://www.w3.org/1999/xlink}href"
HOSTILE = '<script>alert("x")</script>'


# The tests share module fixtures (the toy pipeline's run): on one xdist worker (--dist loadgroup in
# pyproject.toml) they are built once per run, not once per worker.
pytestmark = pytest.mark.xdist_group("svg")


@pytest.fixture(scope="module")
def done(filled_repo_template, tmp_path_factory):  # noqa: F811
    """A repository where the toy pipeline ran, and its graph (shared: these tests only read)."""
    butler = copy_repository(filled_repo_template, tmp_path_factory.mktemp("svg") / "repo")
    graph = build_quantum_graph(butler, Pipeline.from_yaml(PIPELINE_YAML), input_collections=INPUTS,
                                output_run="u/test/svg")
    assert execute_graph(butler, graph).ok
    yield butler, graph
    butler.close()


@pytest.fixture(scope="module")
def graph_file(done, tmp_path_factory):
    path = tmp_path_factory.mktemp("qg") / "toy.qg"
    done[1].write(path)
    return path


def _parse(svg: str) -> ET.Element:
    root = ET.fromstring(svg)
    assert root.tag == f"{SVG}svg"
    return root


def _nodes(root: ET.Element) -> dict[str, ET.Element]:
    """Node groups by their element id."""
    return {g.get("id"): g for g in root.iter(f"{SVG}g") if "node" in g.get("class", "").split()}


def _edges(root: ET.Element) -> list[ET.Element]:
    return [g for g in root.iter(f"{SVG}g") if "edge" in g.get("class", "").split()]


def _dataset_ids(root: ET.Element) -> set[uuid.UUID]:
    return {uuid.UUID(g.get("data-dataset-id")) for g in _nodes(root).values() if g.get("data-dataset-id")}


def _centre_x(node: ET.Element) -> float:
    shape = node.find(f"{SVG}rect")
    if shape is not None:
        return float(shape.get("x")) + float(shape.get("width")) / 2
    return float(node.find(f"{SVG}ellipse").get("cx"))


def _ancestors(graph, ref_id, depth):
    """Ids of the inputs of the quanta that wrote ``ref_id``, recursively, ``depth`` steps up."""
    writer = {r.id: q for q in graph for r in q.output_refs()}
    found, frontier = set(), {ref_id}
    for _ in range(depth):
        frontier = {r.id for i in frontier if i in writer for r in writer[i].input_refs()}
        found |= frontier
    return found


# -- lineage ---------------------------------------------------------------------------


def test_a_coadd_is_drawn_with_its_inputs_recursively_inputs_left_of_what_they_fed(done):
    butler, graph = done
    q = next(q for q in graph.by_task("coadd") if len(q.inputs["warps"]) > 1)
    coadd = q.outputs["coadd"][0]
    root = _parse(lineage_svg(butler, coadd.id, depth=3))
    assert _dataset_ids(root) == {coadd.id} | _ancestors(graph, coadd.id, 3)
    nodes = _nodes(root)
    focus = [g for g in nodes.values() if "focus" in g.get("class").split()]
    assert [g.get("data-dataset-id") for g in focus] == [str(coadd.id)]
    # One execution per quantum that wrote a drawn dataset (raws and biases were ingested).
    writer = {r.id: qq for qq in graph for r in qq.output_refs()}
    expected = Counter(qq.task_label for qq in {writer[i].id: writer[i] for i in _dataset_ids(root)
                                                if i in writer}.values())
    tasks = Counter(g.find(f"{SVG}text").text for g in nodes.values() if "execution" in g.get("class").split())
    assert tasks == expected and set(tasks) == {"coadd", "make_warp", "make_calexp"}
    for edge in _edges(root):
        assert _centre_x(nodes[edge.get("data-from")]) < _centre_x(nodes[edge.get("data-to")])


def test_inputs_a_task_reported_it_did_not_use_are_drawn_dashed(done):
    butler, graph = done
    q = next(q for q in graph.by_task("coadd") if len(q.inputs["warps"]) > 1)
    coadd = q.outputs["coadd"][0]
    kept = set(butler.get(coadd)["visits"])
    rejected = {str(w.id) for w in q.inputs["warps"] if w.data_id["visit"] not in kept}
    assert rejected, "the toy coadd rejects a warp where it has several"
    root = _parse(lineage_svg(butler, coadd, depth=1))
    nodes = _nodes(root)
    dashed = [e for e in _edges(root) if "contributing" in e.get("class").split()]
    assert {nodes[e.get("data-from")].get("data-dataset-id") for e in dashed} == rejected
    assert all(e.find(f"{SVG}path").get("stroke-dasharray") for e in dashed)


def test_descendants_are_followed_down_to_the_depth_asked(done):
    butler, graph = done
    calexp = graph.by_task("make_calexp")[0].outputs["calexp"][0]
    readers = [qq for qq in graph if calexp.id in {r.id for r in qq.input_refs()}]
    children = {r.id for qq in readers for r in qq.output_refs(with_log=False)}
    grandchildren = {r.id for qq in graph if children & {r.id for r in qq.input_refs()}
                     for r in qq.output_refs(with_log=False)}
    inputs = _ancestors(graph, calexp.id, 1)
    one = _dataset_ids(_parse(lineage_svg(butler, calexp, depth=1)))
    assert one == {calexp.id} | inputs | children
    two = _dataset_ids(_parse(lineage_svg(butler, calexp, depth=2)))
    # A coadd that rejected this calexp's warp is not its descendant: a subset, not all.
    assert two > one and two - one <= grandchildren


def test_each_dataset_box_links_where_href_says_and_only_then(done):
    butler, graph = done
    calexp = graph.by_task("make_calexp")[0].outputs["calexp"][0]
    root = _parse(lineage_svg(butler, calexp, depth=1, href=lambda i: f"/datasets/{i}"))
    links = list(root.iter(f"{SVG}a"))
    assert sorted(a.get("href") for a in links) == sorted(f"/datasets/{i}" for i in _dataset_ids(root))
    assert all(a.get(XLINK) == a.get("href") for a in links)
    assert not list(_parse(lineage_svg(butler, calexp, depth=1)).iter(f"{SVG}a"))


def test_at_most_max_nodes_are_drawn_and_a_note_counts_the_rest(done):
    butler, graph = done
    coadd = graph.by_task("coadd")[0].outputs["coadd"][0]
    whole = _parse(lineage_svg(butler, coadd, depth=3))
    assert not [g for g in whole.iter(f"{SVG}g") if "note" in g.get("class", "").split()]
    cut = _parse(lineage_svg(butler, coadd, depth=3, max_nodes=4))
    assert len(_nodes(cut)) == 4 + 1  # the note is a node of its own
    (note,) = [g for g in cut.iter(f"{SVG}g") if "note" in g.get("class", "").split()]
    hidden = int(re.fullmatch(r"(\d+) more not shown", note.find(f"{SVG}text").text).group(1))
    assert 0 < hidden <= len(_dataset_ids(whole)) - len(_dataset_ids(cut))


def test_two_pictures_inlined_in_one_page_share_no_element_id(done, graph_file):
    butler, graph = done
    pictures = [_parse(lineage_svg(butler, q.outputs["coadd"][0], depth=1)) for q in graph.by_task("coadd")[:2]]
    pictures.append(_parse(graph_svg(graph_file)))
    ids = [[e.get("id") for e in root.iter() if e.get("id")] for root in pictures]
    assert all(ids) and len({i for group in ids for i in group}) == sum(map(len, ids))
    for root, own in zip(pictures, ids, strict=True):
        used = {re.fullmatch(r"url\(#(.+)\)", e.get("marker-end")).group(1)
                for e in root.iter() if e.get("marker-end")}
        assert used and used <= set(own)  # every arrow head is the picture's own


def test_the_same_lineage_gives_the_same_bytes(done):
    butler, graph = done
    coadd = graph.by_task("coadd")[-1].outputs["coadd"][0]
    assert lineage_svg(butler, coadd) == lineage_svg(butler, str(coadd.id))


def test_unknown_datasets_and_bad_limits_are_errors(done):
    butler, graph = done
    with pytest.raises(DatasetNotFoundError):
        lineage_svg(butler, uuid.UUID(int=7))
    ref = graph.by_task("coadd")[0].outputs["coadd"][0]
    with pytest.raises(ConfigError, match="depth"):
        lineage_svg(butler, ref, depth=-1)
    with pytest.raises(ConfigError, match="max_nodes"):
        lineage_svg(butler, ref, max_nodes=0)


def _one_execution(root, instrument: str = "HSC", label: str = "summarise"):
    """A repository where one recorded execution made ``summary`` from ``raw``; both refs."""
    butler = Butler.create(root)
    butler.insert_dimension_records("instrument", [{"instrument": instrument, "class_name": "X"}])
    butler.register_dataset_type("raw", ("instrument",), "dict")
    butler.register_dataset_type("summary", ("instrument",), "dict")
    raw = butler.put({"a": 1}, "raw", {"instrument": instrument}, run=f"raw/{label}")
    out = butler.put({"b": 2}, "summary", {"instrument": instrument}, run=f"out/{label}")
    start = datetime.datetime(2026, 3, 16, 12)
    with butler.registry.transaction():
        record_executions(butler.registry, [ExecutionRecord(
            id=uuid.uuid4(), run=f"out/{label}", task_label=label, data_id=DataId({"instrument": instrument}),
            status=ExecutionStatus.SUCCEEDED, host=label, start_time=start, end_time=start,
            used=[(raw.id, None)], generated=[(out.id, None)], derived=[(out.id, raw.id)])])
    return butler, raw, out


def test_hostile_runs_data_ids_and_task_labels_stay_text(tmp_path):
    bad = HOSTILE + "\x01&amp;"  # a control character XML cannot hold, and a would-be entity
    butler, raw, out = _one_execution(tmp_path / "repo", instrument=bad, label=HOSTILE)
    link = '/d?id=1&x="><script>alert(1)</script>'
    root = _parse(lineage_svg(butler, out, href=lambda i: link))  # parses: nothing broke out
    assert not [e for e in root.iter() if e.tag.endswith("script")]
    assert {a.get("href") for a in root.iter(f"{SVG}a")} == {link}
    texts = [t.text for t in root.iter(f"{SVG}text")] + [t.text for t in root.iter(f"{SVG}title")]
    assert HOSTILE in texts  # the execution's label, shown as typed
    assert any(f"run: out/{HOSTILE}" in t and HOSTILE + "\ufffd&amp;" in t for t in texts)
    butler.close()


def test_an_input_removed_since_is_still_drawn_by_its_id(tmp_path):
    butler, raw, out = _one_execution(tmp_path / "repo")
    butler.remove_datasets([raw])
    root = _parse(lineage_svg(butler, out, href=lambda i: f"/datasets/{i}"))
    (gone,) = [g for g in _nodes(root).values() if g.get("data-dataset-id") == str(raw.id)]
    assert [t.text for t in gone.iter(f"{SVG}text")] == ["(removed)", str(raw.id)[:13]]
    assert {a.get("href") for a in root.iter(f"{SVG}a")} == {f"/datasets/{raw.id}", f"/datasets/{out.id}"}
    butler.close()


# -- quantum graph ---------------------------------------------------------------------


def test_a_graph_file_is_one_node_per_task_with_its_quanta(done, graph_file):
    _, graph = done
    root = _parse(graph_svg(graph_file))
    shown = {g.get("data-task"): int(g.get("data-quanta")) for g in _nodes(root).values()}
    assert shown == graph.counts()
    assert list(shown) == graph.task_labels  # dependency order, left to right
    first = next(iter(_nodes(root).values()))
    assert [t.text for t in first.iter(f"{SVG}text")] == ["make_calexp", f"{graph.counts()['make_calexp']} quanta"]


def test_graph_edges_count_the_datasets_one_task_writes_and_another_reads(done, graph_file):
    _, graph = done
    writer = {r.id: q.task_label for q in graph for r in q.output_refs(with_log=False)}
    expected = Counter((writer[r.id], q.task_label) for q in graph for r in q.input_refs() if r.id in writer)
    root = _parse(graph_svg(graph_file))
    task = {k: g.get("data-task") for k, g in _nodes(root).items()}
    shown = {(task[e.get("data-from")], task[e.get("data-to")]): int(e.get("data-datasets"))
             for e in _edges(root)}
    assert shown == dict(expected)
    for e in _edges(root):
        label = e.find(f"{SVG}text").text
        assert label == e.get("data-datasets")
        assert e.find(f"{SVG}title").text.startswith(f"{task[e.get('data-from')]} \u2192 ")


def test_graph_task_links_and_the_run_name_are_escaped(done, graph_file, tmp_path):
    butler, graph = done
    root = _parse(graph_svg(graph_file, href=lambda label: f'/tasks/{label}?q="<x>"'))
    assert sorted(a.get("href") for a in root.iter(f"{SVG}a")) == sorted(
        f'/tasks/{label}?q="<x>"' for label in graph.task_labels)
    hostile = build_quantum_graph(butler, Pipeline.from_yaml(PIPELINE_YAML), input_collections=INPUTS,
                                  output_run=f"u/{HOSTILE}")
    hostile.write(tmp_path / "h.qg")
    root = _parse(graph_svg(tmp_path / "h.qg"))
    assert HOSTILE in root.find(f"{SVG}title").text
    assert not [e for e in root.iter() if e.tag.endswith("script")]


def test_a_graph_file_replaced_by_another_is_drawn_anew(done, tmp_path):
    _, graph = done
    path = tmp_path / "g.qg"
    graph.write(path)
    before = _parse(graph_svg(path))
    QuantumGraph(graph.header, graph.by_task("make_calexp")).write(path)  # same name, fewer quanta
    after = _parse(graph_svg(path))
    quanta = [{g.get("data-task"): g.get("data-quanta") for g in _nodes(r).values()} for r in (before, after)]
    assert quanta[0]["coadd"] == str(graph.counts()["coadd"]) and quanta[1]["coadd"] == "0"
    assert _edges(before) and not _edges(after)


def test_the_same_graph_file_gives_the_same_bytes(graph_file):
    assert graph_svg(graph_file) == graph_svg(str(graph_file))


def test_a_file_that_is_not_a_graph_is_a_graph_error(tmp_path):
    path = tmp_path / "not.qg"
    path.write_text("hello\n")
    with pytest.raises(GraphError, match="not a skybutler quantum graph"):
        graph_svg(path)


# -- layout ----------------------------------------------------------------------------


def test_layers_follow_the_longest_path_and_barycentres_undo_crossings():
    # a1 feeds b2 and a2 feeds b1: drawn in the given order the two edges cross;
    # c is fed by a1 directly and by b2, so it sits after b2, not beside it;
    # the source s feeds only c, so it sits just before c, not with a1 and a2.
    keys = ["a1", "a2", "b1", "b2", "c", "s"]
    edges = [("a1", "b2"), ("a2", "b1"), ("a1", "c"), ("b2", "c"), ("s", "c")]
    layer = _layers(keys, edges)
    assert layer == {"a1": 0, "a2": 0, "b1": 1, "b2": 1, "c": 2, "s": 1}
    preds = {k: [a for a, b in edges if b == k] for k in keys}
    assert _crossings([["a1", "a2"], ["b1", "b2", "s"], ["c"]], preds) == 1
    columns = _order(keys, edges, layer)
    assert _crossings(columns, preds) == 0
    assert sorted(map(sorted, columns)) == [["a1", "a2"], ["b1", "b2", "s"], ["c"]]


def test_an_edge_over_several_columns_runs_between_the_nodes_it_passes():
    # a feeds d three columns on; b and c fill the columns between: the long edge
    # must pass above or below them, never through their boxes.
    keys = ["a", "b", "c", "d"]
    edges = {(k1, k2): _Edge(k1, k2, "flow") for k1, k2 in [("a", "b"), ("b", "c"), ("c", "d"), ("a", "d")]}
    root = _parse(_render([_Node(k, "task", [k * 20], k) for k in keys], edges, title="t"))
    boxes = {g.get("id"): g.find(f"{SVG}rect") for g in _nodes(root).values()}
    ids = {g.get("data-task") or g.find(f"{SVG}title").text: g.get("id") for g in _nodes(root).values()}
    (long,) = [e for e in _edges(root) if (e.get("data-from"), e.get("data-to")) == (ids["a"], ids["d"])]
    points = [(float(x), float(y)) for x, y in re.findall(r"([-\d.]+),([-\d.]+)", long.find(f"{SVG}path").get("d"))]
    for name in "bc":
        box = boxes[ids[name]]
        left, top = float(box.get("x")), float(box.get("y"))
        right, bottom = left + float(box.get("width")), top + float(box.get("height"))
        inside = [(x, y) for x, y in points if left <= x <= right]
        assert inside, "the long edge crosses the column of b and c"
        assert all(not top <= y <= bottom for _, y in inside)
