"""Run a transfer between two repositories in a process that SIGKILLs itself at a chosen point.

``python -m support.transfer_kill POINT N SOURCE_REPO DEST_REPO COLLECTION`` transfers every
dataset of COLLECTION in batches of 4 datasets, with POINT one of:

``file``
    The process dies right after placing its N-th file (files of the batch placed, no
    row of that batch written).
``rows``
    The N-th batch kills the process when it sends its first file row to SQLite: inside
    the batch's transaction, after its dataset rows, before its commit.

Without a POINT (``none``) the transfer runs to its end and prints the report.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import sys
import threading

POINTS = ("file", "rows", "none")


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def install(point: str, n: int) -> None:
    from skybutler.transfer import _import_datasets

    lock = threading.Lock()
    count = [0]
    if point == "file":
        real = _import_datasets.place_file

        def place_then_die(*args, **kwargs):
            placed = real(*args, **kwargs)
            with lock:
                count[0] += 1
                if count[0] == n:
                    _die()
            return placed

        _import_datasets.place_file = place_then_die
    elif point == "rows":
        import sqlalchemy as sa

        real_insert = _import_datasets.DatasetWriter._insert

        def counting_insert(self, todo):
            count[0] += 1
            return real_insert(self, todo)

        _import_datasets.DatasetWriter._insert = counting_insert  # type: ignore[method-assign]

        def trace(statement: str) -> None:
            if count[0] == n and statement.lstrip().upper().startswith(('INSERT INTO "FILE"', "INSERT INTO FILE")):
                _die()

        @sa.event.listens_for(sa.pool.Pool, "connect")
        def _connect(dbapi_connection, record) -> None:
            if isinstance(dbapi_connection, sqlite3.Connection):
                dbapi_connection.set_trace_callback(trace)
    elif point != "none":
        raise SystemExit(f"unknown kill point {point!r}; choose one of {POINTS}")


def transfer(source_root: str, dest_root: str, collection: str):
    """The transfer this module's process runs (and dies in): every dataset of ``collection``, batches of 4.

    Returns the `TransferReport`; the test calls it in its own process for the run that is not killed.
    """
    from skybutler import Butler
    from skybutler.transfer import RegistrySource, import_content

    with Butler(source_root, writeable=False) as source, Butler(dest_root) as target:
        return import_content(target, RegistrySource(source, collections=[collection], batch_size=4), workers=2)


def main(argv: list[str]) -> None:
    point, n, source_root, dest_root, collection = argv
    install(point, int(n))
    print(transfer(source_root, dest_root, collection))


if __name__ == "__main__":
    main(sys.argv[1:])
