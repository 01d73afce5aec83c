"""Removing a run from the registry: its datasets, their file records, memberships and provenance, in one transaction.

A run can hold a million datasets, so every statement here is one pass over the run's
ids, never a statement per dataset and never the same subquery evaluated again: the ids
are put once into a temporary table (one ``INSERT ... SELECT``), and each DELETE is keyed
on it. A table that holds dataset ids (found from the schema's foreign keys, plus the
provenance edges, which have none) is only touched when it has any row at all: most
repositories have no lost files, origins or certifications, and a DELETE that finds
nothing still costs a pass over the run. (Not an ``EXISTS`` over the run's ids first:
PostgreSQL plans an ``EXISTS`` for its first row, and against a table of a million ids
without an index that plan compared every row with every id, 472 s for 5,000 tagged rows
at 1M; the DELETE itself hashes the ids, 0.5 s.)

Why the children go before the datasets: the file rows are read anyway (their paths), and
deleting them in the same pass costs little. Every table that refers to ``dataset.id`` does
so ``ON DELETE CASCADE``, so the database still runs one lookup per deleted dataset and
table, whether it finds rows or not (PostgreSQL one trigger call each, ~2 µs; SQLite one
index probe each): no order of statements avoids them short of disabling the keys, which
this does not do. PostgreSQL, 1,000,000 datasets: a bare DELETE of the run's datasets, the
cascade deleting the file rows, 12.3-12.5 s; file rows first, then the datasets, 12.4 s, of
which the triggers of the five referencing tables 10 s; without triggers (measured with
``session_replication_role = replica``, never used here) 0.5 s. Every such foreign key
column is indexed (`unindexed_references` lists any that is not), so the lookups are
index probes.

All of it runs in the caller's transaction (or its own): a failure or a killed process
changes nothing; the caller deletes the files after the commit (`skybutler._butler_remove`).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from typing import Any

import sqlalchemy as sa

from .._gc import paused_gc
from ..errors import CollectionError
from ..model import uuids_from_hex
from . import provenance_sql
from ._collections import CollectionRecords
from ._database import Database
from ._datasets import FILE_FIELDS, FileRecord
from .schema import Tables

__all__ = ["dataset_references", "has_rows", "remove_run", "unindexed_references"]

_NAMES = itertools.count()  # temporary tables' names, unique within a process
_HASHED_ID_BYTES = 64  # PostgreSQL's hash of the run's ids: 61 bytes per id measured at 1,000,000
_MAX_ID_MEMORY_KB = 512 * 1024  # beyond ~8M ids the hash spills to disk in batches rather than take more


def dataset_references(tables: Tables) -> list[sa.Column[Any]]:
    """The columns whose foreign key refers to ``dataset.id`` (file, tagged, calibration...), by table name."""
    target = tables.dataset.c.id
    return sorted((fk.parent for table in tables.metadata.tables.values() for fk in table.foreign_keys
                   if fk.column is target), key=lambda c: (c.table.name, c.name))


def unindexed_references(tables: Tables) -> list[str]:
    """``table.column`` of every reference to ``dataset.id`` with no index that starts with it (should be none).

    Deleting a dataset looks up each referencing table by that column; without an index
    that is a scan of the table per deleted dataset.
    """
    out = []
    for column in dataset_references(tables):
        table = column.table
        leading = [list(index.columns)[0] for index in getattr(table, "indexes", ())]
        leading += [list(table.primary_key.columns)[0]] if table.primary_key.columns else []
        if not any(c is column for c in leading):
            out.append(f"{table.name}.{column.name}")
    return out


def remove_run(db: Database, tables: Tables, collections: CollectionRecords, run: str) -> list[FileRecord]:
    """Delete a run with its datasets, file records, memberships and executions; returns the file records.

    Raises
    ------
    CollectionError
        The run does not exist, is not a RUN, or is a child of a CHAINED collection.
    """
    d, f, c, chain = tables.dataset, tables.file, tables.collection, tables.collection_chain
    with db.transaction() as conn:
        # Before the run's row: deleting the run reaches the chain table through its foreign
        # keys, so a chain changed meanwhile (its table lock taken, the run's row then awaited
        # to add it as a child) would deadlock with this removal; it now waits for it instead.
        db.lock_table(conn, chain, "ROW EXCLUSIVE")
        run_id = collections.run_id(run)
        if db.dialect == "postgresql":
            # Taken first: a put into this run (which locks the run's row FOR KEY SHARE through
            # its foreign key) is waited for, and one that starts later waits for this removal,
            # so no dataset enters the run between the reading of its ids and their deletion.
            conn.execute(sa.select(c.c.id).where(c.c.id == run_id).with_for_update())
        parents = conn.execute(sa.select(c.c.name).join(chain, chain.c.parent_id == c.c.id)
                               .where(chain.c.child_id == run_id)).scalars().all()
        if parents:
            raise CollectionError(f"Run {run!r} is in chain(s) {', '.join(parents)}; remove it there first")
        ids = _fill_ids(conn, d, run_id)
        in_run = sa.select(ids.c.id)
        restore = _memory_for_ids(conn, ids)
        # One pass over the file rows: deleted and returned together, positionally in
        # FileRecord's field order (a mapping per row cost half the removal at 1M), the id
        # as the driver gives it (SQLite: hex text, turned into UUIDs column-wise). The
        # collector is paused while the driver makes a tuple per row too: the fetch of
        # 1,000,000 rows cost 6.5 s of CPU with it running, 2.7 s without (PostgreSQL).
        with paused_gc():
            rows = conn.execute(
                sa.delete(f).where(f.c.dataset_id.in_(in_run))
                .returning(sa.type_coerce(f.c.dataset_id, sa.String), *[f.c[name] for name in FILE_FIELDS[1:]])).all()
            files = _file_records(rows)
        for column in dataset_references(tables):
            if column.table is not f and has_rows(conn, column.table):
                conn.execute(sa.delete(column.table).where(column.in_(in_run)))
        provenance_sql.delete_run_provenance(conn, tables, run_id, in_run)
        restore()
        conn.execute(sa.delete(d).where(d.c.run_id == run_id))
        db.forget_collections()
        conn.execute(sa.delete(c).where(c.c.id == run_id))
        conn.execute(sa.schema.DropTable(ids))
    return files


def has_rows(conn: sa.Connection, table: sa.Table) -> bool:
    """Whether ``table`` has any row (answered from its first row, whatever its size)."""
    return bool(conn.execute(sa.select(sa.exists().select_from(table))).scalar())


def _memory_for_ids(conn: sa.Connection, ids: sa.Table) -> Callable[[], None]:
    """PostgreSQL: raise this transaction's ``work_mem`` so that a hash of the ``ids`` fits; returns the undo.

    The statements keyed on the run's ids hash them. With the default 4 MB, a million ids
    (61 MB of hash) were split into 8 batches written to disk: the file rows' DELETE took
    1.8-2.2 s, in memory 1.1-1.4 s. Set for this transaction only, and put back once the
    ids are no longer joined (a failure rolls it back with the rest). The number of ids is
    the table's statistics (`_fill_ids` analyzes it). Never more than `_MAX_ID_MEMORY_KB`
    (a server's memory is shared: a run of many millions spills to disk instead).
    """
    if conn.dialect.name != "postgresql":
        return lambda: None
    count, setting, current_kb = conn.execute(sa.text(
        "SELECT c.reltuples, current_setting('work_mem'), s.setting::bigint FROM pg_class c, pg_settings s "
        f"WHERE c.oid = 'pg_temp.{ids.name}'::regclass AND s.name = 'work_mem'")).one()
    needed_kb = min(int(max(count, 0) * _HASHED_ID_BYTES) // 1024, _MAX_ID_MEMORY_KB)
    if current_kb >= needed_kb:
        return lambda: None
    set_work_mem = sa.text("SELECT set_config('work_mem', :value, true)")
    conn.execute(set_work_mem, {"value": f"{needed_kb}kB"})

    def restore() -> None:
        conn.execute(set_work_mem, {"value": setting})

    return restore


def _fill_ids(conn: sa.Connection, d: sa.Table, run_id: int) -> sa.Table:
    """A temporary table holding the ids of the run's datasets (one ``INSERT ... SELECT``), created in ``conn``."""
    postgresql = conn.dialect.name == "postgresql"
    # The temporary schema by name, so the registry's schema_translate_map (None -> the
    # repository's PostgreSQL schema) leaves the table where temporary tables live.
    # SQLite: keyed on the id, without a rowid (each key stored once), so an ``IN`` uses the
    # table itself rather than building an index of a million ids per statement; PostgreSQL
    # joins by hashing the table, which needs no index (building one costs more than a join).
    ids = sa.Table(f"skybutler_run_ids_{next(_NAMES)}", sa.MetaData(),
                   sa.Column("id", d.c.id.type, primary_key=not postgresql),
                   schema="pg_temp" if postgresql else "temp",
                   prefixes=["TEMPORARY"] if postgresql else [],
                   postgresql_on_commit="DROP", sqlite_with_rowid=False)
    conn.execute(sa.schema.CreateTable(ids))
    conn.execute(sa.insert(ids).from_select(["id"], sa.select(d.c.id).where(d.c.run_id == run_id)))
    if postgresql:
        # PostgreSQL's autovacuum never analyzes temporary tables: without this the planner
        # guesses their size and picks per-row index probes for a million ids.
        conn.execute(sa.text(f"ANALYZE pg_temp.{ids.name}"))
    return ids


def _file_records(rows: Sequence[Sequence[Any]]) -> list[FileRecord]:
    """`FileRecord` objects from rows in its field order, the id as the driver returned it."""
    if not rows:
        return []
    # Paused collector: a million small objects, all referenced, would trigger many full
    # collections that free nothing.
    with paused_gc():
        columns = list(zip(*rows, strict=True))
        ids = list(columns[0])
        if type(ids[0]) is str:
            ids = uuids_from_hex(ids)
        return list(map(FileRecord, ids, *columns[1:]))
