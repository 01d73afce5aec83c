"""A PostgreSQL repository schema made once per test run and copied into each test's fresh schema.

`Butler.create` on PostgreSQL sends some sixty DDL statements, one round trip and one
catalogue update each; under a loaded test machine that is half a second per test. The
template records what `Butler.create` sent for one schema and replays it, renamed, in a
single round trip, then copies the rows (``INSERT INTO new.t SELECT * FROM template.t``):
the repository is what `Butler.create` (and `insert_records`) would have made.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import sqlalchemy as sa

from .records import insert_records


class PostgresSchemaTemplate:
    """A repository of the default universe in schema `namespace`, with the standard records.

    Attributes
    ----------
    namespace
        The template's schema; every test copies from it, so nothing may write to it.
    ddl
        The DDL `Butler.create` sent, as one script naming `namespace`.
    created_tables, record_tables
        The tables holding rows after `Butler.create` (``meta``, the migration stamp) and
        those `insert_records` filled, each in an order that respects foreign keys.
    """

    def __init__(self, namespace: str, ddl: str, created_tables: list[str], record_tables: list[str]):
        self.namespace = namespace
        self.ddl = ddl
        self.created_tables = created_tables
        self.record_tables = record_tables

    @classmethod
    def build(cls, url: str, directory: Path) -> PostgresSchemaTemplate:
        """Create the template repository (registry ``url``, files under ``directory``) and keep its DDL."""
        from skybutler import Butler

        namespace = f"tmpl_{uuid.uuid4().hex[:12]}"
        statements: list[str] = []

        def record(conn, cursor, statement, parameters, context, executemany) -> None:
            if statement.lstrip().upper().startswith("CREATE "):
                statements.append(statement.strip())

        sa.event.listen(sa.Engine, "before_cursor_execute", record)
        try:
            butler = Butler.create(directory / "template", registry=url, namespace=namespace)
        finally:
            sa.event.remove(sa.Engine, "before_cursor_execute", record)
        try:
            ordered = [t.name for t in butler.registry.tables.metadata.sorted_tables]

            def filled() -> list[str]:
                with butler.registry.engine.connect() as conn:
                    return [n for n in ordered
                            if conn.execute(sa.text(f'SELECT 1 FROM "{namespace}"."{n}" LIMIT 1')).first()]

            with butler.registry.engine.connect() as conn:
                names = conn.execute(sa.text(
                    "SELECT table_name FROM information_schema.tables"
                    " WHERE table_schema = :s AND table_type = 'BASE TABLE'"), {"s": namespace}).scalars().all()
            # Tables outside the registry's own list (the migration stamp) have no foreign keys.
            ordered = sorted(set(names) - set(ordered)) + ordered
            created = filled()
            insert_records(butler)
            records = [n for n in filled() if n not in created]
        finally:
            butler.close()
        return cls(namespace, ";\n".join(statements), created, records)

    def copy_into(self, conn: sa.Connection, namespace: str, *, records: bool) -> None:
        """Make schema ``namespace`` a new repository (holding the standard records if ``records``)."""
        tables = self.created_tables + (self.record_tables if records else [])
        copies = [f'INSERT INTO "{namespace}"."{n}" SELECT * FROM "{self.namespace}"."{n}"' for n in tables]
        script = self.ddl.replace(self.namespace, namespace) + ";\n" + ";\n".join(copies)
        conn.exec_driver_sql(script)

    def drop(self, conn: sa.Connection) -> None:
        conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{self.namespace}" CASCADE'))
