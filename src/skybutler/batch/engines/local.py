"""The ``local`` engine: one process per job on this machine, at most ``max_workers`` cores busy.

Jobs start from a fork server of the engine's own that has imported the entry's
module once, so starting a job costs milliseconds rather than a Python start-up
and an import of the whole package. Each job process

- starts a session of its own (``setsid``), so cancelling or killing it reaches every
  process it started (the runner's quantum workers) through its process group;
- writes its standard output and error to ``attempt_dir/stdout.log`` and
  ``attempt_dir/stderr.log`` (file descriptors 1 and 2, so C libraries and
  subprocesses are captured too);
- has its address space capped (``RLIMIT_AS``) at what it holds when it starts plus
  ``resources.memory_mb``, when that is set;
- calls ``entry(manifest, attempt_dir)`` and exits with what it returns.

A thread of the engine watches the processes: it starts queued jobs as cores free
up, kills a job past its wall time (``SIGKILL`` to its process group, reported
``exited`` with exit code -9 and reason ``wall time limit of N s exceeded``) and,
with ``memory_kill``, a job whose processes together hold more resident memory than
``memory_mb`` (exit code -9, reason ``OUT_OF_MEMORY: ...``), as a batch system would.
A job killed by ``SIGKILL`` from elsewhere is called out of memory only when the
kernel's out-of-memory kill count rose while it ran (the cgroup's or the machine's:
with several jobs running, the kill may have hit another of them).

Reasons that start with ``OUT_OF_MEMORY`` mean the job went over its memory: killed
for it, or its entry raised `MemoryError` (exit code 1).
"""

from __future__ import annotations

import contextlib
import io
import multiprocessing
import os
import resource
import signal
import sys
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from multiprocessing import forkserver, popen_forkserver, process, reduction, spawn, util
from multiprocessing.connection import Connection
from multiprocessing.connection import wait as wait_for
from pathlib import Path
from typing import Any

from ...errors import BatchError, ConfigError
from ...pipeline.executor import oom_kill_counts, oom_kills_between
from .base import Engine, EngineJob, EngineState, JobReport

__all__ = ["DEFAULT_ENTRY", "LocalEngine", "load_entry", "signal_reason", "split_entry"]

DEFAULT_ENTRY = "skybutler.batch.runner:job_main"
"""What a job runs: ``module:function``, called as ``function(manifest, attempt_dir) -> int``."""

_MEMORY_SAMPLE_S = 0.25
"""How often resident memory is summed for jobs with a memory limit (``memory_kill``)."""


def split_entry(entry: str) -> tuple[str, str]:
    """``"module:function"`` split in two; `ConfigError` when it is not of that form.

    Examples
    --------
    >>> split_entry("skybutler.batch.runner:job_main")
    ('skybutler.batch.runner', 'job_main')
    """
    module, sep, function = entry.partition(":")
    if not (sep and module and function.isidentifier()
            and all(part.isidentifier() for part in module.split("."))):
        raise ConfigError(f"Engine entry {entry!r} is not of the form 'module:function'")
    return module, function


def load_entry(entry: str) -> Callable[[str, str], Any]:
    """The function ``entry`` (``"module:function"``) names, imported."""
    import importlib

    module_name, function = split_entry(entry)
    return getattr(importlib.import_module(module_name), function)  # type: ignore[no-any-return]


def signal_reason(exit_code: int) -> str:
    """``killed by SIGKILL (Killed)`` for a negative exit status (minus the signal number).

    Examples
    --------
    >>> signal_reason(-15)
    'killed by SIGTERM (Terminated)'
    """
    signum = -exit_code
    try:
        name = signal.Signals(signum).name
    except ValueError:
        return f"killed by signal {signum}"
    return f"killed by {name} ({signal.strsignal(signum) or name})"


# -- the job process --------------------------------------------------------------------


