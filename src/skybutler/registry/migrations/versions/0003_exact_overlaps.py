"""Overlap tables for every pair of region-bearing elements a query can join.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30

Release 0.1.0 stored visit_detector_region x patch and visit x tract only, and answered
visit x patch through visit x tract (every patch of every tract a visit touches) and
visit, detector x tract through visit x tract. The universe now completes its declared
pairs with their coarser and finer relatives (`DimensionUniverse.overlaps`); this
revision creates the tables that are missing and fills them from the stored regions.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context, op

from skybutler.dimensions import Region, overlapping_pairs
from skybutler.registry import schema
from skybutler.registry._migrate import set_schema_version, stored_universe

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    conn = op.get_bind()
    universe = stored_universe(conn)
    tables = schema.build_tables(universe)
    inspector = sa.inspect(conn)
    namespace = context.config.attributes.get("namespace") if conn.dialect.name == "postgresql" else None
    for (a, b), table in tables.overlaps.items():
        if inspector.has_table(table.name, schema=namespace):
            continue
        table.create(conn)
        left, right = tables.dimensions[a], tables.dimensions[b]
        ka, kb = universe.elements[a].primary_key, universe.elements[b].primary_key
        rows_a = conn.execute(sa.select(*[left.c[k] for k in ka], left.c.region)
                              .where(left.c.region.is_not(None))).all()
        rows_b = conn.execute(sa.select(*[right.c[k] for k in kb], right.c.region)
                              .where(right.c.region.is_not(None))).all()
        pairs = overlapping_pairs([Region.from_json(r[-1]) for r in rows_a],
                                  [Region.from_json(r[-1]) for r in rows_b])
        ca, cb = schema.overlap_columns(universe, a, b)
        out = [{**{ca[k]: rows_a[i][n] for n, k in enumerate(ka)}, **{cb[k]: rows_b[j][n] for n, k in enumerate(kb)}}
               for i, j in pairs]
        for start in range(0, len(out), 5000):
            conn.execute(sa.insert(table), out[start:start + 5000])
    set_schema_version(conn, 3)


def downgrade() -> None:
    set_schema_version(op.get_bind(), 2)
