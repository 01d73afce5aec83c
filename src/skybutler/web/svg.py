"""Pictures for the web view: a dataset's lineage and a saved quantum graph, as SVG text.

Pure functions of the library's public API, no web framework and no Graphviz (not
installed where the view runs). The layered layout is done here: **layers** by longest
path, left to right (a source just before its first reader), edges over several layers
cut into hops through waypoints so they run between nodes, not through them; **order**
within a layer by barycentre sweeps, keeping the order with the fewest crossings;
**heights** pulled towards the neighbours' mean so that edges straighten.

Every text and attribute value is XML-escaped (a run, a task label or a data id value
may hold ``<script>`` or quotes) and characters XML cannot hold are replaced, so the
result always parses. The same repository or graph file gives the same bytes."""

from __future__ import annotations

import bisect
import contextlib
import functools
import hashlib
import re
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

from ..errors import ConfigError, DatasetNotFoundError
from ..model import DatasetRef
from ..pipeline import QuantumGraph
from ..provenance import DatasetEntry, Provenance, lineage, provenance_of

__all__ = ["graph_svg", "lineage_svg"]

_FONT = 11  # px
_CHAR = 6.6  # estimated advance of one character at _FONT px (sans-serif; generous for digits)
_LINE = 14  # px per text line
_PAD_X, _PAD_Y = 8, 5
_COL_GAP, _ROW_GAP = 56, 14
_MARGIN = 12
_MAX_CHARS = 44  # a label line is cut here (full text in the node's tooltip)
_SWEEPS = 4
_HIDDEN_DIMENSIONS = ("instrument", "skymap")  # the same for nearly every node: left to the tooltip

# XML 1.0 cannot hold these at all, escaped or not.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


@dataclass
class _Node:
    key: str
    kind: str  # "dataset", "execution", "task", "note"
    lines: list[str]
    title: str
    link: str | None = None
    css: list[str] = field(default_factory=list)
    data: dict[str, str] = field(default_factory=dict)
    x: float = 0.0  # centre, width and height: filled by the layout
    y: float = 0.0
    width: float = 0.0
    height: float = 0.0


@dataclass(frozen=True)
class _Edge:
    source: str
    target: str
    css: str
    label: str | None = None
    title: str | None = None


# -- lineage ---------------------------------------------------------------------------


def lineage_svg(butler: Any, dataset_id: DatasetRef | uuid.UUID | str, *, depth: int = 3,
                href: Callable[[uuid.UUID], str] | None = None, max_nodes: int = 200) -> str:
    """A dataset's ancestors and descendants as an SVG picture.

    Datasets are boxes (dataset type, then the short data id: its values other than
    instrument and skymap), executions small ellipses (the task label); an arrow
    runs from each input to the execution that used it ("used", dashed where the task
    reported it did not derive its outputs from that input) and from the execution to
    each dataset it wrote ("generated"). Ancestors are the inputs of the execution
    that made the dataset, recursively; descendants follow wasDerivedFrom down, as
    `skybutler.provenance.lineage` does. Configuration datasets are left out.

    Parameters
    ----------
    butler
        A `Butler` (or its registry); only read.
    dataset_id
        The dataset to draw around (highlighted), by id, its text, or ref.
    depth
        How many derivation steps to follow up and down (0: the dataset and the
        execution that made it).
    href
        Makes each dataset box a link to ``href(dataset_id)``.
    max_nodes
        At most this many nodes (datasets and executions), nearest first; the rest are
        counted in a note "N more not shown" (those reached from a drawn node, whose
        own ancestors or descendants were not explored).

    Returns
    -------
    str
        An ``<svg>`` element (no XML declaration), ready to inline in HTML or serve as
        ``image/svg+xml``. Dataset nodes carry ``data-dataset-id``.

    Raises
    ------
    DatasetNotFoundError
        If neither a dataset nor any provenance has that id.
    ConfigError
        If ``depth`` is negative or ``max_nodes`` is less than 1.

    Examples
    --------
    >>> svg = lineage_svg(butler, coadd_ref, depth=2,
    ...                   href=lambda i: f"/datasets/{i}")   # doctest: +SKIP
    """
    if depth < 0:
        raise ConfigError(f"Lineage depth must be 0 or more, not {depth}")
    if max_nodes < 1:
        raise ConfigError(f"max_nodes must be 1 or more, not {max_nodes}")
    focus = provenance_of(butler, dataset_id)
    picture = _LineagePicture(max_nodes, href)
    picture.dataset(focus.dataset, focus=True)
    picture.ancestors(butler, focus, depth)
    picture.descendants(butler, focus.dataset.id, depth)
    nodes = list(picture.nodes.values())
    hidden = len(picture.hidden - {uuid.UUID(n.data["dataset-id"]) for n in nodes if n.kind == "dataset"})
    note = None
    if hidden:
        note = _Node("note", "note", [f"{hidden} more not shown"],
                     f"{hidden} more datasets not shown (max_nodes={max_nodes})", css=["note"])
    return _render(nodes, picture.edges, note=note,
                   title=f"Lineage of {_dataset_title(focus.dataset)}")


