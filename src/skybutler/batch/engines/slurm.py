"""The ``slurm`` engine: each job one Slurm batch job, submitted through Parsl's ``SlurmProvider``.

Where the ``parsl`` engine starts pilot jobs (blocks of workers) and feeds them jobs,
this engine asks Slurm for exactly what each job needs: one ``sbatch`` per job with
its own cores, memory and wall time, so the scheduler places, accounts and enforces
every job (and kills the one that goes over its memory, which is then retried with
more). Parsl's ``SlurmProvider`` writes the batch script and calls ``sbatch``,
``sacct`` (``squeue`` without accounting) and ``scancel``.

Settings (``engine.settings`` of a campaign)
---------------------------------------------
partition, account, qos, constraint
    The ``#SBATCH`` options of those names (None: the site's defaults).
scheduler_options
    More ``#SBATCH`` lines, as text, given to every job (``"#SBATCH --licenses=fs:1"``).
worker_init
    Shell lines run before the job, e.g. ``source /project/venv/bin/activate`` or
    ``module load python``; sbatch also exports the submitting environment.
python
    The interpreter the job runs with on the node (default: this one,
    ``sys.executable``, right where the submit host and the nodes share the
    software's file system).
entry
    ``"module:function"`` the job calls as ``function(manifest, attempt_dir)``
    (default: the batch runner).
cmd_timeout
    Seconds Parsl waits for ``sbatch``, ``sacct`` or ``scancel``.
status_interval_s
    Seconds between two status queries (``sacct``/``squeue``); `SlurmEngine.poll` answers
    from the last one in between, so the scheduler is not asked many times a second.
exclusive
    Ask for whole nodes (``--exclusive``); default False: jobs share nodes by cores and memory.

A job's ``resources`` become ``--cpus-per-task`` (cores), ``--mem`` (``memory_mb``, in
MiB) and ``--time`` (``wall_time_s``, rounded up to whole minutes: Slurm's unit; no
``--time`` line without it, so the partition's default applies).

Example campaign::

    engine:
      name: slurm
      settings:
        partition: normal
        account: rubin
        worker_init: "source /project/skybutler/venv/bin/activate"
        scheduler_options: "#SBATCH --constraint=haswell"
    resources:
      default: {cores: 1, memory_mb: 4000, wall_time_s: 3600}
      tasks:
        assembleCoadd: {memory_mb: 16000}

What is detected, and how
-------------------------
Every job's batch script runs ``python -c WRAPPER ENTRY MANIFEST ATTEMPT_DIR`` with
standard output and error in ``attempt_dir/stdout.log`` and ``stderr.log`` (Slurm's own
messages about the job, such as ``slurmstepd: error: ... Exceeded job memory limit``,
land in ``stderr.log`` too); the Slurm job id is written to ``attempt_dir/slurm_job_id``.
A job is ``queued`` while Slurm says PENDING, ``running`` once it says RUNNING. When the
provider sees it end, its final state, exit code and reason are read from
``scontrol show job`` (exact and immediate while Slurm keeps the job, ``MinJobAge``),
else from ``sacct``:

- COMPLETED, FAILED: ``exited`` with the exit code; a job killed by signal N reports -N;
- FAILED by signal 9 with ``Exceeded job memory limit`` in ``stderr.log`` (Slurm's
  ``JobAcctGatherParams=OverMemoryKill``, on clusters without cgroups), or
  OUT_OF_MEMORY (the cgroup plugins): ``exited`` -9 with reason ``OUT_OF_MEMORY: ...``,
  which the submission service retries with ``retry.memory_factor`` times the memory;
- TIMEOUT, DEADLINE: ``exited`` -9 with reason ``wall time limit of N s exceeded``;
- CANCELLED: ``cancelled``, with ``cancelled by scancel`` in the reason when the job was
  cancelled outside this engine (an operator's ``scancel``, an administrator);
  `batch restart` runs it again;
- NODE_FAIL, BOOT_FAIL, PREEMPTED, REVOKED, or a job Slurm no longer knows: ``lost``.

A ``sbatch`` that fails (an unknown partition, a request no node can satisfy) makes
the job ``lost`` with sbatch's message.
"""

