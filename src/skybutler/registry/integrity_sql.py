"""SQL of the integrity checks (`skybutler.ops.verify`, `Butler.get`): lost marks and file streams.

``file_lost`` (schema 5) holds one row per dataset whose file `verify --mark-lost` found
missing, of the wrong size, or with bytes that no longer match their checksum; a get of
such a dataset raises `FileLostError` instead of reading. These functions are the only
code that touches the table; each works in bulk, on SQLite and PostgreSQL alike.
"""

from __future__ import annotations

import datetime
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from ..model import DatasetRef
from ._bulk import insert_rows
from ._datasets import FILE_FIELDS, FileRecord
from ._values import any_of, chunk_size, chunks

if TYPE_CHECKING:
    from ._registry import Registry

__all__ = ["LostMark", "clear_lost", "count_files", "files_for_read", "insert_rebuilt", "lost_marks", "mark_lost",
           "stored_files", "urls_under"]

_STREAM = 2000


@dataclass(frozen=True)
class LostMark:
    """A dataset recorded lost: when `verify` noticed it and why (``"missing: ..."``, ``"checksum: ..."``)."""

    dataset_id: uuid.UUID
    noticed: datetime.datetime
    reason: str


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC).replace(tzinfo=None)


def mark_lost(registry: Registry, marks: Iterable[tuple[uuid.UUID, str]], *,
              noticed: datetime.datetime | None = None) -> int:
    """Record datasets as lost, with the reason; returns how many were given.

    A dataset already marked keeps the time it was first noticed and takes the new
    reason (a file first missing, then back but corrupted, says so). Datasets that no
    longer exist are skipped (their row went with them).
    """
    when = (noticed or _now()).replace(tzinfo=None)
    rows = [{"dataset_id": i, "noticed": when, "reason": r} for i, r in marks]
    if not rows:
        return 0
    t, d = registry.tables.file_lost, registry.tables.dataset
    from sqlalchemy.dialects import postgresql, sqlite

    insert: Any = postgresql.insert if registry.dialect == "postgresql" else sqlite.insert
    stmt = insert(t)
    stmt = stmt.on_conflict_do_update(index_elements=[t.c.dataset_id], set_={"reason": stmt.excluded.reason})
    with registry.transaction() as conn:
        for chunk in chunks(rows):
            # Locked FOR KEY SHARE (PostgreSQL), as the foreign key's own check: a removal not yet
            # committed is waited for (its datasets are then skipped) rather than failing the insert.
            existing = set(conn.execute(sa.select(d.c.id).where(d.c.id.in_([r["dataset_id"] for r in chunk]))
                                        .with_for_update(key_share=True)).scalars())
            present = [r for r in chunk if r["dataset_id"] in existing]
            if present:
                conn.execute(stmt, present)
    return len(rows)


def clear_lost(registry: Registry, ids: Iterable[uuid.UUID]) -> int:
    """Remove the lost marks of datasets whose files are back and correct; returns how many were removed."""
    ids = list(ids)
    if not ids:
        return 0
    t = registry.tables.file_lost
    removed = 0
    with registry.transaction() as conn:
        for chunk in chunks(ids):
            removed += conn.execute(sa.delete(t).where(t.c.dataset_id.in_(list(chunk)))).rowcount or 0
    return removed


def lost_marks(registry: Registry, ids: Sequence[uuid.UUID] | None = None) -> dict[uuid.UUID, LostMark]:
    """The lost marks of ``ids`` (of every marked dataset when None)."""
    t = registry.tables.file_lost
    out: dict[uuid.UUID, LostMark] = {}
    with registry.database.read() as conn:
        if ids is None:
            results: Iterable[Any] = [conn.execute(sa.select(t))]
        else:
            results = (conn.execute(sa.select(t).where(t.c.dataset_id.in_(list(chunk)))) for chunk in chunks(list(ids)))
        for result in results:
            for row in result.mappings():
                out[row["dataset_id"]] = LostMark(row["dataset_id"], row["noticed"], row["reason"])
    return out


def files_for_read(registry: Registry, ids: Sequence[uuid.UUID],
                   ) -> dict[uuid.UUID, tuple[FileRecord, LostMark | None]]:
    """The file record of each of ``ids`` that has one, with its lost mark if any: one query per 500 ids.

    What a get needs in one round trip (the file joined to its mark), so that refusing
    datasets marked lost costs a get no extra statement.
    """
    db = registry.database
    out: dict[uuid.UUID, tuple[FileRecord, LostMark | None]] = {}
    if len(ids) == 1 and db.dialect == "postgresql":
        # A get of one dataset: on psycopg's cursor (the values are those SQLAlchemy would give).
        with db.read_one() as conn:
            found = db.first_row_raw(conn, "pg|files_for_read_one", lambda: _files_for_read(registry, one=True),
                                     {"id": ids[0]})
        if found is not None:
            record = FileRecord(*found[:_FILE_WIDTH])
            noticed = found[_FILE_WIDTH]
            out[record.dataset_id] = (record, None if noticed is None else LostMark(record.dataset_id, noticed,
                                                                                    found[-1]))
        return out
    with db.read(autocommit=True) as conn:
        one = db.statement("files_for_read_one", lambda: _files_for_read(registry, one=True))
        many = db.statement("files_for_read", lambda: _files_for_read(registry, one=False))
        for chunk in chunks(list(ids), chunk_size(db.dialect)):
            result = conn.execute(one, {"id": chunk[0]}) if len(chunk) == 1 else conn.execute(many, {"ids": list(chunk)})
            for row in result:
                record = FileRecord(*row[:_FILE_WIDTH])
                noticed = row[_FILE_WIDTH]
                out[record.dataset_id] = (record, None if noticed is None else LostMark(record.dataset_id, noticed,
                                                                                        row[-1]))
    return out