class _LineagePicture:
    """Nodes and edges gathered from provenance, within a node budget."""

    def __init__(self, max_nodes: int, href: Callable[[uuid.UUID], str] | None):
        self.max_nodes = max_nodes
        self.href = href
        self.nodes: dict[str, _Node] = {}
        self.edges: dict[tuple[str, str], _Edge] = {}
        self.hidden: set[uuid.UUID] = set()
        self.asked: set[uuid.UUID] = set()  # datasets whose provenance was read

    def full(self) -> bool:
        return len(self.nodes) >= self.max_nodes

    def dataset(self, entry: DatasetEntry, *, focus: bool = False) -> str | None:
        """The node key of a dataset, added if the budget allows (None if not drawn)."""
        key = f"d:{entry.id}"
        if key in self.nodes:
            return key
        if self.full():
            self.hidden.add(entry.id)
            return None
        ref = entry.ref
        lines = ([ref.dataset_type.name, _short_data_id(ref)] if ref is not None
                 else ["(removed)", str(entry.id)[:13]])
        self.nodes[key] = _Node(key, "dataset", lines, _dataset_title(entry),
                                link=self.href(entry.id) if self.href else None,
                                css=["dataset", "focus"] if focus else ["dataset"],
                                data={"dataset-id": str(entry.id)})
        return key

    def execution(self, execution: Mapping[str, Any]) -> str | None:
        key = f"e:{execution['id']}"
        if key in self.nodes:
            return key
        if self.full():
            return None
        status = str(execution.get("status") or "")
        title = (f"execution of {execution.get('task_label')}\nstatus: {status}\ndata id: "
                 f"{execution.get('data_id_key') or ''}\nrun: {execution.get('run') or ''}\n"
                 f"host: {execution.get('host') or ''}\nid: {execution['id']}")
        css = ["execution"] + (["failed"] if status not in ("", "succeeded") else [])
        self.nodes[key] = _Node(key, "execution", [str(execution.get("task_label") or "?")], title, css=css,
                                data={"execution-id": str(execution["id"])})
        return key

    def edge(self, source: str, target: str, css: str) -> None:
        self.edges.setdefault((source, target), _Edge(source, target, css))

    def inputs(self, prov: Provenance, execution_key: str, *, only_drawn: bool) -> list[DatasetEntry]:
        """Draw the used edges of an execution; the inputs drawn (or, with only_drawn, already drawn)."""
        derived = {d.id for d in prov.derived_from}
        drawn = []
        for entry in sorted(prov.used, key=_entry_order):
            key = f"d:{entry.id}" if only_drawn else self.dataset(entry)
            if key is None or key not in self.nodes:
                continue
            self.edge(key, execution_key, "used" if entry.id in derived else "used contributing")
            drawn.append(entry)
        return drawn

    def ancestors(self, butler: Any, focus: Provenance, depth: int) -> None:
        # Breadth first, so a budget that runs out cuts the farthest ancestors, and a
        # dataset reached by several paths is placed (and asked about) once, at its nearest.
        frontier = [focus]
        expanded: set[str] = set()
        for level in range(depth + 1):
            following: list[Provenance] = []
            for prov in frontier:
                if prov.execution is None:
                    continue
                made = self.execution(prov.execution)
                if made is None:
                    self.hidden.update(u.id for u in prov.used)
                    continue
                self.edge(made, f"d:{prov.dataset.id}", "generated")
                if level == depth or made in expanded:
                    continue  # siblings share their execution: its inputs are drawn once
                expanded.add(made)
                for entry in self.inputs(prov, made, only_drawn=False):
                    if entry.id in self.asked:
                        continue
                    self.asked.add(entry.id)
                    # An input removed long ago, with no provenance left, is a leaf.
                    with contextlib.suppress(DatasetNotFoundError):
                        following.append(provenance_of(butler, entry.id))
            frontier = following

    def descendants(self, butler: Any, focus_id: uuid.UUID, depth: int) -> None:
        if depth == 0:
            return
        entries = lineage(butler, focus_id, direction="down", max_depth=depth)
        for item in sorted(entries, key=lambda e: (e.depth, *_entry_order(e.dataset))):
            key = self.dataset(item.dataset)
            if key is None:
                continue
            prov = provenance_of(butler, item.dataset.id)
            if prov.execution is None:
                continue
            made = self.execution(prov.execution)
            if made is None:
                continue
            self.edge(made, key, "generated")
            # Nearest first: the inputs this descendant came from are drawn already.
            self.inputs(prov, made, only_drawn=True)


