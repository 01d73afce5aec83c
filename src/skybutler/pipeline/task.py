"""Tasks: declared connections, a typed configuration, and ``run``.

A task is a class. Its *connections* say what one run of it (one *quantum*)
reads and writes: each names a dataset type, its dimensions and storage class.
Its ``dimensions`` say what one quantum is: one per ``(visit, detector)``, one per
``(tract, patch, band)``... Its configuration is a pydantic model with defaults.

Example::

    class CalibrateConfig(TaskConfig):
        threshold: float = 5.0

    class Calibrate(Task):
        \"\"\"Detect and measure sources on one detector of one visit.\"\"\"

        dimensions = ("visit", "detector")
        config_class = CalibrateConfig

        raw = Input("raw", ("visit", "detector"), "image")
        bias = PrerequisiteInput("bias", ("detector",), "image")
        calexp = Output("calexp", ("visit", "detector"), "image")

        def run(self, raw, bias):
            return {"calexp": subtract(raw, bias)}

``run`` receives Python objects by connection name (a list, sorted by data id,
for ``multiple=True``; a `DeferredHandle` for ``deferred=True``) and returns a
mapping from output connection name to object (a list aligned with the output
refs for a ``multiple=True`` output).

A task that needs more than its loaded inputs overrides ``run_quantum``, which
receives a `QuantumContext`: the quantum's data id and dimension records, the refs
of every input and output, cutouts through `Butler.get_cutouts`, and
`QuantumContext.report_used` to say which inputs an output really derives from::

    class AssembleCoadd(Task):
        dimensions = ("tract", "patch", "band")
        warps = Input("warp", ("visit", "tract", "patch"), "image", multiple=True)
        coadd = Output("coadd", ("tract", "patch", "band"), "image")

        def run_quantum(self, context):
            warps = context.get("warps")
            coadd, kept = combine_rejecting_outliers(warps)   # kept: indices of warps used
            context.report_used("warps", kept)
            return {"coadd": coadd}
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import KW_ONLY, dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import yaml
from pydantic import BaseModel, ConfigDict

from ..errors import DatasetNotFoundError, ExecutionError, PipelineError
from ..model import DataId, DatasetRef

if TYPE_CHECKING:
    from ..butler import Butler, Cutouts

__all__ = [
    "Connection",
    "DeferredHandle",
    "Input",
    "Output",
    "PrerequisiteInput",
    "QuantumContext",
    "Task",
    "TaskConfig",
]


# -- connections -----------------------------------------------------------------------


@dataclass(frozen=True)
class Connection:
    """One dataset type a task reads or writes (base of `Input`, `PrerequisiteInput`, `Output`).

    Parameters
    ----------
    dataset_type
        Name of the dataset type (a pipeline file may rename it per task).
    dimensions
        Its dimensions, e.g. ``("visit", "detector")``.
    storage_class
        Its storage class (``"image"``, ``"table"``, ``"dict"``...).
    multiple
        One quantum takes (or makes) many datasets of this type: all those whose data
        ids fit the quantum's (every warp of a patch and band).
    doc
        What it is, for ``skybutler pipeline show``.
    """

    dataset_type: str
    dimensions: tuple[str, ...] = ()
    storage_class: str = "dict"
    _: KW_ONLY
    multiple: bool = False
    doc: str = ""
    name: str = field(default="", compare=False)

    kind: ClassVar[str] = "connection"

    def __post_init__(self) -> None:
        dims = self.dimensions
        object.__setattr__(self, "dimensions", (dims,) if isinstance(dims, str) else tuple(dims))

    def __set_name__(self, owner: type, name: str) -> None:
        object.__setattr__(self, "name", name)

    def describe(self) -> dict[str, Any]:
        """A plain-data description (for ``pipeline show`` and graph files)."""
        out = {"connection": self.name, "kind": self.kind, "dataset_type": self.dataset_type,
               "dimensions": list(self.dimensions), "storage_class": self.storage_class,
               "multiple": self.multiple}
        if getattr(self, "deferred", False):
            out["deferred"] = True
        return out


@dataclass(frozen=True, kw_only=True)
class Input(Connection):
    """A dataset the task reads: found in the input collections or made by an earlier task.

    Parameters
    ----------
    deferred
        Give the task a `DeferredHandle` instead of the loaded object (for partial
        reads: cutouts, some columns).
    min_count
        With ``multiple=True``: fewer datasets than this and the quantum is not built.
    """

    deferred: bool = False
    min_count: int = 1
    kind: ClassVar[str] = "input"


@dataclass(frozen=True, kw_only=True)
class PrerequisiteInput(Connection):
    """A dataset that must already exist, such as a calibration.

    Looked up in the input collections by data id; in CALIBRATION collections, the
    one valid at the observation time of the quantum's visit or exposure
    (``timespan_begin``). A missing prerequisite is an error when the graph is built,
    not a quantum silently left out.
    """

    deferred: bool = False
    kind: ClassVar[str] = "prerequisite"


@dataclass(frozen=True, kw_only=True)
class Output(Connection):
    """A dataset the task writes; its id and file name are fixed when the graph is built."""

    kind: ClassVar[str] = "output"


# -- configuration ---------------------------------------------------------------------


class TaskConfig(BaseModel):
    """Base of task configurations: typed fields with defaults, keyword-only, immutable.

    Its ``repr`` is the Python that rebuilds it and `to_dict` the data a pipeline file
    holds, so a provenance record shows exactly what ran.

    Examples
    --------
    >>> class DetectConfig(TaskConfig):
    ...     threshold: float = 5.0
    ...     bands: list[str] = ["r", "i"]
    >>> DetectConfig(threshold=3.0)
    DetectConfig(threshold=3.0, bands=['r', 'i'])
    >>> DetectConfig.model_validate(DetectConfig(threshold=3.0).to_dict()) == DetectConfig(threshold=3.0)
    True
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    def to_dict(self) -> dict[str, Any]:
        """Every field, defaults included, as plain JSON-ready data."""
        return self.model_dump(mode="json")

    def to_yaml(self) -> str:
        """`to_dict` as YAML."""
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


