"""Bulk queries behind quantum graph building (`skybutler.pipeline`), kept here with the rest of the SQL.

Every function answers for many data ids at once: a graph of 10^5 quanta is built
from a handful of queries, never one per quantum.
"""

from __future__ import annotations

import datetime
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from ..model import DatasetRef
from ._values import any_of, chunk_size, chunks, tuple_getter
from .queries import data_id_query, query_datasets, refs_from_rows
from .search import dataset_branches

if TYPE_CHECKING:
    from ._registry import Registry

__all__ = [
    "calibration_candidates",
    "count_distinct",
    "data_id_rows",
    "dataset_refs_by_key",
    "dimension_records",
    "existing_dataset_ids",
    "known_paths",
]

_STREAM = 5000


def data_id_rows(registry: Registry, dimensions: Iterable[str], *, where: str | None = None,
                 bind: Mapping[str, Any] | None = None, datasets: Sequence[str] = (),
                 collections: Sequence[str] = (),
                 ) -> tuple[tuple[str, ...], tuple[str, ...], Iterator[tuple[Any, ...]]]:
    """Stream data ids over ``dimensions`` as plain tuples (see `query_data_ids` for the joins).

    Returns
    -------
    dims, implied, rows
        The dimensions (closed, in universe order), the implied dimensions whose values
        follow in each row, and the rows (values of ``dims`` then of ``implied``).
    """
    stmt, dims, implied = data_id_query(registry, dimensions, where=where, bind=bind, datasets=datasets,
                                        collections=collections, with_implied=True)

    def rows() -> Iterator[tuple[Any, ...]]:
        with registry.database.read() as conn:
            result = conn.execution_options(yield_per=_STREAM).execute(stmt)
            for part in result.partitions():
                yield from (tuple(r) for r in part)

    return dims, implied, rows()


def count_distinct(registry: Registry, dimensions: Iterable[str], keep: Sequence[str], *,
                   where: str | None = None, bind: Mapping[str, Any] | None = None,
                   datasets: Sequence[str] = (), collections: Sequence[str] = ()) -> int:
    """How many distinct values of the ``keep`` dimensions the data id query over ``dimensions`` has."""
    stmt, _dims, _ = data_id_query(registry, dimensions, where=where, bind=bind, datasets=datasets,
                                   collections=collections)
    sub = stmt.order_by(None).subquery()
    inner = sa.select(*[sub.c[k] for k in keep]).distinct().subquery()
    with registry.database.read() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(inner)).scalar_one())


def dataset_refs_by_key(registry: Registry, dataset_type: str, collections: Sequence[str], *,
                        where: str | None = None, bind: Mapping[str, Any] | None = None,
                        ) -> dict[tuple[Any, ...], DatasetRef]:
    """Datasets of one type found first in ``collections``, keyed by their data id values.

    The key is the tuple of values in the order of the dataset type's dimensions. This is
    `query_datasets` with ``find_first`` (one meaning of a collection search everywhere:
    see `skybutler.registry.search`); a ``where`` narrows the search in SQL.
    """
    if not collections:
        return {}
    _type_id, dt = registry.dataset_type_records.find(dataset_type)
    key_of = tuple_getter(dt.dimensions)
    return {key_of(ref.data_id): ref
            for ref in query_datasets(registry, dataset_type, collections, where=where, bind=bind)}


def calibration_candidates(registry: Registry, dataset_type: str, collections: Sequence[str],
                           ) -> dict[tuple[Any, ...], list[tuple[int, datetime.datetime | None,
                                                                  datetime.datetime | None, DatasetRef]]]:
    """Every dataset of a type in the collections, with its search rank and validity range.

    Datasets in RUN and TAGGED collections have no validity range (``None, None``: valid
    at any time); those certified in CALIBRATION collections have one row per range.
    Each key's list is sorted by rank (search order), then by range start. Built on the
    same collection search as every other lookup (`skybutler.registry.search`).
    """
    type_id, dt = registry.dataset_type_records.find(dataset_type)
    d = registry.tables.dataset
    out: dict[tuple[Any, ...], list[tuple[int, Any, Any, DatasetRef]]] = {}
    with registry.database.read() as conn:
        for rank, branch in dataset_branches(registry, registry.search_path(collections, conn=conn), type_id, dt):
            begin, end = branch.validity
            stmt = sa.select(d, begin.label("valid_begin"), end.label("valid_end")).select_from(branch.from_) \
                .where(*branch.conditions)
            rows = conn.execute(stmt).mappings().all()
            for row, ref in zip(rows, refs_from_rows(registry, conn, rows), strict=True):
                key = tuple(ref.data_id[k] for k in dt.dimensions)
                out.setdefault(key, []).append((rank, row["valid_begin"], row["valid_end"], ref))
    for items in out.values():
        items.sort(key=lambda it: (it[0], it[1] or datetime.datetime.min))
    return out


def existing_dataset_ids(registry: Registry, ids: Iterable[uuid.UUID]) -> set[uuid.UUID]:
    """Those of ``ids`` that are datasets in the registry."""
    d = registry.tables.dataset
    ids = list(ids)
    found: set[uuid.UUID] = set()
    db = registry.database
    stmt = db.statement("existing_dataset_ids", lambda: sa.select(d.c.id).where(any_of(d.c.id, "ids", db.dialect)))
    with db.read(autocommit=True) as conn:
        for chunk in chunks(ids, chunk_size(db.dialect)):
            found.update(conn.execute(stmt, {"ids": list(chunk)}).scalars())
    return found


def known_paths(registry: Registry, paths: Iterable[str]) -> set[str]:
    """Those of ``paths`` that some dataset's file record names."""
    f = registry.tables.file
    paths = list(paths)
    found: set[str] = set()
    db = registry.database
    stmt = db.statement("known_paths", lambda: sa.select(f.c.path).where(any_of(f.c.path, "paths", db.dialect)))
    with db.read(autocommit=True) as conn:
        for chunk in chunks(paths, chunk_size(db.dialect)):
            found.update(conn.execute(stmt, {"paths": list(chunk)}).scalars())
    return found


def dimension_records(registry: Registry, element: str, keys: Iterable[tuple[Any, ...]],
                      ) -> dict[tuple[Any, ...], dict[str, Any]]:
    """Records of one element by primary key tuple (missing keys are left out)."""
    with registry.database.read() as conn:
        return registry.dimension_records.fetch(conn, element, list(set(keys)))
