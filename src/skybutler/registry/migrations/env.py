"""Alembic environment of skybutler registries, configured in code (no alembic.ini).

`skybutler.registry._migrate` hands over an open connection, already inside the
transaction that holds the whole upgrade, through ``config.attributes``:

``connection``
    The connection (its engine maps unqualified tables to the repository's
    PostgreSQL schema, so revisions never name a schema themselves).
``namespace``
    That schema, or None; Alembic's ``alembic_version`` table lives there too.
``universe``
    Optional: the dimension universe for a revision that creates a repository's
    tables from nothing (the baseline); every other revision reads the stored one.
"""

from __future__ import annotations

from alembic import context

config = context.config
connection = config.attributes.get("connection")
if connection is None:
    raise RuntimeError("skybutler migrations run through skybutler.registry.upgrade, not the alembic command")
namespace = config.attributes.get("namespace")

context.configure(
    connection=connection,
    version_table_schema=namespace if connection.dialect.name == "postgresql" else None,
    # The caller's transaction spans every revision: an interrupted upgrade leaves the
    # repository at its old revision (DDL is transactional on SQLite and PostgreSQL).
    transactional_ddl=True,
)
with context.begin_transaction():
    context.run_migrations()
