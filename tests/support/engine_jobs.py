"""Entry functions for engine tests: a job that does what its "manifest" (a small JSON file) says.

The manifest is ``{"sleep": SECONDS, "stdout": TEXT, "stderr": TEXT, "then": ACTION}``;
ACTION is ``"exit:N"`` (return N), a signal name (``"SIGKILL"``: the job kills
itself), ``"allocate:MiB"`` (allocate and touch that much memory, then return 0),
``"fork_allocate:N:MiB"`` (N child processes each hold that much, then return 0) or
``"raise:MESSAGE"``; ``"ignore_term": true`` makes it ignore SIGTERM. Every job first writes ``attempt_dir/job.pid`` ("HOST PID", as the
runner does) and ``attempt_dir/times`` (start and end, ``time.time()``).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import time
from pathlib import Path

ENTRY = "support.engine_jobs:job"


def write_manifest(path: Path, **spec: object) -> Path:
    """Write a test job's manifest; returns its path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(spec))
    return path


def _hold(mib: int) -> bytearray:
    block = bytearray(mib << 20)
    block[:: 4096] = b"x" * len(block[:: 4096])  # touch every page so it is resident
    return block


def job(manifest: str, attempt_dir: str) -> int:
    spec = json.loads(Path(manifest).read_text())
    if spec.get("ignore_term"):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    attempt = Path(attempt_dir)
    attempt.mkdir(parents=True, exist_ok=True)
    (attempt / "job.pid.tmp").write_text(f"{socket.gethostname()} {os.getpid()}\n")
    (attempt / "job.pid.tmp").rename(attempt / "job.pid")  # whole or absent, as the runner writes it
    start = time.time()
    print(spec.get("stdout", ""), flush=True)
    print(spec.get("stderr", ""), file=sys.stderr, flush=True)
    time.sleep(spec.get("sleep", 0))
    then = spec.get("then", "exit:0")
    kind, _, arg = then.partition(":")
    code = 0
    if kind == "exit":
        code = int(arg)
    elif kind == "raise":
        raise RuntimeError(arg)
    elif kind == "allocate":
        _hold(int(arg))
    elif kind == "fork_allocate":
        count, mib = (int(x) for x in arg.split(":"))
        children = []
        for _ in range(count):
            pid = os.fork()
            if pid == 0:
                held = _hold(mib)
                time.sleep(30)
                os._exit(len(held) and 0)
            children.append(pid)
        time.sleep(30)
    else:
        os.kill(os.getpid(), getattr(signal, kind))
    (attempt / "times").write_text(f"{start} {time.time()}\n")
    return code
