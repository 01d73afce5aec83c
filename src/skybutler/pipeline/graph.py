"""Quantum graphs: one quantum per task per data id, with exact inputs and outputs, and the file.

The graph file is plain, versioned data — no pickles, no code runs to read it —
written atomically (temporary file, then rename); one quantum, or one task's
quanta, can be read without reading the rest. Layout (UTF-8)::

    {"format": "skybutler-quantum-graph", "version": 1, ...header...}\n
    {...quantum...}\n            one JSON line per quantum, tasks in dependency order
    ...
    <id hex> <task> <offset> <length>\n   index: fixed-width lines sorted by quantum id
    ...
    {"count": N, "tasks": {label: [start, end, count]}, "index": [offset, length, crc32]}\n
    #skybutler-qg-index <offset:020d> <length:020d> <crc32:010d>\n     fixed-size footer

A reader checks the header's format and version first (a newer version is refused,
not misread), then the footer, which locates the trailer: a file cut short has no
valid footer and is reported as truncated. One quantum is found by binary search in
the fixed-width index (a few small reads, whatever the graph's size); a task's
quanta are one contiguous byte range.

In a quantum line a dataset's data id is the list of its values in the order of its
dataset type's dimensions (given in the header), and ``run`` is left out when it is
the graph's output run.
"""

from __future__ import annotations

import datetime
import json
import os
import tempfile
import uuid
import zlib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from .._gc import paused_gc
from ..errors import GraphError
from ..model import DataId, DatasetRef, DatasetType

__all__ = ["GRAPH_FORMAT", "GRAPH_VERSION", "Quantum", "QuantumGraph"]

GRAPH_FORMAT = "skybutler-quantum-graph"
GRAPH_VERSION = 1
"""Version of the graph file layout written here; readers refuse newer ones."""

_FOOTER_PREFIX = b"#skybutler-qg-index "
_FOOTER_SIZE = len(_FOOTER_PREFIX) + 20 + 1 + 20 + 1 + 10 + 1


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
                  run: str | None = None) -> Quantum:
        """Rebuild a quantum from `to_dict` output."""
        def refs(group: Mapping[str, Any]) -> dict[str, tuple[DatasetRef, ...]]:
            return {k: tuple(ref_from_dict(r, dataset_types, run) for r in v) for k, v in group.items()}

        try:
            return cls(
                id=uuid.UUID(data["id"]), task_label=data["task"],
                data_id=DataId(data["data_id"], implied=data.get("implied") or {}),
                inputs=refs(data["inputs"]), outputs=refs(data["outputs"]),
                log=ref_from_dict(data["log"], dataset_types, run),
                upstream=tuple(uuid.UUID(u) for u in data.get("upstream", ())),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise GraphError(f"A quantum in the graph is damaged or of another layout ({exc!r})") from None


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
    return DatasetRef(uuid.UUID(data["id"]), dt, DataId(dict(zip(dt.dimensions, data["data_id"], strict=True))),
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
        path = Path(path)
        labels = list(dict.fromkeys([*self.task_labels, *(q.task_label for q in self.quanta.values())]))
        header = {"format": GRAPH_FORMAT, "version": GRAPH_VERSION, **self.header, "task_order": labels,
                  "counts": self.counts()}
        label_index = {label: i for i, label in enumerate(labels)}
        run = self.run
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as f, paused_gc():
                f.write(_dumps(header) + b"\n")
                offset = f.tell()
                entries = []
                tasks: dict[str, list[int]] = {}
                # Quanta grouped by task, tasks in dependency order: a task is one byte range.
                for label in labels:
                    start = offset
                    count = 0
                    for q in self.quanta.values():
                        if q.task_label != label:
                            continue
                        line = _dumps(q.to_dict(run=run)) + b"\n"
                        f.write(line)
                        entries.append(b"%s %04d %020d %010d\n" % (q.id.hex.encode(), label_index[label],
                                                                    offset, len(line)))
                        offset += len(line)
                        count += 1
                    tasks[label] = [start, offset, count]
                entries.sort()
                index = b"".join(entries)
                f.write(index)
                trailer = _dumps({"count": len(entries), "tasks": tasks,
                                  "index": [offset, len(index), zlib.crc32(index)]}) + b"\n"
                f.write(trailer)
                trailer_offset = offset + len(index)
                f.write(_FOOTER_PREFIX + b"%020d %020d %010d\n" % (trailer_offset, len(trailer),
                                                                   zlib.crc32(trailer)))
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    @classmethod
    def read_header(cls, path: str | Path) -> dict[str, Any]:
        """The header of a graph file (format and version checked), without any quantum."""
        with _open(path) as f:
            return _read_header(f, path)

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
        with _open(path) as f, paused_gc():
            header = _read_header(f, path)
            trailer = _read_trailer(f, path)
            dts = _dataset_types(header)
            run = header["run"]
            out: list[Quantum] = []
            if quanta is not None:
                labels = set(tasks) if tasks is not None else None
                for qid in dict.fromkeys(uuid.UUID(str(q)) for q in quanta):
                    offset, length = _find(f, path, trailer, qid)
                    f.seek(offset)
                    q = Quantum.from_dict(_loads(f.read(length), path, f"quantum {qid}"), dts, run=run)
                    if q.id != qid:
                        raise GraphError(f"Graph file {path} is damaged: its index points quantum {qid} "
                                         f"at {q.id}")
                    if labels is None or q.task_label in labels:
                        out.append(q)
            else:
                ranges = trailer["tasks"]
                if tasks is None:
                    wanted = list(ranges)
                else:
                    wanted = list(tasks)
                    unknown = [t for t in wanted if t not in ranges]
                    if unknown:
                        raise GraphError(f"Graph file {path} has no task {unknown[0]!r}; "
                                         f"tasks: {', '.join(ranges)}")
                for label in wanted:
                    start, end, count = ranges[label]
                    f.seek(start)
                    lines = f.read(end - start).splitlines()
                    if len(lines) != count:
                        raise GraphError(f"Graph file {path} is damaged: task {label!r} should have {count} "
                                         f"quanta, found {len(lines)}")
                    out += [Quantum.from_dict(_loads(line, path, f"quanta of task {label!r}"), dts, run=run)
                            for line in lines]
        return cls(header, out)

    @classmethod
    def read_quantum(cls, path: str | Path, quantum_id: uuid.UUID | str) -> Quantum:
        """One quantum of a graph file: a binary search of the index and one line read."""
        return next(iter(cls.read(path, quanta=[quantum_id])))

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


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), default=_default).encode()


