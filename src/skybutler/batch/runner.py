"""The job runner: what an engine runs on a worker for one job, in a fresh process.

``skybutler batch run-job MANIFEST --attempt-dir DIR`` calls `job_main`, which never
raises and returns the process's exit status. `run_job` does the work, in steps that
each append a `StatusEvent` line to ``DIR/status.jsonl`` (the central service tails it
to record states while the job runs; the job never opens the central database):

1. ``job.pid`` ("HOST PID", for cancelling), then the job's quanta are read from the
   submission's graph file (only its own);
2. **staging_in**: inputs linked, copied or downloaded into ``scratch/datastore`` and
   verified (a problem fails the job before any task runs: failure class ``staging``);
3. a scratch repository: the registry subset copied to ``scratch/registry.sqlite3``, the
   central templates and formats in ``scratch/skybutler.yaml``, a `Butler` on it;
4. **running**: the quanta run with the `GraphExecutor` in the scratch directory (a task
   writing a relative path writes into scratch); as each ends, an event and log QC;
5. gathering: each output of a succeeded quantum must be at its planned path; its size,
   checksum and format come from the scratch registry, science metadata from its FITS
   header; files nobody expected go into ``outcome/junk.tar.gz``;
6. **staging_out**: outputs to the central datastore, never over a different file;
7. ``outcome/registry.sqlite3`` (the scratch registry: executions, provenance), then
   ``outcome/outcome.json`` last, then the final event (``succeeded`` or ``failed``).

Scratch is removed after a job that succeeded (unless the manifest keeps it); a failed
job's stays for the operator.

Exit statuses of `job_main`: `EXIT_OK` when an outcome was written, whatever its quanta
did (the state is inside it); `EXIT_BAD_MANIFEST` when the manifest cannot be read;
`EXIT_UNEXPECTED` for anything else (traceback on stderr, and an outcome with state
failed written when at all possible).
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import re
import shutil
import socket
import sqlite3
import sys
import time
import traceback
import uuid
from pathlib import Path
from typing import IO, Any

from ..butler import Butler
from ..config import CONFIG_FILE, RepositoryConfig
from ..datastore import is_url
from ..errors import ConfigError, StagingError
from ..pipeline.executor import GraphExecutor, QuantumOutcome
from ..pipeline.graph import QuantumGraph
from ..provenance import ExecutionStatus, software_versions
from ..registry import provenance_sql
from . import gather
from .manifest import (
    MANIFEST_VERSION,
    JobManifest,
    JobOutcome,
    OutputFile,
    QCMatch,
    QuantumResult,
    StagedInput,
    StatusEvent,
    read_json_model,
    write_json_atomic,
)
from .qc import applies_to, check_patterns, match_log
from .staging import StagedOutput, stage_in, stage_out
from .states import FailureClass, JobState

__all__ = ["EXIT_BAD_MANIFEST", "EXIT_OK", "EXIT_UNEXPECTED", "OUTCOME_FILE", "STATUS_FILE", "job_main",
           "read_status", "run_job"]

EXIT_OK = 0
EXIT_UNEXPECTED = 1
EXIT_BAD_MANIFEST = 3

STATUS_FILE = "status.jsonl"
OUTCOME_FILE = "outcome/outcome.json"
_ATTEMPT = re.compile(r"attempt_(\d+)$")
_QUANTUM_STATE = {ExecutionStatus.SUCCEEDED: JobState.SUCCEEDED, ExecutionStatus.SKIPPED: JobState.SUCCEEDED,
                  ExecutionStatus.FAILED: JobState.FAILED, ExecutionStatus.NOT_RUN: JobState.BLOCKED}


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [""])[0]


class _StatusLog:
    """``status.jsonl``: one `StatusEvent` per line, flushed as written (a tailer sees each at once)."""

    def __init__(self, path: Path):
        self.path = path
        self._file: IO[str] | None = open(path, "a", encoding="utf-8")  # noqa: SIM115 - closed by close()

    def event(self, state: JobState | str, quantum_id: uuid.UUID | None = None, detail: str | None = None) -> None:
        if self._file is None:
            return
        line = StatusEvent(time=_now(), state=str(state), quantum_id=quantum_id, detail=detail).model_dump_json()
        self._file.write(line + "\n")
        self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def read_status(attempt_dir: str | Path) -> list[StatusEvent]:
    """The events a job wrote so far (a last line cut short by a running writer is left out)."""
    path = Path(attempt_dir) / STATUS_FILE
    out = []
    with contextlib.suppress(FileNotFoundError), open(path, encoding="utf-8") as f:
        for line in f:
            if line.endswith("\n"):
                out.append(StatusEvent.model_validate_json(line))
    return out


def _failure_class(reason: str | None) -> FailureClass:
    """The failure class of a failed quantum, from the executor's reason."""
    text = reason or ""
    # Only the executor's own words count: a task's message mentioning memory is the task's failure.
    if text.startswith("MemoryError"):
        return FailureClass.OUT_OF_MEMORY
    if text.startswith("WorkerDied:") and "killed by" in text:
        if "out-of-memory killer" in text or "possibly out of memory" in text:
            return FailureClass.OUT_OF_MEMORY
        return FailureClass.KILLED
    return FailureClass.TASK


