"""What operators call: submit a campaign, restart or cancel a submission, read its status and report.

The command line (``skybutler batch ...``) is a thin shell over these functions.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import BatchError, ConfigError
from ..registry import batch_sql
from .campaign import Campaign
from .clustering import summarize
from .control import RUNNER_FILE, cancel_submission, find_submission, live_runner, runner_marker
from .engines import Engine
from .service import RunSummary, SubmissionRunner, campaign_engine, load_campaign, write_resolved_campaign
from .states import JobState
from .submit import job_resources, plan_submission, prepare_run, submission_name, write_submission_files

if TYPE_CHECKING:
    from ..butler import Butler

__all__ = ["SubmitResult", "cancel", "report", "restart", "status", "submit"]


@dataclass
class SubmitResult:
    """What `submit` did: the plan (always) and how the run ended (unless a dry run)."""

    name: str
    run: str
    directory: Path
    jobs: int
    quanta: int
    clusters: list[dict[str, Any]]
    """Rows of (cluster, tasks, jobs, quanta): what ``--dry-run`` prints."""
    excluded_quanta: int = 0
    summary: RunSummary | None = None


def _campaign(campaign: Campaign | str | Path) -> Campaign:
    return campaign if isinstance(campaign, Campaign) else Campaign.from_file(campaign)


def submit(butler: Butler, campaign: Campaign | str | Path, *, dry_run: bool = False, engine: Engine | None = None,
           progress: Callable[[], None] | None = None) -> SubmitResult:
    """Submit a campaign and run it to its end.

    Checks the campaign against the repository, builds the quantum graph, cuts it into
    jobs, stores the campaign and pipeline files in the output run, writes the
    submission directory (per job a manifest and a registry subset) and records the
    submission, its jobs and quanta in the registry; then runs the jobs through the
    engine, merging each outcome as it arrives. ``dry_run`` stops after planning and
    writes nothing.

    Raises
    ------
    BatchError
        The campaign does not fit the repository, or was submitted already (then use `restart`).
    ConfigError
        The campaign file is invalid.
    """
    campaign = _campaign(campaign)
    name = submission_name(campaign.output_run_name())
    existing = batch_sql.get_submission(butler.registry, name)
    if existing is not None and not _recorded_whole(butler, existing) and not dry_run:
        # Its submit died while recording it, before any job was handed over: start afresh.
        batch_sql.delete_submission(butler.registry, existing["id"])
        existing = None
    if existing is not None:
        raise BatchError(f"Submission {name!r} (run {campaign.output_run_name()!r}) exists already; `skybutler "
                         f"batch restart {name}` runs what did not succeed, or change attnum for a new run")
    plan = plan_submission(butler, campaign)
    result = SubmitResult(name=plan.name, run=plan.run, directory=plan.directory, jobs=len(plan.jobs),
                          quanta=len(plan.graph), clusters=summarize(plan.jobs), excluded_quanta=plan.excluded_quanta)
    if dry_run:
        return result
    if plan.directory.exists():
        # Left by a submit that died before recording the submission: no job was handed over.
        shutil.rmtree(plan.directory)
    # Made first: a local engine starts its fork server (seconds of imports) while the files are written.
    own_engine = campaign_engine(campaign, plan.graph, plan.directory) if engine is None else None
    try:
        prepare_run(plan)
        writer = write_submission_files(plan)
        write_resolved_campaign(plan.directory, campaign)
        _record(butler, plan, writer)
        runner = SubmissionRunner(butler, plan.name, engine=engine or own_engine, progress=progress)
        with runner_marker(plan.directory):
            result.summary = runner.run()
    finally:
        if own_engine is not None:
            own_engine.close()
    return result


def _record(butler: Butler, plan: Any, writer: Any) -> None:
    registry = butler.registry
    sid = batch_sql.create_submission(
        registry, name=plan.name, campaign=plan.campaign.campaign, run=plan.run,
        engine=plan.campaign.engine.name, directory=str(plan.directory.resolve()),
        config=plan.campaign.source_text, n_jobs=len(plan.jobs), n_quanta=len(plan.graph))
    ids = batch_sql.insert_jobs(registry, sid, [
        {"name": j.name, "cluster": j.cluster, "tasks": ",".join(j.task_labels), "attempt": 1,
         "state": JobState.PENDING.value, "n_quanta": len(j.quanta),
         "memory_mb": job_resources(plan.campaign, j.task_labels).memory_mb,
         "manifest": str((writer.job_dir(j.name) / "manifest.json").resolve())}
        for j in plan.jobs])
    batch_sql.insert_dependencies(registry, [(ids[j.name], ids[u]) for j in plan.jobs for u in sorted(j.upstream)])
    graph = plan.graph
    batch_sql.insert_quanta(registry, sid, [
        {"quantum_id": q, "job_id": ids[j.name], "task_label": graph[q].task_label, "data_id": graph[q].data_id,
         "state": JobState.PENDING.value, "attempt": 1}
        for j in plan.jobs for q in j.quanta])


def _recorded_whole(butler: Butler, row: dict[str, Any]) -> bool:
    """Whether every job and quantum of a submission was recorded (its submit did not die while recording it)."""
    jobs = sum(row.get("jobs", {}).values())
    quanta = sum(sum(c.values()) for c in batch_sql.progress(butler.registry, row["id"]).values())
    return jobs == row["n_jobs"] and quanta == row["n_quanta"]


def restart(butler: Butler, name: str, *, engine: Engine | None = None,
            progress: Callable[[], None] | None = None) -> RunSummary:
    """Run again what did not succeed in a submission (a new attempt), and what a dead runner left in flight.

    Jobs that failed, were blocked or cancelled get a new attempt with only their
    unfinished quanta; one killed for memory asks for more (the campaign's
    ``retry.memory_factor``). Succeeded work is kept. A submission whose ``batch
    submit`` died while recording it (no job ran) is submitted again from its
    resolved campaign.

    Raises
    ------
    BatchError
        No such submission, or another process still drives it.
    """
    row = find_submission(butler, name)
    directory = Path(row["directory"])
    runner_process = live_runner(directory)
    if runner_process is not None:
        raise BatchError(f"Submission {name!r} is being run by {runner_process}; wait for it or `skybutler batch "
                         f"cancel` it first (if that process is gone, remove {directory / RUNNER_FILE})")
    if not _recorded_whole(butler, row):
        # Its submit died while recording it: no job ran. Submitted again, as it was (the
        # resolved campaign is written before anything is recorded).
        try:
            campaign = load_campaign(directory)
        except (ConfigError, OSError) as exc:
            raise BatchError(f"Submission {name!r} was not recorded whole (its `batch submit` stopped before any "
                             f"job ran) and its campaign cannot be read ({exc}); submit the campaign again") from None
        batch_sql.delete_submission(butler.registry, row["id"])
        result = submit(butler, campaign, engine=engine, progress=progress)
        assert result.summary is not None
        return result.summary
    runner = SubmissionRunner(butler, name, engine=engine, progress=progress)
    try:
        with runner_marker(runner.directory):  # first: another restart may have checked just as this one did
            runner.reset_for_restart()
            return runner.run()
    finally:
        if engine is None:
            runner.close()


def cancel(butler: Butler, name: str) -> int:
    """Cancel a submission (see `skybutler.batch.control.cancel_submission`); returns unfinished jobs."""
    return cancel_submission(butler, name)


@dataclass
class Status:
    """A submission's state and progress per task."""

    submission: dict[str, Any]
    progress: dict[str, dict[str, int]]
    jobs: dict[str, int] = field(default_factory=dict)