def _entry_order(entry: DatasetEntry) -> tuple[str, str, str]:
    ref = entry.ref
    if ref is None:
        return ("~", "", str(entry.id))
    return (ref.dataset_type.name, ref.data_id.key(), str(entry.id))


def _short_data_id(ref: DatasetRef) -> str:
    items = list(ref.data_id.items())
    shown = [(k, v) for k, v in items if k not in _HIDDEN_DIMENSIONS] or items
    return " ".join(f"{k}={v}" for k, v in shown)


def _dataset_title(entry: DatasetEntry) -> str:
    ref = entry.ref
    if ref is None:
        return f"dataset {entry.id} (removed)"
    data_id = ", ".join(f"{k}={v}" for k, v in ref.data_id.items())
    return f"{ref.dataset_type.name}\n{data_id}\nrun: {ref.run}\nid: {entry.id}"


# -- quantum graph ---------------------------------------------------------------------


def graph_svg(graph_path: str | Path, *, href: Callable[[str], str] | None = None) -> str:
    """A saved quantum graph as an SVG picture: one node per task, edges between tasks.

    Each task node shows its label and number of quanta; an edge from task A to
    task B is labelled with the number of datasets that A's quanta write and B's
    quanta read (its tooltip breaks that number down by dataset type). The file is
    streamed one quantum at a time (`QuantumGraph.iter_quanta`): memory holds the
    ids of the datasets the graph writes, not its quanta. What was read is remembered
    for the last 8 files, by path, size and modification time.

    Parameters
    ----------
    graph_path
        A quantum graph file written by `QuantumGraph.write`.
    href
        Makes each task node a link to ``href(task_label)``.

    Returns
    -------
    str
        An ``<svg>`` element (no XML declaration). Task nodes carry ``data-task``
        and ``data-quanta``; edges ``data-datasets``.

    Raises
    ------
    GraphError
        If the file is not a readable quantum graph.
    """
    path = Path(graph_path)
    stat = path.stat() if path.is_file() else None
    header, counts, links = _task_flows(str(path.resolve()), stat.st_mtime_ns if stat else 0,
                                        stat.st_size if stat else 0)
    nodes = [_Node(f"t:{label}", "task", [label, f"{n} {'quantum' if n == 1 else 'quanta'}"],
                   f"task {label}: {n} quanta", link=href(label) if href else None, css=["task"],
                   data={"task": label, "quanta": str(n)}) for label, n in counts.items()]
    edges = {}
    for (a, b), by_type in links.items():
        total = sum(by_type.values())
        detail = ", ".join(f"{t}: {c}" for t, c in sorted(by_type.items()))
        edges[(f"t:{a}", f"t:{b}")] = _Edge(f"t:{a}", f"t:{b}", "flow", label=str(total),
                                            title=f"{a} \u2192 {b}: {total} datasets ({detail})")
    run = header.get("run")
    return _render(nodes, edges, title=f"Quantum graph {Path(graph_path).name}" + (f" (run {run})" if run else ""))


