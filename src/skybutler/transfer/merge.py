"""Merging what a run produced in one registry (a job's scratch repository) into another.

`merge_run` imports the datasets some execution of the run generated (not the inputs
staged into the source), their file rows, and the run's executions (failed ones too)
with their used / generated / derived edges. It is idempotent: each transaction first
looks up its executions and datasets in the target (by id, and datasets also by type,
data id and run), skips what the target holds identically, refuses what conflicts, and
inserts only the rest with the edges of what it adds; a merge interrupted and repeated
finishes the work without doing any of it twice.

Transactions are bounded and whole: each holds complete executions (an execution, the
datasets it generated with their file rows, its edges), so the target never holds a
dataset without its file row or its generating execution, and at most about
``chunk_size`` rows are written per transaction (an execution with more rows than that
gets a transaction of its own).

Given the target's datastore, each transaction checks, after its insert and before its
commit, that every file its rows name is there at its recorded size: a file deleted since
it was staged out (by an operator, a clean-up) fails the merge instead of leaving a row
without its file. From the insert on, the rows keep out every writer that deletes or
replaces a file no row names (a put replacing a leftover, a removal being finished), so
what is checked is what commits.

The source is read as four streams ordered by execution id (executions; generated
datasets with their rows and files; used edges; derived edges) and joined in Python,
so memory stays flat in the size of the run (except for ``id_map`` with
``new_ids=True``). Rows go from the source's DB-API cursors to the target's without
conversion (see `skybutler.transfer._target_rows`): ``executemany`` on SQLite, ``COPY``
on PostgreSQL.
"""

from __future__ import annotations

import errno
import json
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from ..config import redact_url
from ..datastore import Datastore
from ..errors import CollectionError, ConfigError, DatasetTypeError, FileAccessError, MergeError
from ..model import CollectionType, DatasetType, new_id
from ..registry import FileRecord, Registry
from ._target_rows import (
    datasets_by_id,
    datasets_by_key,
    execution_key,
    executions_by_key,
    existing_ids,
    files_differ,
    insert,
    raw,
    uuid_of,
)

__all__ = ["MergeReport", "merge_run", "remap_details"]

@dataclass
class MergeReport:
    """What a merge did.

    Attributes
    ----------
    run
        The run merged.
    datasets_added, datasets_skipped
        Datasets inserted, and those the target already held identically.
    executions_added, executions_skipped
        The same for executions.
    id_map
        With ``new_ids=True``: source id -> target id of every merged dataset and
        execution (an id the target already held for the same dataset or execution
        when skipped). Empty otherwise: ids are kept.
    transactions
        Transactions committed.
    """

    run: str
    datasets_added: int = 0
    datasets_skipped: int = 0
    executions_added: int = 0
    executions_skipped: int = 0
    id_map: dict[uuid.UUID, uuid.UUID] = field(default_factory=dict)
    transactions: int = 0