def _run_job(entry: str, manifest: str, attempt_dir: str, memory_bytes: int | None, reasons: Connection) -> None:
    """Body of a job process (runs in the child): own session, logs to files, memory cap, the entry."""
    os.setsid()
    directory = Path(attempt_dir)
    directory.mkdir(parents=True, exist_ok=True)
    for fd, name in ((1, "stdout.log"), (2, "stderr.log")):
        log = os.open(directory / name, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(log, fd)
        os.close(log)
    if memory_bytes:
        import psutil

        _, hard = resource.getrlimit(resource.RLIMIT_AS)
        wanted = psutil.Process().memory_info().vms + memory_bytes
        if hard != resource.RLIM_INFINITY:
            wanted = min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_AS, (wanted, hard))
    code: Any
    try:
        code = load_entry(entry)(manifest, attempt_dir)
    except MemoryError:
        traceback.print_exc()
        limit = f" of {memory_bytes >> 20} MiB" if memory_bytes else ""
        reasons.send(f"OUT_OF_MEMORY: the job's entry raised MemoryError (address space limit{limit})")
        code = 1
    except Exception as exc:
        traceback.print_exc()
        reasons.send(f"the job's entry raised {type(exc).__name__}: {exc}")
        code = 1
    finally:
        reasons.close()
    # sys.exit, not os._exit: multiprocessing then flushes sys.stdout and sys.stderr.
    sys.exit(code if isinstance(code, int) else (0 if code is None else 1))


class _ServerPopen(popen_forkserver.Popen):
    """`popen_forkserver.Popen` launching through the engine's own fork server, not the process-wide one.

    The process-wide fork server is shared with every other user in this process
    (the graph executor preloads its own module into it) and cannot be stopped; ours
    preloads the job's entry module and stops with the engine. ``_launch`` is the
    standard library's, with ``server`` in place of the module-level functions.
    """

    def _launch(self, process_obj: Any) -> None:
        server: forkserver.ForkServer = process_obj.server
        prep_data = spawn.get_preparation_data(process_obj._name)
        # A job needs its entry's module, not this program's __main__: running the main
        # script again in every job costs time and fails for scripts read from stdin.
        prep_data.pop("init_main_from_path", None)
        prep_data.pop("init_main_from_module", None)
        buf = io.BytesIO()
        multiprocessing.context.set_spawning_popen(self)
        try:
            reduction.dump(prep_data, buf)
            reduction.dump(process_obj, buf)
        finally:
            multiprocessing.context.set_spawning_popen(None)
        self.sentinel, w = server.connect_to_new_process(self._fds)  # type: ignore[attr-defined]
        _parent_w = os.dup(w)
        self.finalizer = util.Finalize(self, util.close_fds,  # type: ignore[attr-defined]
                                       (_parent_w, self.sentinel))
        with open(w, "wb", closefd=True) as f:
            f.write(buf.getbuffer())
        self.pid = forkserver.read_signed(self.sentinel)


class _ServerProcess(process.BaseProcess):
    """A process started by a given fork server (``server``, not sent to the child)."""

    _start_method = "forkserver"
    server: forkserver.ForkServer

    @staticmethod
    def _Popen(process_obj: Any) -> Any:  # noqa: N802 - the name multiprocessing calls
        return _ServerPopen(process_obj)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state.pop("server", None)
        return state


def _stop_server(server: Any, timeout: float = 5.0) -> None:
    """Stop a fork server: close its "alive" pipe, wait for it, kill it if it lingers.

    ``ForkServer._stop`` waits forever, and the server only sees the end of its pipe
    when every process it forked has closed its copy too.
    """
    pid = server._forkserver_pid
    if pid is None:
        return
    with contextlib.suppress(OSError):
        os.close(server._forkserver_alive_fd)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if os.waitpid(pid, os.WNOHANG)[0]:
            break
        time.sleep(0.02)
    else:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    address = server._forkserver_address
    if isinstance(address, str) and not util.is_abstract_socket_namespace(address):
        with contextlib.suppress(OSError):
            os.unlink(address)
    server._forkserver_pid = server._forkserver_alive_fd = server._forkserver_address = None


# -- the engine ---------------------------------------------------------------------------