@functools.lru_cache(maxsize=8)
def _task_flows(path: str, mtime_ns: int, size: int) -> tuple[dict[str, Any], dict[str, int],
                                                               dict[tuple[str, str], Counter[str]]]:
    """Header, quanta per task and datasets per (writer, reader) task pair by dataset type.

    Reading every quantum takes ~0.1 ms each: a page reloaded every few seconds should
    not pay it again. Remembered by the file's identity: graph files are replaced by a
    rename, never rewritten in place, so a changed graph has a new mtime.
    """
    header = QuantumGraph.read_header(path)
    producer: dict[uuid.UUID, str] = {}
    counts = dict.fromkeys(QuantumGraph(header, ()).task_labels, 0)
    links: dict[tuple[str, str], Counter[str]] = {}
    # One quantum at a time; the file holds tasks in dependency order, so every
    # producer is known before its readers come.
    for q in QuantumGraph.iter_quanta(path):
        counts[q.task_label] = counts.get(q.task_label, 0) + 1
        for ref in q.input_refs():
            source = producer.get(ref.id)
            if source is not None:
                links.setdefault((source, q.task_label), Counter())[ref.dataset_type.name] += 1
        for ref in q.output_refs(with_log=False):
            producer[ref.id] = q.task_label
    return header, counts, links


# -- layout ----------------------------------------------------------------------------


def _layers(keys: list[str], edges: Iterable[tuple[str, str]]) -> dict[str, int]:
    """Longest-path layer of each node, sources moved up to their first reader; cycles go last."""
    preds, succs = _neighbours(keys, edges)
    waiting = {k: len(preds[k]) for k in keys}
    ready = [k for k in keys if waiting[k] == 0]
    layer: dict[str, int] = {}
    while ready:
        k = ready.pop(0)
        layer[k] = max((layer[p] + 1 for p in preds[k] if p in layer), default=0)
        for s in succs[k]:
            waiting[s] -= 1
            if waiting[s] == 0:
                ready.append(s)
    last = max(layer.values(), default=-1)
    for k in keys:
        layer.setdefault(k, last + 1)  # only on a cycle: provenance and task graphs have none
    for k in keys:
        # A source goes just before its first reader (a bias beside the step that used it,
        # not far left with the raws of five steps earlier).
        if not preds[k] and succs[k]:
            layer[k] = max(0, min(layer[s] for s in succs[k]) - 1)
    return layer


def _split(keys: list[str], edges: Iterable[tuple[str, str]], layer: Mapping[str, int]
           ) -> tuple[list[str], list[tuple[str, str]], dict[tuple[str, str], list[str]], dict[str, int]]:
    """Edges over several columns cut into one-column hops through waypoints (ordered like nodes)."""
    keys, layers = list(keys), dict(layer)
    hops: list[tuple[str, str]] = []
    via: dict[tuple[str, str], list[str]] = {}
    for a, b in edges:
        points = [f"~{len(layers)}:{i}" for i in range(layers[a] + 1, layers[b])]
        layers.update((w, i) for i, w in enumerate(points, layers[a] + 1))
        keys += points
        chain = [a, *points, b]
        hops += zip(chain, chain[1:], strict=False)
        via[(a, b)] = points
    return keys, hops, via, layers


