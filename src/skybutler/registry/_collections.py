"""Collections: RUN, TAGGED, CHAINED and CALIBRATION; chains, the search path, tags and certifications."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Sequence
from typing import Any

import sqlalchemy as sa

from ..errors import CollectionError, DatasetNotFoundError
from ..model import CollectionType, DataId, DatasetRef
from ._database import Database
from ._dataset_types import DatasetTypeRecords
from ._sqlite_raw import raw_statement, run_statement
from ._values import chunks, to_datetime
from .schema import MAX_COLLECTION_NAME, Tables
from .search import SearchStep

_VALID_NAMES: set[str] = set()
"""Names `CollectionRecords.check_name` has accepted (at most 4,096 kept): the check is pure."""


class CollectionRecords:
    """The collections of a repository and what TAGGED, CHAINED and CALIBRATION ones hold.

    Rows read inside a write transaction are kept for that transaction
    (`Database.transaction_collections`); every write to the collection table forgets them.
    """

    def __init__(self, db: Database, tables: Tables, dataset_types: DatasetTypeRecords):
        self.db = db
        self.tables = tables
        self.dataset_types = dataset_types

    def register(self, name: str, type: CollectionType = CollectionType.RUN, *,
                            doc: str | None = None) -> bool:
        """Register a collection; an existing one of the same type is a no-op (returns False)."""
        self.check_name(name)
        existing = self.row(name, required=False)
        if existing is not None:
            if existing["type"] != type.value:
                raise CollectionError(
                    f"Collection {name!r} already exists with type {existing['type']}, not {type.value}"
                )
            return False
        with self.db.transaction() as conn:
            self.db.forget_collections()
            # Race-free: another process may register the same name between the check above
            # and this insert; then nothing is inserted and its row is checked below.
            inserted = conn.execute(self.db.insert_new(self.tables.collection).values(
                name=name, type=type.value, doc=doc)).rowcount == 1
        if not inserted:
            row = self.row(name)
            if row["type"] != type.value:
                raise CollectionError(f"Collection {name!r} already exists with type {row['type']}, not {type.value}")
        return inserted

    @staticmethod
    def check_name(name: str) -> None:
        """Raise `CollectionError` for a name no collection may have (empty, control characters, too long...)."""
        if name in _VALID_NAMES:  # every put checks its run's name again
            return
        if not name or any(c in name for c in "\0\n\r\t") or name.startswith("/") or ".." in name.split("/") \
                or any("\ud800" <= c <= "\udfff" for c in name):  # lone surrogates: no database holds them
            raise CollectionError(f"Invalid collection name {name!r}")
        if len(name) > MAX_COLLECTION_NAME:
            raise CollectionError(f"Collection name {name[:40]!r}... is {len(name)} characters long; "
                                  f"names hold at most {MAX_COLLECTION_NAME}")
        if len(_VALID_NAMES) < 4096:
            _VALID_NAMES.add(name)

    def row(self, name: str, *, required: bool = True) -> Any:
        """The collection's row (``id, name, type, doc``); None or `CollectionError` when there is none."""
        cache = self.db.transaction_collections()
        row = cache.get(name) if cache is not None else None
        if row is None:
            with self.db.read() as conn:
                row = self._by_name(conn, name)
            if cache is not None and row is not None:
                cache[name] = row
        if row is None and required:
            raise CollectionError(f"Unknown collection {name!r}; see `skybutler collection list`")
        return row

    def _by_name(self, conn: sa.Connection, name: str) -> dict[str, Any] | None:
        """The row of the collection ``name`` read through ``conn``, None when there is none.

        Every put looks up its run and every query its collections this way: on the DB-API
        cursor (`_sqlite_raw`, `Database.first_row_raw`), a tenth of the cost of an execute
        through SQLAlchemy; the columns need no conversion.
        """
        t = self.tables.collection
        build = lambda: sa.select(t).where(t.c.name == sa.bindparam("name"))  # noqa: E731
        if self.db.dialect == "postgresql":
            found = self.db.first_row_raw(conn, "pg|collection_by_name", build, {"name": name})
        else:
            raw = raw_statement(conn, self.db.raw_statements(), "sqlite|collection_by_name", build)
            rows = run_statement(conn, raw, [(name,)], fetch=True)
            found = rows[0] if rows else None
        return None if found is None else dict(zip(t.c.keys(), found, strict=True))

    def type_of(self, name: str) -> CollectionType:
        """The type of an existing collection."""
        row = self.row(name)
        assert row is not None
        return CollectionType(row["type"])

    def all(self, *, types: Iterable[CollectionType] | None = None) -> list[dict[str, Any]]:
        """Every collection as ``{name, type, doc, children}`` sorted by name."""
        t, ch = self.tables.collection, self.tables.collection_chain
        wanted = {ct.value for ct in types} if types else None
        with self.db.read() as conn:
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
        self.register(name, CollectionType.CHAINED)
        ch = self.tables.collection_chain
        with self.db.transaction() as conn:
            # Chains change one at a time, each checked against the others as committed: two
            # writers each making a chain contain the other would otherwise both pass the
            # check (neither sees the other's rows) and make a cycle.
            self.db.lock_table(conn, ch, "SHARE ROW EXCLUSIVE")
            row = self.row(name)
            assert row is not None
            if row["type"] != CollectionType.CHAINED.value:  # removed and made again as another type meanwhile
                raise CollectionError(f"Collection {name!r} is a {row['type']}, not a CHAINED collection")
            child_ids = []
            for child in children:
                crow = self.row(child)
                assert crow is not None
                cycle = self._chain_path(child, name)
                if cycle is not None:
                    raise CollectionError(
                        f"Chain {name!r} cannot contain {child!r}: that makes a cycle {' -> '.join([name, *cycle])}")
                child_ids.append(crow["id"])
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
        with self.db.read() as conn:
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

    def resolve(self, names: Sequence[str]) -> list[str]:
        """Flatten chains into the ordered list of non-chained collections (duplicates dropped)."""
        return [step.name for step in self.search_path(names)]

    def search_path(self, names: Sequence[str], *, conn: sa.Connection | None = None) -> list[SearchStep]:
        """The non-chained collections searched for ``names``, in order (each once).

        Chains are expanded depth first; a collection met a second time is skipped.
        ``conn``: a connection to use (one checkout for the lookup and a query after it).
        """
        t, ch = self.tables.collection, self.tables.collection_chain
        out: list[SearchStep] = []
        seen: set[int] = set()
        with contextlib.nullcontext(conn) if conn is not None else self.db.read() as c:
            def walk(name: str, depth: int) -> None:
                if depth > 50:
                    raise CollectionError(f"Collection chain through {name!r} is too deep (a cycle?)")
                row = self._by_name(c, name)
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

    def of_type(self, collection: str, ctype: CollectionType) -> Any:
        """The row of a collection that must be of type ``ctype`` (`CollectionError` otherwise)."""
        row = self.row(collection)
        assert row is not None
        if row["type"] != ctype.value:
            raise CollectionError(f"Collection {collection!r} is {row['type']}, not {ctype.value}")
        return row

    def associate(self, collection: str, refs: Iterable[DatasetRef]) -> None:
        """Add datasets to a TAGGED collection (replacing one with the same type and data id).

        Two of ``refs`` with the same type and data id are an error (a TAGGED collection
        holds one dataset per type and data id).
        """
        row = self.of_type(collection, CollectionType.TAGGED)
        tg = self.tables.tagged
        rows: dict[tuple[int, str], dict[str, Any]] = {}
        refs = list(refs)
        for ref in refs:
            type_id, _ = self.dataset_types.find(ref.dataset_type.name)
            key = (type_id, ref.data_id.key())
            other = rows.get(key)
            if other is not None and other["dataset_id"] != ref.id:
                raise CollectionError(
                    f"Cannot tag both {other['dataset_id']} and {ref.id} ({ref.dataset_type.name} "
                    f"{{{ref.data_id}}}) in {collection!r}: a TAGGED collection holds one dataset per type and "
                    "data id")
            rows[key] = {"collection_id": row["id"], "dataset_id": ref.id, "dataset_type_id": type_id,
                         "data_id_key": key[1]}
        with self.db.transaction() as conn:
            # One writer at a time: two tagging the same type and data id would both find
            # nothing to replace, and the second's insert would break the one-per-data-id rule.
            self.hold(conn, row)
            self.hold_datasets(conn, refs, f"tag it in {collection!r}")
            for chunk in chunks(list(rows.values())):
                conn.execute(sa.delete(tg).where(
                    tg.c.collection_id == row["id"],
                    sa.tuple_(tg.c.dataset_type_id, tg.c.data_id_key).in_(
                        [(r["dataset_type_id"], r["data_id_key"]) for r in chunk])))
                conn.execute(sa.insert(tg), list(chunk))

    def disassociate(self, collection: str, refs: Iterable[DatasetRef]) -> int:
        """Remove datasets from a TAGGED collection; returns how many were tagged there."""
        row = self.of_type(collection, CollectionType.TAGGED)
        tg = self.tables.tagged
        removed = 0
        with self.db.transaction() as conn:
            for chunk in chunks([ref.id for ref in refs]):
                removed += conn.execute(sa.delete(tg).where(
                    tg.c.collection_id == row["id"], tg.c.dataset_id.in_(list(chunk)))).rowcount
        return removed

    def certify(self, collection: str, refs: Iterable[DatasetRef], begin: Any, end: Any) -> None:
        """Certify calibration datasets as valid over ``[begin, end)`` in a CALIBRATION collection."""
        row = self.of_type(collection, CollectionType.CALIBRATION)
        begin, end = to_datetime(begin), to_datetime(end)
        if not begin < end:
            raise CollectionError(f"Validity range must have begin < end, got {begin} .. {end}")
        cal = self.tables.calibration
        refs = list(refs)
        with self.db.transaction() as conn:
            self.hold(conn, row)
            self.hold_datasets(conn, refs, f"certify it in {collection!r}")
            for ref in refs:
                type_id, dt = self.dataset_types.find(ref.dataset_type.name)
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
        row = self.of_type(collection, CollectionType.CALIBRATION)
        type_id, _ = self.dataset_types.find(dataset_type)
        lo = to_datetime(begin) if begin is not None else None
        hi = to_datetime(end) if end is not None else None
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
        with self.db.transaction() as conn:
            self.hold(conn, row)
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

    def hold(self, conn: sa.Connection, row: Any) -> None:
        """Lock a TAGGED or CALIBRATION collection's row in ``conn``'s transaction: its content changes one writer at a time.

        A certification's overlap check, and a tag's replacement of the dataset of the same
        type and data id, read what is committed: two writers certifying one calibration
        over overlapping ranges would each pass the check beside the other, two tagging
        one data id would each find nothing to replace (PostgreSQL; SQLite's write
        transaction keeps them apart already).
        """
        c = self.tables.collection
        if conn.execute(sa.select(c.c.id).where(c.c.id == row["id"]).with_for_update()).first() is None:
            raise CollectionError(f"Collection {row['name']!r} was removed while it was being changed")

    def hold_datasets(self, conn: sa.Connection, refs: Sequence[DatasetRef], what: str) -> None:
        """Check that the datasets of ``refs`` exist, and keep them from being removed until ``conn``'s transaction ends.

        A dataset removed before (a stale ref) or meanwhile by another writer is a
        `DatasetNotFoundError` naming it, not the foreign key's error. On PostgreSQL the
        rows are locked ``FOR KEY SHARE`` (what the foreign key's own check takes): a
        removal that deleted one first is waited for, and one that comes later waits for
        this transaction; SQLite's write transaction keeps removals out already.
        """
        d = self.tables.dataset
        found: set[Any] = set()
        for chunk in chunks(list(dict.fromkeys(ref.id for ref in refs))):
            found.update(conn.execute(sa.select(d.c.id).where(d.c.id.in_(chunk))
                                      .with_for_update(key_share=True)).scalars())
        missing = [ref for ref in refs if ref.id not in found]
        if missing:
            ref = missing[0]
            more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
            raise DatasetNotFoundError(f"Cannot {what}: dataset {ref.id} ({ref.dataset_type.name} "
                                       f"{{{ref.data_id}}} in run {ref.run!r}) was removed{more}")

    def certifications(self, collection: str, dataset_type: str | None = None) -> list[dict[str, Any]]:
        """The certifications of a CALIBRATION collection: ``{dataset_id, dataset_type, data_id_key, begin, end}``."""
        row = self.of_type(collection, CollectionType.CALIBRATION)
        cal = self.tables.calibration
        stmt = sa.select(cal).where(cal.c.collection_id == row["id"])
        if dataset_type is not None:
            stmt = stmt.where(cal.c.dataset_type_id == self.dataset_types.find(dataset_type)[0])
        with self.db.read() as conn:
            rows = conn.execute(
                stmt.order_by(cal.c.dataset_type_id, cal.c.data_id_key, cal.c.valid_begin)).mappings().all()
        return [{"dataset_id": r["dataset_id"], "dataset_type": self.dataset_types.by_id(r["dataset_type_id"]).name,
                 "data_id_key": r["data_id_key"], "begin": r["valid_begin"], "end": r["valid_end"]} for r in rows]

    def remove(self, name: str) -> None:
        """Remove a non-RUN collection (runs are removed with their datasets by `remove_run`)."""
        row = self.row(name)
        assert row is not None
        if row["type"] == CollectionType.RUN.value:
            raise CollectionError(f"{name!r} is a RUN; use remove-runs to delete it with its datasets")
        c, ch = self.tables.collection, self.tables.collection_chain
        with self.db.transaction() as conn:
            self.db.lock_table(conn, ch, "SHARE ROW EXCLUSIVE")  # no chain takes it in meanwhile
            parents = conn.execute(sa.select(c.c.name).join(ch, ch.c.parent_id == c.c.id)
                                   .where(ch.c.child_id == row["id"])).scalars().all()
            if parents:
                raise CollectionError(f"Collection {name!r} is in chain(s) {', '.join(parents)}; remove it there first")
            conn.execute(sa.delete(self.tables.tagged).where(self.tables.tagged.c.collection_id == row["id"]))
            conn.execute(sa.delete(self.tables.calibration).where(self.tables.calibration.c.collection_id == row["id"]))
            conn.execute(sa.delete(ch).where(ch.c.parent_id == row["id"]))
            self.db.forget_collections()
            conn.execute(sa.delete(c).where(c.c.id == row["id"]))

    def run_id(self, run: str) -> int:
        """The id of a RUN collection (`CollectionError` for another type or an unknown name)."""
        row = self.row(run)
        assert row is not None
        if row["type"] != CollectionType.RUN.value:
            raise CollectionError(f"Collection {run!r} is {row['type']}, not a RUN; datasets are written to runs")
        return int(row["id"])

    def run_names(self, conn: sa.Connection, run_ids: set[int], known: dict[int, str]) -> dict[int, str]:
        """Add the names of ``run_ids`` not yet in ``known`` to it (one query) and return it."""
        missing = [i for i in run_ids if i not in known]
        if missing:
            c = self.tables.collection
            stmt = self.db.statement("collection_names", lambda: sa.select(c.c.id, c.c.name).where(
                c.c.id.in_(sa.bindparam("ids", expanding=True))))
            known.update((i, name) for i, name in conn.execute(stmt, {"ids": missing}))
        return known