class _Job:
    """One run of one job: the steps of `run_job`, and what they have learnt so far."""

    def __init__(self, manifest_path: str | Path, attempt_dir: str | Path):
        self.manifest_path = Path(manifest_path)
        self.manifest = read_json_model(self.manifest_path, JobManifest, version=MANIFEST_VERSION)
        check_patterns(self.manifest.qc)  # a bad pattern is a bad manifest: found before anything runs
        self.attempt_dir = Path(attempt_dir)
        self.scratch = self.attempt_dir / "scratch"
        self.outcome_dir = self.attempt_dir / "outcome"
        self.start = _now()
        self.t0 = time.perf_counter()
        self.status: _StatusLog | None = None
        self.butler: Butler | None = None
        self.graph: QuantumGraph | None = None
        self.results: dict[uuid.UUID, QuantumResult] = {}
        self.qc: list[QCMatch] = []
        self.outputs: list[OutputFile] = []
        self.stage_seconds: dict[str, float] = {}
        self.junk: str | None = None
        self.registry_copied = False

    # -- paths -----------------------------------------------------------------------------

    def _beside_manifest(self, path: str) -> Path:
        p = Path(path)
        return p if p.is_absolute() else self.manifest_path.parent / p

    @property
    def attempt(self) -> int:
        match = _ATTEMPT.search(self.attempt_dir.resolve().name)
        return int(match.group(1)) if match else 1

    # -- the steps -------------------------------------------------------------------------

    def begin(self) -> None:
        """The attempt directory, ``job.pid``, the status file; leftovers of an earlier run of it removed."""
        self.attempt_dir.mkdir(parents=True, exist_ok=True)
        (self.attempt_dir / "job.pid").write_text(f"{socket.gethostname()} {os.getpid()}\n")
        # The same attempt directory run again (an engine's own retry): start clean, and never
        # let an old outcome.json pass for this run's.
        shutil.rmtree(self.outcome_dir, ignore_errors=True)
        shutil.rmtree(self.scratch, ignore_errors=True)
        self.status = _StatusLog(self.attempt_dir / STATUS_FILE)

    def event(self, state: JobState | str, quantum_id: uuid.UUID | None = None, detail: str | None = None) -> None:
        if self.status is not None:
            self.status.event(state, quantum_id, detail)

    def timed(self, name: str, t0: float) -> None:
        self.stage_seconds[name] = round(time.perf_counter() - t0, 6)

    def run(self) -> JobOutcome:
        self.begin()
        m = self.manifest
        self.graph = QuantumGraph.read(self._beside_manifest(m.graph), quanta=m.quanta)

        self.event(JobState.STAGING_IN)
        t = time.perf_counter()
        try:
            stage_in(self.inputs(), self.scratch / "datastore", mode=m.stage_mode)
        except StagingError as exc:
            self.timed("stage_in", t)
            for q in self.graph:
                self.results[q.id] = QuantumResult(quantum_id=q.id, task_label=q.task_label, data_id=dict(q.data_id),
                                                   status=ExecutionStatus.NOT_RUN.value,
                                                   reason="the job's inputs could not be staged")
            return self.finish(FailureClass.STAGING, str(exc))
        self.timed("stage_in", t)

        t = time.perf_counter()
        self.butler = self.open_scratch()
        self.timed("setup", t)

        self.event(JobState.RUNNING)
        t = time.perf_counter()
        self.execute()
        self.timed("run", t)

        t = time.perf_counter()
        staged, problems = self.planned_outputs()
        self.collect_junk(staged)
        self.timed("gather", t)

        self.event(JobState.STAGING_OUT)
        t = time.perf_counter()
        problems += self.stage_out(staged)
        self.timed("stage_out", t)
        return self.finish(*self.verdict(problems))

    def inputs(self) -> list[StagedInput]:
        """The manifest's inputs; one in the central store without options of its own gets the destination's.

        A submission lists an input's storage options only where they differ: inputs
        staged from the central datastore need what staging out to it needs (endpoint,
        region; credentials come from the worker's environment).
        """
        m = self.manifest
        root = m.destination.rstrip("/") + "/"
        if not m.destination_options or not is_url(root):
            return list(m.inputs)
        return [i.model_copy(update={"storage_options": dict(m.destination_options)})
                if not i.storage_options and i.source.startswith(root) else i for i in m.inputs]

    def open_scratch(self) -> Butler:
        """The scratch repository: the subset as its registry, the central naming rules, a butler on it."""
        m = self.manifest
        self.scratch.mkdir(parents=True, exist_ok=True)
        subset = self._beside_manifest(m.subset)
        target = self.scratch / gather.REGISTRY_FILE
        shutil.copyfile(subset, target)
        wal = subset.with_name(subset.name + "-wal")
        if wal.exists():  # a subset whose writer left its WAL: the copy needs it too
            shutil.copyfile(wal, target.with_name(target.name + "-wal"))
        central = m.repository_config
        sections: dict[str, Any] = {
            "registry": {"db": f"sqlite:///{gather.REGISTRY_FILE}"},
            "datastore": {"root": "datastore"},
        }
        if "checksum" in (central.get("datastore") or {}):
            sections["datastore"]["checksum"] = central["datastore"]["checksum"]
        for section in ("templates", "formats"):
            if section in central:
                sections[section] = central[section]
        config = RepositoryConfig.from_mapping(sections, source=f"repository_config of manifest {self.manifest_path}")
        # For the operator reading a kept scratch directory; the butler is handed the object
        # below. Not synced: scratch does not outlive a crash (one fsync less per job).
        (self.scratch / CONFIG_FILE).write_text(config.to_yaml(), encoding="utf-8")
        # The configuration is handed over as it is, not re-read with this process's
        # environment: a worker's SKYBUTLER_REGISTRY_DB (set for the central repository)
        # must never point the scratch repository at the central database.
        return Butler(self.scratch, run=m.run, template_variables=m.template_variables, _config=config)

    def execute(self) -> None:
        """Run the quanta in the scratch directory; events and QC as each ends."""
        m = self.manifest
        assert self.butler is not None and self.graph is not None
        limit = m.memory_limit_mb * 2**20 if m.memory_limit_mb else None
        executor = GraphExecutor(self.butler, self.graph, processes=m.parallel, memory_limit=limit,
                                 progress=self.quantum_ended)
        cwd = os.getcwd()
        os.chdir(self.scratch)
        try:
            executor.run()
        finally:
            os.chdir(cwd)

    def quantum_ended(self, outcome: QuantumOutcome) -> None:
        """The executor's progress callback: never raises (it would stop the executor)."""
        try:
            self.results[outcome.quantum_id] = QuantumResult(
                quantum_id=outcome.quantum_id, task_label=outcome.task_label, data_id=dict(outcome.data_id),
                status=outcome.status.value, reason=outcome.reason, execution_id=outcome.execution_id,
                seconds=round(outcome.seconds, 6))
            detail = outcome.reason if outcome.status is not ExecutionStatus.SUCCEEDED else None
            self.event(_QUANTUM_STATE[outcome.status], outcome.quantum_id, detail)
            self.check_log(outcome)
        except Exception as exc:  # QC or an event failing must not fail the quanta that follow
            print(f"skybutler run-job: after quantum {outcome.quantum_id}: {type(exc).__name__}: {exc}",
                  file=sys.stderr)

    def check_log(self, outcome: QuantumOutcome) -> None:
        """Match the quantum's log against the QC patterns applying to its task."""
        patterns = [p for p in self.manifest.qc if applies_to(p, outcome.task_label)]
        if not patterns or outcome.status not in (ExecutionStatus.SUCCEEDED, ExecutionStatus.FAILED):
            return
        assert self.butler is not None and self.graph is not None
        if outcome.status is ExecutionStatus.SUCCEEDED:
            text = str(self.butler.get(self.graph[outcome.quantum_id].log))
        else:
            # A failed quantum keeps no log dataset: its log tail (and traceback, after it)
            # is in its execution record.
            row = provenance_sql.get_execution(self.butler.registry, outcome.execution_id) \
                if outcome.execution_id else None
            details = json.loads(row["details"] or "{}") if row else {}
            text = (details.get("log") or "") + (details.get("traceback") or "")
        for found in match_log(text, patterns, outcome.task_label):
            self.qc.append(QCMatch(quantum_id=outcome.quantum_id, task_label=outcome.task_label,
                                   execution_id=outcome.execution_id, severity=found.severity,
                                   pattern=found.pattern, line_number=found.line_number, line=found.line))

    def planned_outputs(self) -> tuple[list[tuple[StagedOutput, OutputFile]], list[str]]:
        """Outputs of succeeded quanta, each checked against its planned path, with its figures."""
        assert self.butler is not None and self.graph is not None
        m = self.manifest
        planned = {p.dataset_id: p for p in m.outputs}
        done = [q for q in self.graph if self.results.get(q.id) is not None
                and self.results[q.id].status == ExecutionStatus.SUCCEEDED.value]
        files = self.butler.registry.get_files([r.id for q in done for r in q.output_refs()])
        out: list[tuple[StagedOutput, OutputFile]] = []
        problems: list[str] = []
        for q in done:
            for ref in q.output_refs():
                what = f"output {ref.dataset_type.name} {{{ref.data_id}}} (dataset {ref.id}) of quantum {q.id}"
                plan, record = planned.get(ref.id), files.get(ref.id)
                if plan is None:
                    problems.append(f"{what} is not among the manifest's planned outputs")
                    continue
                if record is None:
                    problems.append(f"{what} has no file in the scratch repository")
                    continue
                if record.path != plan.path:
                    problems.append(f"{what} was written at {record.path!r} but planned at {plan.path!r} "
                                    "(the scratch repository's templates differ from the central ones)")
                    continue
                local = self.scratch / "datastore" / record.path
                metadata: dict[str, Any] = {}
                keys = m.metadata_keys.get(ref.dataset_type.name)
                if keys and record.format != "fits":
                    print(f"skybutler run-job: metadata keys are read from FITS headers; {what} is "
                          f"{record.format}", file=sys.stderr)
                elif keys:
                    try:
                        metadata = gather.header_values(local, keys)
                    except Exception as exc:  # the output is fine; only its metadata are missing
                        print(f"skybutler run-job: cannot read header keys of {what}: {_first_line(exc)}",
                              file=sys.stderr)
                out.append((StagedOutput(local, record.path, ref.id, record.size, record.checksum,
                                         record.checksum_algorithm),
                            OutputFile(dataset_id=ref.id, dataset_type=ref.dataset_type.name, quantum_id=q.id,
                                       path=record.path, size=record.size, checksum=record.checksum,
                                       checksum_algorithm=record.checksum_algorithm, format=record.format,
                                       metadata=metadata)))
        return out, problems

    def collect_junk(self, staged: list[tuple[StagedOutput, OutputFile]]) -> None:
        """Tar the files in scratch nobody expected into ``outcome/junk.tar.gz``."""
        expected = {f"datastore/{i.path}" for i in self.manifest.inputs}
        expected |= {f"datastore/{s.path}" for s, _ in staged}
        junk = gather.find_junk(self.scratch, expected)
        if junk:
            tarball = self.outcome_dir / "junk.tar.gz"
            gather.write_junk(self.scratch, junk, tarball)
            self.junk = tarball.name

    def stage_out(self, staged: list[tuple[StagedOutput, OutputFile]]) -> list[str]:
        m = self.manifest
        sync = bool((m.repository_config.get("registry") or {}).get("sync_every_commit"))
        result = stage_out([s for s, _ in staged], m.destination, m.destination_options,
                           link=not m.keep_scratch, sync=sync)
        there = result.staged
        self.outputs = [o for s, o in staged if s.path in there]
        return result.problems

    def verdict(self, problems: list[str]) -> tuple[FailureClass | None, str | None]:
        """The job's failure class and reason (None, None: it succeeded)."""
        failed = [r for r in self.results.values() if r.status == ExecutionStatus.FAILED.value]
        blocked = [r for r in self.results.values() if r.status == ExecutionStatus.NOT_RUN.value]
        if failed:
            classes = {_failure_class(r.reason) for r in failed}
            # The class decides the retry: memory first (a retry raises it), then a kill.
            cls = next(c for c in (FailureClass.OUT_OF_MEMORY, FailureClass.KILLED, FailureClass.TASK)
                       if c in classes)
            first = failed[0]
            reason = (f"{len(failed)} quantum(s) failed, {len(blocked)} not run; first: {first.task_label} "
                      f"{first.data_id} ({first.quantum_id}): {first.reason}")
            if problems:
                reason += f"; and {len(problems)} output problem(s): {problems[0]}"
            return cls, reason
        if problems:
            more = f"; and {len(problems) - 1} more" if len(problems) > 1 else ""
            return FailureClass.STAGING, f"{len(problems)} output(s) not staged out: {problems[0]}{more}"
        return None, None

    # -- the end ---------------------------------------------------------------------------

    def copy_registry(self) -> None:
        """The scratch registry, WAL checkpointed, to ``outcome/registry.sqlite3``."""
        if self.butler is not None:
            self.butler.close()
            self.butler = None
        source = self.scratch / gather.REGISTRY_FILE
        if not source.exists():
            return
        wal = source.with_name(source.name + "-wal")
        if wal.exists() and wal.stat().st_size:  # the last connection closing usually checkpointed it
            with contextlib.closing(sqlite3.connect(source)) as conn:
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        self.outcome_dir.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, self.outcome_dir / gather.REGISTRY_FILE)
        self.registry_copied = True

    def finish(self, failure: FailureClass | None, reason: str | None, *, copy: bool = True) -> JobOutcome:
        """Registry copy, figures, scratch removal, ``outcome.json`` (last), the final event."""
        m = self.manifest
        if copy:
            self.copy_registry()
        cpu, peak = gather.process_usage()
        header = self.graph.header if self.graph is not None else {}
        free = gather.free_disk(self.scratch if self.scratch.exists() else self.attempt_dir)
        state = JobState.FAILED if failure is not None else JobState.SUCCEEDED
        if state is JobState.SUCCEEDED and not m.keep_scratch:
            shutil.rmtree(self.scratch, ignore_errors=True)
        end = _now()
        outcome = JobOutcome(
            submission=m.submission, job=m.job, attempt=self.attempt, run=m.run, state=state.value,
            failure_class=failure.value if failure is not None else None, reason=reason,
            host=socket.gethostname(), start_time=self.start, end_time=end,
            wall_time=round(time.perf_counter() - self.t0, 6), cpu_time=round(cpu, 6), peak_memory=peak,
            software=software_versions(gather.task_modules(header.get("pipeline") or {})),
            environment=gather.environment_values(m.environment), free_disk=free,
            quanta=[self.results[q] for q in m.quanta if q in self.results], outputs=self.outputs, qc=self.qc,
            registry=gather.REGISTRY_FILE if self.registry_copied else "", junk=self.junk,
            stage_seconds=self.stage_seconds)
        write_json_atomic(self.attempt_dir / OUTCOME_FILE, outcome)
        self.event(state, detail=reason)
        if self.status is not None:
            self.status.close()
        return outcome

    def fail_unexpectedly(self, exc: BaseException) -> JobOutcome:
        """The outcome of a run that raised: state failed, what is known so far kept."""
        # A system error (disk, file system) may pass on another worker: retried as a lost job.
        # Anything else is a bug or bad data, which a retry would only repeat.
        failure = FailureClass.LOST if isinstance(exc, OSError) else FailureClass.TASK
        with contextlib.suppress(Exception):  # what failed may be this very copy (a full disk)
            self.copy_registry()
        self.registry_copied = self.registry_copied and (self.outcome_dir / gather.REGISTRY_FILE).exists()
        return self.finish(failure, f"the job runner failed: {type(exc).__name__}: {_first_line(exc)}",
                           copy=False)


