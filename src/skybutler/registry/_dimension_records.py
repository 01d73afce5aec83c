"""Dimension records: inserts (with implied values and sky overlaps), lookups, data id expansion."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import sqlalchemy as sa

from ..dimensions import DimensionUniverse, Region, overlapping_pairs
from ..dimensions.universe import text_problem
from ..errors import DimensionError
from ..model import DataId
from ._database import Database
from ._values import chunks, to_datetime, tuple_getter
from .schema import Tables, overlap_columns


class DimensionRecords:
    """The records of every dimension element, and the overlaps of those with sky regions.

    Records are never changed once written, so those read are cached for the life of
    the registry.
    """

    def __init__(self, db: Database, tables: Tables, universe: DimensionUniverse):
        self.db = db
        self.tables = tables
        self.universe = universe
        self._cache: dict[str, dict[tuple, dict[str, Any]]] = {}
        self._raw_cache: dict[str, dict[tuple, dict[str, Any]]] = {}
        # What `expand_data_ids` needs to know of a set of dimensions, worked out once per set.
        self._expand_plans: dict[tuple[str, ...], Any] = {}

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
                out[key] = to_datetime(value)
            elif key in self.universe.elements:
                out[key] = self.universe.coerce(key, value) if value is not None else None
            else:
                problem = text_problem(value) if types[key] == "str" and isinstance(value, str) else None
                if problem is not None:
                    raise DimensionError(f"{element} record {({k: record.get(k) for k in el.primary_key})}: "
                                         f"{key}={value[:40]!r} {problem}")
                out[key] = value
        return out

    def insert(self, element: str, records: Iterable[Mapping[str, Any]], *,
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
        with self.db.transaction() as conn:
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
                self._lock_overlaps(conn)
            if new_rows:
                # Another writer may insert the same records between the check above and here
                # (PostgreSQL runs transactions side by side): its rows are left alone, and only
                # the rows this call really inserted get overlaps.
                stmt = self.db.insert_new(table).returning(*[table.c[k] for k in pk])
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

    def forget_cached(self) -> None:
        """Drop every cached record: records a rolled-back transaction inserted and read are not there."""
        self._cache.clear()
        self._raw_cache.clear()

    def _lock_overlaps(self, conn: sa.Connection) -> None:
        """Serialise writers of region-bearing records of related elements (PostgreSQL).

        Overlaps are computed against the other element's rows as this transaction sees
        them; two transactions inserting a visit and a patch side by side would each miss
        the other's row. Every overlap table is locked, in one order, not only the inserted
        element's: a transaction that inserts records of two elements (an ingest's visits,
        then their detectors' regions) would otherwise lock its tables in two steps, and
        deadlock with a patch's insert that took its first table between them. SQLite needs
        nothing: its writers already take turns.
        """
        if self.db.dialect != "postgresql":
            return
        quote = conn.dialect.identifier_preparer.quote
        namespace = (conn.get_execution_options().get("schema_translate_map") or {}).get(None)
        prefix = f"{quote(namespace)}." if namespace else ""
        names = sorted(self.tables.overlaps[pair].name for pair in self.universe.overlaps)
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
            records = self.fetch(conn, via, list(keys))
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
        return set(self.fetch(conn, element, keys, columns_only_key=True))

    def fetch(self, conn: sa.Connection, element: str, keys: list[tuple], *,
                       columns_only_key: bool = False) -> dict[tuple, dict[str, Any]]:
        """Records of ``element`` by primary key tuple (cached; records never change); missing keys are left out."""
        cache = self._cache.setdefault(element, {})
        out = {k: cache[k] for k in keys if k in cache}
        todo = [k for k in keys if k not in cache]
        if not todo:
            return out
        table = self.tables.dimensions[element]
        pk = self.universe.elements[element].primary_key
        cols = [table.c[k] for k in pk] + [table.c[c] for c in self.universe.record_columns(element)]
        if len(todo) == 1:
            # One record (a put's data id naming a detector or visit met for the first time):
            # a statement built once per element, its key bound.
            one = self.db.statement(f"dimension_record|{element}", lambda: sa.select(*cols).where(
                *[table.c[k] == sa.bindparam(f"k{i}") for i, k in enumerate(pk)]))
            for row in conn.execute(one, {f"k{i}": v for i, v in enumerate(todo[0])}).mappings():
                rec = dict(row)
                key = tuple(rec[k] for k in pk)  # as stored: a key of another type is not this record's
                cache[key] = out[key] = rec
            return out
        for chunk in chunks(todo):
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

    def raw_rows(self, element: str, keys: Iterable[tuple]) -> dict[tuple, dict[str, Any]]:
        """Whole rows of ``element``'s table by primary key tuple, as stored (the region as its JSON text).

        For copying records into another registry without recomputing anything (job
        subsets, transfers). Cached like `fetch` (records never change); keys without a
        record are left out.
        """
        cache = self._raw_cache.setdefault(element, {})
        keys = list(dict.fromkeys(keys))
        out = {k: cache[k] for k in keys if k in cache}
        todo = [k for k in keys if k not in cache]
        if not todo:
            return out
        table = self.tables.dimensions[element]
        pk = self.universe.elements[element].primary_key
        key_of = tuple_getter(pk)
        with contextlib.suppress(TypeError):  # keys of one element compare; sorted, a chunk is a compact block
            todo.sort()
        with self.db.read(autocommit=True) as conn:
            for chunk in chunks(todo):
                # One IN list per key column, not a row-value IN: SQLite answers
                # ``(a, b, c) IN (VALUES ...)`` by scanning the table once per statement
                # (quadratic over a big subset), while per-column IN lists walk the primary
                # key index. The rows returned may include combinations nobody asked for
                # (dropped below); sorted keys come as grids (a few visits x their detectors).
                wanted = set(chunk)
                cond = sa.and_(*[table.c[col].in_(sorted({k[i] for k in chunk}, key=repr))
                                 for i, col in enumerate(pk)])
                for row in conn.execute(sa.select(table).where(cond)).mappings():
                    rec = dict(row)
                    key = key_of(rec)
                    if key in wanted:
                        cache[key] = out[key] = rec
        return out

    def overlap_rows(self, a: str, b: str, a_keys: Iterable[tuple], b_keys: Iterable[tuple]) -> list[dict[str, Any]]:
        """Rows of the overlap table of ``(a, b)`` (a pair of ``universe.overlaps``) whose two ends are given.

        ``a_keys`` and ``b_keys`` are primary key tuples of ``a`` and ``b`` records; a row
        is returned when its ``a`` end is among the first and its ``b`` end among the
        second. Rows are keyed by the table's own column names (see `overlap_columns`).
        Not cached: inserting a record adds overlap rows to existing ones.
        """
        table = self.tables.overlaps[(a, b)]
        ca, cb = overlap_columns(self.universe, a, b)
        a_cols = [table.c[c] for c in ca.values()]
        wanted_b = set(b_keys)
        get_b = tuple_getter(list(cb.values()))
        a_list = list(dict.fromkeys(a_keys))
        out: list[dict[str, Any]] = []
        if not a_list or not wanted_b:
            return out
        with self.db.read(autocommit=True) as conn:
            for chunk in chunks(a_list):
                cond = (a_cols[0].in_([k[0] for k in chunk]) if len(a_cols) == 1
                        else sa.tuple_(*a_cols).in_(list(chunk)))
                for row in conn.execute(sa.select(table).where(cond)).mappings():
                    if get_b(row) in wanted_b:
                        out.append(dict(row))
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
                conn.execute(self.db.insert_new(self.tables.overlaps[(a, b)]), out)

    def select(self, element: str, condition: sa.ColumnElement[bool] | None = None) -> Iterator[dict[str, Any]]:
        """Records of one element in key order, optionally those meeting ``condition`` (regions decoded from JSON)."""
        if element not in self.universe.elements:
            raise DimensionError(f"Unknown dimension element {element!r}; known: {', '.join(self.universe.elements)}")
        table = self.tables.dimensions[element]
        stmt = sa.select(table)
        if condition is not None:
            stmt = stmt.where(condition)
        stmt = stmt.order_by(*[table.c[k] for k in self.universe.elements[element].primary_key])
        with self.db.read() as conn:
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
        plan = self._expand_plans.get(tuple(dimensions))
        if plan is None:
            plan = self._expand_plans[tuple(dimensions)] = self._expand_plan(dimensions)
        steps, implied_by, getters = plan
        if len(data_ids) == 1:
            # One data id (a put): its records looked up by key, with no set of keys to gather.
            di = data_ids[0]
            items = di.required_items
            records: dict[str, dict[str, Any]] = {}
            for d, pk, key_of, gives in steps:
                key = key_of(items)
                record = self._cache.get(d, {}).get(key)  # records never change: no query needed
                if record is None:
                    with self.db.read(autocommit=True) as reader:
                        record = self.fetch(reader, d, [key]).get(key)
                    if record is None:
                        raise self._missing(d, pk, [key], context)
                if gives:
                    records[d] = record
            return [self._with_implied(di, implied_by, records, context)] if implied_by else [di]
        per_element: dict[str, dict[tuple, dict[str, Any]]] = {}
        with contextlib.ExitStack() as stack:
            conn = None
            for d, pk, key_of, gives in steps:
                cache = self._cache.get(d, {})
                keys = list({key_of(di.required_items) for di in data_ids})
                if all(k in cache for k in keys):  # records never change: no query needed
                    found = cache if gives else {}
                    missing = []
                else:
                    if conn is None:
                        conn = stack.enter_context(self.db.read(autocommit=True))
                    found = self.fetch(conn, d, keys)
                    missing = [k for k in keys if k not in found]
                if missing:
                    raise self._missing(d, pk, missing, context)
                if gives:
                    per_element[d] = found
        if not implied_by:
            return list(data_ids)
        return [self._with_implied(di, implied_by, {giver: per_element[giver][getters[giver](di.required_items)]
                                                    for giver in per_element}, context) for di in data_ids]

    @staticmethod
    def _missing(element: str, pk: Sequence[str], missing: Sequence[tuple], context: str) -> DimensionError:
        example = dict(zip(pk, missing[0], strict=True))
        return DimensionError(
            f"No {element} record for {example}{' (' + context + ')' if context else ''}; "
            f"{len(missing)} value(s) of {element} have no record. Insert dimension records first."
        )

    @staticmethod
    def _with_implied(di: DataId, implied_by: Mapping[str, str], records: Mapping[str, Mapping[str, Any]],
                      context: str) -> DataId:
        """``di`` with the values its records imply (``records``: each giver's record for it), checked against any given."""
        implied: dict[str, Any] = {}
        for name, giver in implied_by.items():
            value = records[giver].get(name)
            given = di.implied.get(name)
            if given is not None and value is not None and given != value:
                raise DimensionError(
                    f"Data id {di}{' (' + context + ')' if context else ''} gives {name}={given!r} "
                    f"but its {giver} record says {name}={value!r}"
                )
            implied[name] = value
        return di.with_implied(implied)

    def _expand_plan(self, dimensions: Sequence[str]) -> tuple[
            list[tuple[str, tuple[str, ...], Callable[[Any], tuple], bool]], dict[str, str],
            dict[str, Callable[[Any], tuple]]]:
        """What `expand_data_ids` works out once per set of dimensions (the universe never changes).

        For each dimension: its primary key, the getter of its key from a data id, and
        whether it gives implied values; the implied values and their givers; each giver's key getter.
        """
        implied_by = self.universe.implied_by(dimensions)
        givers = set(implied_by.values())
        steps = []
        for d in dimensions:
            pk = tuple(self.universe.elements[d].primary_key)
            steps.append((d, pk, tuple_getter(pk), d in givers))
        getters = {giver: tuple_getter(self.universe.elements[giver].primary_key) for giver in givers}
        return steps, implied_by, getters
