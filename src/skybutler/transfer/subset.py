"""Registry subsets: a new, small SQLite registry holding only what some quanta (or refs) need.

A subset is what a batch job gets instead of the central database (and what a
"limited" transfer between repositories writes): the dimension records of the data
ids it names and everything they depend on, copied as stored (regions included, no
overlap computed again) with the overlap rows among them, the dataset types, the RUN
collections, and dataset and file rows built from the refs and file records given.

Speed: a submission writes one subset per job, thousands at a time. Making the empty
schema (`Registry.create`) takes ~150 ms, so it is made once per process and universe
as a template file with small pages (512 bytes: ~80 KB empty instead of ~450 KB),
and each subset is a copy of it filled through the DB-API with one ``executemany``
per table. Statements are compiled from the registry's own SQLAlchemy tables and
values converted by their SQLite types, so the rows are exactly what the registry
writes itself. Dimension records are read once per source registry (it keeps them:
records never change); `preload_records` reads those of a whole submission in a few
bulk queries instead of a few per job.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import tempfile
import threading
import uuid
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import sqlite as sqlite_dialect

from ..dimensions import DimensionUniverse
from ..errors import DatasetNotFoundError, DatasetTypeError, DimensionError
from ..model import CollectionType, DataId, DatasetRef, DatasetType
from ..registry import FileRecord, Registry

__all__ = ["SUBSET_PAGE_SIZE", "preload_records", "write_subset"]

SUBSET_PAGE_SIZE = 512
"""SQLite page size of subset files (bytes): the smallest SQLite allows, for the smallest files.

