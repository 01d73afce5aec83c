"""Campaigns: one YAML file that says what to run, on what, how to cut it into jobs and where they run.

A campaign file is read once into a `Campaign` (typed, unknown keys refused with the
key named) and printed whole by `Campaign.to_yaml`, defaults included, so that what a
submission stores for provenance reproduces the campaign exactly::

    campaign: dmtn059
    pipeline: pipelines/dmtn059.yaml          # relative to the campaign file's directory
    input_collections: [HSC/defaults]
    calibration_collections: [HSC/calib/new]  # searched before the inputs
    where: "instrument = 'HSC' AND visit IN (903334, 903336)"
    variables: {reqnum: 2, attnum: 1}
    output_run: "{campaign}/r{reqnum}/a{attnum}"
    templates:
      calexp: "{run}/{dataset_type}/{band}/{dataset_type}_{instrument}_{visit:08d}_{detector:03d}_r{reqnum}"
    exclude:
      data_ids: [{instrument: HSC, visit: 903334, detector: 3}]
    clustering:
      clusters: [{name: per_visit, tasks: [isr, calibrate], dimensions: [visit]}]
      parallel: 4

Checks that need no repository (key names, regular expressions, template syntax,
clusters, the output run's variables) run when the file is read and raise
`ConfigError` naming the file and the key path. Checks against the repository and the
loaded pipeline are `check_campaign`'s, and raise `BatchError`.
"""

from __future__ import annotations

import re
import string
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, StrictInt, StrictStr, ValidationError

from ..config import read_yaml_file
from ..datastore.templates import SPECIAL_FIELDS, FileTemplate
from ..errors import BatchError, ConfigError, DimensionError, QueryError, SkyButlerError, TemplateError
from ..model import DatasetType
from ..registry import parse_expression, query_data_ids
from .engines import ENGINES
from .manifest import QCPattern, Resources

if TYPE_CHECKING:
    from ..butler import Butler
    from ..pipeline import Pipeline

__all__ = [
    "SEVERITIES",
    "Campaign",
    "Cluster",
    "Clustering",
    "EngineSettings",
    "Exclusions",
    "MergeSettings",
    "ResourcePolicy",
    "RetryPolicy",
    "check_campaign",
    "exclusion_where",
]

SEVERITIES = ("debug", "info", "warning", "error", "critical")
"""Severities a QC pattern may have (those of Python's logging)."""

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class Cluster(_Model):
    """Tasks whose quanta go into one job per distinct value of ``dimensions`` (one job if none)."""

    name: str = Field(min_length=1)
    tasks: list[str] = Field(min_length=1)
    dimensions: list[str] = Field(default_factory=list)


class Clustering(_Model):
    """How quanta are grouped into jobs; tasks in no cluster get one job per quantum."""

    clusters: list[Cluster] = Field(default_factory=list)
    parallel: int = Field(1, ge=1, description="At most this many quanta run at a time inside one job")

    def cluster_of(self) -> dict[str, Cluster]:
        """Task label -> its cluster (tasks in no cluster are absent)."""
        return {label: c for c in self.clusters for label in c.tasks}


class Exclusions(_Model):
    """Inputs left out of the campaign."""

    data_ids: list[dict[str, StrictStr | StrictInt]] = Field(
        default_factory=list, description="Data ids (some dimension values) whose quanta are left out")
    datasets: list[uuid.UUID] = Field(default_factory=list, description="Datasets not to use, by id")


class ResourcePolicy(_Model):
    """What jobs ask of workers: a default, and per task the fields that differ from it."""

    default: Resources = Field(default_factory=Resources)
    tasks: dict[str, Resources] = Field(default_factory=dict)


class RetryPolicy(_Model):
    """Automatic retries of failed jobs (see `skybutler.batch.states.RETRIED_BY_DEFAULT`)."""

    max_attempts: int = Field(3, ge=1, description="Attempts per job for system failures (1: no retry)")
    retry_task_failures: bool = Field(False, description="Also retry jobs whose task code raised")
    memory_factor: float = Field(2.0, ge=1.0, description="Memory request multiplied after an out-of-memory kill")


