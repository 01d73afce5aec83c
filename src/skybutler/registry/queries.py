"""Queries over datasets, data ids and dimension records, built as SQLAlchemy expressions.

A ``where`` expression (see `skybutler.registry.expr`) names dimensions
(``visit``), implied dimensions (``band``) and metadata (``visit.exposure_time``);
`_Resolver` turns each name into a column, adding the joins it needs.
"""

from __future__ import annotations

import contextlib
import gc
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any
from uuid import UUID

import sqlalchemy as sa

from ..errors import CollectionError, QueryError
from ..model import CollectionType, DataId, DatasetRef, DatasetType
from .expr import compile_where

if TYPE_CHECKING:
    from ._registry import Registry

_STREAM = 2000


class _Resolver:
    """Maps identifiers to columns for one SELECT, remembering the dimension tables it must join."""

    def __init__(self, registry: Registry, dimensions: Sequence[str], canonical: Mapping[str, sa.ColumnElement],
                 joined: dict[str, Any] | None = None):
        self.registry = registry
        self.universe = registry.universe
        self.dimensions = tuple(dimensions)
        self.canonical = dict(canonical)
        self.joined: dict[str, Any] = joined if joined is not None else {}
        self.needed: dict[str, Any] = {}
        self.implied = self.universe.implied_by(self.dimensions)

    def _table(self, element: str) -> Any:
        if element in self.joined:
            return self.joined[element]
        if element not in self.needed:
            self.needed[element] = self.registry.tables.dimensions[element].alias(f"q_{element}")
        return self.needed[element]

    def allowed(self) -> list[str]:
        names = list(self.dimensions) + list(self.implied)
        for d in self.dimensions:
            names += [f"{d}.{c}" for c in self.universe.elements[d].metadata]
        return names

    def __call__(self, name: str) -> sa.ColumnElement:
        if name in self.canonical:
            return self.canonical[name]
        if name in self.implied:
            return self._table(self.implied[name]).c[name]
        if "." in name:
            element, column = name.split(".", 1)
            if element in self.dimensions:
                el = self.universe.elements[element]
                if column in el.metadata or column in self.universe.record_columns(element) or column == element:
                    return self._table(element).c[column]
        raise QueryError(
            f"Unknown name {name!r} in query expression; allowed here: {', '.join(self.allowed())}"
        )

    def join_conditions(self) -> list[tuple[sa.Table, sa.ColumnElement]]:
        out = []
        for element, table in self.needed.items():
            pk = self.universe.elements[element].primary_key
            out.append((table, sa.and_(*[table.c[k] == self.canonical[k] for k in pk])))
        return out


def _apply(stmt: sa.Select, base: sa.FromClause, resolver: _Resolver, condition: sa.ColumnElement | None,
           ) -> sa.Select:
    joined = base
    for table, on in resolver.join_conditions():
        joined = joined.join(table, on)
    stmt = stmt.select_from(joined)
    if condition is not None:
        stmt = stmt.where(condition)
    return stmt


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector (if running) for a bulk allocation of acyclic objects."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _run_names(registry: Registry, conn: sa.Connection, run_ids: set[int], known: dict[int, str]) -> dict[int, str]:
    """Add the names of ``run_ids`` not yet in ``known`` to it (one query) and return it."""
    missing = [i for i in run_ids if i not in known]
    if missing:
        c = registry.tables.collection
        stmt = registry._statement("collection_names", lambda: sa.select(c.c.id, c.c.name).where(
            c.c.id.in_(sa.bindparam("ids", expanding=True))))
        known.update((i, name) for i, name in conn.execute(stmt, {"ids": missing}))
    return known


def refs_from_rows(registry: Registry, conn: sa.Connection, rows: Sequence[Any], *,
                   runs: dict[int, str] | None = None) -> list[DatasetRef]:
    """Build DatasetRefs from ``dataset`` table rows (run names looked up once per batch).

    ``runs`` may give run names already known by id (it is filled with those looked up).
    """
    if not rows:
        return []
    runs = _run_names(registry, conn, {r["run_id"] for r in rows}, {} if runs is None else runs)
    types = registry._dataset_types_by_id
    if any(r["dataset_type_id"] not in types for r in rows):
        registry._load_dataset_types()
    out = []
    for r in rows:
        dt = types[r["dataset_type_id"]]
        out.append(DatasetRef(r["id"], dt, DataId({d: r[d] for d in dt.dimensions}), runs[r["run_id"]]))
    return out


