"""Opening databases: URLs, SQLite pragmas, PostgreSQL schemas, clear connection errors."""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from ..config import redact_url
from ..errors import ConfigError, DatabaseConnectionError, RepositoryDamagedError, RepositoryNotFoundError
from ._checkpoint import INLINE_PAGES, WAKE_AFTER_ROWS, WalCheckpointer

SUPPORTED_SCHEMES = ("sqlite", "postgresql")
"""Database kinds a registry runs on (a URL may name a driver: ``postgresql+psycopg://``)."""

_log = logging.getLogger(__name__)

_SQLITE_MAGIC = b"SQLite format 3\x00"

ANALYZE_AFTER_ROWS = 1000
"""Rows a connection changes between two looks at whether the planner's statistics are stale."""

_ANALYSIS_LIMIT = 1000
"""Rows SQLite's ANALYZE samples per index: its cost hardly grows with the tables (26 ms at 10^5 datasets)."""


def normalise_url(url: str, root: str | Path | None = None) -> str:
    """Turn a user URL into a SQLAlchemy URL (relative SQLite paths are under ``root``).

    Raises `ConfigError` for a URL of a database skybutler does not run on.
    """
    scheme = url.split("://", 1)[0].split("+", 1)[0] if "://" in url else ""
    if scheme not in (*SUPPORTED_SCHEMES, "postgres"):
        raise ConfigError(
            f"Registry database URL {redact_url(url)!r} is not supported; use one of: "
            + ", ".join(f"{s}://" for s in SUPPORTED_SCHEMES)
        )
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    if url.startswith("sqlite:///") and root is not None:
        path = url[len("sqlite:///"):]
        if path and not path.startswith("/") and path != ":memory:":
            return f"sqlite:///{Path(root) / path}"
    return url


def sqlite_file(url: str) -> Path | None:
    """The database file of a SQLite URL; None for in-memory SQLite and for servers."""
    if not url.startswith("sqlite"):
        return None
    path = sa.make_url(url).database
    if not path or path == ":memory:" or path.startswith("file:"):
        return None
    return Path(path)


