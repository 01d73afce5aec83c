"""The database under a registry: engine, transactions, read connections, prebuilt statements."""

from __future__ import annotations

import contextlib
import os
import select
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import sqlalchemy as sa

from ..config import redact_url
from ..errors import ReadOnlyError
from ._db import count_changes, keep_postgresql_statistics
from ._pg_insert import run_raw
from ._sqlite_raw import execute_raw


class Database:
    """One registry database (SQLite or PostgreSQL) and how the registry talks to it.

    Every write goes through `transaction` (which enforces read-only); reads take a
    connection from `read`, which is the open write transaction's when there is one,
    so a read inside a write sees that write's rows.

    Parameters
    ----------
    engine
        From `skybutler.registry._db.make_engine`.
    url
        The SQLAlchemy URL the engine was made from (named in errors, password redacted).
    writeable
        False makes every `transaction` raise `ReadOnlyError`.
    """

    def __init__(self, engine: sa.Engine, url: str, *, writeable: bool = True):
        self.engine = engine
        self.url = url
        self._pid = os.getpid()
        self.writeable = writeable
        self._local = threading.local()
        # Statements of the per-call hot paths (one put, one get, one find), built once:
        # building a SELECT costs ~60 µs of Python, executing a prebuilt one ~15 µs.
        self._statements: dict[str, Any] = {}
        self._raw_statements: dict[str, str] = {}
        # Queries run by `rows_raw`: compiled SQL by statement shape (False: one it leaves to SQLAlchemy).
        self._shapes: dict[Any, Any] = {}
        # On a SQLite file each thread keeps the connection of its write transactions (see
        # `_writer`): checking one out of the pool and returning it cost a put as much as its
        # two INSERTs. On PostgreSQL a few are kept for any thread (`_pg_transaction`).
        self._keeps_writers = self.dialect == "sqlite" and not isinstance(engine.pool, sa.pool.StaticPool)
        self._writers: dict[int, tuple[threading.Thread, int, sa.Connection]] = {}
        self._writers_lock = threading.Lock()
        # PostgreSQL connections in autocommit kept for one-statement reads (`read_one`), and
        # others kept for write transactions, with the process that made them and when they
        # were last returned.
        self._idle_readers: list[tuple[int, float, sa.Connection]] = []
        self._idle_writers: list[tuple[int, float, sa.Connection]] = []
        self._inherited: list[sa.Connection] = []
        # Those of a connection for writing as made (`_writer`, `_idle_writer`).
        self._write_options = engine.get_execution_options().union({"write": True})

    @property
    def dialect(self) -> str:
        """``"sqlite"`` or ``"postgresql"``."""
        return self.engine.dialect.name

    def close(self) -> None:
        with self._writers_lock:
            kept = [conn for _, pid, conn in self._writers.values() if pid == os.getpid()]
            self._writers.clear()
        for conn in kept:
            conn.close()
        self.close_kept_connections()
        checkpointer = getattr(self.engine, "skybutler_checkpointer", None)
        if checkpointer is not None:
            checkpointer.close()
        # In a forked process the pool still holds its parent's connections: dropped, not
        # closed (closing one ends the parent's session on the server).
        self.engine.dispose(close=os.getpid() == self._pid)

    def close_kept_connections(self) -> None:
        """Close the PostgreSQL connections kept between calls: `read_one`'s and the write transactions'.

        A parent process's are left alone: closing them would end its sessions.
        """
        for kept in (self._idle_readers, self._idle_writers):
            while kept:
                pid, _, conn = kept.pop()
                if pid == os.getpid():
                    conn.close()

    def _writer(self) -> sa.Connection:
        """This thread's connection for write transactions on SQLite, kept from one transaction to the next.

        Made on a thread's first write; one that was invalidated or closed (or left in a
        transaction by a failed rollback, or given other execution options) is replaced.
        Those of threads that have ended are closed when another thread makes its own,
        and all of them by `close`. A forked process makes its own and leaves its
        parent's alone.
        """
        thread, pid = threading.current_thread(), os.getpid()
        kept = self._writers.get(thread.ident or 0)
        if kept is not None and kept[0] is thread and kept[1] == pid:
            conn = kept[2]
            if not (conn.closed or conn.invalidated or conn.in_transaction()) and \
                    conn.get_execution_options() == self._write_options:
                return conn
        conn = self.engine.connect().execution_options(write=True)
        with self._writers_lock:
            gone = [key for key, (t, p, _) in self._writers.items() if p == pid and not t.is_alive()]
            stale = [self._writers.pop(key)[2] for key in gone]
            if kept is not None and kept[1] == pid:
                stale.append(kept[2])
            self._writers[thread.ident or 0] = (thread, pid, conn)
        for old in stale:
            with contextlib.suppress(sa.exc.SQLAlchemyError):
                old.close()
        return conn

    def statement(self, name: str, build: Callable[[], Any]) -> Any:
        """A statement with bind parameters, built by ``build`` on first use and kept (tables never change)."""
        stmt = self._statements.get(name)
        if stmt is None:
            stmt = self._statements[name] = build()
        return stmt

    @staticmethod
    def count_changes(conn: sa.Connection, rows: int) -> None:
        """Note that ``rows`` rows were written to the ``dataset`` and ``file`` tables through ``conn``.

        After enough of them a commit refreshes PostgreSQL's planner statistics
        (`skybutler.registry._db.keep_postgresql_statistics`); SQLite counts its own.
        """
        count_changes(conn, rows)

    def raw_statements(self) -> dict[str, str]:
        """SQL text of the raw psycopg hot paths, kept by shape (see `skybutler.registry._pg_insert`)."""
        return self._raw_statements

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sa.Connection]:
        """One write transaction; nested calls join the outer one.

        Raises `ReadOnlyError` on a database opened read-only: every write goes through here.
        """
        if not self.writeable:
            raise ReadOnlyError(f"Registry {redact_url(self.url)} was opened read-only")
        active = getattr(self._local, "conn", None)
        if active is not None:
            yield active
            return
        if self._keeps_writers:
            yield from self._in_kept_transaction(self._writer())
            return
        if self.dialect == "postgresql":
            yield from self._pg_transaction()
            return
        with self.engine.connect().execution_options(write=True) as conn:
            yield from self._in_transaction(conn)

    def _pg_transaction(self) -> Iterator[sa.Connection]:
        """`transaction` on PostgreSQL: on a connection kept between transactions, begun and ended on psycopg's.

        A put's transaction through the pool and SQLAlchemy's transaction object (checkout,
        begin, commit, checkin and its reset) cost it ~26 µs more CPU, of ~320 µs (one-per-call
        puts on tmpfs, loopback server). Up to `_IDLE_WRITERS` connections are kept, for any
        thread, as `read_one` keeps its readers: threads beyond take pooled ones, and no
        number of threads holds more of the pool than that. One that was lost, left in a
        transaction or with execution options changed, or idle for `_READER_IDLE_SECONDS`
        is closed, not used; one the server has written to while it was idle (a session
        ended by the server, `pg_terminate_backend` or an idle timeout, says so before it
        closes) is closed before it is used, so the call that would have used it does not
        fail. A forked process makes its own and leaves its parent's alone.
        """
        conn = self._idle_writer()
        try:
            yield from self._in_kept_transaction(conn)
            # Committed: statistics are refreshed outside the write transaction (SQLite
            # does it inside, see `_db.keep_sqlite_statistics`).
            keep_postgresql_statistics(conn)
        finally:
            self._keep_writer(conn)

    def _idle_writer(self) -> sa.Connection:
        """A kept connection for `_pg_transaction`, or a new one (one the server ended while idle is replaced)."""
        return self._take_kept(self._idle_writers, lambda: self.engine.connect().execution_options(write=True),
                               probe=True)

    def _take_kept(self, kept: list[tuple[int, float, sa.Connection]], make: Callable[[], sa.Connection], *,
                   probe: bool) -> sa.Connection:
        """A connection from ``kept`` (`read_one`'s or the write transactions'), or ``make()``'s when none will do.

        A parent process's connections are set aside, never used nor closed (closed they
        would end its sessions, dropped they would go back to the pool and to this process's
        statements). One closed, lost, idle longer than `_READER_IDLE_SECONDS` or, with
        ``probe``, whose session the server ended (`_server_spoke`) is discarded.
        """
        pid, now = os.getpid(), time.monotonic()
        while True:
            try:
                owner, since, conn = kept.pop()
            except IndexError:
                return make()
            if owner != pid:
                self._inherited.append(conn)
                continue
            if conn.closed or conn.invalidated or now - since > _READER_IDLE_SECONDS or (probe and _server_spoke(conn)):
                _discard(conn)
                continue
            return conn

    def _keep_writer(self, conn: sa.Connection) -> None:
        """Keep ``conn`` for the next `_pg_transaction` if it is idle and there is room, else close it."""
        try:
            # Execution options are the connection's own once set (a streamed read inside the
            # transaction sets ``yield_per``): one that has other options than a new one is not kept.
            idle = not (conn.closed or conn.invalidated or conn.in_transaction()) and \
                conn.get_execution_options() == self._write_options and \
                conn.connection.dbapi_connection.pgconn.transaction_status == _IDLE  # type: ignore[union-attr]
        except sa.exc.SQLAlchemyError:
            idle = False
        _put_back(conn, self._idle_writers, _IDLE_WRITERS, idle)

    def _in_transaction(self, conn: sa.Connection) -> Iterator[sa.Connection]:
        """The body of `transaction` on ``conn``: begin, hand it out, commit (or roll back on an error)."""
        with conn.begin():
            self._enter(conn)
            try:
                yield conn
            finally:
                self._leave()

    def _enter(self, conn: sa.Connection) -> None:
        """Make ``conn`` this thread's open write transaction (which `read` and nested `transaction` join)."""
        self._local.conn = conn
        # Collection rows read in this transaction (a put reads its run twice); any write
        # to the collection table empties it (`forget_collections`).
        self._local.collections = {}

    def _leave(self) -> None:
        self._local.conn = None
        self._local.collections = None

    def _in_kept_transaction(self, conn: sa.Connection) -> Iterator[sa.Connection]:
        """`_in_transaction` on a kept connection, begun and ended on its DB-API connection.

        SQLAlchemy's transaction object (begin, commit, their bookkeeping) cost a put on
        SQLite more than its two INSERTs. The engine's ``begin`` and ``commit`` events still
        run here, as SQLAlchemy runs them: on SQLite the ``begin`` listener issues the BEGIN
        IMMEDIATE (`_db.make_engine`) and the ``commit`` one keeps the statistics, and
        listeners added by others (tests that fail a commit) see every commit. On
        PostgreSQL nothing is sent at the beginning: psycopg begins the transaction with the
        first statement, or `_pg_insert` sends BEGIN with its own. A statement run through
        ``conn.execute`` inside makes SQLAlchemy begin its own record of the transaction;
        it is then ended through SQLAlchemy, which commits or rolls back the same one. A
        failed COMMIT is SQLAlchemy's error, as through it: ``connection_invalidated`` says
        the connection was lost (and it is invalidated).
        """
        dbapi: Any = conn.connection.dbapi_connection
        conn.dispatch.begin(conn)
        self._enter(conn)
        try:
            yield conn
        except BaseException:
            self._leave()
            try:
                if conn.in_transaction():
                    conn.rollback()
                else:
                    conn.dispatch.rollback(conn)
                    dbapi.rollback()
            except Exception as exc:  # never hide the error that made us roll back; a broken connection is replaced
                conn.invalidate(exc)
            raise
        self._leave()
        if conn.in_transaction():
            conn.commit()
            return
        try:
            conn.dispatch.commit(conn)
            run_raw(conn, "COMMIT", _commit)
        except BaseException:
            if not conn.invalidated:
                try:
                    dbapi.rollback()
                except Exception as err:
                    conn.invalidate(err)
            raise

    @contextlib.contextmanager
    def read(self, *, autocommit: bool = False) -> Iterator[sa.Connection]:
        """A connection for reading (the active write transaction's, if any).

        ``autocommit=True`` is for a few small statements: they then run without an
        explicit transaction (autocommit on PostgreSQL, no BEGIN on SQLite), saving a
        statement or two per call. A streamed query may use it: its result opens a
        transaction for the server-side cursor itself when the result turns out large
        (`_query_results.row_chunks`).
        """
        active = getattr(self._local, "conn", None)
        if active is not None:
            yield active
            return
        with self.engine.connect() as conn:
            if autocommit:
                conn = conn.execution_options(
                    **({"isolation_level": "AUTOCOMMIT"} if self.dialect == "postgresql" else {"autocommit": True}))
            yield conn

    @contextlib.contextmanager
    def read_one(self) -> Iterator[sa.Connection]:
        """A connection for the few statements of one small read in autocommit (a get's file record, a find).

        `read` with ``autocommit=True``, but on PostgreSQL from a few connections kept
        between calls instead of the pool: checking one out, switching it to autocommit
        and back, and returning it cost a get as much CPU as the rest of it (~40 µs of
        ~110). The body must not hold the connection past its statements (no streaming).
        At most `_IDLE_READERS` are kept, so threads beyond take pooled ones; one left
        busy (a read interrupted half way) is closed, one idle for `_READER_IDLE_SECONDS` is closed rather than
        used (servers may drop idle sessions), one that was invalidated (a lost
        connection) is replaced, and a forked process makes its own and leaves its
        parent's alone.
        """
        if self.dialect != "postgresql" or getattr(self._local, "conn", None) is not None:
            with self.read(autocommit=True) as conn:
                yield conn
            return
        conn = self._idle_reader()
        try:
            yield conn
        finally:
            self._keep_reader(conn)

    def _keep_reader(self, conn: sa.Connection) -> None:
        """Keep ``conn`` for the next `read_one` if it is idle and there is room, else close it."""
        try:
            # Not idle: a result left half read (a read interrupted), or a transaction begun.
            idle = not (conn.closed or conn.invalidated) and \
                conn.connection.dbapi_connection.pgconn.transaction_status == _IDLE  # type: ignore[union-attr]
        except sa.exc.SQLAlchemyError:
            idle = False
        if idle and conn.in_transaction():  # SQLAlchemy's record of a statement it ran: no transaction in autocommit
            conn.rollback()
        _put_back(conn, self._idle_readers, _IDLE_READERS, idle)

    def _idle_reader(self) -> sa.Connection:
        """A kept autocommit connection for `read_one`, or a new one."""
        return self._take_kept(
            self._idle_readers, lambda: self.engine.connect().execution_options(isolation_level="AUTOCOMMIT"),
            probe=False)

    def first_row_raw(self, conn: sa.Connection, name: str, build: Callable[[], Any],
                      params: dict[str, Any]) -> tuple[Any, ...] | None:
        """The first row of the statement ``build()`` (kept as ``name``), run on ``conn``'s DB-API cursor.

        For the one-row reads of PostgreSQL's hot paths (a find): the SQL is compiled once,
        with the namespace written in, and runs on psycopg's cursor, skipping SQLAlchemy's
        per-execution work (the namespace's substitution, the execution context, the result
        wrapper: more than the round trip). Values come back as psycopg gives them (no
        result processors: select columns psycopg already returns as Python wants them).
        ``params`` are named as the statement's bind parameters; errors are SQLAlchemy's.
        """
        sql = self._raw_statements.get(name)
        if sql is None:
            namespace = conn.get_execution_options().get("schema_translate_map")
            sql = self._raw_statements[name] = str(build().compile(
                dialect=conn.dialect, schema_translate_map=namespace, render_schema_translate=bool(namespace)))
        return execute_raw(conn, sql, params, _fetch_one)  # type: ignore[no-any-return]

    def rows_raw(self, conn: sa.Connection, stmt: sa.Select) -> list[tuple[Any, ...]] | None:
        """Every row of the query ``stmt``, run unprepared on ``conn``'s psycopg cursor (PostgreSQL).

        For the small queries of the hot paths (a visit's datasets): SQLAlchemy's execution
        (the cache key and compiled-cache lookup aside) cost twice the statement's own
        driver work. The SQL is compiled once per statement shape, which SQLAlchemy's cache
        key names (the statement without its bound values); each call binds its own values.
        Values come back as psycopg gives them (no result processors), as for `first_row_raw`.

        Unprepared, so the server plans each query for its values: psycopg prepares a
        statement run five times, and PostgreSQL then keeps a generic plan when its
        estimate looks cheaper, which for a query with a ``LIMIT`` parameter it does
        (scanning the whole run for one visit's rows: 0.8 instead of 0.15 ms at 10,000
        datasets, growing with the run).

        Returns None for a statement whose parameters need SQLAlchemy's processing
        (expanding lists, literal values, types converted on the way in): the caller runs
        it through SQLAlchemy.
        """
        key = stmt._generate_cache_key()
        if key is None:
            return None
        shape = self._shapes.get(key.key)
        if shape is None:
            if len(self._shapes) >= _SHAPES:
                self._shapes.clear()
            shape = self._shapes[key.key] = _compiled_shape(conn, stmt, key)
        if shape is False:
            return None
        params = shape.construct_params(extracted_parameters=key.bindparams)
        return execute_raw(conn, shape.string, params, _fetch_all, prepare=False)  # type: ignore[no-any-return]

    def insert_new(self, table: sa.Table) -> Any:
        """``INSERT ... ON CONFLICT DO NOTHING``: rows whose unique keys exist are left out, never an error."""
        if self.dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert as pg_insert

            return pg_insert(table).on_conflict_do_nothing()
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        return sqlite_insert(table).on_conflict_do_nothing()

    def transaction_collections(self) -> dict[str, Any] | None:
        """Collection rows by name read in the open write transaction (None outside one)."""
        return getattr(self._local, "collections", None)

    def lock_table(self, conn: sa.Connection, table: sa.Table, mode: str) -> None:
        """Take PostgreSQL's ``LOCK TABLE table IN mode MODE`` in ``conn``'s write transaction, until it ends.

        ``mode`` is ``"SHARE"`` (no writer of the table runs beside it, committed or not),
        ``"SHARE ROW EXCLUSIVE"`` (nor another holder of this mode: changes of the table
        made one at a time) or ``"ROW EXCLUSIVE"`` (what any writer of the table takes, here
        taken early: holders of the other two are waited for, and wait). Readers are never kept out. Nothing on SQLite, whose write
        transaction keeps out every other writer already.
        """
        if mode not in _LOCK_MODES:
            raise ValueError(f"lock_table takes a mode of {_LOCK_MODES}, not {mode!r}")
        if self.dialect != "postgresql":
            return
        quote = conn.dialect.identifier_preparer.quote
        namespace = (conn.get_execution_options().get("schema_translate_map") or {}).get(None)
        prefix = f"{quote(namespace)}." if namespace else ""
        conn.execute(sa.text(f"LOCK TABLE {prefix}{quote(table.name)} IN {mode} MODE"))

    def forget_collections(self) -> None:
        """Empty `transaction_collections` (before any write to the collection table)."""
        cache = getattr(self._local, "collections", None)
        if cache:
            cache.clear()


