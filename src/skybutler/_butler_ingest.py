"""How `Butler.ingest` brings existing files in: checked first, then transferred and committed together.

Every file is checked (it exists, is readable, and its content reads as its dataset type's
storage class) and every stored name planned and checked unique before any file is
transferred, so a refused file leaves no trace; the transfers are then committed with the
registry rows as a put's files are (see ``_butler_put``). The rows of one ingest, in one
transaction: the datasets and their files, the dimension records the files need (given by
an ingest plugin: inserted when absent, refused when they exist with other values), and
each dataset's origin (the path it was ingested from, the plugin, the plugin's metadata).
"""

from __future__ import annotations

import datetime
import errno
import os
import stat
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, BinaryIO, cast

from ._butler_put import check_leftover, commit_datasets, file_record
from ._gc import paused_gc
from .datastore import FileTemplate, scan_local
from .datastore.backends import is_url
from .errors import (
    ConfigError,
    DatasetExistsError,
    DimensionError,
    FileAccessError,
    FormatError,
    StorageClassError,
    TemplateError,
)
from .formats import Formatter, file_suffixes, guess_format, last_extension
from .model import DataId, DatasetRef, DatasetType, dataset_ids_for_ingest
from .registry import DatasetOrigin, pipeline_sql
from .registry.origin_sql import insert_origins

if TYPE_CHECKING:
    from .datastore import Datastore, FileTemplates, PendingFile
    from .registry import FileRecord, Registry

__all__ = ["FileDataset", "check_contents", "check_records", "check_sources", "ingest", "ingest_files",
           "sync_records"]

Records = Mapping[str, Sequence[Mapping[str, Any]]]
"""Dimension records by element name."""
Expand = Callable[[Sequence[DatasetType], Sequence[DataId]], list[DataId]]
"""The butler's data id expansion: checks records and attaches implied values."""


@dataclass(frozen=True)
class FileDataset:
    """A file to ingest: where it is, and the dataset it holds.

    Parameters
    ----------
    path
        Local path or URL of the file.
    dataset_type
        Name of a registered dataset type.
    data_id
        Its data id (required dimensions; implied values are checked if given).
    format
        File format; defaults to the storage class default (or a guess from the extension).
    plugin
        The ingest plugin that read the file, recorded with its origin.
    metadata
        Extra columns read from the file (``{"airmass": 1.2}``): recorded with its origin,
        and fields its stored name's template may use.
    """

    path: str
    dataset_type: str
    data_id: Mapping[str, Any]
    format: str | None = None
    plugin: str | None = None
    metadata: Mapping[str, Any] | None = None


def check_sources(files: Sequence[FileDataset]) -> None:
    """Raise `FileAccessError` naming a local file that is missing, not a file, or unreadable."""
    missing: list[str] = []
    unreadable: list[str] = []
    for f in files:
        if is_url(f.path):
            continue
        try:
            regular = stat.S_ISREG(os.stat(f.path).st_mode)
        except (OSError, ValueError):
            regular = False
        if not regular:
            missing.append(f.path)
        elif not os.access(f.path, os.R_OK):
            unreadable.append(f.path)
    if missing:  # reported first, whatever else is wrong
        raise FileAccessError(
            errno.ENOENT, f"Cannot ingest: {len(missing)} file(s) do not exist or are not files, e.g. {missing[0]}")
    if unreadable:
        raise FileAccessError(errno.EACCES, f"Cannot ingest: file {unreadable[0]} is not readable")


def check_contents(datastore: Datastore, todo: Sequence[tuple[FileDataset, DatasetRef]], transfer: str,
                   checksum: bool, formatter_of: Callable[[DatasetType, str | None], Formatter],
                   ) -> tuple[list[Formatter], list[PendingFile | None]]:
    """Each file's formatter, its content checked; for a local ``direct`` ingest, also its stored form.

    A local file is opened and read once: a ``direct`` ingest's checksum is taken from the
    bytes the check read (`scan_local`), so the file is not read a second time to be
    "transferred". The second list holds those files (None for the others).
    """
    algorithm = datastore.checksum_algorithm if checksum else None
    formatters: list[Formatter] = []
    scanned: list[PendingFile | None] = []
    chosen: dict[tuple[str, str | None, str], Formatter] = {}
    for f, ref in todo:
        dt = ref.dataset_type
        # The choice depends only on these (see _guess_formatter, `guess_format`): made once for a bulk ingest.
        key = (dt.name, f.format, last_extension(f.path))
        formatter = chosen.get(key)
        if formatter is None:
            formatter = chosen[key] = _guess_formatter(dt, f, formatter_of)
        check = _content_check(formatter, dt, f.path)
        if is_url(f.path):
            with datastore.open(f.path) as fileobj:
                check(cast(BinaryIO, fileobj))
            scanned.append(None)
        elif transfer == "direct":
            scanned.append(scan_local(f.path, algorithm, check))
        else:
            scan_local(f.path, None, check)
            scanned.append(None)
        formatters.append(formatter)
    return formatters, scanned


