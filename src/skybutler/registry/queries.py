"""Queries over datasets, data ids and dimension records, built as SQLAlchemy expressions.

A ``where`` expression (see `skybutler.registry.expr`) names dimensions
(``visit``), implied dimensions (``band``) and metadata (``visit.exposure_time``);
`_Resolver` turns each name into a column, adding the joins it needs.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from ..errors import CollectionError, QueryError
from ..model import CollectionType, DataId, DatasetRef, DatasetType
from ._expr_sql import compile_expression, compile_where
from ._query_results import DataIdQueryResults, DatasetQueryPlan, DatasetQueryResults
from ._values import to_datetime
from .expr import identifiers
from .expr import parse as parse_expression
from .schema import overlap_columns
from .search import SearchStep, ambiguity_error, dataset_branch, dataset_branches, in_any_collection

if TYPE_CHECKING:
    from ._registry import Registry


class _Resolver:
    """Maps identifiers to columns for one SELECT, remembering the dimension tables it must join."""

    def __init__(self, registry: Registry, dimensions: Sequence[str], canonical: Mapping[str, sa.ColumnElement],
                 joined: dict[str, Any] | None = None, fields: Mapping[str, sa.ColumnElement] | None = None,
                 region_keys: dict[tuple[str, Any], list[tuple[Any, ...]]] | None = None):
        self.registry = registry
        self.fields = dict(fields or {})
        # Keys of the records a shape overlaps, by (element, shape): shared by the resolvers
        # of one query's collections, so each region predicate reads the regions once.
        self.region_keys = region_keys if region_keys is not None else {}
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
        return names + list(self.fields)

    def __call__(self, name: str) -> sa.ColumnElement:
        if name in self.canonical:
            return self.canonical[name]
        if name in self.fields:
            return self.fields[name]
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

    def region_overlaps(self, element: str, region: Any) -> sa.ColumnElement[bool]:
        """``<element>.region OVERLAPS <region>``: the keys of the element's records that overlap it.

        Answered in Python with the same geometry as the stored overlaps (a bounding-cone
        filter, then the exact test), and turned into an ``IN`` over the element's keys.
        """
        from ..dimensions.regions import overlapping_records

        el = self.universe.elements.get(element)
        if el is None or not el.region:
            with_regions = [n for n, e in self.universe.elements.items() if e.region]
            raise QueryError(f"{element!r} has no region; elements with regions: {', '.join(with_regions)}")
        pk = el.primary_key
        missing = [k for k in pk if k not in self.canonical]
        if missing:
            raise QueryError(f"{element}.region needs {', '.join(missing)} in the query")
        table = self.registry.tables.dimensions[element]
        keys = self.region_keys.get((element, region))
        if keys is None:
            with self.registry.database.read() as conn:
                rows = conn.execute(sa.select(*[table.c[k] for k in pk], table.c.region)
                                    .where(table.c.region.is_not(None))).all()
            keys = [tuple(rows[i][:-1]) for i in overlapping_records(region, [r[-1] for r in rows])]
            self.region_keys[(element, region)] = keys
        if not keys:
            return sa.false()
        # Not one bound parameter per key: a large region may match more records than either
        # database takes parameters in one statement (SQLite 32,766, PostgreSQL 65,535), most
        # easily with 3-key elements.
        columns = [self.canonical[k] for k in pk]
        if self.registry.dialect == "postgresql":
            # One array parameter per key column, unnested into rows: any number of keys in
            # a few parameters (a long IN list of rows overflows PostgreSQL's parser stack).
            from sqlalchemy.dialects import postgresql

            arrays = [sa.bindparam(f"region_{k}", list(values), type_=postgresql.ARRAY(table.c[k].type), unique=True)
                      for k, values in zip(pk, zip(*keys, strict=True), strict=True)]
            unnested = sa.func.unnest(*arrays).table_valued(*pk).render_derived()
            return sa.tuple_(*columns).in_(sa.select(*[unnested.c[k] for k in pk]))
        # SQLite: the keys written into the statement (it takes at most 32,766 parameters).
        if len(pk) == 1:
            return columns[0].in_(sa.bindparam("region_keys", [k[0] for k in keys], expanding=True,
                                               literal_execute=True, unique=True))
        return sa.tuple_(*columns).in_(sa.bindparam("region_keys", keys, expanding=True, literal_execute=True,
                                                    unique=True))

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


def refs_from_rows(registry: Registry, conn: sa.Connection, rows: Sequence[Any], *,
                   runs: dict[int, str] | None = None) -> list[DatasetRef]:
    """Build DatasetRefs from ``dataset`` table rows (run names looked up once per batch).

    ``runs`` may give run names already known by id (it is filled with those looked up).
    """
    return registry.dataset_records.refs_from_rows(conn, rows, runs=runs)


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


def dimension_records_condition(registry: Registry, element: str, where: str | None,
                                bind: Mapping[str, Any] | None) -> sa.ColumnElement | None:
    """The WHERE condition on an element's records for `Registry.fetch_dimension_records`.

    An expression over the element's own columns is compiled on its table; one that
    names other dimensions (``tract = 0`` for visits), regions or their metadata selects
    the records whose keys a data id query over the element's keys returns, with those
    dimensions joined (spatially where needed).
    """
    if not where:
        return None
    table = registry.tables.dimensions[element]
    own = {c.name for c in table.c if c.name != "region"}
    names = identifiers(parse_expression(where))

    def is_own(name: str) -> bool:
        column = name.split(".", 1)[1] if name.startswith(element + ".") else name
        return column in own or (bind is not None and name in bind and "." not in name)

    if all(is_own(n) for n in names):
        return compile_element_where(registry, element, where, bind)
    pk = registry.universe.elements[element].primary_key
    stmt, _dims, _ = data_id_query(registry, pk, where=where, bind=bind, bare_columns_of=element)
    keys = stmt.order_by(None).with_only_columns(*[c for c in stmt.selected_columns if c.name in pk])
    if len(pk) == 1:
        return table.c[pk[0]].in_(keys)
    return sa.tuple_(*[table.c[k] for k in pk]).in_(keys)


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
                   time: Any = None) -> DatasetQueryResults:
    """Datasets of one type in the given collections (searched in order): refs streamed, or a table.

    Nothing runs until the result is iterated or turned into a table (`DatasetQueryResults`).
    """

    def plan(conn: sa.Connection) -> DatasetQueryPlan:
        type_id, dt = registry.dataset_type_records.find(dataset_type)
        if not collections:
            raise CollectionError("No collections to search; pass collections=[...] or set the butler's collections")
        return _dataset_plan(registry, conn, type_id, dt, registry.search_path(collections, conn=conn),
                             where=where, bind=bind, data_id=data_id, find_first=find_first,
                             time=to_datetime(time) if time is not None else None)

    return DatasetQueryResults(registry, plan)


_PLANS_KEPT = 256
"""Plans of queries without a ``where`` or data id that a registry keeps (all forgotten when full)."""


def _dataset_plan(registry: Registry, conn: sa.Connection, type_id: int, dt: DatasetType,
                  flat: list[SearchStep], *, where: str | None,
                  bind: Mapping[str, Any] | None, data_id: Mapping[str, Any] | None, find_first: bool,
                  time: Any) -> DatasetQueryPlan:
    """The plan of a dataset query; one without a ``where`` or data id (a run's or a chain's
    datasets) is built once per collection search and kept.

    Such a plan depends on nothing but the dataset type, the flattened search path (each
    collection's name, id and type, so a redefined chain is another plan), ``find_first``
    and ``time``: building its SQLAlchemy statement again (and the statement's cache key)
    cost a twentieth of reading 10,000 rows as Arrow. Each call gets its own copy of the
    mutable parts (the run names it fills in, the ambiguity error bound to its connection).
    """
    if where or bind or data_id:
        return _new_dataset_plan(registry, conn, type_id, dt, flat, where=where, bind=bind, data_id=data_id,
                                 find_first=find_first, time=time)
    kept = registry.database.statement("dataset_plans", dict)
    key = (type_id, dt, tuple(flat), find_first, time)
    plan = kept.get(key)
    if plan is None:
        plan = _new_dataset_plan(registry, conn, type_id, dt, flat, where=None, bind=None, data_id=None,
                                 find_first=find_first, time=time)
        if len(kept) >= _PLANS_KEPT:
            kept.clear()
        kept[key] = plan
    return dataclasses.replace(plan, runs=dict(plan.runs), ambiguity=_ambiguity(registry, conn, flat, type_id, dt))


def _ambiguity(registry: Registry, conn: sa.Connection, flat: list[SearchStep], type_id: int,
               dt: DatasetType) -> Callable[[Any], Exception]:
    """The error for a row of an ambiguous calibration lookup (rows as `_new_dataset_plan` selects them)."""
    width = 4 + len(dt.dimensions)  # id, type, run, data id key, dimensions; then the rank

    def ambiguity(row: Any) -> Exception:
        step = flat[row[width]]
        return ambiguity_error(registry, conn, step, type_id, dt, row[3],
                               DataId(dict(zip(dt.dimensions, row[4:width], strict=True))))

    return ambiguity


def _new_dataset_plan(registry: Registry, conn: sa.Connection, type_id: int, dt: DatasetType,
                      flat: list[SearchStep], *, where: str | None,
                      bind: Mapping[str, Any] | None, data_id: Mapping[str, Any] | None, find_first: bool,
                      time: Any) -> DatasetQueryPlan:
    d = registry.tables.dataset
    # SQLite keeps UUIDs as hex text; converting them ourselves skips a per-row result processor.
    id_column = sa.type_coerce(d.c.id, sa.String).label("id") if registry.dialect == "sqlite" else d.c.id
    columns = [id_column, d.c.dataset_type_id, d.c.run_id, d.c.data_id_key, *[d.c[k] for k in dt.dimensions]]
    runs = {step.id: step.name for step in flat if step.type is CollectionType.RUN}
    branches = dataset_branches(registry, flat, type_id, dt, time=time)
    if not branches:
        return DatasetQueryPlan(dt, None, runs)
    # Parsed once for every collection's SELECT.
    node = parse_expression(where)
    # Constraints on dimensions the dataset type lacks (calexps overlapping `tract = 0`)
    # join those dimensions' records and overlaps to each collection's datasets.
    extra = referenced_dimensions(registry, dt.dimensions, {*(data_id or ()), *identifiers(node)}, bind=bind)
    query_dims = registry.universe.closure([*dt.dimensions, *extra]) if extra else dt.dimensions
    c = registry.tables.collection
    run_name = registry.database.statement("dataset_run_name", lambda: sa.select(c.c.name).where(
        c.c.id == d.c.run_id).scalar_subquery())
    region_keys: dict[tuple[str, Any], list[tuple[Any, ...]]] = {}
    selects = []
    for rank, branch in branches:
        fields = {"id": d.c.id, "ingest_date": d.c.ingest_date, "run": run_name,
                  "collection": sa.literal(branch.step.name)}
        fields.update({f"{dt.name}.{k}": v for k, v in list(fields.items())})
        fields[f"{dt.name}.dataset_id"] = d.c.id
        from_ = branch.from_
        conds = list(branch.conditions)
        if extra:
            from_, canonical, tables, dim_conds = _join_dimensions(
                registry, query_dims, start=from_, given={k: d.c[k] for k in dt.dimensions})
            resolver = _Resolver(registry, query_dims, canonical, joined=dict(tables), fields=fields,
                                 region_keys=region_keys)
            conds += dim_conds
        else:
            resolver = _Resolver(registry, dt.dimensions, {k: d.c[k] for k in dt.dimensions}, fields=fields,
                                 region_keys=region_keys)
        conds += _data_id_conditions(resolver, data_id)
        if node is not None:
            conds.append(compile_expression(node, resolver, bind, text=where))
        # Only the columns a ref needs: the others (ingest_date) cost a conversion per row.
        stmt = sa.select(*columns, sa.literal(rank).label("rank"))
        stmt = _apply(stmt, from_, resolver, sa.and_(*conds))
        selects.append(stmt.distinct() if branch.ambiguous or extra else stmt)
    ambiguous = find_first and any(b.ambiguous for _, b in branches)
    check = None
    lean = None
    only_run = None
    if len(selects) == 1 and not ambiguous:
        stmt = selects[0]
        step = branches[0][1].step
        only_run = step.id if step.type is CollectionType.RUN else None
        # The id fixes the other columns, so DISTINCT (if any) keeps the same rows.
        lean = stmt.with_only_columns(id_column, *([d.c.run_id] if only_run is None else []),
                                      *[d.c[k] for k in dt.dimensions], maintain_column_froms=False)
    elif not find_first:
        stmt = sa.select(sa.union_all(*selects).subquery())
    else:
        union = (selects[0] if len(selects) == 1 else sa.union_all(*selects)).subquery()
        window = [sa.func.row_number().over(partition_by=union.c.data_id_key, order_by=union.c["rank"]).label("rn")]
        if ambiguous:
            # Rows are distinct per dataset within a collection, so more than one row for a
            # data id at its first rank means several candidates: an error, not a pick.
            window.append(sa.func.count().over(partition_by=[union.c.data_id_key, union.c["rank"]]).label("n"))
        ranked = sa.select(union, *window).subquery()
        stmt = sa.select(ranked).where(ranked.c.rn == 1)
        if ambiguous:
            check = len(columns) + 2  # position of "n"

    return DatasetQueryPlan(dt, stmt, runs, dedupe=len(selects) > 1 and not find_first, check=check,
                            ambiguity=_ambiguity(registry, conn, flat, type_id, dt), lean=lean, run=only_run)


def find_dataset(registry: Registry, dataset_type: str, data_id: DataId, collections: Sequence[str], *,
                 time: Any = None) -> DatasetRef | None:
    """The first dataset with exactly this data id in the collections, searched in order.

    See `skybutler.registry.search` for what each kind of collection holds; without a
    time, several datasets certified for the data id in one CALIBRATION collection are
    an error.
    """
    type_id, dt = registry.dataset_type_records.find(dataset_type)
    d = registry.tables.dataset
    key = data_id.key()
    with registry.database.read_one() as conn:
        if len(collections) == 1 and registry.dialect == "postgresql":
            found_pg = _find_in_named_run_pg(registry, conn, type_id, dt, key, collections[0])
            if found_pg is not _NOT_A_RUN:
                return found_pg  # type: ignore[return-value]
        elif len(collections) == 1:
            # The common case (a get by data id in one run): the collection and the dataset in
            # one statement, one round trip; anything but a RUN takes the general way below.
            c = registry.tables.collection
            stmt = registry.database.statement("find_in_named_run", lambda: sa.select(
                c.c.type.label("collection_type"), *d.c).select_from(c.outerjoin(d, sa.and_(
                    d.c.run_id == c.c.id, d.c.dataset_type_id == sa.bindparam("type_id"),
                    d.c.data_id_key == sa.bindparam("key")))).where(c.c.name == sa.bindparam("name")))
            found = conn.execute(stmt, {"type_id": type_id, "key": key, "name": collections[0]}).mappings().first()
            if found is not None and found["collection_type"] == CollectionType.RUN.value:
                if found["id"] is None:
                    return None
                return refs_from_rows(registry, conn, [found], runs={found["run_id"]: collections[0]})[0]
        flat = registry.search_path(collections, conn=conn)
        time = to_datetime(time) if time is not None else None
        for step in flat:
            if step.type is CollectionType.RUN:
                # The common case, once per get by data id: a prebuilt statement, and the run's
                # name is known.
                stmt = registry.database.statement("find_in_run", lambda: sa.select(d).where(
                    d.c.dataset_type_id == sa.bindparam("type_id"), d.c.data_id_key == sa.bindparam("key"),
                    d.c.run_id == sa.bindparam("run_id")))
                row = conn.execute(stmt, {"type_id": type_id, "key": key, "run_id": step.id}).mappings().first()
                if row is not None:
                    return refs_from_rows(registry, conn, [row], runs={step.id: step.name})[0]
                continue
            branch = dataset_branch(registry, step, type_id, dt, time=time)
            if branch is None:
                continue
            stmt = (sa.select(d).select_from(branch.from_).where(*branch.conditions, d.c.data_id_key == key)
                    .distinct().limit(2))
            rows = conn.execute(stmt).mappings().all()
            if len(rows) > 1:
                raise ambiguity_error(registry, conn, step, type_id, dt, key, data_id)
            if rows:
                return refs_from_rows(registry, conn, rows)[0]
    return None


_NOT_A_RUN = object()


def _find_in_named_run_pg(registry: Registry, conn: sa.Connection, type_id: int, dt: DatasetType, key: str,
                          name: str) -> DatasetRef | None | object:
    """`find_dataset` in one collection on PostgreSQL: one round trip on psycopg's cursor (`Database.first_row_raw`).

    The collection and the dataset in one statement: None when the collection is a RUN
    without that dataset; `_NOT_A_RUN` when it is another kind (or none), which the
    general way searches (or names as unknown).
    """
    d, c = registry.tables.dataset, registry.tables.collection
    row = registry.database.first_row_raw(
        conn, "pg|find_in_named_run|" + ",".join(dt.dimensions), lambda: sa.select(
            c.c.type, d.c.id, *[d.c[dim] for dim in dt.dimensions]).select_from(c.outerjoin(d, sa.and_(
                d.c.run_id == c.c.id, d.c.dataset_type_id == sa.bindparam("type_id"),
                d.c.data_id_key == sa.bindparam("key")))).where(c.c.name == sa.bindparam("name")),
        {"type_id": type_id, "key": key, "name": name})
    if row is None or row[0] != CollectionType.RUN.value:
        return _NOT_A_RUN
    if row[1] is None:
        return None
    return DatasetRef(row[1], dt, DataId(dict(zip(dt.dimensions, row[2:], strict=True))), name)


def spatial_pairs(registry: Registry, dims: Iterable[str]) -> list[tuple[str, str]]:
    """The overlap tables that join ``dims`` by sky position, exactly.

    Of the region-bearing elements whose keys are all among ``dims``, the finest of each
    family is used (``visit_detector_region`` rather than ``visit`` when ``detector`` is
    there; ``patch`` rather than ``tract``), and every pair of those is joined through
    the overlaps stored for exactly that pair — never through a coarser pair, which would
    pair a visit with every patch of every tract it touches.
    """
    universe = registry.universe
    dims = set(dims)
    keys = {name: set(el.primary_key) for name, el in universe.elements.items() if el.region}
    present = [name for name, k in keys.items() if k <= dims]
    finest = [a for a in present if not any(keys[a] < keys[b] for b in present)]
    pairs = []
    for i, a in enumerate(finest):
        for b in finest[i + 1:]:
            if (a, b) in universe.overlaps:
                pairs.append((a, b))
            elif (b, a) in universe.overlaps:
                pairs.append((b, a))
            else:
                raise QueryError(
                    f"This repository stores no overlaps between {a} and {b}, so a query over "
                    f"{', '.join(sorted(dims))} cannot pair them by sky position; if the repository was made by an "
                    "older skybutler, run `skybutler migrate REPO`")
    return pairs


def _join_dimensions(registry: Registry, dims: Sequence[str], start: sa.FromClause | None = None,
                     given: Mapping[str, sa.ColumnElement] | None = None,
                     ) -> tuple[sa.FromClause, dict[str, sa.ColumnElement], dict[str, Any], list[sa.ColumnElement]]:
    """Join the records of ``dims`` (closed), their relationships and their sky overlaps.

    ``start``/``given``: an existing FROM clause (a dataset table) whose columns already
    hold some dimensions' values; their records are joined on those columns.

    Returns
    -------
    from, canonical, tables, conditions
        The FROM clause, the column holding each dimension's value, the alias of each
        dimension's table, and WHERE conditions that keep implied values consistent.
    """
    universe = registry.universe
    given = dict(given or {})
    tables = {k: registry.tables.dimensions[k].alias(f"j_{k}") for k in dims}
    canonical = {k: given.get(k, tables[k].c[k]) for k in dims}
    joined = start
    for k in dims:
        conds = [tables[k].c[r] == canonical[r] for r in universe.elements[k].requires]
        if k in given:
            conds.append(tables[k].c[k] == given[k])
        if joined is None:
            joined = tables[k]
        else:
            joined = joined.join(tables[k], sa.and_(*conds) if conds else sa.true())
    assert joined is not None
    # Relationship elements (visit_definition: which exposures make a visit) relate dimensions
    # that share no key; join them when all their keys are in the query.
    for name, el in universe.elements.items():
        if not el.is_dimension and not el.region and el.requires and set(el.requires) <= set(dims):
            rel = registry.tables.dimensions[name].alias(f"r_{name}")
            joined = joined.join(rel, sa.and_(*[rel.c[k] == canonical[k] for k in el.requires]))
    for a, b in spatial_pairs(registry, dims):
        ov = registry.tables.overlaps[(a, b)]
        ca, cb = overlap_columns(universe, a, b)
        on = [ov.c[col] == canonical[k] for k, col in (*ca.items(), *cb.items())]
        joined = joined.join(ov, sa.and_(*on))
    # A dimension that another one implies (band of a visit) must agree with that record,
    # or the query would pair every visit with every band.
    conditions = [tables[g].c[k] == canonical[k] for k in dims for g in dims
                  if g != k and k in universe.implied_closure(g)]
    return joined, canonical, tables, conditions


def referenced_dimensions(registry: Registry, dimensions: Iterable[str], names: Iterable[str], *,
                          bind: Mapping[str, Any] | None = None) -> tuple[str, ...]:
    """Dimensions among ``names`` (of a where expression and a data id) that ``dimensions`` neither hold nor imply.

    A constraint on such a dimension joins it (spatially where needed): tracts
    ``where visit = 903334`` are the tracts that visit overlaps. A region-bearing
    record element (``visit_detector_region.region``) brings its keys.
    """
    universe = registry.universe
    dims = universe.closure(dimensions)
    known = set(dims) | set(universe.implied_by(dims))
    extra: list[str] = []
    for name in names:
        head = name.split(".", 1)[0]
        if head in known or (bind is not None and name in bind and head not in universe.elements):
            continue
        if head in universe.dimensions:
            extra.append(head)
        elif head in universe.elements and "." in name:
            extra.extend(universe.elements[head].primary_key)
    return tuple(d for d in universe.closure(extra) if d not in known) if extra else ()


def query_data_ids(registry: Registry, dimensions: Iterable[str], *, where: str | None = None,
                   bind: Mapping[str, Any] | None = None, datasets: Sequence[str] = (),
                   collections: Sequence[str] = (), data_id: Mapping[str, Any] | None = None,
                   with_implied: bool = False) -> DataIdQueryResults:
    """The distinct data ids over ``dimensions`` that have records (and overlap, and datasets).

    Streamed as `DataId` objects when iterated, or a table (`DataIdQueryResults`).
    """
    dimensions = tuple(dimensions)  # read on every run of the query, not only the first
    return DataIdQueryResults(registry, lambda: data_id_query(
        registry, dimensions, where=where, bind=bind, datasets=datasets, collections=collections,
        data_id=data_id, with_implied=with_implied))


def data_id_query(registry: Registry, dimensions: Iterable[str], *, where: str | None = None,
                  bind: Mapping[str, Any] | None = None, datasets: Sequence[str] = (),
                  collections: Sequence[str] = (), data_id: Mapping[str, Any] | None = None,
                  with_implied: bool = False, bare_columns_of: str | None = None,
                  ) -> tuple[sa.Select, tuple[str, ...], tuple[str, ...]]:
    """The SELECT behind `query_data_ids`: its rows are the values of ``dims`` then of ``implied``.

    ``bare_columns_of`` names a dimension whose metadata columns may be written without
    its name (``exposure_time`` for ``visit.exposure_time``), as in a records query.

    Dimensions that ``where``, ``data_id`` or the dataset types of ``datasets`` name but
    ``dimensions`` lack are joined too (spatially when they are on the sky), and the
    result is projected back onto ``dims``.

    Returns
    -------
    stmt, dims, implied
        The statement, the dimensions (closed, in universe order) and the implied
        dimensions whose values follow them when ``with_implied``.
    """
    universe = registry.universe
    dims = universe.closure(dimensions)
    found_types = [registry.dataset_type_records.find(name) for name in datasets]
    node = parse_expression(where)
    wanted = [*dims, *referenced_dimensions(registry, dims, {*(data_id or ()), *identifiers(node)}, bind=bind)]
    for _, dt in found_types:
        wanted += dt.dimensions
    query_dims = universe.closure(wanted)
    joined, canonical, tables, conds = _join_dimensions(registry, query_dims)
    fields = {}
    if bare_columns_of in tables:
        fields = {c.name: c for c in tables[bare_columns_of].c if c.name != "region" and c.name not in canonical}
    resolver = _Resolver(registry, query_dims, canonical, joined=dict(tables), fields=fields)
    conds += _data_id_conditions(resolver, data_id)
    if node is not None:
        conds.append(compile_expression(node, resolver, bind, text=where))
    if found_types:
        if not collections:
            raise CollectionError("Constraining data ids by datasets needs collections to search")
        steps = registry.search_path(collections)
        d = registry.tables.dataset.alias("qd")
        for type_id, dt in found_types:
            in_collections = in_any_collection(registry, steps, type_id, dt, d)
            if in_collections is None:
                conds.append(sa.false())
                continue
            found = sa.select(*[d.c[k] for k in dt.dimensions]).where(in_collections)
            if not dt.dimensions:
                conds.append(sa.exists(found.add_columns(d.c.id)))
            elif len(dt.dimensions) == 1:
                conds.append(canonical[dt.dimensions[0]].in_(found))
            else:
                # A row-value IN is planned as one pass over the datasets (an ephemeral index
                # in SQLite), where a correlated EXISTS may probe a poorly selective index per row.
                conds.append(sa.tuple_(*[canonical[k] for k in dt.dimensions]).in_(found))
    implied_names = tuple(universe.implied_by(dims)) if with_implied else ()
    implied_cols = [resolver(name).label(f"implied_{name}") for name in implied_names]
    stmt = sa.select(*[canonical[k] for k in dims], *implied_cols).distinct()
    stmt = _apply(stmt, joined, resolver, sa.and_(*conds) if conds else None)
    stmt = stmt.order_by(*[canonical[k] for k in dims])
    return stmt, dims, implied_names