# -- tasks -----------------------------------------------------------------------------


def _snake(name: str) -> str:
    name = re.sub(r"Task$", "", name) or name
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


class Task:
    """Base class of tasks. Subclasses declare ``dimensions``, connections and ``config_class``.

    Parameters
    ----------
    config
        A ``config_class`` instance, or a mapping of overrides of its defaults.
    label
        Name of the task in its pipeline (defaults to the class name in snake case).
    dataset_types
        Renames of dataset types by connection name (``{"calexp": "calexp_v2"}``).

    Raises
    ------
    PipelineError
        A configuration that does not validate, or a rename of an unknown connection.
    """

    dimensions: ClassVar[tuple[str, ...]] = ()
    """Dimensions of one quantum's data id."""

    config_class: ClassVar[type[TaskConfig]] = TaskConfig
    """The configuration model."""

    _declared: ClassVar[dict[str, Connection]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        declared: dict[str, Connection] = {}
        for klass in reversed(cls.__mro__):
            for key, value in vars(klass).items():
                if isinstance(value, Connection):
                    declared[key] = value
                elif key in declared and value is None:  # a subclass may drop an inherited connection
                    del declared[key]
        cls._declared = declared
        if isinstance(cls.dimensions, str):
            cls.dimensions = (cls.dimensions,)
        cls.dimensions = tuple(cls.dimensions)
        if not (isinstance(cls.config_class, type) and issubclass(cls.config_class, TaskConfig)):
            raise PipelineError(f"{cls.__qualname__}.config_class must be a TaskConfig subclass")

    def __init__(self, config: TaskConfig | Mapping[str, Any] | None = None, *, label: str | None = None,
                 dataset_types: Mapping[str, str] | None = None):
        self.label = label or _snake(type(self).__name__)
        if config is None:
            config = self.config_class()
        elif isinstance(config, Mapping):
            config = self.make_config(config, label=self.label)
        elif not isinstance(config, self.config_class):
            raise PipelineError(f"Task {self.label!r}: config must be a {self.config_class.__name__}, "
                                f"not {type(config).__name__}")
        self.config: TaskConfig = config
        renames = dict(dataset_types or {})
        unknown = sorted(set(renames) - set(self._declared))
        if unknown:
            raise PipelineError(f"Task {self.label!r} ({self.import_path()}) has no connection(s) "
                                f"{', '.join(unknown)}; its connections: {', '.join(self._declared)}")
        self.connections: dict[str, Connection] = {
            name: dataclasses.replace(conn, dataset_type=renames.get(name, conn.dataset_type), name=name)
            for name, conn in self._declared.items()
        }
        self.log = logging.getLogger(f"skybutler.task.{self.label}")

    @classmethod
    def make_config(cls, overrides: Mapping[str, Any], *, label: str = "") -> TaskConfig:
        """Validate configuration overrides into a ``config_class`` instance.

        Raises
        ------
        PipelineError
            Naming the task and each bad field.
        """
        from pydantic import ValidationError

        try:
            return cls.config_class.model_validate(dict(overrides))
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or '(config)'}: {e['msg']}"
                                 for e in exc.errors())
            raise PipelineError(f"Task {label or cls.__name__!r} ({cls.import_path()}): invalid config: "
                                f"{problems}") from None

    @classmethod
    def import_path(cls) -> str:
        """``module:QualifiedName``, the form pipeline files use to name the class."""
        return f"{cls.__module__}:{cls.__qualname__}"

    @property
    def inputs(self) -> dict[str, Input]:
        """Regular inputs by connection name."""
        return {n: c for n, c in self.connections.items() if isinstance(c, Input)}

    @property
    def prerequisites(self) -> dict[str, PrerequisiteInput]:
        """Prerequisite inputs by connection name."""
        return {n: c for n, c in self.connections.items() if isinstance(c, PrerequisiteInput)}

    @property
    def outputs(self) -> dict[str, Output]:
        """Outputs by connection name."""
        return {n: c for n, c in self.connections.items() if isinstance(c, Output)}

    @property
    def log_dataset_type(self) -> str:
        """Name of the dataset type holding each quantum's log (text, the task's dimensions)."""
        return f"{self.label}_log"

    @property
    def config_dataset_type(self) -> str:
        """Name of the dataset type holding the configuration a run used (dict, no dimensions)."""
        return f"{self.label}_config"

    def run(self, *args: Any, **inputs: Any) -> Mapping[str, Any]:
        """Compute the outputs of one quantum from its inputs.

        Parameters
        ----------
        **inputs
            By connection name: the object, a list of objects (``multiple=True``, sorted
            by data id) or `DeferredHandle` (``deferred=True``).

        Returns
        -------
        outputs
            By output connection name: the object (a list for ``multiple=True``).
        """
        raise NotImplementedError(f"{type(self).__qualname__} must implement run() or run_quantum()")

    def run_quantum(self, context: QuantumContext) -> Mapping[str, Any]:
        """Run one quantum: by default load the inputs and call `run`.

        Override to use the `QuantumContext` (data id, records, cutouts, refs,
        `QuantumContext.report_used`).
        """
        return self.run(**context.load_inputs())

    def __repr__(self) -> str:
        return f"{type(self).__name__}(label={self.label!r}, config={self.config!r})"


