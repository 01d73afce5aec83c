"""The central side of a submission while it runs: hand ready jobs to the engine, follow them, merge, retry.

One `SubmissionRunner` drives one submission from the process that submitted it (or
restarted it). Each pass of its loop:

1. hands the engine every pending job whose upstream jobs have succeeded (first
   rewriting its manifest and subset when it reads files of those jobs, so their
   sizes and checksums are verified when staged), and marks blocked the jobs below a
   failure;
2. reads the new lines of each running job's ``status.jsonl`` and the engine's reports,
   and writes every state change into the central database as it happens (the jobs
   themselves never open it);
3. merges the outcome of each finished job (a few at a time, `Campaign.merge`), records
   its figures, QC matches and quantum states, and retries system failures by the
   campaign's policy (memory raised after an out-of-memory kill).

A runner killed at any point leaves the database describing what was known; `restart`
resumes: outcomes already written are merged (merging is idempotent), jobs whose
attempt left nothing are run again.
"""

from __future__ import annotations

import datetime
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import yaml

from .._butler_put import record_manifest
from ..errors import ConfigError, SkyButlerError
from ..pipeline import QuantumGraph
from ..provenance import ExecutionStatus
from ..registry import FileRecord, batch_sql, pipeline_sql, provenance_sql
from ..registry.batch_sql import StateChange
from ..transfer import merge_run
from .attempts import remove_unmerged_outputs, unstaged_outputs
from .campaign import Campaign
from .clustering import JobPlan
from .control import find_submission, kill_local
from .engines import Engine, EngineJob, EngineState, JobReport, make_engine
from .failures import classify_exit, raised_memory
from .gather import task_modules
from .manifest import OUTCOME_VERSION, JobOutcome, Resources, StatusEvent, read_json_model
from .states import FAILED_STATES, RETRIED_BY_DEFAULT, TERMINAL_STATES, FailureClass, JobState
from .submit import JobWriter, job_resources

if TYPE_CHECKING:
    from ..butler import Butler

__all__ = ["RunSummary", "SubmissionRunner", "campaign_engine", "load_campaign"]

RESOLVED_CAMPAIGN = "campaign.resolved.yaml"
"""The campaign with its pipeline path made absolute: what a restart reads."""

_QUANTUM_STATES = {"succeeded": JobState.SUCCEEDED, "skipped": JobState.SUCCEEDED, "failed": JobState.FAILED,
                   "not_run": JobState.BLOCKED}
_LIVE_STATES = {JobState.STAGING_IN.value, JobState.RUNNING.value, JobState.STAGING_OUT.value}
_OUT_STATES = frozenset({JobState.SUBMITTED, JobState.STAGING_IN, JobState.RUNNING, JobState.STAGING_OUT})
"""A job in these states is with the engine."""
_JOB_STATE_VALUES = frozenset(s.value for s in JobState)


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def load_campaign(directory: Path) -> Campaign:
    """The campaign of a submission directory, as it was submitted (pipeline path resolved)."""
    return Campaign.from_file(directory / RESOLVED_CAMPAIGN)


def write_resolved_campaign(directory: Path, campaign: Campaign) -> None:
    data = yaml.safe_load(campaign.to_yaml())
    data["pipeline"] = str(campaign.pipeline_path())
    if campaign.submission_dir is not None:
        data["submission_dir"] = str(Path(campaign.submission_dir).resolve())
    (directory / RESOLVED_CAMPAIGN).write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")


@dataclass
class _Job:
    id: uuid.UUID
    name: str
    plan: JobPlan
    state: JobState
    attempt: int
    memory_mb: int | None
    failure_class: str | None = None
    report: JobReport | None = None
    offset: int = 0
    """Bytes of ``status.jsonl`` already read."""


@dataclass
class RunSummary:
    """What a pass of `SubmissionRunner.run` ended with."""

    submission: str
    state: JobState
    jobs: dict[str, int] = field(default_factory=dict)
    """Jobs per final state."""
    wall_time: float = 0.0
    merged_datasets: int = 0


def campaign_engine(campaign: Campaign, graph: QuantumGraph, directory: Path) -> Engine:
    """The engine a campaign names, with its settings (a local one preloads the pipeline's task modules)."""
    settings = dict(campaign.engine.settings)
    if campaign.engine.name == "local":
        # Jobs fork from a server that imported the task modules once (not once per job).
        settings.setdefault("preload", task_modules(graph.header.get("pipeline") or {}))
    return make_engine(campaign.engine.name, settings, work_dir=directory / "engine")


