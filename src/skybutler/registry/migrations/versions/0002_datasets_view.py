"""datasets_view: every dataset with its type, run, filled-in dimensions and file.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29

The view is built from the repository's stored universe by
`skybutler.registry.schema.datasets_view`. Should a later revision change the
columns that definition reads, it must freeze this revision's version of it here.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.schema import CreateView, DropView

from skybutler.registry import schema
from skybutler.registry._migrate import set_schema_version, stored_universe

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    conn = op.get_bind()
    universe = stored_universe(conn)
    conn.execute(CreateView(schema.datasets_view(schema.build_tables(universe), universe), "datasets_view"))
    set_schema_version(conn, 2)


def downgrade() -> None:
    conn = op.get_bind()
    conn.execute(DropView(sa.Table("datasets_view", sa.MetaData()), if_exists=True))
    set_schema_version(conn, 1)
