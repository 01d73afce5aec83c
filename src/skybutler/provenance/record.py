"""Recording executions: what ran, where, for how long, with what, and on which datasets."""

from __future__ import annotations

import datetime
import functools
import hashlib
import json
import platform
import resource
import socket
import sys
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

from ..config import REDACTED, is_secret_name, redact_text
from ..model import DataId
from ..registry import provenance_sql
from .states import ExecutionStatus

__all__ = [
    "KEY_PACKAGES",
    "ExecutionRecord",
    "ResourceUsage",
    "config_hash",
    "record_executions",
    "software_versions",
]

KEY_PACKAGES = ("skybutler", "numpy", "astropy", "pyarrow", "sqlalchemy", "pydantic")
"""Distributions whose versions every execution records, besides Python and the task's own package."""


@dataclass
class ExecutionRecord:
    """One attempt to run one quantum, as the registry stores it.

    Parameters
    ----------
    id
        The execution's own id (a new UUIDv7 per attempt).
    run
        The output run; executions are removed with it.
    task_label
        Label of the task in its pipeline.
    data_id
        The quantum's data id.
    status
        How it ended.
    quantum_id
        Id of the quantum in its graph (several executions may share it: retries).
    reason
        Why it failed or was not run (exception type and message, or the failed upstream quantum).
    used
        ``(dataset_id, path)`` of every input given to it.
    generated
        ``(dataset_id, path)`` of every output it wrote.
    derived
        ``(output_id, input_id)`` pairs of wasDerivedFrom (from what the task reported it used).
    """

    id: uuid.UUID
    run: str
    task_label: str
    data_id: DataId
    status: ExecutionStatus
    quantum_id: uuid.UUID | None = None
    reason: str | None = None
    host: str | None = None
    start_time: datetime.datetime | None = None
    end_time: datetime.datetime | None = None
    cpu_time: float | None = None
    peak_memory: int | None = None
    software: Mapping[str, str] | None = None
    config_hash: str | None = None
    details: Mapping[str, Any] = field(default_factory=dict)
    used: Sequence[tuple[uuid.UUID, str | None]] = ()
    generated: Sequence[tuple[uuid.UUID, str | None]] = ()
    derived: Sequence[tuple[uuid.UUID, uuid.UUID]] = ()

    def row(self) -> dict[str, Any]:
        """The ``execution`` table row (run by name); secrets in reasons, tracebacks and logs are hidden."""
        details = _without_secrets({"data_id": dict(self.data_id), **self.details})
        return {
            "id": self.id, "run": self.run, "task_label": self.task_label, "quantum_id": self.quantum_id,
            "data_id_key": self.data_id.key(), "status": self.status.value,
            "reason": redact_text(self.reason) if self.reason is not None else None,
            "host": self.host, "start_time": self.start_time, "end_time": self.end_time,
            "cpu_time": self.cpu_time, "peak_memory": self.peak_memory,
            "software": json.dumps(dict(self.software), sort_keys=True) if self.software is not None else None,
            "config_hash": self.config_hash, "details": json.dumps(details, sort_keys=True, default=str),
        }


def _without_secrets(value: Any) -> Any:
    # A traceback or a log may quote a database URL or a storage option: provenance is
    # read by many and kept for years, so what looks like a secret is stored as ***.
    if isinstance(value, Mapping):
        return {k: REDACTED if is_secret_name(k) else _without_secrets(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_without_secrets(v) for v in value]
    if isinstance(value, str):
        return redact_text(value)
    return value


def record_executions(registry: Any, records: Iterable[ExecutionRecord]) -> None:
    """Insert executions with their used / generated / derived edges (one transaction).

    Called inside the transaction that inserts the outputs, so a dataset never
    exists without the execution that generated it.
    """
    records = list(records)
    provenance_sql.insert_executions(
        registry, [r.row() for r in records],
        used=[(r.id, d, p) for r in records for d, p in r.used],
        generated=[(r.id, d, p) for r in records for d, p in r.generated],
        derived=[edge for r in records for edge in r.derived],
    )


def config_hash(import_path: str, config: Mapping[str, Any]) -> str:
    """SHA-256 of a task's import path and configuration in canonical JSON."""
    text = json.dumps({"task": import_path, "config": config}, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


@functools.lru_cache(maxsize=64)
def _version(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def software_versions(modules: Iterable[str] = ()) -> dict[str, str]:
    """Python and the versions of `KEY_PACKAGES` plus the distributions of ``modules``.

    Parameters
    ----------
    modules
        Module names (``"mypkg.tasks"``); the version of each top-level package is
        added when it is an installed distribution.
    """
    out = {"python": platform.python_version(), "platform": sys.platform}
    for name in (*KEY_PACKAGES, *(m.split(".")[0] for m in modules)):
        version = _version(name)
        if version is not None:
            out[name] = version
    return out


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC).replace(tzinfo=None)


def _reset_peak_rss() -> bool:
    # Linux >= 4.0: writing 5 resets VmHWM (the peak resident set) to the current size,
    # so the peak measured afterwards is this execution's, not the worker's lifetime's.
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _peak_rss() -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


class ResourceUsage:
    """Measures one execution: wall-clock start and end (UTC), CPU seconds, peak memory.

    Examples
    --------
    >>> with ResourceUsage() as usage:
    ...     _ = sum(range(1000))
    >>> usage.cpu_time >= 0 and usage.end_time >= usage.start_time
    True
    """

    host = socket.gethostname()

    def __init__(self) -> None:
        self.start_time: datetime.datetime = _now()
        self.end_time: datetime.datetime | None = None
        self.cpu_time: float | None = None
        self.peak_memory: int | None = None
        self.per_execution_peak = False
        self._cpu0 = time.process_time()

    def start(self) -> ResourceUsage:
        """Take the start measurements (and reset the process's peak memory where the OS allows)."""
        self.per_execution_peak = _reset_peak_rss()
        self.start_time = _now()
        self._cpu0 = time.process_time()
        return self

    def __enter__(self) -> ResourceUsage:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def stop(self) -> None:
        """Take the end measurements (idempotent)."""
        if self.end_time is None:
            self.cpu_time = time.process_time() - self._cpu0
            self.end_time = _now()
            self.peak_memory = _peak_rss()
