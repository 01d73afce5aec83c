"""Bulk writes for the registry's hot paths: one executemany, fast on SQLite too; times as stored.

`skybutler.registry.batch_sql` writes 10^5 rows with these: `insert_rows` for plain
inserts (COPY on PostgreSQL), `execute_many` for any Core statement and rows of its
parameters (updates, inserts with expressions).
"""

from __future__ import annotations

import datetime
import functools
import itertools
from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.sql.compiler import SQLCompiler

__all__ = ["BATCH", "execute_many", "insert_rows", "now_utc", "update_rows", "utc"]

BATCH = 10_000
"""Rows per executemany: bounds the parameter lists held at once."""

_SCRATCH = itertools.count()  # names of temporary tables, unique within a process
_FEW = 100  # rows below which an update on PostgreSQL is an executemany, not a temporary table


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


def insert_rows(conn: sa.Connection, table: sa.Table, rows: Sequence[Mapping[str, Any]]) -> int:
    """Insert rows that all have the same keys into ``table``; returns how many.

    PostgreSQL gets them by ``COPY ... FROM STDIN`` (several times a multi-row INSERT's
    speed at 10^5 rows), SQLite by `execute_many`. Both inside the connection's transaction.
    """
    if not rows:
        return 0
    if conn.dialect.name != "postgresql":
        return execute_many(conn, sa.insert(table), rows, insert=True)
    from psycopg import sql

    columns = list(rows[0])
    namespace = (conn.get_execution_options().get("schema_translate_map") or {}).get(table.schema)
    name = sql.Identifier(namespace, table.name) if namespace else sql.Identifier(table.name)
    statement = sql.SQL("COPY {} ({}) FROM STDIN").format(name, sql.SQL(", ").join(map(sql.Identifier, columns)))
    cursor = conn.connection.cursor()
    try:
        with cursor.copy(statement) as copy:
            for row in rows:
                copy.write_row([row[c] for c in columns])
    finally:
        cursor.close()
    return len(rows)


def update_rows(conn: sa.Connection, table: sa.Table, key: str, rows: Sequence[Mapping[str, Any]]) -> int:
    """Set the columns named by the rows' keys in the row of ``table`` whose ``key`` is ``row[key]``.

    Every row has the same keys and names each row of the table at most once. Returns
    how many rows of the table were updated. PostgreSQL copies the rows into a temporary
    table and runs one ``UPDATE ... FROM`` (an executemany of single-row updates costs a
    statement per row there); SQLite, and PostgreSQL for fewer than 100 rows, run an
    executemany of one UPDATE.
    """
    if not rows:
        return 0
    columns = [c for c in rows[0] if c != key]
    # A few rows (a service polling every few seconds) are cheaper without a temporary table.
    if conn.dialect.name != "postgresql" or len(rows) < _FEW:
        stmt = sa.update(table).where(table.c[key] == sa.bindparam("k__")).values(
            {c: sa.bindparam(f"v__{c}") for c in columns})
        return execute_many(conn, stmt, [{"k__": r[key], **{f"v__{c}": r[c] for c in columns}} for r in rows])
    from psycopg import sql

    namespace = (conn.get_execution_options().get("schema_translate_map") or {}).get(table.schema)
    target = sql.Identifier(namespace, table.name) if namespace else sql.Identifier(table.name)
    scratch = sql.Identifier(f"bulk_{table.name}_{next(_SCRATCH)}")
    names = [key, *columns]
    listed = sql.SQL(", ").join(map(sql.Identifier, names))
    cursor = conn.connection.cursor()
    try:
        # Types from the table itself, without its constraints (a partial row is no row of it).
        cursor.execute(sql.SQL("CREATE TEMPORARY TABLE {} ON COMMIT DROP AS SELECT {} FROM {} WITH NO DATA")
                       .format(scratch, listed, target))
        with cursor.copy(sql.SQL("COPY {} ({}) FROM STDIN").format(scratch, listed)) as copy:
            for row in rows:
                copy.write_row([row[c] for c in names])
        cursor.execute(sql.SQL("UPDATE {} AS t SET {} FROM {} AS s WHERE t.{} = s.{}").format(
            target, sql.SQL(", ").join(sql.SQL("{} = s.{}").format(sql.Identifier(c), sql.Identifier(c))
                                       for c in columns),
            scratch, sql.Identifier(key), sql.Identifier(key)))
        updated = cursor.rowcount
        cursor.execute(sql.SQL("DROP TABLE {}").format(scratch))
    finally:
        cursor.close()
    return updated