from __future__ import annotations

import contextlib
import math
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from parsl.launchers import SimpleLauncher
from parsl.providers import SlurmProvider
from parsl.providers.errors import ExecutionProviderException

from ...errors import BatchError, ConfigError
from .base import Engine, EngineJob, EngineState, JobReport
from .local import DEFAULT_ENTRY, signal_reason, split_entry

__all__ = ["JOB_ID_FILE", "SlurmEngine", "SlurmJobInfo", "check_cluster", "slurm_report"]

JOB_ID_FILE = "slurm_job_id"
"""File in an attempt directory holding the Slurm job id of that attempt."""

_WRAPPER = ("import importlib, sys; m, _, f = sys.argv[1].partition(':'); "
            "code = getattr(importlib.import_module(m), f)(sys.argv[2], sys.argv[3]); "
            "sys.exit(code if isinstance(code, int) else (0 if code is None else 1))")
"""What the batch script runs (``python -c``): the entry, its return value as the exit status."""

_MEMORY_KILL = re.compile(r"exceeded (job )?memory limit", re.IGNORECASE)
"""slurmstepd's words (in the job's stderr) when OverMemoryKill kills a step."""

_PENDING = {"PENDING", "REQUEUED", "CONFIGURING", "SUSPENDED", "RESV_DEL_HOLD", "REQUEUE_FED", "REQUEUE_HOLD",
            "SPECIAL_EXIT", "RESIZING"}
_LIVE = {*_PENDING, "RUNNING", "COMPLETING", "SIGNALING", "STAGE_OUT", "STOPPED"}
_LOST = {"NODE_FAIL", "BOOT_FAIL", "PREEMPTED", "REVOKED"}


@dataclass(frozen=True)
class SlurmJobInfo:
    """What Slurm says of a job: its state word, ``ExitCode`` (``"status:signal"``) and reason."""

    state: str
    exit_code: str = "0:0"
    reason: str | None = None
    detail: str | None = None
    """How the state was told (``CANCELLED by 0`` from sacct), when it says more than the state."""


def _stderr_tail(attempt_dir: Path, size: int = 8192) -> str:
    path = Path(attempt_dir) / "stderr.log"
    with contextlib.suppress(OSError), path.open("rb") as f:
        f.seek(max(0, path.stat().st_size - size))
        return f.read().decode(errors="replace")
    return ""


def slurm_report(job: EngineJob, info: SlurmJobInfo, *, cancelled: bool = False) -> JobReport:
    """The final report of ``job`` from what Slurm says of it (see the module docstring)."""
    state = info.state.split()[0].rstrip("+") if info.state else "UNKNOWN"
    status, _, sig = info.exit_code.partition(":")
    code = -int(sig) if sig.isdigit() and int(sig) else (int(status) if status.isdigit() else None)
    told = f"Slurm {info.detail or state}" + (f", reason {info.reason}" if info.reason not in (None, "None") else "")
    memory = job.resources.memory_mb
    request = f" of {memory} MiB" if memory else ""
    if state == "CANCELLED":
        if cancelled:
            return JobReport(job.name, EngineState.CANCELLED, code, "cancelled")
        return JobReport(job.name, EngineState.CANCELLED, code, f"cancelled by scancel outside skybutler ({told})")
    if state == "OUT_OF_MEMORY":
        return JobReport(job.name, EngineState.EXITED, code if code and code < 0 else -9,
                         f"OUT_OF_MEMORY: the job exceeded its memory request{request} ({told})")
    if state in ("TIMEOUT", "DEADLINE"):
        wall = job.resources.wall_time_s
        limit = f"wall time limit of {wall} s exceeded" if wall else "wall time limit exceeded"
        return JobReport(job.name, EngineState.EXITED, code if code and code < 0 else -9, f"{limit} ({told})")
    if state in _LOST or state not in ("COMPLETED", "FAILED"):
        return JobReport(job.name, EngineState.LOST, code, f"{told}: the job or its node was lost")
    if code is not None and code < 0:
        tail = _stderr_tail(Path(job.attempt_dir))
        if code == -9 and _MEMORY_KILL.search(tail):
            line = next((ln.strip() for ln in reversed(tail.splitlines()) if _MEMORY_KILL.search(ln)), "")
            return JobReport(job.name, EngineState.EXITED, code,
                             f"OUT_OF_MEMORY: Slurm killed the job for exceeding its memory request{request} ({line})")
        return JobReport(job.name, EngineState.EXITED, code, signal_reason(code))
    return JobReport(job.name, EngineState.EXITED, code, None if state == "COMPLETED" or code else told)


