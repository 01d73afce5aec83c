"""Running one quantum against one repository: the task, its log, its memory limit, its provenance.

A `QuantumRunner` lives in one process (the executor's own, or one worker's) and
runs quanta of one graph there. For each quantum it reads the inputs, runs the
task with its log and printed output captured, and writes every output — with the
ids the graph assigned — together with the quantum's log and its execution record,
in one registry transaction: the outputs of a quantum exist all together, with
their provenance, or not at all. A failure of the task (an exception, the memory
limit) is recorded and returned, never raised.

The graph executor (`skybutler.pipeline.executor`) decides which quanta run, in
which process, and re-exports `QuantumRunner` and `QuantumOutcome`.
"""

from __future__ import annotations

import contextlib
import io
import logging
import resource
import time
import traceback
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import ExecutionError
from ..model import DataId, DatasetRef, new_id
from ..provenance import (
    ExecutionRecord,
    ExecutionStatus,
    ResourceUsage,
    config_hash,
    record_executions,
    software_versions,
)
from ._deaths import mib
from .graph import Quantum, QuantumGraph
from .task import QuantumContext, Task

if TYPE_CHECKING:
    from ..butler import Butler
    from .pipeline import Pipeline

__all__ = ["QuantumOutcome", "QuantumRunner"]

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
        self._pipeline: Pipeline | None = None

    def pipeline(self) -> Pipeline:
        """The graph's pipeline, its task classes imported and configured (loaded once, then kept)."""
        if self._pipeline is None:
            self._pipeline = self.graph.pipeline()
        return self._pipeline

    def task(self, label: str) -> Task:
        """The configured task of a label (imported on first use)."""
        if label not in self._tasks:
            self._tasks[label] = self.pipeline().tasks[label]
        return self._tasks[label]

    def input_paths(self, quantum: Quantum) -> dict[uuid.UUID, str]:
        """The file of each input that exists, by dataset id."""
        files = self.butler.registry.get_files([r.id for r in quantum.input_refs()])
        return {i: f.path for i, f in files.items()}

    def execution_record(self, quantum: Quantum, task: Task | None, status: ExecutionStatus, usage: ResourceUsage,
                         *, reason: str | None = None, used: list[tuple[uuid.UUID, str | None]] | None = None,
                         details: Mapping[str, Any] | None = None, execution_id: uuid.UUID | None = None,
                         ) -> ExecutionRecord:
        """The execution record of one quantum, not yet stored.

        Parameters
        ----------
        quantum, task
            The quantum and its configured task (None when the task never loaded).
        status, usage, reason
            How the execution ended, what it used, and why (for a failure or a quantum not run).
        used
            ``(dataset id, file path)`` of each input used; the task's configuration dataset is added.
        details
            Extra details merged into the record's own (task class, log and config dataset ids).
        execution_id
            The id to give the record (a new one by default).
        """
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
                record = self.execution_record(quantum, task, ExecutionStatus.SUCCEEDED, usage, used=used,
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
                reason = f"MemoryError: the quantum went over its memory limit of {mib(self.memory_limit)}"
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
        record = self.execution_record(quantum, task, ExecutionStatus.FAILED, usage, reason=reason, used=used,
                              details=details, execution_id=execution_id)
        record_executions(self.butler.registry, [record])

