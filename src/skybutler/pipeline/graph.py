"""Quantum graphs: one quantum per task per data id, with exact inputs and outputs, and the file.

The graph file is plain, versioned data — no pickles, no code runs to read it —
written atomically (temporary file, then rename); one quantum, or one task's
quanta, can be read without reading the rest. Layout (UTF-8)::

    {"format": "skybutler-quantum-graph", "version": 1, ...header...}<spaces>\n
    {...quantum...}\n            one JSON line per quantum, tasks in dependency order
    ...
    <id hex> <task> <offset> <length>\n   index: fixed-width lines sorted by quantum id
    ...
    {"count": N, "tasks": {label: [start, end, count]}, "index": [offset, length, crc32]}\n
    #skybutler-qg-index <offset:020d> <length:020d> <crc32:010d>\n     fixed-size footer

The header line may end in spaces: a graph streamed to its file as it is built
(`QuantumGraphBuilder.write`) reserves the line first and fills in the per-task
counts at the end. The bytes are written and read in `._graph_file`.

A reader checks the header's format and version first (a newer version is refused,
not misread), then the footer, which locates the trailer: a file cut short has no
valid footer and is reported as truncated. One quantum is found by binary search in
the fixed-width index (a few small reads, whatever the graph's size); a task's
quanta are one contiguous byte range, which `QuantumGraph.iter_quanta` streams.

In a quantum line a dataset's data id is the list of its values in the order of its
dataset type's dimensions (given in the header), and ``run`` is left out when it is
the graph's output run.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from .._gc import paused_gc
from ..errors import GraphError
from ..model import DataId, DatasetRef, DatasetType
from ._graph_file import (
    GRAPH_FORMAT,
    GRAPH_VERSION,
    GraphWriter,
    dumps_line,
    find,
    iter_task_lines,
    loads,
    open_graph,
    read_header,
    read_index_ids,
    read_trailer,
)

__all__ = ["GRAPH_FORMAT", "GRAPH_VERSION", "Quantum", "QuantumGraph"]


@dataclass(frozen=True)
class Quantum:
    """One task on one data id.

    Attributes
    ----------
    id
        The quantum's id (UUIDv7, assigned when the graph was built).
    task_label
        The task's label in the graph's pipeline.
    data_id
        The quantum's data id, with implied values.
    inputs
        Refs by input connection name (prerequisites included); every ref exists, or
        is an output of an upstream quantum.
    outputs
        Refs by output connection name, ids assigned; ``ref.extra["path"]`` is the
        file name the dataset will have.
    log
        The ref of the quantum's log dataset.
    upstream
        Ids of the quanta whose outputs it reads.
    """

    id: uuid.UUID
    task_label: str
    data_id: DataId
    inputs: Mapping[str, tuple[DatasetRef, ...]]
    outputs: Mapping[str, tuple[DatasetRef, ...]]
    log: DatasetRef
    upstream: tuple[uuid.UUID, ...] = ()

    def input_refs(self) -> list[DatasetRef]:
        """Every input ref, in connection order."""
        return [r for refs in self.inputs.values() for r in refs]

    def output_refs(self, *, with_log: bool = True) -> list[DatasetRef]:
        """Every output ref, in connection order, then the log's."""
        out = [r for refs in self.outputs.values() for r in refs]
        return [*out, self.log] if with_log else out

    def __str__(self) -> str:
        return f"{self.task_label} {{{self.data_id}}}"

    # -- plain data --------------------------------------------------------------------

    def to_dict(self, *, run: str | None = None) -> dict[str, Any]:
        """The quantum as JSON-ready data (one line of a graph file; refs of ``run`` omit it)."""
        return {
            "id": str(self.id), "task": self.task_label, "data_id": dict(self.data_id),
            "implied": dict(self.data_id.implied),
            "inputs": {k: [ref_to_dict(r, run) for r in v] for k, v in self.inputs.items()},
            "outputs": {k: [ref_to_dict(r, run) for r in v] for k, v in self.outputs.items()},
            "log": ref_to_dict(self.log, run),
            "upstream": [str(u) for u in self.upstream],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], dataset_types: Mapping[str, DatasetType], *,
                  run: str | None = None, refs: dict[Any, DatasetRef] | None = None) -> Quantum:
        """Rebuild a quantum from `to_dict` output (ids as text, or already as `uuid.UUID`).

        ``refs``, when given, holds the refs already made by id text and gets the new ones:
        quanta made with the same dictionary share one ref per dataset (an output and the
        downstream inputs that read it), as a graph built in memory does.
        """
        def make(r: Mapping[str, Any]) -> DatasetRef:
            if refs is None:
                return ref_from_dict(r, dataset_types, run)
            ref = refs.get(r["id"])
            if ref is None:
                ref = refs[r["id"]] = ref_from_dict(r, dataset_types, run)
            return ref

        try:
            return cls(
                id=_uuid(data["id"]), task_label=data["task"],
                data_id=DataId(data["data_id"], implied=data.get("implied") or {}),
                inputs={k: tuple(make(r) for r in v) for k, v in data["inputs"].items()},
                outputs={k: tuple(make(r) for r in v) for k, v in data["outputs"].items()},
                log=make(data["log"]),
                upstream=tuple(_uuid(u) for u in data.get("upstream", ())),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise GraphError(f"A quantum in the graph is damaged or of another layout ({exc!r})") from None


def _uuid(value: uuid.UUID | str) -> uuid.UUID:
    """An id from a graph line (text) or from the builder (already a UUID: no parse)."""
    return value if isinstance(value, uuid.UUID) else uuid.UUID(value)


def ref_to_dict(ref: DatasetRef, run: str | None = None) -> dict[str, Any]:
    """A dataset ref as plain data (data id values in dimension order; ``run`` omitted if it is ``run``)."""
    out: dict[str, Any] = {"id": str(ref.id), "type": ref.dataset_type.name,
                           "data_id": [ref.data_id[d] for d in ref.dataset_type.dimensions]}
    if ref.run != run:
        out["run"] = ref.run
    if "path" in ref.extra:
        out["path"] = ref.extra["path"]
    return out


def ref_from_dict(data: Mapping[str, Any], dataset_types: Mapping[str, DatasetType],
                  run: str | None = None) -> DatasetRef:
    """Inverse of `ref_to_dict`."""
    try:
        dt = dataset_types[data["type"]]
    except KeyError:
        raise GraphError(f"Graph file names dataset type {data.get('type')!r}, which its header does not "
                         "define (a damaged file?)") from None
    extra = {"path": data["path"]} if "path" in data else {}
    return DatasetRef(_uuid(data["id"]), dt, DataId(dict(zip(dt.dimensions, data["data_id"], strict=True))),
                      data.get("run", run), extra=extra)


def dataset_type_to_dict(dt: DatasetType) -> dict[str, Any]:
    """A dataset type as plain data (the graph header's ``dataset_types`` entries)."""
    return {"dimensions": list(dt.dimensions), "storage_class": dt.storage_class,
            "is_calibration": dt.is_calibration}


class QuantumGraph:
    """Quanta and the header that says how they were made.

    Parameters
    ----------
    header
        Plain data: ``run``, ``input_collections``, ``where``, ``pipeline`` (the
        pipeline's `Pipeline.to_mapping`, full configs), ``dataset_types``,
        ``init_outputs`` (the config dataset of each task), ``template_variables``...
    quanta
        The quanta, in dependency order.
    """

    def __init__(self, header: Mapping[str, Any], quanta: Iterable[Quantum]):
        self.header = dict(header)
        self.quanta: dict[uuid.UUID, Quantum] = {q.id: q for q in quanta}

    # -- header ------------------------------------------------------------------------

    @property
    def run(self) -> str:
        """The output run."""
        return str(self.header["run"])

    @property
    def task_labels(self) -> list[str]:
        """Labels in dependency order."""
        return list(self.header.get("task_order") or self.header["pipeline"]["tasks"])

    @cached_property
    def dataset_types(self) -> dict[str, DatasetType]:
        """Every dataset type the graph reads or writes, by name."""
        return _dataset_types(self.header)

    @cached_property
    def init_outputs(self) -> dict[str, DatasetRef]:
        """The configuration dataset of each task, by label."""
        return {label: ref_from_dict(r, self.dataset_types, self.run)
                for label, r in (self.header.get("init_outputs") or {}).items()}

    def pipeline(self) -> Any:
        """The pipeline the graph was built from (imports the task classes)."""
        from .pipeline import Pipeline

        return Pipeline.from_mapping(self.header["pipeline"], source="quantum graph header")

    # -- structure ---------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.quanta)

    def __iter__(self) -> Iterator[Quantum]:
        return iter(self.quanta.values())

    def __getitem__(self, quantum_id: uuid.UUID | str) -> Quantum:
        key = quantum_id if isinstance(quantum_id, uuid.UUID) else uuid.UUID(str(quantum_id))
        try:
            return self.quanta[key]
        except KeyError:
            raise GraphError(f"No quantum {key} in this graph") from None

    def by_task(self, label: str) -> list[Quantum]:
        """The quanta of one task."""
        return [q for q in self.quanta.values() if q.task_label == label]

    def counts(self) -> dict[str, int]:
        """Number of quanta per task label, in dependency order."""
        out = dict.fromkeys(self.task_labels, 0)
        for q in self.quanta.values():
            out[q.task_label] = out.get(q.task_label, 0) + 1
        return out

    @cached_property
    def downstream(self) -> dict[uuid.UUID, list[uuid.UUID]]:
        """Quanta that read each quantum's outputs."""
        out: dict[uuid.UUID, list[uuid.UUID]] = {qid: [] for qid in self.quanta}
        for q in self.quanta.values():
            for u in q.upstream:
                if u in out:
                    out[u].append(q.id)
        return out

    def descendants(self, quantum_ids: Iterable[uuid.UUID]) -> set[uuid.UUID]:
        """Every quantum that depends, directly or not, on any of ``quantum_ids`` (themselves excluded)."""
        seen: set[uuid.UUID] = set()
        stack = list(quantum_ids)
        start = set(stack)
        while stack:
            for d in self.downstream.get(stack.pop(), ()):
                if d not in seen:
                    seen.add(d)
                    stack.append(d)
        return seen - start

    # -- the file ----------------------------------------------------------------------

    def write(self, path: str | Path) -> None:
        """Write the graph file atomically: a temporary file beside it, then a rename."""
        labels = list(dict.fromkeys([*self.task_labels, *(q.task_label for q in self.quanta.values())]))
        header = {**self.header, "task_order": labels}
        run = self.run
        by_task: dict[str, list[Quantum]] = {label: [] for label in labels}
        for q in self.quanta.values():
            by_task[q.task_label].append(q)
        with paused_gc(), GraphWriter(path, header, labels) as writer:
            # Quanta grouped by task, tasks in dependency order: a task is one byte range.
            for label in labels:
                for q in by_task[label]:
                    writer.add(label, q.id, dumps_line(q.to_dict(run=run)))
            late = {"counts": self.counts()}
            if "skipped" in self.header:
                late["skipped"] = self.header["skipped"]
            writer.finish(late)

    @classmethod
    def read_header(cls, path: str | Path) -> dict[str, Any]:
        """The header of a graph file (format and version checked), without any quantum."""
        with open_graph(path) as f:
            return read_header(f, path)

    @classmethod
    def read(cls, path: str | Path, *, quanta: Iterable[uuid.UUID | str] | None = None,
             tasks: Iterable[str] | None = None) -> QuantumGraph:
        """Read a graph file, whole or only some quanta (by id, or by task label).

        Raises
        ------
        GraphError
            Not a graph file, a newer format version, a truncated or damaged file, or an
            unknown quantum id or task label.
        """
        with open_graph(path) as f, paused_gc():
            header = read_header(f, path)
            trailer = read_trailer(f, path)
            dts = _dataset_types(header)
            run = header["run"]
            out: list[Quantum] = []
            shared: dict[str, DatasetRef] = {}
            if quanta is not None:
                labels = set(tasks) if tasks is not None else None
                for qid in dict.fromkeys(uuid.UUID(str(q)) for q in quanta):
                    offset, length = find(f, path, trailer, qid)
                    f.seek(offset)
                    q = Quantum.from_dict(loads(f.read(length), path, f"quantum {qid}"), dts, run=run,
                                          refs=shared)
                    if q.id != qid:
                        raise GraphError(f"Graph file {path} is damaged: its index points quantum {qid} "
                                         f"at {q.id}")
                    if labels is None or q.task_label in labels:
                        out.append(q)
            else:
                for label in _wanted_tasks(path, trailer, tasks):
                    start, end, count = trailer["tasks"][label]
                    f.seek(start)
                    lines = f.read(end - start).splitlines()
                    if len(lines) != count:
                        raise GraphError(f"Graph file {path} is damaged: task {label!r} should have {count} "
                                         f"quanta, found {len(lines)}")
                    out += [Quantum.from_dict(loads(line, path, f"quanta of task {label!r}"), dts, run=run,
                                              refs=shared) for line in lines]
        return cls(header, out)

    @classmethod
    def read_quantum(cls, path: str | Path, quantum_id: uuid.UUID | str) -> Quantum:
        """One quantum of a graph file: a binary search of the index and one line read."""
        return next(iter(cls.read(path, quanta=[quantum_id])))

    @classmethod
    def iter_quanta(cls, path: str | Path, *, tasks: Iterable[str] | None = None) -> Iterator[Quantum]:
        """Stream the quanta of a graph file, task by task in dependency order, one at a time.

        Memory stays that of one quantum whatever the graph's size: a graph of 10^6
        quanta is walked without holding it (`read` holds every quantum it returns).

        Parameters
        ----------
        path
            The graph file.
        tasks
            Labels of the tasks whose quanta to give (default: all), in the file's order.

        Raises
        ------
        GraphError
            As `read`; damage inside a task's quanta is found when the stream reaches it.

        Examples
        --------
        >>> for quantum in QuantumGraph.iter_quanta("graph.qgraph", tasks=["isr"]):  # doctest: +SKIP
        ...     print(quantum.id, quantum.data_id)
        """
        with open_graph(path) as f:
            header = read_header(f, path)
            trailer = read_trailer(f, path)
            dts = _dataset_types(header)
            run = header["run"]
            for label in _wanted_tasks(path, trailer, tasks):
                what = f"quanta of task {label!r}"
                for line in iter_task_lines(f, path, trailer, label):
                    yield Quantum.from_dict(loads(line, path, what), dts, run=run)

    @classmethod
    def quantum_ids(cls, path: str | Path, *, tasks: Iterable[str] | None = None) -> list[uuid.UUID]:
        """The ids of a graph file's quanta (all, or those of some tasks), read from its index alone.

        Sorted by id (for UUIDv7 ids, the order they were made in); 16 bytes of index per
        quantum are read, no quantum is parsed.
        """
        with open_graph(path) as f:
            read_header(f, path)
            trailer = read_trailer(f, path)
            wanted = None if tasks is None else _wanted_tasks(path, trailer, tasks)
            return read_index_ids(f, path, trailer, wanted)

    # -- pictures ----------------------------------------------------------------------

    def _picture(self) -> tuple[list[tuple[str, str, str]], list[tuple[str, str]]]:
        """Nodes ``(id, kind, label)`` and edges for quanta and their connection datasets (logs left out)."""
        nodes: dict[str, tuple[str, str, str]] = {}
        edges: list[tuple[str, str]] = []
        names: dict[uuid.UUID, str] = {}

        def node(key: uuid.UUID, kind: str, label: str) -> str:
            if key not in names:
                names[key] = f"{kind[0]}{len(names)}"
                nodes[names[key]] = (names[key], kind, label)
            return names[key]

        for q in self.quanta.values():
            qn = node(q.id, "quantum", f"{q.task_label}\n{q.data_id}")
            for r in q.input_refs():
                edges.append((node(r.id, "dataset", f"{r.dataset_type.name}\n{r.data_id}"), qn))
            for r in q.output_refs(with_log=False):
                edges.append((qn, node(r.id, "dataset", f"{r.dataset_type.name}\n{r.data_id}")))
        return list(nodes.values()), edges

    def to_dot(self) -> str:
        """The graph in Graphviz dot: quanta as boxes, datasets as ellipses."""
        nodes, edges = self._picture()
        lines = ["digraph quantum_graph {", "  rankdir=LR;", '  node [fontname="Helvetica", fontsize=10];']
        for name, kind, label in nodes:
            shape = "box, style=filled, fillcolor=lightblue" if kind == "quantum" else "ellipse"
            text = label.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
            lines.append(f'  {name} [shape={shape}, label="{text}"];')
        lines += [f"  {a} -> {b};" for a, b in edges]
        lines.append("}")
        return "\n".join(lines) + "\n"

    def to_mermaid(self) -> str:
        """The graph as a Mermaid flowchart: quanta as rectangles, datasets as stadiums."""
        nodes, edges = self._picture()
        lines = ["flowchart LR"]
        for name, kind, label in nodes:
            text = label.replace('"', "#quot;").replace("\n", "<br/>")
            lines.append(f'  {name}["{text}"]' if kind == "quantum" else f'  {name}(["{text}"])')
        lines += [f"  {a} --> {b}" for a, b in edges]
        return "\n".join(lines) + "\n"


# -- file helpers ----------------------------------------------------------------------


def _wanted_tasks(path: str | Path, trailer: Mapping[str, Any], tasks: Iterable[str] | None) -> list[str]:
    ranges = trailer["tasks"]
    if tasks is None:
        return list(ranges)
    wanted = list(tasks)
    unknown = [t for t in wanted if t not in ranges]
    if unknown:
        raise GraphError(f"Graph file {path} has no task {unknown[0]!r}; tasks: {', '.join(ranges)}")
    return wanted


def _dataset_types(header: Mapping[str, Any]) -> dict[str, DatasetType]:
    return {name: DatasetType(name, tuple(d["dimensions"]), d["storage_class"], bool(d.get("is_calibration")))
            for name, d in (header.get("dataset_types") or {}).items()}

