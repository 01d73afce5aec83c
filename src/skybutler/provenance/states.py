"""The states an execution of a quantum can end in; values are stored in the registry."""

from __future__ import annotations

import enum

__all__ = ["FAILED_STATES", "TERMINAL_STATES", "ExecutionStatus"]


class ExecutionStatus(enum.Enum):
    """How an attempt to run one quantum ended.

    The values are stored in the ``execution`` table and never change.
    """

    SUCCEEDED = "succeeded"
    """The task ran and every output was written (with its provenance, in one transaction)."""

    FAILED = "failed"
    """The task raised, ran out of memory, or its worker process died; nothing it made was kept."""

    NOT_RUN = "not_run"
    """Not attempted because a quantum it depends on failed (the reason names that quantum)."""

    SKIPPED = "skipped"
    """Not attempted because its outputs already existed (a resumed run); never stored."""


TERMINAL_STATES = frozenset(ExecutionStatus)
"""Every state is final for one attempt; a later run of the same graph makes a new attempt."""

FAILED_STATES = frozenset({ExecutionStatus.FAILED, ExecutionStatus.NOT_RUN})
"""States after which the quantum's outputs do not exist."""
