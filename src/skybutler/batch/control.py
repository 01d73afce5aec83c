"""Controlling a submission from outside its runner: cancel it, mark and find the process that drives it."""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import json
import logging
import os
import signal
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import BatchError
from ..registry import batch_sql
from ..registry.batch_sql import StateChange
from .states import TERMINAL_STATES, FailureClass, JobState

if TYPE_CHECKING:
    from ..butler import Butler

_log = logging.getLogger(__name__)

__all__ = ["RUNNER_FILE", "RUNNER_LOCK", "cancel_submission", "kill_local", "live_runner", "runner_marker"]


def kill_local(attempt_dir: Path) -> None:
    """Kill the runner of an attempt left behind by a dead service, when it runs on this host."""
    try:
        host, pid = (attempt_dir / "job.pid").read_text().split()
    except (OSError, ValueError):
        return
    if host != socket.gethostname():
        return
    with contextlib.suppress(OSError, ValueError):
        number = int(pid)
        # Engines make a job the leader of its own process group: the group takes its
        # quantum workers too (a runner killed alone leaves them running, writing scratch).
        if os.getpgid(number) == number:
            os.killpg(number, signal.SIGKILL)
        else:
            os.kill(number, signal.SIGKILL)


def find_submission(butler: Butler, name: str) -> dict[str, Any]:
    """A submission's row (see `batch_sql.get_submission`); `BatchError` with the way to list them if none."""
    row = batch_sql.get_submission(butler.registry, name)
    if row is None:
        raise BatchError(f"No submission named {name!r} in {butler.root}; `skybutler batch status` lists them")
    return row


def cancel_submission(butler: Butler, name: str) -> int:
    """Ask for a submission to be cancelled; returns the number of jobs that were not finished.

    The runner driving it (the ``batch submit`` or ``batch restart`` process) notices
    within a second and cancels its jobs through the engine. With no runner alive the
    unfinished jobs are marked cancelled here and their local runners killed.
    """
    row = find_submission(butler, name)
    unfinished = [j for j in batch_sql.jobs(butler.registry, row["id"])
                  if JobState(j["state"]) not in TERMINAL_STATES]
    now = datetime.datetime.now(datetime.UTC)
    changes = [StateChange(kind="submission", id=row["id"], state=JobState.CANCELLED.value, time=now,
                           submission_id=row["id"], detail="batch cancel")]
    if not _runner_alive(Path(row["directory"])):
        for j in unfinished:
            kill_local(Path(j["manifest"]).parent / f"attempt_{j['attempt']}")
            changes.append(StateChange(kind="job", id=j["id"], state=JobState.CANCELLED.value, time=now,
                                       submission_id=row["id"], attempt=j["attempt"], detail="batch cancel",
                                       fields={"failure_class": FailureClass.CANCELLED.value}))
    batch_sql.record_states(butler.registry, changes)
    return len(unfinished)


RUNNER_FILE = "runner.json"
"""Written by the process driving a submission: host and pid, for `cancel_submission`."""


def _runner_alive(directory: Path) -> bool:
    try:
        data = json.loads((directory / RUNNER_FILE).read_text())
    except (OSError, ValueError):
        return False
    if data.get("host") != socket.gethostname():
        return True  # cannot tell: assume it notices the request
    try:
        os.kill(int(data["pid"]), 0)
    except (OSError, ValueError, KeyError):
        return False
    return True


def live_runner(directory: Path) -> str | None:
    """``"process PID on HOST"`` of the process driving the submission in ``directory``, if it may be alive.

    A runner on another host cannot be checked from here and counts as alive.
    """
    if not _runner_alive(directory):
        return None
    data = json.loads((directory / RUNNER_FILE).read_text())
    return f"process {data.get('pid')} on {data.get('host')}"


RUNNER_LOCK = "runner.lock"
"""Locked (``flock``) by the process driving a submission, while it does (see `runner_marker`)."""


@contextlib.contextmanager
def runner_marker(directory: Path) -> Iterator[None]:
    """Mark this process as the one driving the submission while the block runs; `BatchError` if another does.

    The mark that counts is an exclusive lock on `RUNNER_LOCK`, held until the block ends:
    of two processes starting at once exactly one gets it (checking `RUNNER_FILE` and then
    writing it let both through), and the kernel drops it with its process however that
    ends, so a dead runner never blocks a restart. Two runners of one submission would
    each hand the same jobs over and remove, before each new attempt, the files that no
    row names yet: the other runner's, staged out and about to be merged.
    `RUNNER_FILE` says who holds it (for `cancel_submission` and this error).
    """
    lock = open(directory / RUNNER_LOCK, "a")  # noqa: SIM115 - held until the block ends
    try:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise BatchError(f"The submission in {directory} is being run by "
                             f"{live_runner(directory) or 'another process'}; wait for it or `skybutler batch "
                             "cancel` it first") from None
        except OSError as exc:  # a file system without locks (ENOLCK, EOPNOTSUPP): the runner file alone
            _log.warning("Cannot lock %s (%s): two runners started at once would not be told apart",
                         directory / RUNNER_LOCK, exc)
        path = directory / RUNNER_FILE
        path.write_text(json.dumps({"host": socket.gethostname(), "pid": os.getpid()}))
        try:
            yield
        finally:
            with contextlib.suppress(OSError):
                path.unlink()
    finally:
        lock.close()
