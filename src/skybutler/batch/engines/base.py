"""The engine seam: submit a job, poll job states, cancel. Everything else is engine-independent.

An engine runs ``skybutler batch run-job MANIFEST`` (or the same function in a fresh
process) for each job it is given and reports how each ended. It knows nothing of
repositories, graphs or merges. Dependencies between jobs are kept by the submission
service, which hands a job to the engine only when the jobs it depends on have
succeeded; an engine therefore needs three primitives (compare Parsl's executors:
two abstract methods).
"""

from __future__ import annotations

import enum
import importlib
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from ...errors import ConfigError, MissingDependencyError
from ..manifest import Resources

__all__ = ["ENGINES", "Engine", "EngineJob", "EngineState", "JobReport", "make_engine"]


class EngineState(enum.StrEnum):
    """What an engine can tell about a job."""

    QUEUED = "queued"
    """Accepted, not started."""

    RUNNING = "running"
    """A worker process runs it."""

    EXITED = "exited"
    """The job's process ended; ``exit_code`` says how (0: the runner finished, whatever its quanta did)."""

    CANCELLED = "cancelled"
    """Cancelled (by `Engine.cancel` or by the batch system)."""

    LOST = "lost"
    """The engine no longer knows the job and has no exit status for it (worker or node vanished)."""


@dataclass(frozen=True)
class EngineJob:
    """A job as an engine sees it."""

    name: str
    manifest: Path
    attempt_dir: Path
    """Where this attempt's ``status.jsonl``, ``outcome/`` and ``scratch/`` go (passed to run-job)."""
    resources: Resources = field(default_factory=Resources)


@dataclass(frozen=True)
class JobReport:
    """A job's state as last seen by the engine."""

    name: str
    state: EngineState
    exit_code: int | None = None
    """The process's exit status; negative: killed by that signal number (e.g. -9 for SIGKILL)."""
    reason: str | None = None
    """What the engine or batch system says (``OUT_OF_MEMORY``, ``CANCELLED by 0``, a Parsl error...)."""


class Engine(ABC):
    """Runs jobs. Subclasses implement `submit`, `poll` and `cancel`; `close` when they hold resources."""

    name: ClassVar[str]

    @abstractmethod
    def submit(self, job: EngineJob) -> None:
        """Start (or queue) one job; returns at once."""

    @abstractmethod
    def poll(self) -> list[JobReport]:
        """The current state of every job submitted and not yet reported as finished.

        A job is reported in a final state (exited, cancelled, lost) exactly once; after
        that the engine forgets it.
        """

    @abstractmethod
    def cancel(self, names: Iterable[str]) -> None:
        """Stop these jobs (queued or running); they are then reported as cancelled."""

    def close(self) -> None:  # noqa: B027 - optional for engines that hold nothing
        """Release workers and connections; jobs still running are cancelled."""

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


ENGINES: dict[str, tuple[str, str | None]] = {
    "local": ("skybutler.batch.engines.local:LocalEngine", None),
    "parsl": ("skybutler.batch.engines.parsl:ParslEngine", "parsl"),
    "slurm": ("skybutler.batch.engines.slurm:SlurmEngine", "parsl"),
}
"""Short name -> (module:class, the pip extra that provides its dependencies)."""


def make_engine(name: str, settings: Mapping[str, Any] | None = None, *, work_dir: Path | None = None) -> Engine:
    """The engine called ``name`` (``"local"``, ``"parsl"``), made with the campaign's engine settings.

    Raises
    ------
    ConfigError
        Unknown engine name, or settings it does not take.
    MissingDependencyError
        Its dependencies are not installed (the message names the extra to install).
    """
    try:
        target, extra = ENGINES[name]
    except KeyError:
        raise ConfigError(f"Unknown engine {name!r}; choose one of {sorted(ENGINES)}") from None
    module_name, _, class_name = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        hint = f"pip install 'skybutler[{extra}]'" if extra else "reinstall skybutler"
        raise MissingDependencyError(f"Engine {name!r} needs {exc.name or 'a missing package'}: {hint}") from None
    cls = getattr(module, class_name)
    try:
        return cls(**dict(settings or {}), work_dir=work_dir)
    except TypeError as exc:
        raise ConfigError(f"Engine {name!r}: {exc}") from None
