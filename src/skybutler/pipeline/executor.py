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

This module schedules; the parts live beside it and are re-exported here:
`QuantumRunner` and `QuantumOutcome` (running one quantum, ``_quantum_runner``),
the worker processes (``_workers``), and why a worker died — its signal or exit
code, out of memory only on the kernel's word — (`death_reason`,
`oom_kill_counts`, `oom_kills_between`, ``_deaths``).
"""

from __future__ import annotations

import contextlib
import os
import time
import uuid
from collections import deque
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import DatasetExistsError, DatasetTypeError, ExecutionError
from ..model import new_id
from ..provenance import ExecutionStatus, ResourceUsage, record_executions
from ..registry import pipeline_sql, provenance_sql
from ._deaths import death_reason, oom_kill_counts, oom_kills_between
from ._quantum_runner import QuantumOutcome, QuantumRunner
from ._workers import default_start_method, new_pool, run_in_own_process, worker_run
from .graph import QuantumGraph

if TYPE_CHECKING:
    from ..butler import Butler

__all__ = [
    "ExecutionReport",
    "GraphExecutor",
    "QuantumOutcome",
    "QuantumRunner",
    "death_reason",
    "execute_graph",
    "oom_kill_counts",
    "oom_kills_between",
]


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
        self.start_method = start_method or default_start_method()
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
        pipeline = self.runner.pipeline()
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
            record = self.runner.execution_record(q, None, ExecutionStatus.NOT_RUN, usage, reason=reason,
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
        return new_pool(workers, self.start_method, self._worker_args())

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
                        running[pool.submit(worker_run, self.graph[qid].to_dict())] = qid
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
        result = run_in_own_process(quantum, self._worker_args(), start_method=self.start_method,
                                    memory_limit=self.memory_limit)
        outcome = result if isinstance(result, QuantumOutcome) else self._failed_in_parent(qid, result)
        self._settle(report, pending, ready, outcome)
        return pool

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
