"""The registry: what exists, where it came from, how it relates. The only place SQL runs."""

from __future__ import annotations

import contextlib
import datetime
import json
import operator
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from ..dimensions import DimensionUniverse, Region, overlapping_pairs
from ..errors import (
    CollectionError,
    DatasetExistsError,
    DatasetTypeError,
    DimensionError,
    ReadOnlyError,
    RepositoryNotFoundError,
    SkyButlerError,
)
from ..model import CollectionType, DataId, DatasetRef, DatasetType, storage_class
from . import _migrate, schema
from ._db import (
    check_connection,
    check_sqlite_file,
    database_errors,
    make_engine,
    normalise_url,
    redact,
    sqlite_file,
)
from .schema import SCHEMA_VERSION, Tables, build_tables, overlap_columns
from .search import SearchStep

_CHUNK = 500
_NAME_OK = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_")


@dataclass(frozen=True)
class FileRecord:
    """Where a dataset's bytes are and what they were when written."""

    dataset_id: uuid.UUID
    path: str
    size: int
    checksum: str | None
    checksum_algorithm: str | None
    format: str


def tuple_getter(keys: Sequence[Any]) -> Callable[[Any], tuple]:
    """A fast ``row -> tuple(row[k] for k in keys)`` for mappings (names) or rows (positions)."""
    if len(keys) > 1:
        return operator.itemgetter(*keys)  # type: ignore[return-value]
    if len(keys) == 1:
        only = keys[0]
        return lambda row: (row[only],)
    return lambda row: ()


def _chunks(seq: Sequence[Any], n: int = _CHUNK) -> Iterator[Sequence[Any]]:
    for i in range(0, len(seq), n):
        yield seq[i:i + n]


def _to_datetime(value: Any) -> Any:
    if value is None or isinstance(value, datetime.datetime):
        return value.replace(tzinfo=None) if isinstance(value, datetime.datetime) and value.tzinfo else value
    if isinstance(value, str):
        return datetime.datetime.fromisoformat(value.replace("Z", "+00:00")).replace(tzinfo=None)
    if hasattr(value, "to_datetime"):  # astropy Time
        return value.utc.to_datetime()
    raise DimensionError(f"Cannot interpret {value!r} as a time")


