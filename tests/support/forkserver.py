"""Processes forked from a server that imported skybutler once, for tests that kill or race them.

A fresh interpreter per process cost seconds of imports on a busy machine; a forkserver
imports skybutler once and forks each process from it. The server is one per test process
(`multiprocessing`'s own): the preload of whichever test starts it first is the one kept.
A function run this way must live in a module its process can import (``support.*``,
``reliability.crash_work``), not in a test module.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from multiprocessing.context import ForkServerContext
    from multiprocessing.process import BaseProcess
    from multiprocessing.synchronize import Event

TIMEOUT = 120
"""Seconds a process given work to finish may take before the test fails."""

STARTUP_TIMEOUT = 60
"""Seconds a process started by `start_process` may take to signal that it runs."""

SKYBUTLER = ("skybutler", "skybutler.butler", "skybutler.pipeline", "skybutler.provenance")
"""Preloaded for every process: the layers an eager ``import skybutler`` used to import. Since the
package imports them on first use, preloading ``skybutler`` alone left each process ~2 s of imports."""


def forkserver_context(*preload: str) -> ForkServerContext:
    """The forkserver context, preloading skybutler and the modules named (those the processes run).

    The server starts with the interpreter's default ``sys.path`` (Python 3.11 passes it
    the tests' path but does not use it), so a module of ``tests/`` named here is not
    preloaded (silently): each process imports it when it is handed its function. That
    costs little (such modules are small and skybutler, which they import, is preloaded).
    """
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([*SKYBUTLER, *preload])
    return context


def run_in_process(function: Callable[..., object], *args: Any, preload: tuple[str, ...] = (),
                   what: str | None = None) -> int | None:
    """Run ``function(*args)`` in a process of its own and return its exit code.

    The test fails, naming ``what`` (the function's name by default), if the process is
    still running after `TIMEOUT` seconds; the process is then killed.
    """
    process = forkserver_context(*preload).Process(target=function, args=args)
    process.start()
    process.join(TIMEOUT)
    if process.exitcode is None:
        process.kill()
        pytest.fail(f"{what or function.__name__} was still running after {TIMEOUT} s")
    return process.exitcode


def start_process(function: Callable[..., object], *args: Any, preload: tuple[str, ...] = (),
                  what: str | None = None) -> BaseProcess:
    """Start ``function(*args)`` in a daemon process and return it once it runs, to be killed or joined.

    Returns when the process has signalled that it is about to call ``function`` (so a kill
    at a random delay after this lands in the work, not in the start); fails, naming ``what``,
    if that takes over `STARTUP_TIMEOUT` seconds.
    """
    context = forkserver_context(*preload)
    started = context.Event()
    process = context.Process(target=_signal_then_run, args=(started, function, *args), daemon=True)
    process.start()
    assert started.wait(STARTUP_TIMEOUT), f"{what or function.__name__} worker did not start"
    return process


def _signal_then_run(started: Event, function: Callable[..., object], *args: Any) -> None:
    started.set()
    function(*args)