@contextlib.contextmanager
def unprepared(conn: sa.Connection) -> Iterator[None]:
    """Statements run on ``conn`` (PostgreSQL) meanwhile are never prepared: each is planned for its own values.

    For queries whose best plan depends on their values (see `Database.rows_raw`).
    """
    dbapi: Any = conn.connection.dbapi_connection
    threshold = dbapi.prepare_threshold
    dbapi.prepare_threshold = None
    try:
        yield
    finally:
        dbapi.prepare_threshold = threshold


_IDLE_READERS = 2
"""Connections `Database.read_one` keeps at most (out of the engine's pool of 5, and 10 more on demand)."""

_LOCK_MODES = ("SHARE", "SHARE ROW EXCLUSIVE", "ROW EXCLUSIVE")
"""The modes `Database.lock_table` takes."""

_IDLE_WRITERS = 2
"""Connections `Database.transaction` keeps at most on PostgreSQL (as many again as `_IDLE_READERS`)."""

_IDLE = 0
"""psycopg.pq.TransactionStatus.IDLE: no transaction, no command in progress."""

_READER_IDLE_SECONDS = 300.0
"""A kept reader idle longer than this is closed, not used: well within any server's idle timeout."""

_SHAPES = 256
"""Query shapes `Database.rows_raw` keeps compiled (all forgotten when full: shapes are few, a where clause's values are not part of one)."""