_FILE_WIDTH = len(FILE_FIELDS)  # a file row's values come first, then its lost mark's


def _files_for_read(registry: Registry, *, one: bool) -> sa.Select:
    """The file rows of datasets (``:id``, or ``:ids`` when not ``one``), each with its lost mark's columns."""
    f, t = registry.tables.file, registry.tables.file_lost
    assert tuple(c.name for c in f.c) == FILE_FIELDS  # rows become FileRecords in order
    match = f.c.dataset_id == sa.bindparam("id") if one else any_of(f.c.dataset_id, "ids", registry.database.dialect)
    return sa.select(*f.c, t.c.noticed, t.c.reason).select_from(
        f.outerjoin(t, t.c.dataset_id == f.c.dataset_id)).where(match)


def _file_select(registry: Registry, runs: Sequence[str] | None) -> Any:
    f, d = registry.tables.file, registry.tables.dataset
    stmt = sa.select(f.c.dataset_id, f.c.path, f.c.size, f.c.checksum, f.c.checksum_algorithm, f.c.format)
    if runs is not None:
        stmt = stmt.join(d, d.c.id == f.c.dataset_id).where(d.c.run_id.in_([registry.run_id(r) for r in runs]))
    return stmt


def count_files(registry: Registry, runs: Sequence[str] | None = None) -> int:
    """How many file records there are (of datasets in ``runs`` when given): the total of a progress bar."""
    stmt = sa.select(sa.func.count()).select_from(_file_select(registry, runs).subquery())
    with registry.database.read() as conn:
        return int(conn.execute(stmt).scalar_one())


def stored_files(registry: Registry, runs: Sequence[str] | None = None) -> Iterator[FileRecord]:
    """Every file record (of datasets in ``runs`` when given), streamed.

    File records only, without their datasets: a check of every file needs the datasets
    of the few that have a problem, which `Registry.get_datasets` gives afterwards.

    Raises `CollectionError` for a name in ``runs`` that is not a run.
    """
    stmt = _file_select(registry, runs)
    with registry.database.read() as conn:
        result = conn.execution_options(yield_per=_STREAM).execute(stmt)
        for rows in result.partitions():
            for row in rows:
                yield FileRecord(*row)


def urls_under(registry: Registry, prefixes: Sequence[str]) -> set[str]:
    """File paths recorded as full URLs or absolute paths that start with one of ``prefixes``.

    Files ingested in place by a ``direct`` ingest are recorded by URL; when such a file
    lies under the datastore root, `verify` must not call it dark.
    """
    f = registry.tables.file
    if not prefixes:
        return set()
    cond = sa.or_(*[f.c.path.startswith(p, autoescape=True) for p in prefixes])
    with registry.database.read() as conn:
        return set(conn.execute(sa.select(f.c.path).where(cond)).scalars())


def insert_rebuilt(registry: Registry, refs: Sequence[DatasetRef], files: Sequence[FileRecord]) -> int:
    """Insert datasets and their file records in bulk, for `skybutler.ops.rebuild`; returns how many.

    For a registry being rebuilt from files: the refs' types and runs are registered, their
    data ids' records inserted, and nothing else is there, so none of the checks of
    `Registry.insert_datasets` (a clash is still refused by the unique constraints, and
    nothing is inserted then). COPY on PostgreSQL, one executemany on SQLite.
    """
    if not refs:
        return 0
    dims = registry.universe.dimensions
    type_ids = {name: registry.dataset_type_records.find(name)[0] for name in {r.dataset_type.name for r in refs}}
    run_ids = {run: registry.run_id(run) for run in {r.run for r in refs}}
    rows = []
    for ref in refs:
        values = ref.data_id.required_items
        row = {"id": ref.id, "dataset_type_id": type_ids[ref.dataset_type.name], "run_id": run_ids[ref.run],
               "data_id_key": ref.data_id.key()}
        row.update({d: values.get(d) for d in dims})
        rows.append(row)
    with registry.transaction() as conn:
        insert_rows(conn, registry.tables.dataset, rows)
        insert_rows(conn, registry.tables.file, [f.__dict__ for f in files])
    return len(rows)
