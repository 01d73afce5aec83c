"""Datasets and their file records: inserts with clash checks, lookups by id, removal of datasets and runs."""

from __future__ import annotations

import functools
import operator
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, fields
from typing import Any

import sqlalchemy as sa

from ..dimensions import DimensionUniverse
from ..errors import CollectionError, DatasetExistsError
from ..model import CollectionType, DataId, DatasetRef
from ._collections import CollectionRecords
from ._database import Database
from ._dataset_types import DatasetTypeRecords
from ._db import count_changes
from ._pg_insert import insert_datasets_pg
from ._sqlite_raw import count_statement, raw_statement, run_statement
from ._values import any_of, chunk_size, chunks
from .schema import Tables

_PG_ROWS = 10_000
"""Datasets per statement on PostgreSQL (bounds the arrays of parameters held at once)."""


@dataclass(frozen=True)
class FileRecord:
    """Where a dataset's bytes are and what they were when written."""

    dataset_id: uuid.UUID
    path: str
    size: int
    checksum: str | None
    checksum_algorithm: str | None
    format: str


FILE_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(FileRecord))
"""`FileRecord`'s fields in order: the ``file`` table's columns, and a row's values read by position."""

_FILE_VALUES = operator.attrgetter(*FILE_FIELDS)


class DatasetRecords:
    """The ``dataset`` and ``file`` tables: what was stored, in which run, in which file."""

    def __init__(self, db: Database, tables: Tables, universe: DimensionUniverse,
                 dataset_types: DatasetTypeRecords, collections: CollectionRecords):
        self.db = db
        self.tables = tables
        self.universe = universe
        self.dataset_types = dataset_types
        self.collections = collections

    def refs_from_rows(self, conn: sa.Connection, rows: Sequence[Any], *,
                       runs: dict[int, str] | None = None) -> list[DatasetRef]:
        """Build DatasetRefs from ``dataset`` table rows (run names looked up once per batch).

        ``runs`` may give run names already known by id (it is filled with those looked up).
        """
        if not rows:
            return []
        runs = self.collections.run_names(conn, {r["run_id"] for r in rows}, {} if runs is None else runs)
        out = []
        for r in rows:
            dt = self.dataset_types.by_id(r["dataset_type_id"])
            out.append(DatasetRef(r["id"], dt, DataId({d: r[d] for d in dt.dimensions}), runs[r["run_id"]]))
        return out

    def insert(self, refs: Sequence[DatasetRef], files: Sequence[FileRecord] = (), *,
               register_runs: bool = False) -> None:
        """Insert datasets (already validated and expanded) and their file records in one transaction.

        A dataset that already exists for its type, data id and run raises
        `DatasetExistsError` naming it; nothing is inserted then. ``register_runs``
        registers the refs' runs first when they do not exist (as `CollectionRecords.register`).
        On PostgreSQL the datasets of one run go in one statement (`_pg_insert`): a put is
        the BEGIN and that statement in one round trip, and the caller's COMMIT.
        """
        if not refs:
            return
        runs = {ref.run for ref in refs}
        if self.db.dialect == "postgresql" and len(runs) == 1 and self._insert_pg(refs, files, register_runs):
            return
        with self.db.transaction():
            if register_runs and len(refs) == 1 and self.db.dialect == "sqlite" and self._insert_one_sqlite(refs[0], files):
                return
            if register_runs:
                for run in sorted(runs):
                    self.collections.register(run, CollectionType.RUN)
            self._insert_checked(refs, files)

    def _insert_one_sqlite(self, ref: DatasetRef, files: Sequence[FileRecord]) -> bool:
        """`insert` of one dataset on SQLite, its run found by name in the INSERT; False when the run does not exist.

        A put's run is nearly always there already: looking it up first cost a statement and
        more Python than the insert. When the INSERT finds no RUN of that name it inserts
        nothing, and the caller registers the run (or says why it cannot) and inserts then.
        """
        self.collections.check_name(ref.run)
        type_id = self.dataset_types.find(ref.dataset_type.name)[0]
        key = ref.data_id.key()
        required = ref.data_id.required_items
        dimensions = [d for d in self.universe.dimensions if d in required]
        d, c = self.tables.dataset, self.tables.collection
        statements = self.db.raw_statements()
        with self.db.transaction() as conn:
            insert = raw_statement(conn, statements, "sqlite|insert_dataset_in_run|" + ",".join(dimensions),
                                   lambda: sa.insert(d).from_select(
                                       ["id", "dataset_type_id", "data_id_key", *dimensions, "run_id"],
                                       sa.select(sa.bindparam("id", type_=d.c.id.type),
                                                 sa.bindparam("type_id", type_=d.c.dataset_type_id.type),
                                                 sa.bindparam("key", type_=d.c.data_id_key.type),
                                                 *[sa.bindparam(n, type_=d.c[n].type) for n in dimensions], c.c.id)
                                       .where(c.c.name == sa.bindparam("run"), c.c.type == sa.bindparam("run_type"))))
            try:
                if not count_statement(conn, insert, [(ref.id, type_id, key, *map(required.get, dimensions),
                                                       ref.run, CollectionType.RUN.value)]):
                    return False
                self._insert_files_sqlite(conn, files)
            except sa.exc.IntegrityError as exc:
                run_id = self.collections.run_id(ref.run)
                raise self._clash_error(conn, exc, [ref], {type_id: [(key, run_id, ref)]}, check_again=True) from None
            count_changes(conn, 1 + len(files))
        return True

    def _insert_pg(self, refs: Sequence[DatasetRef], files: Sequence[FileRecord], register_runs: bool) -> bool:
        """`insert` for the datasets of one run on PostgreSQL; False to take the general path instead.

        The general path also handles what is rare here: when nothing could be inserted
        (a run that is missing or not a RUN, datasets that all clash) it runs in the same
        transaction to raise the error that says why.
        """
        run = refs[0].run
        if register_runs:
            self.collections.check_name(run)
        ids = {ref.id for ref in refs}
        if any(f.dataset_id not in ids for f in files):
            return False
        rows: list[dict[str, Any]] = []
        keys_by_type: dict[int, list[tuple[str, int, DatasetRef]]] = {}
        used: set[str] = set()
        for ref in refs:
            type_id, _ = self.dataset_types.find(ref.dataset_type.name)
            key = ref.data_id.key()
            row: dict[str, Any] = {"id": ref.id, "dataset_type_id": type_id, "data_id_key": key}
            required = ref.data_id.required_items
            row.update(required)
            used.update(required)
            rows.append(row)
            keys_by_type.setdefault(type_id, []).append((key, 0, ref))
        _check_no_duplicates(keys_by_type)
        dimensions = [d for d in self.universe.dimensions if d in used]
        files_by_id = {f.dataset_id: f for f in files}
        statements = self.db.raw_statements()
        with self.db.transaction() as conn:
            for start in range(0, len(rows), _PG_ROWS):
                chunk = rows[start:start + _PG_ROWS]
                chunk_files = [files_by_id[r["id"]] for r in chunk if r["id"] in files_by_id]
                done = insert_datasets_pg(conn, self.tables, run, chunk, dimensions, chunk_files,
                                          create_run=register_runs, statements=statements)
                if done.created_run:
                    self.db.forget_collections()
                if not done.inserted:
                    if start == 0:
                        # Nothing inserted (the run is missing or not a RUN, or everything clashed):
                        # the general path, in the same transaction, raises the right error.
                        if register_runs:
                            self.collections.register(run, CollectionType.RUN)
                        self._insert_checked(refs, files)
                        return True
                    raise CollectionError(f"Run {run!r} was removed while datasets were being inserted into it")
                count_changes(conn, len(chunk) + len(chunk_files))
                if len(done.inserted) < len(chunk):
                    run_id = next(iter(done.inserted.values()))
                    clashed: dict[int, list[tuple[str, int, DatasetRef]]] = {}
                    for row, ref in zip(chunk, refs[start:start + _PG_ROWS], strict=True):
                        if row["id"] not in done.inserted:
                            clashed.setdefault(row["dataset_type_id"], []).append((row["data_id_key"], run_id, ref))
                    self._check_not_existing(conn, clashed)
                    raise DatasetExistsError(f"Cannot insert {len(chunk) - len(done.inserted)} dataset(s) into run "
                                             f"{run!r}: they clash with stored datasets")
        return True

    def _insert_checked(self, refs: Sequence[DatasetRef], files: Sequence[FileRecord]) -> None:
        run_ids: dict[str, int] = {}
        type_ids: dict[str, int] = {}
        rows: list[tuple[Any, ...]] = []
        keys_by_type: dict[int, list[tuple[str, int, DatasetRef]]] = {}
        used: dict[str, None] = {}
        for ref in refs:
            name = ref.dataset_type.name
            type_id = type_ids.get(name)
            if type_id is None:
                type_id = type_ids[name] = self.dataset_types.find(name)[0]
            run_id = run_ids.get(ref.run)
            if run_id is None:
                run_id = run_ids[ref.run] = self.collections.run_id(ref.run)
            key = ref.data_id.key()
            required = ref.data_id.required_items
            used.update(dict.fromkeys(required))
            rows.append((ref.id, type_id, run_id, key, required))
            keys_by_type.setdefault(type_id, []).append((key, run_id, ref))
        # The dimension columns these datasets set, in the table's order; the others stay NULL.
        dimensions = [d for d in self.universe.dimensions if d in used]
        # SQLite undoes only the failed statement on a constraint error, so a single put can
        # let the unique constraint find a clash and look for the reason afterwards (one
        # statement fewer per put); PostgreSQL aborts the whole transaction, so check first.
        sqlite = self.db.dialect == "sqlite"
        check_after = len(rows) == 1 and sqlite
        with self.db.transaction() as conn:
            if not check_after:
                self._check_not_existing(conn, keys_by_type)
            try:
                if sqlite:
                    self._insert_rows_sqlite(conn, rows, dimensions, files)
                else:
                    d = self.tables.dataset
                    columns = ["id", "dataset_type_id", "run_id", "data_id_key", *self.universe.dimensions]
                    conn.execute(self.db.statement("insert_dataset", lambda: sa.insert(d)), [
                        dict(zip(columns, (i, t, r, k, *[req.get(c) for c in self.universe.dimensions]), strict=True))
                        for i, t, r, k, req in rows])
                    if files:
                        conn.execute(self.db.statement("insert_file", lambda: sa.insert(self.tables.file)),
                                     [f.__dict__ for f in files])
                count_changes(conn, len(rows) + len(files))
            except sa.exc.IntegrityError as exc:
                raise self._clash_error(conn, exc, refs, keys_by_type, check_again=check_after) from None

    def _clash_error(self, conn: sa.Connection, exc: sa.exc.IntegrityError, refs: Sequence[DatasetRef],
                     keys_by_type: dict[int, list[tuple[str, int, DatasetRef]]], *,
                     check_again: bool) -> DatasetExistsError:
        """The error for an insert of ``refs`` that a constraint refused (``check_again``: look for the clash first).

        Looking again raises the error naming the stored dataset when there is one.
        """
        if check_again:
            self._check_not_existing(conn, keys_by_type)
        detail = str(exc.orig).splitlines()[0]
        if len(refs) == 1 and ("unique" in detail.lower() or "duplicate" in detail.lower()):
            # Checked and absent, so another writer stored it meanwhile (PostgreSQL runs
            # transactions side by side and cannot look again after the error).
            ref = refs[0]
            return DatasetExistsError(
                f"Dataset {ref.dataset_type.name} {{{ref.data_id}}} already exists in run {ref.run!r} "
                "(another writer stored it at the same time); no put ever overwrites a stored dataset")
        return DatasetExistsError(f"Cannot insert datasets: {detail}")

    def _insert_rows_sqlite(self, conn: sa.Connection, rows: Sequence[tuple[Any, ...]], dimensions: Sequence[str],
                            files: Sequence[FileRecord]) -> None:
        """The INSERTs of `_insert_checked` on SQLite, on the DB-API cursor (`_sqlite_raw`): rows are
        ``(id, type id, run id, data id key, required values)``."""
        d = self.tables.dataset
        columns = ["id", "dataset_type_id", "run_id", "data_id_key", *dimensions]
        insert_dataset = raw_statement(conn, self.db.raw_statements(), "sqlite|insert_dataset|" + ",".join(dimensions),
                                       lambda: sa.insert(d).values({c: sa.bindparam(c) for c in columns}))
        run_statement(conn, insert_dataset, [(i, t, r, k, *map(req.get, dimensions)) for i, t, r, k, req in rows])
        self._insert_files_sqlite(conn, files)

    def _insert_files_sqlite(self, conn: sa.Connection, files: Sequence[FileRecord]) -> None:
        """The file rows' INSERT on SQLite, on the DB-API cursor (`_sqlite_raw`)."""
        if not files:
            return
        f = self.tables.file
        insert_file = raw_statement(conn, self.db.raw_statements(), "sqlite|insert_file", lambda: sa.insert(f).values(
            {c: sa.bindparam(c) for c in FILE_FIELDS}))
        run_statement(conn, insert_file, list(map(_FILE_VALUES, files)))

    def _check_not_existing(self, conn: sa.Connection, keys_by_type: dict[int, list[tuple[str, int, DatasetRef]]]) -> None:
        """Raise `DatasetExistsError` naming the first of these (type id -> (data id key, run id, ref)) that is stored."""
        _check_no_duplicates(keys_by_type)
        d = self.tables.dataset
        by_key = self.db.statement("dataset_by_key", lambda: sa.select(d.c.data_id_key, d.c.run_id, d.c.id).where(
            d.c.dataset_type_id == sa.bindparam("type_id"), d.c.data_id_key.in_(sa.bindparam("keys", expanding=True))))
        by_id = self.db.statement("dataset_id_in", lambda: sa.select(d.c.id).where(
            d.c.id.in_(sa.bindparam("ids", expanding=True))))
        by_one = self.db.statement("dataset_clash", lambda: sa.select(
            d.c.dataset_type_id, d.c.data_id_key, d.c.run_id, d.c.id).where(sa.or_(
                sa.and_(d.c.dataset_type_id == sa.bindparam("type_id"), d.c.data_id_key == sa.bindparam("key")),
                d.c.id == sa.bindparam("id"))))
        for type_id, items in keys_by_type.items():
            seen = {(key, run_id): ref for key, run_id, ref in items}
            if len(items) == 1:
                # One dataset (a put): both checks below in one statement, one round trip.
                key, run_id, ref = items[0]
                rows = conn.execute(by_one, {"type_id": type_id, "key": key, "id": ref.id}).all()
                for row_type, row_key, row_run, existing_id in rows:
                    if row_type == type_id and row_key == key and row_run == run_id:
                        raise DatasetExistsError(
                            f"Dataset {ref.dataset_type.name} {{{ref.data_id}}} already exists in run "
                            f"{ref.run!r} (id {existing_id}); no put ever overwrites a stored dataset"
                        )
                if any(row[3] == ref.id for row in rows):
                    raise DatasetExistsError(f"A dataset with id {ref.id} already exists")
                continue
            for chunk in chunks(items):
                found = conn.execute(by_key, {"type_id": type_id, "keys": [k for k, _, _ in chunk]}).all()
                for key, run_id, existing_id in found:
                    clash = seen.get((key, run_id))
                    if clash is not None:
                        raise DatasetExistsError(
                            f"Dataset {clash.dataset_type.name} {{{clash.data_id}}} already exists in run "
                            f"{clash.run!r} (id {existing_id}); no put ever overwrites a stored dataset"
                        )
            ids = [ref.id for _, _, ref in items]
            for chunk in chunks(ids):
                dup = conn.execute(by_id, {"ids": list(chunk)}).first()
                if dup is not None:
                    raise DatasetExistsError(f"A dataset with id {dup[0]} already exists")

    def get_files(self, ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, FileRecord]:
        f = self.tables.file
        # Columns in FileRecord's field order: built positionally (a mapping's keys cost more than the row).
        cols = [f.c[name] for name in FILE_FIELDS]
        stmt = self.db.statement("files_by_id", lambda: sa.select(*cols).where(
            any_of(f.c.dataset_id, "ids", self.db.dialect)))
        one = self.db.statement("files_by_one_id", lambda: sa.select(*cols).where(
            f.c.dataset_id == sa.bindparam("id")))
        out: dict[uuid.UUID, FileRecord] = {}
        with self.db.read(autocommit=True) as conn:
            for chunk in chunks(list(ids), chunk_size(self.db.dialect)):
                # One id (a get): equality, which needs no re-rendering of an IN list.
                result = (conn.execute(one, {"id": chunk[0]}) if len(chunk) == 1
                          else conn.execute(stmt, {"ids": list(chunk)}))
                for row in result:
                    out[row[0]] = FileRecord(*row)
        return out

    def all_files(self) -> Iterator[tuple[FileRecord, DatasetRef]]:
        """Every file record with its dataset (for verify), streamed."""
        f, d = self.tables.file, self.tables.dataset
        stmt = sa.select(d, *[c.label(f"file_{c.name}") for c in f.c]).join(f, f.c.dataset_id == d.c.id)
        with self.db.read() as conn:
            result = conn.execution_options(yield_per=2000).execute(stmt).mappings()
            for rows in result.partitions():
                refs = self.refs_from_rows(conn, rows)
                for row, ref in zip(rows, refs, strict=True):
                    yield FileRecord(**{c.name: row[f"file_{c.name}"] for c in f.c}), ref

    def get(self, ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, DatasetRef]:
        """The datasets of those ids that exist."""
        d = self.tables.dataset
        out: dict[uuid.UUID, DatasetRef] = {}
        stmt = self.db.statement("datasets_by_id", lambda: sa.select(d).where(any_of(d.c.id, "ids", self.db.dialect)))
        with self.db.read(autocommit=True) as conn:
            for chunk in chunks(list(ids), chunk_size(self.db.dialect)):
                rows = conn.execute(stmt, {"ids": list(chunk)}).mappings().all()
                for ref in self.refs_from_rows(conn, rows):
                    out[ref.id] = ref
        return out

    def remove(self, ids: Sequence[uuid.UUID]) -> list[FileRecord]:
        """Delete datasets and their file records; returns the file records (the caller deletes files)."""
        files = self.get_files(ids)
        dialect = self.db.dialect
        # Tags, certifications and file rows go before their datasets; one array per table
        # and slice on PostgreSQL (`any_of`), so each statement's text is prepared once.
        tables = [(t, t.c.dataset_id) for t in (self.tables.tagged, self.tables.calibration, self.tables.file)]
        tables.append((self.tables.dataset, self.tables.dataset.c.id))
        statements = [self.db.statement(f"remove_by_id|{t.name}", functools.partial(_delete_by_id, t, c, dialect))
                      for t, c in tables]
        with self.db.transaction() as conn:
            for chunk in chunks(list(ids), chunk_size(dialect)):
                for stmt in statements:
                    conn.execute(stmt, {"ids": list(chunk)})
        return list(files.values())


def _delete_by_id(table: sa.Table, column: sa.ColumnElement[Any], dialect: str) -> sa.Delete:
    return sa.delete(table).where(any_of(column, "ids", dialect))


def _check_no_duplicates(keys_by_type: dict[int, list[tuple[str, int, DatasetRef]]]) -> None:
    """Raise `DatasetExistsError` when one call names a dataset (type, data id key, run) twice."""
    for items in keys_by_type.values():
        seen: set[tuple[str, int, str]] = set()
        for key, run_id, ref in items:
            if (key, run_id, ref.run) in seen:
                raise DatasetExistsError(
                    f"{ref.dataset_type.name} {{{ref.data_id}}} appears twice in one put to run {ref.run!r}")
            seen.add((key, run_id, ref.run))