class EngineSettings(_Model):
    """Which engine runs the jobs (a short name of `skybutler.batch.engines.ENGINES`) and its settings."""

    name: str = "local"
    settings: dict[str, Any] = Field(default_factory=dict)


class MergeSettings(_Model):
    """How outcomes are merged into the central repository."""

    max_concurrent: int = Field(2, ge=1)


def _default_variables() -> dict[str, str | int]:
    return {"reqnum": 1, "attnum": 1}


class Campaign(_Model):
    """A campaign: what to run, on which data, into which run, as which jobs, where.

    Read one with `Campaign.from_file`; see the module documentation for the file.
    Two campaigns are equal when every setting and the directory the pipeline path is
    relative to are (the text they were read from does not matter).
    """

    campaign: str = Field(min_length=1)
    pipeline: str = Field(min_length=1)
    tasks: list[str] = Field(default_factory=list)
    input_collections: list[str] = Field(min_length=1)
    calibration_collections: list[str] = Field(default_factory=list)
    where: str | None = None
    bind: dict[str, Any] = Field(default_factory=dict)
    variables: dict[str, StrictStr | StrictInt] = Field(default_factory=_default_variables)
    output_run: str = "{campaign}/r{reqnum}/a{attnum}"
    templates: dict[str, str] = Field(default_factory=dict)
    exclude: Exclusions = Field(default_factory=Exclusions)
    clustering: Clustering = Field(default_factory=Clustering)
    resources: ResourcePolicy = Field(default_factory=ResourcePolicy)
    retry: RetryPolicy = Field(default_factory=RetryPolicy)
    qc: list[QCPattern] = Field(default_factory=list)
    metadata: dict[str, list[str]] = Field(default_factory=dict)
    environment: list[str] = Field(default_factory=list)
    engine: EngineSettings = Field(default_factory=EngineSettings)
    merge: MergeSettings = Field(default_factory=MergeSettings)
    stage_mode: Literal["link", "copy"] = "link"
    submission_dir: str | None = None

    _base_dir: Path = PrivateAttr(default_factory=Path.cwd)
    _source_text: str | None = PrivateAttr(default=None)
    _source: str = PrivateAttr(default="campaign")

    # -- reading and printing ----------------------------------------------------------

    @classmethod
    def from_file(cls, path: str | Path) -> Campaign:
        """Read a campaign file; its pipeline path is relative to the file's directory.

        Raises
        ------
        ConfigError
            The file cannot be read or is not YAML; a key is unknown or a value invalid
            (one line naming the file and the key path); the pipeline file does not exist.
        """
        path = Path(path)
        text, data = read_yaml_file(path)
        campaign = cls.from_mapping(data, base_dir=path.resolve().parent, source=str(path))
        campaign._source_text = text
        if not campaign.pipeline_path().is_file():
            raise ConfigError(f"{path}: pipeline: no pipeline file {campaign.pipeline_path()}")
        return campaign

    @classmethod
    def from_mapping(cls, data: Any, *, base_dir: str | Path, source: str = "campaign") -> Campaign:
        """Validate a parsed campaign document; a relative ``pipeline`` is relative to ``base_dir``.

        Raises
        ------
        ConfigError
            ``"<source>: <key path>: <problem>"`` for the first problem found (``source``:
            what to call the campaign in messages, the file's name).
        """
        if not isinstance(data, Mapping):
            got = "an empty document" if data is None else type(data).__name__
            raise ConfigError(f"{source}: expected a mapping of campaign settings, got {got}")
        try:
            campaign = cls.model_validate(dict(data))
        except ValidationError as exc:
            raise ConfigError(f"{source}: {_first_problem(exc, data)}") from None
        campaign._base_dir = Path(base_dir).absolute()
        campaign._source = source
        campaign._check(source)
        return campaign

    def to_yaml(self) -> str:
        """The whole campaign as YAML, defaults included; `from_mapping` of it gives an equal campaign."""
        data = self.model_dump(mode="json")
        # A task's resources hold only the fields it overrides: printing the others would
        # turn "as the default" into fixed values.
        data["resources"]["tasks"] = {label: r.model_dump(mode="json", exclude_unset=True)
                                      for label, r in self.resources.tasks.items()}
        return yaml.safe_dump(data, sort_keys=False)

    @property
    def source_text(self) -> str:
        """The text the campaign was read from (its `to_yaml` when it was not read from a file)."""
        return self._source_text if self._source_text is not None else self.to_yaml()

    @property
    def base_dir(self) -> Path:
        """The directory the pipeline path is relative to."""
        return self._base_dir

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Campaign):
            return NotImplemented
        return (self.model_dump() == other.model_dump() and self._base_dir == other._base_dir
                and self._task_overrides() == other._task_overrides())

    __hash__ = None  # type: ignore[assignment]  # mutable, compared by value

    def _task_overrides(self) -> dict[str, dict[str, Any]]:
        return {label: r.model_dump(exclude_unset=True) for label, r in self.resources.tasks.items()}

    # -- checks without a repository ---------------------------------------------------

    def _check(self, source: str) -> None:
        def fail(key: str, problem: str, error: type[ConfigError] = ConfigError) -> None:
            raise error(f"{source}: {key}: {problem}")

        for name in self.variables:
            if name == "campaign":
                fail("variables.campaign", "is set from the campaign's name; remove it")
            if not _NAME.match(name):
                fail(f"variables.{name}", "a variable name must be a word (letters, digits, '_')")
            if name in SPECIAL_FIELDS:
                fail(f"variables.{name}", f"is a file template field filled by skybutler "
                                          f"({', '.join(sorted(SPECIAL_FIELDS))}); choose another name")
        try:
            self.output_run_name()
        except ConfigError as exc:
            fail("output_run", str(exc))
        if self.where:
            try:
                parse_expression(self.where)
            except QueryError as exc:
                fail("where", str(exc))
        for dataset_type, text in self.templates.items():
            try:
                FileTemplate(text)
            except TemplateError as exc:
                fail(f"templates.{dataset_type}", str(exc), TemplateError)
        for i, data_id in enumerate(self.exclude.data_ids):
            if not data_id:
                fail(f"exclude.data_ids.{i}", "an empty data id would exclude everything")
            for key in data_id:
                if not _NAME.match(key):
                    fail(f"exclude.data_ids.{i}", f"{key!r} is not a dimension name")
        names: set[str] = set()
        owner: dict[str, str] = {}
        for i, cluster in enumerate(self.clustering.clusters):
            key = f"clustering.clusters.{i}"
            if cluster.name in names:
                fail(f"{key}.name", f"cluster name {cluster.name!r} is used twice")
            names.add(cluster.name)
            for label in cluster.tasks:
                if label in owner:
                    fail(f"{key}.tasks", f"task {label!r} is in clusters {owner[label]!r} and {cluster.name!r}; "
                                         "a task belongs to one cluster at most")
                owner[label] = cluster.name
            if len(set(cluster.dimensions)) != len(cluster.dimensions):
                fail(f"{key}.dimensions", "a dimension is listed twice")
        for i, qc in enumerate(self.qc):
            try:
                re.compile(qc.pattern)
            except re.error as exc:
                fail(f"qc.{i}.pattern", f"{qc.pattern!r} is not a valid regular expression ({exc})")
            if qc.severity not in SEVERITIES:
                fail(f"qc.{i}.severity", f"{qc.severity!r} is not one of {', '.join(SEVERITIES)}")
        if self.engine.name not in ENGINES:
            fail("engine.name", f"unknown engine {self.engine.name!r}; choose one of {', '.join(sorted(ENGINES))}")

    # -- derived values ----------------------------------------------------------------

    def variables_all(self) -> dict[str, str | int]:
        """The operator variables with ``campaign`` (the campaign's name) added."""
        return {**self.variables, "campaign": self.campaign}

    def output_run_name(self) -> str:
        """The output run: ``output_run`` formatted with `variables_all`.

        Raises
        ------
        ConfigError
            The template names a variable that is not set, or is not a valid format string.
        """
        variables = self.variables_all()
        try:
            fields = [name for _, name, _, _ in string.Formatter().parse(self.output_run) if name is not None]
        except ValueError as exc:
            raise ConfigError(f"Output run template {self.output_run!r} is not a valid format string: {exc}") from None
        for name in fields:
            if not _NAME.match(name):
                raise ConfigError(f"Output run template {self.output_run!r}: field {{{name}}} is not a variable name")
            if name not in variables:
                raise ConfigError(f"Output run template {self.output_run!r} uses variable {name!r}, which is not "
                                  f"set (variables: {', '.join(variables)})")
        try:
            run = self.output_run.format(**variables)
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"Output run template {self.output_run!r}: {exc}") from None
        if not run:
            raise ConfigError(f"Output run template {self.output_run!r} gives an empty run name")
        return run

    def pipeline_path(self) -> Path:
        """The pipeline file, absolute (a relative ``pipeline`` is relative to the campaign file's directory)."""
        path = Path(self.pipeline).expanduser()
        return path if path.is_absolute() else self._base_dir / path

    def load_pipeline(self) -> Pipeline:
        """The pipeline, restricted to ``tasks`` when some are named.

        Raises
        ------
        ConfigError
            The pipeline file is missing (named) or invalid.
        BatchError
            ``tasks`` names a label the pipeline does not have.
        """
        from ..pipeline import Pipeline

        path = self.pipeline_path()
        if not path.is_file():
            raise ConfigError(f"{self._source}: pipeline: no pipeline file {path}")
        pipeline = Pipeline.from_file(path)
        if not self.tasks:
            return pipeline
        unknown = [t for t in self.tasks if t not in pipeline.tasks]
        if unknown:
            raise BatchError(f"Campaign {self.campaign!r}: tasks: pipeline {path} has no task {unknown[0]!r} "
                             f"(tasks: {', '.join(pipeline.tasks)})")
        return pipeline.subset(self.tasks)

    def search_collections(self) -> list[str]:
        """Collections the graph builder searches: calibration collections first, then the inputs."""
        return list(dict.fromkeys([*self.calibration_collections, *self.input_collections]))

    def resources_for(self, label: str) -> Resources:
        """The resources of a task: the default with the fields the task sets replaced."""
        override = self.resources.tasks.get(label)
        if override is None:
            return self.resources.default.model_copy()
        return Resources(**{**self.resources.default.model_dump(), **override.model_dump(exclude_unset=True)})

    def qc_for(self, label: str) -> list[QCPattern]:
        """The QC patterns that apply to a task: global ones and those naming it."""
        return [p for p in self.qc if not p.tasks or label in p.tasks]

    def template_config(self) -> dict[str, str]:
        """The campaign's file templates, dataset type -> template, for the output run's entry in the repository's.

        Put them under ``templates.runs[output_run_name()]`` of the repository
        configuration the submission's butler uses: run entries win over the repository's
        own. Their variables are not substituted here: the butler fills them from its
        ``template_variables`` (`variables_all`), as for every template.

        Examples
        --------
        >>> campaign.template_config()  # doctest: +SKIP
        {'calexp': '{run}/{dataset_type}/{band}/{dataset_type}_{instrument}_{visit:08d}_{detector:03d}_r{reqnum}'}
        """
        return dict(self.templates)


