"""Bulk writes for the registry's hot paths: one executemany, fast on SQLite too; times as stored.

`execute_many` is what `skybutler.registry.batch_sql` writes 10^5 rows with; it takes
any Core statement and rows of parameters.
"""

from __future__ import annotations

import datetime
import functools
from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.sql.compiler import SQLCompiler

__all__ = ["BATCH", "execute_many", "now_utc", "utc"]

BATCH = 10_000
"""Rows per executemany: bounds the parameter lists held at once."""


def utc(value: Any) -> Any:
    """A datetime as naive UTC (anything else unchanged)."""
    if isinstance(value, datetime.datetime) and value.tzinfo is not None:
        return value.astimezone(datetime.UTC).replace(tzinfo=None)
    return value


def now_utc() -> datetime.datetime:
    """The time now, as naive UTC (how the registry stores times)."""
    return datetime.datetime.now(datetime.UTC).replace(tzinfo=None)


def execute_many(conn: sa.Connection, stmt: Any, rows: Sequence[Mapping[str, Any]], *,
                 insert: bool = False) -> int:
    """Execute ``stmt`` once per row (executemany, in batches); returns the rows affected.

    ``insert`` says ``stmt`` is an INSERT of a table's columns named by the rows' keys
    (``sa.insert(table)``); otherwise its parameters are named bind parameters.

    On SQLite the statement is compiled once and the rows go to the DB-API as tuples,
    converted by the columns' own SQLAlchemy types (so stored values are what the
    registry writes everywhere else): SQLAlchemy's per-row parameter handling costs
    several times the insert itself at 10^5 rows. PostgreSQL takes SQLAlchemy's
    multi-row INSERTs ("insertmanyvalues") and psycopg's pipelined executemany.
    """
    if not rows:
        return 0
    done = 0
    if conn.dialect.name != "sqlite":
        for i in range(0, len(rows), BATCH):
            done += max(conn.execute(stmt, list(rows[i:i + BATCH])).rowcount, 0)
        return done
    dialect = conn.dialect
    compiled = stmt.compile(dialect=dialect, column_keys=list(rows[0]) if insert else None)
    assert isinstance(compiled, SQLCompiler)
    names = list(compiled.positiontup or ())
    processors = []
    for i, n in enumerate(names):
        kind = compiled.binds[n].type
        process = kind.dialect_impl(dialect).bind_processor(dialect)
        if process is not None:
            # Formatting a datetime as SQLite text costs ~10 µs; a batch of changes shares a few times.
            processors.append((i, functools.lru_cache(maxsize=1024)(process)
                               if isinstance(kind, sa.DateTime) else process))
    sql = str(compiled)
    for start in range(0, len(rows), BATCH):
        params = [[r[n] for n in names] for r in rows[start:start + BATCH]]
        for i, process in processors:
            for values in params:
                values[i] = process(values[i])
        done += max(conn.exec_driver_sql(sql, [tuple(v) for v in params]).rowcount, 0)
    return done
