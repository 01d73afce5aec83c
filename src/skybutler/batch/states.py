"""States of submissions, jobs and quanta in the batch service; values are stored in the registry."""

from __future__ import annotations

import enum

__all__ = ["FAILED_STATES", "TERMINAL_STATES", "FailureClass", "JobState", "RETRIED_BY_DEFAULT"]


class JobState(enum.StrEnum):
    """Where a submission, a job or a quantum is; every change is a row in ``batch_event``.

    The values are stored in the database and never change. A quantum goes through
    the subset pending → running → succeeded | failed | blocked | cancelled; a job
    through all of them except blocked; a submission is pending, running, then
    succeeded, failed or cancelled.
    """

    PENDING = "pending"
    """Waiting: for the jobs it depends on, for a free slot, or (a quantum) for its turn in its job."""

    SUBMITTED = "submitted"
    """Handed to the engine, not started by a worker yet (queued at a batch system)."""

    STAGING_IN = "staging_in"
    """A worker is copying or linking the job's input files into its scratch directory."""

    RUNNING = "running"
    """Quanta are executing (for a quantum: its task is running)."""

    STAGING_OUT = "staging_out"
    """The job finished its quanta and is copying its outputs to the central datastore."""

    MERGING = "merging"
    """The central repository is importing the job's outcome."""

    SUCCEEDED = "succeeded"
    """Done: every quantum succeeded and every output is registered in the central repository."""

    FAILED = "failed"
    """Done with a failure (see the failure class and reason); outputs of failed quanta are not registered."""

    BLOCKED = "blocked"
    """(Quanta and jobs) not run because work it depends on failed."""

    CANCELLED = "cancelled"
    """Stopped by an operator (``batch cancel``) or by the batch system (``scancel``)."""


TERMINAL_STATES = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.BLOCKED, JobState.CANCELLED})
"""States an attempt does not leave; ``batch restart`` makes a new attempt of the unfinished ones."""

FAILED_STATES = frozenset({JobState.FAILED, JobState.BLOCKED, JobState.CANCELLED})
"""Terminal states whose work a restart runs again."""


class FailureClass(enum.StrEnum):
    """Why a job failed, which decides whether it is retried automatically."""

    TASK = "task"
    """Task code raised an exception (a bug or bad data): not retried unless the policy asks."""

    KILLED = "killed"
    """The job's process was killed by a signal (SIGKILL, SIGTERM...) other than for memory."""

    OUT_OF_MEMORY = "out_of_memory"
    """Killed for exceeding memory (kernel OOM killer or the batch system); retried with more memory."""

    STAGING = "staging"
    """An input could not be staged (missing, wrong size or checksum) or an output not staged out."""

    LOST = "lost"
    """The engine lost the job (worker vanished, no outcome and no exit status)."""

    MERGE = "merge"
    """The job's outcome could not be merged into the central repository."""

    CANCELLED = "cancelled"
    """Cancelled by an operator or the batch system; never retried automatically."""


RETRIED_BY_DEFAULT = frozenset({FailureClass.KILLED, FailureClass.OUT_OF_MEMORY, FailureClass.STAGING,
                                FailureClass.LOST, FailureClass.MERGE})
"""System failures: retried up to the campaign's retry policy. Task exceptions are not, unless asked."""