An empty registry has ~150 tables and indexes, each at least one page; a subset holds
few rows, so small pages make small files (the runner's scratch registry grows from it).
"""

_DIALECT = sqlite_dialect.dialect()
_lock = threading.Lock()
_templates: dict[str, _Template] = {}
# By universe object first: the universe document's JSON (the key above) takes ~0.5 ms to make,
# once per subset otherwise. The universe is kept so that its id is not reused.
_templates_by_universe: dict[int, tuple[DimensionUniverse, _Template]] = {}
_statements: dict[tuple[int, str, tuple[str, ...]], tuple[str, list[Any]]] = {}


def preload_records(source: Registry, data_ids: Iterable[DataId]) -> int:
    """Read, in bulk, the dimension records that subsets naming these data ids will copy.

    The source registry keeps the records it has read (records never change), so a
    `write_subset` for any of these data ids afterwards runs no query for its records
    (overlap rows are still read per subset). A submission calls this once for its
    whole graph: a few queries per dimension element in all, instead of a few per job.

    Parameters
    ----------
    source
        The registry subsets will be written from.
    data_ids
        Data ids of the quanta and refs of the subsets to come.

    Returns
    -------
    int
        The number of records read or found already read.

    Raises
    ------
    DimensionError
        A data id value has no record in ``source``.
    """
    return sum(len(rows) for rows in _records(source, list(data_ids)).values())


def write_subset(source: Registry, path: str | Path, *, data_ids: Iterable[DataId],
                 dataset_types: Iterable[DatasetType | str] = (), refs: Iterable[DatasetRef] = (),
                 files: Mapping[uuid.UUID, FileRecord] | None = None, runs: Iterable[str] = (),
                 sync: bool = False) -> Path:
    """Write a new SQLite registry at ``path`` holding only what the given data ids and refs need.

    Parameters
    ----------
    source
        The registry the dimension records (and dataset types given by name) come from.
    path
        The file to write; replaced if it exists (written under a temporary name, then
        renamed, so a reader never sees half a subset).
    data_ids
        Data ids whose dimension records are copied (quanta's and refs'), with every
        record they depend on: required and implied dimensions, recursively (a visit
        brings its instrument, physical filter, band and day), and the record-only
        elements whose keys they hold (``visit_detector_region`` for a visit and a
        detector). Overlap rows between copied records are copied too.
    dataset_types
        Dataset types to register (objects, or names registered in ``source``); those of
        ``refs`` are added.
    refs
        Datasets to register, built from the refs themselves: they need not exist in
        ``source`` (outputs of upstream jobs planned in a quantum graph). A ref given
        more than once is registered once.
    files
        File records by dataset id, for refs that have a file; the caller decides paths,
        sizes and checksums. A ref without an entry gets no file row; an entry for a
        dataset not in ``refs`` is an error.
    runs
        RUN collections to create besides the runs of ``refs``.
    sync
        Flush the file to disk before it is renamed (survives a power loss; the
        repositories' ``sync_every_commit``). Without it the file survives a killed process.

    Returns
    -------
    path
        The subset file, to open with ``Registry.open("sqlite:///" + str(path))``.

    Raises
    ------
    DimensionError
        A data id value has no record in ``source``.
    DatasetTypeError
        A dataset type is unknown in ``source``, or given twice with different definitions.
    DatasetNotFoundError
        ``files`` names a dataset that is not among ``refs``.

    Examples
    --------
    >>> write_subset(central.registry, "jobs/j1/subset.sqlite3",  # doctest: +SKIP
    ...              data_ids=[q.data_id for q in quanta] + [r.data_id for r in refs],
    ...              refs=refs, files=central.registry.get_files([r.id for r in inputs]))
    """
    universe = source.universe
    tables = source.tables
    refs = list({ref.id: ref for ref in refs}.values())  # an input of several quanta comes once per quantum
    files = dict(files or {})
    ref_ids = {ref.id for ref in refs}
    stray = [i for i in files if i not in ref_ids]
    if stray:
        raise DatasetNotFoundError(f"Subset {path}: a file record is given for dataset {stray[0]}, which is not "
                                   f"among the refs ({len(stray)} such)")
    types = _dataset_types(source, dataset_types, refs)
    all_data_ids = [*data_ids, *(ref.data_id for ref in refs)]
    records = _records(source, all_data_ids)
    overlaps = {pair: source.dimension_records.overlap_rows(pair[0], pair[1], records[pair[0]], records[pair[1]])
                for pair in universe.overlaps if records.get(pair[0]) and records.get(pair[1])}

    type_ids = {name: i for i, name in enumerate(sorted(types), start=1)}
    run_names = sorted({*runs, *(ref.run for ref in refs)})
    run_ids = {name: i for i, name in enumerate(run_names, start=1)}
    rows: list[tuple[sa.Table, list[dict[str, Any]]]] = []
    for element in universe.elements:  # universe order: required elements come first
        if records.get(element):
            rows.append((tables.dimensions[element], list(records[element].values())))
    for pair, pair_rows in overlaps.items():
        if pair_rows:
            rows.append((tables.overlaps[pair], pair_rows))
    rows.append((tables.dataset_type, [
        {"id": type_ids[name], "name": name, "dimensions": ",".join(dt.dimensions),
         "storage_class": dt.storage_class, "is_calibration": dt.is_calibration} for name, dt in types.items()]))
    rows.append((tables.collection, [
        {"id": run_ids[name], "name": name, "type": CollectionType.RUN.value, "doc": None} for name in run_names]))
    dims = universe.dimensions
    dataset_rows = []
    for ref in refs:
        row: dict[str, Any] = dict.fromkeys(dims)
        row.update(ref.data_id.required_items)
        row.update(id=ref.id, dataset_type_id=type_ids[ref.dataset_type.name], run_id=run_ids[ref.run],
                   data_id_key=ref.data_id.key())
        dataset_rows.append(row)
    rows.append((tables.dataset, dataset_rows))
    rows.append((tables.file, [{**f.__dict__, "dataset_id": i} for i, f in files.items()]))
    return _template(universe).write(Path(path), rows, sync=sync)


def _dataset_types(source: Registry, given: Iterable[DatasetType | str],
                   refs: Sequence[DatasetRef]) -> dict[str, DatasetType]:
    out: dict[str, DatasetType] = {}
    for dt in [*given, *(ref.dataset_type for ref in refs)]:
        if isinstance(dt, str):
            dt = source.get_dataset_type(dt)
        dims = source.universe.closure(dt.dimensions)
        dt = DatasetType(dt.name, dims, dt.storage_class, dt.is_calibration)
        known = out.setdefault(dt.name, dt)
        if known != dt:
            raise DatasetTypeError(f"Dataset type {dt.name!r} is given as {known} and as {dt}")
    return out


def _records(source: Registry, data_ids: Sequence[DataId]) -> dict[str, dict[tuple, dict[str, Any]]]:
    """Raw rows by element and key: those of the data ids, then whatever they require or imply."""
    universe = source.universe
    elements = universe.elements
    # A quantum, its inputs and its outputs mostly share one data id: walk each distinct
    # one once (equal data ids may differ in the implied values they know; keep the most).
    distinct: dict[DataId, DataId] = {}
    for di in data_ids:
        known = distinct.setdefault(di, di)
        if known is not di and len(di.implied) > len(known.implied):
            distinct[di] = di
    wanted: dict[str, set[tuple]] = {}
    # Per set of data id keys: the key sets to add to and the primary keys to read.
    plans: dict[tuple[str, ...], list[tuple[set[tuple], tuple[str, ...]]]] = {}
    for di in distinct.values():
        full = di.full
        names = tuple(full)
        plan = plans.get(names)
        if plan is None:
            given = set(names)
            plan = plans[names] = [(wanted.setdefault(name, set()), el.primary_key) for name, el in elements.items()
                                   if el.primary_key and set(el.primary_key) <= given]
        for keys, pk in plan:
            keys.add(tuple(map(full.__getitem__, pk)))
    out: dict[str, dict[tuple, dict[str, Any]]] = {}
    todo = {name: keys for name, keys in wanted.items() if keys}
    while todo:
        found_now: dict[str, set[tuple]] = {}
        for name, keys in todo.items():
            have = out.setdefault(name, {})
            keys = {k for k in keys if k not in have}
            if not keys:
                continue
            found = source.dimension_records.raw_rows(name, keys)
            el = elements[name]
            if el.is_dimension and len(found) < len(keys):
                missing = sorted(keys - found.keys(), key=str)[0]
                raise DimensionError(f"No {name} record for {dict(zip(el.primary_key, missing, strict=True))} in "
                                     "the source registry; a subset cannot be made without it")
            have.update(found)
            rows = found.values()
            for dep in (*el.requires, *el.implies):
                dep_keys = found_now.setdefault(dep, set())
                dep_pk = elements[dep].primary_key
                for row in rows:
                    key = tuple(map(row.get, dep_pk))
                    if None not in key:  # an implied dimension left empty in this record
                        dep_keys.add(key)
        todo = found_now
    return out


class _Template:
    """The bytes of an empty registry file of one universe, and how to make a subset from them."""

    def __init__(self, image: bytes):
        self.image = image

    def write(self, path: Path, rows: Sequence[tuple[sa.Table, list[dict[str, Any]]]], *,
              sync: bool = False) -> Path:
        """Write the empty registry under a temporary name, fill it with ``rows``, rename it to ``path``."""
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        try:
            try:
                tmp.write_bytes(self.image)
            except FileNotFoundError:  # the directory is made only when missing: one system call less per subset
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp.write_bytes(self.image)
            conn = sqlite3.connect(tmp, isolation_level=None)
            try:
                # A fresh file nobody sees until the rename: no journal, no sync.
                conn.execute("PRAGMA journal_mode=OFF")
                conn.execute("PRAGMA synchronous=OFF")
                conn.execute("BEGIN")
                for table, table_rows in rows:
                    if not table_rows:
                        continue
                    # ingest_date and other columns with server defaults are left to the database.
                    columns = tuple(c.name for c in table.columns
                                    if c.name in table_rows[0] or c.server_default is None)
                    sql, processors = _statement(table, columns)
                    conn.executemany(sql, _values(table_rows, columns, processors))
                conn.execute("COMMIT")
            finally:
                conn.close()
            if sync:
                fd = os.open(tmp, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        return path


def _values(rows: Sequence[Mapping[str, Any]], columns: tuple[str, ...],
            processors: Sequence[Any]) -> list[Sequence[Any]]:
    """Parameter rows for ``executemany``: the columns' values, converted where the column type says so."""
    convert = [(i, p) for i, p in enumerate(processors) if p is not None]
    if not convert:
        return [tuple(map(r.get, columns)) for r in rows]
    out: list[Sequence[Any]] = []
    for r in rows:
        values = list(map(r.get, columns))
        for i, p in convert:
            values[i] = p(values[i])
        out.append(values)
    return out


def _template(universe: DimensionUniverse) -> _Template:
    """The empty registry of ``universe``, made once per process (`Registry.create` takes ~150 ms)."""
    found = _templates_by_universe.get(id(universe))
    if found is not None and found[0] is universe:
        return found[1]
    key = json.dumps(universe.document, sort_keys=True, default=str)
    with _lock:
        template = _templates.get(key)
        if template is None:
            template = _templates[key] = _Template(_empty_image(universe))
        _templates_by_universe[id(universe)] = (universe, template)
        return template


def _empty_image(universe: DimensionUniverse) -> bytes:
    """The bytes of an empty registry file of ``universe`` with `SUBSET_PAGE_SIZE` pages, not in WAL mode."""
    with tempfile.TemporaryDirectory(prefix="skybutler-subset-template-") as directory:
        path = Path(directory) / "template.sqlite3"
        Registry.create(f"sqlite:///{path}", universe=universe).close()
        conn = sqlite3.connect(path, isolation_level=None)
        try:
            # Out of WAL (a page size cannot change in WAL mode; a copy must be one file),
            # then rebuilt with small pages. Registry.open puts the copies back in WAL mode.
            conn.execute("PRAGMA journal_mode=DELETE")
            conn.execute(f"PRAGMA page_size={SUBSET_PAGE_SIZE}")
            conn.execute("VACUUM")
        finally:
            conn.close()
        return path.read_bytes()


def _statement(table: sa.Table, columns: tuple[str, ...]) -> tuple[str, list[Any]]:
    """``INSERT`` text for SQLite (qmark) and the bind processor of each column, compiled once."""
    key = (id(table), table.name, columns)
    found = _statements.get(key)
    if found is None:
        sql = str(table.insert().compile(dialect=_DIALECT, column_keys=list(columns)))
        processors = [table.c[c].type.dialect_impl(_DIALECT).bind_processor(_DIALECT) for c in columns]
        found = _statements[key] = (sql, processors)
    return found