def run_job(manifest_path: str | Path, attempt_dir: str | Path) -> JobOutcome:
    """Run one job (see the module docstring for the steps); returns its outcome, also in ``outcome.json``.

    Parameters
    ----------
    manifest_path
        The job's ``manifest.json``; the subset and graph paths in it are relative to its directory.
    attempt_dir
        Where this attempt's ``status.jsonl``, ``job.pid``, ``scratch/`` and ``outcome/`` go
        (created if missing).

    Returns
    -------
    JobOutcome
        State ``succeeded`` or ``failed`` (with failure class and reason): failed quanta,
        inputs that cannot be staged and outputs that cannot be staged out are outcomes,
        not exceptions.

    Raises
    ------
    ConfigError
        The manifest cannot be read (missing, damaged, newer version, an invalid QC pattern).
    Exception
        Anything unexpected (`job_main` turns it into a failed outcome).

    Notes
    -----
    The process's working directory is the scratch directory while the quanta run: run
    one job per process (as engines do), not several in threads.

    Examples
    --------
    >>> outcome = run_job("sub/jobs/job_0001/manifest.json", "sub/jobs/job_0001/attempt_1")  # doctest: +SKIP
    >>> outcome.state, [o.path for o in outcome.outputs]                                        # doctest: +SKIP
    ('succeeded', ['u/me/run/calexp/calexp_HSC_903334_16.npy', ...])
    """
    return _Job(manifest_path, attempt_dir).run()