def _default(obj: Any) -> Any:
    if isinstance(obj, uuid.UUID):
        return str(obj)
    if isinstance(obj, datetime.datetime | datetime.date):
        return obj.isoformat()
    raise TypeError(f"{type(obj).__name__} is not plain data")


def _loads(data: bytes, path: str | Path, what: str) -> Any:
    try:
        return json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise GraphError(f"Graph file {path} is damaged or truncated: cannot parse its {what}") from None


def _open(path: str | Path) -> Any:
    try:
        return open(path, "rb")
    except OSError as exc:
        raise GraphError(f"Cannot open graph file {path}: {exc.strerror}") from None


def _read_header(f: Any, path: str | Path) -> dict[str, Any]:
    first = f.readline()
    if not first.startswith(b"{"):
        raise GraphError(f"{path} is not a skybutler quantum graph file")
    header = _loads(first, path, "header")
    if not isinstance(header, dict) or header.get("format") != GRAPH_FORMAT:
        raise GraphError(f"{path} is not a skybutler quantum graph file")
    version = header.get("version")
    if not isinstance(version, int) or version > GRAPH_VERSION:
        raise GraphError(f"Graph file {path} has format version {version}; this skybutler reads up to "
                         f"{GRAPH_VERSION}. Upgrade skybutler to read it.")
    return header


def _read_trailer(f: Any, path: str | Path) -> dict[str, Any]:
    size = f.seek(0, os.SEEK_END)
    truncated = GraphError(f"Graph file {path} is truncated or damaged: its index footer is missing "
                           "(was it copied while being written?)")
    if size < _FOOTER_SIZE:
        raise truncated
    f.seek(size - _FOOTER_SIZE)
    footer = f.read(_FOOTER_SIZE)
    if not footer.startswith(_FOOTER_PREFIX) or not footer.endswith(b"\n"):
        raise truncated
    try:
        offset, length, crc = (int(x) for x in footer[len(_FOOTER_PREFIX):].split())
    except ValueError:
        raise truncated from None
    if offset + length + _FOOTER_SIZE != size:
        raise truncated
    f.seek(offset)
    data = f.read(length)
    if zlib.crc32(data) != crc:
        raise GraphError(f"Graph file {path} is damaged: its trailer fails its checksum")
    return _loads(data, path, "trailer")


_ENTRY_SIZE = 32 + 1 + 4 + 1 + 20 + 1 + 10 + 1


def _find(f: Any, path: str | Path, trailer: Mapping[str, Any], qid: uuid.UUID) -> tuple[int, int]:
    """Offset and length of a quantum's line, by binary search of the fixed-width index."""
    start, length, _crc = trailer["index"]
    lo, hi = 0, length // _ENTRY_SIZE
    target = qid.hex.encode()
    while lo < hi:
        mid = (lo + hi) // 2
        f.seek(start + mid * _ENTRY_SIZE)
        entry = f.read(_ENTRY_SIZE)
        key = entry[:32]
        if key == target:
            try:
                _hex, _task, offset, n = entry.split()
                return int(offset), int(n)
            except ValueError:
                raise GraphError(f"Graph file {path} is damaged: bad index entry {entry!r}") from None
        if key < target:
            lo = mid + 1
        else:
            hi = mid
    raise GraphError(f"Graph file {path} has no quantum {qid}")


def _dataset_types(header: Mapping[str, Any]) -> dict[str, DatasetType]:
    return {name: DatasetType(name, tuple(d["dimensions"]), d["storage_class"], bool(d.get("is_calibration")))
            for name, d in (header.get("dataset_types") or {}).items()}