def _put_back(conn: sa.Connection, kept: list[tuple[int, float, sa.Connection]], room: int, idle: bool) -> None:
    """Keep ``conn`` in ``kept`` (with this process and the time) if it is ``idle`` and fewer than ``room`` are kept, else close it."""
    if not idle or len(kept) >= room:
        with contextlib.suppress(sa.exc.SQLAlchemyError):
            conn.close()
        return
    kept.append((os.getpid(), time.monotonic(), conn))


def _discard(conn: sa.Connection) -> None:
    """Close ``conn`` and its DB-API connection, which may be dead: not given back to the pool for another call to find so."""
    with contextlib.suppress(sa.exc.SQLAlchemyError):
        if not (conn.closed or conn.invalidated):
            conn.invalidate()
        conn.close()


def _commit(dbapi_conn: Any) -> None:
    dbapi_conn.commit()


def _server_spoke(conn: sa.Connection) -> bool:
    """Whether the server sent something on ``conn``, idle between transactions (or its socket is gone).

    Nothing is due on an idle session: what arrives is the server's notice that it ended
    the session (and its end of the socket), which psycopg would read only at the next
    statement, failing it. One poll of the socket, no round trip.
    """
    try:
        poll = select.poll()
        poll.register(conn.connection.dbapi_connection.pgconn.socket, select.POLLIN)  # type: ignore[union-attr]
        return bool(poll.poll(0))
    except Exception:  # no socket: closed or broken
        return True


def _fetch_one(cursor: Any) -> tuple[Any, ...] | None:
    return cursor.fetchone()  # type: ignore[no-any-return]


def _fetch_all(cursor: Any) -> list[tuple[Any, ...]]:
    return cursor.fetchall()  # type: ignore[no-any-return]


def _compiled_shape(conn: sa.Connection, stmt: sa.Select, key: Any) -> Any:
    """``stmt`` compiled for ``conn``'s dialect with the namespace written in, or False if `rows_raw` cannot run it.

    Kept with the cache key it was compiled from, so that the bound values of a later
    statement of the same shape take their places (``construct_params``).
    """
    dialect = conn.dialect
    namespace = conn.get_execution_options().get("schema_translate_map")
    compiled = stmt.compile(dialect=dialect, cache_key=key, schema_translate_map=namespace,
                            render_schema_translate=bool(namespace))
    for bind in compiled.binds.values():
        if bind.expanding or bind.literal_execute or bind.type.dialect_impl(dialect).bind_processor(dialect):
            return False
    return compiled
