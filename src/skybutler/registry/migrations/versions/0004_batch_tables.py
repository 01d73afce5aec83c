"""Batch service tables (submissions, jobs, their dependencies, quanta, state events, QC matches) and executions_view.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30

The tables are frozen here as this revision made them (not taken from ``schema.py``,
which describes the newest schema), and so is the view: a later revision that changes
them starts from exactly this. ``executions_view`` gives each execution its run name and
wall time in seconds, so that "wall time per step" is one plain SQL statement on SQLite
and PostgreSQL alike (they share no function for subtracting times).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.schema import CreateView, DropView

from skybutler.registry._migrate import set_schema_version

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

BATCH_TABLES = ("batch_qc_match", "batch_event", "batch_quantum", "batch_job_dependency", "batch_job",
                "batch_submission")
"""In an order that drops dependants first."""


def _existing_tables(md: sa.MetaData) -> tuple[sa.Table, sa.Table]:
    """``collection`` and ``execution`` as far as this revision reads them (unchanged since 0.1.0)."""
    collection = sa.Table("collection", md, sa.Column("id", sa.Integer, primary_key=True),
                          sa.Column("name", sa.String(256)))
    execution = sa.Table(
        "execution", md,
        *(sa.Column(name, typ) for name, typ in (
            ("id", sa.Uuid), ("run_id", sa.Integer), ("task_label", sa.String(128)), ("quantum_id", sa.Uuid),
            ("data_id_key", sa.String(512)), ("status", sa.String(32)), ("reason", sa.Text),
            ("host", sa.String(256)), ("start_time", sa.DateTime), ("end_time", sa.DateTime),
            ("cpu_time", sa.Float), ("peak_memory", sa.BigInteger))),
    )
    return collection, execution


def batch_tables(md: sa.MetaData) -> list[sa.Table]:
    """The batch tables as this revision creates them (``md`` must hold ``collection``)."""
    submission = sa.Table(
        "batch_submission", md,
        sa.Column("id", sa.Uuid, primary_key=True),
        sa.Column("name", sa.String(128), nullable=False, unique=True),
        sa.Column("campaign", sa.String(128), nullable=False),
        sa.Column("run_id", sa.Integer, sa.ForeignKey("collection.id", ondelete="SET NULL"), nullable=True),
        sa.Column("attempt", sa.Integer, nullable=False),
        sa.Column("state", sa.String(32), nullable=False),
        sa.Column("engine", sa.String(32), nullable=False),
        sa.Column("directory", sa.String(1024), nullable=False),
        sa.Column("config", sa.Text, nullable=False),
        sa.Column("created", sa.DateTime, nullable=False),
        sa.Column("updated", sa.DateTime, nullable=False),
        sa.Column("n_jobs", sa.Integer, nullable=False),
        sa.Column("n_quanta", sa.Integer, nullable=False),
        # SET NULL on a run's removal looks the run's submissions up by this index.
        sa.Index("ix_batch_submission_run", "run_id"),
    )
    job = sa.Table(
        "batch_job", md,
        sa.Column("id", sa.Uuid, primary_key=True),
        sa.Column("submission_id", sa.Uuid, sa.ForeignKey("batch_submission.id", ondelete="CASCADE"), nullable=False),
        sa.Column("name", sa.String(256), nullable=False),
        sa.Column("cluster", sa.String(128), nullable=False),
        sa.Column("tasks", sa.String(1024), nullable=False),
        sa.Column("attempt", sa.Integer, nullable=False),
        sa.Column("state", sa.String(32), nullable=False),
        sa.Column("failure_class", sa.String(32), nullable=True),
        sa.Column("reason", sa.Text, nullable=True),
        sa.Column("exit_code", sa.Integer, nullable=True),
        sa.Column("host", sa.String(256), nullable=True),
        sa.Column("submit_time", sa.DateTime, nullable=True),
        sa.Column("start_time", sa.DateTime, nullable=True),
        sa.Column("end_time", sa.DateTime, nullable=True),
        sa.Column("wall_time", sa.Float, nullable=True),
        sa.Column("cpu_time", sa.Float, nullable=True),
        sa.Column("peak_memory", sa.BigInteger, nullable=True),
        sa.Column("memory_mb", sa.Integer, nullable=True),
        sa.Column("n_quanta", sa.Integer, nullable=False),
        sa.Column("manifest", sa.String(1024), nullable=False),
        sa.UniqueConstraint("submission_id", "name", name="uq_batch_job_submission_name"),
        # Counts of jobs per state (status, list of submissions) read this index only.
        sa.Index("ix_batch_job_submission_state", "submission_id", "state"),
    )
    dependency = sa.Table(
        "batch_job_dependency", md,
        sa.Column("job_id", sa.Uuid, sa.ForeignKey("batch_job.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("upstream_id", sa.Uuid, sa.ForeignKey("batch_job.id", ondelete="CASCADE"), primary_key=True),
        sa.Index("ix_batch_job_dependency_upstream", "upstream_id"),
    )
    quantum = sa.Table(
        "batch_quantum", md,
        sa.Column("quantum_id", sa.Uuid, primary_key=True),
        sa.Column("submission_id", sa.Uuid, sa.ForeignKey("batch_submission.id", ondelete="CASCADE"), nullable=False),
        sa.Column("job_id", sa.Uuid, sa.ForeignKey("batch_job.id", ondelete="CASCADE"), nullable=False),
        sa.Column("task_label", sa.String(128), nullable=False),
        sa.Column("data_id_key", sa.String(512), nullable=False),
        sa.Column("state", sa.String(32), nullable=False),
        sa.Column("attempt", sa.Integer, nullable=False),
        sa.Column("execution_id", sa.Uuid, nullable=True),
        sa.Column("updated", sa.DateTime, nullable=False),
        # Progress per task and state is a GROUP BY over this index alone.
        sa.Index("ix_batch_quantum_submission_task_state", "submission_id", "task_label", "state"),
        sa.Index("ix_batch_quantum_job", "job_id"),
    )
    event = sa.Table(
        "batch_event", md,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("submission_id", sa.Uuid, sa.ForeignKey("batch_submission.id", ondelete="CASCADE"), nullable=False),
        sa.Column("job_id", sa.Uuid, sa.ForeignKey("batch_job.id", ondelete="CASCADE"), nullable=True),
        sa.Column("quantum_id", sa.Uuid, nullable=True),
        sa.Column("attempt", sa.Integer, nullable=True),
        sa.Column("state", sa.String(32), nullable=False),
        sa.Column("time", sa.DateTime, nullable=False),
        sa.Column("detail", sa.Text, nullable=True),
        # Followers of a submission read "events after id N" (a live view polls this).
        sa.Index("ix_batch_event_submission", "submission_id", "id"),
        # The history of one job or one quantum; partial, so submission-level rows cost nothing.
        sa.Index("ix_batch_event_job", "job_id", "id", sqlite_where=sa.text("job_id IS NOT NULL"),
                 postgresql_where=sa.text("job_id IS NOT NULL")),
        sa.Index("ix_batch_event_quantum", "quantum_id", sqlite_where=sa.text("quantum_id IS NOT NULL"),
                 postgresql_where=sa.text("quantum_id IS NOT NULL")),
    )
    qc_match = sa.Table(
        "batch_qc_match", md,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("submission_id", sa.Uuid, sa.ForeignKey("batch_submission.id", ondelete="CASCADE"), nullable=False),
        sa.Column("job_id", sa.Uuid, sa.ForeignKey("batch_job.id", ondelete="CASCADE"), nullable=False),
        sa.Column("quantum_id", sa.Uuid, nullable=True),
        sa.Column("execution_id", sa.Uuid, nullable=True),
        sa.Column("task_label", sa.String(128), nullable=True),
        sa.Column("severity", sa.String(16), nullable=False),
        sa.Column("pattern", sa.Text, nullable=False),
        sa.Column("line_number", sa.Integer, nullable=False),
        sa.Column("line", sa.Text, nullable=False),
        sa.Index("ix_batch_qc_match_submission", "submission_id", "severity"),
        sa.Index("ix_batch_qc_match_job", "job_id"),
    )
    return [submission, job, dependency, quantum, event, qc_match]


def executions_view(dialect: str) -> sa.Select:
    """The SELECT behind ``executions_view`` as this revision creates it."""
    collection, ex = _existing_tables(sa.MetaData())
    wall: sa.ColumnElement[float]
    if dialect == "postgresql":
        wall = sa.cast(sa.extract("epoch", ex.c.end_time - ex.c.start_time), sa.Float)
    else:
        wall = (sa.func.julianday(ex.c.end_time) - sa.func.julianday(ex.c.start_time)) * 86400.0
    return sa.select(
        ex.c.id.label("execution_id"), collection.c.name.label("run"), ex.c.task_label, ex.c.quantum_id,
        ex.c.data_id_key, ex.c.status, ex.c.reason, ex.c.host, ex.c.start_time, ex.c.end_time,
        wall.label("wall_seconds"), ex.c.cpu_time, ex.c.peak_memory,
    ).select_from(ex.outerjoin(collection, collection.c.id == ex.c.run_id))


def upgrade() -> None:
    conn = op.get_bind()
    md = sa.MetaData()
    _existing_tables(md)
    for table in batch_tables(md):
        table.create(conn)
    conn.execute(CreateView(executions_view(conn.dialect.name), "executions_view"))
    set_schema_version(conn, 4)


def downgrade() -> None:
    conn = op.get_bind()
    conn.execute(DropView(sa.Table("executions_view", sa.MetaData()), if_exists=True))
    for name in BATCH_TABLES:
        op.drop_table(name)
    set_schema_version(conn, 3)
