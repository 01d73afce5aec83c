"""The ``parsl`` engine: jobs as Parsl bash apps on a HighThroughputExecutor (laptop, Slurm, PBS, HTCondor...).

Settings pass through to Parsl, so reaching a cluster is configuration only::

    engine: parsl
    engine_settings:
      provider: {name: slurm, partition: normal, nodes_per_block: 2, max_blocks: 10,
                 walltime: "04:00:00", worker_init: "source /project/env.sh"}
      launcher: {name: srun}
      executor: {max_workers_per_node: 32, cores_per_worker: 1}

``provider`` and ``launcher`` name a Parsl class by a short name (`PROVIDERS`,
`LAUNCHERS`) and give its keyword arguments; ``executor`` holds keyword arguments of
``HighThroughputExecutor``. The default is this machine: a ``LocalProvider`` with one
block of as many workers as it has cores.

Each job is one bash app that runs, on a worker,
``python -c WRAPPER ENTRY MANIFEST ATTEMPT_DIR`` with its standard output and error
appended to ``attempt_dir/stdout.log`` and ``stderr.log``. The wrapper makes the job
its own process group, writes ``attempt_dir/job.pid`` ("HOST PID") and calls the
entry; its return value is the exit status. Results map to job reports so:

- the app succeeded: ``exited`` with exit code 0;
- ``BashExitFailure``: ``exited`` with its exit code; a job killed by signal N
  reports -N (as the local engine does), also when a shell reports it as 128+N;
- a wall time (``resources.wall_time_s``) is enforced with coreutils ``timeout -s
  KILL`` around the job: exit code -9, reason ``wall time limit of N s exceeded``;
- a worker or its manager lost (node gone, worker killed): ``lost`` with Parsl's message;
- any other Parsl failure: ``lost`` with the exception.

A job is ``queued`` until its ``job.pid`` exists, then ``running``.

Cancelling: Parsl cannot cancel a task a worker runs, so `ParslEngine.cancel`
writes ``attempt_dir/cancelled`` (the wrapper of a job not yet started sees it and
exits at once without calling the entry, and the job is reported ``cancelled`` at
once) and, for a running job whose ``job.pid`` names this host, sends its process
group ``SIGTERM``, then ``SIGKILL`` after a grace period; it is reported
``cancelled`` when its app ends. **Limitation**: a job running on another host
cannot be signalled from here; it is reported ``cancelled`` at once and may run to
its end (the service ignores an outcome it did not wait for). Memory and cores per
job are the provider's business (e.g. ``mem_per_node``, ``cores_per_worker``), not
enforced per job here.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import shlex
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...errors import BatchError, ConfigError, MissingDependencyError
from .base import Engine, EngineJob, EngineState, JobReport
from .local import DEFAULT_ENTRY, signal_reason, split_entry

__all__ = ["CANCEL_MARKER", "LAUNCHERS", "PROVIDERS", "ParslEngine", "result_report"]

PROVIDERS: dict[str, str] = {
    "local": "LocalProvider",
    "slurm": "SlurmProvider",
    "pbs": "PBSProProvider",
    "torque": "TorqueProvider",
    "condor": "CondorProvider",
    "lsf": "LSFProvider",
    "gridengine": "GridEngineProvider",
    "kubernetes": "KubernetesProvider",
    "aws": "AWSProvider",
    "google": "GoogleCloudProvider",
    "azure": "AzureProvider",
}
"""Provider short name -> class in ``parsl.providers``."""

LAUNCHERS: dict[str, str] = {
    "single_node": "SingleNodeLauncher",
    "simple": "SimpleLauncher",
    "srun": "SrunLauncher",
    "srun_mpi": "SrunMPILauncher",
    "mpiexec": "MpiExecLauncher",
    "mpirun": "MpiRunLauncher",
    "aprun": "AprunLauncher",
    "jsrun": "JsrunLauncher",
    "gnu_parallel": "GnuParallelLauncher",
    "wrapped": "WrappedLauncher",
}
"""Launcher short name -> class in ``parsl.launchers``."""

CANCEL_MARKER = "cancelled"
"""File in an attempt directory that tells a job not yet started not to run."""

_WRAPPER = """\
import importlib, os, socket, sys
entry, manifest, attempt = sys.argv[1:4]
if sys.argv[4] == "group":
    os.setpgid(0, 0)
if os.path.exists(os.path.join(attempt, "cancelled")):
    sys.exit(0)
with open(os.path.join(attempt, "job.pid.tmp"), "w") as f:
    f.write(f"{socket.gethostname()} {os.getpid()}\\n")
