"""The statements of a put on SQLite, compiled by SQLAlchemy once and run on the DB-API cursor.

Through ``Connection.execute`` each statement of a put cost about 50 µs of Python on
SQLite (parameter processing, the execution context, the result wrapper) against about
4 µs for the same SQL on the ``sqlite3`` cursor; a put makes three or four. Here
SQLAlchemy still writes the SQL (from the same tables, for the dialect in use) and the
column types still convert the values (their bind processors, applied column-wise): only
the per-call machinery is skipped. The statements run on the connection of the open
SQLAlchemy transaction, inside it; ``sqlite3`` errors become SQLAlchemy's
(`sa.exc.IntegrityError` ...), and the ``before/after_cursor_execute`` events see each
statement, as in `skybutler.registry._pg_insert`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.sql.compiler import SQLCompiler

from ._pg_insert import run_raw

__all__ = ["RawStatement", "count_statement", "execute_raw", "raw_statement", "run_statement"]


class RawStatement:
    """SQL text compiled by SQLAlchemy with positional parameters, and how to convert their values.

    Parameters
    ----------
    sql
        The statement's text, ``?`` for each parameter.
    processors
        For each parameter in order, the column type's bind processor (None: no conversion).
    """

    __slots__ = ("_converted", "processors", "sql")

    def __init__(self, sql: str, processors: Sequence[Callable[[Any], Any] | None]):
        self.sql = sql
        self.processors = tuple(processors)
        self._converted = tuple((i, p) for i, p in enumerate(self.processors) if p is not None)

    def row(self, row: Sequence[Any]) -> tuple[Any, ...]:
        """One row's values converted as `rows` converts them (a put's statements: one row each)."""
        if not self._converted:
            return tuple(row)
        values = list(row)
        for i, process in self._converted:
            value = values[i]
            if value is not None:
                values[i] = process(value)
        return tuple(values)

    def rows(self, rows: Sequence[Sequence[Any]]) -> list[tuple[Any, ...]]:
        """``rows`` (values in parameter order) with each value converted as its column's type does."""
        if not any(self.processors):
            return [tuple(row) for row in rows]
        columns = list(zip(*rows, strict=True))
        for i, process in enumerate(self.processors):
            if process is not None:
                column = columns[i]
                columns[i] = tuple(map(process, column)) if None not in column else tuple(
                    None if v is None else process(v) for v in column)
        return list(zip(*columns, strict=True))


def raw_statement(conn: sa.Connection, statements: dict[str, Any], key: str,
                  build: Callable[[], sa.sql.ClauseElement]) -> RawStatement:
    """The statement ``build()`` compiled for ``conn``'s dialect, kept in ``statements`` under ``key``.

    ``build`` must give a statement whose parameters are all bound values (``bindparam``
    or an INSERT's columns); their values are then given by position, in the order of
    `RawStatement.processors`.
    """
    stmt = statements.get(key)
    if stmt is None:
        compiled = cast(SQLCompiler, build().compile(dialect=conn.dialect))
        names = compiled.positiontup or []
        binds = compiled.binds
        processors = [binds[name].type.bind_processor(conn.dialect) for name in names]
        stmt = statements[key] = RawStatement(str(compiled), processors)
    return stmt  # type: ignore[no-any-return]


def run_statement(conn: sa.Connection, statement: RawStatement, rows: Sequence[Sequence[Any]], *,
                  fetch: bool = False) -> list[tuple[Any, ...]]:
    """Run ``statement`` once per row of ``rows`` (values in parameter order) in ``conn``'s transaction.

    One row runs as ``execute``, several as one ``executemany``. ``fetch`` returns the
    rows the (single) statement selected. Errors are SQLAlchemy's, as through ``conn.execute``.
    """
    return _run(conn, statement, rows, _fetch_all if fetch else _nothing)  # type: ignore[no-any-return]


def count_statement(conn: sa.Connection, statement: RawStatement, rows: Sequence[Sequence[Any]]) -> int:
    """`run_statement` for a write: returns how many rows it changed (inserted, updated, deleted)."""
    return _run(conn, statement, rows, _row_count)  # type: ignore[no-any-return]


def _fetch_all(cursor: Any) -> list[tuple[Any, ...]]:
    return cursor.fetchall()  # type: ignore[no-any-return]


def _nothing(cursor: Any) -> list[tuple[Any, ...]]:
    return []


def _row_count(cursor: Any) -> int:
    return int(cursor.rowcount)


def _run(conn: sa.Connection, statement: RawStatement, rows: Sequence[Sequence[Any]],
         result: Callable[[Any], Any]) -> Any:
    if len(rows) == 1:
        return execute_raw(conn, statement.sql, statement.row(rows[0]), result)
    return execute_raw(conn, statement.sql, statement.rows(rows), result, many=True)


def execute_raw(conn: sa.Connection, sql: str, values: Any, result: Callable[[Any], Any], *,
                many: bool = False, prepare: bool | None = None) -> Any:
    """Run ``sql`` with ``values`` on ``conn``'s DB-API cursor and return ``result(cursor)``.

    The statement runs in ``conn``'s transaction (or none); the ``before/after_cursor_execute``
    events see it and the driver's errors become SQLAlchemy's (`run_raw`), as through
    ``conn.execute``. Any dialect: ``sql`` in its parameter style, ``many`` for ``executemany``.
    ``prepare`` (psycopg only) is passed to ``execute``: False never prepares the statement.
    """
    def work(dbapi_conn: Any) -> Any:
        cursor = dbapi_conn.cursor()
        try:
            conn.dispatch.before_cursor_execute(conn, cursor, sql, values, None, many)
            if many:
                cursor.executemany(sql, values)
            elif prepare is None:
                cursor.execute(sql, values)
            else:
                cursor.execute(sql, values, prepare=prepare)
            conn.dispatch.after_cursor_execute(conn, cursor, sql, values, None, many)
            return result(cursor)
        finally:
            cursor.close()

    return run_raw(conn, sql, work)
