"""Datasets and their file rows into PostgreSQL in one round trip: what keeps a put at two.

Through SQLAlchemy a put on PostgreSQL was six network round trips (run lookup, clash
check, BEGIN, two INSERTs, COMMIT), each ≈ 100 µs on a loopback server plus the
driver's and SQLAlchemy's share. Here the transaction's BEGIN and one statement go to
the server together (libpq's pipeline mode, one Sync), and the caller's COMMIT is
the second round trip. The statement's CTEs insert:

- the run, when the put is its first (``INSERT ... WHERE NOT EXISTS``: no sequence
  value is spent on a run that exists);
- the datasets, their run found by name in the same statement; a put's one row travels
  as one typed value per column, more rows as one typed array per column (``unnest``),
  so the statement's text depends only on its shape: it is prepared on its first use in
  a session, and 10 or 10,000 rows are the same single statement. The unique
  constraints do the clash check (``ON CONFLICT DO NOTHING ... RETURNING id``): a clash
  aborts nothing, so the caller names the stored dataset in the same transaction, and
  a writer racing on the same dataset is waited for by the server, never missed;
- their file rows, for the datasets the statement inserted.

One statement instead of three saved a put ~30 % of the registry's CPU (psycopg's
work per statement in a pipeline, a cursor each, SQLAlchemy's events). The statement
goes out on libpq's connection (psycopg's ``pgconn``), its values dumped by psycopg's
adapters: BEGIN, the statement (and its PREPARE, the first time) and the Sync leave in
one write, where psycopg's pipeline wrote each message on its own and polled between
them. That cost a put ~30 µs more CPU and, on a loopback server, ~80 µs more time
waiting (the server woke for each message). The caller raises on any dataset not
inserted, rolling all of it back. Raw psycopg is used only here and for COPY
(`skybutler.registry._bulk`); its errors become SQLAlchemy's (`sa.exc.IntegrityError`,
``connection_invalidated`` on a lost connection) and SQLAlchemy's
``before/after_cursor_execute`` events see each statement, so callers and listeners see
one kind of statement.
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

__all__ = ["PgInsertResult", "insert_datasets_pg", "insert_new_rows_pg", "run_raw"]

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


@dataclass(frozen=True)
class _Sql:
    """A statement's text with ``$n`` placeholders, and the names of its parameters in that order."""

    text: str
    encoded: bytes
    names: tuple[str, ...]


class _Placeholders:
    """``$1``, ``$2``, ... by parameter name, numbered in order of first use (a name used twice is one parameter)."""

    def __init__(self) -> None:
        self.names: dict[str, str] = {}

    def __call__(self, name: str) -> str:
        placeholder = self.names.get(name)
        if placeholder is None:
            placeholder = self.names[name] = f"${len(self.names) + 1}"
        return placeholder


def _pyformat(name: str) -> str:
    """psycopg's placeholder of a binary parameter, for a statement run on its cursor."""
    return f"%({name})b"


def _unnest(table: sa.Table, columns: Sequence[str], prefix: str, param: Callable[[str], str]) -> str:
    """``unnest($1::TYPE[], ...) AS alias(a, ...)``: rows from one typed array per column.

    ``param`` gives the placeholder of the parameter named ``prefix + column``.
    """
    quote = _DIALECT.identifier_preparer.quote
    # Binary parameters: psycopg writes text arrays element by element with a regex each.
    arrays = ", ".join(f"{param(prefix + n)}::{table.c[n].type.compile(dialect=_DIALECT)}[]" for n in columns)
    return f"unnest({arrays}) AS {prefix.rstrip('_')}({', '.join(quote(n) for n in columns)})"