def _content_check(formatter: Formatter, dt: DatasetType, path: str) -> Callable[[BinaryIO], None]:
    def check(fileobj: BinaryIO) -> None:
        try:
            formatter.check_file(fileobj, dt.storage_class)
        except (FormatError, StorageClassError) as exc:
            raise type(exc)(f"Cannot ingest {path} as {dt.name} ({formatter.name}, storage class "
                            f"{dt.storage_class!r}): {exc}") from None

    return check


def _guess_formatter(dt: DatasetType, f: FileDataset,
                     formatter_of: Callable[[DatasetType, str | None], Formatter]) -> Formatter:
    if f.format:
        return formatter_of(dt, f.format)
    guess = guess_format(f.path)
    try:
        return formatter_of(dt, guess) if guess else formatter_of(dt, None)
    except FormatError:
        return formatter_of(dt, None)


def _comparable(value: Any) -> Any:
    # Stored times are naive UTC; numbers compare as numbers (an int header value, a float column).
    if isinstance(value, datetime.datetime) and value.tzinfo is not None:
        return value.astimezone(datetime.UTC).replace(tzinfo=None)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return value


def check_records(registry: Registry, records: Records) -> dict[str, int]:
    """Raise `DimensionError` if a record of ``records`` exists with other values (regions aside).

    Only values both sides have are compared: a record inserted by hand without a
    detector's ``purpose`` is kept as it is. Regions are not compared either (a visit's
    region depends on which of its files were ingested first). Returns how many of each
    element's records exist.
    """
    universe = registry.universe
    held: dict[str, int] = {}
    for element, recs in records.items():
        pk = universe.elements[element].primary_key
        by_key = {tuple(universe.coerce(k, r[k]) for k in pk): r for r in recs}
        existing = registry.dimension_records.raw_rows(element, by_key)
        held[element] = len(existing)
        for key, old in existing.items():
            for column, value in by_key[key].items():
                if column in pk or column == "region" or value is None or old.get(column) is None:
                    continue
                if _comparable(old[column]) != _comparable(value):
                    raise DimensionError(
                        f"The {element} record {dict(zip(pk, key, strict=True))} exists with {column}="
                        f"{old[column]!r}, but the files to ingest give {column}={value!r}; nothing was "
                        "ingested (fix the record or the files)")
    return held


def sync_records(registry: Registry, records: Records) -> None:
    """Insert the records of ``records`` that do not exist yet, in dependency order (joins an open transaction)."""
    held = check_records(registry, records)
    with registry.transaction():
        for element in registry.universe.elements:
            recs = records.get(element)
            if recs and registry.insert_dimension_records(element, recs, skip_existing=True) < len(recs) - held[element]:
                # Another writer inserted some of them since the check (PostgreSQL runs writers
                # side by side; the insert waited for its commit): they are compared now, as
                # they would have been had it committed first.
                check_records(registry, {element: recs})


def _original_path(path: str) -> str:
    return path if is_url(path) else os.path.abspath(path)


def ingest(registry: Registry, datastore: Datastore, templates: FileTemplates, variables: Mapping[str, Any],
           files: Sequence[FileDataset], run: str, *, transfer: str, checksum: bool, progress: Any,
           rename: str | None, records: Records | None, expand: Expand,
           formatter_of: Callable[[DatasetType, str | None], Formatter]) -> list[DatasetRef]:
    """Ingest ``files`` into ``run`` (see `Butler.ingest`); returns one ref per file, already ingested ones included."""
    check_sources(files)
    if records:
        check_records(registry, records)  # before anything is transferred: a conflict leaves no trace
    dts: dict[str, DatasetType] = {}
    types: list[DatasetType] = []
    data_ids: list[DataId] = []
    # Data ids, ids and refs by the thousand, none in a cycle: the collector's passes over
    # them cost an ingest of small files ~30 % of its CPU (`paused_gc`).
    with paused_gc():
        for f in files:
            dt = dts.get(f.dataset_type)
            if dt is None:
                dt = dts[f.dataset_type] = registry.get_dataset_type(f.dataset_type)
            types.append(dt)
            data_ids.append(registry.universe.data_id(dt.dimensions, f.data_id, context=f"dataset type {dt.name!r}"))
        if not records:
            data_ids = expand(types, data_ids)  # the records must exist already
        ids = dataset_ids_for_ingest([dt.name for dt in types], data_ids, run)
        refs = [DatasetRef(i, dt, di, run) for i, dt, di in zip(ids, types, data_ids, strict=True)]
        existing = registry.get_datasets([r.id for r in refs])
    todo = [(f, r) for f, r in zip(files, refs, strict=True) if r.id not in existing]
    # Every file's content is checked before any is transferred: a refused file leaves no trace.
    formatters, scanned = check_contents(datastore, todo, transfer, checksum, formatter_of)
    paths = plan_paths(registry, templates, variables, todo, formatters, transfer, rename)

    def before_commit(_refs: list[DatasetRef], _files: list[FileRecord]) -> None:
        if records:
            sync_records(registry, records)
            expand(types, data_ids)  # the plugin's implied values (band) against the records
        insert_origins(registry, [DatasetOrigin(ref.id, _original_path(f.path), f.plugin, f.metadata or {})
                                  for f, ref in todo])

    ingest_files(registry, datastore, todo, paths, formatters, transfer, checksum, progress, before_commit, scanned)
    if records:
        data_ids = expand(types, data_ids)
        refs = [DatasetRef(r.id, r.dataset_type, di, r.run) for r, di in zip(refs, data_ids, strict=True)]
    return refs


