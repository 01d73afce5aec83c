"""Arrow record batches straight from the database through ADBC (the optional ``arrow-db`` extra).

``adbc-driver-sqlite`` and ``adbc-driver-postgresql`` read a result into Arrow arrays
in C, without a Python object per row or per value (PostgreSQL's through a binary
``COPY``). Query tables (`skybutler.registry._query_arrow`) and large ref results
(`skybutler.registry._query_results`) use them, read outside a write transaction (the
other connection would not see its rows), from a SQLite file (an in-memory database
has no file another connection could open) or a PostgreSQL server. The SQL is what
SQLAlchemy compiled for the statement, with the parameters it sent or would send
(`Database.compiled`), so its schema translation and bind processing hold.

Connections. A new SQLite one costs about 0.8 ms before its first statement (it reads
and parses the repository's schema: more than reading a visit's datasets), and an ADBC
PostgreSQL connection reads the server's type catalogue when it opens, tens of
milliseconds of CPU. So idle ones are kept per process, as SQLAlchemy's pool keeps its
own, in autocommit mode (an idle one holds no snapshot and no lock), and closed at exit:
a few per PostgreSQL URL; a few SQLite ones in all (a process may open many
repositories), each checked against its file's identity (device, inode) before it is
used again, so a repository made anew at the same path is never read through a
connection to the file it replaced; `Database.close` closes those of its file. A process
forked with some open leaves them to its parent.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import importlib
import os
import threading
from collections.abc import Iterator
from typing import Any

import sqlalchemy as sa

from ._db import sqlite_file

__all__ = ["close_idle", "ids_from_hex", "open_reader", "reader_errors", "usable"]

_IDLE_PER_URL = 2
"""Idle ADBC PostgreSQL connections kept per database URL."""

_SQLITE_BATCH_ROWS = 8192
"""Rows per batch ADBC's SQLite driver reads at most (larger batches are made by the caller).

The driver reserves its arrays for a whole batch before the first row: 65,536 rows of
them cost a visit's query (100 rows) a third more than the DB-API; past a few thousand
rows the size makes no difference to a large read.
"""

_IDLE_SQLITE = 4
"""Idle ADBC SQLite connections kept per process, whatever their files (the least recently used go first)."""


def _driver(dialect: str) -> Any:
    name = "adbc_driver_sqlite.dbapi" if dialect == "sqlite" else "adbc_driver_postgresql.dbapi"
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


@functools.lru_cache(maxsize=64)
def _sqlite_path(url: str) -> str | None:
    """The file of a SQLite URL as ADBC opens it (parsed once per URL: a query asks several times)."""
    path = sqlite_file(url)
    return None if path is None else str(path)


def usable(conn: sa.Connection, url: str) -> bool:
    """Whether `open_reader` can read for ``conn`` (see the module docstring)."""
    dialect = conn.dialect.name
    if conn.get_execution_options().get("write") or conn.in_nested_transaction():
        return False
    if dialect == "sqlite":
        return _sqlite_path(url) is not None and _driver("sqlite") is not None
    return dialect == "postgresql" and conn.dialect.driver == "psycopg" and _driver("postgresql") is not None


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
            conn = _driver("postgresql").connect(uri, autocommit=True)
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


class _SqlitePool:
    """Idle ADBC SQLite connections of this process: ``(path, file identity, connection)``, oldest first."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.pid = os.getpid()
        self.idle: list[tuple[str, tuple[int, int], Any]] = []
        self.inherited: list[Any] = []

    @contextlib.contextmanager
    def connection(self, path: str) -> Iterator[Any]:
        stat = os.stat(path)
        identity = (stat.st_dev, stat.st_ino)
        conn, stale = None, []
        with self.lock:
            if self.pid != os.getpid():
                self.inherited += [c for _, _, c in self.idle]  # see _PostgresPool.connection
                self.idle, self.pid = [], os.getpid()
            for i in range(len(self.idle) - 1, -1, -1):
                if self.idle[i][0] == path:
                    _, kept_identity, kept = self.idle.pop(i)
                    if kept_identity == identity:
                        conn = kept
                        break
                    stale.append(kept)  # the file at this path was replaced
        for old in stale:
            with contextlib.suppress(Exception):
                old.close()
        if conn is None:
            conn = _driver("sqlite").connect(path, autocommit=True)
        try:
            yield conn
        except BaseException:
            conn.close()  # its state is unknown after a failure (or a read left half done)
            raise
        with self.lock:
            if self.pid == os.getpid():
                self.idle.append((path, identity, conn))
                if len(self.idle) <= _IDLE_SQLITE:
                    return
                _, _, conn = self.idle.pop(0)
        conn.close()

    def close(self, path: str | None = None) -> None:
        """Close the idle connections (to ``path`` only, if given); a parent process's are left alone."""
        with self.lock:
            if self.pid != os.getpid():
                self.inherited += [c for _, _, c in self.idle]  # see _PostgresPool.connection
                self.idle, self.pid = [], os.getpid()
                return
            closing = [c for p, _, c in self.idle if path is None or p == path]
            self.idle = [kept for kept in self.idle if path is not None and kept[0] != path]
        for conn in closing:
            with contextlib.suppress(Exception):
                conn.close()