class SubmissionRunner:
    """Runs one recorded submission to its end (see the module docstring).

    Parameters
    ----------
    butler
        A writeable butler on the central repository.
    name
        The submission's name.
    engine
        An engine; by default the campaign's (``engine.name`` with ``engine.settings``).
    progress
        Called with nothing after each pass that changed something (to refresh a display).
    poll_interval
        Seconds between passes when nothing happens.
    """

    def __init__(self, butler: Butler, name: str, *, engine: Engine | None = None,
                 progress: Callable[[], None] | None = None, poll_interval: float = 0.05):
        row = find_submission(butler, name)
        self.row = row
        self.submission_id: uuid.UUID = row["id"]
        self.name = row["name"]
        self.directory = Path(row["directory"])
        self.campaign = load_campaign(self.directory)
        from .submit import campaign_butler

        self.butler = campaign_butler(butler, self.campaign)
        self.graph = QuantumGraph.read(self.directory / "graph.qgraph")
        self._engine = engine
        self.progress = progress
        self.poll_interval = poll_interval
        self.writer = JobWriter(self.butler, self.graph, self.campaign, self.directory, self.name)
        self.jobs: dict[str, _Job] = {}
        self.upstream: dict[str, list[str]] = batch_sql.job_dependencies(butler.registry, self.submission_id)
        quanta_by_job: dict[uuid.UUID, list[uuid.UUID]] = {}
        self.quantum_state: dict[uuid.UUID, str] = {}
        for q in batch_sql.quanta(butler.registry, self.submission_id):
            quanta_by_job.setdefault(q["job_id"], []).append(q["quantum_id"])
            self.quantum_state[q["quantum_id"]] = q["state"]
        order = {qid: i for i, qid in enumerate(q.id for q in self.graph)}
        for j in batch_sql.jobs(butler.registry, self.submission_id):
            quanta = sorted(quanta_by_job.get(j["id"], []), key=lambda i: order.get(i, 0))
            plan = JobPlan(name=j["name"], cluster=j["cluster"], quanta=quanta,
                           task_labels=list(j["tasks"]),
                           upstream=set(self.upstream.get(j["name"], [])))
            self.jobs[j["name"]] = _Job(id=j["id"], name=j["name"], plan=plan, state=JobState(j["state"]),
                                        attempt=j["attempt"] or 1, memory_mb=j["memory_mb"],
                                        failure_class=j["failure_class"])
        self._changes: list[StateChange] = []
        self._merges: dict[str, tuple[Future[Any], JobOutcome]] = {}
        """Merges under way by job name, each with the outcome it merges."""
        self._pool = ThreadPoolExecutor(max_workers=max(1, self.campaign.merge.max_concurrent),
                                        thread_name_prefix="merge")
        self.merged_datasets = 0
        self._refs: dict[uuid.UUID, Any] | None = None

    # -- states ------------------------------------------------------------------------

    def _change(self, kind: Literal["submission", "job", "quantum"], ident: uuid.UUID, state: JobState | str, *, attempt: int | None = None,
                detail: str | None = None, time_: datetime.datetime | None = None,
                fields: Mapping[str, Any] | None = None) -> None:
        self._changes.append(StateChange(kind=kind, id=ident, state=str(getattr(state, "value", state)),
                                         time=time_ or _now(), submission_id=self.submission_id,
                                         attempt=attempt, detail=detail, fields=dict(fields or {})))

    def _set_job(self, job: _Job, state: JobState, *, detail: str | None = None, **fields: Any) -> None:
        """Record a job's new state; ``fields`` are columns of its row (attempt, figures, failure class...)."""
        job.state = state
        fields.setdefault("attempt", job.attempt)
        self._change("job", job.id, state, attempt=job.attempt, detail=detail, fields=fields)

    def _set_quanta(self, ids: Iterable[uuid.UUID], state: JobState, attempt: int | None,
                    detail: str | None = None, only_unfinished: bool = True, **fields: Any) -> None:
        for qid in ids:
            current = self.quantum_state.get(qid)
            if only_unfinished and current == JobState.SUCCEEDED.value:
                continue
            if current == state.value and not fields:
                continue
            self.quantum_state[qid] = state.value
            self._change("quantum", qid, state, attempt=attempt, detail=detail,
                         fields={"attempt": attempt, **fields} if attempt is not None else fields)

    def _flush(self) -> bool:
        if not self._changes:
            return False
        changes, self._changes = self._changes, []
        batch_sql.record_states(self.butler.registry, changes)
        return True

    # -- the loop ----------------------------------------------------------------------

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            self._engine = campaign_engine(self.campaign, self.graph, self.directory)
        return self._engine

    def run(self) -> RunSummary:
        """Run until every job is in a terminal state (or the submission is cancelled)."""
        t0 = time.perf_counter()
        self._set_submission(JobState.RUNNING)
        self._recover()
        self._flush()
        last_cancel_check = 0.0
        try:
            while True:
                busy = self._schedule()
                busy |= self._follow()
                busy |= self._collect_merges()
                if time.monotonic() - last_cancel_check > 1.0:
                    last_cancel_check = time.monotonic()
                    if self._cancel_requested():
                        self._cancel_all("cancelled by an operator (batch cancel)")
                        break
                changed = self._flush()
                if changed and self.progress is not None:
                    self.progress()
                if self._finished():
                    break
                if not busy:
                    time.sleep(self.poll_interval)
        finally:
            self._flush()
            self._pool.shutdown(wait=True)
            self._collect_merges()
            self._flush()
        final = self._final_state()
        self._set_submission(final)
        self._flush()
        counts: dict[str, int] = {}
        for j in self.jobs.values():
            counts[j.state.value] = counts.get(j.state.value, 0) + 1
        return RunSummary(self.name, final, counts, time.perf_counter() - t0, self.merged_datasets)

    def close(self) -> None:
        if self._engine is not None:
            self._engine.close()

    def _set_submission(self, state: JobState) -> None:
        self._change("submission", self.submission_id, state)

    def _cancel_requested(self) -> bool:
        row = batch_sql.get_submission(self.butler.registry, self.submission_id)
        return row is not None and row["state"] == JobState.CANCELLED.value

    def _finished(self) -> bool:
        return all(j.state in TERMINAL_STATES for j in self.jobs.values()) and not self._merges

    def _final_state(self) -> JobState:
        states = {j.state for j in self.jobs.values()}
        if JobState.CANCELLED in states:
            return JobState.CANCELLED
        if states <= {JobState.SUCCEEDED}:
            return JobState.SUCCEEDED
        if states & {JobState.FAILED, JobState.BLOCKED}:
            return JobState.FAILED
        return JobState.RUNNING

    # -- recovering after a runner that died ----------------------------------------------

    def _recover(self) -> None:
        """Jobs a dead runner left in flight: merge what they finished, run the rest again.

        In flight also means pending with its attempt directory made: the runner died
        after handing the job over and before recording it, and the job may run on.
        """
        for job in self.jobs.values():
            if job.state in TERMINAL_STATES:
                continue
            latest = self._latest_attempt(job)
            if job.state == JobState.PENDING and latest < job.attempt:
                continue  # never handed over
            job.attempt = max(job.attempt, latest)
            attempt_dir = self._attempt_dir(job)
            outcome = attempt_dir / "outcome" / "outcome.json"
            if outcome.exists():
                self._finish(job, JobReport(job.name, EngineState.EXITED, 0))
                continue
            kill_local(attempt_dir)
            job.attempt += 1
            self._set_job(job, JobState.PENDING, detail="its runner stopped before it finished; run again")
            self._set_quanta(job.plan.quanta, JobState.PENDING, job.attempt)

    def _latest_attempt(self, job: _Job) -> int:
        """The highest attempt whose directory exists (0: none)."""
        numbers = [int(p.name.partition("_")[2]) for p in self.writer.job_dir(job.name).glob("attempt_*")
                   if p.name.partition("_")[2].isdigit()]
        return max(numbers, default=0)

    # -- handing jobs to the engine ------------------------------------------------------------

    def _attempt_dir(self, job: _Job) -> Path:
        return self.writer.job_dir(job.name) / f"attempt_{job.attempt}"

    def _schedule(self) -> bool:
        busy = False
        for job in self.jobs.values():
            if job.state != JobState.PENDING:
                continue
            ups = [self.jobs[u] for u in job.plan.upstream]
            if any(u.state in FAILED_STATES for u in ups):
                failed = next(u.name for u in ups if u.state in FAILED_STATES)
                self._set_job(job, JobState.BLOCKED, detail=f"upstream job {failed} did not succeed")
                self._set_quanta(job.plan.quanta, JobState.BLOCKED, job.attempt)
                busy = True
                continue
            if any(u.state != JobState.SUCCEEDED for u in ups):
                continue
            self._hand_over(job)
            busy = True
        return busy

    def _hand_over(self, job: _Job) -> None:
        if job.attempt > 1:
            self._count_merged(job)
        remaining = [q for q in job.plan.quanta if self.quantum_state.get(q) != JobState.SUCCEEDED.value]
        quanta = [self.graph[q] for q in remaining]
        resources = self._resources(job)
        if job.plan.upstream or job.attempt > 1 or len(remaining) != len(job.plan.quanta):
            # Inputs made upstream are now in the central repository: their real sizes and checksums.
            produced = {r.id for q in quanta for r in q.input_refs()}
            self.writer.forget(produced)
            self.writer.prefetch(quanta)
            self.writer.write(job.plan, quanta, attempt_resources=resources)
        attempt_dir = self._attempt_dir(job)
        if attempt_dir.exists():  # a previous runner handed this attempt over and died
            kill_local(attempt_dir)
            job.attempt += 1
            attempt_dir = self._attempt_dir(job)
        if job.attempt > 1:
            remove_unmerged_outputs(self.butler, quanta)
        attempt_dir.mkdir(parents=True, exist_ok=True)
        job.offset = 0
        self.engine.submit(EngineJob(job.name, self.writer.job_dir(job.name) / "manifest.json", attempt_dir,
                                     resources))
        self._set_job(job, JobState.SUBMITTED, submit_time=_now(), memory_mb=resources.memory_mb)
        self._set_quanta(remaining, JobState.PENDING, job.attempt)

    def _count_merged(self, job: _Job) -> None:
        """Record as succeeded the unfinished quanta of ``job`` whose outcome an earlier attempt's merge committed.

        A merge commits whole executions in bounded transactions; one that failed half way
        (a staged file deleted, a conflict) leaves some quanta merged and not recorded. Run
        again, they would write outputs that clash with the merged ones (a log's times differ:
        stage-out and merge refuse them, attempt after attempt) and a second execution each.
        """
        unfinished = [q for q in job.plan.quanta if self.quantum_state.get(q) != JobState.SUCCEEDED.value]
        if not unfinished:
            return
        registry = self.butler.registry
        merged = {r["quantum_id"]: r["id"] for r in provenance_sql.executions(
            registry, status=ExecutionStatus.SUCCEEDED.value, quantum_ids=unfinished)}
        registered = pipeline_sql.existing_dataset_ids(
            registry, [r.id for q in merged for r in self.graph[q].output_refs()])
        for qid, execution_id in merged.items():
            if all(r.id in registered for r in self.graph[qid].output_refs()):
                self._set_quanta([qid], JobState.SUCCEEDED, job.attempt, detail="merged by an earlier attempt",
                                 execution_id=execution_id)

    def _resources(self, job: _Job) -> Resources:
        base = job_resources(self.campaign, job.plan.task_labels)
        if job.memory_mb is not None and (base.memory_mb is None or job.memory_mb > base.memory_mb):
            base = base.model_copy(update={"memory_mb": job.memory_mb})
        return base

    # -- following running jobs ----------------------------------------------------------------

    def _follow(self) -> bool:
        busy = False
        out = [job for job in self.jobs.values() if job.state in _OUT_STATES]
        for job in out:
            busy |= self._read_status(job)
        # No engine is made for a pass with nothing handed over (a restart that only merges).
        reports = self.engine.poll() if self._engine is not None or out else []
        for report in reports:
            found = self.jobs.get(report.name)
            if found is None or found.state in TERMINAL_STATES or found.state == JobState.MERGING:
                continue
            job = found
            if report.state == EngineState.RUNNING and job.state == JobState.SUBMITTED:
                self._set_job(job, JobState.STAGING_IN, detail="started by the engine")
                busy = True
            elif report.state in (EngineState.EXITED, EngineState.CANCELLED, EngineState.LOST):
                self._read_status(job)
                self._finish(job, report)
                busy = True
        return busy

    def _read_status(self, job: _Job) -> bool:
        path = self._attempt_dir(job) / "status.jsonl"
        try:
            with open(path, "rb") as f:
                f.seek(job.offset)
                data = f.read()
        except FileNotFoundError:
            return False
        end = data.rfind(b"\n")
        if end < 0:
            return False
        job.offset += end + 1
        for line in data[: end + 1].splitlines():
            try:
                event = StatusEvent.model_validate_json(line)
            except ValueError:
                continue  # a line we cannot read is not a state change worth failing the campaign for
            if event.quantum_id is not None:
                state = _QUANTUM_STATES.get(event.state)
                if state is None and event.state in _JOB_STATE_VALUES:
                    state = JobState(event.state)
                if state is not None and state != JobState.SUCCEEDED:  # success counts once merged
                    self._set_quanta([event.quantum_id], state, job.attempt, detail=event.detail)
            elif event.state in _LIVE_STATES:
                new = JobState(event.state)
                if new != job.state:
                    extra = {"start_time": event.time} if new == JobState.STAGING_IN else {}
                    self._set_job(job, new, detail=event.detail, **extra)
                    if new == JobState.RUNNING:
                        self._set_quanta(job.plan.quanta, JobState.RUNNING, job.attempt)
        return True

    # -- finishing a job ------------------------------------------------------------------

    def _finish(self, job: _Job, report: JobReport) -> None:
        """The engine says the job's process ended: merge its outcome or classify its failure."""
        job.report = report
        path = self._attempt_dir(job) / "outcome" / "outcome.json"
        outcome: JobOutcome | None = None
        if path.exists():
            try:
                outcome = read_json_model(path, JobOutcome, version=OUTCOME_VERSION)
            except ConfigError as exc:
                self._fail(job, FailureClass.LOST, f"its outcome cannot be read: {exc}", report)
                return
        if outcome is None:
            self._fail(job, *classify_exit(report), report)
            return
        if report.state == EngineState.CANCELLED and outcome.state != JobState.SUCCEEDED.value:
            self._fail(job, FailureClass.CANCELLED, report.reason or "cancelled", report)
            return
        unstaged = unstaged_outputs(self.graph, outcome)
        if unstaged:
            # Its stage-out refused them (another file at the path, a removal listing it) or never ran
            # (the job runner failed). Merged, they would keep the scratch registry's file row, which
            # names whatever the central datastore holds at that path. Nothing of the outcome is
            # merged; the retry runs it all.
            failure = FailureClass(outcome.failure_class) if outcome.failure_class else FailureClass.STAGING
            self._fail(job, failure, outcome.reason or f"{len(unstaged)} output(s) not staged out, first: dataset "
                       f"{unstaged[0]}", report)
            return
        self._set_job(job, JobState.MERGING, exit_code=report.exit_code)
        self._merges[job.name] = (self._pool.submit(self._merge, job, outcome), outcome)

    def _merge(self, job: _Job, outcome: JobOutcome) -> Any:
        files = {o.dataset_id: FileRecord(o.dataset_id, o.path, o.size, o.checksum, o.checksum_algorithm, o.format)
                 for o in outcome.outputs}
        source = self._attempt_dir(job) / "outcome" / outcome.registry
        if not files and not any(q.execution_id for q in outcome.quanta):
            return None
        # The identity of files whose format has no room for it goes to the run manifests first,
        # as a put does (a manifest may name a file whose merge then fails, never miss one merged).
        planned = self._planned_refs()
        refs = [planned[i] for i in files if i in planned]
        record_manifest(self.butler.datastore, refs, [files[r.id] for r in refs])
        # Checked against the datastore before each commit: a staged file deleted since (an operator, a
        # clean-up) fails the merge, and the job is retried, instead of a row without its file.
        return merge_run(self.butler.registry, source, run=outcome.run, files=files, datastore=self.butler.datastore)

    def _planned_refs(self) -> dict[uuid.UUID, Any]:
        if self._refs is None:
            self._refs = {r.id: r for q in self.graph for r in q.output_refs()}
        return self._refs

    def _collect_merges(self) -> bool:
        done = [name for name, (fut, _) in self._merges.items() if fut.done()]
        for name in done:
            fut, outcome = self._merges.pop(name)
            job = self.jobs[name]
            assert job.report is not None
            try:
                report = fut.result()
            except SkyButlerError as exc:
                self._fail(job, FailureClass.MERGE, f"merging its outcome failed: {exc}", job.report, outcome)
                continue
            if report is not None:
                self.merged_datasets += report.datasets_added
            self._record_outcome(job, outcome)
        return bool(done)

    def _record_outcome(self, job: _Job, outcome: JobOutcome) -> None:
        for q in outcome.quanta:
            state = _QUANTUM_STATES.get(q.status, JobState.FAILED)
            self._set_quanta([q.quantum_id], state, job.attempt, detail=q.reason, only_unfinished=False,
                             execution_id=q.execution_id)
        if outcome.qc:
            batch_sql.record_qc(self.butler.registry, self.submission_id, job.id,
                                [m.model_dump() for m in outcome.qc])
        figures: dict[str, Any] = {"host": outcome.host, "start_time": outcome.start_time, "end_time": outcome.end_time,
                   "wall_time": outcome.wall_time, "cpu_time": outcome.cpu_time,
                   "peak_memory": outcome.peak_memory,
                   "exit_code": job.report.exit_code if job.report else None}
        if outcome.state == JobState.SUCCEEDED.value and all(
                self.quantum_state.get(q) == JobState.SUCCEEDED.value for q in job.plan.quanta):
            self._set_job(job, JobState.SUCCEEDED, failure_class=None, reason=None, **figures)
            return
        failure = FailureClass(outcome.failure_class) if outcome.failure_class else FailureClass.TASK
        reasons = [q.reason for q in outcome.quanta if q.status == "failed" and q.reason]
        if failure == FailureClass.TASK and any(r.startswith("MemoryError") for r in reasons):
            failure = FailureClass.OUT_OF_MEMORY
        self._fail(job, failure, outcome.reason or (reasons[0] if reasons else "failed"), job.report, outcome,
                   figures)

    def _fail(self, job: _Job, failure: FailureClass, reason: str, report: JobReport | None,
              outcome: JobOutcome | None = None, figures: Mapping[str, Any] | None = None) -> None:
        fields = dict(figures or {})
        fields.setdefault("exit_code", report.exit_code if report else None)
        retry = self.campaign.retry
        retried = failure in RETRIED_BY_DEFAULT or (failure == FailureClass.TASK and retry.retry_task_failures)
        unfinished = [q for q in job.plan.quanta if self.quantum_state.get(q) != JobState.SUCCEEDED.value]
        if failure == FailureClass.CANCELLED:
            self._set_job(job, JobState.CANCELLED, failure_class=failure.value, reason=reason, **fields)
            self._set_quanta(unfinished, JobState.CANCELLED, job.attempt)
            return
        self._set_job(job, JobState.FAILED, failure_class=failure.value, reason=reason, **fields)
        job.failure_class = failure.value
        if outcome is None:
            self._set_quanta(unfinished, JobState.FAILED, job.attempt, detail=reason)
        if retried and job.attempt < retry.max_attempts:
            if failure == FailureClass.OUT_OF_MEMORY:
                job.memory_mb = raised_memory(self._resources(job).memory_mb, retry.memory_factor)
            job.attempt += 1
            self._set_job(job, JobState.PENDING, detail=f"automatic retry after {failure.value}: {reason}",
                          memory_mb=job.memory_mb)
            self._set_quanta(unfinished, JobState.PENDING, job.attempt)

    # -- cancelling -----------------------------------------------------------------------

    def _cancel_all(self, reason: str) -> None:
        active = [j for j in self.jobs.values() if j.state not in TERMINAL_STATES and j.state != JobState.MERGING]
        if self._engine is not None:
            self._engine.cancel([j.name for j in active if j.state != JobState.PENDING])
        for job in active:
            unfinished = [q for q in job.plan.quanta if self.quantum_state.get(q) != JobState.SUCCEEDED.value]
            self._set_job(job, JobState.CANCELLED, failure_class=FailureClass.CANCELLED.value, reason=reason)
            self._set_quanta(unfinished, JobState.CANCELLED, job.attempt)

    # -- restart ----------------------------------------------------------------------------

    def reset_for_restart(self) -> int:
        """Make every job that did not succeed pending again, as a new attempt; returns how many."""
        n = 0
        for job in self.jobs.values():
            if job.state == JobState.SUCCEEDED:
                continue
            if job.state not in TERMINAL_STATES:
                continue  # left in flight by a dead runner: `_recover` decides
            if job.failure_class == FailureClass.OUT_OF_MEMORY.value:
                job.memory_mb = raised_memory(self._resources(job).memory_mb, self.campaign.retry.memory_factor)
            job.attempt += 1
            self._set_job(job, JobState.PENDING, detail="batch restart", memory_mb=job.memory_mb,
                          failure_class=None, reason=None)
            unfinished = [q for q in job.plan.quanta if self.quantum_state.get(q) != JobState.SUCCEEDED.value]
            self._set_quanta(unfinished, JobState.PENDING, job.attempt)
            n += 1
        attempt = int(self.row.get("attempt") or 1) + 1
        self._change("submission", self.submission_id, JobState.PENDING, detail="batch restart", attempt=attempt,
                     fields={"attempt": attempt})
        self._flush()
        return n