def _one_row(table: sa.Table, columns: Sequence[str], prefix: str, param: Callable[[str], str]) -> str:
    """``(VALUES ($1::TYPE, ...)) AS alias(a, ...)``: one row from one typed value per column.

    A put's single row: psycopg's array dumpers are Python, ~3 µs per array where a
    scalar costs ~0.5 µs, and a put sends a dozen.
    """
    quote = _DIALECT.identifier_preparer.quote
    values = ", ".join(f"{param(prefix + n)}::{table.c[n].type.compile(dialect=_DIALECT)}" for n in columns)
    return f"(VALUES ({values})) AS {prefix.rstrip('_')}({', '.join(quote(n) for n in columns)})"


def _statement(conn: sa.Connection, tables: Tables, dimensions: Sequence[str], *, one: bool, create_run: bool,
               files: bool) -> _Sql:
    """The SQL of the run, dataset and file inserts as one statement, for datasets with these dimension columns.

    ``one``: the parameters are one row's values, not one array per column. The run a
    ``created`` CTE inserts is found by the dataset INSERT through its RETURNING (all
    CTEs see the snapshot the statement began with); the result is one ``(id, run_id)``
    row per dataset inserted and, when the run was created, ``(NULL, run id)``.
    """
    quote = _DIALECT.identifier_preparer.quote
    param = _Placeholders()
    d, f = tables.dataset, tables.file
    dataset, file, collection = (_qualified(conn, t) for t in (d, f, tables.collection))
    rows = _one_row if one else _unnest
    run = CollectionType.RUN.value
    name = f"{param('run')}::{tables.collection.c.name.type.compile(dialect=_DIALECT)}"
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
        f"SELECT c.id, {', '.join('r.' + quote(n) for n in row_columns)} FROM {rows(d, row_columns, 'r_', param)} "
        "CROSS JOIN c ON CONFLICT DO NOTHING RETURNING id, run_id)")
    if files:
        # Only for datasets inserted: with a clash the caller rolls everything back anyway.
        ctes.append(
            f"filed AS (INSERT INTO {file} ({', '.join(_FILE_COLUMNS)}) "
            f"SELECT {', '.join('f.' + n for n in _FILE_COLUMNS)} FROM {rows(f, _FILE_COLUMNS, 'f_', param)} "
            "WHERE f.dataset_id IN (SELECT id FROM inserted))")
    result = "SELECT id, run_id FROM inserted"
    if create_run:
        result += " UNION ALL SELECT NULL, id FROM created"
    text = f"WITH {', '.join(ctes)} {result}"
    return _Sql(text, text.encode(), tuple(param.names))


