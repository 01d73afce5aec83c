"""Opening databases: URLs, SQLite pragmas, PostgreSQL schemas, clear connection errors."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from ..errors import DatabaseConnectionError


def normalise_url(url: str, root: str | Path | None = None) -> str:
    """Turn a user URL into a SQLAlchemy URL (relative SQLite paths are under ``root``)."""
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    if url.startswith("sqlite:///") and root is not None:
        path = url[len("sqlite:///"):]
        if path and not path.startswith("/") and path != ":memory:":
            return f"sqlite:///{Path(root) / path}"
    return url


def redact(url: str) -> str:
    """The URL with any password replaced by ``***``."""
    return re.sub(r"(://[^:/@]+:)[^@]*@", r"\1***@", url)


def make_engine(url: str, *, namespace: str | None = None, sync_every_commit: bool = False) -> sa.Engine:
    """Create an engine; SQLite gets WAL mode, foreign keys and a busy timeout."""
    kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):
        in_memory = url in ("sqlite://", "sqlite:///:memory:")
        if in_memory:
            kwargs["poolclass"] = sa.pool.StaticPool
        kwargs["connect_args"] = {"check_same_thread": False, "timeout": 60}
        engine = sa.create_engine(url, **kwargs)

        @sa.event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            # Let SQLAlchemy, not pysqlite, issue BEGIN so transactions are real.
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            if not in_memory:
                cur.execute("PRAGMA journal_mode=WAL")
            cur.execute(f"PRAGMA synchronous={'FULL' if sync_every_commit else 'NORMAL'}")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=60000")
            cur.close()

        @sa.event.listens_for(engine, "begin")
        def _begin(conn: sa.Connection) -> None:
            # Writers take the write lock up front (waiting on busy_timeout) instead of
            # failing when a deferred read transaction tries to upgrade.
            options = conn.get_execution_options()
            if options.get("lookup"):
                return  # one small read: SQLite's own statement-level transaction is enough
            conn.exec_driver_sql("BEGIN IMMEDIATE" if options.get("write") else "BEGIN")

        return engine
    # No pre-ping: it costs a round trip on every checkout (a put or get makes one or two).
    # A connection the server dropped fails one call, is invalidated with its pool, and
    # the next call reconnects; connections are also recycled hourly before servers time out.
    engine = sa.create_engine(url, pool_pre_ping=False, pool_recycle=3600, **kwargs)
    if namespace:
        engine = engine.execution_options(schema_translate_map={None: namespace})
    return engine


def check_connection(engine: sa.Engine, url: str) -> None:
    """Connect once; an unreachable server raises DatabaseConnectionError naming the URL (no password)."""
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except sa.exc.OperationalError as exc:
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
        raise DatabaseConnectionError(f"Cannot connect to registry database {redact(url)}: {reason}") from None