class Registry:
    """SQL registry on SQLite or PostgreSQL.

    Use `Registry.create` for a new repository and `Registry.open` for an
    existing one. Every method runs in its own transaction unless called
    inside ``with registry.transaction():``.
    """

    def __init__(self, engine: sa.Engine, universe: DimensionUniverse, *, url: str):
        self.engine = engine
        self.universe = universe
        self.url = url
        self.writeable = True
        self.tables: Tables = build_tables(universe)
        self._local = threading.local()
        # Caches of immutable facts only: dataset types and dimension records are
        # never changed once written, so caching them cannot go stale.
        self._dataset_types: dict[str, tuple[int, DatasetType]] = {}
        self._dataset_types_by_id: dict[int, DatasetType] = {}
        self._record_cache: dict[str, dict[tuple, dict[str, Any]]] = {}
        # Statements of the per-call hot paths (one put, one get, one find), built once:
        # building a SELECT costs ~60 µs of Python, executing a prebuilt one ~15 µs.
        self._statements: dict[str, Any] = {}

    def _statement(self, name: str, build: Any) -> Any:
        """A statement with bind parameters, built on first use and kept (tables never change)."""
        stmt = self._statements.get(name)
        if stmt is None:
            stmt = self._statements[name] = build()
        return stmt

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
                if namespace and registry.dialect == "postgresql":
                    conn.execute(sa.text(f'CREATE SCHEMA IF NOT EXISTS "{namespace}"'))
                if sa.inspect(conn).has_table("meta", schema=namespace):
                    raise SkyButlerError(f"Registry database {redact(sa_url)} already holds a repository")
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
        one), `SkyButlerError` for a damaged one, and for a schema older or newer
        than this skybutler's (naming both versions, and the upgrade command).
        """
        sa_url = normalise_url(url, root)
        path = sqlite_file(sa_url)
        if path is not None:
            check_sqlite_file(path)
        engine = make_engine(sa_url, namespace=namespace, sync_every_commit=sync_every_commit,
                             read_only=not writeable)
        try:
            check_connection(engine, sa_url)
            with database_errors(sa_url), engine.connect() as conn:
                if not sa.inspect(conn).has_table("meta", schema=namespace):
                    raise RepositoryNotFoundError(
                        f"Registry database {redact(sa_url)} holds no skybutler repository")
                meta = _migrate.meta_table()
                values = dict(conn.execute(sa.select(meta.c.key, meta.c.value)).all())
            version = int(values.get("schema_version", 0))
            if version > SCHEMA_VERSION:
                raise SkyButlerError(
                    f"Registry {redact(sa_url)} has schema version {version}; this skybutler reads up to "
                    f"{SCHEMA_VERSION}. Upgrade skybutler."
                )
            if version < SCHEMA_VERSION:
                raise SkyButlerError(
                    f"Registry {redact(sa_url)} has schema version {version}; this skybutler needs "
                    f"{SCHEMA_VERSION}. Upgrade the repository with: skybutler migrate {root or 'REPO'}"
                )
            universe = DimensionUniverse(json.loads(values["universe"]))
        except BaseException:
            engine.dispose()
            raise
        registry = cls(engine, universe, url=sa_url)
        registry.writeable = writeable
        return registry

    def close(self) -> None:
        self.engine.dispose()

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sa.Connection]:
        """One write transaction; nested calls join the outer one.

        Raises `ReadOnlyError` on a registry opened read-only: every write goes through here.
        """
        if not self.writeable:
            raise ReadOnlyError(f"Registry {redact(self.url)} was opened read-only")
        active = getattr(self._local, "conn", None)
        if active is not None:
            yield active
            return
        with self.engine.connect().execution_options(write=True) as conn, conn.begin():
            self._local.conn = conn
            # Collection rows read in this transaction (a put reads its run twice); any write
            # to the collection table empties it.
            self._local.collections = {}
            try:
                yield conn
            finally:
                self._local.conn = None
                self._local.collections = None

    @contextlib.contextmanager
    def _read(self, *, lookup: bool = False) -> Iterator[sa.Connection]:
        """A connection for reading (the active write transaction's, if any).

        ``lookup=True`` is for a few small statements: they then run without an explicit
        transaction (autocommit on PostgreSQL, no BEGIN on SQLite), saving a statement or
        two per call. Streamed
        queries need a transaction for their server-side cursor and must not use it.
        """
        active = getattr(self._local, "conn", None)
        if active is not None:
            yield active
            return
        with self.engine.connect() as conn:
            if lookup:
                conn = conn.execution_options(
                    **({"isolation_level": "AUTOCOMMIT"} if self.dialect == "postgresql" else {"lookup": True}))
            yield conn

    # -- dimension records -------------------------------------------------------------

    def _normalise_record(self, element: str, record: Mapping[str, Any]) -> dict[str, Any]:
        el = self.universe.elements[element]
        allowed = {*el.primary_key, *self.universe.record_columns(element)}
        if el.region:
            allowed.add("region")
        unknown = set(record) - allowed
        if unknown:
            raise DimensionError(
                f"Record for {element!r} has unknown field(s) {', '.join(sorted(unknown))}; "
                f"allowed: {', '.join(sorted(allowed))}"
            )
        missing = [k for k in el.primary_key if record.get(k) is None]
        if missing:
            raise DimensionError(f"Record {dict(record)} for {element!r} is missing {', '.join(missing)}")
        out: dict[str, Any] = {}
        types = self.universe.record_columns(element)
        for key, value in record.items():
            if key in el.primary_key:
                out[key] = self.universe.coerce(key, value)
            elif key == "region":
                if value is None:
                    out[key] = None
                else:
                    region = value if isinstance(value, Region) else Region.from_vertices(value)
                    out[key] = region.to_json()
            elif types[key] == "datetime":
                out[key] = _to_datetime(value)
            elif key in self.universe.elements:
                out[key] = self.universe.coerce(key, value) if value is not None else None
            else:
                out[key] = value
        return out

    def insert_dimension_records(self, element: str, records: Iterable[Mapping[str, Any]], *,
                                 skip_existing: bool = False) -> int:
        """Insert records of one element in bulk; returns how many were new.

        Implied values not given (``band`` of a visit given its ``physical_filter``)
        are filled from the implying records. Overlaps with other region-bearing
        elements are computed here, once. With ``skip_existing`` records that
        already exist are left alone (sync-if-absent); otherwise they are an error.
        """
        if element not in self.universe.elements:
            raise DimensionError(
                f"Unknown dimension element {element!r}; known: {', '.join(self.universe.elements)}"
            )
        el = self.universe.elements[element]
        rows = [self._normalise_record(element, r) for r in records]
        if not rows:
            return 0
        table = self.tables.dimensions[element]
        pk = el.primary_key
        with self.transaction() as conn:
            self._check_parents(conn, element, rows)
            self._fill_implied(conn, element, rows)
            existing = self._existing_keys(conn, element, [tuple(r[k] for k in pk) for r in rows])
            seen: set[tuple] = set()
            new_rows = []
            for r in rows:
                key = tuple(r[k] for k in pk)
                if key in existing or key in seen:
                    if not skip_existing:
                        raise DimensionError(
                            f"A {element} record for {dict(zip(pk, key, strict=True))} already exists "
                            "(use skip_existing / --skip-existing to insert only new records)"
                        )
                    continue
                seen.add(key)
                new_rows.append(r)
            columns = [c.name for c in table.columns]
            if new_rows and el.region:
                self._lock_overlaps(conn, element)
            if new_rows:
                # Another writer may insert the same records between the check above and here
                # (PostgreSQL runs transactions side by side): its rows are left alone, and only
                # the rows this call really inserted get overlaps.
                stmt = self._insert_new(table).returning(*[table.c[k] for k in pk])
                done = {tuple(row) for row in conn.execute(
                    stmt, [{c: r.get(c) for c in columns} for r in new_rows])}
                if len(done) < len(new_rows):
                    late = [tuple(r[k] for k in pk) for r in new_rows if tuple(r[k] for k in pk) not in done]
                    if not skip_existing:
                        raise DimensionError(
                            f"A {element} record for {dict(zip(pk, late[0], strict=True))} already exists "
                            "(use skip_existing / --skip-existing to insert only new records)"
                        )
                    new_rows = [r for r in new_rows if tuple(r[k] for k in pk) in done]
                if el.region and new_rows:
                    self._insert_overlaps(conn, element, new_rows)
        return len(new_rows)

    def _lock_overlaps(self, conn: sa.Connection, element: str) -> None:
        """Serialise writers of region-bearing records of related elements (PostgreSQL).

        Overlaps are computed against the other element's rows as this transaction sees
        them; two transactions inserting a visit and a patch side by side would each miss
        the other's row. SQLite needs nothing: its writers already take turns.
        """
        if self.dialect != "postgresql":
            return
        quote = conn.dialect.identifier_preparer.quote
        namespace = (conn.get_execution_options().get("schema_translate_map") or {}).get(None)
        prefix = f"{quote(namespace)}." if namespace else ""
        names = sorted(self.tables.overlaps[pair].name for pair in self.universe.overlaps if element in pair)
        for name in names:  # one order everywhere: no deadlocks
            conn.execute(sa.text(f"LOCK TABLE {prefix}{quote(name)} IN SHARE ROW EXCLUSIVE MODE"))

    def _check_parents(self, conn: sa.Connection, element: str, rows: list[dict[str, Any]]) -> None:
        el = self.universe.elements[element]
        for dep in (*el.requires, *el.implies):
            dep_pk = self.universe.elements[dep].primary_key
            keys = {tuple(r[k] for k in dep_pk) for r in rows if all(r.get(k) is not None for k in dep_pk)}
            missing = keys - self._existing_keys(conn, dep, list(keys))
            if missing:
                example = dict(zip(dep_pk, sorted(missing)[0], strict=True))
                raise DimensionError(
                    f"Cannot insert {element} records: no {dep} record for {example} "
                    f"({len(missing)} missing); insert the {dep} records first"
                )

    def _fill_implied(self, conn: sa.Connection, element: str, rows: list[dict[str, Any]]) -> None:
        el = self.universe.elements[element]
        for via in el.implies:
            deeper = self.universe.implied_closure(via)
            if not deeper:
                continue
            via_pk = self.universe.elements[via].primary_key
            keys = {tuple(r[k] for k in via_pk) for r in rows if all(r.get(k) is not None for k in via_pk)}
            records = self._fetch_records(conn, via, list(keys))
            for r in rows:
                key = tuple(r.get(k) for k in via_pk)
                rec = records.get(key)
                if rec is None:
                    continue
                for d in deeper:
                    if r.get(d) is None:
                        r[d] = rec.get(d)
                    elif rec.get(d) is not None and r[d] != rec[d]:
                        raise DimensionError(
                            f"{element} record {({k: r[k] for k in el.primary_key})} says {d}={r[d]!r} "
                            f"but its {via} {key[-1]!r} implies {d}={rec[d]!r}"
                        )

    def _existing_keys(self, conn: sa.Connection, element: str, keys: list[tuple]) -> set[tuple]:
        return set(self._fetch_records(conn, element, keys, columns_only_key=True))

    def _fetch_records(self, conn: sa.Connection, element: str, keys: list[tuple], *,
                       columns_only_key: bool = False) -> dict[tuple, dict[str, Any]]:
        """Records of ``element`` by primary key tuple (cached; records never change)."""
        cache = self._record_cache.setdefault(element, {})
        out = {k: cache[k] for k in keys if k in cache}
        todo = [k for k in keys if k not in cache]
        if not todo:
            return out
        table = self.tables.dimensions[element]
        pk = self.universe.elements[element].primary_key
        cols = [table.c[k] for k in pk] + [table.c[c] for c in self.universe.record_columns(element)]
        for chunk in _chunks(todo):
            if len(pk) == 1:
                cond = table.c[pk[0]].in_([k[0] for k in chunk])
            else:
                cond = sa.tuple_(*[table.c[k] for k in pk]).in_(list(chunk))
            for row in conn.execute(sa.select(*cols).where(cond)).mappings():
                rec = dict(row)
                key = tuple(rec[k] for k in pk)
                cache[key] = rec
                out[key] = rec
        return out

    def _insert_overlaps(self, conn: sa.Connection, element: str, rows: list[dict[str, Any]]) -> None:
        for a, b in self.universe.overlaps:
            if element not in (a, b):
                continue
            other = b if element == a else a
            other_table = self.tables.dimensions[other]
            other_rows = [dict(r) for r in conn.execute(
                sa.select(other_table).where(other_table.c.region.is_not(None))).mappings()]
            mine = [r for r in rows if r.get("region")]
            if not mine or not other_rows:
                continue
            pairs = overlapping_pairs([Region.from_json(r["region"]) for r in mine],
                                      [Region.from_json(r["region"]) for r in other_rows])
            ca, cb = overlap_columns(self.universe, a, b)
            out = []
            for i, j in pairs:
                left, right = (mine[i], other_rows[j]) if element == a else (other_rows[j], mine[i])
                out.append({**{col: left[k] for k, col in ca.items()}, **{col: right[k] for k, col in cb.items()}})
            if out:
                conn.execute(self._insert_new(self.tables.overlaps[(a, b)]), out)

    def fetch_dimension_records(self, element: str, *, where: str | None = None,
                                bind: Mapping[str, Any] | None = None) -> Iterator[dict[str, Any]]:
        """Records of one element, optionally filtered by a where expression.

        The expression may name the element's own columns (``exposure_time``) and also
        other dimensions and their metadata (``tract = 0``, ``visit.region OVERLAPS
        POINT(150, 2)``), which are joined as in `query_data_ids`.
        """
        from .queries import dimension_records_condition

        if element not in self.universe.elements:
            raise DimensionError(f"Unknown dimension element {element!r}; known: {', '.join(self.universe.elements)}")
        table = self.tables.dimensions[element]
        stmt = sa.select(table)
        cond = dimension_records_condition(self, element, where, bind)
        if cond is not None:
            stmt = stmt.where(cond)
        stmt = stmt.order_by(*[table.c[k] for k in self.universe.elements[element].primary_key])
        with self._read() as conn:
            for row in conn.execute(stmt).mappings():
                rec = dict(row)
                if "region" in rec and rec["region"] is not None:
                    rec["region"] = json.loads(rec["region"])
                yield rec

    def expand_data_ids(self, dimensions: Sequence[str], data_ids: Sequence[DataId], *,
                        context: str = "") -> list[DataId]:
        """Check that every value has a record and attach implied values (``band`` of a visit)."""
        if not data_ids:
            return []
        implied_by = self.universe.implied_by(dimensions)
        givers = {giver for giver in implied_by.values()}
        per_element: dict[str, dict[tuple, dict[str, Any]]] = {}
        with contextlib.ExitStack() as stack:
            conn = None
            for d in dimensions:
                pk = self.universe.elements[d].primary_key
                key_of = tuple_getter(pk)
                keys = list({key_of(di.required_items) for di in data_ids})
                cache = self._record_cache.get(d, {})
                if all(k in cache for k in keys):  # records never change: no query needed
                    found = {k: cache[k] for k in keys}
                else:
                    if conn is None:
                        conn = stack.enter_context(self._read(lookup=True))
                    found = self._fetch_records(conn, d, keys)
                if len(found) != len(keys):
                    missing = [k for k in keys if k not in found]
                    example = dict(zip(pk, missing[0], strict=True))
                    raise DimensionError(
                        f"No {d} record for {example}{' (' + context + ')' if context else ''}; "
                        f"{len(missing)} value(s) of {d} have no record. Insert dimension records first."
                    )
                if d in givers:
                    per_element[d] = found
        if not implied_by:
            return list(data_ids)
        out = []
        getters = {giver: tuple_getter(self.universe.elements[giver].primary_key) for giver in givers}
        for di in data_ids:
            implied: dict[str, Any] = {}
            items = di.required_items
            for name, giver in implied_by.items():
                value = per_element[giver][getters[giver](items)].get(name)
                given = di.implied.get(name)
                if given is not None and value is not None and given != value:
                    raise DimensionError(
                        f"Data id {di}{' (' + context + ')' if context else ''} gives {name}={given!r} "
                        f"but its {giver} record says {name}={value!r}"
                    )
                implied[name] = value
            out.append(di.with_implied(implied))
        return out

    # -- dataset types -----------------------------------------------------------------

    def register_dataset_type(self, dataset_type: DatasetType) -> bool:
        """Register a dataset type; identical re-registration is a no-op (returns False)."""
        name = dataset_type.name
        if not name or not name[0].isalpha() or not set(name) <= _NAME_OK:
            raise DatasetTypeError(
                f"Dataset type name {name!r} must start with a letter and hold only letters, digits and '_'"
            )
        storage_class(dataset_type.storage_class)
        dims = self.universe.closure(dataset_type.dimensions)
        normalised = DatasetType(name, dims, dataset_type.storage_class, dataset_type.is_calibration)
        try:
            existing = self.get_dataset_type(name)
        except DatasetTypeError:
            existing = None
        if existing is not None:
            if existing != normalised:
                raise DatasetTypeError(
                    f"Dataset type {name!r} is already registered as {existing}; "
                    f"cannot register it again as {normalised}"
                )
            return False
        with self.transaction() as conn:
            inserted = conn.execute(self._insert_new(self.tables.dataset_type).values(
                name=name, dimensions=",".join(dims), storage_class=normalised.storage_class,
                is_calibration=normalised.is_calibration)).rowcount == 1
        if not inserted:  # registered by another process meanwhile: it must be the same
            self._load_dataset_types()
            existing = self.get_dataset_type(name)
            if existing != normalised:
                raise DatasetTypeError(
                    f"Dataset type {name!r} is already registered as {existing}; "
                    f"cannot register it again as {normalised}"
                )
        return inserted

    def _load_dataset_types(self) -> None:
        t = self.tables.dataset_type
        with self._read() as conn:
            for row in conn.execute(sa.select(t)).mappings():
                dt = DatasetType(row["name"], tuple(row["dimensions"].split(",")) if row["dimensions"] else (),
                                 row["storage_class"], bool(row["is_calibration"]))
                self._dataset_types[dt.name] = (row["id"], dt)
                self._dataset_types_by_id[row["id"]] = dt

    def _dataset_type_id(self, name: str) -> tuple[int, DatasetType]:
        if name not in self._dataset_types:
            self._load_dataset_types()
        try:
            return self._dataset_types[name]
        except KeyError:
            known = ", ".join(sorted(self._dataset_types)) or "none registered yet"
            raise DatasetTypeError(f"Unknown dataset type {name!r}; known: {known}") from None

    def get_dataset_type(self, name: str) -> DatasetType:
        """The registered dataset type of that name (DatasetTypeError if none)."""
        return self._dataset_type_id(name)[1]

    def dataset_types(self) -> list[DatasetType]:
        self._load_dataset_types()
        return sorted((dt for _, dt in self._dataset_types.values()), key=lambda d: d.name)

    # -- collections -------------------------------------------------------------------

    def register_collection(self, name: str, type: CollectionType = CollectionType.RUN, *,
                            doc: str | None = None) -> bool:
        """Register a collection; an existing one of the same type is a no-op (returns False)."""
        if not name or any(c in name for c in "\0\n\r\t") or name.startswith("/") or ".." in name.split("/") \
                or any("\ud800" <= c <= "\udfff" for c in name):  # lone surrogates: no database holds them
            raise CollectionError(f"Invalid collection name {name!r}")
        existing = self._collection_row(name, required=False)
        if existing is not None:
            if existing["type"] != type.value:
                raise CollectionError(
                    f"Collection {name!r} already exists with type {existing['type']}, not {type.value}"
                )
            return False
        with self.transaction() as conn:
            self._forget_collections()
            # Race-free: another process may register the same name between the check above
            # and this insert; then nothing is inserted and its row is checked below.
            inserted = conn.execute(self._insert_new(self.tables.collection).values(
                name=name, type=type.value, doc=doc)).rowcount == 1
        if not inserted:
            row = self._collection_row(name)
            if row["type"] != type.value:
                raise CollectionError(f"Collection {name!r} already exists with type {row['type']}, not {type.value}")
        return inserted

    def _insert_new(self, table: sa.Table) -> Any:
        """``INSERT ... ON CONFLICT DO NOTHING``: rows whose unique keys exist are left out, never an error."""
        if self.dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert as pg_insert

            return pg_insert(table).on_conflict_do_nothing()
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        return sqlite_insert(table).on_conflict_do_nothing()

    def _forget_collections(self) -> None:
        cache = getattr(self._local, "collections", None)
        if cache:
            cache.clear()

    def _collection_row(self, name: str, *, required: bool = True) -> Any:
        t = self.tables.collection
        cache = getattr(self._local, "collections", None)
        row = cache.get(name) if cache is not None else None
        if row is None:
            stmt = self._statement("collection_by_name",
                                   lambda: sa.select(t).where(t.c.name == sa.bindparam("name")))
            with self._read() as conn:
                row = conn.execute(stmt, {"name": name}).mappings().first()
            if cache is not None and row is not None:
                cache[name] = row
        if row is None and required:
            raise CollectionError(f"Unknown collection {name!r}; see `skybutler collection list`")
        return row

    def collection_type(self, name: str) -> CollectionType:
        row = self._collection_row(name)
        assert row is not None
        return CollectionType(row["type"])

    def collections(self, *, types: Iterable[CollectionType] | None = None) -> list[dict[str, Any]]:
        """Every collection as ``{name, type, doc, children}`` sorted by name."""
        t, ch = self.tables.collection, self.tables.collection_chain
        wanted = {ct.value for ct in types} if types else None
        with self._read() as conn:
            rows = [dict(r) for r in conn.execute(sa.select(t).order_by(t.c.name)).mappings()]
            names = {r["id"]: r["name"] for r in rows}
            chains: dict[int, list[str]] = {}
            for r in conn.execute(sa.select(ch).order_by(ch.c.parent_id, ch.c.position)).mappings():
                chains.setdefault(r["parent_id"], []).append(names[r["child_id"]])
        return [
            {"name": r["name"], "type": r["type"], "doc": r["doc"], "children": chains.get(r["id"], [])}
            for r in rows if wanted is None or r["type"] in wanted
        ]

    def set_chain(self, name: str, children: Sequence[str]) -> None:
        """Define (or redefine) a CHAINED collection as an ordered list of collections.

        A chain that would contain itself, directly or through nested chains, is refused
        with the cycle named.
        """
        self.register_collection(name, CollectionType.CHAINED)
        row = self._collection_row(name)
        assert row is not None
        child_ids = []
        for child in children:
            crow = self._collection_row(child)
            assert crow is not None
            cycle = self._chain_path(child, name)
            if cycle is not None:
                raise CollectionError(
                    f"Chain {name!r} cannot contain {child!r}: that makes a cycle {' -> '.join([name, *cycle])}")
            child_ids.append(crow["id"])
        ch = self.tables.collection_chain
        with self.transaction() as conn:
            conn.execute(sa.delete(ch).where(ch.c.parent_id == row["id"]))
            if child_ids:
                conn.execute(sa.insert(ch), [
                    {"parent_id": row["id"], "position": i, "child_id": c} for i, c in enumerate(child_ids)])

    def _chain_path(self, start: str, target: str) -> list[str] | None:
        """The chain of collection names from ``start`` down to ``target``, or None when it does not reach it."""
        t, ch = self.tables.collection, self.tables.collection_chain
        parent, child = t.alias("parent"), t.alias("child")
        stmt = (sa.select(child.c.name).select_from(ch.join(parent, parent.c.id == ch.c.parent_id)
                                                    .join(child, child.c.id == ch.c.child_id))
                .where(parent.c.name == sa.bindparam("name")).order_by(ch.c.position))
        seen: set[str] = set()
        with self._read() as conn:
            def walk(name: str) -> list[str] | None:
                if name == target:
                    return [name]
                if name in seen:
                    return None
                seen.add(name)
                for sub in conn.execute(stmt, {"name": name}).scalars():
                    path = walk(sub)
                    if path is not None:
                        return [name, *path]
                return None

            return walk(start)

    def resolve_collections(self, names: Sequence[str]) -> list[str]:
        """Flatten chains into the ordered list of non-chained collections (duplicates dropped)."""
        return [step.name for step in self._flatten(names)]

    def search_path(self, names: Sequence[str], *, conn: sa.Connection | None = None) -> list[SearchStep]:
        """The non-chained collections searched for ``names``, in order (each once).

        Chains are expanded depth first; a collection met a second time is skipped.
        """
        return self._flatten(names, conn=conn)

    def _flatten(self, names: Sequence[str], *, conn: sa.Connection | None = None,
                 ) -> list[SearchStep]:
        t, ch = self.tables.collection, self.tables.collection_chain
        out: list[SearchStep] = []
        seen: set[int] = set()
        by_name = self._statement("collection_by_name",
                                  lambda: sa.select(t).where(t.c.name == sa.bindparam("name")))
        with contextlib.nullcontext(conn) if conn is not None else self._read() as c:
            def walk(name: str, depth: int) -> None:
                if depth > 50:
                    raise CollectionError(f"Collection chain through {name!r} is too deep (a cycle?)")
                row = c.execute(by_name, {"name": name}).mappings().first()
                if row is None:
                    raise CollectionError(f"Unknown collection {name!r}; see `skybutler collection list`")
                ctype = CollectionType(row["type"])
                if ctype is CollectionType.CHAINED:
                    children = c.execute(
                        sa.select(t.c.name).join(ch, ch.c.child_id == t.c.id)
                        .where(ch.c.parent_id == row["id"]).order_by(ch.c.position)).scalars().all()
                    for child in children:
                        walk(child, depth + 1)
                elif row["id"] not in seen:
                    seen.add(row["id"])
                    out.append(SearchStep(name, row["id"], ctype))
            for n in names:
                walk(n, 0)
        return out

    def _collection_of_type(self, collection: str, ctype: CollectionType) -> Any:
        row = self._collection_row(collection)
        assert row is not None
        if row["type"] != ctype.value:
            raise CollectionError(f"Collection {collection!r} is {row['type']}, not {ctype.value}")
        return row

    def associate(self, collection: str, refs: Iterable[DatasetRef]) -> None:
        """Add datasets to a TAGGED collection (replacing one with the same type and data id).

        Two of ``refs`` with the same type and data id are an error (a TAGGED collection
        holds one dataset per type and data id).
        """
        row = self._collection_of_type(collection, CollectionType.TAGGED)
        tg = self.tables.tagged
        rows: dict[tuple[int, str], dict[str, Any]] = {}
        for ref in refs:
            type_id, _ = self._dataset_type_id(ref.dataset_type.name)
            key = (type_id, ref.data_id.key())
            other = rows.get(key)
            if other is not None and other["dataset_id"] != ref.id:
                raise CollectionError(
                    f"Cannot tag both {other['dataset_id']} and {ref.id} ({ref.dataset_type.name} "
                    f"{{{ref.data_id}}}) in {collection!r}: a TAGGED collection holds one dataset per type and "
                    "data id")
            rows[key] = {"collection_id": row["id"], "dataset_id": ref.id, "dataset_type_id": type_id,
                         "data_id_key": key[1]}
        with self.transaction() as conn:
            for chunk in _chunks(list(rows.values())):
                conn.execute(sa.delete(tg).where(
                    tg.c.collection_id == row["id"],
                    sa.tuple_(tg.c.dataset_type_id, tg.c.data_id_key).in_(
                        [(r["dataset_type_id"], r["data_id_key"]) for r in chunk])))
                conn.execute(sa.insert(tg), list(chunk))

    def disassociate(self, collection: str, refs: Iterable[DatasetRef]) -> int:
        """Remove datasets from a TAGGED collection; returns how many were tagged there."""
        row = self._collection_of_type(collection, CollectionType.TAGGED)
        tg = self.tables.tagged
        removed = 0
        with self.transaction() as conn:
            for chunk in _chunks([ref.id for ref in refs]):
                removed += conn.execute(sa.delete(tg).where(
                    tg.c.collection_id == row["id"], tg.c.dataset_id.in_(list(chunk)))).rowcount
        return removed

    def certify(self, collection: str, refs: Iterable[DatasetRef], begin: Any, end: Any) -> None:
        """Certify calibration datasets as valid over ``[begin, end)`` in a CALIBRATION collection."""
        row = self._collection_of_type(collection, CollectionType.CALIBRATION)
        begin, end = _to_datetime(begin), _to_datetime(end)
        if not begin < end:
            raise CollectionError(f"Validity range must have begin < end, got {begin} .. {end}")
        cal = self.tables.calibration
        refs = list(refs)
        with self.transaction() as conn:
            for ref in refs:
                type_id, dt = self._dataset_type_id(ref.dataset_type.name)
                if not dt.is_calibration:
                    raise CollectionError(
                        f"Dataset type {dt.name!r} is not a calibration type; register it with is_calibration=True"
                    )
                clash = conn.execute(sa.select(cal.c.dataset_id, cal.c.valid_begin, cal.c.valid_end).where(
                    cal.c.collection_id == row["id"], cal.c.dataset_type_id == type_id,
                    cal.c.data_id_key == ref.data_id.key(), cal.c.valid_begin < end, cal.c.valid_end > begin,
                )).first()
                if clash is not None:
                    raise CollectionError(
                        f"{dt.name} {{{ref.data_id}}} is already certified in {collection!r} over "
                        f"{clash[1]} .. {clash[2]} (dataset {clash[0]}), which overlaps {begin} .. {end}; "
                        "decertify that range first"
                    )
                conn.execute(sa.insert(cal).values(
                    collection_id=row["id"], dataset_id=ref.id, dataset_type_id=type_id,
                    data_id_key=ref.data_id.key(), valid_begin=begin, valid_end=end))

    def decertify(self, collection: str, dataset_type: str, begin: Any = None, end: Any = None, *,
                  data_ids: Iterable[DataId] | None = None, refs: Iterable[DatasetRef] | None = None) -> int:
        """Remove certifications of a type from a CALIBRATION collection over ``[begin, end)``.

        A certification that reaches outside the range keeps the parts outside it (one
        range may become two). ``begin``/``end`` of None mean unbounded; ``data_ids`` or
        ``refs`` limit it to those data ids or datasets. Returns how many certifications
        were changed or removed.

        Examples
        --------
        >>> registry.decertify("HSC/calib", "bias", "2026-03-01", "2026-04-01")  # doctest: +SKIP
        """
        row = self._collection_of_type(collection, CollectionType.CALIBRATION)
        type_id, _ = self._dataset_type_id(dataset_type)
        lo = _to_datetime(begin) if begin is not None else None
        hi = _to_datetime(end) if end is not None else None
        if lo is not None and hi is not None and not lo < hi:
            raise CollectionError(f"Validity range must have begin < end, got {lo} .. {hi}")
        cal = self.tables.calibration
        conds = [cal.c.collection_id == row["id"], cal.c.dataset_type_id == type_id]
        if hi is not None:
            conds.append(cal.c.valid_begin < hi)
        if lo is not None:
            conds.append(cal.c.valid_end > lo)
        keys = [di.key() for di in data_ids] if data_ids is not None else None
        ids = [ref.id for ref in refs] if refs is not None else None
        changed = 0
        with self.transaction() as conn:
            found = conn.execute(sa.select(cal).where(*conds)).mappings().all()
            for cert in found:
                if keys is not None and cert["data_id_key"] not in keys:
                    continue
                if ids is not None and cert["dataset_id"] not in ids:
                    continue
                changed += 1
                conn.execute(sa.delete(cal).where(cal.c.id == cert["id"]))
                keep = {k: cert[k] for k in ("collection_id", "dataset_id", "dataset_type_id", "data_id_key")}
                if lo is not None and cert["valid_begin"] < lo:
                    conn.execute(sa.insert(cal).values(**keep, valid_begin=cert["valid_begin"], valid_end=lo))
                if hi is not None and cert["valid_end"] > hi:
                    conn.execute(sa.insert(cal).values(**keep, valid_begin=hi, valid_end=cert["valid_end"]))
        return changed

    def certifications(self, collection: str, dataset_type: str | None = None) -> list[dict[str, Any]]:
        """The certifications of a CALIBRATION collection: ``{dataset_id, dataset_type, data_id_key, begin, end}``."""
        row = self._collection_of_type(collection, CollectionType.CALIBRATION)
        cal = self.tables.calibration
        stmt = sa.select(cal).where(cal.c.collection_id == row["id"])
        if dataset_type is not None:
            stmt = stmt.where(cal.c.dataset_type_id == self._dataset_type_id(dataset_type)[0])
        if not self._dataset_types_by_id:
            self._load_dataset_types()
        with self._read() as conn:
            rows = conn.execute(stmt.order_by(cal.c.dataset_type_id, cal.c.data_id_key, cal.c.valid_begin)).mappings()
            return [{"dataset_id": r["dataset_id"], "dataset_type": self._dataset_types_by_id[r["dataset_type_id"]].name,
                     "data_id_key": r["data_id_key"], "begin": r["valid_begin"], "end": r["valid_end"]} for r in rows]

    def remove_collection(self, name: str) -> None:
        """Remove a non-RUN collection (runs are removed with their datasets by `remove_run`)."""
        row = self._collection_row(name)
        assert row is not None
        if row["type"] == CollectionType.RUN.value:
            raise CollectionError(f"{name!r} is a RUN; use remove-runs to delete it with its datasets")
        c, ch = self.tables.collection, self.tables.collection_chain
        with self.transaction() as conn:
            parents = conn.execute(sa.select(c.c.name).join(ch, ch.c.parent_id == c.c.id)
                                   .where(ch.c.child_id == row["id"])).scalars().all()
            if parents:
                raise CollectionError(f"Collection {name!r} is in chain(s) {', '.join(parents)}; remove it there first")
            conn.execute(sa.delete(self.tables.tagged).where(self.tables.tagged.c.collection_id == row["id"]))
            conn.execute(sa.delete(self.tables.calibration).where(self.tables.calibration.c.collection_id == row["id"]))
            conn.execute(sa.delete(ch).where(ch.c.parent_id == row["id"]))
            self._forget_collections()
            conn.execute(sa.delete(c).where(c.c.id == row["id"]))

    # -- datasets ----------------------------------------------------------------------

    def run_id(self, run: str) -> int:
        row = self._collection_row(run)
        assert row is not None
        if row["type"] != CollectionType.RUN.value:
            raise CollectionError(f"Collection {run!r} is {row['type']}, not a RUN; datasets are written to runs")
        return int(row["id"])

    def insert_datasets(self, refs: Sequence[DatasetRef], files: Sequence[FileRecord] = ()) -> None:
        """Insert datasets (already validated and expanded) and their file records in one transaction.

        A dataset that already exists for its type, data id and run raises
        `DatasetExistsError` naming it; nothing is inserted then.
        """
        if not refs:
            return
        d = self.tables.dataset
        run_ids: dict[str, int] = {}
        rows = []
        keys_by_type: dict[int, list[tuple[str, int, DatasetRef]]] = {}
        for ref in refs:
            type_id, _ = self._dataset_type_id(ref.dataset_type.name)
            if ref.run not in run_ids:
                run_ids[ref.run] = self.run_id(ref.run)
            key = ref.data_id.key()
            row = {"id": ref.id, "dataset_type_id": type_id, "run_id": run_ids[ref.run], "data_id_key": key}
            row.update(ref.data_id.required_items)
            rows.append(row)
            keys_by_type.setdefault(type_id, []).append((key, run_ids[ref.run], ref))
        columns = ["id", "dataset_type_id", "run_id", "data_id_key", *self.universe.dimensions]
        rows = [{c: r.get(c) for c in columns} for r in rows]
        # SQLite undoes only the failed statement on a constraint error, so a single put can
        # let the unique constraint find a clash and look for the reason afterwards (one
        # statement fewer per put); PostgreSQL aborts the whole transaction, so check first.
        check_after = len(rows) == 1 and self.dialect == "sqlite"
        with self.transaction() as conn:
            if not check_after:
                self._check_not_existing(conn, keys_by_type)
            try:
                conn.execute(self._statement("insert_dataset", lambda: sa.insert(d)), rows)
                if files:
                    conn.execute(self._statement("insert_file", lambda: sa.insert(self.tables.file)),
                                 [f.__dict__ for f in files])
            except sa.exc.IntegrityError as exc:
                if check_after:
                    self._check_not_existing(conn, keys_by_type)
                detail = str(exc.orig).splitlines()[0]
                if len(refs) == 1 and ("unique" in detail.lower() or "duplicate" in detail.lower()):
                    # Checked above and absent, so another writer stored it meanwhile (PostgreSQL
                    # runs transactions side by side and cannot look again after the error).
                    ref = refs[0]
                    raise DatasetExistsError(
                        f"Dataset {ref.dataset_type.name} {{{ref.data_id}}} already exists in run {ref.run!r} "
                        "(another writer stored it at the same time); no put ever overwrites a stored dataset"
                    ) from None
                raise DatasetExistsError(f"Cannot insert datasets: {detail}") from None

    def _check_not_existing(self, conn: sa.Connection, keys_by_type: dict[int, list[tuple[str, int, DatasetRef]]]) -> None:
        d = self.tables.dataset
        by_key = self._statement("dataset_by_key", lambda: sa.select(d.c.data_id_key, d.c.run_id, d.c.id).where(
            d.c.dataset_type_id == sa.bindparam("type_id"), d.c.data_id_key.in_(sa.bindparam("keys", expanding=True))))
        by_id = self._statement("dataset_id_in", lambda: sa.select(d.c.id).where(
            d.c.id.in_(sa.bindparam("ids", expanding=True))))
        by_one = self._statement("dataset_clash", lambda: sa.select(
            d.c.dataset_type_id, d.c.data_id_key, d.c.run_id, d.c.id).where(sa.or_(
                sa.and_(d.c.dataset_type_id == sa.bindparam("type_id"), d.c.data_id_key == sa.bindparam("key")),
                d.c.id == sa.bindparam("id"))))
        for type_id, items in keys_by_type.items():
            seen: dict[tuple[str, int], DatasetRef] = {}
            for key, run_id, ref in items:
                if (key, run_id) in seen:
                    raise DatasetExistsError(
                        f"{ref.dataset_type.name} {{{ref.data_id}}} appears twice in one put to run {ref.run!r}"
                    )
                seen[(key, run_id)] = ref
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
            for chunk in _chunks(items):
                found = conn.execute(by_key, {"type_id": type_id, "keys": [k for k, _, _ in chunk]}).all()
                for key, run_id, existing_id in found:
                    clash = seen.get((key, run_id))
                    if clash is not None:
                        raise DatasetExistsError(
                            f"Dataset {clash.dataset_type.name} {{{clash.data_id}}} already exists in run "
                            f"{clash.run!r} (id {existing_id}); no put ever overwrites a stored dataset"
                        )
            ids = [ref.id for _, _, ref in items]
            for chunk in _chunks(ids):
                dup = conn.execute(by_id, {"ids": list(chunk)}).first()
                if dup is not None:
                    raise DatasetExistsError(f"A dataset with id {dup[0]} already exists")

    def get_files(self, ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, FileRecord]:
        f = self.tables.file
        stmt = self._statement("files_by_id", lambda: sa.select(f).where(
            f.c.dataset_id.in_(sa.bindparam("ids", expanding=True))))
        one = self._statement("files_by_one_id", lambda: sa.select(f).where(f.c.dataset_id == sa.bindparam("id")))
        out: dict[uuid.UUID, FileRecord] = {}
        with self._read(lookup=True) as conn:
            for chunk in _chunks(list(ids)):
                # One id (a get): equality, which needs no re-rendering of an IN list.
                result = (conn.execute(one, {"id": chunk[0]}) if len(chunk) == 1
                          else conn.execute(stmt, {"ids": list(chunk)}))
                for row in result.mappings():
                    out[row["dataset_id"]] = FileRecord(**row)
        return out

    def all_files(self) -> Iterator[tuple[FileRecord, DatasetRef]]:
        """Every file record with its dataset (for verify), streamed."""
        from .queries import refs_from_rows

        f, d = self.tables.file, self.tables.dataset
        stmt = sa.select(d, *[c.label(f"file_{c.name}") for c in f.c]).join(f, f.c.dataset_id == d.c.id)
        with self._read() as conn:
            result = conn.execution_options(yield_per=2000).execute(stmt).mappings()
            for rows in result.partitions():
                refs = refs_from_rows(self, conn, rows)
                for row, ref in zip(rows, refs, strict=True):
                    yield FileRecord(**{c.name: row[f"file_{c.name}"] for c in f.c}), ref

    def get_datasets(self, ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, DatasetRef]:
        from .queries import refs_from_rows

        d = self.tables.dataset
        out: dict[uuid.UUID, DatasetRef] = {}
        with self._read() as conn:
            for chunk in _chunks(list(ids)):
                rows = conn.execute(sa.select(d).where(d.c.id.in_(list(chunk)))).mappings().all()
                for ref in refs_from_rows(self, conn, rows):
                    out[ref.id] = ref
        return out

    def remove_datasets(self, ids: Sequence[uuid.UUID]) -> list[FileRecord]:
        """Delete datasets and their file records; returns the file records (the caller deletes files)."""
        files = self.get_files(ids)
        d, f = self.tables.dataset, self.tables.file
        with self.transaction() as conn:
            for chunk in _chunks(list(ids)):
                conn.execute(sa.delete(self.tables.tagged).where(self.tables.tagged.c.dataset_id.in_(chunk)))
                conn.execute(sa.delete(self.tables.calibration).where(self.tables.calibration.c.dataset_id.in_(chunk)))
                conn.execute(sa.delete(f).where(f.c.dataset_id.in_(chunk)))
                conn.execute(sa.delete(d).where(d.c.id.in_(chunk)))
        return list(files.values())

    def remove_run(self, run: str) -> list[FileRecord]:
        """Delete a run with all its datasets, file records and executions; returns the file records."""
        run_id = self.run_id(run)
        d, f, c = self.tables.dataset, self.tables.file, self.tables.collection
        with self.transaction() as conn:
            parents = conn.execute(sa.select(c.c.name).join(
                self.tables.collection_chain, self.tables.collection_chain.c.parent_id == c.c.id)
                .where(self.tables.collection_chain.c.child_id == run_id)).scalars().all()
            if parents:
                raise CollectionError(f"Run {run!r} is in chain(s) {', '.join(parents)}; remove it there first")
            files = [FileRecord(**r) for r in conn.execute(
                sa.select(f).join(d, d.c.id == f.c.dataset_id).where(d.c.run_id == run_id)).mappings()]
            in_run = sa.select(d.c.id).where(d.c.run_id == run_id)
            conn.execute(sa.delete(self.tables.tagged).where(self.tables.tagged.c.dataset_id.in_(in_run)))
            conn.execute(sa.delete(self.tables.calibration).where(self.tables.calibration.c.dataset_id.in_(in_run)))
            conn.execute(sa.delete(f).where(f.c.dataset_id.in_(in_run)))
            ex = self.tables.execution
            run_execs = sa.select(ex.c.id).where(ex.c.run_id == run_id)
            conn.execute(sa.delete(self.tables.used).where(self.tables.used.c.execution_id.in_(run_execs)))
            conn.execute(sa.delete(self.tables.generated).where(self.tables.generated.c.execution_id.in_(run_execs)))
            conn.execute(sa.delete(self.tables.derived).where(self.tables.derived.c.dataset_id.in_(in_run)))
            conn.execute(sa.delete(ex).where(ex.c.run_id == run_id))
            conn.execute(sa.delete(d).where(d.c.run_id == run_id))
            self._forget_collections()
            conn.execute(sa.delete(c).where(c.c.id == run_id))
        return files