def merge_run(target: Registry, source: Registry | str | Path, *, run: str,
              files: Mapping[uuid.UUID, FileRecord] | None = None, new_ids: bool = False,
              chunk_size: int = 20_000, progress: Callable[[MergeReport], None] | None = None,
              datastore: Datastore | None = None) -> MergeReport:
    """Import into ``target`` the datasets, files and provenance that ``source`` produced in ``run``.

    Parameters
    ----------
    target
        The registry merged into (SQLite or PostgreSQL).
    source
        A registry, or the path (or SQLAlchemy URL) of one, e.g. a job's
        ``outcome/registry.sqlite3``; opened read-only.
    run
        The run whose executions are merged, with every dataset they generated (whatever
        its run: those runs are registered in the target too).
    files
        File records by source dataset id that replace the source's file rows (the
        caller maps scratch files to the central datastore's); a dataset without an
        entry keeps the source's row. Their ``dataset_id`` is ignored.
    new_ids
        Give the merged datasets and executions fresh ids (`skybutler.model.new_id`),
        edges following them (used and derived edges to datasets of this merge, and
        top-level string values of an execution's ``details`` that name them). A dataset
        or execution the target already holds (same type, data id and run and the same
        file checksum; same run, task, quantum, data id and start time) is skipped and
        mapped to the target's id, so a repeated merge adds nothing.
    chunk_size
        Rows per transaction, at most (whole executions: one larger than this gets a
        transaction of its own).
    progress
        Called with the report after each committed transaction.
    datastore
        The target's datastore: each transaction then checks, before it commits, that the
        file of every dataset it adds is there at its recorded size (see the module
        docstring). Without it, file rows are written unchecked.

    Returns
    -------
    MergeReport
        What was added and skipped (and the id map with ``new_ids``).

    Raises
    ------
    MergeError
        The source has no such run; a dataset type registered differently in the
        target; a dataset of the same type, data id and run held in the target with
        another id, or the same id held for another dataset or with another file
        checksum; with ``datastore``, the file of a dataset missing or of another size.
        Nothing of the transaction that met it is written (earlier ones stay: merging
        again after the conflict is resolved continues from there).

    Examples
    --------
    >>> report = merge_run(central.registry, "attempt_1/outcome/registry.sqlite3",  # doctest: +SKIP
    ...                    run="HSC/runs/w01", files=central_files)
    >>> report.datasets_added, report.datasets_skipped  # doctest: +SKIP
    (96, 0)
    """
    if chunk_size < 1:
        raise ConfigError(f"chunk_size must be at least 1, not {chunk_size}")
    owned = not isinstance(source, Registry)
    src = _open_source(source) if not isinstance(source, Registry) else source
    try:
        return _Merge(target, src, run, dict(files or {}), new_ids, chunk_size, progress, datastore).run()
    finally:
        if owned:
            src.close()


def _open_source(source: str | Path) -> Registry:
    text = str(source)
    url = text if "://" in text else "sqlite:///" + str(Path(text).absolute())
    return Registry.open(url, writeable=False)


class _Stream:
    """Rows of one source query, taken in groups of equal execution id (the query orders by it)."""

    def __init__(self, rows: Iterable[Any], key: str):
        self._rows = iter(rows)
        self._key = key
        self._next = next(self._rows, None)

    def take(self, execution_id: uuid.UUID) -> list[Any]:
        out = []
        while self._next is not None and self._next[self._key] == execution_id:
            out.append(self._next)
            self._next = next(self._rows, None)
        return out

    @property
    def exhausted(self) -> bool:
        return self._next is None


@dataclass
class _Unit:
    """One execution with everything that goes with it into the same transaction."""

    execution: dict[str, Any]
    generated: list[Any]
    used: list[Any]
    derived: list[Any]

    @property
    def size(self) -> int:
        return 1 + 3 * len(self.generated) + len(self.used) + len(self.derived)