def plan_paths(registry: Registry, templates: FileTemplates, variables: Mapping[str, Any],
               todo: Sequence[tuple[FileDataset, DatasetRef]], formatters: Sequence[Formatter], transfer: str,
               rename: str | None) -> list[str]:
    """The path each file of ``todo`` will be stored at, checked unique before any file is transferred.

    Named by ``rename`` when given, else by the repository's template for the dataset type
    in the run; a template may use the file's metadata as fields. ``direct`` keeps files
    where they are (no name to make).

    Raises
    ------
    TemplateError
        If two files would get one name (both are named), or a name is already taken by
        a stored dataset's file.
    """
    if transfer == "direct":
        if rename:
            raise ConfigError("--rename names copies; transfer 'direct' keeps each file where it is: use copy, move, "
                              "hardlink or symlink")
        return [""] * len(todo)
    template = FileTemplate(rename) if rename else None
    paths: list[str] = []
    by_path: dict[str, str] = {}
    for (f, ref), formatter in zip(todo, formatters, strict=True):
        chosen = template or templates.template_for(ref.dataset_type.name, ref.run)
        suffix = file_suffixes(f.path) or formatter.extension
        path = chosen.format(ref, values=ref.data_id.full, variables={**(f.metadata or {}), **variables},
                             extension=suffix)
        if path in by_path:
            raise TemplateError(
                f"Files {by_path[path]} and {f.path} would both be stored as {path} (template {chosen.text!r}); "
                "nothing was ingested: name every dimension of the dataset type in the template")
        by_path[path] = f.path
        paths.append(path)
    taken = pipeline_sql.known_paths(registry, paths)
    if taken:
        path = sorted(taken)[0]
        raise TemplateError(f"File {by_path[path]} would be stored as {path}, which holds another dataset's file; "
                            f"nothing was ingested: give a template that names the files apart")
    return paths


def ingest_files(registry: Registry, datastore: Datastore, todo: Sequence[tuple[FileDataset, DatasetRef]],
                 paths: Sequence[str], formatters: Sequence[Formatter], transfer: str, checksum: bool,
                 progress: Any = None, before_commit: Callable[[list[DatasetRef], list[FileRecord]], None] | None = None,
                 scanned: Sequence[PendingFile | None] | None = None) -> None:
    """Transfer each file of ``todo`` to its planned path and commit them all at once.

    ``before_commit`` runs in the transaction that inserts the datasets, before any file is
    moved into place: rows it writes commit or roll back with them. ``scanned[i]``, when
    not None, is the ``i``-th file already brought in (a local ``direct`` ingest read by
    `check_contents`): nothing left to transfer.
    """
    pending: list[PendingFile] = []
    records: list[FileRecord] = []
    try:
        for i, ((f, ref), path, formatter) in enumerate(zip(todo, paths, formatters, strict=True)):
            pf = scanned[i] if scanned is not None else None
            if pf is None:
                try:
                    pf = datastore.ingest(f.path, path, transfer, checksum=checksum)
                except DatasetExistsError as exc:
                    check_leftover(registry, datastore, ref, path, exc)
                    pf = datastore.ingest(f.path, path, transfer, checksum=checksum, replace=True)
            pending.append(pf)
            records.append(file_record(ref, pf, formatter.name))
            if progress is not None:
                progress()
        commit_datasets(registry, datastore, [r for _, r in todo], records, pending, before_commit)
    except BaseException:
        for pf in pending:
            datastore.abort(pf)
        raise