def _first_problem(exc: ValidationError, data: Any) -> str:
    """The first pydantic error as ``key.path: problem`` (union member tags left out of the path)."""
    errors = exc.errors()
    # An unknown key first: a misspelt key usually explains the "missing" error beside it.
    err = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])
    # A union reports one error per member with the member's type in the location; keep
    # only the part of the location that names keys of the document.
    path: list[str] = []
    node = data
    loc = err["loc"]
    for i, part in enumerate(loc):
        found, node = _child(node, part)
        if not found and not (err["type"] == "missing" and i == len(loc) - 1):
            break
        path.append(str(part))
    where = ".".join(path) or "(top level)"
    kind = err["type"]
    if kind == "extra_forbidden":
        return f"{where}: unknown key"
    if kind == "missing":
        return f"{where}: required key is missing"
    msg = re.sub(r"^(Input|List|Dictionary|String) should", "should", str(err["msg"]))
    if len(path) < len(loc) and loc[-1] in ("str", "int"):  # variables and data id values
        msg = "should be a string or an integer"
    value = err.get("input")
    if isinstance(value, (str, int, float, bool)) and len(repr(value)) <= 60:
        msg += f" (got {value!r})"
    return f"{where}: {msg}"


def _child(node: Any, part: Any) -> tuple[bool, Any]:
    """Whether ``node`` (a mapping or list of the document) has ``part``, and its value."""
    if isinstance(node, Mapping):
        return (True, node[part]) if part in node else (False, None)
    if isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
        return True, node[part]
    return False, None


