"""Arrow record batches straight from the database through ADBC (the optional ``arrow-db`` extra).

``adbc-driver-postgresql`` reads a result into Arrow arrays in C, without a Python
object per row or per value (through a binary ``COPY``). The query tables of
`skybutler.registry._query_arrow` use it for results too large for the DB-API's tuples
to be cheap, read outside a write transaction (the other connection would not see its
rows). The SQL is the statement SQLAlchemy already compiled and executed for the first
rows, with the parameters it sent, so its schema translation and bind processing hold.

Never on SQLite. ``adbc-driver-sqlite`` carries its own copy of SQLite, and two copies
of SQLite in one process must never open the same database: neither sees the other's
connections or locks (POSIX locks belong to the process, and closing any descriptor
of a file drops them all). Closing its connection, ADBC's copy took itself for the last
one and deleted the WAL and its shared-memory file under this process's open
connections: every commit after a SQLite query table then went into a deleted WAL and
was lost, silently (a put returned its ref, no other process ever saw the dataset), and
the next connection failed with "disk I/O error" or the process died of SIGBUS
(`tests/registry/test_query_results.py`). SQLite's query tables are built from the
DB-API's rows, column-wise (`_query_arrow`).

Connections. An ADBC PostgreSQL connection reads the server's type catalogue when it opens, tens of
milliseconds of CPU: a few idle ones are kept per database URL and process, as
SQLAlchemy's pool keeps its own, in autocommit mode (an idle one holds no snapshot and
no lock), and closed at exit. A process forked with some open leaves them to its parent.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib
import os
import threading
from collections.abc import Iterator
from typing import Any

import sqlalchemy as sa

__all__ = ["open_reader", "reader_errors", "usable"]

_IDLE_PER_URL = 2
"""Idle ADBC PostgreSQL connections kept per database URL."""


def _driver() -> Any:
    try:
        return importlib.import_module("adbc_driver_postgresql.dbapi")
    except ImportError:
        return None


def usable(conn: sa.Connection, url: str) -> bool:
    """Whether `open_reader` can read for ``conn`` (see the module docstring)."""
    if conn.get_execution_options().get("write") or conn.in_nested_transaction():
        return False
    return conn.dialect.name == "postgresql" and conn.dialect.driver == "psycopg" and _driver() is not None


class _PostgresPool:
    """Idle ADBC PostgreSQL connections of this process, by URI."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.pid = os.getpid()
        self.idle: dict[str, list[Any]] = {}
        self.inherited: list[Any] = []

    @contextlib.contextmanager
    def connection(self, uri: str) -> Iterator[Any]:
        with self.lock:
            if self.pid != os.getpid():
                # Closing a parent's connection from a child would end the parent's session:
                # keep them unused (and unclosed) instead.
                self.inherited += [c for conns in self.idle.values() for c in conns]
                self.idle, self.pid = {}, os.getpid()
            idle = self.idle.setdefault(uri, [])
            conn = idle.pop() if idle else None
        if conn is None:
            conn = _driver().connect(uri, autocommit=True)
        try:
            yield conn
        except BaseException:
            conn.close()  # its state is unknown after a failure
            raise
        with self.lock:
            if self.pid == os.getpid() and len(self.idle.setdefault(uri, [])) < _IDLE_PER_URL:
                self.idle[uri].append(conn)
                return
        conn.close()

    def close(self) -> None:
        with self.lock:
            if self.pid == os.getpid():
                for conns in self.idle.values():
                    for conn in conns:
                        with contextlib.suppress(Exception):
                            conn.close()
            self.idle = {}


_POOL = _PostgresPool()
atexit.register(_POOL.close)


def reader_errors() -> tuple[type[BaseException], ...]:
    """What a failed ADBC read raises (connecting, preparing, reading the first batch)."""
    errors: list[type[BaseException]] = []
    with contextlib.suppress(ImportError):
        import adbc_driver_manager

        errors.append(adbc_driver_manager.Error)
    with contextlib.suppress(ImportError):
        import psycopg

        errors.append(psycopg.Error)
    return tuple(errors)


def _postgres_uri(url: str) -> str:
    return sa.make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def _literal_sql(conn: sa.Connection, sql: str, params: Any) -> str:
    """The statement with its parameters written in by psycopg itself (ADBC's COPY takes no parameters)."""
    import psycopg

    dbapi_conn: Any = conn.connection.dbapi_connection
    return psycopg.ClientCursor(dbapi_conn).mogrify(sql, params)


def open_reader(conn: sa.Connection, url: str, sql: str, params: Any, batch_rows: int) -> Iterator[Any] | None:
    """The record batches of ``sql`` (as executed on ``conn`` with ``params``), read by ADBC; None where it cannot be.

    Batches are read as they are asked for (``batch_rows`` is the DB-API path's size).
    """
    if not usable(conn, url):
        return None
    return _read_postgres(_postgres_uri(url), _literal_sql(conn, sql, params))


def _read_postgres(uri: str, sql: str) -> Iterator[Any]:
    with _POOL.connection(uri) as adbc, adbc.cursor() as cursor:
        cursor.execute(sql)
        yield from cursor.fetch_record_batch()
