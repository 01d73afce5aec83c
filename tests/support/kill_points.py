"""Run the ``skybutler`` command line in a process that SIGKILLs itself at a chosen point of a submission.

``python -m support.kill_points POINT N skybutler-arguments...`` with POINT one of:

``merge``
    The N-th outcome the batch service merges kills the process when it sends its
    first file row to SQLite: inside the merge's transaction, after its dataset rows,
    before its commit.
``merged``
    Merges go one execution per transaction, and the N-th outcome the batch service
    merges kills the process right after its first transaction committed: a merge cut
    between its bounded transactions, part of the job's outcome in the central registry.
``hand_over``
    The process dies right after handing its N-th job to the engine, once that job's
    process has started and before its new state is written (the job runs on,
    orphaned; the registry says pending).
``record``
    The process dies while ``batch submit`` records the quanta of the submission (its
    jobs are recorded, its quanta are not).

A real kill at a chosen point, so that what a restart finds is always the same. Only
SQLite registries see the SQL points (``merge``, ``record``).
"""

from __future__ import annotations

import os
import signal
import sqlite3
import sys
import threading
import time

POINTS = ("merge", "merged", "hand_over", "record")

_state = threading.local()


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _on_sql(trace) -> None:
    """Call ``trace(statement)`` before every SQL statement of every SQLite connection made from now on."""
    import sqlalchemy as sa

    @sa.event.listens_for(sa.pool.Pool, "connect")
    def _connect(dbapi_connection, record) -> None:
        if isinstance(dbapi_connection, sqlite3.Connection):
            dbapi_connection.set_trace_callback(trace)


def _inserts_into(statement: str, table: str) -> bool:
    text = statement.lstrip().upper()
    return text.startswith((f'INSERT INTO "{table.upper()}"', f"INSERT INTO {table.upper()}"))


def install(point: str, n: int) -> None:
    """Make this process die at the ``n``-th ``point`` (see the module docstring)."""
    from skybutler.batch import service

    count = [0]
    lock = threading.Lock()
    if point == "merge":
        real_merge_run = service.merge_run

        def counting_merge_run(*args, **kwargs):
            with lock:
                count[0] += 1
                _state.merge = count[0]
            try:
                return real_merge_run(*args, **kwargs)
            finally:
                _state.merge = None

        _on_sql(lambda sql: _die() if getattr(_state, "merge", None) == n and _inserts_into(sql, "file") else None)
        service.merge_run = counting_merge_run
    elif point == "merged":
        real_merge_run = service.merge_run

        def merge_run_dying_after_a_commit(*args, **kwargs):
            with lock:
                count[0] += 1
                nth = count[0]
            progress = (lambda report: _die()) if nth == n else None
            return real_merge_run(*args, **kwargs, chunk_size=1, progress=progress)

        service.merge_run = merge_run_dying_after_a_commit
    elif point == "hand_over":
        real_hand_over = service.SubmissionRunner._hand_over

        def hand_over_then_die(self, job):
            real_hand_over(self, job)
            count[0] += 1
            if count[0] == n:
                # Once the job's process runs (engines start jobs asynchronously): it is orphaned.
                pid_file = self._attempt_dir(job) / "job.pid"
                deadline = time.monotonic() + 60
                while not pid_file.exists() and time.monotonic() < deadline:
                    time.sleep(0.01)
                _die()

        service.SubmissionRunner._hand_over = hand_over_then_die  # type: ignore[method-assign]
    elif point == "record":
        _on_sql(lambda sql: _die() if _inserts_into(sql, "batch_quantum") else None)
    else:
        raise SystemExit(f"unknown kill point {point!r}; choose one of {POINTS}")


if __name__ == "__main__":
    install(sys.argv[1], int(sys.argv[2]))
    from skybutler.cli import main

    main(sys.argv[3:], prog_name="skybutler")