def exclusion_where(campaign: Campaign, *, butler: Butler | None = None) -> tuple[str | None, dict[str, Any]]:
    """The where clause and binds for the graph builder: the campaign's ``where`` without the exclusions.

    Each excluded data id becomes ``NOT (k1 = :x0_0 AND k2 = :x0_1 ...)``; the clauses are
    joined with ``AND`` to the campaign's own ``where`` (parenthesised). Bind names never
    clash with the campaign's ``bind``.

    Parameters
    ----------
    campaign
        The campaign.
    butler
        When given, each dataset of ``exclude.datasets`` is looked up and its data id
        excluded as well (the quanta on that data id are left out; datasets have no
        other handle in a dimension query). Unknown ids are ignored here (see
        `check_campaign`).

    Returns
    -------
    where, bind
        ``(None, bind)`` when there is nothing to constrain.

    Examples
    --------
    >>> exclusion_where(campaign)  # doctest: +SKIP
    ("(band = 'r') AND NOT (instrument = :x0_0 AND visit = :x0_1)", {'x0_0': 'HSC', 'x0_1': 903334})
    """
    bind = dict(campaign.bind)
    data_ids = [dict(d) for d in campaign.exclude.data_ids]
    if butler is not None and campaign.exclude.datasets:
        found = butler.registry.get_datasets(campaign.exclude.datasets)
        data_ids += [dict(found[i].data_id) for i in campaign.exclude.datasets if i in found and found[i].data_id]
    prefix = "x"
    while any(k.startswith(prefix) for k in bind):  # an operator's own bind may start with "x"
        prefix = "_" + prefix
    clauses = [f"({campaign.where})"] if campaign.where else []
    for i, data_id in enumerate(data_ids):
        terms = []
        for j, (key, value) in enumerate(data_id.items()):
            name = f"{prefix}{i}_{j}"
            bind[name] = value
            terms.append(f"{key} = :{name}")
        clauses.append(f"NOT ({' AND '.join(terms)})")
    return (" AND ".join(clauses) or None), bind