@dataclass(eq=False)
class _Job:
    spec: EngineJob
    cores: int
    state: EngineState = EngineState.QUEUED
    process: Any = None
    reasons: Connection | None = None
    started: float = 0.0
    deadline: float | None = None
    kill_at: float | None = None
    """After a cancel's SIGTERM: when to send SIGKILL."""
    cancelled: bool = False
    cancel_pending: bool = False
    """Cancelled while its process was being started: signalled once it runs."""
    kill_reason: str | None = None
    oom_before: dict[str, int] = field(default_factory=dict)
    exit_code: int | None = None
    reason: str | None = None

    def report(self) -> JobReport:
        return JobReport(self.spec.name, self.state, self.exit_code, self.reason)


def _signal_group(pid: int, signum: int) -> None:
    """Signal a job's process group, or the job alone if it has not made its group yet."""
    try:
        os.killpg(pid, signum)
    except ProcessLookupError:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)
    except PermissionError:
        # The pid is not (yet) a group leader of ours: signal the job process alone.
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)


def _resident_bytes(pid: int) -> int:
    """Memory a process and all its descendants hold, each shared page counted once.

    The proportional set size (PSS) where the system gives it: forked processes
    share their parent's pages, which summed resident sizes would count once per
    process (a job with four forked workers would look five times its size).
    """
    import psutil

    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0
    total = 0
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            try:
                total += proc.memory_full_info().pss
            except (AttributeError, psutil.AccessDenied):
                total += proc.memory_info().rss
    return total