_SQLITE_POOL = _SqlitePool()
atexit.register(_SQLITE_POOL.close)


def close_idle(url: str) -> None:
    """Close the ADBC connections kept idle for the SQLite file of ``url`` (none for other URLs).

    For `Database.close`: a closed repository keeps no file open through them.
    """
    path = _sqlite_path(url)
    if path is not None:
        _SQLITE_POOL.close(path)


def reader_errors() -> tuple[type[BaseException], ...]:
    """What a failed ADBC read raises (connecting, preparing, reading the first batch).

    `OSError` too: a SQLite file gone from its path since it was opened (its identity is checked).
    """
    errors: list[type[BaseException]] = [OSError]
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

    Batches are read as they are asked for. On SQLite, ADBC takes a column's type from
    its first rows and refuses a later value of another type: callers only hand over
    statements whose columns are never NULL and of one type (ids, run ids, dimensions).
    """
    if not usable(conn, url):
        return None
    dialect = conn.dialect.name
    if dialect == "sqlite":
        path = _sqlite_path(url)
        assert path is not None  # usable
        values = list(params) if params else None
        return _read_sqlite(path, sql, values, batch_rows)
    return _read_postgres(_postgres_uri(url), _literal_sql(conn, sql, params))


def _read_sqlite(path: str, sql: str, params: list[Any] | None, batch_rows: int) -> Iterator[Any]:
    with _SQLITE_POOL.connection(path) as adbc:
        cursor = adbc.cursor()
        try:
            rows = min(batch_rows, _SQLITE_BATCH_ROWS)
            cursor.adbc_statement.set_options(**{"adbc.sqlite.query.batch_rows": str(rows)})
            cursor.execute(sql, params)
            reader = cursor.fetch_record_batch()
            try:
                yield from reader
            finally:
                reader.close()  # a read stopped early: the statement is finished before the connection is kept
        finally:
            cursor.close()


def _read_postgres(uri: str, sql: str) -> Iterator[Any]:
    with _POOL.connection(uri) as adbc, adbc.cursor() as cursor:
        cursor.execute(sql)
        yield from cursor.fetch_record_batch()


def ids_from_hex(column: Any) -> bytes | None:
    """The 16-byte ids of a string column of 32-digit hex ids (as SQLite stores UUIDs), read from its buffers.

    None when any value is not 32 characters long (the caller converts them one by one).
    """
    import binascii

    import numpy as np
    import pyarrow as pa

    array = column.combine_chunks() if hasattr(column, "combine_chunks") else column
    if array.null_count or not (pa.types.is_string(array.type) or pa.types.is_large_string(array.type)):
        return None
    n = len(array)
    _, offsets_buffer, data = array.buffers()
    width = np.int64 if pa.types.is_large_string(array.type) else np.int32
    offsets = np.frombuffer(offsets_buffer, dtype=width)[array.offset:array.offset + n + 1]
    if n and not (np.diff(offsets) == 32).all():
        return None
    if n == 0:
        return b""
    return binascii.unhexlify(memoryview(data)[offsets[0]:offsets[-1]])