def check_campaign(campaign: Campaign, butler: Butler, pipeline: Pipeline) -> None:
    """Check a campaign against the repository and its loaded pipeline, before anything is submitted.

    Parameters
    ----------
    campaign
        The campaign.
    butler
        The central repository (only read).
    pipeline
        The pipeline as `Campaign.load_pipeline` gives it (restricted to ``tasks``).

    Raises
    ------
    BatchError
        One line for the first problem: a task in ``tasks``, a cluster, ``resources`` or
        ``qc`` that the pipeline does not have; a cluster named like a task outside it;
        cluster dimensions that are not dimensions of every member task; an input or
        calibration collection that does not exist; a template for an unknown dataset
        type or one that cannot give unique names; an excluded data id that matches no
        dimension records, or an excluded dataset id the repository does not hold.
    """
    who = f"Campaign {campaign.campaign!r}"
    labels = pipeline.tasks
    known = ", ".join(labels)

    def unknown_task(key: str, label: str) -> BatchError:
        return BatchError(f"{who}: {key} names task {label!r}, which the pipeline does not have (tasks: {known})")

    for label in campaign.tasks:
        if label not in labels:
            raise unknown_task("tasks", label)
    universe = butler.universe
    for cluster in campaign.clustering.clusters:
        if cluster.name in labels and cluster.name not in cluster.tasks:
            raise BatchError(f"{who}: cluster {cluster.name!r} has the name of task {cluster.name!r}, which it "
                             "does not hold; job names would mix them up")
        try:  # grouped as `cluster_graph` does: with the dimensions they require
            group_by = universe.closure(cluster.dimensions)
        except DimensionError as exc:
            raise BatchError(f"{who}: cluster {cluster.name!r}: {exc}") from None
        for label in cluster.tasks:
            if label not in labels:
                raise unknown_task(f"cluster {cluster.name!r}", label)
            task_dims = universe.closure(labels[label].dimensions)
            reach = {*task_dims, *universe.implied_by(task_dims)}
            missing = [d for d in group_by if d not in reach]
            if missing:
                raise BatchError(f"{who}: cluster {cluster.name!r} groups by {', '.join(group_by)}, but "
                                 f"task {label!r} has no {missing[0]!r} (its dimensions: {', '.join(task_dims)})")
    for label in campaign.resources.tasks:
        if label not in labels:
            raise unknown_task("resources.tasks", label)
    for qc in campaign.qc:
        for label in qc.tasks:
            if label not in labels:
                raise unknown_task(f"QC pattern {qc.pattern!r}", label)
    for key, names in (("input_collections", campaign.input_collections),
                       ("calibration_collections", campaign.calibration_collections)):
        for name in names:
            try:
                butler.registry.collection_type(name)
            except SkyButlerError as exc:
                raise BatchError(f"{who}: {key}: {exc}") from None
    _check_templates(campaign, butler, pipeline, who)
    _check_exclusions(campaign, butler, who)