os.replace(os.path.join(attempt, "job.pid.tmp"), os.path.join(attempt, "job.pid"))
module, _, function = entry.partition(":")
code = getattr(importlib.import_module(module), function)(manifest, attempt)
sys.exit(code if isinstance(code, int) else (0 if code is None else 1))
"""
"""What a job's process runs (``python -c``): own process group, cancel check (`CANCEL_MARKER`), job.pid, the entry.

job.pid is written whole (a temporary name, then a rename) so that a cancel never reads half of it.
"""


_JOB_COMMAND = "".join
"""The bash app's function: ``[command] -> command`` (the command line is made on the submit side).

A builtin rather than a function of this module: Parsl sends the function by
reference, and a worker importing this module would import all of skybutler first.
"""


def _parsl_class(table: Mapping[str, str], kind: str, settings: Mapping[str, Any]) -> Any:
    """Instantiate the class ``settings["name"]`` names in ``table`` with the other settings."""
    settings = dict(settings)
    name = settings.pop("name", None)
    if name not in table:
        raise ConfigError(f"Parsl engine: unknown {kind} {name!r}; choose one of {sorted(table)}")
    module = importlib.import_module(f"parsl.{kind}s")
    cls = getattr(module, table[name])
    try:
        return cls(**settings)
    except TypeError as exc:
        raise ConfigError(f"Parsl engine: {kind} {name!r}: {exc}") from None


@dataclass(eq=False)
class _Job:
    spec: EngineJob
    future: Any
    cancelled: bool = False
    kill_at: float | None = None
    host: str | None = None
    pid: int | None = None


def _read_pid(attempt_dir: Path) -> tuple[str, int] | None:
    """``(host, pid)`` from ``attempt_dir/job.pid``, or None while the job has not started."""
    try:
        host, pid = (attempt_dir / "job.pid").read_text().split()[:2]
        return host, int(pid)
    except (OSError, ValueError):
        return None


def _signal_job(pid: int, signum: int) -> None:
    """Signal a job's process group: its own, or that of the ``timeout`` that runs it, never the worker's."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        group = os.getpgid(pid)
        parent = int(Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[1])
        if group in (pid, parent):
            os.killpg(group, signum)
        else:
            os.kill(pid, signum)


def _timed_out(attempt_dir: Path) -> bool:
    """Whether ``timeout`` says, at the end of the job's stderr, that it killed the job."""
    path = attempt_dir / "stderr.log"
    with contextlib.suppress(OSError), path.open("rb") as f:
        f.seek(max(0, path.stat().st_size - 4096))
        return b"timeout: sending signal KILL" in f.read()
    return False


def result_report(job: EngineJob, exc: BaseException | None, *, cancelled: bool = False) -> JobReport:
    """The final report of ``job`` whose bash app ended with ``exc`` (None: it succeeded).

    `BashExitFailure` gives the exit code (a shell's 128+N for signal N becomes -N),
    a wall time kill is told by ``timeout``'s message at the end of ``stderr.log``,
    any other exception (a worker or manager lost...) makes the job ``lost``;
    ``cancelled`` jobs are ``cancelled`` whatever ended them.
    """
    from parsl.app.errors import BashExitFailure

    if exc is not None and not isinstance(exc, BashExitFailure):
        return JobReport(job.name, EngineState.CANCELLED if cancelled else EngineState.LOST, None,
                         f"{type(exc).__name__}: {exc}")
    code = 0 if exc is None else int(exc.exitcode)
    if code > 128 and code - 128 in signal.valid_signals():
        code = 128 - code
    if cancelled:
        return JobReport(job.name, EngineState.CANCELLED, code,
                         "cancelled" + (f" ({signal_reason(code)})" if code < 0 else ""))
    reason = None
    if code < 0:
        wall = job.resources.wall_time_s
        if code == -signal.SIGKILL and wall and _timed_out(Path(job.attempt_dir)):
            reason = f"wall time limit of {wall} s exceeded"
        else:
            reason = signal_reason(code)
    return JobReport(job.name, EngineState.EXITED, code, reason)