def check_sqlite_file(path: Path) -> None:
    """Refuse a missing, empty, foreign or truncated SQLite file before SQLite touches it.

    Connecting would create a missing file (an empty registry in place of a lost one)
    and a damaged one fails much later, deep in a query; the 100-byte header says
    enough to refuse both up front. The header's page count is that of the last
    checkpoint, which the file holds in full, so a shorter file was truncated.
    """
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            header = f.read(100)
    except FileNotFoundError:
        raise RepositoryNotFoundError(f"Registry database file {path} does not exist") from None
    except OSError as exc:
        raise RepositoryDamagedError(f"Cannot read registry database file {path}: {exc.strerror}") from None
    if size == 0:
        raise RepositoryNotFoundError(f"Registry database file {path} is empty")
    if len(header) < 100 or not header.startswith(_SQLITE_MAGIC):
        raise RepositoryDamagedError(f"Registry database file {path} is not a SQLite database (damaged or another file)")
    page_size = int.from_bytes(header[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    pages = int.from_bytes(header[28:32], "big")
    header_valid = header[24:28] == header[92:96]  # the page count is trusted only then
    # A checkpoint interrupted by a crash may leave the file short; its WAL still holds the
    # pages and SQLite replays it on open, so only a file without a WAL is judged.
    wal = Path(f"{path}-wal")
    if header_valid and size < pages * page_size and not (wal.exists() and wal.stat().st_size > 0):
        raise RepositoryDamagedError(
            f"Registry database file {path} is truncated: {size} bytes, its header says {pages * page_size}")


@contextlib.contextmanager
def database_errors(url: str) -> Iterator[None]:
    """Turn a damaged database's error (a DBAPI DatabaseError) into one line naming it."""
    try:
        yield
    except sa.exc.OperationalError:
        raise
    except sa.exc.DatabaseError as exc:
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
        where = sqlite_file(url) or redact_url(url)
        raise RepositoryDamagedError(f"Registry database {where} cannot be read: {reason}") from None


def make_engine(url: str, *, namespace: str | None = None, sync_every_commit: bool = False,
                read_only: bool = False) -> sa.Engine:
    """Create an engine; SQLite gets WAL mode, foreign keys and a busy timeout.

    ``read_only`` makes the database itself refuse writes on every connection (SQLite's
    ``query_only``, PostgreSQL's ``default_transaction_read_only``), below any check in
    Python.
    """
    kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):
        in_memory = url in ("sqlite://", "sqlite:///:memory:")
        if in_memory:
            kwargs["poolclass"] = sa.pool.StaticPool
        kwargs["connect_args"] = {"check_same_thread": False, "timeout": 60}
        engine = sa.create_engine(url, **kwargs)
        if not in_memory:  # one in-memory database lives in its one connection
            _fork_safe(engine)
        file = sqlite_file(url)
        checkpointer = None if read_only or file is None else WalCheckpointer(
            file, synchronous="FULL" if sync_every_commit else "NORMAL")
        engine.skybutler_checkpointer = checkpointer  # type: ignore[attr-defined]

        @sa.event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            # Let SQLAlchemy, not pysqlite, issue BEGIN so transactions are real.
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            if not in_memory:
                cur.execute("PRAGMA journal_mode=WAL")
            if checkpointer is not None:  # checkpoints in the background (`_checkpoint`); inline only past this
                cur.execute(f"PRAGMA wal_autocheckpoint={INLINE_PAGES}")
            cur.execute(f"PRAGMA synchronous={'FULL' if sync_every_commit else 'NORMAL'}")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=60000")
            if read_only:
                cur.execute("PRAGMA query_only=ON")
            cur.execute(f"PRAGMA analysis_limit={_ANALYSIS_LIMIT}")
            cur.close()

        @sa.event.listens_for(engine, "begin")
        def _begin(conn: sa.Connection) -> None:
            # Writers take the write lock up front (waiting on busy_timeout) instead of
            # failing when a deferred read transaction tries to upgrade.
            options = conn.get_execution_options()
            if options.get("autocommit"):
                return  # a few small reads: SQLite's own statement-level transactions are enough
            # On the DB-API connection (a tenth of `exec_driver_sql`'s cost, which a put paid once).
            sql = "BEGIN IMMEDIATE" if options.get("write") else "BEGIN"
            dbapi = conn.connection.dbapi_connection
            if dbapi.in_transaction:  # type: ignore[union-attr]
                # Begun by `Database.transaction` on the DB-API connection: a `conn.execute`
                # inside it makes SQLAlchemy begin its own record of the same transaction.
                return
            try:
                dbapi.execute(sql)  # type: ignore[union-attr]
            except sqlite3.Error as exc:  # "database is locked" after busy_timeout: as through `execute`
                raise sa.exc.DBAPIError.instance(sql, None, exc, sqlite3.Error, dialect=conn.dialect) from exc

        @sa.event.listens_for(engine, "commit")
        def _commit(conn: sa.Connection) -> None:
            keep_sqlite_statistics(conn)
            if checkpointer is not None:
                pooled = conn.connection
                changes = getattr(pooled.dbapi_connection, "total_changes", 0)
                if changes - pooled.info.get("skybutler_checkpoint_seen", 0) >= WAKE_AFTER_ROWS:
                    pooled.info["skybutler_checkpoint_seen"] = changes
                    checkpointer.wake()

        return engine
    # No pre-ping: it costs a round trip on every checkout (a put or get makes one or two).
    # A connection the server dropped fails one call, is invalidated with its pool, and
    # the next call reconnects; connections are also recycled hourly before servers time out.
    if read_only:
        kwargs["connect_args"] = {"options": "-c default_transaction_read_only=on"}
    engine = sa.create_engine(url, pool_pre_ping=False, pool_recycle=3600, **kwargs)
    _fork_safe(engine)
    if namespace:
        engine = engine.execution_options(schema_translate_map={None: namespace})
    return engine


def _fork_safe(engine: sa.Engine) -> None:
    """Make a forked process open its own connections instead of using its parent's pooled ones.

    A connection is a session on the server: two processes writing on one socket mix their
    messages. A pooled connection made by another process is never handed out here (the
    pool makes a new one, as for a lost connection); `Database.close` in a forked process
    drops the pool without closing its parent's sessions (SQLAlchemy's recipe for ``fork``).
    """
    @sa.event.listens_for(engine, "connect")
    def _made(_dbapi_conn: Any, record: Any) -> None:
        record.info["pid"] = os.getpid()

    @sa.event.listens_for(engine, "checkout")
    def _checked_out(_dbapi_conn: Any, record: Any, proxy: Any) -> None:
        pid = os.getpid()
        if record.info.get("pid", pid) != pid:
            record.dbapi_connection = proxy.dbapi_connection = None  # the parent's: left open for it
            raise sa.exc.DisconnectionError(f"Connection made by process {record.info['pid']}, not {pid}")


def keep_sqlite_statistics(conn: sa.Connection) -> None:
    """Refresh the planner's statistics, inside a write transaction about to commit, when stale.

    Without statistics SQLite cannot tell an index on ``run_id`` (every dataset of a run)
    from one on ``visit`` (a hundred of them): a one-visit query took 1.4 ms in one fresh
    process and 16 ms (a scan of the run) in the next. Users never run ANALYZE, so after
    a connection has changed `ANALYZE_AFTER_ROWS` rows this looks at the statistics of
    the ``dataset`` table (whose plans matter most) and runs ANALYZE, sampling
    `_ANALYSIS_LIMIT` rows per index, when there are none or the table has more than
    doubled since: tens of milliseconds at 10^5 datasets, a handful of times as a
    repository grows to 10^6 datasets. The transaction already holds the write lock,
    so no other writer waits on a second one.
    """
    pooled = conn.connection
    dbapi: Any = pooled.dbapi_connection
    changes = getattr(dbapi, "total_changes", None)
    if changes is None or changes - pooled.info.get("skybutler_changes_seen", 0) < ANALYZE_AFTER_ROWS:
        return
    cursor = dbapi.cursor()
    try:
        rows = _rows_if_stale(cursor, pooled.info.get("skybutler_analyzed_rows", 0))
        if rows is not None:
            cursor.execute("ANALYZE")
            # ANALYZE's sampled count may be low; this connection will not analyze again
            # before the table has really doubled, whatever the estimate says.
            pooled.info["skybutler_analyzed_rows"] = rows
        pooled.info["skybutler_changes_seen"] = dbapi.total_changes
    finally:
        cursor.close()


def count_changes(conn: sa.Connection, rows: int) -> None:
    """Note that ``conn`` wrote ``rows`` rows to the registry's large tables (see `keep_postgresql_statistics`)."""
    info = conn.info
    info["skybutler_pg_changes"] = info.get("skybutler_pg_changes", 0) + rows


_PG_STALE = """
SELECT c.oid::regclass::text, c.reltuples, c.relpages, pg_relation_size(c.oid) / current_setting('block_size')::int
FROM pg_class c WHERE c.oid IN (to_regclass(%(dataset)s), to_regclass(%(file)s))
"""


def keep_postgresql_statistics(conn: sa.Connection) -> None:
    """ANALYZE the ``dataset`` and ``file`` tables after a commit when their statistics are stale.

    PostgreSQL's autovacuum analyzes a table a minute or so after it changed by 10 %;
    until then a table filled by bulk inserts has no statistics, or ones from when it
    was a tenth of its size, and the planner may pick the run index over the visit
    index (as SQLite did, see `keep_sqlite_statistics`). After a connection has
    written `ANALYZE_AFTER_ROWS` rows (`count_changes`), this looks at the tables'
    recorded size in ``pg_class`` (one catalog query) and analyzes those never
    analyzed or that have more than doubled in pages since: a handful of times as a
    repository grows to 10^6 datasets, each sampling at most 30,000 rows. A table that
    another ANALYZE (autovacuum's) holds is skipped: the next look will find it again if
    that one did not do.
    """
    info = conn.info
    if info.get("skybutler_pg_changes", 0) < ANALYZE_AFTER_ROWS:
        return
    info["skybutler_pg_changes"] = 0
    namespace = (conn.get_execution_options().get("schema_translate_map") or {}).get(None)
    prefix = f'"{namespace}".' if namespace else ""
    try:
        with conn.begin():
            conn.exec_driver_sql("SET LOCAL lock_timeout = 200")
            rows = conn.exec_driver_sql(_PG_STALE, {"dataset": f"{prefix}dataset", "file": f"{prefix}file"}).all()
            for name, tuples, pages_then, pages_now in rows:
                if tuples < 0 or pages_now > 2 * max(pages_then, 1):
                    # Another ANALYZE of the table (autovacuum's, another writer's) will do as well
                    # as ours: skipped, not waited for (a growing table is often autovacuum's too,
                    # and waiting on it made a put_many of 1,000 rows up to 200 ms slower).
                    conn.exec_driver_sql(f"ANALYZE (SKIP_LOCKED) {name}")
    except sa.exc.DBAPIError as exc:
        # The caller's work is committed; statistics are a help to the planner, never worth an error.
        _log.warning("Could not refresh the planner's statistics: %s", str(exc.orig or exc).strip().splitlines()[0])


def _rows_if_stale(cursor: Any, analyzed: int) -> int | None:
    """The ``dataset`` table's row count if its statistics are missing or it has doubled since; else None."""
    try:
        stat = cursor.execute("SELECT stat FROM sqlite_stat1 WHERE tbl = 'dataset' AND idx = 'ix_dataset_run'"
                              ).fetchall()
    except sqlite3.OperationalError:  # no sqlite_stat1 table: never analyzed
        stat = []
    counted = max(int(str(stat[0][0]).split()[0]) if stat else 0, analyzed)
    try:
        # The largest rowid is the number of rows ever inserted, read from the b-tree's edge.
        now = cursor.execute("SELECT max(rowid) FROM dataset").fetchone()[0] or 0
    except sqlite3.OperationalError:  # not a registry (yet): no dataset table
        return None
    return now if now >= ANALYZE_AFTER_ROWS and now > 2 * counted else None


def check_connection(engine: sa.Engine, url: str) -> None:
    """Connect once; an unreachable server raises DatabaseConnectionError naming the URL (no password)."""
    try:
        with database_errors(url), engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except sa.exc.OperationalError as exc:
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
        raise DatabaseConnectionError(f"Cannot connect to registry database {redact_url(url)}: {reason}") from None


def open_existing(url: str, *, root: str | Path | None = None, namespace: str | None = None,
                  sync_every_commit: bool = False, read_only: bool = False) -> tuple[str, sa.Engine]:
    """The SQLAlchemy URL and a connected engine for an existing registry database.

    A missing or damaged SQLite file is refused before SQLite could create one, and an
    unreachable server raises `DatabaseConnectionError`; the engine is disposed of then.
    """
    sa_url = normalise_url(url, root)
    path = sqlite_file(sa_url)
    if path is not None:
        check_sqlite_file(path)
    engine = make_engine(sa_url, namespace=namespace, sync_every_commit=sync_every_commit, read_only=read_only)
    try:
        check_connection(engine, sa_url)
    except BaseException:
        engine.dispose()
        raise
    return sa_url, engine
