"""The registry's tables, built from the dimension universe (SQLAlchemy Core).

One schema serves SQLite and PostgreSQL. Dimension keys of a dataset's data id
are typed, indexed columns of the ``dataset`` table (unused ones are NULL), and
``data_id_key`` (the canonical text of the data id) makes
(dataset type, run, data id) unique without relying on NULL semantics.

Views (`VIEWS`) are for people with a SQL prompt, not for the library's own
queries: ``datasets_view`` shows one row per dataset with its type and run by
name, every dimension of the universe with the implied ones filled in from the
dimension records, and its file.

The ``batch_*`` tables hold the batch service's submissions, jobs, quanta, their
state changes and log QC matches (`batch_tables`; the SQL on them is in
`skybutler.registry.batch_sql`). ``executions_view`` adds each execution's run name
and wall time in seconds, which plain SQL cannot compute the same way on both
databases.

Every change here comes with an Alembic revision in ``migrations/versions/``
and a bump of `SCHEMA_VERSION` (see ``_migrate.py``).
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.schema import CreateView, DropView

from ..dimensions import DimensionUniverse

SCHEMA_VERSION = 5
"""Version of the schema this code writes (``meta.schema_version``); each Alembic revision sets one."""

MAX_COLLECTION_NAME = 256
"""Longest collection name (the width of ``collection.name``)."""

VIEWS = ("datasets_view", "executions_view")
"""Views of a repository, by name (dropped and recreated by migrations that change their tables)."""

_SQL_TYPES = {
    "int": sa.BigInteger,
    "str": lambda: sa.String(128),
    "float": sa.Float,
    "datetime": sa.DateTime,
    "bool": sa.Boolean,
}


def sql_type(name: str) -> sa.types.TypeEngine:
    return _SQL_TYPES[name]()  # type: ignore[operator]


@dataclass
class Tables:
    """Every table of one repository."""

    metadata: sa.MetaData
    meta: sa.Table
    dataset_type: sa.Table
    collection: sa.Table
    collection_chain: sa.Table
    dataset: sa.Table
    tagged: sa.Table
    calibration: sa.Table
    file: sa.Table
    execution: sa.Table
    used: sa.Table
    generated: sa.Table
    derived: sa.Table
    file_lost: sa.Table
    dataset_origin: sa.Table
    dimensions: dict[str, sa.Table]
    overlaps: dict[tuple[str, str], sa.Table]
    batch_submission: sa.Table
    batch_job: sa.Table
    batch_job_dependency: sa.Table
    batch_quantum: sa.Table
    batch_event: sa.Table
    batch_qc_match: sa.Table


def overlap_columns(universe: DimensionUniverse, a: str, b: str) -> tuple[dict[str, str], dict[str, str]]:
    """Column names in an overlap table for the primary keys of ``a`` and ``b`` (key -> column)."""
    ka = universe.elements[a].primary_key
    kb = universe.elements[b].primary_key
    clash = set(ka) & set(kb)
    return (
        {k: (f"{a}_{k}" if k in clash else k) for k in ka},
        {k: (f"{b}_{k}" if k in clash else k) for k in kb},
    )


def build_tables(universe: DimensionUniverse) -> Tables:
    md = sa.MetaData()
    meta = sa.Table("meta", md, sa.Column("key", sa.String(64), primary_key=True), sa.Column("value", sa.Text))
    dataset_type = sa.Table(
        "dataset_type", md,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(128), nullable=False, unique=True),
        sa.Column("dimensions", sa.String(512), nullable=False),
        sa.Column("storage_class", sa.String(64), nullable=False),
        sa.Column("is_calibration", sa.Boolean, nullable=False, default=False),
    )
    collection = sa.Table(
        "collection", md,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(MAX_COLLECTION_NAME), nullable=False, unique=True),
        sa.Column("type", sa.String(16), nullable=False),
        sa.Column("doc", sa.Text),
    )
    collection_chain = sa.Table(
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
            cols.append(sa.Column(k, sql_type(key_type), primary_key=True, autoincrement=False))
        for col, typ in universe.record_columns(name).items():
            cols.append(sa.Column(col, sql_type(typ), nullable=True))
        if el.region:
            cols.append(sa.Column("region", sa.Text, nullable=True))
        parent_fks = []
        for dep in el.requires:
            dep_pk = universe.elements[dep].primary_key
            parent_fks.append(sa.ForeignKeyConstraint(list(dep_pk), [f"dim_{dep}.{c}" for c in dep_pk]))
        dimensions[name] = sa.Table(el.table_name, md, *cols, *parent_fks)

    overlaps: dict[tuple[str, str], sa.Table] = {}
    for a, b in universe.overlaps:
        ca, cb = overlap_columns(universe, a, b)
        cols = []
        for mapping in (ca, cb):
            for k, col in mapping.items():
                key_type = universe.elements[k].key_type
                assert key_type is not None
                cols.append(sa.Column(col, sql_type(key_type), primary_key=True, autoincrement=False))
        # Index the right-hand key so joins starting from either side are index-backed.
        overlaps[(a, b)] = sa.Table(
            f"overlap_{a}_{b}", md, *cols, sa.Index(f"ix_overlap_{a}_{b}_right", *cb.values())
        )

    dim_cols = []
    for d in universe.dimensions:
        key_type = universe.elements[d].key_type
        assert key_type is not None
        dim_cols.append(sa.Column(d, sql_type(key_type), nullable=True))
    # Partial indexes: a dataset only has values for its own dimensions, and NULLs left out
    # of the indexes make every insert touch a few indexes instead of all of them.
    dim_indexes = [
        sa.Index(f"ix_dataset_{d}", d, sqlite_where=sa.column(d).is_not(None),  # quoted if reserved ("group")
                 postgresql_where=sa.column(d).is_not(None))
        for d in universe.dimensions
    ]
    dataset = sa.Table(
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
    tagged = sa.Table(
        "tagged", md,
        sa.Column("collection_id", sa.Integer, sa.ForeignKey("collection.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("dataset_id", sa.Uuid, sa.ForeignKey("dataset.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("dataset_type_id", sa.Integer, nullable=False),
        sa.Column("data_id_key", sa.String(512), nullable=False),
        sa.UniqueConstraint("collection_id", "dataset_type_id", "data_id_key", name="uq_tagged_one_per_data_id"),
        sa.Index("ix_tagged_dataset", "dataset_id"),
    )
    calibration = sa.Table(
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
    file = sa.Table(
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
    execution = sa.Table(
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
    used = sa.Table(
        "prov_used", md,
        sa.Column("execution_id", sa.Uuid, sa.ForeignKey("execution.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("dataset_id", sa.Uuid, primary_key=True),
        sa.Column("path", sa.String(1024), nullable=True),
        sa.Index("ix_prov_used_dataset", "dataset_id"),
    )
    generated = sa.Table(
        "prov_generated", md,
        sa.Column("dataset_id", sa.Uuid, primary_key=True),
        sa.Column("execution_id", sa.Uuid, sa.ForeignKey("execution.id", ondelete="CASCADE"), nullable=False),
        sa.Column("path", sa.String(1024), nullable=True),
        sa.Index("ix_prov_generated_execution", "execution_id"),
    )
    derived = sa.Table(
        "prov_derived", md,
        sa.Column("dataset_id", sa.Uuid, primary_key=True),
        sa.Column("source_id", sa.Uuid, primary_key=True),
        sa.Index("ix_prov_derived_source", "source_id"),
    )
    return Tables(
        metadata=md, meta=meta, dataset_type=dataset_type, collection=collection,
        collection_chain=collection_chain, dataset=dataset, tagged=tagged, calibration=calibration,
        file=file, execution=execution, used=used, generated=generated, derived=derived,
        dimensions=dimensions, overlaps=overlaps, **integrity_tables(md), **batch_tables(md),
    )


def integrity_tables(md: sa.MetaData) -> dict[str, sa.Table]:
    """Tables of schema 5: files found lost by ``verify --mark-lost``, and where ingested files came from.

    ``file_lost``: one row per dataset whose file `verify` found missing (``reason``
    says how: missing, size or checksum mismatch); `get` of such a dataset raises
    `FileLostError` instead of reading. ``dataset_origin``: the path (or URL) a file was
    ingested from, the ingest plugin that read it, and the extra metadata the plugin
    mapped from its header (a JSON object: ``SELECT json_extract(metadata, '$.airmass')``
    on SQLite, ``metadata::json->>'airmass'`` on PostgreSQL).
    """
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
    return {"file_lost": file_lost, "dataset_origin": dataset_origin}


def batch_tables(md: sa.MetaData) -> dict[str, sa.Table]:
    """The batch service's tables in ``md`` (which must hold ``collection``), by name.

    Foreign keys, and why:

    - ``batch_submission.run_id`` is ``ON DELETE SET NULL``: removing a run (`Registry.remove_run`)
      is never blocked by a submission that wrote it, and the submission's history (jobs,
      states, failures, QC) stays for the operator, its run shown as gone.
    - every other table hangs off its submission with ``ON DELETE CASCADE``: deleting a
      submission deletes all of it; ``job_id`` columns cascade from ``batch_job`` likewise.
    - ``quantum_id`` of events and QC matches and every ``execution_id`` carry no foreign
      key: events are history (kept for as long as their submission), and executions are
      removed with their run, after which the id names an execution that is gone. Reads
      join executions with outer joins.
    """
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
    return {"batch_submission": submission, "batch_job": job, "batch_job_dependency": dependency,
            "batch_quantum": quantum, "batch_event": event, "batch_qc_match": qc_match}


def datasets_view(tables: Tables, universe: DimensionUniverse) -> sa.Select:
    """The SELECT behind ``datasets_view``: one row per dataset, implied dimensions filled.

    A dataset row holds only the dimensions of its own type, so ``band`` of a
    visit-level dataset is NULL there. Here each dimension is the dataset's own
    value or, failing that, the value recorded by a dimension that implies it
    (``band`` and ``day_obs`` from the visit or exposure record, ``band`` from the
    physical filter), derived from the universe's ``implies``, so a custom
    universe gets the same treatment. Columns: ``dataset_id``, ``dataset_type``,
    ``run``, every dimension, ``ingest_date``, ``path``, ``size``, ``checksum``.
    """
    ds = tables.dataset
    joined: sa.FromClause = ds.join(tables.dataset_type, tables.dataset_type.c.id == ds.c.dataset_type_id)
    run = tables.collection.alias("run")
    joined = joined.join(run, run.c.id == ds.c.run_id)
    sources: dict[str, list[sa.ColumnElement]] = {d: [ds.c[d]] for d in universe.dimensions}
    for name in universe.dimensions:
        implied = universe.implied_closure(name)
        if not implied:
            continue
        record = tables.dimensions[name].alias(f"implied_by_{name}")
        # Joined on the dataset's own keys: a record's implied columns are already filled
        # through the whole chain (visit -> physical_filter -> band) when it is inserted.
        joined = joined.outerjoin(record, sa.and_(
            *(record.c[k] == ds.c[k] for k in universe.elements[name].primary_key)))
        for d in implied:
            sources[d].append(record.c[d])
    joined = joined.outerjoin(tables.file, tables.file.c.dataset_id == ds.c.id)
    dims = [(sa.func.coalesce(*cols) if len(cols) > 1 else cols[0]).label(d) for d, cols in sources.items()]
    return sa.select(
        ds.c.id.label("dataset_id"), tables.dataset_type.c.name.label("dataset_type"), run.c.name.label("run"),
        *dims, ds.c.ingest_date, tables.file.c.path, tables.file.c.size, tables.file.c.checksum,
    ).select_from(joined)


def wall_seconds(dialect: str, start: sa.ColumnElement, end: sa.ColumnElement) -> sa.ColumnElement[float]:
    """``end - start`` in seconds as a float, in the SQL of ``dialect`` (``"sqlite"`` or ``"postgresql"``).

    The two databases share no function for it: SQLite stores times as text and has
    ``julianday`` (millisecond resolution), PostgreSQL subtracts timestamps into intervals.
    """
    if dialect == "postgresql":
        return sa.cast(sa.extract("epoch", end - start), sa.Float)
    return (sa.func.julianday(end) - sa.func.julianday(start)) * 86400.0


def executions_view(tables: Tables, dialect: str) -> sa.Select:
    """The SELECT behind ``executions_view``: every execution with its run's name and wall time.

    Columns: ``execution_id``, ``run``, ``task_label``, ``quantum_id``, ``data_id_key``,
    ``status``, ``reason``, ``host``, ``start_time``, ``end_time``, ``wall_seconds``
    (NULL unless both times are known), ``cpu_time``, ``peak_memory``. It exists so
    that "wall time per step" is one plain SQL statement on either database.
    """
    ex, run = tables.execution, tables.collection
    return sa.select(
        ex.c.id.label("execution_id"), run.c.name.label("run"), ex.c.task_label, ex.c.quantum_id,
        ex.c.data_id_key, ex.c.status, ex.c.reason, ex.c.host, ex.c.start_time, ex.c.end_time,
        wall_seconds(dialect, ex.c.start_time, ex.c.end_time).label("wall_seconds"), ex.c.cpu_time,
        ex.c.peak_memory,
    ).select_from(ex.outerjoin(run, run.c.id == ex.c.run_id))


def create_views(conn: sa.Connection, tables: Tables, universe: DimensionUniverse) -> None:
    """Create every view of `VIEWS` (in the connection's schema, like the tables)."""
    conn.execute(CreateView(datasets_view(tables, universe), "datasets_view"))
    conn.execute(CreateView(executions_view(tables, conn.dialect.name), "executions_view"))


def drop_views(conn: sa.Connection) -> None:
    """Drop every view of `VIEWS` that exists (before a migration changes the tables under them)."""
    for name in VIEWS:
        conn.execute(DropView(sa.Table(name, sa.MetaData()), if_exists=True))
