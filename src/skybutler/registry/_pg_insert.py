"""Datasets and their file rows into PostgreSQL in one round trip: what keeps a put at two.

Through SQLAlchemy a put on PostgreSQL was six network round trips (run lookup, clash
check, BEGIN, two INSERTs, COMMIT), each ≈ 100 µs on a loopback server plus the
driver's and SQLAlchemy's share. Here the transaction's BEGIN and one statement go to
the server together (psycopg's pipeline mode, one Sync), and the caller's COMMIT is
the second round trip. The statement's CTEs insert:

- the run, when the put is its first (``INSERT ... WHERE NOT EXISTS``: no sequence
  value is spent on a run that exists);
- the datasets, their run found by name in the same statement; a put's one row travels
  as one typed value per column, more rows as one typed array per column (``unnest``),
  so the statement's text depends only on its shape: psycopg prepares it after a few
  uses, and 10 or 10,000 rows are the same single statement. The unique constraints do
  the clash check (``ON CONFLICT DO NOTHING ... RETURNING id``): a clash aborts
  nothing, so the caller names the stored dataset in the same transaction, and a
  writer racing on the same dataset is waited for by the server, never missed;
- their file rows, for the datasets the statement inserted.

One statement instead of three saved a put ~30 % of the registry's CPU (psycopg's
work per statement in a pipeline, a cursor each, SQLAlchemy's events). The caller
raises on any dataset not inserted, rolling all of it back. Raw psycopg is used only
here and for COPY (`skybutler.registry._bulk`); its errors become SQLAlchemy's
(`sa.exc.IntegrityError`, ``connection_invalidated`` on a lost connection) and
SQLAlchemy's ``before/after_cursor_execute`` events see each statement, so callers and
listeners see one kind of statement.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from ..model import CollectionType
from .schema import Tables

__all__ = ["PgInsertResult", "insert_datasets_pg", "insert_new_rows_pg", "restore_autocommit", "run_raw"]

_DIALECT = postgresql.dialect()  # type: ignore[no-untyped-call]
_FILE_COLUMNS = ("dataset_id", "path", "size", "checksum", "checksum_algorithm", "format")


@dataclass(frozen=True)
class PgInsertResult:
    """What `insert_datasets_pg` did.

    ``inserted`` maps the ids of the datasets inserted to their run's id (those left
    out clashed with stored datasets, or the run is missing or not a RUN: nothing is
    inserted then). ``created_run`` says the run was registered by this call.
    """

    inserted: dict[uuid.UUID, int]
    created_run: bool


def run_raw(conn: sa.Connection, statement: str, work: Callable[[Any], Any]) -> Any:
    """Run ``work(dbapi_connection)`` on ``conn``'s psycopg connection, with SQLAlchemy's error handling.

    A psycopg error becomes the matching `sa.exc.DBAPIError` (``IntegrityError``, ...);
    one that means the connection is lost invalidates it (the pool reconnects) and says
    so in ``connection_invalidated``, as it would through ``conn.execute``.
    """
    dbapi_conn = conn.connection.dbapi_connection
    try:
        return work(dbapi_conn)
    except conn.dialect.loaded_dbapi.Error as exc:
        lost = conn.dialect.is_disconnect(exc, dbapi_conn, None)
        if lost:
            conn.invalidate(exc)
        raise sa.exc.DBAPIError.instance(statement, None, exc, conn.dialect.loaded_dbapi.Error,
                                         connection_invalidated=lost, dialect=conn.dialect) from exc


def _qualified(conn: sa.Connection, table: sa.Table) -> str:
    namespace = (conn.get_execution_options().get("schema_translate_map") or {}).get(table.schema)
    name = _DIALECT.identifier_preparer.quote(table.name)
    return f"{_DIALECT.identifier_preparer.quote(namespace)}.{name}" if namespace else name


def _unnest(table: sa.Table, columns: Sequence[str], prefix: str) -> str:
    """``unnest(%(p_a)s::TYPE[], ...) AS alias(a, ...)``: rows from one typed array per column."""
    quote = _DIALECT.identifier_preparer.quote
    # Binary parameters (%b): psycopg writes text arrays element by element with a regex each.
    arrays = ", ".join(f"%({prefix}{n})b::{table.c[n].type.compile(dialect=_DIALECT)}[]" for n in columns)
    return f"unnest({arrays}) AS {prefix.rstrip('_')}({', '.join(quote(n) for n in columns)})"


def _one_row(table: sa.Table, columns: Sequence[str], prefix: str) -> str:
    """``(VALUES (%(p_a)s::TYPE, ...)) AS alias(a, ...)``: one row from one typed value per column.

    A put's single row: psycopg's array dumpers are Python, ~3 µs per array where a
    scalar costs ~0.5 µs, and a put sends a dozen.
    """
    quote = _DIALECT.identifier_preparer.quote
    values = ", ".join(f"%({prefix}{n})b::{table.c[n].type.compile(dialect=_DIALECT)}" for n in columns)
    return f"(VALUES ({values})) AS {prefix.rstrip('_')}({', '.join(quote(n) for n in columns)})"


def _statement(conn: sa.Connection, tables: Tables, dimensions: Sequence[str], *, one: bool, create_run: bool,
               files: bool) -> str:
    """The SQL of the run, dataset and file inserts as one statement, for datasets with these dimension columns.

    ``one``: the parameters are one row's values, not one array per column. The run a
    ``created`` CTE inserts is found by the dataset INSERT through its RETURNING (all
    CTEs see the snapshot the statement began with); the result is one ``(id, run_id)``
    row per dataset inserted and, when the run was created, ``(NULL, run id)``.
    """
    quote = _DIALECT.identifier_preparer.quote
    d, f = tables.dataset, tables.file
    dataset, file, collection = (_qualified(conn, t) for t in (d, f, tables.collection))
    rows = _one_row if one else _unnest
    run = CollectionType.RUN.value
    name = f"%(run)s::{tables.collection.c.name.type.compile(dialect=_DIALECT)}"
    ctes = []
    run_ids = f"SELECT id FROM {collection} WHERE name = {name} AND type = '{run}'"
    if create_run:
        ctes.append(f"created AS (INSERT INTO {collection} (name, type) SELECT {name}, '{run}' "
                    f"WHERE NOT EXISTS (SELECT FROM {collection} WHERE name = {name}) ON CONFLICT DO NOTHING "
                    "RETURNING id)")
        run_ids += " UNION ALL SELECT id FROM created"
    ctes.append(f"c AS ({run_ids})")
    row_columns = ["id", "dataset_type_id", "data_id_key", *dimensions]
    listed = ", ".join(quote(n) for n in row_columns)
    ctes.append(
        f"inserted AS (INSERT INTO {dataset} (run_id, {listed}) "
        f"SELECT c.id, {', '.join('r.' + quote(n) for n in row_columns)} FROM {rows(d, row_columns, 'r_')} "
        "CROSS JOIN c ON CONFLICT DO NOTHING RETURNING id, run_id)")
    if files:
        # Only for datasets inserted: with a clash the caller rolls everything back anyway.
        ctes.append(
            f"filed AS (INSERT INTO {file} ({', '.join(_FILE_COLUMNS)}) "
            f"SELECT {', '.join('f.' + n for n in _FILE_COLUMNS)} FROM {rows(f, _FILE_COLUMNS, 'f_')} "
            "WHERE f.dataset_id IN (SELECT id FROM inserted))")
    result = "SELECT id, run_id FROM inserted"
    if create_run:
        result += " UNION ALL SELECT NULL, id FROM created"
    return f"WITH {', '.join(ctes)} {result}"


def insert_datasets_pg(conn: sa.Connection, tables: Tables, run: str, rows: Sequence[dict[str, Any]],
                       dimensions: Sequence[str], files: Sequence[Any], *, create_run: bool,
                       statements: dict[str, Any]) -> PgInsertResult:
    """Insert datasets of one run and their file records in one round trip, in ``conn``'s transaction.

    ``rows`` hold ``id, dataset_type_id, data_id_key`` and the ``dimensions`` columns;
    ``files`` are `FileRecord` values. ``create_run`` registers the run when no collection
    has its name. When no transaction is open yet, its BEGIN is sent in the same round
    trip. ``statements`` caches the SQL text by its shape.
    """
    one = len(rows) == 1 and len(files) <= 1
    key = (f"datasets|{','.join(dimensions)}|{one}|{create_run}|{bool(files)}|"
           f"{conn.get_execution_options().get('schema_translate_map')}")
    statement = statements.get(key)
    if statement is None:
        statement = statements[key] = _statement(conn, tables, dimensions, one=one, create_run=create_run,
                                                 files=bool(files))
    params: dict[str, Any]
    if one:
        row = rows[0]
        params = {"run": run, "r_id": row["id"], "r_dataset_type_id": row["dataset_type_id"],
                  "r_data_id_key": row["data_id_key"]}
        for n in dimensions:
            params[f"r_{n}"] = row.get(n)
        for f in files:
            params.update({f"f_{n}": getattr(f, n) for n in _FILE_COLUMNS})
    else:
        params = {"run": run, "r_id": [r["id"] for r in rows],
                  "r_dataset_type_id": [r["dataset_type_id"] for r in rows],
                  "r_data_id_key": [r["data_id_key"] for r in rows]}
        for n in dimensions:
            params[f"r_{n}"] = [r.get(n) for r in rows]
        if files:
            params.update({f"f_{n}": [getattr(f, n) for f in files] for n in _FILE_COLUMNS})

    def work(dbapi_conn: Any) -> list[tuple[Any, int]]:
        with dbapi_conn.cursor() as cursor:
            conn.dispatch.before_cursor_execute(conn, cursor, statement, params, None, False)
            if dbapi_conn.pgconn.transaction_status == _IDLE and not dbapi_conn.autocommit and _pipelines_supported():
                # psycopg syncs its own implicit BEGIN, a round trip of its own even in a pipeline;
                # with autocommit on it sends none, and ours goes with the statement. The
                # server is then in a transaction block: every later statement on the
                # connection is in it until the caller's COMMIT or ROLLBACK, after which
                # `restore_autocommit` turns autocommit off again.
                dbapi_conn.autocommit = True
                conn.info[_RESTORE] = True
                with dbapi_conn.pipeline():  # leaving it sends both with one Sync and waits once
                    cursor.execute("BEGIN")
                    cursor.execute(statement, params)
            else:
                cursor.execute(statement, params)
            conn.dispatch.after_cursor_execute(conn, cursor, statement, params, None, False)
            return cursor.fetchall()

    returned = run_raw(conn, statement, work)
    return PgInsertResult({i: r for i, r in returned if i is not None}, any(i is None for i, _ in returned))


def insert_new_rows_pg(conn: sa.Connection, table: sa.Table, rows: Sequence[Mapping[str, Any]], returning: str,
                       statements: dict[str, Any]) -> list[Any]:
    """``INSERT ... ON CONFLICT DO NOTHING RETURNING returning`` of rows with the same keys, as one statement.

    The rows travel as one typed array per column (``unnest``), as the datasets do in
    `insert_datasets_pg`: one statement of constant text instead of SQLAlchemy's
    multi-row INSERTs with a parameter per value. Returns the ``returning`` column of
    the rows inserted (those whose unique keys existed are left out).
    """
    columns = list(rows[0])
    key = f"new|{table.name}|{','.join(columns)}|{returning}|{conn.get_execution_options().get('schema_translate_map')}"
    sql = statements.get(key)
    if sql is None:
        quote = _DIALECT.identifier_preparer.quote
        listed = ", ".join(quote(n) for n in columns)
        sql = statements[key] = (f"INSERT INTO {_qualified(conn, table)} ({listed}) SELECT {listed} "
                                 f"FROM {_unnest(table, columns, 'r_')} ON CONFLICT DO NOTHING RETURNING {quote(returning)}")
    params = {f"r_{n}": [r[n] for r in rows] for n in columns}

    def work(dbapi_conn: Any) -> list[Any]:
        with dbapi_conn.cursor() as cursor:
            conn.dispatch.before_cursor_execute(conn, cursor, sql, params, None, False)
            cursor.execute(sql, params)
            conn.dispatch.after_cursor_execute(conn, cursor, sql, params, None, False)
            return [row[0] for row in cursor.fetchall()]

    return list(run_raw(conn, sql, work))


def restore_autocommit(conn: sa.Connection) -> None:
    """After a transaction that `insert_datasets_pg` began: turn psycopg's autocommit off again.

    A connection where that fails (lost meanwhile) is invalidated, never pooled with
    autocommit on.
    """
    try:
        if not conn.info.pop(_RESTORE, False):
            return
    except sa.exc.SQLAlchemyError:  # invalidated during the transaction: closed and never pooled again
        return
    try:
        conn.connection.dbapi_connection.autocommit = False  # type: ignore[union-attr]
    except Exception as exc:
        conn.invalidate(exc)


_RESTORE = "skybutler_restore_autocommit"
_IDLE = 0  # psycopg.pq.TransactionStatus.IDLE, without importing psycopg on SQLite
_PIPELINES: list[bool] = []


def _pipelines_supported() -> bool:
    if not _PIPELINES:
        import psycopg

        _PIPELINES.append(psycopg.Pipeline.is_supported())
    return _PIPELINES[0]