def _check_templates(campaign: Campaign, butler: Butler, pipeline: Pipeline, who: str) -> None:
    if not campaign.templates:
        return
    universe = butler.universe
    dataset_types = {name: flow.dataset_type for name, flow in pipeline.dataset_types(universe).items()}
    for task in pipeline.tasks.values():
        # Logs and configurations are outputs of every campaign too; their templates may be set.
        dataset_types[task.log_dataset_type] = DatasetType(task.log_dataset_type, universe.closure(task.dimensions),
                                                           "text")
        dataset_types[task.config_dataset_type] = DatasetType(task.config_dataset_type, (), "dict")
    variables = list(campaign.variables_all())
    for name, text in campaign.templates.items():
        dt = dataset_types.get(name)
        if dt is None:
            raise BatchError(f"{who}: templates: dataset type {name!r} is neither read nor written by the pipeline")
        dims = universe.closure(dt.dimensions)
        try:
            FileTemplate(text).validate(dt, [*dims, *universe.implied_by(dims)], variables=variables)
        except TemplateError as exc:
            raise BatchError(f"{who}: templates.{name}: {exc}") from None


def _check_exclusions(campaign: Campaign, butler: Butler, who: str) -> None:
    for i, data_id in enumerate(campaign.exclude.data_ids):
        where = " AND ".join(f"{key} = :v{j}" for j, key in enumerate(data_id))
        bind = {f"v{j}": value for j, value in enumerate(data_id.values())}
        shown = ", ".join(f"{k}={v}" for k, v in data_id.items())
        try:
            match = next(iter(query_data_ids(butler.registry, list(data_id), where=where, bind=bind)), None)
        except SkyButlerError as exc:
            raise BatchError(f"{who}: exclude.data_ids.{i} ({shown}): {exc}") from None
        if match is None:
            raise BatchError(f"{who}: exclude.data_ids.{i} ({shown}) matches no dimension records; "
                             "a typo would otherwise exclude nothing")
    if campaign.exclude.datasets:
        found = butler.registry.get_datasets(campaign.exclude.datasets)
        missing = [i for i in campaign.exclude.datasets if i not in found]
        if missing:
            raise BatchError(f"{who}: exclude.datasets: the repository holds no dataset {missing[0]} "
                             f"({len(missing)} of {len(campaign.exclude.datasets)} ids unknown)")
