"""Baseline: the schema of release 0.1.0 (schema version 1).

Revision ID: 0001
Revises: none
Create Date: 2026-11-29

A repository made by release 0.1.0 has this schema but no ``alembic_version``
table; `skybutler.registry.upgrade` stamps it at this revision first. Upgrading an
empty database from nothing (only tests do) creates what 0.1.0's ``Registry.create``
did, for the universe in ``config.attributes["universe"]``.

The tables are frozen here, not taken from ``schema.py``: that module describes
the newest schema, and a revision must keep meaning what it meant when written.
"""

from __future__ import annotations

import datetime
import json

import sqlalchemy as sa
from alembic import op

from skybutler.dimensions import DimensionUniverse
from skybutler.registry._migrate import set_schema_version

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

SCHEMA_VERSION = 1

_SQL_TYPES = {
    "int": sa.BigInteger,
    "str": lambda: sa.String(128),
    "float": sa.Float,
    "datetime": sa.DateTime,
    "bool": sa.Boolean,
}


def _sql_type(name: str) -> sa.types.TypeEngine:
    return _SQL_TYPES[name]()  # type: ignore[operator]


def _overlap_columns(universe: DimensionUniverse, a: str, b: str) -> tuple[dict[str, str], dict[str, str]]:
    """Column names in an overlap table for the primary keys of ``a`` and ``b`` (key -> column)."""
    ka = universe.elements[a].primary_key
    kb = universe.elements[b].primary_key
    clash = set(ka) & set(kb)
    return (
        {k: (f"{a}_{k}" if k in clash else k) for k in ka},
        {k: (f"{b}_{k}" if k in clash else k) for k in kb},
    )