@dataclass(eq=False)
class _Job:
    spec: EngineJob
    slurm_id: str | None
    state: EngineState = EngineState.QUEUED
    cancelled: bool = False
    final: JobReport | None = None


def _scontrol_info(slurm_id: str, timeout: float) -> SlurmJobInfo | None:
    """``scontrol show job``'s state, exit code and reason; None when Slurm no longer holds the job."""
    try:
        done = subprocess.run(["scontrol", "-o", "show", "job", slurm_id], capture_output=True, text=True,
                              timeout=timeout)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if done.returncode != 0:
        return None
    fields = dict(item.partition("=")[::2] for item in done.stdout.split())
    if "JobState" not in fields:
        return None
    return SlurmJobInfo(fields["JobState"], fields.get("ExitCode", "0:0"), fields.get("Reason"))


def _sacct_info(slurm_ids: list[str], timeout: float) -> dict[str, SlurmJobInfo]:
    """``sacct``'s state, exit code and reason per job id (empty without accounting)."""
    if not slurm_ids:
        return {}
    try:
        done = subprocess.run(["sacct", "-X", "-n", "-P", "-o", "JobID,State,ExitCode,Reason", "-j",
                               ",".join(slurm_ids)], capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired):
        return {}
    found = {}
    for line in done.stdout.splitlines() if done.returncode == 0 else []:
        parts = line.split("|")
        if len(parts) >= 4:
            found[parts[0]] = SlurmJobInfo(parts[1].split()[0], parts[2], parts[3],
                                           parts[1] if " " in parts[1] else None)
    return found