def _neighbours(keys: Iterable[str], edges: Iterable[tuple[str, str]]) -> tuple[dict[str, list[str]], ...]:
    preds: dict[str, list[str]] = {k: [] for k in keys}
    succs: dict[str, list[str]] = {k: [] for k in preds}
    for a, b in edges:
        succs[a].append(b)
        preds[b].append(a)
    return preds, succs


def _order(keys: list[str], edges: Iterable[tuple[str, str]], layer: Mapping[str, int]) -> list[list[str]]:
    """Nodes per layer, ordered by barycentre sweeps to reduce edge crossings."""
    columns: list[list[str]] = [[] for _ in range(max(layer.values(), default=-1) + 1)]
    for k in keys:
        columns[layer[k]].append(k)
    preds, succs = _neighbours(keys, edges)

    def sweep(indices: Iterable[int], neighbours: Mapping[str, list[str]]) -> None:
        for i in indices:
            # Positions as fractions of their column, so columns of unequal size mix fairly.
            where = {k: (j + 0.5) / len(col) for col in columns for j, k in enumerate(col)}
            centre = {}
            for k in columns[i]:
                near = [where[n] for n in neighbours[k]]
                centre[k] = sum(near) / len(near) if near else where[k]
            columns[i].sort(key=centre.__getitem__)  # stable: ties keep the previous order

    best = [list(c) for c in columns]
    best_crossings = _crossings(best, preds)
    for _ in range(_SWEEPS):
        sweep(range(1, len(columns)), preds)
        sweep(range(len(columns) - 2, -1, -1), succs)
        now = _crossings(columns, preds)
        if now < best_crossings:
            best, best_crossings = [list(c) for c in columns], now
    return best


def _crossings(columns: list[list[str]], preds: Mapping[str, list[str]]) -> int:
    """Crossings between edges joining adjacent columns (inversions, counted in n log n)."""
    total = 0
    for i in range(1, len(columns)):
        left = {k: j for j, k in enumerate(columns[i - 1])}
        seen: list[int] = []
        for _, p in sorted((j, left[p]) for j, k in enumerate(columns[i]) for p in preds[k] if p in left):
            total += len(seen) - bisect.bisect_right(seen, p)
            bisect.insort(seen, p)
    return total


def _place(columns: list[list[str]], nodes: Mapping[str, _Node], gap: float,
           edges: Iterable[tuple[str, str]]) -> tuple[float, float]:
    """Sizes and coordinates (centres) of every node; the drawing's width and height."""
    for node in nodes.values():
        longest = max(len(line) for line in node.lines)
        node.width = longest * _CHAR + 2 * _PAD_X + (14 if node.kind == "execution" else 0)
        node.height = 4.0 if node.kind == "waypoint" else len(node.lines) * _LINE + 2 * _PAD_Y
    x = float(_MARGIN)
    for col in columns:
        width = max((nodes[k].width for k in col if nodes[k].kind != "waypoint"), default=0.0)
        for k in col:
            nodes[k].x = x + width / 2
            if nodes[k].kind == "waypoint":
                nodes[k].width = width  # a long edge runs straight across the column
        x += width + gap
    preds, succs = _neighbours(nodes, edges)

    def settle(col: list[str], want: Mapping[str, float]) -> None:
        # Each node as near its wanted height as the one above allows, then the column
        # moved back by its mean excess so that pushes spread both ways.
        low = -float("inf")
        for k in col:
            nodes[k].y = max(want[k], low + nodes[k].height / 2)
            low = nodes[k].y + nodes[k].height / 2 + _ROW_GAP
        shift = sum(nodes[k].y - want[k] for k in col) / max(len(col), 1)
        for k in col:
            nodes[k].y -= shift

    for col in columns:
        settle(col, dict.fromkeys(col, 0.0))
    for _ in range(_SWEEPS):
        # Pull each node towards the mean height of its neighbours: edges straighten out.
        for i, neighbours in [*((i, preds) for i in range(1, len(columns))),
                              *((i, succs) for i in range(len(columns) - 2, -1, -1))]:
            settle(columns[i], {k: (sum(nodes[n].y for n in neighbours[k]) / len(neighbours[k])
                                    if neighbours[k] else nodes[k].y) for k in columns[i]})
    top = min((n.y - n.height / 2 for n in nodes.values()), default=0.0)
    for node in nodes.values():
        node.y += _MARGIN - top
    bottom = max((n.y + n.height / 2 for n in nodes.values()), default=0.0)
    return x - gap + _MARGIN, bottom + _MARGIN