def baseline_tables(universe: DimensionUniverse) -> sa.MetaData:
    """The tables of release 0.1.0 for ``universe`` (a verbatim copy of its ``build_tables``)."""
    md = sa.MetaData()
    sa.Table("meta", md, sa.Column("key", sa.String(64), primary_key=True), sa.Column("value", sa.Text))
    sa.Table(
        "dataset_type", md,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(128), nullable=False, unique=True),
        sa.Column("dimensions", sa.String(512), nullable=False),
        sa.Column("storage_class", sa.String(64), nullable=False),
        sa.Column("is_calibration", sa.Boolean, nullable=False, default=False),
    )
    sa.Table(
        "collection", md,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(256), nullable=False, unique=True),
        sa.Column("type", sa.String(16), nullable=False),
        sa.Column("doc", sa.Text),
    )
    sa.Table(
        "collection_chain", md,
        sa.Column("parent_id", sa.Integer, sa.ForeignKey("collection.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("position", sa.Integer, primary_key=True),
        sa.Column("child_id", sa.Integer, sa.ForeignKey("collection.id"), nullable=False),
    )

    dimensions: dict[str, sa.Table] = {}
    for name, el in universe.elements.items():
        cols: list[sa.Column] = []
        for k in el.primary_key:
            key_type = universe.elements[k].key_type
            assert key_type is not None
            cols.append(sa.Column(k, _sql_type(key_type), primary_key=True, autoincrement=False))
        for col, typ in universe.record_columns(name).items():
            cols.append(sa.Column(col, _sql_type(typ), nullable=True))
        if el.region:
            cols.append(sa.Column("region", sa.Text, nullable=True))
        parent_fks = []
        for dep in el.requires:
            dep_pk = universe.elements[dep].primary_key
            parent_fks.append(sa.ForeignKeyConstraint(list(dep_pk), [f"dim_{dep}.{c}" for c in dep_pk]))
        dimensions[name] = sa.Table(el.table_name, md, *cols, *parent_fks)

    overlaps: dict[tuple[str, str], sa.Table] = {}
    # Release 0.1.0 made tables for the declared pairs only (revision 0003 adds their relatives).
    for a, b in universe.declared_overlaps:
        ca, cb = _overlap_columns(universe, a, b)
        cols = []
        for mapping in (ca, cb):
            for k, col in mapping.items():
                key_type = universe.elements[k].key_type
                assert key_type is not None
                cols.append(sa.Column(col, _sql_type(key_type), primary_key=True, autoincrement=False))
        # Index the right-hand key so joins starting from either side are index-backed.
        overlaps[(a, b)] = sa.Table(
            f"overlap_{a}_{b}", md, *cols, sa.Index(f"ix_overlap_{a}_{b}_right", *cb.values())
        )

    dim_cols = []
    for d in universe.dimensions:
        key_type = universe.elements[d].key_type
        assert key_type is not None
        dim_cols.append(sa.Column(d, _sql_type(key_type), nullable=True))
    # Partial indexes: a dataset only has values for its own dimensions, and NULLs left out
    # of the indexes make every insert touch a few indexes instead of all of them.
    dim_indexes = [
        sa.Index(f"ix_dataset_{d}", d, sqlite_where=sa.text(f"{d} IS NOT NULL"),
                 postgresql_where=sa.text(f"{d} IS NOT NULL"))
        for d in universe.dimensions
    ]
    sa.Table(
        "dataset", md,
        sa.Column("id", sa.Uuid, primary_key=True),
        sa.Column("dataset_type_id", sa.Integer, sa.ForeignKey("dataset_type.id"), nullable=False),
        sa.Column("run_id", sa.Integer, sa.ForeignKey("collection.id"), nullable=False),
        sa.Column("data_id_key", sa.String(512), nullable=False),
        *dim_cols,
        sa.Column("ingest_date", sa.DateTime, nullable=False, server_default=sa.func.current_timestamp()),
        sa.UniqueConstraint("dataset_type_id", "data_id_key", "run_id", name="uq_dataset_type_data_id_run"),
        sa.Index("ix_dataset_run", "run_id"),
        *dim_indexes,
    )
    sa.Table(
        "tagged", md,
        sa.Column("collection_id", sa.Integer, sa.ForeignKey("collection.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("dataset_id", sa.Uuid, sa.ForeignKey("dataset.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("dataset_type_id", sa.Integer, nullable=False),
        sa.Column("data_id_key", sa.String(512), nullable=False),
        sa.UniqueConstraint("collection_id", "dataset_type_id", "data_id_key", name="uq_tagged_one_per_data_id"),
        sa.Index("ix_tagged_dataset", "dataset_id"),
    )
    sa.Table(
        "calibration", md,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("collection_id", sa.Integer, sa.ForeignKey("collection.id", ondelete="CASCADE"), nullable=False),
        sa.Column("dataset_id", sa.Uuid, sa.ForeignKey("dataset.id", ondelete="CASCADE"), nullable=False),
        sa.Column("dataset_type_id", sa.Integer, nullable=False),
        sa.Column("data_id_key", sa.String(512), nullable=False),
        sa.Column("valid_begin", sa.DateTime, nullable=False),
        sa.Column("valid_end", sa.DateTime, nullable=False),
        sa.Index("ix_calibration_lookup", "collection_id", "dataset_type_id", "data_id_key"),
        sa.Index("ix_calibration_dataset", "dataset_id"),
    )
    sa.Table(
        "file", md,
        sa.Column("dataset_id", sa.Uuid, sa.ForeignKey("dataset.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("path", sa.String(1024), nullable=False),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("checksum", sa.String(128), nullable=True),
        sa.Column("checksum_algorithm", sa.String(32), nullable=True),
        sa.Column("format", sa.String(32), nullable=False),
        sa.Index("ix_file_path", "path"),
    )
    # Provenance (see skybutler.provenance): executions and the edges of the Open Provenance Model.
    sa.Table(
        "execution", md,
        sa.Column("id", sa.Uuid, primary_key=True),
        sa.Column("run_id", sa.Integer, sa.ForeignKey("collection.id", ondelete="CASCADE"), nullable=True),
        sa.Column("task_label", sa.String(128), nullable=False),
        sa.Column("quantum_id", sa.Uuid, nullable=True),
        sa.Column("data_id_key", sa.String(512), nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("reason", sa.Text, nullable=True),
        sa.Column("host", sa.String(256), nullable=True),
        sa.Column("start_time", sa.DateTime, nullable=True),
        sa.Column("end_time", sa.DateTime, nullable=True),
        sa.Column("cpu_time", sa.Float, nullable=True),
        sa.Column("peak_memory", sa.BigInteger, nullable=True),
        sa.Column("software", sa.Text, nullable=True),
        sa.Column("config_hash", sa.String(64), nullable=True),
        sa.Column("details", sa.Text, nullable=True),
        sa.Index("ix_execution_run_task", "run_id", "task_label"),
        sa.Index("ix_execution_quantum", "quantum_id"),
    )
    sa.Table(
        "prov_used", md,
        sa.Column("execution_id", sa.Uuid, sa.ForeignKey("execution.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("dataset_id", sa.Uuid, primary_key=True),
        sa.Column("path", sa.String(1024), nullable=True),
        sa.Index("ix_prov_used_dataset", "dataset_id"),
    )
    sa.Table(
        "prov_generated", md,
        sa.Column("dataset_id", sa.Uuid, primary_key=True),
        sa.Column("execution_id", sa.Uuid, sa.ForeignKey("execution.id", ondelete="CASCADE"), nullable=False),
        sa.Column("path", sa.String(1024), nullable=True),
        sa.Index("ix_prov_generated_execution", "execution_id"),
    )
    sa.Table(
        "prov_derived", md,
        sa.Column("dataset_id", sa.Uuid, primary_key=True),
        sa.Column("source_id", sa.Uuid, primary_key=True),
        sa.Index("ix_prov_derived_source", "source_id"),
    )
    return md


def upgrade() -> None:
    conn = op.get_bind()
    config = op.get_context().config
    universe = config.attributes.get("universe") if config else None
    if universe is None:
        # Not the current default universe: release 0.1.0's may differ from it.
        raise RuntimeError("creating the baseline from nothing needs the universe of the repository to make")
    md = baseline_tables(universe)
    md.create_all(conn)
    conn.execute(sa.insert(md.tables["meta"]), [
        {"key": "universe", "value": json.dumps(universe.document)},
        {"key": "created", "value": datetime.datetime.now(datetime.UTC).isoformat()},
    ])
    set_schema_version(conn, SCHEMA_VERSION)


def downgrade() -> None:
    raise NotImplementedError("the baseline is not removed by a migration; drop the database or schema instead")