def insert_datasets_pg(conn: sa.Connection, tables: Tables, run: str, rows: Sequence[dict[str, Any]],
                       dimensions: Sequence[str], files: Sequence[Any], *, create_run: bool,
                       statements: dict[str, Any]) -> PgInsertResult:
    """Insert datasets of one run and their file records in one round trip, in ``conn``'s transaction.

    ``rows`` hold ``id, dataset_type_id, data_id_key`` and the ``dimensions`` columns;
    ``files`` are `FileRecord` values. ``create_run`` registers the run when no collection
    has its name. When no transaction is open yet, its BEGIN is sent in the same round
    trip (`_execute`). ``statements`` caches the SQL by its shape.
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
    returned = _execute(conn, statement, [params[n] for n in statement.names])
    return PgInsertResult({i: r for i, r in returned if i is not None}, any(i is None for i, _ in returned))


class _Session:
    """What `_execute` keeps for one server session: psycopg's adapters for its values, the statements it prepared.

    Kept in the pooled connection's ``info``, which SQLAlchemy empties when it replaces
    the connection (a new session has prepared nothing).
    """

    __slots__ = ("prepared", "transformer")

    def __init__(self, dbapi_conn: Any):
        from psycopg.adapt import Transformer

        self.transformer = Transformer(dbapi_conn)
        self.prepared: dict[tuple[bytes, Any], bytes] = {}


def _execute(conn: sa.Connection, sql: _Sql, values: Sequence[Any]) -> list[tuple[Any, ...]]:
    """The rows of ``sql`` run with ``values`` on ``conn``'s libpq connection; BEGIN first when no transaction is open.

    One write and one wait, in libpq's pipeline mode: BEGIN (unless a transaction is open
    or the connection is in autocommit), the statement's PREPARE the first time this
    session runs it with values of these types (see `_exchange`), the statement, the
    Sync. The server is then in the transaction block BEGIN opened, and so is psycopg
    (its transaction status is read from libpq): every later statement on the connection
    is in it until the caller's COMMIT or ROLLBACK. Values are dumped in binary and rows loaded by psycopg's
    adapters, as its cursor does; prepared statements are keyed, as psycopg keys its own,
    by the text and the parameter types (an ``int`` is sent as the smallest integer type
    holding it). Errors are SQLAlchemy's (`run_raw`); a connection left half way through
    the exchange (interrupted) is invalidated, never used again.
    """
    pooled = conn.connection
    dbapi_conn: Any = pooled.dbapi_connection
    session = pooled.info.get(_SESSION)
    if session is None:
        session = pooled.info[_SESSION] = _Session(dbapi_conn)

    def work(dbapi_conn: Any) -> list[tuple[Any, ...]]:
        # A cursor only for listeners (they may ask it for its connection): the statement does not use one.
        listened = bool(conn.dispatch.before_cursor_execute or conn.dispatch.after_cursor_execute)
        cursor = dbapi_conn.cursor() if listened else None
        try:
            if listened:
                conn.dispatch.before_cursor_execute(conn, cursor, sql.text, values, None, False)
            rows = _exchange(conn, dbapi_conn, session, sql, values)
            if listened:
                conn.dispatch.after_cursor_execute(conn, cursor, sql.text, values, None, False)
            return rows
        finally:
            if cursor is not None:
                cursor.close()

    return run_raw(conn, sql.text, work)  # type: ignore[no-any-return]


def _exchange(conn: sa.Connection, dbapi_conn: Any, session: _Session, sql: _Sql,
              values: Sequence[Any]) -> list[tuple[Any, ...]]:
    """`_execute`'s round trip on ``dbapi_conn``'s libpq connection.

    The statement is prepared only in a transaction the exchange begins: psycopg
    deallocates every prepared statement of a session when it forgets its own (after a
    ROLLBACK, a DROP, ... on a connection where it prepared some), ours with them. Found
    gone, the statement fails and aborts the transaction, which then holds nothing but
    our BEGIN: it is rolled back and the statement prepared again. In a transaction
    already open (a second chunk of a large insert, an insert inside a caller's
    transaction), a failure would abort the caller's work: the statement is sent
    unprepared (parsed and planned each time, ~0.1 ms of the server's time for a put's).
    """
    from psycopg import errors
    from psycopg.adapt import PyFormat

    pgconn = dbapi_conn.pgconn
    tx = session.transformer
    params = tx.dump_sequence(values, [PyFormat.BINARY] * len(values))
    types, formats = tx.types, tx.formats
    begin = pgconn.transaction_status == _IDLE and not dbapi_conn.autocommit
    prepared = session.prepared if begin else {}
    key = (sql.encoded, types)
    while True:
        name = prepared.get(key)
        prepare = b"skybutler_%d" % len(prepared) if begin and name is None and len(prepared) < _PREPARED else None
        results = _pipeline(conn, dbapi_conn, begin, prepare, name or prepare, sql, params, types, formats)
        if prepare is not None and results[int(begin)].status == _COMMAND_OK:
            prepared[key] = prepare  # even if the statement failed: a PREPARE outlives its transaction
        error = next((r for r in results if r.status == _FATAL_ERROR), None)  # any after it were skipped
        if error is not None and name is not None and error.error_field(_SQLSTATE) == _NO_SUCH_STATEMENT:
            prepared.clear()  # all of them: deallocated together
            dbapi_conn.rollback()
            continue
        break
    if error is not None:
        raise errors.error_from_result(error, encoding=dbapi_conn.info.encoding)
    statement = results[-2]
    if statement.status != _TUPLES_OK:
        raise errors.InterfaceError(f"Unexpected result {statement.status} from {sql.text[:40]!r}...")
    tx.set_pgresult(statement)
    return tx.load_rows(0, statement.ntuples, tuple)  # type: ignore[no-any-return]


def _pipeline(conn: sa.Connection, dbapi_conn: Any, begin: bool, prepare: bytes | None, name: bytes | None,
              sql: _Sql, params: Sequence[Any], types: Any, formats: Any) -> list[Any]:
    """The results of BEGIN, PREPARE, the statement and a Sync sent in one write (pipeline mode), the Sync's last.

    BEGIN only when ``begin``, the PREPARE only of a ``prepare`` name; the statement runs
    as prepared under ``name``, or unnamed when there is none. The non-blocking I/O is
    psycopg's own (its ``generators``, C in its binary package), as for its cursors, and
    ``Connection.wait`` waits as it does for them (cancelling the query on Ctrl-C).
    """
    from psycopg import generators

    pgconn = dbapi_conn.pgconn
    pgconn.enter_pipeline_mode()
    try:
        if begin:
            pgconn.send_query_params(b"BEGIN", None)
        if prepare is not None:
            pgconn.send_prepare(prepare, sql.encoded, types)
        if name is None:
            pgconn.send_query_params(sql.encoded, params, types, formats, _BINARY_ROWS)
        else:
            pgconn.send_query_prepared(name, params, formats, _BINARY_ROWS)
        pgconn.pipeline_sync()  # writes all of it, unless the socket's buffer is full:
        dbapi_conn.wait(generators.send(pgconn))  # then the rest, as the server reads
        results: list[Any] = []
        while not results or results[-1].status != _PIPELINE_SYNC:
            results.extend(dbapi_conn.wait(generators.fetch_many(pgconn)))
        pgconn.exit_pipeline_mode()
    except BaseException as exc:
        _leave_pipeline(conn, pgconn, exc)
        raise
    return results


def _leave_pipeline(conn: sa.Connection, pgconn: Any, exc: BaseException) -> None:
    """After ``exc`` in `_exchange`: leave pipeline mode, or invalidate ``conn`` when results are still due.

    Interrupted (Ctrl-C) before the Sync came back, the session's state is unknown: its
    connection is closed and never used again (the server rolls back what it began).
    """
    try:
        if pgconn.pipeline_status:
            pgconn.exit_pipeline_mode()  # refused while results are due
    except Exception:
        conn.invalidate(exc if isinstance(exc, Exception) else None)


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
                                 f"FROM {_unnest(table, columns, 'r_', _pyformat)} ON CONFLICT DO NOTHING "
                                 f"RETURNING {quote(returning)}")
    params = {f"r_{n}": [r[n] for r in rows] for n in columns}

    def work(dbapi_conn: Any) -> list[Any]:
        with dbapi_conn.cursor() as cursor:
            conn.dispatch.before_cursor_execute(conn, cursor, sql, params, None, False)
            cursor.execute(sql, params)
            conn.dispatch.after_cursor_execute(conn, cursor, sql, params, None, False)
            return [row[0] for row in cursor.fetchall()]

    return list(run_raw(conn, sql, work))


_SESSION = "skybutler_pg_session"
_PREPARED = 64
"""Statements `_execute` prepares at most per session (shapes x parameter types: a handful in practice)."""
# psycopg's and libpq's constants, without importing psycopg on SQLite.
_BINARY_ROWS = 1  # psycopg.pq.Format.BINARY
_IDLE = 0  # psycopg.pq.TransactionStatus.IDLE
_COMMAND_OK, _TUPLES_OK, _FATAL_ERROR, _PIPELINE_SYNC = 1, 2, 7, 10  # psycopg.pq.ExecStatus
_SQLSTATE = 67  # psycopg.pq.DiagnosticField.SQLSTATE
_NO_SUCH_STATEMENT = b"26000"  # invalid_sql_statement_name: "prepared statement ... does not exist"
