"""Pipelines: task labels, import paths, configuration overrides and named subsets, in YAML.

A pipeline file::

    description: Single-frame processing and coaddition
    tasks:
      process_ccd:
        class: mypackage.tasks:ProcessCcd       # or mypackage.tasks.ProcessCcd
        config:
          threshold: 5.0
      make_warp:
        class: mypackage.tasks:MakeWarp
        connections:                            # optional dataset type renames
          warp: deep_warp
      assemble_coadd: mypackage.tasks:AssembleCoadd   # short form: just the class
    subsets:
      single_frame: [process_ccd]
      coadd:
        description: Warping and coaddition
        tasks: [make_warp, assemble_coadd]

Load it with `Pipeline.from_file` (``"pipeline.yaml#coadd"`` selects a subset, or a
comma-separated list of labels). Loading validates everything that does not need a
repository: imports, configurations, connection dimensions, one producer per dataset
type, consistent dataset type definitions, no cycles. What needs the repository (an
input neither produced nor registered) is checked when a graph is built.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ..dimensions import DimensionUniverse
from ..errors import DataIdError, PipelineError
from ..model import DatasetType
from .task import Connection, Output, PrerequisiteInput, Task

__all__ = ["DatasetTypeFlow", "Pipeline", "import_task"]

_LABEL_OK = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_")


def import_task(path: str, *, label: str = "") -> type[Task]:
    """Import a task class from ``"module:Class"`` or ``"module.Class"``.

    Raises
    ------
    PipelineError
        Naming the label and the path: the module cannot be imported, has no such
        attribute, or the attribute is not a `Task` subclass.
    """
    who = f"Task {label!r}: " if label else ""
    if not isinstance(path, str) or not path.strip():
        raise PipelineError(f"{who}no task class given (expected 'module:Class')")
    if ":" in path:
        module_name, _, attr = path.partition(":")
    else:
        module_name, _, attr = path.rpartition(".")
    if not module_name or not attr:
        raise PipelineError(f"{who}import path {path!r} is not of the form 'module:Class' or 'module.Class'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise PipelineError(f"{who}cannot import module {module_name!r} of {path!r}: {exc}") from None
    except Exception as exc:  # the module itself is broken: say so, with its error
        raise PipelineError(f"{who}importing module {module_name!r} of {path!r} failed: "
                            f"{type(exc).__name__}: {exc}") from None
    obj: Any = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise PipelineError(f"{who}module {module_name!r} has no {attr!r} (import path {path!r})") from None
    if not (isinstance(obj, type) and issubclass(obj, Task)):
        raise PipelineError(f"{who}{path!r} is {obj!r}, not a skybutler Task subclass")
    return obj


@dataclass(frozen=True)
class DatasetTypeFlow:
    """A dataset type in a pipeline: its definition, who makes it, who reads it.

    Attributes
    ----------
    producer
        ``(label, connection)`` of the task writing it, or None for an input the
        pipeline does not make.
    consumers
        ``(label, connection)`` of every task reading it.
    """

    dataset_type: DatasetType
    producer: tuple[str, str] | None
    consumers: tuple[tuple[str, str], ...]

    @property
    def is_external(self) -> bool:
        """Whether the pipeline reads it without making it."""
        return self.producer is None


class Pipeline:
    """An ordered, validated set of configured tasks.

    Parameters
    ----------
    tasks
        The tasks (each carries its label and configuration).
    description
        Free text.
    subsets
        Named subsets: name -> labels, or name -> ``{"tasks": [...], "description": ...}``.
    universe
        Dimension universe to validate against (the default one if not given; a graph
        build validates again against the repository's).

    Raises
    ------
    PipelineError
        For any problem, naming the task and connection.
    """

    def __init__(self, tasks: Iterable[Task] | Mapping[str, Task], *, description: str = "",
                 subsets: Mapping[str, Any] | None = None, universe: DimensionUniverse | None = None,
                 source: str = ""):
        items = list(tasks.values()) if isinstance(tasks, Mapping) else list(tasks)
        self.description = description
        self.source = source
        self._tasks: dict[str, Task] = {}
        for task in items:
            if task.label in self._tasks:
                raise PipelineError(f"Two tasks are labelled {task.label!r}")
            self._tasks[task.label] = task
        self.subsets: dict[str, dict[str, Any]] = {}
        for name, spec in (subsets or {}).items():
            if isinstance(spec, Mapping):
                labels, doc = list(spec.get("tasks") or []), str(spec.get("description") or "")
            else:
                labels, doc = list(spec or []), ""
            unknown = [x for x in labels if x not in self._tasks]
            if unknown or name in self._tasks:
                problem = (f"names unknown task(s) {', '.join(map(repr, unknown))}" if unknown
                           else "has the name of a task")
                raise PipelineError(f"Subset {name!r} {problem}; tasks: {', '.join(self._tasks)}")
            self.subsets[name] = {"tasks": labels, "description": doc}
        self.universe = universe or DimensionUniverse.default()
        self._order = self.check(self.universe)

    # -- reading -----------------------------------------------------------------------

    @classmethod
    def from_file(cls, path: str | Path, *, universe: DimensionUniverse | None = None) -> Pipeline:
        """Read a pipeline file; ``"file.yaml#subset"`` or ``"file.yaml#a,b"`` selects tasks."""
        text_path, _, selection = str(path).partition("#")
        try:
            text = Path(text_path).read_text()
        except OSError as exc:
            raise PipelineError(f"Cannot read pipeline file {text_path}: {exc.strerror}") from None
        pipeline = cls.from_yaml(text, source=text_path, universe=universe)
        return pipeline.subset(selection) if selection else pipeline

    @classmethod
    def from_yaml(cls, text: str, *, source: str = "pipeline", universe: DimensionUniverse | None = None,
                  ) -> Pipeline:
        """Read a pipeline from YAML text (see the module documentation for the format)."""
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise PipelineError(f"{source} is not valid YAML: {exc}") from None
        return cls.from_mapping(data, source=source, universe=universe)

    @classmethod
    def from_mapping(cls, data: Any, *, source: str = "pipeline", universe: DimensionUniverse | None = None,
                     ) -> Pipeline:
        """Build a pipeline from the parsed YAML document."""
        if not isinstance(data, Mapping) or not isinstance(data.get("tasks"), Mapping) or not data["tasks"]:
            raise PipelineError(f"{source}: a pipeline needs a 'tasks' mapping of label -> task")
        unknown = sorted(set(data) - {"description", "tasks", "subsets"})
        if unknown:
            raise PipelineError(f"{source}: unknown key(s) {', '.join(unknown)}; "
                                "allowed: description, tasks, subsets")
        tasks = []
        for label, spec in data["tasks"].items():
            label = str(label)
            if not label or not label[0].isalpha() or not set(label) <= _LABEL_OK:
                raise PipelineError(f"{source}: task label {label!r} must start with a letter and hold only "
                                    "letters, digits and '_'")
            if isinstance(spec, str):
                spec = {"class": spec}
            if not isinstance(spec, Mapping):
                raise PipelineError(f"{source}: task {label!r} must be 'module:Class' or a mapping with 'class'")
            bad = sorted(set(spec) - {"class", "config", "connections"})
            if bad:
                raise PipelineError(f"{source}: task {label!r} has unknown key(s) {', '.join(bad)}; "
                                    "allowed: class, config, connections")
            task_class = import_task(spec.get("class", ""), label=label)
            config = spec.get("config") or {}
            renames = spec.get("connections") or {}
            if not isinstance(config, Mapping) or not isinstance(renames, Mapping):
                raise PipelineError(f"{source}: task {label!r}: 'config' and 'connections' must be mappings")
            tasks.append(task_class(config, label=label, dataset_types={str(k): str(v) for k, v in renames.items()}))
        return cls(tasks, description=str(data.get("description") or ""), subsets=data.get("subsets") or {},
                   universe=universe, source=source)

    def to_mapping(self) -> dict[str, Any]:
        """The pipeline as plain data, every configuration value included; `from_mapping` rebuilds it."""
        tasks = {}
        for task in self.tasks.values():
            entry: dict[str, Any] = {"class": task.import_path(), "config": task.config.to_dict()}
            renames = {n: c.dataset_type for n, c in task.connections.items()
                       if c.dataset_type != task._declared[n].dataset_type}
            if renames:
                entry["connections"] = renames
            tasks[task.label] = entry
        out: dict[str, Any] = {"description": self.description, "tasks": tasks}
        if self.subsets:
            out["subsets"] = {k: dict(v) for k, v in self.subsets.items()}
        return out

    def to_yaml(self) -> str:
        """`to_mapping` as YAML: the printed form that reproduces the pipeline."""
        return yaml.safe_dump(self.to_mapping(), sort_keys=False)

    # -- structure ---------------------------------------------------------------------

    @property
    def tasks(self) -> dict[str, Task]:
        """Tasks by label, in dependency order (producers before consumers)."""
        return {label: self._tasks[label] for label in self._order}

    def __len__(self) -> int:
        return len(self._tasks)

    def __iter__(self) -> Any:
        return iter(self.tasks.values())

    def subset(self, selection: str | Iterable[str]) -> Pipeline:
        """A pipeline of a named subset, or of labels (a list or ``"a,b"``).

        Dataset types made by tasks left out become inputs that must already exist.
        """
        if isinstance(selection, str):
            if selection in self.subsets:
                labels = self.subsets[selection]["tasks"]
            else:
                labels = [s.strip() for s in selection.split(",") if s.strip()]
        else:
            labels = list(selection)
        unknown = [x for x in labels if x not in self._tasks]
        if unknown or not labels:
            raise PipelineError(f"{', '.join(map(repr, unknown)) or 'Nothing'} is neither a subset "
                                f"({', '.join(self.subsets) or 'none defined'}) nor a task "
                                f"({', '.join(self._tasks)})")
        keep = set(labels)
        subsets = {k: v for k, v in self.subsets.items() if set(v["tasks"]) <= keep}
        return Pipeline([t for lbl, t in self._tasks.items() if lbl in keep], description=self.description,
                        subsets=subsets, universe=self.universe, source=self.source)

    # -- validation --------------------------------------------------------------------

    def _closure(self, task: Task, conn: Connection | None, dims: Iterable[str],
                 universe: DimensionUniverse) -> tuple[str, ...]:
        try:
            return universe.closure(dims)
        except DataIdError as exc:
            where = f"connection {conn.name!r} ({conn.dataset_type})" if conn else "its dimensions"
            raise PipelineError(f"Task {task.label!r} ({task.import_path()}) {where}: {exc}") from None

    def check(self, universe: DimensionUniverse | None = None) -> list[str]:
        """Validate against a universe; returns the labels in dependency order.

        Raises
        ------
        PipelineError
            Unknown dimensions; a connection whose dimensions do not fit the task's; two
            producers of one dataset type; one dataset type defined two ways; a
            prerequisite made by the pipeline; a log/config name clash; a cycle.
        """
        universe = universe or self.universe
        definitions: dict[str, tuple[DatasetType, str]] = {}
        producers: dict[str, tuple[str, str]] = {}
        for task in self._tasks.values():
            tdims = self._closure(task, None, task.dimensions, universe)
            reach = set(tdims) | set(universe.implied_by(tdims))
            for conn in task.connections.values():
                cdims = self._closure(task, conn, conn.dimensions, universe)
                what = (f"Task {task.label!r} ({task.import_path()}) {conn.kind} connection {conn.name!r} "
                        f"(dataset type {conn.dataset_type!r}, dimensions {', '.join(cdims) or 'none'})")
                if isinstance(conn, Output):
                    if conn.multiple and not set(tdims) < set(cdims):
                        raise PipelineError(f"{what}: a multiple output needs more dimensions than the task's "
                                            f"({', '.join(tdims)})")
                    if not conn.multiple and set(cdims) != set(tdims):
                        raise PipelineError(f"{what}: an output must have the task's dimensions "
                                            f"({', '.join(tdims) or 'none'}), or be multiple=True")
                    if conn.dataset_type in producers:
                        other = producers[conn.dataset_type]
                        raise PipelineError(f"{what}: dataset type {conn.dataset_type!r} is also produced by "
                                            f"task {other[0]!r} connection {other[1]!r}")
                    producers[conn.dataset_type] = (task.label, conn.name)
                elif isinstance(conn, PrerequisiteInput) and conn.multiple:
                    raise PipelineError(f"{what}: prerequisite inputs cannot be multiple")
                elif not conn.multiple and not set(cdims) <= reach:
                    extra = [d for d in cdims if d not in reach]
                    raise PipelineError(f"{what}: dimension(s) {', '.join(extra)} are not among the task's "
                                        f"({', '.join(tdims) or 'none'}); declare it multiple=True to gather them")
                dt = DatasetType(conn.dataset_type, cdims, conn.storage_class,
                                 isinstance(conn, PrerequisiteInput))
                if conn.dataset_type in definitions:
                    known, who = definitions[conn.dataset_type]
                    if (known.dimensions, known.storage_class) != (dt.dimensions, dt.storage_class):
                        raise PipelineError(f"{what} [{dt.storage_class}] disagrees with {who}, which says "
                                            f"{known}")
                else:
                    definitions[conn.dataset_type] = (dt, f"task {task.label!r} connection {conn.name!r}")
            for special in (task.log_dataset_type, task.config_dataset_type):
                if special in definitions or special in producers:
                    raise PipelineError(f"Task {task.label!r}: dataset type {special!r} is reserved for its "
                                        "log and config; rename the connection that uses it")
        for task in self._tasks.values():
            for conn in task.prerequisites.values():
                if conn.dataset_type in producers:
                    lbl, cname = producers[conn.dataset_type]
                    raise PipelineError(f"Task {task.label!r} prerequisite connection {conn.name!r} "
                                        f"({conn.dataset_type}) is produced by task {lbl!r} connection {cname!r}; "
                                        "prerequisites must already exist, use Input instead")
        return self._sort(producers)

    def _sort(self, producers: dict[str, tuple[str, str]]) -> list[str]:
        upstream: dict[str, dict[str, tuple[str, str, str]]] = {label: {} for label in self._tasks}
        for task in self._tasks.values():
            for conn in task.inputs.values():
                if conn.dataset_type in producers:
                    lbl, out_conn = producers[conn.dataset_type]
                    upstream[task.label].setdefault(lbl, (out_conn, conn.dataset_type, conn.name))
        order: list[str] = []
        remaining = dict(upstream)
        while remaining:
            ready = [lbl for lbl, ups in remaining.items() if all(u in order for u in ups)]
            if not ready:
                raise PipelineError(f"The pipeline has a cycle: {self._describe_cycle(remaining)}")
            for lbl in ready:  # ties keep file order
                order.append(lbl)
                del remaining[lbl]
        return order

    @staticmethod
    def _describe_cycle(remaining: dict[str, dict[str, tuple[str, str, str]]]) -> str:
        start = next(iter(remaining))
        path = [start]
        while True:
            nxt = next(u for u in remaining[path[-1]] if u in remaining)
            if nxt in path:
                path = path[path.index(nxt):] + [nxt]
                break
            path.append(nxt)
        steps = []
        for consumer, producer in zip(path, path[1:], strict=False):
            out_conn, dt, in_conn = remaining[consumer][producer]
            steps.append(f"task {producer!r} output {out_conn!r} ({dt}) -> task {consumer!r} input {in_conn!r}")
        return "; ".join(reversed(steps))

    # -- description -------------------------------------------------------------------

    def dataset_types(self, universe: DimensionUniverse | None = None) -> dict[str, DatasetTypeFlow]:
        """Every dataset type the pipeline reads or writes, in dependency order."""
        universe = universe or self.universe
        flows: dict[str, dict[str, Any]] = {}
        for task in self.tasks.values():
            for conn in task.connections.values():
                entry = flows.setdefault(conn.dataset_type, {
                    "dt": DatasetType(conn.dataset_type, universe.closure(conn.dimensions), conn.storage_class,
                                      isinstance(conn, PrerequisiteInput)),
                    "producer": None, "consumers": []})
                if isinstance(conn, Output):
                    entry["producer"] = (task.label, conn.name)
                else:
                    entry["consumers"].append((task.label, conn.name))
        return {name: DatasetTypeFlow(f["dt"], f["producer"], tuple(f["consumers"])) for name, f in flows.items()}

    def describe(self) -> dict[str, Any]:
        """Tasks and the dataset types flowing between them, as plain data (``pipeline show``)."""
        tasks = []
        for task in self.tasks.values():
            tasks.append({
                "label": task.label, "class": task.import_path(), "dimensions": list(task.dimensions),
                "doc": (type(task).__doc__ or "").strip().split("\n")[0],
                "config": task.config.to_dict(),
                "inputs": [c.describe() for c in task.connections.values() if not isinstance(c, Output)],
                "outputs": [c.describe() for c in task.outputs.values()],
                "log": task.log_dataset_type, "config_dataset_type": task.config_dataset_type,
            })
        flows = [{"name": name, "dimensions": list(f.dataset_type.dimensions),
                  "storage_class": f.dataset_type.storage_class,
                  "produced_by": ".".join(f.producer) if f.producer else None,
                  "consumed_by": [".".join(c) for c in f.consumers]}
                 for name, f in self.dataset_types().items()]
        return {"description": self.description, "source": self.source, "tasks": tasks, "dataset_types": flows,
                "subsets": {k: dict(v) for k, v in self.subsets.items()}}

    def __str__(self) -> str:
        lines = [self.description] if self.description else []
        for task in self.tasks.values():
            lines.append(f"{task.label} [{task.import_path()}] per ({', '.join(task.dimensions) or 'nothing'})")
            for c in task.connections.values():
                arrow = "->" if isinstance(c, Output) else "<-"
                flags = "".join(f" {f}" for f in ("multiple", "deferred") if getattr(c, f, False))
                lines.append(f"  {arrow} {c.name}: {c.dataset_type}({', '.join(c.dimensions)}) "
                             f"[{c.storage_class}]{flags}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"Pipeline({', '.join(self.tasks)})"

