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
writes itself.
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

__all__ = ["SUBSET_PAGE_SIZE", "write_subset"]

SUBSET_PAGE_SIZE = 512
"""SQLite page size of subset files (bytes): the smallest SQLite allows, for the smallest files.

An empty registry has ~150 tables and indexes, each at least one page; a subset holds
few rows, so small pages make small files (the runner's scratch registry grows from it).
"""

_DIALECT = sqlite_dialect.dialect()
_lock = threading.Lock()
_templates: dict[str, _Template] = {}
_statements: dict[tuple[int, str, tuple[str, ...]], tuple[str, list[Any]]] = {}


def write_subset(source: Registry, path: str | Path, *, data_ids: Iterable[DataId],
                 dataset_types: Iterable[DatasetType | str] = (), refs: Iterable[DatasetRef] = (),
                 files: Mapping[uuid.UUID, FileRecord] | None = None, runs: Iterable[str] = ()) -> Path:
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
    return _template(universe).write(Path(path), rows)


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
    wanted: dict[str, set[tuple]] = {}
    plans: dict[tuple[str, ...], list[tuple[str, tuple[str, ...]]]] = {}
    for di in data_ids:
        full = di.full
        names = tuple(full)
        plan = plans.get(names)
        if plan is None:
            given = set(names)
            plan = plans[names] = [(name, el.primary_key) for name, el in elements.items()
                                   if el.primary_key and set(el.primary_key) <= given]
        for name, pk in plan:
            wanted.setdefault(name, set()).add(tuple(full[k] for k in pk))
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
            for row in found.values():
                for dep in (*el.requires, *el.implies):
                    dep_pk = elements[dep].primary_key
                    if all(row.get(k) is not None for k in dep_pk):
                        found_now.setdefault(dep, set()).add(tuple(row[k] for k in dep_pk))
        todo = found_now
    return out


class _Template:
    """The bytes of an empty registry file of one universe, and how to make a subset from them."""

    def __init__(self, image: bytes):
        self.image = image

    def write(self, path: Path, rows: Sequence[tuple[sa.Table, list[dict[str, Any]]]]) -> Path:
        """Write the empty registry under a temporary name, fill it with ``rows``, rename it to ``path``."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        try:
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
                    conn.executemany(sql, [
                        tuple(p(r.get(c)) if p is not None else r.get(c)
                              for c, p in zip(columns, processors, strict=True)) for r in table_rows])
                conn.execute("COMMIT")
            finally:
                conn.close()
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        return path


def _template(universe: DimensionUniverse) -> _Template:
    """The empty registry of ``universe``, made once per process (`Registry.create` takes ~150 ms)."""
    key = json.dumps(universe.document, sort_keys=True, default=str)
    with _lock:
        template = _templates.get(key)
        if template is None:
            template = _templates[key] = _Template(_empty_image(universe))
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