class LocalEngine(Engine):
    """Runs each job in a process of its own on this machine.

    Parameters
    ----------
    max_workers
        Cores the engine keeps busy at most; a job takes ``resources.cores`` of them
        (at least 1, at most ``max_workers``). Jobs wait (``queued``) in the order they
        were submitted until their cores are free.
    start_method
        ``"forkserver"`` (Linux default: the engine's own server, with the entry's
        module preloaded) or ``"spawn"`` (a fresh interpreter per job).
    entry
        ``"module:function"`` each job calls as ``function(manifest, attempt_dir)``;
        its return value is the job's exit code.
    memory_kill
        Kill a job whose processes together hold more resident memory than its
        ``resources.memory_mb`` (as a batch system would); the address-space cap
        applies either way.
    cancel_grace_s
        Seconds between a cancel's ``SIGTERM`` and ``SIGKILL``.
    preload
        More modules the fork server imports once, so that jobs do not each pay for them
        (the submission service names the pipeline's task modules: with astropy and
        numpy behind them, importing them costs a job about a second).
    work_dir
        Unused (jobs write into their attempt directories); taken for `make_engine`.

    Examples
    --------
    >>> with LocalEngine(max_workers=4) as engine:  # doctest: +SKIP
    ...     engine.submit(EngineJob("job_0001", manifest, attempt_dir))
    ...     while not any(r.state == EngineState.EXITED for r in engine.poll()):
    ...         time.sleep(0.1)
    """

    name = "local"

    def __init__(self, *, max_workers: int | None = None, start_method: str | None = None,
                 entry: str = DEFAULT_ENTRY, memory_kill: bool = True, cancel_grace_s: float = 5.0,
                 preload: Sequence[str] = (), work_dir: Path | None = None):
        self.max_workers = max_workers or os.cpu_count() or 1
        if self.max_workers < 1:
            raise ConfigError(f"Local engine: max_workers must be at least 1, not {max_workers}")
        if start_method is None:
            start_method = "forkserver" if sys.platform.startswith("linux") else "spawn"
        if start_method not in ("forkserver", "spawn"):
            raise ConfigError(f"Local engine: start_method {start_method!r} is not one of ['forkserver', 'spawn']")
        self.start_method = start_method
        self.entry = entry
        module, _ = split_entry(entry)
        self.memory_kill = memory_kill
        self.cancel_grace_s = cancel_grace_s
        self.work_dir = work_dir
        self._server: forkserver.ForkServer | None = None
        if start_method == "forkserver":
            self._server = forkserver.ForkServer()
            # This module too: the job process runs `_run_job`, imported from here.
            self._server.set_forkserver_preload([__name__, module, *preload])
            # Its imports take seconds: start it now, while the caller prepares the first jobs
            # (ensure_running holds the server's lock, so a job started meanwhile waits for it).
            threading.Thread(target=self._server.ensure_running, name="skybutler-fork-server",
                             daemon=True).start()
        self._spawn = multiprocessing.get_context("spawn")
        self._jobs: dict[str, _Job] = {}
        self._queue: deque[_Job] = deque()
        self._busy = 0
        self._lock = threading.Lock()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_w, False)
        self._thread: threading.Thread | None = None
        self._closed = False

    # -- the Engine interface --

    def submit(self, job: EngineJob) -> None:
        """Queue ``job``; it starts as soon as its cores are free."""
        with self._lock:
            if self._closed:
                raise BatchError(f"Job {job.name!r}: the local engine is closed")
            if job.name in self._jobs:
                raise BatchError(f"Job {job.name!r} was already submitted to this engine and not yet reported")
            entry = _Job(job, min(max(job.resources.cores, 1), self.max_workers))
            self._jobs[job.name] = entry
            self._queue.append(entry)
            if self._thread is None:
                self._thread = threading.Thread(target=self._watch, name="skybutler-local-engine", daemon=True)
                self._thread.start()
        self._wake()

    def poll(self) -> list[JobReport]:
        """Every job not yet reported final; a final state is reported once, then the job is forgotten."""
        with self._lock:
            reports = [job.report() for job in self._jobs.values()]
            for report in reports:
                if report.state in (EngineState.EXITED, EngineState.CANCELLED, EngineState.LOST):
                    del self._jobs[report.name]
        return reports

    def cancel(self, names: Iterable[str]) -> None:
        """Cancel queued jobs at once, running ones with ``SIGTERM`` then ``SIGKILL`` after the grace period.

        Names the engine does not know, or jobs that already ended, are left as they are.
        """
        now = time.monotonic()
        with self._lock:
            for name in names:
                job = self._jobs.get(name)
                if job is None:
                    continue
                if job.state == EngineState.QUEUED and job in self._queue:
                    self._queue.remove(job)
                    job.state, job.reason = EngineState.CANCELLED, "cancelled before it started"
                elif job.state == EngineState.QUEUED:  # being started by the watcher right now
                    job.cancel_pending = True
                elif job.state == EngineState.RUNNING and not job.cancelled:
                    job.cancelled = True
                    job.kill_at = now + self.cancel_grace_s
                    _signal_group(job.process.pid, signal.SIGTERM)
        self._wake()

    def close(self) -> None:
        """Cancel every job still queued or running, wait for them to end, stop the fork server."""
        with self._lock:
            if self._closed:
                return
            names = list(self._jobs)
        self.cancel(names)
        with self._lock:
            self._closed = True
        self._wake()
        if self._thread is not None:
            self._thread.join()
        if self._server is not None:
            _stop_server(self._server)
        for fd in (self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)

    # -- the watcher thread --

    def _wake(self) -> None:
        with contextlib.suppress(BlockingIOError, OSError):
            os.write(self._wake_w, b"x")

    def _watch(self) -> None:
        """Run `_watch_loop`; should it fail, no job is left waiting for a watcher that is gone."""
        try:
            self._watch_loop()
        except BaseException as exc:
            with self._lock:
                for job in self._jobs.values():
                    if job.state == EngineState.RUNNING:
                        _signal_group(job.process.pid, signal.SIGKILL)
                    if job.state in (EngineState.QUEUED, EngineState.RUNNING):
                        job.state = EngineState.LOST
                        job.reason = f"the local engine's watcher failed: {type(exc).__name__}: {exc}"
                self._queue.clear()
            raise

    def _watch_loop(self) -> None:
        """Start queued jobs, collect ended ones, enforce wall time, memory and cancel grace periods."""
        while True:
            # Processes start outside the lock: a start can wait on the fork server, and submit
            # and poll must not wait with it.
            for job in self._take_queued():
                self._start(job)
            with self._lock:
                running = [job for job in self._jobs.values() if job.state == EngineState.RUNNING]
                if self._closed and not running:
                    return
                timeout = self._next_timeout(running)
                sentinels = [job.process.sentinel for job in running]
            ready = wait_for([*sentinels, self._wake_r], timeout)
            if self._wake_r in ready:
                with contextlib.suppress(BlockingIOError):
                    os.read(self._wake_r, 4096)
            with self._lock:
                now = time.monotonic()
                for job in running:
                    if job.process.exitcode is not None:
                        self._finish(job)
                    else:
                        self._enforce(job, now)

    def _next_timeout(self, running: list[_Job]) -> float | None:
        times = [t for job in running for t in (job.deadline, job.kill_at) if t is not None]
        timeout = max(0.0, min(times) - time.monotonic()) if times else None
        if self.memory_kill and any(job.spec.resources.memory_mb for job in running):
            timeout = min(timeout, _MEMORY_SAMPLE_S) if timeout is not None else _MEMORY_SAMPLE_S
        return timeout

    def _take_queued(self) -> list[_Job]:
        """Jobs whose cores are free, taken off the queue (their cores counted as busy)."""
        taken = []
        with self._lock:
            while self._queue and not self._closed and self._busy + self._queue[0].cores <= self.max_workers:
                job = self._queue.popleft()
                self._busy += job.cores
                taken.append(job)
        return taken

    def _start(self, job: _Job) -> None:
        spec = job.spec
        memory = spec.resources.memory_mb << 20 if spec.resources.memory_mb else None
        receiver, sender = multiprocessing.Pipe(duplex=False)
        args = (self.entry, str(spec.manifest), str(spec.attempt_dir), memory, sender)
        name = f"skybutler-job-{spec.name}"
        if self._server is not None:
            proc: Any = _ServerProcess(target=_run_job, args=args, name=name, daemon=False)
            proc.server = self._server
        else:
            proc = self._spawn.Process(target=_run_job, args=args, name=name, daemon=False)
        oom_before = oom_kill_counts()
        try:
            proc.start()
        except Exception as exc:
            receiver.close()
            with self._lock:
                job.state, job.reason = EngineState.LOST, f"the job process could not be started: {exc}"
                self._busy -= job.cores
            return
        finally:
            sender.close()
        with self._lock:
            job.oom_before = oom_before
            job.process, job.reasons = proc, receiver
            job.state, job.started = EngineState.RUNNING, time.monotonic()
            if spec.resources.wall_time_s:
                job.deadline = job.started + spec.resources.wall_time_s
            if job.cancel_pending:
                job.cancelled = True
                job.kill_at = job.started + self.cancel_grace_s
                _signal_group(proc.pid, signal.SIGTERM)

    def _enforce(self, job: _Job, now: float) -> None:
        pid = job.process.pid
        limits = job.spec.resources
        if job.kill_reason is None and job.deadline is not None and now >= job.deadline:
            job.kill_reason = f"wall time limit of {limits.wall_time_s} s exceeded"
            _signal_group(pid, signal.SIGKILL)
        elif job.kill_reason is None and self.memory_kill and limits.memory_mb:
            resident = _resident_bytes(pid)
            if resident > limits.memory_mb << 20:
                job.kill_reason = (f"OUT_OF_MEMORY: memory limit of {limits.memory_mb} MiB exceeded "
                                   f"(its processes held {resident >> 20} MiB): killed")
                _signal_group(pid, signal.SIGKILL)
        if job.kill_at is not None and now >= job.kill_at:
            job.kill_at = None
            _signal_group(pid, signal.SIGKILL)

    def _finish(self, job: _Job) -> None:
        proc = job.process
        proc.join()
        code = proc.exitcode
        told = None
        if job.reasons is not None:
            with contextlib.suppress(EOFError, OSError):
                if job.reasons.poll():
                    told = job.reasons.recv()
            job.reasons.close()
        job.exit_code = code
        if job.cancelled:
            job.state = EngineState.CANCELLED
            job.reason = "cancelled" + (f" ({signal_reason(code)})" if code < 0 else f" (exit code {code})")
        else:
            job.state = EngineState.EXITED
            if job.kill_reason is not None:
                job.reason = job.kill_reason
            elif told is not None:
                job.reason = told
            elif code < 0:
                job.reason = signal_reason(code)
                rose = oom_kills_between(job.oom_before, oom_kill_counts()) if code == -signal.SIGKILL else []
                if rose:
                    job.reason = f"OUT_OF_MEMORY: {job.reason}: the kernel's out-of-memory killer ({'; '.join(rose)})"
        self._busy -= job.cores
        proc.close()