def job_main(manifest: str, attempt_dir: str) -> int:
    """Run one job as an engine's process does and return its exit status; never raises.

    Returns
    -------
    int
        `EXIT_OK` (0) when an outcome was written (its state says how the job went),
        `EXIT_BAD_MANIFEST` (3) when the manifest cannot be read, `EXIT_UNEXPECTED` (1)
        otherwise (traceback on stderr; a failed outcome written if at all possible).
    """
    try:
        job = _Job(manifest, attempt_dir)
    except ConfigError as exc:
        print(f"skybutler run-job: cannot read the job manifest: {exc}", file=sys.stderr)
        return EXIT_BAD_MANIFEST
    except BaseException:  # noqa: BLE001 - an engine's process must always end with a status
        traceback.print_exc()
        return EXIT_UNEXPECTED
    try:
        job.run()
        return EXIT_OK
    except BaseException as exc:  # noqa: BLE001 - KeyboardInterrupt/SystemExit too: record, then report
        traceback.print_exc()
        with contextlib.suppress(BaseException):
            job.fail_unexpectedly(exc)
        return EXIT_UNEXPECTED


if __name__ == "__main__":  # python -m skybutler.batch.runner MANIFEST ATTEMPT_DIR
    if len(sys.argv) != 3:
        print("usage: python -m skybutler.batch.runner MANIFEST ATTEMPT_DIR", file=sys.stderr)
        sys.exit(2)
    sys.exit(job_main(sys.argv[1], sys.argv[2]))
