"""Running a quantum graph on one machine, with N worker processes, recording provenance.

Quanta run in dependency order. Each worker opens its own `Butler` on the
repository root (the butler keeps no state between calls, and SQLite in WAL mode
takes concurrent writers with a busy timeout) and, for each quantum, reads the
inputs, runs the task, and writes every output — with the ids the graph assigned —
together with the quantum's log and its execution record, in one registry
transaction: the outputs of a quantum exist all together, with their provenance,
or not at all.

A failed quantum — the task raised, hit the memory limit, or its worker process
died — is recorded as failed with its reason, and only its descendants are marked
not run; everything else proceeds. Running the same graph again resumes: quanta
whose outputs exist are skipped.

Workers get the configuration the executor resolved (environment overrides
applied once, in the parent), never re-reading it: a worker started by a
forkserver that predates an environment change, or with another working
directory, opens exactly the repository the parent opened.

A worker that dies is reported as what happened to it: the signal that killed it
(``SIGKILL``, ``SIGSEGV``...) or its exit code. It is called out of memory only when
the kernel says so — its out-of-memory killer's ``oom_kill`` count rose (the
cgroup's ``memory.events`` or ``/proc/vmstat``) while the quantum ran — or, as
"possibly", when a memory limit was set and the worker's peak resident memory
came near it.
"""

from __future__ import annotations

import contextlib
import io
import logging
import multiprocessing
import os
import resource
import signal
import sys
import time
import traceback
import uuid
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.connection import wait as wait_for
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import DatasetExistsError, DatasetTypeError, ExecutionError
from ..model import DataId, DatasetRef, new_id
from ..provenance import (
    ExecutionRecord,
    ExecutionStatus,
    ResourceUsage,
    config_hash,
    record_executions,
    software_versions,
)
from ..registry import pipeline_sql, provenance_sql
from .graph import Quantum, QuantumGraph
from .task import QuantumContext, Task

if TYPE_CHECKING:
    from ..butler import Butler

__all__ = ["ExecutionReport", "GraphExecutor", "QuantumOutcome", "execute_graph"]

_LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_LOG_TAIL = 20_000


@dataclass(frozen=True)
class QuantumOutcome:
    """How one quantum ended in one run of the executor."""

    quantum_id: uuid.UUID
    task_label: str
    data_id: DataId
    status: ExecutionStatus
    reason: str | None = None
    execution_id: uuid.UUID | None = None
    seconds: float = 0.0


@dataclass
class ExecutionReport:
    """What a run of the executor did, quantum by quantum."""

    run: str
    outcomes: dict[uuid.UUID, QuantumOutcome] = field(default_factory=dict)
    wall_time: float = 0.0

    def by_status(self, status: ExecutionStatus) -> list[QuantumOutcome]:
        """Outcomes with one status."""
        return [o for o in self.outcomes.values() if o.status is status]

    @property
    def succeeded(self) -> list[QuantumOutcome]:
        """Quanta that ran and wrote their outputs."""
        return self.by_status(ExecutionStatus.SUCCEEDED)

    @property
    def failed(self) -> list[QuantumOutcome]:
        """Quanta that failed (their reason says why)."""
        return self.by_status(ExecutionStatus.FAILED)

    @property
    def not_run(self) -> list[QuantumOutcome]:
        """Quanta not attempted because an upstream quantum failed."""
        return self.by_status(ExecutionStatus.NOT_RUN)

    @property
    def skipped(self) -> list[QuantumOutcome]:
        """Quanta whose outputs already existed."""
        return self.by_status(ExecutionStatus.SKIPPED)

    @property
    def ok(self) -> bool:
        """Whether every quantum now has its outputs (succeeded now or before)."""
        return not self.failed and not self.not_run

    def counts(self) -> dict[str, dict[str, int]]:
        """``{task_label: {status: n}}`` in the order tasks first appear."""
        out: dict[str, dict[str, int]] = {}
        for o in self.outcomes.values():
            per = out.setdefault(o.task_label, {})
            per[o.status.value] = per.get(o.status.value, 0) + 1
        return out


# -- running one quantum (in the parent or in a worker) --------------------------------