# -- drawing ---------------------------------------------------------------------------


def _text(value: object) -> str:
    return escape(_NOT_XML.sub("\ufffd", str(value)))


def _attr(value: object) -> str:
    return escape(_NOT_XML.sub("\ufffd", str(value)), {'"': "&quot;", "\n": "&#10;", "\t": "&#9;"})


def _cut(line: str) -> str:
    return line if len(line) <= _MAX_CHARS else line[:_MAX_CHARS - 1] + "\u2026"


_STYLE = {
    "dataset": 'fill="#eef4fb" stroke="#4a78a8" stroke-width="1"',
    "focus": 'fill="#ffe9a8" stroke="#b07d00" stroke-width="2.5"',
    "execution": 'fill="#e9f5e9" stroke="#4c8a4c" stroke-width="1"',
    "failed": 'fill="#fbe3e3" stroke="#b03030" stroke-width="1.5"',
    "task": 'fill="#eef4fb" stroke="#4a78a8" stroke-width="1.2"',
    "note": 'fill="#f6f6f6" stroke="#888" stroke-width="1" stroke-dasharray="4 3"',
}


def _shape(node: _Node) -> str:
    style = _STYLE["focus" if "focus" in node.css else "failed" if "failed" in node.css else node.kind]
    left, top = node.x - node.width / 2, node.y - node.height / 2
    if node.kind == "execution":
        return (f'<ellipse cx="{node.x:.1f}" cy="{node.y:.1f}" rx="{node.width / 2:.1f}" '
                f'ry="{node.height / 2:.1f}" {style}/>')
    return (f'<rect x="{left:.1f}" y="{top:.1f}" width="{node.width:.1f}" height="{node.height:.1f}" '
            f'rx="4" {style}/>')


def _node_svg(node: _Node, element_id: str) -> str:
    data = "".join(f' data-{k}="{_attr(v)}"' for k, v in node.data.items())
    first = node.y - (len(node.lines) - 1) * _LINE / 2 + _FONT * 0.35
    bold = ' font-weight="bold"' if node.kind in ("dataset", "task") else ""
    texts = "".join(
        f'<text x="{node.x:.1f}" y="{first + i * _LINE:.1f}"{bold if i == 0 else ""}>{_text(_cut(line))}</text>'
        for i, line in enumerate(node.lines))
    body = f"<title>{_text(node.title)}</title>{_shape(node)}{texts}"
    group = f'<g id="{element_id}" class="node {" ".join(node.css)}"{data}>{body}</g>'
    if node.link is None:
        return group
    link = _attr(node.link)
    return f'<a href="{link}" xlink:href="{link}">{group}</a>'