def compile_element_where(registry: Registry, element: str, where: str | None,
                          bind: Mapping[str, Any] | None) -> sa.ColumnElement | None:
    table = registry.tables.dimensions[element]

    def resolve(name: str) -> sa.ColumnElement:
        column = name.split(".", 1)[1] if name.startswith(element + ".") else name
        if column in table.c and column != "region":
            return table.c[column]
        allowed = [c.name for c in table.c if c.name != "region"]
        raise QueryError(f"Unknown name {name!r} for {element} records; allowed: {', '.join(allowed)}")

    return compile_where(where, resolve, bind)


def _data_id_conditions(resolver: _Resolver, data_id: Mapping[str, Any] | None) -> list[sa.ColumnElement]:
    if not data_id:
        return []
    out = []
    for key, value in data_id.items():
        column = resolver(key)
        if key in resolver.universe.elements:
            value = resolver.universe.coerce(key, value)
        out.append(column == value)
    return out


def query_datasets(registry: Registry, dataset_type: str, collections: Sequence[str], *,
                   where: str | None = None, bind: Mapping[str, Any] | None = None,
                   data_id: Mapping[str, Any] | None = None, find_first: bool = True,
                   time: Any = None) -> Iterator[DatasetRef]:
    """Stream datasets of one type in the given collections (searched in order)."""
    from ._registry import _to_datetime

    type_id, dt = registry._dataset_type_id(dataset_type)
    if not collections:
        raise CollectionError("No collections to search; pass collections=[...] or set the butler's collections")
    # One connection for the collection lookup and the query (on PostgreSQL each checkout
    # costs round trips).
    with registry._read() as conn:
        yield from _query_datasets(registry, conn, type_id, dt, registry._flatten(collections, conn=conn),
                                   where=where, bind=bind, data_id=data_id, find_first=find_first,
                                   time=_to_datetime(time) if time is not None else None)


def _query_datasets(registry: Registry, conn: sa.Connection, type_id: int, dt: DatasetType,
                    flat: list[tuple[str, int, CollectionType]], *, where: str | None,
                    bind: Mapping[str, Any] | None, data_id: Mapping[str, Any] | None, find_first: bool,
                    time: Any) -> Iterator[DatasetRef]:
    d = registry.tables.dataset
    # SQLite keeps UUIDs as hex text; converting them ourselves skips a per-row result processor.
    id_column = sa.type_coerce(d.c.id, sa.String).label("id") if registry.dialect == "sqlite" else d.c.id
    columns = [id_column, d.c.dataset_type_id, d.c.run_id, d.c.data_id_key, *[d.c[k] for k in dt.dimensions]]
    branches = []
    for rank, (_name, cid, ctype) in enumerate(flat):
        resolver = _Resolver(registry, dt.dimensions, {k: d.c[k] for k in dt.dimensions})
        conds = [d.c.dataset_type_id == type_id]
        conds += _data_id_conditions(resolver, data_id)
        cond = compile_where(where, resolver, bind)
        if cond is not None:
            conds.append(cond)
        base: sa.FromClause = d
        if ctype is CollectionType.RUN:
            conds.append(d.c.run_id == cid)
        elif ctype is CollectionType.TAGGED:
            tg = registry.tables.tagged
            base = d.join(tg, sa.and_(tg.c.dataset_id == d.c.id, tg.c.collection_id == cid))
        elif ctype is CollectionType.CALIBRATION:
            cal = registry.tables.calibration
            on = [cal.c.dataset_id == d.c.id, cal.c.collection_id == cid]
            if time is not None:
                on += [cal.c.valid_begin <= time, cal.c.valid_end > time]
            base = d.join(cal, sa.and_(*on))
        # Only the columns a ref needs: the others (ingest_date) cost a conversion per row.
        stmt = sa.select(*columns, sa.literal(rank).label("rank"))
        branches.append(_apply(stmt, base, resolver, sa.and_(*conds)))
    if len(branches) == 1 or not find_first:
        stmt = branches[0] if len(branches) == 1 else sa.union_all(*branches)  # type: ignore[assignment]
        if len(branches) > 1:
            stmt = sa.select(stmt.subquery())
    else:
        union = sa.union_all(*branches).subquery()
        ranked = sa.select(
            union,
            sa.func.row_number().over(partition_by=union.c.data_id_key, order_by=union.c["rank"]).label("rn"),
        ).subquery()
        stmt = sa.select(ranked).where(ranked.c.rn == 1)
    runs = {cid: name for name, cid, ctype in flat if ctype is CollectionType.RUN}
    yield from _stream_refs_of_type(registry, conn, stmt, dt, runs=runs, dedupe=len(branches) > 1 and not find_first)


