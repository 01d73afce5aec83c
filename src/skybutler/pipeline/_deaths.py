"""Why a worker process died: its signal or exit code, and the kernel's out-of-memory kills.

A worker that dies is reported as what happened to it: the signal that killed it
(``SIGKILL``, ``SIGSEGV``...) or its exit code. It is called out of memory only when
the kernel says so — its out-of-memory killer's ``oom_kill`` count rose (the
cgroup's ``memory.events`` or ``/proc/vmstat``) while the quantum ran — or, as
"possibly", when a memory limit was set and the worker's peak resident memory
came near it.

The graph executor re-exports the public functions (`death_reason`,
`oom_kill_counts`, `oom_kills_between`); the local batch engine uses the counters
for a whole job.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Mapping
from pathlib import Path

__all__ = ["death_reason", "mib", "oom_kill_counts", "oom_kills_between", "peak_rss"]


def mib(n: float) -> str:
    """A number of bytes in whole MiB, for messages.

    Examples
    --------
    >>> mib(3 * 2**20)
    '3 MiB'
    """
    return f"{n / 2**20:.0f} MiB"


def oom_kill_counts() -> dict[str, int]:
    """The kernel's out-of-memory kill counters readable without privileges, by source.

    ``memory.events`` of this process's cgroup (v2) counts its processes killed by any
    OOM killer; ``/proc/vmstat`` counts every OOM kill on the machine.
    """
    counts: dict[str, int] = {}
    sources = []
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            if line.startswith("0::"):
                sources.append(("cgroup memory.events", Path("/sys/fs/cgroup" + line[3:].strip()) / "memory.events"))
    sources.append(("/proc/vmstat", Path("/proc/vmstat")))
    for name, path in sources:
        with contextlib.suppress(OSError, ValueError):
            for line in path.read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == "oom_kill":
                    counts[name] = int(value)
    return counts


def peak_rss(pid: int) -> int | None:
    """A live process's peak resident memory (``VmHWM``), in bytes; None when unreadable."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return None


def oom_kills_between(before: Mapping[str, int], after: Mapping[str, int]) -> list[str]:
    """The `oom_kill_counts` sources whose count rose from ``before`` to ``after``, described.

    Examples
    --------
    >>> oom_kills_between({"/proc/vmstat": 3}, {"/proc/vmstat": 4})
    ['/proc/vmstat oom_kill 3 -> 4']
    """
    return [f"{src} oom_kill {before[src]} -> {n}" for src, n in after.items() if src in before and n > before[src]]


def death_reason(exitcode: int | None, *, oom_before: Mapping[str, int], oom_after: Mapping[str, int],
                 memory_limit: int | None = None, peak_rss: int | None = None) -> str:
    """Why a worker process ended without a result, in one line starting with ``WorkerDied:``.

    Parameters
    ----------
    exitcode
        `multiprocessing.Process.exitcode`: negative for the number of the signal that killed it.
    oom_before, oom_after
        `oom_kill_counts` before and after the quantum ran.
    memory_limit, peak_rss
        The quantum's memory limit (if any) and the worker's last seen peak resident memory.
    """
    if exitcode is None:
        return "WorkerDied: the worker process vanished without an exit status"
    if exitcode >= 0:
        return (f"WorkerDied: the worker process exited with code {exitcode} without reporting a result "
                "(the task or a library it called exited the process)")
    signum = -exitcode
    try:
        name = signal.Signals(signum).name
    except ValueError:
        name = f"signal {signum}"
    description = signal.strsignal(signum) or name
    reason = f"WorkerDied: the worker process was killed by {name} ({description})"
    if signum != signal.SIGKILL:
        return reason
    rose = oom_kills_between(oom_before, oom_after)
    if rose:
        return f"{reason}: the kernel's out-of-memory killer ({'; '.join(rose)})"
    if memory_limit and peak_rss is not None and peak_rss >= 0.8 * memory_limit:
        return (f"{reason}, possibly out of memory (peak resident memory {mib(peak_rss)}, "
                f"memory limit {mib(memory_limit)})")
    return reason