def _edge_svg(edge: _Edge, nodes: Mapping[str, _Node], ids: Mapping[str, str], via: list[str],
              arrow: str) -> str:
    a, b = nodes[edge.source], nodes[edge.target]
    points = [(a.x + a.width / 2, a.y)]
    for w in via:
        points += [(nodes[w].x - nodes[w].width / 2, nodes[w].y), (nodes[w].x + nodes[w].width / 2, nodes[w].y)]
    points.append((b.x - b.width / 2, b.y))
    path = [f"M{points[0][0]:.1f},{points[0][1]:.1f}"]
    for (x1, y1), (x2, y2) in zip(points, points[1:], strict=False):
        bend = (x2 - x1) / 2  # horizontal tangents: hops join smoothly at waypoints
        path.append(f"C{x1 + bend:.1f},{y1:.1f} {x2 - bend:.1f},{y2:.1f} {x2:.1f},{y2:.1f}")
    dashed = ' stroke-dasharray="5 3"' if "contributing" in edge.css else ""
    out = [f'<g class="edge {edge.css}" data-from="{ids[edge.source]}" data-to="{ids[edge.target]}"']
    if edge.label is not None:
        out.append(f' data-datasets="{_attr(edge.label)}"')
    out.append(">")
    if edge.title:
        out.append(f"<title>{_text(edge.title)}</title>")
    out.append(f'<path d="{" ".join(path)}" fill="none" stroke="#777" stroke-width="1.2"{dashed} '
               f'marker-end="url(#{arrow})"/>')
    if edge.label is not None:
        # Mid-way along the edge, haloed so it stays readable over other edges.
        (x1, y1), (x2, y2) = points[len(via)], points[len(via) + 1]
        out.append(f'<text x="{(x1 + x2) / 2:.1f}" y="{(y1 + y2) / 2 - 3:.1f}" class="edge-label" '
                   f'stroke="#fff" stroke-width="3" paint-order="stroke">{_text(edge.label)}</text>')
    out.append("</g>")
    return "".join(out)


def _render(node_list: list[_Node], edges: Mapping[tuple[str, str], _Edge], *, title: str,
            note: _Node | None = None) -> str:
    nodes = {n.key: n for n in node_list}
    pairs = list(edges)
    keys, hops, via, layer = _split(list(nodes), pairs, _layers(list(nodes), pairs))
    for k in keys[len(nodes):]:
        nodes[k] = _Node(k, "waypoint", [""], "")
    columns = _order(keys, hops, layer)
    # Labelled edges need room for their label between the columns.
    gap = _COL_GAP + (24 if any(e.label is not None for e in edges.values()) else 0)
    width, height = _place(columns, nodes, gap, hops)
    if note is not None:
        # Below the drawing, apart from it: it stands for nodes, it is not one of them.
        note.width = max(len(line) for line in note.lines) * _CHAR + 2 * _PAD_X
        note.height = _LINE + 2 * _PAD_Y
        note.x, note.y = _MARGIN + note.width / 2, height + note.height / 2
        height += note.height + _MARGIN
        width = max(width, note.width + 2 * _MARGIN)
    # Element ids unique to the picture (stable: from its title), so that two pictures
    # inlined in one HTML page do not take each other's arrow heads.
    prefix = "sb" + hashlib.sha1(title.encode(), usedforsecurity=False).hexdigest()[:8]
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" '
        f'width="{width:.0f}" height="{height:.0f}" viewBox="0 0 {width:.0f} {height:.0f}" '
        f'font-family="sans-serif" font-size="{_FONT}" text-anchor="middle" class="skybutler-graph">',
        f"<title>{_text(title)}</title>",
        f'<defs><marker id="{prefix}-arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" markerHeight="7" '
        'orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="#777"/></marker></defs>',
    ]
    order = [k for col in columns for k in col if nodes[k].kind != "waypoint"]
    ids = {k: f"{prefix}-n{i}" for i, k in enumerate(order)}
    parts += [_edge_svg(e, nodes, ids, via[pair], f"{prefix}-arrow") for pair, e in edges.items()]
    parts += [_node_svg(nodes[k], ids[k]) for k in order]
    if note is not None:
        parts.append(_node_svg(note, f"{prefix}-note"))
    parts.append("</svg>")
    return "\n".join(parts) + "\n"
