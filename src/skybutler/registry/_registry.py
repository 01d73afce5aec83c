"""The registry: what exists, where it came from, how it relates. The only place SQL runs.

`Registry` is the entry point; the work is done by the parts it holds, each over one
`Database`:

- `DimensionRecords` (``registry.dimension_records``): records, overlaps, data id expansion;
- `DatasetTypeRecords` (``registry.dataset_type_records``): dataset types;
- `CollectionRecords` (``registry.collection_records``): collections, chains, the search
  path, tags and certifications;
- `DatasetRecords` (``registry.dataset_records``): datasets and file records;

and by the query modules (`queries`, `search`, `pipeline_sql`, `provenance_sql`), which
use those parts' public methods. The methods of `Registry` below delegate to them.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import sqlalchemy as sa

from ..config import redact_url
from ..dimensions import DimensionUniverse
from ..errors import DimensionError, RepositoryExistsError, RepositoryNotFoundError, SchemaVersionError
from ..model import CollectionType, DataId, DatasetRef, DatasetType
from . import _migrate, _remove_run, schema
from ._collections import CollectionRecords
from ._database import Database
from ._dataset_types import DatasetTypeRecords
from ._datasets import DatasetRecords, FileRecord
from ._db import check_connection, database_errors, make_engine, normalise_url, open_existing
from ._dimension_records import DimensionRecords
from .queries import dimension_records_condition
from .schema import SCHEMA_VERSION, Tables, build_tables
from .search import SearchStep

_TABLES: dict[str, Tables] = {}


def shared_tables(universe: DimensionUniverse) -> Tables:
    """The tables of a universe, built once per process and shared by every registry of that universe.

    Building ~150 table and index objects takes ~50 ms, which every open of a registry
    paid (a merge opens one per job outcome); table objects hold no connection or
    state, so registries on different databases can share them.
    """
    key = json.dumps(universe.document, sort_keys=True, default=str)
    tables = _TABLES.get(key)
    if tables is None:
        tables = _TABLES[key] = build_tables(universe)
    return tables


class Registry:
    """SQL registry on SQLite or PostgreSQL.

    Use `Registry.create` for a new repository and `Registry.open` for an
    existing one. Every method runs in its own transaction unless called
    inside ``with registry.transaction():``.
    """

    def __init__(self, engine: sa.Engine, universe: DimensionUniverse, *, url: str, writeable: bool = True):
        self.universe = universe
        self.tables: Tables = shared_tables(universe)
        self.database = Database(engine, url, writeable=writeable)
        self.dimension_records = DimensionRecords(self.database, self.tables, universe)
        self.dataset_type_records = DatasetTypeRecords(self.database, self.tables, universe)
        self.collection_records = CollectionRecords(self.database, self.tables, self.dataset_type_records)
        self.dataset_records = DatasetRecords(self.database, self.tables, universe, self.dataset_type_records,
                                              self.collection_records)

    # -- lifecycle ---------------------------------------------------------------------

    @classmethod
    def create(cls, url: str, *, universe: DimensionUniverse | None = None, namespace: str | None = None,
               root: str | None = None, sync_every_commit: bool = False) -> Registry:
        """Create the tables of a new repository (the database or schema must not hold one).

        Everything (the schema on PostgreSQL, tables, views, ``meta``, the migration
        stamp) is made in one transaction, so a create that fails half-way leaves
        nothing behind and can be retried.
        """
        universe = universe or DimensionUniverse.default()
        sa_url = normalise_url(url, root)
        engine = make_engine(sa_url, namespace=namespace, sync_every_commit=sync_every_commit)
        registry = cls(engine, universe, url=sa_url)
        try:
            check_connection(engine, sa_url)
            with engine.connect().execution_options(write=True) as conn, conn.begin():
                if registry.dialect == "postgresql":
                    # Creates of one namespace take turns: side by side, both found no repository
                    # and the second failed on the server's catalog (a raw unique-key error);
                    # now it waits and finds the first's. SQLite's write lock does the same.
                    conn.execute(sa.text("SELECT pg_advisory_xact_lock(hashtext(:key))"),
                                 {"key": f"skybutler create {namespace or ''}"})
                if namespace and registry.dialect == "postgresql":
                    conn.execute(sa.text(f'CREATE SCHEMA IF NOT EXISTS "{namespace}"'))
                if sa.inspect(conn).has_table("meta", schema=namespace):
                    raise RepositoryExistsError(f"Registry database {redact_url(sa_url)} already holds a repository")
                registry.tables.metadata.create_all(conn)
                schema.create_views(conn, registry.tables, universe)
                conn.execute(sa.insert(registry.tables.meta), [
                    {"key": "schema_version", "value": str(SCHEMA_VERSION)},
                    {"key": "universe", "value": json.dumps(universe.document)},
                    {"key": "created", "value": datetime.datetime.now(datetime.UTC).isoformat()},
                ])
                _migrate.stamp_head(conn, namespace)
        except BaseException:
            engine.dispose()
            raise
        return registry

    @classmethod
    def open(cls, url: str, *, namespace: str | None = None, root: str | None = None,
             sync_every_commit: bool = False, writeable: bool = True) -> Registry:
        """Open the registry of an existing repository.

        With ``writeable=False`` every write raises `ReadOnlyError`, and the database
        connections themselves are read-only (a write that bypasses the registry's own
        methods is refused by the database).

        Raises `RepositoryNotFoundError` for a missing SQLite file (never creating
        one), `RepositoryDamagedError` for a damaged one, `SchemaVersionError` for a schema older or newer
        than this skybutler's (naming both versions, and the upgrade command).
        """
        sa_url, engine = open_existing(url, root=root, namespace=namespace, sync_every_commit=sync_every_commit,
                                       read_only=not writeable)
        try:
            with database_errors(sa_url), engine.connect() as conn:
                if not sa.inspect(conn).has_table("meta", schema=namespace):
                    raise RepositoryNotFoundError(
                        f"Registry database {redact_url(sa_url)} holds no skybutler repository")
                meta = _migrate.meta_table()
                values = dict(conn.execute(sa.select(meta.c.key, meta.c.value)).all())
            version = int(values.get("schema_version", 0))
            if version > SCHEMA_VERSION:
                raise SchemaVersionError(
                    f"Registry {redact_url(sa_url)} has schema version {version}; this skybutler reads up to "
                    f"{SCHEMA_VERSION}. Upgrade skybutler."
                )
            if version < SCHEMA_VERSION:
                raise SchemaVersionError(
                    f"Registry {redact_url(sa_url)} has schema version {version}; this skybutler needs "
                    f"{SCHEMA_VERSION}. Upgrade the repository with: skybutler migrate {root or 'REPO'}"
                )
            universe = DimensionUniverse(json.loads(values["universe"]))
        except BaseException:
            engine.dispose()
            raise
        return cls(engine, universe, url=sa_url, writeable=writeable)

    def close(self) -> None:
        self.database.close()

    @property
    def engine(self) -> sa.Engine:
        return self.database.engine

    @property
    def url(self) -> str:
        """The SQLAlchemy URL of the database (it may hold a password: `redact` it before showing it)."""
        return self.database.url

    @property
    def dialect(self) -> str:
        """``"sqlite"`` or ``"postgresql"``."""
        return self.database.dialect

    @property
    def writeable(self) -> bool:
        """False when opened read-only: every write then raises `ReadOnlyError`."""
        return self.database.writeable

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sa.Connection]:
        """One write transaction; nested calls join the outer one (`ReadOnlyError` when read-only)."""
        try:
            with self.database.transaction() as conn:
                yield conn
        except BaseException:
            # Records and dataset types this transaction inserted and then read (a physical_filter's
            # instrument, a type registered and put) were cached as existing; rolled back, they are not.
            self.dimension_records.forget_cached()
            self.dataset_type_records.forget_cached()
            raise

    # -- dimension records -------------------------------------------------------------

    def insert_dimension_records(self, element: str, records: Iterable[Mapping[str, Any]], *,
                                 skip_existing: bool = False) -> int:
        """Insert records of one element in bulk; returns how many were new (see `DimensionRecords.insert`)."""
        return self.dimension_records.insert(element, records, skip_existing=skip_existing)

    def fetch_dimension_records(self, element: str, *, where: str | None = None,
                                bind: Mapping[str, Any] | None = None) -> Iterator[dict[str, Any]]:
        """Records of one element, optionally filtered by a where expression.

        The expression may name the element's own columns (``exposure_time``) and also
        other dimensions and their metadata (``tract = 0``, ``visit.region OVERLAPS
        POINT(150, 2)``), which are joined as in `query_data_ids`.
        """
        if element not in self.universe.elements:
            raise DimensionError(f"Unknown dimension element {element!r}; known: {', '.join(self.universe.elements)}")
        yield from self.dimension_records.select(element, dimension_records_condition(self, element, where, bind))

    def expand_data_ids(self, dimensions: Sequence[str], data_ids: Sequence[DataId], *,
                        context: str = "") -> list[DataId]:
        """Check that every value has a record and attach implied values (``band`` of a visit)."""
        return self.dimension_records.expand_data_ids(dimensions, data_ids, context=context)

    # -- dataset types -----------------------------------------------------------------

    def register_dataset_type(self, dataset_type: DatasetType) -> bool:
        """Register a dataset type; identical re-registration is a no-op (returns False)."""
        return self.dataset_type_records.register(dataset_type)

    def get_dataset_type(self, name: str) -> DatasetType:
        """The registered dataset type of that name (DatasetTypeError if none)."""
        return self.dataset_type_records.get(name)

    def dataset_types(self) -> list[DatasetType]:
        """Every registered dataset type, sorted by name."""
        return self.dataset_type_records.all()

    # -- collections -------------------------------------------------------------------

    def register_collection(self, name: str, type: CollectionType = CollectionType.RUN, *,
                            doc: str | None = None) -> bool:
        """Register a collection; an existing one of the same type is a no-op (returns False)."""
        return self.collection_records.register(name, type, doc=doc)

    def collection_type(self, name: str) -> CollectionType:
        return self.collection_records.type_of(name)

    def collections(self, *, types: Iterable[CollectionType] | None = None) -> list[dict[str, Any]]:
        """Every collection as ``{name, type, doc, children}`` sorted by name."""
        return self.collection_records.all(types=types)

    def set_chain(self, name: str, children: Sequence[str]) -> None:
        """Define (or redefine) a CHAINED collection as an ordered list of collections (cycles refused)."""
        self.collection_records.set_chain(name, children)

    def resolve_collections(self, names: Sequence[str]) -> list[str]:
        """Flatten chains into the ordered list of non-chained collections (duplicates dropped)."""
        return self.collection_records.resolve(names)

    def search_path(self, names: Sequence[str], *, conn: sa.Connection | None = None) -> list[SearchStep]:
        """The non-chained collections searched for ``names``, in order (each once).

        Chains are expanded depth first; a collection met a second time is skipped.
        """
        return self.collection_records.search_path(names, conn=conn)

    def associate(self, collection: str, refs: Iterable[DatasetRef]) -> None:
        """Add datasets to a TAGGED collection (replacing one with the same type and data id)."""
        self.collection_records.associate(collection, refs)

    def disassociate(self, collection: str, refs: Iterable[DatasetRef]) -> int:
        """Remove datasets from a TAGGED collection; returns how many were tagged there."""
        return self.collection_records.disassociate(collection, refs)

    def certify(self, collection: str, refs: Iterable[DatasetRef], begin: Any, end: Any) -> None:
        """Certify calibration datasets as valid over ``[begin, end)`` in a CALIBRATION collection."""
        self.collection_records.certify(collection, refs, begin, end)

    def decertify(self, collection: str, dataset_type: str, begin: Any = None, end: Any = None, *,
                  data_ids: Iterable[DataId] | None = None, refs: Iterable[DatasetRef] | None = None) -> int:
        """Remove certifications over ``[begin, end)`` (see `CollectionRecords.decertify`); returns how many."""
        return self.collection_records.decertify(collection, dataset_type, begin, end, data_ids=data_ids, refs=refs)

    def certifications(self, collection: str, dataset_type: str | None = None) -> list[dict[str, Any]]:
        """The certifications of a CALIBRATION collection: ``{dataset_id, dataset_type, data_id_key, begin, end}``."""
        return self.collection_records.certifications(collection, dataset_type)

    def remove_collection(self, name: str) -> None:
        """Remove a non-RUN collection (runs are removed with their datasets by `remove_run`)."""
        self.collection_records.remove(name)

    # -- datasets ----------------------------------------------------------------------

    def run_id(self, run: str) -> int:
        """The id of a RUN collection."""
        return self.collection_records.run_id(run)

    def insert_datasets(self, refs: Sequence[DatasetRef], files: Sequence[FileRecord] = (), *,
                        register_runs: bool = False) -> None:
        """Insert datasets (validated and expanded) and their file records in one transaction.

        A dataset that already exists for its type, data id and run raises
        `DatasetExistsError` naming it; nothing is inserted then. ``register_runs``
        registers their runs first where they do not exist yet.
        """
        self.dataset_records.insert(refs, files, register_runs=register_runs)

    def get_files(self, ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, FileRecord]:
        """The file records of those datasets that have one."""
        return self.dataset_records.get_files(ids)

    def all_files(self) -> Iterator[tuple[FileRecord, DatasetRef]]:
        """Every file record with its dataset (for verify), streamed."""
        return self.dataset_records.all_files()

    def get_datasets(self, ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, DatasetRef]:
        """The datasets of those ids that exist."""
        return self.dataset_records.get(ids)

    def remove_datasets(self, ids: Sequence[uuid.UUID]) -> list[FileRecord]:
        """Delete datasets and their file records; returns the file records (the caller deletes files)."""
        return self.dataset_records.remove(ids)

    def remove_run(self, run: str) -> list[FileRecord]:
        """Delete a run with all its datasets, file records and executions; returns the file records."""
        return _remove_run.remove_run(self.database, self.tables, self.collection_records, run)