# -- what a running quantum sees -------------------------------------------------------


class DeferredHandle:
    """A dataset not read yet: read it whole, in part, or as cutouts, when the task wants.

    Attributes
    ----------
    ref
        The dataset.
    """

    def __init__(self, butler: Butler, ref: DatasetRef):
        self._butler = butler
        self.ref = ref

    @property
    def data_id(self) -> DataId:
        """The dataset's data id."""
        return self.ref.data_id

    def get(self, *, parameters: Mapping[str, Any] | None = None) -> Any:
        """Read the dataset (``parameters``: ``bbox=...`` for images, ``columns=...`` for tables)."""
        return self._butler.get(self.ref, parameters=parameters)

    def get_cutouts(self, boxes: Sequence[tuple[int, int, int, int]], *, plane: str | None = None) -> Cutouts:
        """Many ``(y0, y1, x0, x1)`` cutouts, reading only the bytes they need."""
        return self._butler.get_cutouts(self.ref, boxes, plane=plane)

    def __repr__(self) -> str:
        return f"DeferredHandle({self.ref})"


class QuantumContext:
    """What one running quantum can see and say.

    Parameters
    ----------
    butler
        The repository the quantum runs against.
    task
        The task being run.
    data_id
        The quantum's data id (with implied values such as ``band``).
    inputs, outputs
        Refs by connection name (a list for every connection; one item unless ``multiple``).
    """

    def __init__(self, butler: Butler, task: Task, data_id: DataId, inputs: Mapping[str, Sequence[DatasetRef]],
                 outputs: Mapping[str, Sequence[DatasetRef]]):
        self.butler = butler
        self.task = task
        self.data_id = data_id
        self._inputs = {k: list(v) for k, v in inputs.items()}
        self._outputs = {k: list(v) for k, v in outputs.items()}
        self._used: dict[str, list[DatasetRef]] = {}
        self.log = task.log

    def _connection(self, name: str) -> Connection:
        try:
            return self.task.connections[name]
        except KeyError:
            raise ExecutionError(f"Task {self.task.label!r} has no connection {name!r}; "
                                 f"its connections: {', '.join(self.task.connections)}") from None

    def refs(self, name: str) -> DatasetRef | list[DatasetRef] | None:
        """The ref(s) of an input or output connection (a list for ``multiple=True``)."""
        conn = self._connection(name)
        refs = self._inputs.get(name) if name in self._inputs else self._outputs.get(name, [])
        if conn.multiple:
            return list(refs or [])
        return refs[0] if refs else None

    def _input_refs(self, name: str) -> list[DatasetRef]:
        conn = self._connection(name)
        if isinstance(conn, Output):
            raise ExecutionError(f"Task {self.task.label!r}: {name!r} is an output, not an input")
        return self._inputs.get(name, [])

    def get(self, name: str) -> Any:
        """Read an input: the object, or a list of objects for ``multiple=True`` (one registry query)."""
        refs = self._input_refs(name)
        objs = self.butler.get_many(refs) if refs else []
        if self._connection(name).multiple:
            return objs
        if not objs:
            raise DatasetNotFoundError(f"Task {self.task.label!r}: no {name!r} input for {{{self.data_id}}}")
        return objs[0]

    def handles(self, name: str) -> DeferredHandle | list[DeferredHandle]:
        """Deferred handles on an input (a list for ``multiple=True``)."""
        hs = [DeferredHandle(self.butler, r) for r in self._input_refs(name)]
        return hs if self._connection(name).multiple else hs[0]

    def load_inputs(self) -> dict[str, Any]:
        """Every input by connection name, loaded (or as handles for ``deferred=True``)."""
        out: dict[str, Any] = {}
        for name, conn in self.task.connections.items():
            if isinstance(conn, Output):
                continue
            out[name] = self.handles(name) if getattr(conn, "deferred", False) else self.get(name)
        return out

    def get_cutouts(self, ref: DatasetRef | DeferredHandle, boxes: Sequence[tuple[int, int, int, int]], *,
                    plane: str | None = None) -> Cutouts:
        """Many ``(y0, y1, x0, x1)`` cutouts from one input image, reading only the bytes they need."""
        ref = ref.ref if isinstance(ref, DeferredHandle) else ref
        return self.butler.get_cutouts(ref, boxes, plane=plane)

    def dimension_record(self, element: str, data_id: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The record of a dimension element for the quantum's data id (or the one given).

        ``context.dimension_record("patch")["region"]`` is the patch's sky polygon,
        ``context.dimension_record("visit")["timespan_begin"]`` its observation time.
        """
        universe = self.butler.universe
        values = dict(data_id.full if isinstance(data_id, DataId) else (data_id or self.data_id.full))
        pk = universe.elements[element].primary_key
        missing = [k for k in pk if k not in values]
        if missing:
            raise ExecutionError(f"Cannot look up the {element} record of {{{self.data_id}}}: "
                                 f"no value for {', '.join(missing)}")
        where = " AND ".join(f"{k} = :{k}" for k in pk)
        records = list(self.butler.query_dimension_records(element, where=where, bind={k: values[k] for k in pk}))
        if not records:
            raise ExecutionError(f"No {element} record for {({k: values[k] for k in pk})}")
        return records[0]

    def report_used(self, name: str, used: Iterable[int | DatasetRef | DataId | DeferredHandle]) -> None:
        """Say which datasets of an input the outputs actually derive from.

        Items are indices into the input's list, refs, data ids or handles. Inputs
        not reported on are all taken as used. The others stay in provenance as
        "used" (given to the task) but not as ancestors ("wasDerivedFrom").
        """
        refs = self._input_refs(name)
        by_id = {r.id: r for r in refs}
        by_data_id = {r.data_id: r for r in refs}
        chosen: list[DatasetRef] = []
        for item in used:
            if isinstance(item, DeferredHandle):
                item = item.ref
            if isinstance(item, DatasetRef):
                ref = by_id.get(item.id)
            elif isinstance(item, DataId | Mapping):
                ref = by_data_id.get(DataId(dict(item)) if not isinstance(item, DataId) else item)
            else:
                ref = refs[int(item)] if -len(refs) <= int(item) < len(refs) else None
            if ref is None:
                raise ExecutionError(f"Task {self.task.label!r} reported using {item!r}, which is not "
                                     f"one of its {name!r} inputs")
            chosen.append(ref)
        self._used[name] = list(dict.fromkeys(chosen))

    def used_inputs(self) -> list[DatasetRef]:
        """Every input the outputs derive from: reported ones, and all of the unreported connections."""
        out: list[DatasetRef] = []
        for name, refs in self._inputs.items():
            out += self._used.get(name, refs)
        return out

    def match_outputs(self, result: Mapping[str, Any] | None) -> list[tuple[Any, DatasetRef]]:
        """Pair what ``run`` returned with the output refs; anything missing or extra is an error."""
        label = self.task.label
        if not isinstance(result, Mapping):
            raise ExecutionError(f"Task {label!r} returned {type(result).__name__}; run() must return a "
                                 "mapping from output connection name to object")
        outputs = self.task.outputs
        extra = sorted(set(result) - set(outputs))
        if extra:
            raise ExecutionError(f"Task {label!r} returned unknown output(s) {', '.join(extra)}; "
                                 f"its outputs: {', '.join(outputs)}")
        pairs: list[tuple[Any, DatasetRef]] = []
        for name, conn in outputs.items():
            refs = self._outputs.get(name, [])
            if name not in result:
                raise ExecutionError(f"Task {label!r} returned no {name!r} output for {{{self.data_id}}}")
            value = result[name]
            if conn.multiple:
                if not isinstance(value, Sequence) or len(value) != len(refs):
                    raise ExecutionError(
                        f"Task {label!r} output {name!r} is multiple: it must be a list of {len(refs)} objects "
                        f"in the order of context.refs({name!r}), got "
                        f"{len(value) if isinstance(value, Sequence) else type(value).__name__}")
                pairs += list(zip(value, refs, strict=True))
            else:
                pairs += [(value, refs[0])]
        return pairs
