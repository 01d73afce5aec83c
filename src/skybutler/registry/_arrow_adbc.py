"""Arrow tables straight from SQLite through ADBC (the optional ``arrow-db`` extra).

``adbc-driver-sqlite`` reads a result into Arrow arrays in C, without a Python object
per row or per value: at 10,000 refs it fetches in a third to a quarter of the time
the ``sqlite3`` module needs to make its row tuples (see benchmarks/README.md). The
query tables of `skybutler.registry._query_results` use it when it is installed and
the registry is a SQLite file read outside a write transaction; the statement is the
one SQLAlchemy compiles for the iterator, with its parameters converted by the
columns' own SQLAlchemy types. Otherwise, or when the statement cannot be handed over
(a parameter SQLAlchemy would expand at execution), the DB-API path is used.
"""

from __future__ import annotations

import binascii
from typing import Any

import sqlalchemy as sa

from ._db import sqlite_file

__all__ = ["fetch_sqlite_table", "ids_from_hex", "usable"]


def _driver() -> Any:
    try:
        import adbc_driver_sqlite.dbapi
    except ImportError:
        return None
    return adbc_driver_sqlite.dbapi


def usable(conn: sa.Connection, url: str) -> bool:
    """Whether `fetch_sqlite_table` can read for ``conn``: see there."""
    return (conn.dialect.name == "sqlite" and not conn.get_execution_options().get("write")
            and sqlite_file(url) is not None and _driver() is not None)


def fetch_sqlite_table(conn: sa.Connection, url: str, stmt: sa.Select) -> Any:
    """The rows of ``stmt`` as a `pyarrow.Table` read by ADBC, or None where ADBC cannot be used.

    ``conn`` is the connection the query was planned on: inside a write transaction
    (``write`` execution option) another connection would not see its rows, and an
    in-memory database has no file another connection could open.
    """
    if not usable(conn, url):
        return None
    path, driver = sqlite_file(url), _driver()
    dialect = conn.dialect
    compiled = stmt.compile(dialect=dialect, compile_kwargs={"render_postcompile": True})
    params = compiled.construct_params()
    values = []
    for name in compiled.positiontup or ():
        bind = compiled.binds.get(name)
        if bind is None or name not in params:
            return None
        process = bind.type.dialect_impl(dialect).bind_processor(dialect)
        values.append(process(params[name]) if process is not None else params[name])
    try:
        with driver.connect(str(path)) as adbc, adbc.cursor() as cursor:
            cursor.execute(str(compiled), values or None)
            return cursor.fetch_arrow_table()
    except driver.Error:
        # ADBC infers a column's type from its first rows and refuses a later value of
        # another type, where SQLite (and the DB-API path) take it: the slower path answers.
        return None


def ids_from_hex(column: Any) -> bytes | None:
    """The 16-byte ids of a string column of 32-digit hex ids (as SQLite stores UUIDs), read from its buffers.

    None when any value is not 32 characters long (the caller converts them one by one).
    """
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
