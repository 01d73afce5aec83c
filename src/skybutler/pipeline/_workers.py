"""The graph executor's worker processes: a pool's initializer and task, and a quantum run alone.

Workers get the configuration the executor resolved (environment overrides
applied once, in the parent), never re-reading it: a worker started by a
forkserver that predates an environment change, or with another working
directory, opens exactly the repository the parent opened. Each worker holds one
`QuantumRunner` for the life of the process.

A quantum suspected of killing its pool's worker is run again alone, in a process
of our own, because such a process — unlike a pool's — tells how it ended
(`death_reason`).
"""

from __future__ import annotations

import contextlib
import multiprocessing
import sys
from collections.abc import Mapping
from concurrent.futures import ProcessPoolExecutor
from multiprocessing.connection import Connection
from multiprocessing.connection import wait as wait_for
from typing import Any

from ._deaths import death_reason, oom_kill_counts, peak_rss
from ._quantum_runner import QuantumOutcome, QuantumRunner
from .graph import Quantum

__all__ = ["default_start_method", "new_pool", "run_in_own_process", "worker_init", "worker_run"]

# The runner of this worker process, made by `worker_init`.
_RUNNER: QuantumRunner | None = None


def default_start_method() -> str:
    """``"forkserver"`` on Linux, ``"spawn"`` elsewhere."""
    # forkserver: workers fork from a clean server process (no inherited threads, locks or
    # database connections, unlike fork) and start faster than spawn; spawn elsewhere.
    return "forkserver" if sys.platform.startswith("linux") else "spawn"


def worker_init(root: str, header: Mapping[str, Any], memory_limit: int | None,
                config: Mapping[str, Any]) -> None:
    """Open this worker's butler and runner.

    Parameters
    ----------
    root
        The repository root, absolute (a worker may start in another directory).
    header
        The graph's header (its run, template variables, pipeline and dataset types).
    memory_limit
        Bytes a quantum may add to the worker's address space (None: no limit).
    config
        The parent's resolved repository configuration, as JSON-ready data.
    """
    global _RUNNER
    from ..butler import Butler
    from ..config import RepositoryConfig

    # The parent's resolved configuration, not a fresh read of the file with this
    # process's environment: an override means the same thing in every process.
    butler = Butler(root, run=header["run"], template_variables=header.get("template_variables") or {},
                    _config=RepositoryConfig.model_validate(config))
    _RUNNER = QuantumRunner(butler, header, memory_limit=memory_limit)


def worker_run(quantum_data: Mapping[str, Any]) -> QuantumOutcome:
    """Run one quantum (`Quantum.to_dict` form) with this worker's runner."""
    assert _RUNNER is not None, "worker not initialised"
    quantum = Quantum.from_dict(quantum_data, _RUNNER.graph.dataset_types)
    return _RUNNER.run(quantum)


def _run_isolated(conn: Connection, init_args: tuple[Any, ...], quantum_data: Mapping[str, Any]) -> None:
    """Run one quantum in a process of its own and send back its outcome (or why it could not run)."""
    try:
        worker_init(*init_args)
        result: QuantumOutcome | str = worker_run(quantum_data)
    except Exception as exc:
        result = f"{type(exc).__name__}: {exc}"
    conn.send(result)
    conn.close()


def new_pool(workers: int, start_method: str, init_args: tuple[Any, ...]) -> ProcessPoolExecutor:
    """A process pool whose workers run `worker_init` with ``init_args``, then `worker_run`."""
    ctx = multiprocessing.get_context(start_method)
    if start_method == "forkserver":
        # The server imports the pipeline, registry and provenance layers once; workers
        # fork from it with those already loaded instead of importing them each.
        ctx.set_forkserver_preload([__name__])
    return ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=worker_init,
                               initargs=init_args)


def run_in_own_process(quantum: Quantum, init_args: tuple[Any, ...], *, start_method: str,
                       memory_limit: int | None) -> QuantumOutcome | str:
    """Run a quantum suspected of killing its worker alone, in a process of its own.

    Returns its outcome, or why it produced none (its worker's exit status, see
    `death_reason`): a process of our own, unlike a pool's, tells how it ended.
    """
    ctx = multiprocessing.get_context(start_method)
    receiver, sender = ctx.Pipe(duplex=False)
    process = ctx.Process(  # type: ignore[attr-defined]  # every concrete context has Process
        target=_run_isolated, args=(sender, init_args, quantum.to_dict()),
        name=f"skybutler-quantum-{quantum.id}", daemon=True)
    oom_before = oom_kill_counts()
    peak: int | None = None
    process.start()
    sender.close()
    result: QuantumOutcome | str | None = None
    try:
        while result is None:
            ready = wait_for([receiver, process.sentinel], timeout=0.2)
            if process.pid is not None and memory_limit:
                peak = max(peak or 0, peak_rss(process.pid) or 0) or None
            if receiver in ready or (process.sentinel in ready and receiver.poll()):
                with contextlib.suppress(EOFError):
                    result = receiver.recv()
                break
            if process.sentinel in ready:
                break
        process.join()
    finally:
        receiver.close()
        if process.is_alive():  # interrupted while waiting
            process.kill()
            process.join()
    if result is not None:
        return result
    return death_reason(process.exitcode, oom_before=oom_before, oom_after=oom_kill_counts(),
                        memory_limit=memory_limit, peak_rss=peak)