class _Merge:
    def __init__(self, target: Registry, source: Registry, run: str, files: dict[uuid.UUID, FileRecord],
                 new_ids: bool, chunk_size: int, progress: Callable[[MergeReport], None] | None,
                 datastore: Datastore | None):
        self.target, self.source, self.run_name = target, source, run
        self.datastore = datastore
        self.files = {k.hex: v for k, v in files.items()}
        self.new_ids, self.chunk_size, self.progress = new_ids, chunk_size, progress
        self.report = MergeReport(run)
        self.ids: dict[str, str] = {}  # with new_ids: source id -> target id, both as 32-digit hex
        self.where = f"Cannot merge run {run!r} from {redact_url(source.url)} into {redact_url(target.url)}"
        self.type_ids: dict[int, tuple[int, DatasetType]] = {}  # source type id -> target id, type
        self.run_ids: dict[int, int] = {}  # source run id -> target run id
        self.run_names: dict[int, str] = {}  # target run id -> name

    # -- setup -------------------------------------------------------------------------

    def run(self) -> MergeReport:
        row = self.source.collection_records.row(self.run_name, required=False)
        if row is None or row["type"] != CollectionType.RUN.value:
            raise MergeError(f"{self.where}: the source has no run {self.run_name!r}")
        self.source_run_id = row["id"]
        t = self.source.tables
        ex, gen, d = t.execution, t.generated, t.dataset
        in_run = ex.c.run_id == self.source_run_id
        with self.source.database.read() as conn:
            types = conn.execute(sa.select(t.dataset_type).distinct()
                                 .join(d, d.c.dataset_type_id == t.dataset_type.c.id)
                                 .join(gen, gen.c.dataset_id == d.c.id).join(ex, ex.c.id == gen.c.execution_id)
                                 .where(in_run)).mappings().all()
            run_rows = conn.execute(sa.select(t.collection.c.id, t.collection.c.name).where(sa.or_(
                t.collection.c.id == self.source_run_id,
                t.collection.c.id.in_(sa.select(d.c.run_id).join(gen, gen.c.dataset_id == d.c.id)
                                      .join(ex, ex.c.id == gen.c.execution_id).where(in_run))))).all()
        # One transaction for the registrations: a job's merge is small, and a commit is most of its cost.
        with self.target.transaction():
            self._register(types, run_rows)
        if self.new_ids:
            self._assign_ids()
        pending: list[_Unit] = []
        rows = 0
        for unit in self._units():
            if pending and rows + unit.size > self.chunk_size:
                self._write(pending)
                pending, rows = [], 0
            pending.append(unit)
            rows += unit.size
        if pending:
            self._write(pending)
        self.report.id_map = {uuid_of(k): uuid_of(v) for k, v in self.ids.items()}
        return self.report

    def _register(self, types: Sequence[Any], run_rows: Sequence[Any]) -> None:
        """Register the dataset types and runs of the merge in the target; map the source's ids to the target's."""
        for r in types:
            dt = DatasetType(r["name"], tuple(r["dimensions"].split(",")) if r["dimensions"] else (),
                             r["storage_class"], bool(r["is_calibration"]))
            try:
                self.target.register_dataset_type(dt)
            except DatasetTypeError as exc:
                raise MergeError(f"{self.where}: {exc}") from None
            self.type_ids[r["id"]] = self.target.dataset_type_records.find(dt.name)
        for run_id, name in run_rows:
            try:
                self.target.register_collection(name, CollectionType.RUN)
            except CollectionError as exc:
                raise MergeError(f"{self.where}: {exc}") from None
            self.run_ids[run_id] = self.target.run_id(name)
            self.run_names[self.run_ids[run_id]] = name

    # -- reading the source ------------------------------------------------------------

    def _generated_select(self, *columns: Any) -> sa.Select:
        t = self.source.tables
        ex, gen, d, f = t.execution, t.generated, t.dataset, t.file
        return (sa.select(gen.c.execution_id.label("g_execution_id"), *columns)
                .select_from(gen.join(ex, ex.c.id == gen.c.execution_id).join(d, d.c.id == gen.c.dataset_id)
                             .outerjoin(f, f.c.dataset_id == d.c.id))
                .where(ex.c.run_id == self.source_run_id).order_by(gen.c.execution_id))

    def _rows(self, conn: sa.Connection, stmt: sa.Select) -> Iterator[dict[str, Any]]:
        """Rows of a source query as dicts of raw values: ids as 32-digit hex, times as text.

        From SQLite (job outcomes) the values are read as stored, with no conversion,
        and a SQLite target takes them as they are: converting 100,000 ids and times
        into objects and back was most of a merge's time.
        """
        if conn.dialect.name == "sqlite":
            sql = str(stmt.compile(dialect=conn.dialect, compile_kwargs={"literal_binds": True}))
            cursor = conn.connection.cursor()  # several open at once: the four streams
            try:
                cursor.execute(sql)
                keys = [d[0] for d in cursor.description]
                while batch := cursor.fetchmany(2000):
                    for row in batch:
                        yield dict(zip(keys, row, strict=True))
            finally:
                cursor.close()
        else:
            result = conn.execution_options(yield_per=2000).execute(stmt)
            keys = list(result.keys())
            for row in result:
                yield {k: raw(v) for k, v in zip(keys, row, strict=True)}

    def _units(self) -> Iterator[_Unit]:
        t = self.source.tables
        ex, gen, used, dv, d, f = t.execution, t.generated, t.used, t.derived, t.dataset, t.file
        in_run = ex.c.run_id == self.source_run_id
        file_cols = [c.label(f"f_{c.name}") for c in f.c if c.name != "dataset_id"]
        with self.source.database.read() as conn:
            executions = self._rows(conn, sa.select(ex).where(in_run).order_by(ex.c.id))
            generated = _Stream(self._rows(conn, self._generated_select(
                gen.c.path.label("g_path"), *d.c, *file_cols)), "g_execution_id")
            used_rows = _Stream(self._rows(conn, sa.select(used).join(ex, ex.c.id == used.c.execution_id)
                                           .where(in_run).order_by(used.c.execution_id)), "execution_id")
            derived = _Stream(self._rows(conn, sa.select(
                gen.c.execution_id.label("g_execution_id"), dv.c.dataset_id, dv.c.source_id)
                .select_from(dv.join(gen, gen.c.dataset_id == dv.c.dataset_id)
                             .join(ex, ex.c.id == gen.c.execution_id))
                .where(in_run).order_by(gen.c.execution_id)), "g_execution_id")
            for row in executions:
                eid = row["id"]
                yield _Unit(row, generated.take(eid), used_rows.take(eid), derived.take(eid))
            if not (generated.exhausted and used_rows.exhausted and derived.exhausted):
                raise MergeError(f"{self.where}: the source's provenance rows do not come in execution order "
                                 "(a database whose UUID ordering differs between queries?)")

    def _incoming_file(self, row: Any) -> tuple[str | None, int | None, dict[str, Any] | None]:
        """(checksum, size, file row without dataset_id) of a generated dataset, from ``files`` or the source."""
        given = self.files.get(row["id"])
        if given is not None:
            rec = {k: v for k, v in given.__dict__.items() if k != "dataset_id"}
        elif row["f_path"] is not None:
            rec = {k: row[f"f_{k}"] for k in ("path", "size", "checksum", "checksum_algorithm", "format")}
        else:
            return None, None, None
        return rec["checksum"], rec["size"], rec

    # -- new ids -----------------------------------------------------------------------

    def _assign_ids(self) -> None:
        """Map every source dataset and execution to the target's id for it, or a fresh one."""
        t = self.source.tables
        ex, d, f = t.execution, t.dataset, t.file
        with self.source.database.read() as conn:
            datasets = list(self._rows(conn, self._generated_select(
                *d.c, *(c.label(f"f_{c.name}") for c in f.c if c.name != "dataset_id"))))
            executions = list(self._rows(conn, sa.select(
                ex.c.id, ex.c.task_label, ex.c.quantum_id, ex.c.data_id_key, ex.c.start_time)
                .where(ex.c.run_id == self.source_run_id)))
        ids = self.ids
        with self.target.database.read() as tconn:
            keys = [self._target_key(r) for r in datasets]
            found = datasets_by_key(self.target, tconn, keys)
            for row, key in zip(datasets, keys, strict=True):
                existing = found.get(key)
                if existing is not None:
                    checksum, size, _ = self._incoming_file(row)
                    if files_differ(existing[1], existing[2], checksum, size):
                        raise MergeError(f"{self.where}: {self._describe(row)} is held in the target as dataset "
                                         f"{uuid_of(existing[0])} with another file (checksum {existing[1]}, size "
                                         f"{existing[2]}; source dataset {uuid_of(row['id'])}: checksum {checksum}, "
                                         f"size {size})")
                    ids[row["id"]] = existing[0]
                else:
                    ids[row["id"]] = new_id().hex
            matches = executions_by_key(self.target, tconn, self.run_ids[self.source_run_id], executions)
            for row in executions:
                ids[row["id"]] = matches.get(execution_key(row)) or new_id().hex

    # -- writing the target ------------------------------------------------------------

    def _target_key(self, row: Any) -> tuple[int, int, str]:
        return self.type_ids[row["dataset_type_id"]][0], self.run_ids[row["run_id"]], row["data_id_key"]

    def _describe(self, row: Any) -> str:
        dt = self.type_ids[row["dataset_type_id"]][1]
        data_id = ", ".join(f"{k}={row[k]}" for k in dt.dimensions)
        return f"dataset {dt.name} {{{data_id}}} in run {self.run_names[self.run_ids[row['run_id']]]!r}"

    def _write(self, units: Sequence[_Unit]) -> None:
        target, tables = self.target, self.target.tables
        mapped = self.ids.get if self.new_ids else None

        def m(value: str) -> str:
            return mapped(value, value) if mapped is not None else value

        generated = [g for u in units for g in u.generated]
        with target.transaction() as conn:
            existing_execs = existing_ids(conn, tables.execution, [m(u.execution["id"]) for u in units])
            by_id = datasets_by_id(target, conn, [m(g["id"]) for g in generated])
            fresh = [g for g in generated if m(g["id"]) not in by_id]
            by_key = datasets_by_key(target, conn, [self._target_key(g) for g in fresh])
            dataset_rows, file_rows, skipped = [], [], 0
            described: dict[str, Any] = {}  # target id -> the source row, for a missing file's message
            added: set[str] = set()
            dataset_columns = [c.name for c in tables.dataset.c]
            for g in generated:
                checksum, size, rec = self._incoming_file(g)
                held = by_id.get(m(g["id"]))
                if held is not None:
                    if held[:3] != self._target_key(g):
                        dt = target.dataset_type_records.by_id(held[0])
                        what = f"{dt.name} {{{held[2]}}} in run {self.run_names.get(held[1], held[1])!r}"
                        raise MergeError(f"{self.where}: {self._describe(g)} has id {uuid_of(g['id'])}, which the "
                                         f"target holds for another dataset: {what} (target id "
                                         f"{uuid_of(m(g['id']))})")
                    if files_differ(held[3], held[4], checksum, size):
                        raise MergeError(f"{self.where}: {self._describe(g)} (source id {uuid_of(g['id'])}, target "
                                         f"id {uuid_of(m(g['id']))}) has checksum {checksum} and size {size} in the "
                                         f"source but {held[3]} and {held[4]} in the target")
                    skipped += 1
                    continue
                clash = by_key.get(self._target_key(g))
                if clash is not None:
                    raise MergeError(f"{self.where}: {self._describe(g)} is held in the target with id "
                                     f"{uuid_of(clash[0])}; the source's has id {uuid_of(g['id'])}")
                new = m(g["id"])
                added.add(new)
                row = {**g, "id": new, "dataset_type_id": self.type_ids[g["dataset_type_id"]][0],
                       "run_id": self.run_ids[g["run_id"]]}
                dataset_rows.append(tuple(row[c] for c in dataset_columns))
                if rec is not None:
                    file_rows.append((new, rec["path"], rec["size"], rec["checksum"], rec["checksum_algorithm"],
                                      rec["format"]))
                    described[new] = g
            execution_columns = [c.name for c in tables.execution.c]
            execution_rows = []
            new_execs: set[str] = set()
            for u in units:
                eid = m(u.execution["id"])
                if eid in existing_execs:
                    continue
                new_execs.add(eid)
                row = {**u.execution, "id": eid}
                row["run_id"] = self.run_ids[row["run_id"]] if row["run_id"] is not None else None
                if self.new_ids and row.get("details"):
                    row["details"] = self._remap_details(row["details"])
                execution_rows.append(tuple(row[c] for c in execution_columns))
            # Edges go with what this transaction adds: a skipped dataset or execution has its edges already.
            generated_rows = [(m(g["g_execution_id"]), m(g["id"]), g["g_path"]) for g in generated
                              if m(g["id"]) in added]
            used_rows = [(m(r["execution_id"]), m(r["dataset_id"]), r["path"]) for u in units for r in u.used
                         if m(r["execution_id"]) in new_execs]
            derived_rows = list(dict.fromkeys((m(r["dataset_id"]), m(r["source_id"])) for u in units
                                              for r in u.derived if m(r["dataset_id"]) in added))
            try:
                insert(conn, tables.execution, execution_columns, execution_rows)
                insert(conn, tables.dataset, dataset_columns, dataset_rows)
                insert(conn, tables.file, ["dataset_id", "path", "size", "checksum", "checksum_algorithm", "format"],
                        file_rows)
                insert(conn, tables.generated, ["execution_id", "dataset_id", "path"], generated_rows)
                insert(conn, tables.used, ["execution_id", "dataset_id", "path"], used_rows)
                insert(conn, tables.derived, ["dataset_id", "source_id"], derived_rows)
                # Large merges grow the tables the planner needs statistics of (see Database.count_changes).
                target.database.count_changes(conn, len(dataset_rows) + len(file_rows))
            except conn.dialect.loaded_dbapi.IntegrityError as exc:
                detail = str(exc).strip().splitlines()[0]
                raise MergeError(f"{self.where}: the target changed during the merge ({detail}); "
                                 "merge again") from None
            if self.datastore is not None:
                self._check_files(file_rows, described)
        self.report.datasets_added += len(dataset_rows)
        self.report.datasets_skipped += skipped
        self.report.executions_added += len(execution_rows)
        self.report.executions_skipped += len(units) - len(execution_rows)
        self.report.transactions += 1
        if self.progress is not None:
            self.progress(self.report)

    def _check_files(self, file_rows: Sequence[tuple[Any, ...]], described: Mapping[str, Any]) -> None:
        """Raise `MergeError` (the transaction then rolls back) unless every file the rows name is there at its size.

        Sizes only: a checksum would read every byte of the job's outputs again while the
        transaction holds the write lock. Other bytes of the same size at the path come only
        from a writer that replaced a file no row named, a put of the same dataset, whose row
        then clashes with this merge's.
        """
        store = self.datastore
        assert store is not None

        def found(path: str) -> int | None:
            try:
                return store.size(path)
            except FileAccessError as exc:
                if exc.errno != errno.ENOENT:  # the store cannot be reached: say so, not "missing"
                    raise MergeError(f"{self.where}: cannot check the file {path!r} in the datastore at "
                                     f"{store.root}: {exc}; nothing of this transaction was merged") from None
                return None

        # An absolute location (a "direct" ingest) is not the datastore's own: not checked.
        rows = [r for r in file_rows if Datastore.owns(r[1])]
        if len(rows) > 1 and not store.is_local:  # a round trip each: overlap them
            with ThreadPoolExecutor(max_workers=min(8, len(rows)), thread_name_prefix="skybutler-merge") as pool:
                sizes = list(pool.map(found, [r[1] for r in rows]))
        else:
            sizes = [found(r[1]) for r in rows]
        for (dataset_id, path, size, *_), held in zip(rows, sizes, strict=True):
            if held == size:
                continue
            what = "is missing" if held is None else f"has {held} bytes, not the {size} recorded"
            raise MergeError(f"{self.where}: the file {path!r} of {self._describe(described[dataset_id])} (dataset "
                             f"{uuid_of(dataset_id)}) {what} in the datastore at {store.root} (deleted or "
                             "changed after the job staged it out?); nothing of this transaction was merged")

    def _remap_details(self, text: str) -> str:
        return remap_details(text, self.ids.get)


def remap_details(text: str, mapped: Callable[[str], str | None]) -> str:
    """An execution's ``details`` JSON with the ids it names replaced by their new ones.

    Parameters
    ----------
    text
        The ``details`` column: a JSON object (anything else is returned as it is).
    mapped
        Gives the new id, as 32 hex digits, of an old one given as 32 hex digits (None: keep it).

    Returns
    -------
    str
        ``text`` unchanged when no top-level string value names a mapped id; otherwise the
        object with those values replaced (canonical UUID form), keys sorted.
    """
    try:
        details = json.loads(text)
    except ValueError:
        return text
    if not isinstance(details, dict):
        return text
    changed = False
    for key, value in details.items():
        if isinstance(value, str) and len(value) == 36:
            try:
                new = mapped(uuid.UUID(value).hex)
            except ValueError:
                continue
            if new is not None:
                details[key] = str(uuid_of(new))
                changed = True
    return json.dumps(details, sort_keys=True) if changed else text
