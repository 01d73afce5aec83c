"""Files found lost (``file_lost``) and where ingested files came from (``dataset_origin``).

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30

Both tables are new and start empty: an upgraded repository has no lost marks (run
``skybutler verify --mark-lost`` to find them) and no recorded origins for what it
ingested before. They are frozen here as this revision makes them.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from skybutler.registry._migrate import set_schema_version

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def _tables(md: sa.MetaData) -> list[sa.Table]:
    sa.Table("dataset", md, sa.Column("id", sa.Uuid, primary_key=True))
    file_lost = sa.Table(
        "file_lost", md,
        sa.Column("dataset_id", sa.Uuid, sa.ForeignKey("dataset.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("noticed", sa.DateTime, nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
    )
    dataset_origin = sa.Table(
        "dataset_origin", md,
        sa.Column("dataset_id", sa.Uuid, sa.ForeignKey("dataset.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("original_path", sa.String(2048), nullable=False),
        sa.Column("plugin", sa.String(128), nullable=True),
        sa.Column("metadata", sa.Text, nullable=True),
    )
    return [file_lost, dataset_origin]


def upgrade() -> None:
    conn = op.get_bind()
    for table in _tables(sa.MetaData()):  # the namespace is the connection's search path
        table.create(conn)
    set_schema_version(conn, 5)


def downgrade() -> None:
    conn = op.get_bind()
    for table in reversed(_tables(sa.MetaData())):
        table.drop(conn)
    set_schema_version(conn, 4)
