"""The facade users hold: registry and datastore kept consistent, one call at a time."""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from itertools import repeat
from pathlib import Path
from typing import Any

from . import _butler_create, _butler_ingest, _butler_put, _butler_read, _butler_remove
from ._butler_collections import ButlerCollections
from ._butler_ingest import FileDataset
from ._butler_read import Cutouts
from .config import CONFIG_FILE, RepositoryConfig
from .datastore import TRANSFER_MODES, Datastore, FileTemplates
from .datastore.backends import is_url
from .dimensions import DimensionUniverse
from .errors import (
    CollectionError,
    ConfigError,
    DatasetExistsError,
    DatasetNotFoundError,
    DatasetTypeError,
    ReadOnlyError,
    RepositoryExistsError,
)
from .formats import Formatter, formatter_for
from .model import CollectionType, DataId, DatasetRef, DatasetType, new_dataset_id, new_dataset_ids
from .registry import (
    DataIdQueryResults,
    DatasetQueryResults,
    FileRecord,
    Registry,
    find_dataset,
    query_data_ids,
    query_datasets,
)


class Butler:
    """A repository: put, get, ingest, query and remove datasets.

    The methods here check their arguments and say what they do; the doing is delegated
    to ``_butler_put`` (storing), ``_butler_ingest``, ``_butler_read`` and ``_butler_remove``,
    and collection operations to `butler.collections <ButlerCollections>`.

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
        self._formatters: dict[tuple[str, str, str | None], Formatter] = {}
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
        # Whether this call made the root is what it may remove on failure: told by the mkdir
        # itself, not a check before it (another create may make the root in between, and
        # its repository would be removed with it).
        try:
            root_path.mkdir(parents=True)
            made_root = True
        except FileExistsError:
            made_root = False
        try:
            # The file keeps the given values; what is created is what opening it will use
            # (SKYBUTLER_REGISTRY_DB set while creating means the same as while opening).
            in_force = cfg.with_environment()
            reg = _butler_create.new_registry(in_force, root_path, universe)
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
        key = (dt.name, dt.storage_class, format)
        known = self._formatters.get(key)
        if known is None:
            fmt = (format or self.config.formats.dataset_types.get(dt.name)
                   or self.config.formats.storage_classes.get(dt.storage_class))
            # Kept: the configuration never changes while the butler is open (a put asked twice).
            known = self._formatters[key] = formatter_for(dt.storage_class, fmt,
                                                          allow_pickle=self.config.formats.allow_pickle)
        return known

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
        return template.namer(dataset_type, run, variables=self.template_variables, extension=extension)

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
        if len(items) == 1:  # a put: no lists and dicts gathered for one item
            ((dt_or_name, data_id),) = items
            name = dt_or_name.name if isinstance(dt_or_name, DatasetType) else dt_or_name
            one_type = self.registry.get_dataset_type(name)
            context = f"dataset type {name!r}"
            (one_id,) = self.registry.expand_data_ids(
                one_type.dimensions, [self.universe.data_id(one_type.dimensions, data_id, context=context)],
                context=context)
            return [DatasetRef(new_dataset_id(), one_type, one_id, run)]
        dts: list[DatasetType] = []
        data_ids: list[DataId] = []
        known: dict[str, DatasetType] = {}  # looked up once per dataset type, not per item
        for dt_or_name, data_id in items:
            name = dt_or_name.name if isinstance(dt_or_name, DatasetType) else dt_or_name
            dt = known.get(name)
            if dt is None:
                dt = known[name] = self.registry.get_dataset_type(name)
            dts.append(dt)
            data_ids.append(self.universe.data_id(dt.dimensions, data_id, context=f"dataset type {name!r}"))
        expanded = self._expand(dts, data_ids)
        ids = new_dataset_ids(len(dts)) if len(dts) > 1 else [new_dataset_id()]
        return list(map(DatasetRef, ids, dts, expanded, repeat(run)))

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
        file_namer = self.file_namer
        if len(new_refs) == 1:
            # One file: named by its template directly, as `file_namer`'s namer would name it
            # (compiling one costs three times as much as naming one file without it).
            def file_namer(dataset_type: DatasetType, run: str) -> Callable[[DatasetRef], str]:
                template = self.templates.template_for(dataset_type.name, run)
                extension = self._formatter(dataset_type).extension
                return functools.partial(template.format_directly, variables=self.template_variables,
                                         extension=extension)
        _butler_put.write_datasets(self.registry, self.datastore, [obj for obj, _, _ in items], new_refs,
                                   self._formatter, file_namer, before_commit)
        return new_refs

    # -- ingest ------------------------------------------------------------------------

    def ingest(self, files: Iterable[FileDataset], *, run: str | None = None, transfer: str = "auto",
               checksum: bool = True, progress: Any = None, rename: str | None = None,
               records: Mapping[str, Sequence[Mapping[str, Any]]] | None = None) -> list[DatasetRef]:
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
        rename
            A file template naming the stored files instead of the repository's templates
            (it may also use each file's ``metadata``); names are checked unique first.
        records
            Dimension records the files need, by element (from an ingest plugin): inserted
            when absent in the transaction that adds the datasets; one that exists with
            other values is a `DimensionError` and nothing is ingested.

        Returns
        -------
        refs
            One ref per file, including files that were already ingested.
        """
        self._require_writeable()
        if transfer not in TRANSFER_MODES:
            raise ConfigError(f"Unknown transfer mode {transfer!r}; use one of {', '.join(TRANSFER_MODES)}")
        run = run or self.run
        if run is None:
            raise CollectionError("No run to write to: pass run=... or open the butler with run=...")
        return _butler_ingest.ingest(self.registry, self.datastore, self.templates, self.template_variables,
                                     list(files), run, transfer=transfer, checksum=checksum, progress=progress,
                                     rename=rename, records=records, expand=self._expand, formatter_of=self._formatter)

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
        return _butler_read.read_datasets(self.registry, self.datastore, list(refs), parameters,
                                          verify_checksum=self.config.datastore.verify_on_read)

    def get_cutouts(self, ref_or_type: DatasetRef | str, boxes: Sequence[tuple[int, int, int, int]],
                    data_id: Mapping[str, Any] | None = None, *, collections: Sequence[str] | None = None,
                    plane: str | None = None, hdu: int | str | tuple[str, int] | None = None,
                    **kwargs: Any) -> Cutouts:
        """Many cutouts ``(y0, y1, x0, x1)`` from one image, reading only the bytes they need.

        ``plane`` cuts a plane of the image (``get(...).planes[plane]``); ``hdu`` cuts the HDU
        that ``get(..., parameters={"hdu": hdu})`` reads (an index, ``"SCI"`` or ``("SCI", 2)``).
        """
        ref = self._resolve(ref_or_type, data_id, kwargs, collections)
        record = next(_butler_read.file_records(self.registry, [ref]))
        return _butler_read.read_cutouts(self.datastore, ref, record, boxes, plane=plane, hdu=hdu)

    def retrieve(self, refs: Iterable[DatasetRef], destination: str | Path, *, overwrite: bool = False) -> list[Path]:
        """Copy the files of datasets out of the repository into a local directory.

        Each file keeps its path relative to the datastore root (files ingested in place by
        absolute path keep their name only), so the copies never collide. An existing file
        at a destination is an error unless ``overwrite``. Returns the written paths.

        Examples
        --------
        >>> butler.retrieve(butler.query_datasets("calexp", where="visit = 903334"), "out/")  # doctest: +SKIP
        """
        return _butler_read.retrieve(self.registry, self.datastore, list(refs), destination, overwrite=overwrite)

    def retrieve_file(self, ref_or_type: DatasetRef | str, path: str | Path, data_id: Mapping[str, Any] | None = None,
                      *, collections: Sequence[str] | None = None, overwrite: bool = False, **kwargs: Any) -> Path:
        """Copy one dataset's file (by ref, or by type and data id searched in collections) to ``path``."""
        ref = self._resolve(ref_or_type, data_id, kwargs, collections)
        record = next(_butler_read.file_records(self.registry, [ref]))
        return _butler_read.copy_out(self.datastore, ref, record, Path(path), overwrite)

    def uri(self, ref: DatasetRef) -> str:
        """The full location of a dataset's file."""
        record = next(_butler_read.file_records(self.registry, [ref]))
        return self.datastore.url(record.path)

    def transfer_from(self, source: Butler, refs: Iterable[DatasetRef], *, transfer: str = "copy",
                      new_ids: bool = False, mode: str = "limited", include_provenance: bool = True,
                      progress: bool = False) -> Any:
        """Bring datasets of another repository here, with what they need; returns a `TransferReport`.

        Records, dataset types, runs and (``mode="full"``: also the provenance ancestors)
        are carried; what this repository holds identically is skipped, and a conflict is
        raised (`TransferConflictError`) after the rest is written, never overwritten. See
        `skybutler.transfer.importer.import_content` for ``transfer`` and ``new_ids``.

        Examples
        --------
        >>> report = central.transfer_from(scratch, scratch.query_datasets("calexp", collections=["run"]))  # doctest: +SKIP
        """
        from .transfer import RegistrySource, import_content

        content = RegistrySource(source, refs, mode=mode, include_provenance=include_provenance)
        return import_content(self, content, transfer=transfer, new_ids=new_ids, progress=progress)

    # -- queries -----------------------------------------------------------------------

    def query_datasets(self, dataset_type: str, *, collections: Sequence[str] | None = None,
                       where: str | None = None, bind: Mapping[str, Any] | None = None,
                       data_id: Mapping[str, Any] | None = None, find_first: bool = True,
                       time: Any = None) -> DatasetQueryResults:
        """Stream datasets of a type in collections (searched in order; first match wins)."""
        colls = list(collections) if collections is not None else self.collections.defaults
        return query_datasets(self.registry, dataset_type, colls, where=where, bind=bind, data_id=data_id,
                              find_first=find_first, time=time)

    def query_data_ids(self, dimensions: Sequence[str], *, where: str | None = None,
                       bind: Mapping[str, Any] | None = None, datasets: Sequence[str] = (),
                       collections: Sequence[str] | None = None, data_id: Mapping[str, Any] | None = None,
                       ) -> DataIdQueryResults:
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

    def finish_removals(self) -> dict[str, int]:
        """Delete the files of removals that were interrupted (crash, store unreachable).

        Only files that no dataset's row names are deleted, so a list whose transaction
        never committed deletes nothing. Returns the number of files deleted per run (or
        ``"datasets"`` for `remove_datasets`).
        """
        return _butler_remove.finish_removals(self.registry, self.datastore)

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
        _butler_remove.remove_then_delete(self.registry, self.datastore,
                                          lambda: self.registry.remove_datasets([r.id for r in refs]), "datasets")
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
            counts[run] = _butler_remove.remove_then_delete(
                self.registry, self.datastore, functools.partial(self.registry.remove_run, run), run, purge)
        return counts

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """Group registry writes (files are still written per call)."""
        with self.registry.transaction():
            yield


__all__ = ["Butler", "Cutouts", "FileDataset", "TRANSFER_MODES", "DatasetExistsError"]
