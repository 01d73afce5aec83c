"""Turning a campaign into a submission: the graph, its jobs, and per job a manifest and a registry subset.

Everything here happens on the central side, before any job runs. A job's directory
holds all it will read besides its input files (see `skybutler.batch.manifest`). The
inputs a job takes from jobs upstream of it exist only as planned refs when the
submission is written: their sizes and checksums are filled in, and the subset
rewritten with them, when the job is handed to the engine (`JobWriter.write` again),
so that every input is verified when it is staged.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import threading
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._gc import paused_gc
from ..datastore import FileTemplates
from ..errors import BatchError, GraphError, PipelineError
from ..formats import guess_format
from ..model import DataId, DatasetRef, DatasetType
from ..pipeline import Pipeline, QuantumGraph, build_quantum_graph
from ..pipeline.executor import GraphExecutor
from ..pipeline.graph import Quantum
from ..registry import FileRecord
from ..transfer.subset import preload_records, write_subset
from .campaign import Campaign, check_campaign, exclusion_where
from .clustering import JobPlan, cluster_graph
from .manifest import JobManifest, PlannedOutput, Resources, StagedInput

if TYPE_CHECKING:
    from ..butler import Butler

__all__ = ["CAMPAIGN_DATASET_TYPE", "PIPELINE_DATASET_TYPE", "JobWriter", "Plan", "campaign_butler",
           "plan_submission", "submission_name"]

CAMPAIGN_DATASET_TYPE = "batch_campaign"
"""The campaign file as submitted, stored as a dataset of the output run (provenance)."""

PIPELINE_DATASET_TYPE = "batch_pipeline"
"""The pipeline file as submitted, stored as a dataset of the output run."""

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def submission_name(run: str) -> str:
    """The submission's name: its output run, made safe for a directory name (``demo/PROTO-0.1`` -> ``demo_PROTO-0.1``)."""
    return _UNSAFE.sub("_", run).strip("_") or "submission"


def campaign_butler(butler: Butler, campaign: Campaign) -> Butler:
    """A butler on the central repository writing the campaign's run with its variables and file templates."""
    run = campaign.output_run_name()
    b = butler.with_run(run, template_variables=campaign.variables_all())
    cfg = butler.config.templates
    runs = {k: dict(v) for k, v in cfg.runs.items()}
    runs[run] = {**runs.get(run, {}), **campaign.template_config()}
    b.templates = FileTemplates(cfg.default, dict(cfg.dataset_types), runs)
    return b


@dataclass
class Plan:
    """A submission before it is recorded: the graph, the jobs, where things go."""

    campaign: Campaign
    butler: Butler
    pipeline: Pipeline
    graph: QuantumGraph
    jobs: list[JobPlan]
    name: str
    directory: Path
    excluded_quanta: int = 0

    @property
    def run(self) -> str:
        return self.graph.run


def plan_submission(butler: Butler, campaign: Campaign) -> Plan:
    """Check the campaign against the repository, build its quantum graph and cut it into jobs.

    Nothing is written to the repository or to disk.

    Raises
    ------
    BatchError
        The campaign does not fit the repository (a task, collection or exclusion that
        does not exist, a template that is not unique...) or selects nothing.
    """
    pipeline = campaign.load_pipeline()
    check_campaign(campaign, butler, pipeline)
    central = campaign_butler(butler, campaign)
    where, bind = exclusion_where(campaign)
    collections = [*campaign.calibration_collections, *campaign.input_collections]
    try:
        graph = build_quantum_graph(central, pipeline, input_collections=collections,
                                    output_run=central.run or "", where=where, bind=bind)
    except (GraphError, PipelineError) as exc:
        raise BatchError(f"Campaign {campaign.campaign!r}: {exc}") from None
    graph, excluded = _drop_excluded_datasets(graph, {uuid.UUID(str(i)) for i in campaign.exclude.datasets})
    if not len(graph):
        raise BatchError(f"Campaign {campaign.campaign!r} selects no quanta (after exclusions)")
    jobs = cluster_graph(graph, campaign.clustering, universe=butler.universe)
    name = submission_name(graph.run)
    base = Path(campaign.submission_dir) if campaign.submission_dir else Path(butler.root) / "submissions"
    return Plan(campaign=campaign, butler=central, pipeline=pipeline, graph=graph, jobs=jobs, name=name,
                directory=base / name, excluded_quanta=excluded)


def _drop_excluded_datasets(graph: QuantumGraph, excluded: set[uuid.UUID]) -> tuple[QuantumGraph, int]:
    """The graph without quanta that read an excluded dataset, and without their descendants."""
    if not excluded:
        return graph, 0
    direct = {q.id for q in graph if any(r.id in excluded for r in q.input_refs())}
    drop = direct | graph.descendants(direct)
    if not drop:
        return graph, 0
    return QuantumGraph(graph.header, [q for q in graph if q.id not in drop]), len(drop)