def _stream_refs_of_type(registry: Registry, conn: sa.Connection, stmt: sa.Select, dt: DatasetType, *,
                         runs: dict[int, str], dedupe: bool) -> Iterator[DatasetRef]:
    """Refs of one dataset type from rows ``(id, type, run, key, *dimensions, ...)`` (the hot path).

    Positional rows and one shared `DatasetType` keep this to a few microseconds per ref.
    """
    result = conn.execution_options(yield_per=_STREAM).execute(stmt)
    dims = dt.dimensions
    end = 4 + len(dims)
    seen: set[uuid.UUID] = set()
    for rows in result.partitions():
        missing = {row[2] for row in rows} - runs.keys()
        if missing:
            _run_names(registry, conn, missing, runs)
        # Each ref is a few small objects; letting the cyclic collector run every few
        # hundred of them (it cannot free any: they are all referenced) costs more than
        # building them, so a batch is built with it paused and handed out afterwards.
        with _gc_paused():
            batch = []
            for row in rows:
                dataset_id = row[0]
                if type(dataset_id) is str:
                    dataset_id = UUID(dataset_id)
                if dedupe:
                    if dataset_id in seen:
                        continue
                    seen.add(dataset_id)
                batch.append(DatasetRef(dataset_id, dt, DataId(dict(zip(dims, row[4:end], strict=True))),
                                        runs[row[2]]))
        yield from batch


def find_dataset(registry: Registry, dataset_type: str, data_id: DataId, collections: Sequence[str], *,
                 time: Any = None) -> DatasetRef | None:
    """The first dataset with exactly this data id in the collections, searched in order."""
    type_id, dt = registry._dataset_type_id(dataset_type)
    d = registry.tables.dataset
    key = data_id.key()
    from ._registry import _to_datetime

    with registry._read(lookup=True) as conn:
        flat = registry._flatten(collections, conn=conn)
        time = _to_datetime(time) if time is not None else None
        for _name, cid, ctype in flat:
            stmt = sa.select(d).where(d.c.dataset_type_id == type_id, d.c.data_id_key == key)
            if ctype is CollectionType.RUN:
                # The common case, once per get by data id: a prebuilt statement, and the run's
                # name is known.
                stmt = registry._statement("find_in_run", lambda: sa.select(d).where(
                    d.c.dataset_type_id == sa.bindparam("type_id"), d.c.data_id_key == sa.bindparam("key"),
                    d.c.run_id == sa.bindparam("run_id")))
                row = conn.execute(stmt, {"type_id": type_id, "key": key, "run_id": cid}).mappings().first()
                if row is not None:
                    return refs_from_rows(registry, conn, [row], runs={cid: _name})[0]
                continue
            if ctype is CollectionType.TAGGED:
                tg = registry.tables.tagged
                stmt = stmt.join(tg, sa.and_(tg.c.dataset_id == d.c.id, tg.c.collection_id == cid))
            else:
                cal = registry.tables.calibration
                on = [cal.c.dataset_id == d.c.id, cal.c.collection_id == cid]
                if time is None:
                    raise CollectionError(
                        f"Looking up {dataset_type} in CALIBRATION collection {_name!r} needs a time "
                        "(the observation time of the data being processed)"
                    )
                on += [cal.c.valid_begin <= time, cal.c.valid_end > time]
                stmt = stmt.join(cal, sa.and_(*on))
            row = conn.execute(stmt).mappings().first()
            if row is not None:
                return refs_from_rows(registry, conn, [row])[0]
    return None


def _applicable_overlaps(registry: Registry, dims: set[str]) -> list[tuple[str, str]]:
    universe = registry.universe
    pairs = []
    for a, b in universe.overlaps:
        keys = set(universe.elements[a].primary_key) | set(universe.elements[b].primary_key)
        if keys <= dims:
            pairs.append((a, b, keys))
    # Keep only the most specific: a pair whose keys are a strict subset of another's is implied.
    return [(a, b) for a, b, k in pairs if not any(k < k2 for _, _, k2 in pairs)]


def query_data_ids(registry: Registry, dimensions: Iterable[str], *, where: str | None = None,
                   bind: Mapping[str, Any] | None = None, datasets: Sequence[str] = (),
                   collections: Sequence[str] = (), data_id: Mapping[str, Any] | None = None,
                   with_implied: bool = False) -> Iterator[DataId]:
    """Stream the distinct data ids over ``dimensions`` that have records (and overlap, and datasets)."""
    stmt, dims, implied_names = data_id_query(registry, dimensions, where=where, bind=bind, datasets=datasets,
                                              collections=collections, data_id=data_id, with_implied=with_implied)
    with registry._read() as conn:
        result = conn.execution_options(yield_per=_STREAM).execute(stmt)
        for rows in result.partitions():
            for row in rows:
                values = dict(zip(dims, row[:len(dims)], strict=True))
                implied = dict(zip(implied_names, row[len(dims):], strict=True)) if with_implied else None
                yield DataId(values, implied=implied)


