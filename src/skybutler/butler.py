"""The facade users hold: registry and datastore kept consistent, one call at a time."""

from __future__ import annotations

import contextlib
import errno
import functools
import json
import logging
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from ._butler_collections import ButlerCollections
from .config import CONFIG_FILE, RepositoryConfig
from .datastore import TRANSFER_MODES, Datastore, FileTemplates, PendingFile
from .datastore.backends import is_url
from .dimensions import DimensionUniverse
from .errors import (
    CollectionError,
    ConfigError,
    DatabaseConnectionError,
    DatasetExistsError,
    DatasetNotFoundError,
    DatasetTypeError,
    FileAccessError,
    FormatError,
    ReadOnlyError,
    RepositoryExistsError,
    SkyButlerError,
    StorageClassError,
)
from .formats import FORMATS, Formatter, file_suffixes, formatter_for, get_formatter, guess_format
from .model import (
    CollectionType,
    DataId,
    DatasetRef,
    DatasetType,
    Image,
    dataset_id_for_ingest,
    new_dataset_id,
)
from .registry import FileRecord, Registry, find_dataset, pipeline_sql, query_data_ids, query_datasets


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
    """

    path: str
    dataset_type: str
    data_id: Mapping[str, Any]
    format: str | None = None


@dataclass
class Cutouts:
    """Result of `Butler.get_cutouts`: the cutouts and how many bytes were read to make them."""

    images: list[Image]
    bytes_read: int
    file_size: int
    path: str = ""


def _lost_connection(exc: BaseException) -> sa.exc.DBAPIError | None:
    """The database error in ``exc`` if it means the connection to the server was lost."""
    if isinstance(exc, sa.exc.DBAPIError) and exc.connection_invalidated:
        return exc
    return None


def _writer(formatter: Formatter, obj: Any, identity: Mapping[str, str]) -> Any:
    def write(f: Any) -> None:
        formatter.write(obj, f, identity=identity)

    return write


class Butler:
    """A repository: put, get, ingest, query and remove datasets.

    Parameters
    ----------
    root
        Directory holding ``skybutler.yaml`` (see `Butler.create`).
    run
        Default run for writes.
    collections
        Default collections to search for reads (in order); defaults to ``[run]``.
    writeable
        Open read-only when False (every write raises `ReadOnlyError`).
    template_variables
        Operator variables for file templates (``reqnum``, ``attnum``, ``unitname``...).

    Examples
    --------
    >>> butler = Butler.create("/tmp/repo")                       # doctest: +SKIP
    >>> butler = Butler("/tmp/repo", run="u/me/test")             # doctest: +SKIP
    >>> ref = butler.put({"a": 1}, "metadata", instrument="HSC")  # doctest: +SKIP
    """

    def __init__(self, root: str | Path, *, run: str | None = None, collections: Sequence[str] | None = None,
                 writeable: bool = True, template_variables: Mapping[str, Any] | None = None,
                 _config: RepositoryConfig | None = None, _registry: Registry | None = None):
        self.root = str(root)
        self.config = _config or RepositoryConfig.read(root)
        cfg = self.config
        self.registry = _registry or Registry.open(
            cfg.registry.db, namespace=cfg.registry.namespace, root=self.root,
            sync_every_commit=cfg.registry.sync_every_commit, writeable=writeable)
        self.universe: DimensionUniverse = self.registry.universe
        # A registry that syncs every commit gets files synced before it: a stored row's file
        # then survives a power loss as the row does.
        self.datastore = Datastore(self._datastore_root(cfg), storage_options=cfg.datastore.storage_options,
                                   checksum=cfg.datastore.checksum, sync=cfg.registry.sync_every_commit)
        self.templates = FileTemplates(cfg.templates.default, cfg.templates.dataset_types, cfg.templates.runs)
        self.run = run
        self.collections = ButlerCollections(
            self.registry, list(collections) if collections is not None else ([run] if run else []),
            self._require_writeable)
        self.writeable = writeable
        self.template_variables = dict(template_variables or {})
        if run is not None and writeable:
            self.registry.register_collection(run, CollectionType.RUN)

    def _datastore_root(self, cfg: RepositoryConfig) -> str:
        root = cfg.datastore.root
        if is_url(root) or os.path.isabs(root):
            return root
        return str((Path(self.root) / root).resolve())

    # -- creation ----------------------------------------------------------------------

    @classmethod
    def create(cls, root: str | Path, *, registry: str | None = None, namespace: str | None = None,
               datastore: str | None = None, config: RepositoryConfig | Mapping[str, Any] | str | Path | None = None,
               universe: DimensionUniverse | str | Path | None = None, run: str | None = None) -> Butler:
        """Create a new repository at ``root`` and return a butler on it.

        Parameters
        ----------
        root
            A directory that does not hold a repository yet (created if missing).
        registry
            Database URL: None for SQLite in the root, ``"sqlite://"`` for in-memory,
            ``"postgresql://user@host:port/db"`` for a shared server.
        namespace
            PostgreSQL schema for this repository's tables.
        datastore
            Where files go: None for the root, a path, ``memory://name`` or ``s3://bucket/prefix``.
        config
            A `RepositoryConfig`, a mapping, or a YAML file path with any of its sections.
        universe
            A dimension universe (object or YAML path); defaults to the shipped one.
        """
        root_path = Path(root)
        if (root_path / CONFIG_FILE).exists():
            raise RepositoryExistsError(f"{root} already holds a skybutler repository")
        if isinstance(config, RepositoryConfig):
            cfg = config.model_copy(deep=True)
        elif isinstance(config, (str, Path)):
            cfg = RepositoryConfig.from_file(config)
        else:
            cfg = RepositoryConfig.from_mapping(dict(config or {}))
        if registry is not None:
            cfg.registry.db = registry
        if namespace is not None:
            cfg.registry.namespace = namespace
        if datastore is not None:
            cfg.datastore.root = datastore
        if isinstance(universe, (str, Path)):
            universe = DimensionUniverse.from_file(universe)
        # Fail on a bad template before anything is written.
        FileTemplates(cfg.templates.default, cfg.templates.dataset_types, cfg.templates.runs)
        made_root = not root_path.exists()
        root_path.mkdir(parents=True, exist_ok=True)
        try:
            # The file keeps the given values; what is created is what opening it will use
            # (SKYBUTLER_REGISTRY_DB set while creating means the same as while opening).
            in_force = cfg.with_environment()
            reg = Registry.create(in_force.registry.db, universe=universe, namespace=in_force.registry.namespace,
                                  root=str(root_path), sync_every_commit=in_force.registry.sync_every_commit)
            cfg.write(root_path)
            return cls(root_path, run=run, _config=in_force, _registry=reg)
        except BaseException:
            if made_root:  # leave nothing behind for a failed create
                import shutil

                shutil.rmtree(root_path, ignore_errors=True)
            raise

    def with_run(self, run: str, **kwargs: Any) -> Butler:
        """A butler on the same repository and connections, writing to another run."""
        b = Butler(self.root, run=run, _config=self.config, _registry=self.registry,
                   template_variables=kwargs.pop("template_variables", self.template_variables), **kwargs)
        return b

    def close(self) -> None:
        self.registry.close()

    def __enter__(self) -> Butler:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def dump_config(self) -> str:
        """The whole configuration in force, as YAML (environment overrides applied)."""
        import yaml

        text = self.config.to_yaml()
        extra = {
            "universe": self.universe.document,
            "session": {"run": self.run, "collections": self.collections.defaults,
                        "template_variables": self.template_variables},
        }
        return text + yaml.safe_dump(extra, sort_keys=False)

    # -- definitions -------------------------------------------------------------------

    def _require_writeable(self) -> None:
        if not self.writeable:
            raise ReadOnlyError(f"Butler on {self.root} was opened read-only")

    def register_dataset_type(self, name: str | DatasetType, dimensions: Sequence[str] = (),
                              storage_class: str = "dict", *, is_calibration: bool = False) -> DatasetType:
        """Register a dataset type (identical re-registration is a no-op) and check its templates."""
        self._require_writeable()
        dt = name if isinstance(name, DatasetType) else DatasetType(
            name, tuple(dimensions), storage_class, is_calibration)
        dims = self.universe.closure(dt.dimensions)
        dt = DatasetType(dt.name, dims, dt.storage_class, dt.is_calibration)
        self._formatter(dt)
        self.templates.validate(dt, self._template_names(dims), variables=self.template_variables)
        self.registry.register_dataset_type(dt)
        return self.registry.get_dataset_type(dt.name)

    def _template_names(self, dims: Sequence[str]) -> list[str]:
        return [*dims, *self.universe.implied_by(dims)]

    def insert_dimension_records(self, element: str, records: Iterable[Mapping[str, Any]], *,
                                 skip_existing: bool = False) -> int:
        """Insert dimension records in bulk (see `Registry.insert_dimension_records`)."""
        self._require_writeable()
        return self.registry.insert_dimension_records(element, records, skip_existing=skip_existing)

    def _formatter(self, dt: DatasetType, format: str | None = None) -> Formatter:
        fmt = (format or self.config.formats.dataset_types.get(dt.name)
               or self.config.formats.storage_classes.get(dt.storage_class))
        return formatter_for(dt.storage_class, fmt, allow_pickle=self.config.formats.allow_pickle)

    def file_namer(self, dataset_type: DatasetType, run: str) -> Callable[[DatasetRef], str]:
        """The function that names the files of ``dataset_type`` written to ``run``.

        One place for "which file will this dataset get": `put_many` and the quantum graph
        builder (which plans output file names before anything runs) both call it. The
        name is the run's (or the dataset type's, or the default) template filled with the
        ref's data id and the operator variables, plus the format's extension; paths are
        relative to the datastore root.
        """
        template = self.templates.template_for(dataset_type.name, run)
        extension = self._formatter(dataset_type).extension
        variables = self.template_variables
        return lambda ref: template.format(ref, variables=variables, extension=extension)

    # -- refs --------------------------------------------------------------------------

    def _data_id(self, dt: DatasetType, data_id: Mapping[str, Any] | None, kwargs: Mapping[str, Any]) -> DataId:
        values = dict(data_id or {})
        values.update(kwargs)
        return self.universe.data_id(dt.dimensions, values, context=f"dataset type {dt.name!r}")

    def _new_refs(self, items: Sequence[tuple[str | DatasetType, Mapping[str, Any] | None]], run: str | None,
                  ) -> list[DatasetRef]:
        run = run or self.run
        if run is None:
            raise CollectionError("No run to write to: pass run=... or open the butler with run=...")
        dts: list[DatasetType] = []
        data_ids: list[DataId] = []
        for dt_or_name, data_id in items:
            dt = self.registry.get_dataset_type(dt_or_name.name if isinstance(dt_or_name, DatasetType) else dt_or_name)
            dts.append(dt)
            data_ids.append(self._data_id(dt, data_id, {}))
        expanded = self._expand(dts, data_ids)
        return [DatasetRef(new_dataset_id(), dt, di, run) for dt, di in zip(dts, expanded, strict=True)]

    def _expand(self, dts: Sequence[DatasetType], data_ids: Sequence[DataId]) -> list[DataId]:
        """Check every data id's records and attach implied values: one registry call per dataset type."""
        out = list(data_ids)
        by_type: dict[str, list[int]] = {}
        for i, dt in enumerate(dts):
            by_type.setdefault(dt.name, []).append(i)
        for name, idx in by_type.items():
            expanded = self.registry.expand_data_ids(dts[idx[0]].dimensions, [out[i] for i in idx],
                                                     context=f"dataset type {name!r}")
            for i, di in zip(idx, expanded, strict=True):
                out[i] = di
        return out

    # -- put ---------------------------------------------------------------------------

    def put(self, obj: Any, dataset_type: str | DatasetType, data_id: Mapping[str, Any] | None = None, *,
            run: str | None = None, **kwargs: Any) -> DatasetRef:
        """Store one dataset atomically: its file and its registry rows exist together or not at all.

        Raises
        ------
        DatasetExistsError
            A dataset of this type and data id is already in the run (nothing is overwritten).
        StorageClassError
            ``obj`` does not fit the dataset type's storage class.
        """
        values = dict(data_id or {})
        values.update(kwargs)
        return self.put_many([(obj, dataset_type, values)], run=run)[0]

    def put_many(self, items: Iterable[tuple[Any, str | DatasetType, Mapping[str, Any] | None]], *,
                 run: str | None = None, refs: Sequence[DatasetRef] | None = None,
                 before_commit: Callable[[list[DatasetRef], list[FileRecord]], None] | None = None,
                 ) -> list[DatasetRef]:
        """Store many datasets with one registry transaction and one bulk insert.

        All or nothing: if any dataset fails, no file and no row of this call remains.
        ``refs`` may give pre-assigned refs (ids chosen when a quantum graph was built),
        one per item; an item's dataset type (and data id, when given) must then be its
        ref's, or nothing is stored. ``before_commit(refs, file_records)`` runs inside the transaction, after the
        dataset rows are inserted and before any file is moved into place: rows it adds
        (provenance) commit or roll back with the datasets.
        """
        self._require_writeable()
        items = list(items)
        if refs is None:
            new_refs = self._new_refs([(dt, di) for _, dt, di in items], run)
        else:
            if len(refs) != len(items):
                raise DatasetTypeError(f"put_many got {len(items)} item(s) but {len(refs)} ref(s); give one ref per item")
            for (_, dt, di), ref in zip(items, refs, strict=True):
                name = dt.name if isinstance(dt, DatasetType) else dt
                if name != ref.dataset_type.name or (di and any(ref.data_id.get(k) != v for k, v in di.items())):
                    raise DatasetTypeError(
                        f"put_many item ({name}, {dict(di or {})}) does not match its ref {ref.dataset_type.name} "
                        f"{{{ref.data_id}}}; the ref's type and data id are what is stored")
            dts = [self.registry.get_dataset_type(r.dataset_type.name) for r in refs]
            expanded = self._expand(dts, [r.data_id for r in refs])
            new_refs = [DatasetRef(r.id, dt, di, r.run) for r, dt, di in zip(refs, dts, expanded, strict=True)]
        pending: list[PendingFile] = []
        records: list[FileRecord] = []
        namers: dict[tuple[str, str], Callable[[DatasetRef], str]] = {}
        try:
            for (obj, _, _), ref in zip(items, new_refs, strict=True):
                formatter = self._formatter(ref.dataset_type)
                try:
                    formatter.check(obj, ref.dataset_type.storage_class)
                except StorageClassError as exc:
                    raise StorageClassError(f"Cannot put {ref.dataset_type.name} {{{ref.data_id}}}: {exc}") from None
                key = (ref.dataset_type.name, ref.run)
                namer = namers.get(key)
                if namer is None:
                    namer = namers[key] = self.file_namer(ref.dataset_type, ref.run)
                path = namer(ref)
                identity = {"dataset_id": str(ref.id), "dataset_type": ref.dataset_type.name,
                            "data_id": str(ref.data_id), "run": ref.run}
                write = _writer(formatter, obj, identity)
                try:
                    pf = self.datastore.write_temporary(path, write)
                except DatasetExistsError as exc:
                    self._check_leftover(ref, path, exc)
                    pf = self.datastore.write_temporary(path, write, replace=True)
                pending.append(pf)
                records.append(self._file_record(ref, pf, formatter.name))
            self._commit(new_refs, records, pending, before_commit)
        except BaseException:
            for pf in pending:
                self.datastore.abort(pf)
            raise
        return new_refs

    def _check_leftover(self, ref: DatasetRef, path: str, exc: DatasetExistsError) -> None:
        """Raise unless the file found at ``path`` is a leftover of a crashed write that may be replaced.

        A file that some dataset's row names is never overwritten. One that no row names was
        placed by a write killed before its transaction committed (which also rolled back
        any run it registered: the run need not exist): the next write replaces it, after
        checking again inside its own transaction (see `_commit`).
        """
        if not pipeline_sql.known_paths(self.registry, [path]):
            return
        try:
            existing = find_dataset(self.registry, ref.dataset_type.name, ref.data_id, [ref.run])
        except CollectionError:
            existing = None  # the run does not exist: the file is another dataset's
        if existing is not None:
            raise DatasetExistsError(
                f"Dataset {ref.dataset_type.name} {{{ref.data_id}}} already exists in run {ref.run!r} "
                f"(id {existing.id}); no put ever overwrites a stored dataset") from None
        raise exc

    def _file_record(self, ref: DatasetRef, pf: PendingFile, format: str) -> FileRecord:
        algo, _, digest = (pf.checksum or "").partition(":")
        return FileRecord(dataset_id=ref.id, path=pf.path, size=pf.size, checksum=digest or None,
                          checksum_algorithm=algo or None, format=format)

    def _commit(self, refs: list[DatasetRef], records: list[FileRecord], pending: list[PendingFile],
                before_commit: Callable[[list[DatasetRef], list[FileRecord]], None] | None = None) -> None:
        """Insert rows, move files into place, commit; on failure remove what was placed."""
        committed: list[PendingFile] = []
        try:
            with self.registry.transaction():
                replaced = [pf.path for pf in pending if pf.replaces]
                # Checked again under the write transaction: on SQLite it holds the write lock,
                # on PostgreSQL a writer of the same dataset is stopped by the insert below.
                named = pipeline_sql.known_paths(self.registry, replaced) if replaced else set()
                if named:
                    raise DatasetExistsError(
                        f"File {sorted(named)[0]!r} was stored by another dataset meanwhile in the datastore at "
                        f"{self.datastore.root}; no put ever overwrites a stored dataset")
                for run in sorted({r.run for r in refs}):
                    self.registry.register_collection(run, CollectionType.RUN)
                self.registry.insert_datasets(refs, records)
                if before_commit is not None:
                    before_commit(refs, records)
                for pf in pending:
                    self.datastore.commit(pf)
                    committed.append(pf)
                self._record_manifest(refs, records)
        except BaseException as exc:
            lost = _lost_connection(exc)
            if lost is not None:
                # The connection dropped: perhaps before the commit, perhaps while the server
                # was acknowledging it. Ask again on a fresh connection before removing anything.
                try:
                    stored = bool(refs) and bool(self.registry.get_datasets([refs[0].id]))
                except Exception:
                    # Cannot tell: keep every file (a file without a row is harmless and found
                    # by verify; a row without its file is not). The caller must not abort them.
                    pending.clear()
                    raise self._connection_error(lost, len(refs), "it may or may not be stored") from None
                if stored:
                    return
            # The transaction rolled back: files already moved into place have no row now.
            try:
                self.datastore.remove([pf.path for pf in committed if pf.transfer not in ("direct", "in_place")])
            except SkyButlerError as err:  # never mask the error that made us clean up
                logging.getLogger(__name__).warning("%s", err)
            if lost is not None:
                raise self._connection_error(lost, len(refs), "nothing of it was stored") from None
            raise

    def _connection_error(self, exc: Exception, n: int, outcome: str) -> DatabaseConnectionError:
        reason = (str(getattr(exc, "orig", None) or exc).strip().splitlines() or [type(exc).__name__])[0]
        url = sa.make_url(self.registry.url).render_as_string(hide_password=True)
        return DatabaseConnectionError(
            f"Lost the connection to registry database {url} while storing {n} dataset(s): {reason}; {outcome}")

    def _record_manifest(self, refs: list[DatasetRef], records: list[FileRecord]) -> None:
        """Write the identity of files whose format has no room for it to the run manifests.

        Written before the registry commits, so a manifest may name a file whose put then
        failed (and was removed) but never misses one that was stored.
        """
        by_run: dict[str, list[dict[str, str]]] = {}
        for ref, record in zip(refs, records, strict=True):
            if FORMATS[record.format].stores_identity:  # a class attribute: no formatter per file
                continue
            by_run.setdefault(ref.run, []).append({
                "dataset_id": str(ref.id), "dataset_type": ref.dataset_type.name,
                "data_id": json.dumps(dict(ref.data_id.required_items), sort_keys=True),
                "run": ref.run, "path": record.path, "format": record.format})
        for run, entries in by_run.items():
            self.datastore.append_manifest(run, entries)

    # -- ingest ------------------------------------------------------------------------

    def ingest(self, files: Iterable[FileDataset], *, run: str | None = None, transfer: str = "auto",
               checksum: bool = True, progress: Any = None) -> list[DatasetRef]:
        """Register existing files as datasets; ids are deterministic so re-ingest is a no-op.

        Parameters
        ----------
        files
            The files and the datasets they hold.
        run
            Run to ingest into (defaults to the butler's run).
        transfer
            ``copy``, ``move``, ``hardlink``, ``symlink``, ``direct`` (leave the file where
            it is and record its absolute location) or ``auto`` (``direct`` when the file is
            already under the root, else ``copy``).
        checksum
            Compute checksums (reads every byte; False records sizes only).

        Returns
        -------
        refs
            One ref per file, including files that were already ingested.
        """
        self._require_writeable()
        if transfer not in TRANSFER_MODES:
            raise ConfigError(f"Unknown transfer mode {transfer!r}; use one of {', '.join(TRANSFER_MODES)}")
        files = list(files)
        missing = [f.path for f in files if not is_url(f.path) and not os.path.isfile(f.path)]
        if missing:
            raise FileAccessError(
                errno.ENOENT, f"Cannot ingest: {len(missing)} file(s) do not exist or are not files, e.g. {missing[0]}")
        unreadable = [f.path for f in files if not is_url(f.path) and not os.access(f.path, os.R_OK)]
        if unreadable:
            raise FileAccessError(errno.EACCES, f"Cannot ingest: file {unreadable[0]} is not readable")
        refs = self._new_refs([(f.dataset_type, f.data_id) for f in files], run)
        refs = [DatasetRef(dataset_id_for_ingest(r.dataset_type.name, r.data_id, r.run), r.dataset_type,
                           r.data_id, r.run) for r in refs]
        existing = self.registry.get_datasets([r.id for r in refs])
        todo = [(f, r) for f, r in zip(files, refs, strict=True) if r.id not in existing]
        # Every file's content is checked before any is transferred: a refused file leaves no trace.
        formatters = [self._ingest_formatter(ref.dataset_type, f) for f, ref in todo]
        pending: list[PendingFile] = []
        records: list[FileRecord] = []
        try:
            for (f, ref), formatter in zip(todo, formatters, strict=True):
                path = ""  # a direct ingest keeps the file where it is: no name to make
                if transfer != "direct":
                    suffix = file_suffixes(f.path) or formatter.extension
                    path = self.templates.template_for(ref.dataset_type.name, ref.run).format(
                        ref, values=ref.data_id.full, variables=self.template_variables, extension=suffix)
                try:
                    pf = self.datastore.ingest(f.path, path, transfer, checksum=checksum)
                except DatasetExistsError as exc:
                    self._check_leftover(ref, path, exc)
                    pf = self.datastore.ingest(f.path, path, transfer, checksum=checksum, replace=True)
                pending.append(pf)
                records.append(self._file_record(ref, pf, formatter.name))
                if progress is not None:
                    progress()
            self._commit([r for _, r in todo], records, pending)
        except BaseException:
            for pf in pending:
                self.datastore.abort(pf)
            raise
        return refs

    def _ingest_formatter(self, dt: DatasetType, f: FileDataset) -> Formatter:
        """The formatter of a file to ingest, once its content is checked against the storage class."""
        formatter = self._guess_ingest_formatter(dt, f)
        try:
            # Local files are opened directly: bulk ingest of local files goes without fsspec.
            with self.datastore.open(f.path) if is_url(f.path) else open(f.path, "rb") as fileobj:
                formatter.check_file(fileobj, dt.storage_class)  # type: ignore[arg-type]
        except (FormatError, StorageClassError) as exc:
            raise type(exc)(f"Cannot ingest {f.path} as {dt.name} ({formatter.name}, storage class "
                            f"{dt.storage_class!r}): {exc}") from None
        return formatter

    def _guess_ingest_formatter(self, dt: DatasetType, f: FileDataset) -> Formatter:
        if f.format:
            return self._formatter(dt, f.format)
        guess = guess_format(f.path)
        try:
            return self._formatter(dt, guess) if guess else self._formatter(dt)
        except FormatError:
            return self._formatter(dt)

    # -- get ---------------------------------------------------------------------------

    def _resolve(self, ref_or_type: DatasetRef | str | DatasetType, data_id: Mapping[str, Any] | None,
                 kwargs: Mapping[str, Any], collections: Sequence[str] | None, time: Any = None) -> DatasetRef:
        if isinstance(ref_or_type, DatasetRef):
            return ref_or_type
        name = ref_or_type.name if isinstance(ref_or_type, DatasetType) else ref_or_type
        dt = self.registry.get_dataset_type(name)
        di = self._data_id(dt, data_id, kwargs)
        colls = list(collections) if collections is not None else self.collections.defaults
        ref = find_dataset(self.registry, name, di, colls, time=time) if colls else None
        if ref is None:
            where = ", ".join(colls) if colls else "no collections given"
            raise DatasetNotFoundError(f"No {name} dataset for {{{di}}} in collections [{where}]")
        return ref

    def find_dataset(self, dataset_type: str, data_id: Mapping[str, Any] | None = None, *,
                     collections: Sequence[str] | None = None, time: Any = None, **kwargs: Any) -> DatasetRef | None:
        """The first dataset of this type and data id in the collections (None if there is none)."""
        try:
            return self._resolve(dataset_type, data_id, kwargs, collections, time)
        except DatasetNotFoundError:
            return None

    def get(self, ref_or_type: DatasetRef | str | DatasetType, data_id: Mapping[str, Any] | None = None, *,
            collections: Sequence[str] | None = None, parameters: Mapping[str, Any] | None = None,
            time: Any = None, **kwargs: Any) -> Any:
        """Read one dataset, by ref or by dataset type and data id (searched in collections).

        ``parameters`` read part of it: ``bbox=(y0, y1, x0, x1)`` for images,
        ``columns=[...]`` / ``rows=(start, stop)`` for tables.
        """
        ref = self._resolve(ref_or_type, data_id, kwargs, collections, time)
        return self.get_many([ref], parameters=parameters)[0]

    def get_many(self, refs: Sequence[DatasetRef], *, parameters: Mapping[str, Any] | None = None) -> list[Any]:
        """Read many datasets by ref (one registry query for all their files)."""
        refs = list(refs)
        files = self.registry.get_files([r.id for r in refs])
        out = []
        for ref in refs:
            record = files.get(ref.id)
            if record is None:
                raise DatasetNotFoundError(f"Dataset {ref} has no file in this repository")
            out.append(self._read(ref, record, parameters))
        return out

    def _read(self, ref: DatasetRef, record: FileRecord, parameters: Mapping[str, Any] | None) -> Any:
        formatter = get_formatter(record.format)
        try:
            with self.datastore.open(record.path) as f:
                return formatter.read(f, parameters=parameters)  # type: ignore[arg-type]
        except FormatError as exc:
            raise FormatError(f"Cannot read {ref.dataset_type.name} {{{ref.data_id}}} from {record.path}: {exc}") from None
        except FileAccessError as exc:
            raise FileAccessError(exc.errno, f"File of {ref.dataset_type.name} {{{ref.data_id}}} is missing: {exc}") from None

    def get_cutouts(self, ref_or_type: DatasetRef | str, boxes: Sequence[tuple[int, int, int, int]],
                    data_id: Mapping[str, Any] | None = None, *, collections: Sequence[str] | None = None,
                    plane: str | None = None, hdu: int | str | tuple[str, int] | None = None,
                    **kwargs: Any) -> Cutouts:
        """Many cutouts ``(y0, y1, x0, x1)`` from one image, reading only the bytes they need.

        ``plane`` cuts a plane of the image (``get(...).planes[plane]``); ``hdu`` cuts the HDU
        that ``get(..., parameters={"hdu": hdu})`` reads (an index, ``"SCI"`` or ``("SCI", 2)``).
        """
        ref = self._resolve(ref_or_type, data_id, kwargs, collections)
        record = self.registry.get_files([ref.id]).get(ref.id)
        if record is None:
            raise DatasetNotFoundError(f"Dataset {ref} has no file in this repository")
        formatter = get_formatter(record.format)
        read_cutouts = getattr(formatter, "read_cutouts", None)
        if read_cutouts is None:
            raise FormatError(f"{ref.dataset_type.name} is stored as {record.format}, which has no cutout reads")
        try:
            with self.datastore.open(record.path) as f:
                images, nbytes = read_cutouts(f, boxes, plane=plane, hdu=hdu)
        except FormatError as exc:
            raise FormatError(f"Cannot cut out of {ref.dataset_type.name} {{{ref.data_id}}} ({record.path}): {exc}") from None
        return Cutouts(images, nbytes, record.size, record.path)

    def retrieve(self, refs: Iterable[DatasetRef], destination: str | Path, *, overwrite: bool = False) -> list[Path]:
        """Copy the files of datasets out of the repository into a local directory.

        Each file keeps its path relative to the datastore root (files ingested in place by
        absolute path keep their name only), so the copies never collide. An existing file
        at a destination is an error unless ``overwrite``. Returns the written paths.

        Examples
        --------
        >>> butler.retrieve(butler.query_datasets("calexp", where="visit = 903334"), "out/")  # doctest: +SKIP
        """
        refs = list(refs)
        files = self.registry.get_files([r.id for r in refs])
        root = Path(destination)
        written = []
        for ref in refs:
            record = files.get(ref.id)
            if record is None:
                raise DatasetNotFoundError(f"Dataset {ref} has no file in this repository")
            relative = record.path if self.datastore.owns(record.path) else record.path.rsplit("/", 1)[-1]
            written.append(self._copy_out(ref, record, root / relative, overwrite))
        return written

    def retrieve_file(self, ref_or_type: DatasetRef | str, path: str | Path, data_id: Mapping[str, Any] | None = None,
                      *, collections: Sequence[str] | None = None, overwrite: bool = False, **kwargs: Any) -> Path:
        """Copy one dataset's file (by ref, or by type and data id searched in collections) to ``path``."""
        ref = self._resolve(ref_or_type, data_id, kwargs, collections)
        record = self.registry.get_files([ref.id]).get(ref.id)
        if record is None:
            raise DatasetNotFoundError(f"Dataset {ref} has no file in this repository")
        return self._copy_out(ref, record, Path(path), overwrite)

    def _copy_out(self, ref: DatasetRef, record: FileRecord, target: Path, overwrite: bool) -> Path:
        if target.exists() and not overwrite:
            raise FileAccessError(f"Cannot copy {ref.dataset_type.name} {{{ref.data_id}}} to {target}: "
                                  "the file exists (pass overwrite to replace it)")
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f".{target.name}.part")
        with self.datastore.open(record.path) as src, open(partial, "wb") as dst:
            while chunk := src.read(1 << 20):
                dst.write(chunk)
        os.replace(partial, target)  # never a half-copied file under the final name
        return target

    def uri(self, ref: DatasetRef) -> str:
        """The full location of a dataset's file."""
        record = self.registry.get_files([ref.id]).get(ref.id)
        if record is None:
            raise DatasetNotFoundError(f"Dataset {ref} has no file in this repository")
        return self.datastore.url(record.path)

    # -- queries -----------------------------------------------------------------------

    def query_datasets(self, dataset_type: str, *, collections: Sequence[str] | None = None,
                       where: str | None = None, bind: Mapping[str, Any] | None = None,
                       data_id: Mapping[str, Any] | None = None, find_first: bool = True,
                       time: Any = None) -> Iterator[DatasetRef]:
        """Stream datasets of a type in collections (searched in order; first match wins)."""
        colls = list(collections) if collections is not None else self.collections.defaults
        return query_datasets(self.registry, dataset_type, colls, where=where, bind=bind, data_id=data_id,
                              find_first=find_first, time=time)

    def query_data_ids(self, dimensions: Sequence[str], *, where: str | None = None,
                       bind: Mapping[str, Any] | None = None, datasets: Sequence[str] = (),
                       collections: Sequence[str] | None = None, data_id: Mapping[str, Any] | None = None,
                       ) -> Iterator[DataId]:
        """Stream data ids over dimensions (joined through dataset existence when ``datasets`` given)."""
        colls = list(collections) if collections is not None else self.collections.defaults
        return query_data_ids(self.registry, dimensions, where=where, bind=bind, datasets=datasets,
                              collections=colls, data_id=data_id)

    def query_dimension_records(self, element: str, *, where: str | None = None,
                                bind: Mapping[str, Any] | None = None) -> Iterator[dict[str, Any]]:
        """Stream the records of one dimension element."""
        return self.registry.fetch_dimension_records(element, where=where, bind=bind)

    def stored_files(self) -> Iterator[str]:
        """Every file under the datastore root that is not the repository's own (config, SQLite registry)."""
        own = {CONFIG_FILE, CONFIG_FILE + ".tmp"}
        for path in self.datastore.walk():
            if path in own or (("/" not in path) and path.startswith("registry.sqlite3")):
                continue
            if path.startswith(".skybutler/"):  # run manifests
                continue
            yield path

    # -- removal -----------------------------------------------------------------------

    @staticmethod
    def _owned_paths(records: Sequence[FileRecord]) -> list[str]:
        # Files recorded by absolute location were ingested "direct": they are not ours to delete.
        return [r.path for r in records if Datastore.owns(r.path)]

    def _remove(self, remove_rows: Callable[[], list[FileRecord]], label: str, purge: bool = True) -> int:
        """Delete rows, then their files, so that an interruption at any point is finished later.

        Inside the transaction, after the rows are deleted and before the commit, the list
        of files is written to the datastore: if that fails (store unreachable) nothing is
        deleted. Once committed, the files are deleted and the list dropped; if that is
        interrupted, `finish_removals` (run by the next removal) deletes the rest.
        """
        try:
            with self.registry.transaction():
                records = remove_rows()
                paths = self._owned_paths(records) if purge else []
                pending = self.datastore.record_removal(paths, label=label) if paths else None
        except sa.exc.DBAPIError as exc:
            if _lost_connection(exc) is None:
                raise
            reason = (str(exc.orig or exc).strip().splitlines() or [type(exc).__name__])[0]
            url = sa.make_url(self.registry.url).render_as_string(hide_password=True)
            raise DatabaseConnectionError(
                f"Lost the connection to registry database {url} while removing {label}: {reason}; "
                "repeat the removal to finish it") from None
        if pending is not None:
            self.datastore.remove(paths)
            self.datastore.forget_removal(pending)
        return len(records)

    def finish_removals(self) -> dict[str, int]:
        """Delete the files of removals that were interrupted (crash, store unreachable).

        Only files that no dataset's row names are deleted, so a list whose transaction
        never committed deletes nothing. Returns the number of files deleted per run (or
        ``"datasets"`` for `remove_datasets`).
        """
        done: dict[str, int] = {}
        for rel, label, paths in self.datastore.pending_removals():
            named = pipeline_sql.known_paths(self.registry, paths)
            gone = [p for p in paths if p not in named]
            self.datastore.remove(gone)
            self.datastore.forget_removal(rel)
            done[label] = done.get(label, 0) + len(gone)
        return done

    def clean_temporaries(self) -> int:
        """Remove what interrupted writes left in the datastore; returns how many files.

        Temporary files whose writer is gone (see `skybutler.datastore.store.TEMPORARY_MAX_AGE`)
        and files of interrupted removals. Writes do this for the directories they write
        into (once per butler), so a call is needed only to clean the whole datastore; it
        lists every file, so it is not cheap on a large one.
        """
        self._require_writeable()
        return self.datastore.clean_temporaries() + sum(self.finish_removals().values())

    def remove_datasets(self, refs: Iterable[DatasetRef]) -> int:
        """Delete datasets with their files (an interruption is finished by the next removal)."""
        self._require_writeable()
        refs = list(refs)
        self.finish_removals()
        self._remove(lambda: self.registry.remove_datasets([r.id for r in refs]), "datasets")
        return len(refs)

    def remove_runs(self, runs: Iterable[str], *, purge: bool = True) -> dict[str, int]:
        """Delete whole runs with their datasets and executions.

        With ``purge=False`` the registry entries go but the files stay on disk
        (for files another system owns); `verify` will then list them as orphans.

        Repeating a removal that was interrupted (process killed, datastore unreachable)
        finishes it: the files it had not deleted yet are deleted, and a run it had already
        removed from the registry counts as removed.

        Raises
        ------
        CollectionError
            A run that does not exist (and was not removed by an interrupted call).
        FileAccessError
            The datastore cannot be reached; the registry is then unchanged.
        """
        self._require_writeable()
        runs = list(runs)
        finished = self.finish_removals()
        counts = {}
        for run in runs:
            try:
                self.registry.run_id(run)
            except CollectionError:
                if run in finished:
                    counts[run] = finished[run]
                    continue
                raise
            counts[run] = self._remove(functools.partial(self.registry.remove_run, run), run, purge)
        return counts

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """Group registry writes (files are still written per call)."""
        with self.registry.transaction():
            yield


__all__ = ["Butler", "Cutouts", "FileDataset", "TRANSFER_MODES", "DatasetExistsError"]