def prepare_run(plan: Plan) -> None:
    """Register the run's dataset types, store task configurations and the campaign and pipeline files in the run."""
    butler = plan.butler
    GraphExecutor(butler, plan.graph).prepare()
    for name, text in ((CAMPAIGN_DATASET_TYPE, plan.campaign.source_text),
                       (PIPELINE_DATASET_TYPE, Path(plan.campaign.pipeline_path()).read_text(encoding="utf-8"))):
        butler.register_dataset_type(name, (), "text")
        if butler.find_dataset(name, {}, collections=[plan.run]) is None:
            butler.put(text, name, {})


@dataclass
class JobWriter:
    """Writes the manifest and registry subset of jobs of one submission.

    Input file records are read from the central registry in one query per call
    (`prefetch`); an input made by an upstream job that has not been merged yet is
    listed with its planned file name and no size.

    Files are written under a temporary name and renamed (never half a file); they are
    flushed to disk only when the repository asks for it (``registry.sync_every_commit``):
    otherwise they survive a killed process, not a power loss, like the registry's own
    commits, and a submission of 10^4 jobs does not wait for 2 x 10^4 flushes.
    """

    plan_butler: Butler
    graph: QuantumGraph
    campaign: Campaign
    directory: Path
    submission: str
    _producers: dict[uuid.UUID, DatasetRef] = field(default_factory=dict)
    _files: dict[uuid.UUID, FileRecord] = field(default_factory=dict)
    _dataset_types: list[DatasetType] = field(default_factory=list)

    def __post_init__(self) -> None:
        for q in self.graph:
            for r in q.output_refs():
                self._producers[r.id] = r
        self._dataset_types = list(self.graph.dataset_types.values())
        cfg = self.plan_butler.config
        run_templates = self.plan_butler.templates.per_run.get(self.graph.run, {})
        self._repository_config: dict[str, Any] = {
            "templates": {"default": cfg.templates.default, "dataset_types": dict(cfg.templates.dataset_types),
                          "runs": {self.graph.run: {k: t.text for k, t in run_templates.items()}}},
            "formats": cfg.formats.model_dump(),
            "datastore": {"checksum": cfg.datastore.checksum},
        }
        self._sync = cfg.registry.sync_every_commit

    def job_dir(self, job: str) -> Path:
        return self.directory / "jobs" / job

    def prefetch(self, quanta: Iterable[Quantum], *, planned: bool = True) -> None:
        """Read the central file records of every input of these quanta that exists (one bulk lookup).

        ``planned=False`` leaves out inputs that a quantum of the graph makes: when the
        submission is written none of them exists yet (half of a two-step graph's inputs).
        """
        ids = {r.id for q in quanta for r in q.input_refs()}
        if not planned:
            ids = {i for i in ids if i not in self._producers}
        ids |= {r.id for r in self.graph.init_outputs.values()}
        wanted = [i for i in ids if i not in self._files]
        if wanted:
            self._files.update(self.plan_butler.registry.get_files(wanted))

    def forget(self, ids: Iterable[uuid.UUID]) -> None:
        """Drop cached records (they will be read again: an upstream job's outputs just got merged)."""
        for i in ids:
            self._files.pop(i, None)

    def write(self, job: JobPlan, quanta: Sequence[Quantum], *, attempt_resources: Resources | None = None,
              ) -> Path:
        """Write ``jobs/NAME/manifest.json`` and ``subset.sqlite3`` for these quanta of ``job``; returns the manifest."""
        datastore = self.plan_butler.datastore
        made_here = {r.id for q in quanta for r in q.output_refs()}
        inputs: dict[uuid.UUID, DatasetRef] = {}
        for q in quanta:
            for r in q.input_refs():
                if r.id not in made_here:
                    inputs[r.id] = r
        for label in {q.task_label for q in quanta}:
            ref = self.graph.init_outputs.get(label)
            if ref is not None:
                inputs[ref.id] = ref
        staged: list[StagedInput] = []
        records: dict[uuid.UUID, FileRecord] = {}
        for ref in inputs.values():
            rec = self._files.get(ref.id)
            if rec is None:
                planned = self._producers.get(ref.id) or ref
                path = planned.extra.get("path")
                if path is None:
                    raise BatchError(f"Job {job.name}: input {ref.dataset_type.name} {{{ref.data_id}}} (id {ref.id}) "
                                     "has no file in the repository and no job makes it")
                fmt = guess_format(path) or "unknown"
                staged.append(StagedInput.model_construct(dataset_id=ref.id, source=datastore.url(path), path=path))
                records[ref.id] = FileRecord(ref.id, path, 0, None, None, fmt)
                continue
            # A file ingested in place, outside the datastore, is staged under its id.
            rel = rec.path if datastore.owns(rec.path) else f"_staged/{ref.id}/{Path(rec.path).name}"
            staged.append(StagedInput.model_construct(
                dataset_id=ref.id, source=datastore.url(rec.path), path=rel, size=rec.size, checksum=rec.checksum,
                checksum_algorithm=rec.checksum_algorithm))
            records[ref.id] = FileRecord(ref.id, rel, rec.size, rec.checksum, rec.checksum_algorithm, rec.format)
        # Built without validation (model_construct): the values come typed from the graph and the
        # registry, and validating 10^5 small models is a second of a large submission.
        outputs = [PlannedOutput.model_construct(dataset_id=r.id, dataset_type=r.dataset_type.name, quantum_id=q.id,
                                                 path=r.extra.get("path", ""))
                   for q in quanta for r in q.output_refs()]
        campaign = self.campaign
        resources = attempt_resources or job_resources(campaign, job.task_labels)
        qc = [p for p in campaign.qc if not p.tasks or set(p.tasks) & set(job.task_labels)]
        memory = resources.memory_mb
        manifest = JobManifest(
            submission=self.submission, job=job.name, run=self.graph.run,
            graph=str(Path("..") / ".." / "graph.qgraph"), quanta=[q.id for q in quanta],
            inputs=staged, outputs=outputs, destination=datastore.root,
            destination_options=_public_options(self.plan_butler.config.datastore.storage_options),
            repository_config=self._repository_config, template_variables=dict(campaign.variables_all()),
            stage_mode=campaign.stage_mode, parallel=campaign.clustering.parallel,
            memory_limit_mb=None if memory is None else max(1, memory // max(1, campaign.clustering.parallel)),
            qc=qc, metadata_keys={k: list(v) for k, v in campaign.metadata.items()},
            environment=list(campaign.environment), resources=resources,
        )
        jdir = self.job_dir(job.name)
        jdir.mkdir(parents=True, exist_ok=True)
        data_ids: list[DataId] = [q.data_id for q in quanta]
        data_ids += [r.data_id for r in inputs.values()]
        data_ids += [r.data_id for q in quanta for r in q.output_refs()]
        # write_subset writes under a temporary name and renames: never half a subset.
        write_subset(self.plan_butler.registry, jdir / "subset.sqlite3", data_ids=data_ids,
                     dataset_types=self._dataset_types, refs=list(inputs.values()), files=records,
                     runs=[self.graph.run], sync=self._sync)
        path = jdir / "manifest.json"
        _write_json(path, manifest, sync=self._sync)
        return path


def _write_json(path: Path, model: JobManifest, *, sync: bool) -> None:
    """A model as JSON (as `skybutler.batch.manifest.write_json_atomic` writes it): temporary name, rename.

    Flushed to disk before the rename only when ``sync``.
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(model.model_dump_json(indent=1))
            if sync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def job_resources(campaign: Campaign, labels: Sequence[str]) -> Resources:
    """A job asks for the most any of its tasks asks for."""
    per = [campaign.resources_for(label) for label in labels] or [campaign.resources.default]
    memory = [r.memory_mb for r in per if r.memory_mb is not None]
    wall = [r.wall_time_s for r in per if r.wall_time_s is not None]
    return Resources(memory_mb=max(memory) if memory else None, cores=max(r.cores for r in per),
                     wall_time_s=max(wall) if wall else None)


def _public_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """Storage options without secrets: a worker gets credentials from its own environment, not from a manifest."""
    from ..config import is_secret_name

    return {k: v for k, v in options.items() if not is_secret_name(k)}


def write_submission_files(plan: Plan) -> JobWriter:
    """Write the submission directory: campaign, graph, job dependency graph, each job's manifest and subset."""
    directory = plan.directory
    if (directory / "graph.qgraph").exists():
        raise BatchError(f"Submission directory {directory} is already in use; use `skybutler batch restart "
                         f"{plan.name}` to continue that submission")
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "campaign.yaml").write_text(plan.campaign.source_text, encoding="utf-8")
    plan.graph.write(directory / "graph.qgraph")
    (directory / "jobs.json").write_text(
        json.dumps({j.name: sorted(j.upstream) for j in plan.jobs}, indent=1), encoding="utf-8")
    # 10^5 quanta are millions of live objects: each pass of the cyclic collector would walk
    # them all again, so the per-job cost would grow with the graph. What a job makes is acyclic.
    with paused_gc():
        writer = JobWriter(plan.butler, plan.graph, plan.campaign, directory, plan.name)
        writer.prefetch(plan.graph, planned=False)
        # Every job's records in a few bulk queries, not a few queries per job.
        preload_records(plan.butler.registry, _data_ids(plan.graph))
        for job in plan.jobs:
            writer.write(job, [plan.graph[q] for q in job.quanta])
    return writer


def _data_ids(graph: QuantumGraph) -> list[DataId]:
    """The data ids of every quantum, input and output of a graph (what the jobs' subsets copy records of)."""
    out: list[DataId] = []
    for q in graph:
        out.append(q.data_id)
        out += [r.data_id for r in q.input_refs()]
        out += [r.data_id for r in q.output_refs()]
    return out