def data_id_query(registry: Registry, dimensions: Iterable[str], *, where: str | None = None,
                  bind: Mapping[str, Any] | None = None, datasets: Sequence[str] = (),
                  collections: Sequence[str] = (), data_id: Mapping[str, Any] | None = None,
                  with_implied: bool = False) -> tuple[sa.Select, tuple[str, ...], tuple[str, ...]]:
    """The SELECT behind `query_data_ids`: its rows are the values of ``dims`` then of ``implied``.

    Returns
    -------
    stmt, dims, implied
        The statement, the dimensions (closed, in universe order) and the implied
        dimensions whose values follow them when ``with_implied``.
    """
    universe = registry.universe
    dims = universe.closure(dimensions)
    tables = {k: registry.tables.dimensions[k].alias(f"j_{k}") for k in dims}
    canonical = {k: tables[k].c[k] for k in dims}
    joined: sa.FromClause = tables[dims[0]]
    for k in dims[1:]:
        conds = [tables[k].c[r] == canonical[r] for r in universe.elements[k].requires]
        joined = joined.join(tables[k], sa.and_(*conds)) if conds else joined.join(tables[k], sa.true())
    # Relationship elements (visit_definition: which exposures make a visit) relate dimensions
    # that share no key; join them when all their keys are in the query.
    for name, el in universe.elements.items():
        if not el.is_dimension and not el.region and el.requires and set(el.requires) <= set(dims):
            rel = registry.tables.dimensions[name].alias(f"r_{name}")
            joined = joined.join(rel, sa.and_(*[rel.c[k] == canonical[k] for k in el.requires]))
    for a, b in _applicable_overlaps(registry, set(dims)):
        from .schema import overlap_columns

        ov = registry.tables.overlaps[(a, b)]
        ca, cb = overlap_columns(universe, a, b)
        on = [ov.c[col] == canonical[k] for k, col in (*ca.items(), *cb.items())]
        joined = joined.join(ov, sa.and_(*on))
    resolver = _Resolver(registry, dims, canonical, joined=dict(tables))
    conds = _data_id_conditions(resolver, data_id)
    # A dimension that another one implies (band of a visit) must agree with that record,
    # or the query would pair every visit with every band.
    conds += [tables[g].c[k] == canonical[k] for k in dims for g in dims
              if g != k and k in universe.implied_closure(g)]
    cond = compile_where(where, resolver, bind)
    if cond is not None:
        conds.append(cond)
    if datasets:
        if not collections:
            raise CollectionError("Constraining data ids by datasets needs collections to search")
        flat = registry._flatten(collections)
        run_ids = [cid for _, cid, t in flat if t is CollectionType.RUN]
        other_ids = [cid for _, cid, t in flat if t is not CollectionType.RUN]
        d = registry.tables.dataset.alias("qd")
        for name in datasets:
            type_id, dt = registry._dataset_type_id(name)
            shared = [k for k in dt.dimensions if k in canonical]
            in_collection = [d.c.run_id.in_(run_ids)] if run_ids else []
            if other_ids:
                tg, cal = registry.tables.tagged, registry.tables.calibration
                in_collection.append(d.c.id.in_(sa.select(tg.c.dataset_id).where(tg.c.collection_id.in_(other_ids))))
                in_collection.append(d.c.id.in_(sa.select(cal.c.dataset_id).where(cal.c.collection_id.in_(other_ids))))
            found = sa.select(*[d.c[k] for k in shared]).where(d.c.dataset_type_id == type_id, sa.or_(*in_collection))
            if not shared:
                conds.append(sa.exists(found.add_columns(d.c.id)))
            elif len(shared) == 1:
                conds.append(canonical[shared[0]].in_(found))
            else:
                # A row-value IN is planned as one pass over the datasets (an ephemeral index
                # in SQLite), where a correlated EXISTS may probe a poorly selective index per row.
                conds.append(sa.tuple_(*[canonical[k] for k in shared]).in_(found))
    implied_cols = []
    if with_implied:
        implied_cols = [resolver(name).label(f"implied_{name}") for name in resolver.implied]
    stmt = sa.select(*[canonical[k] for k in dims], *implied_cols).distinct()
    stmt = _apply(stmt, joined, resolver, sa.and_(*conds) if conds else None)
    stmt = stmt.order_by(*[canonical[k] for k in dims])
    return stmt, dims, tuple(resolver.implied) if with_implied else ()
