"""Why a job failed and what its next attempt asks for."""

from __future__ import annotations

import signal

from .engines import EngineState, JobReport
from .states import FailureClass

__all__ = ["classify_exit", "raised_memory"]


def raised_memory(memory_mb: int | None, factor: float) -> int:
    """The memory request after an out-of-memory kill: the old one times the factor (2 GiB when none was set)."""
    return int((memory_mb or 1024) * factor)


def classify_exit(report: JobReport) -> tuple[FailureClass, str]:
    """Why a job that left no outcome failed, from what the engine says."""
    reason = report.reason or ""
    if report.state == EngineState.CANCELLED:
        return FailureClass.CANCELLED, reason or "cancelled"
    if report.state == EngineState.LOST:
        return FailureClass.LOST, reason or "the engine lost the job"
    if "memory" in reason.lower():
        return FailureClass.OUT_OF_MEMORY, reason
    code = report.exit_code
    if code is not None and code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return FailureClass.KILLED, reason or f"killed by {name}"
    return FailureClass.LOST, reason or f"exited with status {code} without an outcome"