class ParslEngine(Engine):
    """Runs each job as a Parsl bash app on a HighThroughputExecutor.

    Parameters
    ----------
    provider
        ``{"name": SHORT_NAME, **keyword arguments}`` of a Parsl provider (`PROVIDERS`);
        default ``{"name": "local", "init_blocks": 1, "min_blocks": 1, "max_blocks": 1}``.
    launcher
        ``{"name": SHORT_NAME, **keyword arguments}`` of a Parsl launcher (`LAUNCHERS`),
        given to the provider; default: the provider's own.
    executor
        Keyword arguments of ``HighThroughputExecutor`` (``max_workers_per_node``,
        ``cores_per_worker``...; ``worker_init`` belongs to the provider); by default
        a worker per core of each node.
    entry
        ``"module:function"`` each job calls as ``function(manifest, attempt_dir)``.
    run_dir
        Parsl's run directory (its logs); default ``work_dir/parsl``, or a temporary
        directory when there is no work directory — never the current directory.
    python
        The interpreter a worker runs jobs with; default this one (``sys.executable``).
    cancel_grace_s
        Seconds between a cancel's ``SIGTERM`` and ``SIGKILL``.
    work_dir
        The submission's directory.

    Parsl starts (workers, interchange) at the first `submit`, not when the engine is made.
    """

    name = "parsl"

    def __init__(self, *, provider: Mapping[str, Any] | None = None, launcher: Mapping[str, Any] | None = None,
                 executor: Mapping[str, Any] | None = None, entry: str = DEFAULT_ENTRY, run_dir: str | None = None,
                 python: str | None = None, cancel_grace_s: float = 5.0, work_dir: Path | None = None):
        try:
            from parsl.config import Config
            from parsl.executors import HighThroughputExecutor
        except ImportError as exc:
            raise MissingDependencyError(f"Engine 'parsl' needs {exc.name}: pip install 'skybutler[parsl]'") from None
        split_entry(entry)
        self.entry = entry
        self.python = python or sys.executable
        self.cancel_grace_s = cancel_grace_s
        provider_settings = dict(provider) if provider else {
            "name": "local", "init_blocks": 1, "min_blocks": 1, "max_blocks": 1}
        if launcher:
            provider_settings["launcher"] = _parsl_class(LAUNCHERS, "launcher", launcher)
        parsl_provider = _parsl_class(PROVIDERS, "provider", provider_settings)
        # No max_workers_per_node by default: Parsl then runs as many workers as each
        # node has cores (per cores_per_worker), which is this machine's count locally
        # and the right count on a cluster's nodes.
        executor_settings: dict[str, Any] = {"label": "skybutler"}
        executor_settings.update(executor or {})
        executor_settings = self._local_scripts(executor_settings, workers=provider_settings.get("name") == "local")
        try:
            htex = HighThroughputExecutor(provider=parsl_provider, **executor_settings)
        except TypeError as exc:
            raise ConfigError(f"Parsl engine: executor: {exc}") from None
        self._own_run_dir: str | None = None
        if run_dir is None:
            if work_dir is not None:
                run_dir = str(Path(work_dir) / "parsl")
            else:
                run_dir = self._own_run_dir = tempfile.mkdtemp(prefix="skybutler-parsl-")
        self.run_dir = run_dir
        self.config = Config(executors=[htex], run_dir=run_dir, exit_mode="cleanup", initialize_logging=True)
        self._label = executor_settings["label"]
        self._dfk: Any = None
        self._app: Any = None
        self._jobs: dict[str, _Job] = {}
        self._abandoned: list[_Job] = []
        """Cancelled before they started and already reported: killed should they start anyway."""
        self._cancelled_now: list[JobReport] = []
        """Reports of jobs cancelled since the last poll that are no longer watched."""
        self._closed = False
        self._host = socket.gethostname()

    @staticmethod
    def _local_scripts(settings: dict[str, Any], *, workers: bool) -> dict[str, Any]:
        """Point Parsl at its interchange script (and with ``workers`` its worker pool's) beside this interpreter.

        Only when PATH lacks them: a virtual environment used without activating it has
        them in its ``bin`` directory only. The interchange always runs on this host, so
        without this no provider's blocks could connect; workers run here only with the
        local provider (elsewhere the provider's ``worker_init`` activates the environment).
        """
        from parsl.executors.high_throughput import executor as htex_module

        bin_dir = Path(sys.executable).parent
        pool = bin_dir / "process_worker_pool.py"
        if (workers and "launch_cmd" not in settings and shutil.which("process_worker_pool.py") is None
                and pool.exists()):
            settings["launch_cmd"] = htex_module.DEFAULT_LAUNCH_CMD.replace("process_worker_pool.py", str(pool), 1)
        interchange = bin_dir / "interchange.py"
        if ("interchange_launch_cmd" not in settings and shutil.which("interchange.py") is None
                and interchange.exists()):
            settings["interchange_launch_cmd"] = [str(interchange)]
        return settings

    # -- the Engine interface --

    def submit(self, job: EngineJob) -> None:
        """Hand ``job`` to Parsl (starting Parsl on the first call); returns at once."""
        if self._closed:
            raise BatchError(f"Job {job.name!r}: the Parsl engine is closed")
        if job.name in self._jobs:
            raise BatchError(f"Job {job.name!r} was already submitted to this engine and not yet reported")
        if self._dfk is None:
            from parsl.app.app import bash_app
            from parsl.dataflow.dflow import DataFlowKernel

            self._dfk = DataFlowKernel(self.config)
            self._app = bash_app(_JOB_COMMAND, data_flow_kernel=self._dfk, executors=[self._label])
        Path(job.attempt_dir).mkdir(parents=True, exist_ok=True)
        self._jobs[job.name] = _Job(job, self._app([self._command(job)]))

    def _command(self, job: EngineJob) -> str:
        attempt = Path(job.attempt_dir)
        wall = job.resources.wall_time_s
        # Under `timeout` the job stays in timeout's process group, which timeout kills
        # whole; otherwise the job makes its own group so that a cancel reaches its children.
        prefix = f"timeout -v -s KILL {int(wall)} " if wall else ""
        python = " ".join(shlex.quote(part) for part in [
            self.python, "-c", _WRAPPER, self.entry, str(job.manifest), str(attempt), "" if wall else "group"])
        return (f"exec {prefix}{python} >>{shlex.quote(str(attempt / 'stdout.log'))} "
                f"2>>{shlex.quote(str(attempt / 'stderr.log'))}")

    def poll(self) -> list[JobReport]:
        """Every job not yet reported final; a final state is reported once, then the job is forgotten."""
        now = time.monotonic()
        reports, self._cancelled_now = self._cancelled_now, []
        for name, job in list(self._jobs.items()):
            report = self._report(job, now)
            reports.append(report)
            if report.state in (EngineState.EXITED, EngineState.CANCELLED, EngineState.LOST):
                del self._jobs[name]
        for job in list(self._abandoned):
            if job.future.done():
                self._abandoned.remove(job)
            elif (seen := _read_pid(Path(job.spec.attempt_dir))) is not None and seen[0] == self._host:
                _signal_job(seen[1], signal.SIGKILL)
        return reports

    def _report(self, job: _Job, now: float) -> JobReport:
        name, attempt = job.spec.name, Path(job.spec.attempt_dir)
        if not job.future.done():
            if job.kill_at is not None and now >= job.kill_at and job.pid is not None:
                job.kill_at = None
                _signal_job(job.pid, signal.SIGKILL)
            state = EngineState.RUNNING if (attempt / "job.pid").exists() else EngineState.QUEUED
            return JobReport(name, state)
        return result_report(job.spec, job.future.exception(), cancelled=job.cancelled)

    def cancel(self, names: Iterable[str]) -> None:
        """Cancel jobs: not started ones at once, running ones on this host by signals (see the module docs)."""
        now = time.monotonic()
        for name in names:
            job = self._jobs.get(name)
            if job is None or job.cancelled or job.future.done():
                continue
            job.cancelled = True
            attempt = Path(job.spec.attempt_dir)
            with contextlib.suppress(OSError):
                (attempt / CANCEL_MARKER).touch()
            seen = _read_pid(attempt)
            if seen is None or seen[0] != self._host:
                # Not started (it will see the marker), or out of reach: reported now.
                self._jobs.pop(name)
                self._abandoned.append(job)
                self._cancelled_now.append(JobReport(
                    name, EngineState.CANCELLED, None,
                    "cancelled before it started" if seen is None
                    else f"cancelled; its process on {seen[0]} cannot be signalled from here and may still run"))
                continue
            job.host, job.pid = seen
            job.kill_at = now + self.cancel_grace_s
            _signal_job(job.pid, signal.SIGTERM)

    def close(self) -> None:
        """Cancel what runs, wait for it to end, stop Parsl (workers, interchange)."""
        if self._closed:
            return
        self._closed = True
        if self._dfk is not None:
            self.cancel(list(self._jobs))
            deadline = time.monotonic() + self.cancel_grace_s + 5
            while time.monotonic() < deadline and not all(
                    job.future.done() for job in [*self._jobs.values(), *self._abandoned]):
                self.poll()
                time.sleep(0.05)
            self._dfk.cleanup()
            self._dfk = None
        if self._own_run_dir is not None:
            shutil.rmtree(self._own_run_dir, ignore_errors=True)