def check_cluster(timeout: float = 10) -> None:
    """Raise `BatchError` naming ``sinfo`` when no Slurm cluster answers from this host."""
    try:
        done = subprocess.run(["sinfo", "-h", "-o", "%P %T"], capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError:
        raise BatchError("Engine 'slurm': `sinfo` is not installed here; no Slurm cluster can be reached "
                         "from this host") from None
    except subprocess.TimeoutExpired:
        raise BatchError(f"Engine 'slurm': no Slurm cluster answers (`sinfo` did not answer within "
                         f"{timeout:.0f} s)") from None
    if done.returncode != 0 or not done.stdout.strip():
        said = " ".join(done.stderr.split()) or "no partition"
        raise BatchError(f"Engine 'slurm': no Slurm cluster answers (`sinfo`: {said})")


class SlurmEngine(Engine):
    """Runs each job as one Slurm batch job (see the module docstring for settings and states).

    Parameters
    ----------
    partition, account, qos, constraint
        ``#SBATCH`` options (None: the site's defaults).
    scheduler_options
        More ``#SBATCH`` lines for every job.
    worker_init
        Shell lines the batch script runs before the job (activate the environment).
    python
        The job's interpreter on the node (default ``sys.executable``).
    entry
        ``"module:function"`` each job calls as ``function(manifest, attempt_dir)``.
    cmd_timeout
        Seconds to wait for a Slurm command.
    status_interval_s
        Seconds between status queries to Slurm.
    exclusive
        Whole nodes per job (``--exclusive``).
    work_dir
        The submission's directory (unused: batch scripts go into attempt directories).

    Examples
    --------
    >>> engine = make_engine("slurm", {"partition": "normal"})  # doctest: +SKIP
    >>> engine.submit(EngineJob("job_0001", manifest, attempt_dir, Resources(cores=2, memory_mb=4000)))
    """

    name = "slurm"

    def __init__(self, *, partition: str | None = None, account: str | None = None, qos: str | None = None,
                 constraint: str | None = None, scheduler_options: str = "", worker_init: str = "",
                 python: str | None = None, entry: str = DEFAULT_ENTRY, cmd_timeout: int = 30,
                 status_interval_s: float = 1.0, exclusive: bool = False, work_dir: Path | None = None):
        split_entry(entry)
        if status_interval_s < 0:
            raise ConfigError(f"Slurm engine: status_interval_s must be >= 0, not {status_interval_s}")
        self.entry = entry
        self.python = python or sys.executable
        self.cmd_timeout = cmd_timeout
        self.status_interval_s = status_interval_s
        self.work_dir = work_dir
        try:
            self.provider = SlurmProvider(
                partition=partition, account=account, qos=qos, constraint=constraint,
                scheduler_options=scheduler_options, worker_init=worker_init, cmd_timeout=cmd_timeout,
                exclusive=exclusive, launcher=SimpleLauncher(), init_blocks=0, min_blocks=0, max_blocks=0)
        except TypeError as exc:  # typeguard's check of a setting's type
            raise ConfigError(f"Slurm engine: {exc}") from None
        self._base_options = self.provider.scheduler_options
        self._jobs: dict[str, _Job] = {}
        self._last_status = 0.0
        self._closed = False

    # -- the Engine interface --

    def submit(self, job: EngineJob) -> None:
        """``sbatch`` one batch script for ``job``; a failed sbatch makes it ``lost`` (with sbatch's message)."""
        if self._closed:
            raise BatchError(f"Job {job.name!r}: the Slurm engine is closed")
        if job.name in self._jobs:
            raise BatchError(f"Job {job.name!r} was already submitted to this engine and not yet reported")
        attempt = Path(job.attempt_dir).resolve()
        attempt.mkdir(parents=True, exist_ok=True)
        provider = self.provider
        provider.script_dir = str(attempt)
        provider.scheduler_options = self._base_options + self._directives(job, attempt)
        wall = job.resources.wall_time_s
        # Slurm counts wall time in minutes; "00:01:00" only feeds Parsl's template, whose
        # --time line is then left out (`_no_time_limit`) so that the partition's default applies.
        provider.walltime = f"{math.ceil(wall / 60) // 60:02d}:{math.ceil(wall / 60) % 60:02d}:00" if wall \
            else "00:01:00"
        python = " ".join(shlex.quote(p) for p in (self.python, "-c", _WRAPPER, self.entry, str(job.manifest),
                                                     str(attempt)))
        entry = _Job(job, None)
        try:
            with _no_time_limit(provider, enabled=not wall):
                entry.slurm_id = provider.submit(f"exec {python}", tasks_per_node=1, job_name=f"skybutler.{job.name}")
        except ExecutionProviderException as exc:
            entry.final = JobReport(job.name, EngineState.LOST, None, f"sbatch failed: {_provider_error(exc)}")
        else:
            (attempt / JOB_ID_FILE).write_text(f"{entry.slurm_id}\n")
        self._jobs[job.name] = entry

    @staticmethod
    def _directives(job: EngineJob, attempt: Path) -> str:
        """The ``#SBATCH`` lines of this job (they come after Parsl's, so --output/--error replace its own)."""
        lines = [f"--output={attempt / 'stdout.log'}", f"--error={attempt / 'stderr.log'}", "--open-mode=append",
                 f"--cpus-per-task={max(1, job.resources.cores)}"]
        if job.resources.memory_mb:
            lines.append(f"--mem={job.resources.memory_mb}M")
        return "".join(f"#SBATCH {line}\n" for line in lines)

    def poll(self) -> list[JobReport]:
        """Every job not yet reported final; a final state is reported once, then the job is forgotten."""
        now = time.monotonic()
        if now - self._last_status >= self.status_interval_s:
            self._last_status = now
            self._update()
        reports = []
        for name, job in list(self._jobs.items()):
            if job.final is not None:
                reports.append(job.final)
                del self._jobs[name]
            else:
                reports.append(JobReport(name, job.state))
        return reports

    def _update(self) -> None:
        """Ask the provider for states; read how jobs that ended did from scontrol or sacct."""
        from parsl.jobs.states import JobState

        live = {job.slurm_id: job for job in self._jobs.values() if job.final is None and job.slurm_id}
        if not live:
            return
        ids = list(live)
        try:
            statuses = self.provider.status(ids)
        except ExecutionProviderException:
            return  # asked again at the next interval
        ended = []
        for slurm_id, status in zip(ids, statuses, strict=True):
            job = live[slurm_id]
            if status.state == JobState.RUNNING:
                job.state = EngineState.RUNNING
            elif status.terminal or job.cancelled:
                ended.append(job)
        if not ended:
            return
        known = {job.slurm_id: info for job in ended
                 if job.slurm_id and (info := _scontrol_info(job.slurm_id, self.cmd_timeout)) is not None}
        missing = [job.slurm_id for job in ended if job.slurm_id and job.slurm_id not in known]
        known.update(_sacct_info(missing, self.cmd_timeout))
        for job in ended:
            info = known.get(job.slurm_id or "")
            if info is None:
                job.final = JobReport(job.spec.name, EngineState.LOST, None,
                                      f"Slurm no longer knows job {job.slurm_id} (neither scontrol nor sacct)")
                continue
            word = info.state.split()[0].rstrip("+")
            if word in _LIVE:
                # The provider's view ran ahead of Slurm's (a cancel sets it at once): not over yet.
                job.state = EngineState.QUEUED if word in _PENDING else EngineState.RUNNING
                continue
            job.final = slurm_report(job.spec, info, cancelled=job.cancelled)

    def cancel(self, names: Iterable[str]) -> None:
        """``scancel`` these jobs; each is reported ``cancelled`` once Slurm says it ended."""
        ids = []
        for name in names:
            job = self._jobs.get(name)
            if job is None or job.final is not None or job.cancelled:
                continue
            job.cancelled = True
            if job.slurm_id is not None:
                ids.append(job.slurm_id)
        if ids:
            with contextlib.suppress(ExecutionProviderException):
                self.provider.cancel(ids)
            self._last_status = 0.0  # look at once

    def close(self) -> None:
        """Cancel (scancel) every job not yet ended; Slurm stops them."""
        if self._closed:
            return
        self.cancel([name for name, job in self._jobs.items() if job.final is None])
        self._closed = True

    def slurm_id(self, name: str) -> str | None:
        """The Slurm job id of a job submitted and not yet reported final."""
        job = self._jobs.get(name)
        return job.slurm_id if job is not None else None


def _provider_error(exc: ExecutionProviderException) -> str:
    """sbatch's own words when there are some (Parsl's message repeats them after its own)."""
    text = (getattr(exc, "stderr", None) or "").strip()
    return " ".join(text.splitlines()) if text else str(exc)


@contextlib.contextmanager
def _no_time_limit(provider: Any, *, enabled: bool) -> Any:
    """Leave Parsl's ``#SBATCH --time`` line out of the scripts written meanwhile (``enabled``)."""
    if not enabled:
        yield
        return
    write = provider._write_submit_script

    def without_time(template: str, *args: Any, **kwargs: Any) -> Any:
        template = "\n".join(line for line in template.splitlines() if not line.startswith("#SBATCH --time="))
        return write(template, *args, **kwargs)

    provider._write_submit_script = without_time
    try:
        yield
    finally:
        del provider._write_submit_script