class _LogCapture(logging.Handler):
    """Collects the log records (and anything printed) of one quantum."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.setFormatter(logging.Formatter(_LOG_FORMAT))
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.lines.append(self.format(record))
        except Exception:  # a bad log call must not fail the quantum
            self.lines.append(f"(unformattable log record from {record.name})")

    @contextlib.contextmanager
    def capturing(self) -> Iterator[None]:
        root = logging.getLogger()
        old_level = root.level
        root.addHandler(self)
        if root.level > logging.INFO or root.level == logging.NOTSET:
            root.setLevel(logging.INFO)
        out, err = io.StringIO(), io.StringIO()
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                yield
        finally:
            root.removeHandler(self)
            root.setLevel(old_level)
            for name, stream in (("stdout", out), ("stderr", err)):
                text = stream.getvalue()
                if text:
                    self.lines += [f"[{name}] {line}" for line in text.splitlines()]

    def text(self) -> str:
        return "\n".join(self.lines) + ("\n" if self.lines else "")


@contextlib.contextmanager
def _memory_limit(limit: int | None) -> Iterator[None]:
    """Cap this process's address space at its current size plus ``limit`` bytes (Linux RLIMIT_AS)."""
    if not limit:
        yield
        return
    import psutil

    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    wanted = psutil.Process().memory_info().vms + int(limit)
    if hard != resource.RLIM_INFINITY:
        wanted = min(wanted, hard)
    resource.setrlimit(resource.RLIMIT_AS, (wanted, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


class QuantumRunner:
    """Runs quanta of one graph against one repository; one per process.

    Parameters
    ----------
    butler
        A butler on the repository, writing to the graph's run.
    header
        The graph's header (pipeline, dataset types, init outputs).
    memory_limit
        Bytes a quantum may add to the process's address space (None: no limit).
    """

    def __init__(self, butler: Butler, header: Mapping[str, Any], *, memory_limit: int | None = None):
        self.butler = butler
        self.header = header
        self.memory_limit = memory_limit
        self.graph = QuantumGraph(header, [])
        self._tasks: dict[str, Task] = {}
        self._pipeline: Any = None

    def task(self, label: str) -> Task:
        """The configured task of a label (imported on first use)."""
        if label not in self._tasks:
            if self._pipeline is None:
                self._pipeline = self.graph.pipeline()
            self._tasks[label] = self._pipeline.tasks[label]
        return self._tasks[label]

    def input_paths(self, quantum: Quantum) -> dict[uuid.UUID, str]:
        """The file of each input that exists, by dataset id."""
        files = self.butler.registry.get_files([r.id for r in quantum.input_refs()])
        return {i: f.path for i, f in files.items()}

    def _record(self, quantum: Quantum, task: Task | None, status: ExecutionStatus, usage: ResourceUsage, *,
                reason: str | None = None, used: list[tuple[uuid.UUID, str | None]] | None = None,
                details: Mapping[str, Any] | None = None, execution_id: uuid.UUID | None = None,
                ) -> ExecutionRecord:
        config_ref = self.graph.init_outputs.get(quantum.task_label)
        used = list(used or [])
        if config_ref is not None:
            used.append((config_ref.id, config_ref.extra.get("path")))
        return ExecutionRecord(
            id=execution_id or new_id(), run=self.graph.run, task_label=quantum.task_label,
            data_id=quantum.data_id, status=status, quantum_id=quantum.id, reason=reason,
            host=ResourceUsage.host, start_time=usage.start_time, end_time=usage.end_time,
            cpu_time=usage.cpu_time, peak_memory=usage.peak_memory,
            software=software_versions([type(task).__module__] if task else []),
            config_hash=config_hash(task.import_path(), task.config.to_dict()) if task else None,
            details={"task_class": task.import_path() if task else None, "log_dataset_id": str(quantum.log.id),
                     "config_dataset_id": str(config_ref.id) if config_ref is not None else None,
                     "per_execution_peak_memory": usage.per_execution_peak, **(details or {})},
            used=used,
        )

    def run(self, quantum: Quantum) -> QuantumOutcome:
        """Run one quantum; never raises for a failure of the task (it is recorded and returned)."""
        t0 = time.perf_counter()
        capture = _LogCapture()
        usage = ResourceUsage()
        task: Task | None = None
        used: list[tuple[uuid.UUID, str | None]] = []
        execution_id = new_id()
        try:
            task = self.task(quantum.task_label)
            paths = self.input_paths(quantum)
            used = [(r.id, paths.get(r.id)) for r in quantum.input_refs()]
            missing = [r for r in quantum.input_refs() if r.id not in paths]
            if missing:
                raise ExecutionError(f"{len(missing)} input(s) do not exist, e.g. {missing[0]}")
            context = QuantumContext(self.butler, task, quantum.data_id, quantum.inputs, quantum.outputs)
            usage.start()  # stopped when the outputs are committed: writing them is part of the execution
            with capture.capturing():
                task.log.info("Running %s on %s (quantum %s)", quantum.task_label, quantum.data_id, quantum.id)
                with _memory_limit(self.memory_limit):
                    result = task.run_quantum(context)
                pairs = context.match_outputs(result)
                sources = context.used_inputs()
            outputs = [ref for _, ref in pairs]
            items = [(obj, ref.dataset_type, ref.data_id) for obj, ref in pairs]
            items.append((capture.text(), quantum.log.dataset_type, quantum.log.data_id))
            refs = [*outputs, quantum.log]

            def provenance(new_refs: list[DatasetRef], records: list[Any]) -> None:
                usage.stop()
                record = self._record(quantum, task, ExecutionStatus.SUCCEEDED, usage, used=used,
                                      execution_id=execution_id)
                record.generated = [(r.id, f.path) for r, f in zip(new_refs, records, strict=True)]
                record.derived = [(out.id, src.id) for out in outputs for src in sources]
                record_executions(self.butler.registry, [record])

            # A file left at an output's path by an attempt killed mid-commit (no row names
            # it) is replaced by put_many itself.
            self.butler.put_many(items, refs=refs, before_commit=provenance)
            return QuantumOutcome(quantum.id, quantum.task_label, quantum.data_id, ExecutionStatus.SUCCEEDED,
                                  execution_id=execution_id, seconds=time.perf_counter() - t0)
        except Exception as exc:  # MemoryError included: the worker survives it
            usage.stop()
            reason = f"{type(exc).__name__}: {exc}"
            if isinstance(exc, MemoryError) and self.memory_limit:
                reason = f"MemoryError: the quantum went over its memory limit of {_mib(self.memory_limit)}"
            tb = traceback.format_exc()
            log_tail = capture.text()[-_LOG_TAIL:]
            self.record_failure(quantum, task, reason, usage, used=used,
                                details={"traceback": tb, "log": log_tail}, execution_id=execution_id)
            return QuantumOutcome(quantum.id, quantum.task_label, quantum.data_id, ExecutionStatus.FAILED,
                                  reason=reason, execution_id=execution_id, seconds=time.perf_counter() - t0)

    def record_failure(self, quantum: Quantum, task: Task | None, reason: str, usage: ResourceUsage | None = None,
                       *, used: list[tuple[uuid.UUID, str | None]] | None = None,
                       details: Mapping[str, Any] | None = None, execution_id: uuid.UUID | None = None) -> None:
        """Record a failed execution (its own transaction: nothing else of the quantum is kept)."""
        if usage is None:
            usage = ResourceUsage()
            usage.stop()
            usage.peak_memory = None
            usage.cpu_time = None
        if used is None:
            paths = self.input_paths(quantum)
            used = [(r.id, paths.get(r.id)) for r in quantum.input_refs()]
        record = self._record(quantum, task, ExecutionStatus.FAILED, usage, reason=reason, used=used,
                              details=details, execution_id=execution_id)
        record_executions(self.butler.registry, [record])


# -- worker processes ------------------------------------------------------------------

_RUNNER: QuantumRunner | None = None


def _worker_init(root: str, header: Mapping[str, Any], memory_limit: int | None,
                 config: Mapping[str, Any]) -> None:
    global _RUNNER
    from ..butler import Butler
    from ..config import RepositoryConfig

    # The parent's resolved configuration, not a fresh read of the file with this
    # process's environment: an override means the same thing in every process.
    butler = Butler(root, run=header["run"], template_variables=header.get("template_variables") or {},
                    _config=RepositoryConfig.model_validate(config))
    _RUNNER = QuantumRunner(butler, header, memory_limit=memory_limit)


def _worker_run(quantum_data: Mapping[str, Any]) -> QuantumOutcome:
    assert _RUNNER is not None, "worker not initialised"
    quantum = Quantum.from_dict(quantum_data, _RUNNER.graph.dataset_types)
    return _RUNNER.run(quantum)


def _run_isolated(conn: Connection, init_args: tuple[Any, ...], quantum_data: Mapping[str, Any]) -> None:
    """Run one quantum in a process of its own and send back its outcome (or why it could not run)."""
    try:
        _worker_init(*init_args)
        result: QuantumOutcome | str = _worker_run(quantum_data)
    except Exception as exc:
        result = f"{type(exc).__name__}: {exc}"
    conn.send(result)
    conn.close()


def _mib(n: float) -> str:
    return f"{n / 2**20:.0f} MiB"


def oom_kill_counts() -> dict[str, int]:
    """The kernel's out-of-memory kill counters readable without privileges, by source.

    ``memory.events`` of this process's cgroup (v2) counts its processes killed by any
    OOM killer; ``/proc/vmstat`` counts every OOM kill on the machine.
    """
    counts: dict[str, int] = {}
    sources = []
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            if line.startswith("0::"):
                sources.append(("cgroup memory.events", Path("/sys/fs/cgroup" + line[3:].strip()) / "memory.events"))
    sources.append(("/proc/vmstat", Path("/proc/vmstat")))
    for name, path in sources:
        with contextlib.suppress(OSError, ValueError):
            for line in path.read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == "oom_kill":
                    counts[name] = int(value)
    return counts


def _peak_rss(pid: int) -> int | None:
    """A live process's peak resident memory (``VmHWM``), in bytes."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return None


def oom_kills_between(before: Mapping[str, int], after: Mapping[str, int]) -> list[str]:
    """The `oom_kill_counts` sources whose count rose from ``before`` to ``after``, described.

    Examples
    --------
    >>> oom_kills_between({"/proc/vmstat": 3}, {"/proc/vmstat": 4})
    ['/proc/vmstat oom_kill 3 -> 4']
    """
    return [f"{src} oom_kill {before[src]} -> {n}" for src, n in after.items() if src in before and n > before[src]]


def death_reason(exitcode: int | None, *, oom_before: Mapping[str, int], oom_after: Mapping[str, int],
                 memory_limit: int | None = None, peak_rss: int | None = None) -> str:
    """Why a worker process ended without a result, in one line starting with ``WorkerDied:``.

    Parameters
    ----------
    exitcode
        `multiprocessing.Process.exitcode`: negative for the number of the signal that killed it.
    oom_before, oom_after
        `oom_kill_counts` before and after the quantum ran.
    memory_limit, peak_rss
        The quantum's memory limit (if any) and the worker's last seen peak resident memory.
    """
    if exitcode is None:
        return "WorkerDied: the worker process vanished without an exit status"
    if exitcode >= 0:
        return (f"WorkerDied: the worker process exited with code {exitcode} without reporting a result "
                "(the task or a library it called exited the process)")
    signum = -exitcode
    try:
        name = signal.Signals(signum).name
    except ValueError:
        name = f"signal {signum}"
    description = signal.strsignal(signum) or name
    reason = f"WorkerDied: the worker process was killed by {name} ({description})"
    if signum != signal.SIGKILL:
        return reason
    rose = oom_kills_between(oom_before, oom_after)
    if rose:
        return f"{reason}: the kernel's out-of-memory killer ({'; '.join(rose)})"
    if memory_limit and peak_rss is not None and peak_rss >= 0.8 * memory_limit:
        return (f"{reason}, possibly out of memory (peak resident memory {_mib(peak_rss)}, "
                f"memory limit {_mib(memory_limit)})")
    return reason


def _default_start_method() -> str:
    # forkserver: workers fork from a clean server process (no inherited threads, locks or
    # database connections, unlike fork) and start faster than spawn; spawn elsewhere.
    return "forkserver" if sys.platform.startswith("linux") else "spawn"


# -- the executor ----------------------------------------------------------------------


class GraphExecutor:
    """Runs a quantum graph against a repository.

    Parameters
    ----------
    butler
        The repository (a `Butler`, or its root path).
    graph
        The graph, or the path of a graph file.
    processes
        Worker processes; 1 runs every quantum in this process (no isolation from
        crashes, but no start-up cost, and it works on in-memory repositories).
    memory_limit
        Bytes of address space a quantum may add to its worker (``RLIMIT_AS``); a quantum
        going over gets a `MemoryError` and is recorded as failed.
    start_method
        ``"forkserver"`` (Linux default) or ``"spawn"``.
    progress
        Called with each `QuantumOutcome` as quanta finish.
    """

    def __init__(self, butler: Butler | str | Path, graph: QuantumGraph | str | Path, *, processes: int = 1,
                 memory_limit: int | None = None, start_method: str | None = None,
                 progress: Callable[[QuantumOutcome], None] | None = None):
        from ..butler import Butler

        self.graph = graph if isinstance(graph, QuantumGraph) else QuantumGraph.read(graph)
        header = self.graph.header
        variables = header.get("template_variables") or {}
        if isinstance(butler, Butler):
            self.butler = butler.with_run(self.graph.run, template_variables=variables)
        else:
            self.butler = Butler(butler, run=self.graph.run, template_variables=variables)
        self.processes = max(1, int(processes))
        self.memory_limit = memory_limit
        self.start_method = start_method or _default_start_method()
        self.progress = progress
        if self.processes > 1 and (self.butler.registry.url in ("sqlite://", "sqlite:///:memory:")
                                   or self.butler.datastore.in_memory):
            raise ExecutionError("Worker processes cannot share an in-memory repository; use processes=1")
        self.runner = QuantumRunner(self.butler, header, memory_limit=memory_limit)

    # -- before running ----------------------------------------------------------------

    def prepare(self) -> None:
        """Register the graph's output dataset types and store each task's configuration.

        Raises
        ------
        ExecutionError
            The run already holds a different configuration for a task (a run holds
            outputs of one configuration only).
        """
        graph = self.graph
        produced = {r.dataset_type.name for q in graph for r in q.output_refs()}
        produced |= {r.dataset_type.name for r in graph.init_outputs.values()}
        for name, dt in graph.dataset_types.items():
            if name in produced:
                try:
                    self.butler.register_dataset_type(dt)
                except DatasetTypeError as exc:
                    raise ExecutionError(f"Cannot run the graph: {exc}") from None
        pipeline = self.runner._pipeline or graph.pipeline()
        self.runner._pipeline = pipeline
        for label, ref in graph.init_outputs.items():
            config = pipeline.tasks[label].config.to_dict()
            existing = self.butler.find_dataset(ref.dataset_type.name, {}, collections=[graph.run])
            if existing is not None:
                stored = self.butler.get(existing)
                if stored != config:
                    raise ExecutionError(
                        f"Run {graph.run!r} already holds a different configuration for task {label!r} "
                        f"(dataset {existing.id}); write to a new run")
                continue
            # Another executor on the same run may get there first: then its copy stands.
            with contextlib.suppress(DatasetExistsError):
                self.butler.put_many([(config, ref.dataset_type, {})], refs=[ref])

    # -- running -----------------------------------------------------------------------

    def run(self) -> ExecutionReport:
        """Run every quantum whose outputs do not exist yet; returns what happened to each."""
        t0 = time.perf_counter()
        self.prepare()
        graph = self.graph
        report = ExecutionReport(graph.run)
        all_outputs = [r.id for q in graph for r in q.output_refs()]
        existing = pipeline_sql.existing_dataset_ids(self.butler.registry, all_outputs)
        pending: dict[uuid.UUID, set[uuid.UUID]] = {}
        for q in graph:
            if all(r.id in existing for r in q.output_refs()):
                self._finish(report, QuantumOutcome(q.id, q.task_label, q.data_id, ExecutionStatus.SKIPPED,
                                                    reason="outputs already exist"))
            else:
                pending[q.id] = set()
        for qid in pending:
            pending[qid] = {u for u in graph[qid].upstream if u in pending}
        if self.processes == 1:
            self._run_serial(report, pending)
        else:
            self._run_pool(report, pending)
        report.wall_time = time.perf_counter() - t0
        return report

    def _finish(self, report: ExecutionReport, outcome: QuantumOutcome) -> None:
        report.outcomes[outcome.quantum_id] = outcome
        if self.progress is not None:
            self.progress(outcome)

    def _settle(self, report: ExecutionReport, pending: dict[uuid.UUID, set[uuid.UUID]],
                ready: deque[uuid.UUID], outcome: QuantumOutcome) -> None:
        """Record an outcome, release the quanta waiting for it, or mark them not run."""
        self._finish(report, outcome)
        pending.pop(outcome.quantum_id, None)
        if outcome.status is ExecutionStatus.SUCCEEDED:
            for d in self.graph.downstream.get(outcome.quantum_id, ()):
                waiting = pending.get(d)
                if waiting is not None:
                    waiting.discard(outcome.quantum_id)
                    if not waiting:
                        ready.append(d)
            return
        failed = self.graph[outcome.quantum_id]
        blocked = [d for d in self.graph.descendants([outcome.quantum_id]) if d in pending]
        reason = f"upstream quantum failed: {failed.task_label} {{{failed.data_id}}} ({failed.id})"
        records = []
        for d in blocked:
            q = self.graph[d]
            pending.pop(d, None)
            usage = ResourceUsage()
            usage.stop()
            usage.cpu_time = usage.peak_memory = None
            record = self.runner._record(q, None, ExecutionStatus.NOT_RUN, usage, reason=reason,
                                         details={"failed_quantum": str(failed.id)})
            record.used = []
            records.append(record)
            self._finish(report, QuantumOutcome(q.id, q.task_label, q.data_id, ExecutionStatus.NOT_RUN,
                                                reason=reason, execution_id=record.id))
        if records:
            record_executions(self.butler.registry, records)

    def _run_serial(self, report: ExecutionReport, pending: dict[uuid.UUID, set[uuid.UUID]]) -> None:
        ready = deque(qid for qid, ups in pending.items() if not ups)
        while ready:
            qid = ready.popleft()
            if qid in pending:
                self._settle(report, pending, ready, self.runner.run(self.graph[qid]))

    def _new_pool(self, workers: int) -> ProcessPoolExecutor:
        ctx = multiprocessing.get_context(self.start_method)
        if self.start_method == "forkserver":
            ctx.set_forkserver_preload([__name__])
        return ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_worker_init,
                                   initargs=self._worker_args())

    def _worker_args(self) -> tuple[Any, ...]:
        # An absolute root (a worker may start in another directory) and the configuration
        # in force here, environment overrides applied: workers never re-read either.
        return (os.path.abspath(self.butler.root), self.graph.header, self.memory_limit,
                self.butler.config.model_dump(mode="json"))

    def _run_pool(self, report: ExecutionReport, pending: dict[uuid.UUID, set[uuid.UUID]]) -> None:
        ready = deque(qid for qid, ups in pending.items() if not ups)
        suspects: deque[uuid.UUID] = deque()  # were running when a worker died: rerun one at a time
        pool = self._new_pool(self.processes)
        running: dict[Future[QuantumOutcome], uuid.UUID] = {}
        try:
            while ready or running or suspects:
                if suspects and not running:
                    qid = suspects.popleft()
                    pool = self._run_alone(pool, report, pending, ready, qid)
                    continue
                while ready and not suspects and len(running) < 2 * self.processes:
                    qid = ready.popleft()
                    if qid in pending:
                        running[pool.submit(_worker_run, self.graph[qid].to_dict())] = qid
                if not running:
                    continue
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                broken = False
                for fut in done:
                    qid = running.pop(fut)
                    try:
                        outcome = fut.result()
                    except BrokenProcessPool:
                        suspects.append(qid)
                        broken = True
                        continue
                    except Exception as exc:  # the worker could not even record the failure
                        outcome = self._failed_in_parent(qid, f"{type(exc).__name__}: {exc}")
                    self._settle(report, pending, ready, outcome)
                if broken:
                    # Every quantum in flight died with the pool; which one killed it is found
                    # by running each again alone.
                    suspects.extend(running.values())
                    running.clear()
                    pool.shutdown(wait=True, cancel_futures=True)
                    pool = self._new_pool(self.processes)
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    def _run_alone(self, pool: ProcessPoolExecutor, report: ExecutionReport,
                   pending: dict[uuid.UUID, set[uuid.UUID]], ready: deque[uuid.UUID],
                   qid: uuid.UUID) -> ProcessPoolExecutor:
        quantum = self.graph[qid]
        registry = self.butler.registry
        if len(pipeline_sql.existing_dataset_ids(registry, [r.id for r in quantum.output_refs()])) == len(
                quantum.output_refs()):
            # It finished and committed; only its result was lost when another worker died.
            done = provenance_sql.executions(registry, quantum_ids=[qid], status=ExecutionStatus.SUCCEEDED.value)
            self._settle(report, pending, ready, QuantumOutcome(
                qid, quantum.task_label, quantum.data_id, ExecutionStatus.SUCCEEDED,
                execution_id=done[-1]["id"] if done else None))
            return pool
        result = self._run_in_own_process(quantum)
        outcome = result if isinstance(result, QuantumOutcome) else self._failed_in_parent(qid, result)
        self._settle(report, pending, ready, outcome)
        return pool

    def _run_in_own_process(self, quantum: Quantum) -> QuantumOutcome | str:
        """Run a quantum suspected of killing its worker alone, in a process of its own.

        Returns its outcome, or why it produced none (its worker's exit status): a
        process of our own, unlike a pool's, tells how it ended.
        """
        ctx = multiprocessing.get_context(self.start_method)
        receiver, sender = ctx.Pipe(duplex=False)
        process = ctx.Process(  # type: ignore[attr-defined]  # every concrete context has Process
            target=_run_isolated, args=(sender, self._worker_args(), quantum.to_dict()),
            name=f"skybutler-quantum-{quantum.id}", daemon=True)
        oom_before = oom_kill_counts()
        peak: int | None = None
        process.start()
        sender.close()
        result: QuantumOutcome | str | None = None
        try:
            while result is None:
                ready = wait_for([receiver, process.sentinel], timeout=0.2)
                if process.pid is not None and self.memory_limit:
                    peak = max(peak or 0, _peak_rss(process.pid) or 0) or None
                if receiver in ready or (process.sentinel in ready and receiver.poll()):
                    with contextlib.suppress(EOFError):
                        result = receiver.recv()
                    break
                if process.sentinel in ready:
                    break
            process.join()
        finally:
            receiver.close()
            if process.is_alive():  # interrupted while waiting
                process.kill()
                process.join()
        if result is not None:
            return result
        return death_reason(process.exitcode, oom_before=oom_before, oom_after=oom_kill_counts(),
                            memory_limit=self.memory_limit, peak_rss=peak)

    def _failed_in_parent(self, qid: uuid.UUID, reason: str) -> QuantumOutcome:
        """Record a failure the worker could not record itself."""
        quantum = self.graph[qid]
        execution_id = new_id()
        task = None
        with contextlib.suppress(Exception):
            task = self.runner.task(quantum.task_label)
        self.runner.record_failure(quantum, task, reason, execution_id=execution_id)
        return QuantumOutcome(qid, quantum.task_label, quantum.data_id, ExecutionStatus.FAILED,
                              reason=reason, execution_id=execution_id)


def execute_graph(butler: Butler | str | Path, graph: QuantumGraph | str | Path, *, processes: int = 1,
                  memory_limit: int | None = None, start_method: str | None = None,
                  progress: Callable[[QuantumOutcome], None] | None = None) -> ExecutionReport:
    """Run a quantum graph (see `GraphExecutor`); returns the `ExecutionReport`.

    Examples
    --------
    >>> report = execute_graph("/repo", "graph.qg", processes=4)   # doctest: +SKIP
    >>> report.counts()                                           # doctest: +SKIP
    {'process_ccd': {'succeeded': 16}, 'make_warp': {'succeeded': 32}}
    """
    return GraphExecutor(butler, graph, processes=processes, memory_limit=memory_limit,
                         start_method=start_method, progress=progress).run()
