"""An import and an export of dumps that SIGKILL their own process midway (tests/transfer/test_dump.py).

Run in a process of their own, forked from a server that preloaded this module (importable
by that process; test modules are not).
"""

from __future__ import annotations

import os
import signal
import sqlite3


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def killed_import(target_root: str, dump: str) -> None:
    """Import ``dump`` into ``target_root`` in batches of 10; die on a dataset row of the third batch.

    SQLite's trace sees each row of an executemany: the 25th row is in the third batch, after
    two committed batches.
    """
    import sqlalchemy as sa

    from skybutler import Butler
    from skybutler.transfer.dump import DumpSource
    from skybutler.transfer.importer import import_content

    seen = [0]

    def trace(statement: str) -> None:
        if statement.lstrip().upper().startswith(('INSERT INTO "DATASET"', "INSERT INTO DATASET ")):
            seen[0] += 1
            if seen[0] == 25:
                _die()

    @sa.event.listens_for(sa.pool.Pool, "connect")
    def connect(dbapi_connection, record) -> None:
        if isinstance(dbapi_connection, sqlite3.Connection):
            dbapi_connection.set_trace_callback(trace)

    with DumpSource(dump, batch_size=10) as source:
        import_content(Butler(target_root), source, transfer="copy")


def killed_export(root: str, destination: str, files: str) -> None:
    """Export every collection of ``root`` to ``destination`` in batches of 5; die when the third batch is read."""
    from skybutler import Butler
    from skybutler.transfer.dump import write_dump
    from skybutler.transfer.source import RegistrySource

    class DyingSource(RegistrySource):
        def datasets(self):
            for n, batch in enumerate(super().datasets()):
                if n == 2:
                    _die()
                yield batch

    butler = Butler(root, writeable=False)
    source = DyingSource(butler, collections=[c["name"] for c in butler.registry.collections()], batch_size=5)
    write_dump(source, destination, files=files)