def status(butler: Butler, name: str | None = None) -> list[Status]:
    """Every submission (``name`` None) or one, with quanta per task and state and jobs per state."""
    registry = butler.registry
    rows = batch_sql.list_submissions(registry) if name is None else [find_submission(butler, name)]
    # Each row holds its jobs per state already.
    return [Status(row, batch_sql.progress(registry, row["id"]), dict(row["jobs"])) for row in rows]


@dataclass
class Report:
    """The operator's questions about one submission, answered."""

    submission: dict[str, Any]
    progress: dict[str, dict[str, int]]
    failures: list[dict[str, Any]]
    time_per_task: list[dict[str, Any]]
    qc: list[dict[str, Any]] | None = None
    files: list[dict[str, Any]] | None = None


def report(butler: Butler, name: str, *, dataset_type: str | None = None, qc: bool = False,
           severity: str | None = None) -> Report:
    """Counts per task and state, failures with reasons and exit codes, time per task; files of a type; QC."""
    registry = butler.registry
    row = find_submission(butler, name)
    out = Report(row, batch_sql.progress(registry, row["id"]), batch_sql.failures(registry, row["id"]),
                 batch_sql.time_per_task(registry, row["run"]))
    if qc:
        out.qc = batch_sql.qc_matches(registry, row["id"], severity=severity)
    if dataset_type is not None:
        out.files = batch_sql.files_of_type(registry, row["run"], dataset_type)
    return out
