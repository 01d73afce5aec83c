"""The one meaning of "find datasets of a type in these collections".

Every lookup — `query_datasets`, `find_dataset`, the ``datasets=`` constraint of data id
queries, and the quantum graph builder's input and calibration lookups — is built from
`dataset_branch`, so RUN, TAGGED, CHAINED and CALIBRATION collections mean the same
thing everywhere:

- a CHAINED collection is searched as its children, depth first, in order, each
  collection once (the first place it appears);
- a RUN holds the datasets written into it; a TAGGED collection the datasets tagged there;
- a CALIBRATION collection holds certified datasets of calibration types only: it is
  skipped for every other type. With a time, a dataset is found when ``begin <= time <
  end``; without one, every certified dataset is a candidate, and a find-first lookup that
  meets more than one for a data id is an error naming them (`ambiguity_error`), not a pick.
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

import sqlalchemy as sa

from ..errors import CollectionError
from ..model import CollectionType, DataId, DatasetType

if TYPE_CHECKING:
    from ._registry import Registry


class SearchStep(NamedTuple):
    """One non-chained collection of a flattened search path."""

    name: str
    id: int
    type: CollectionType


@dataclass
class Branch:
    """Where one collection's datasets of one type are: a FROM clause and its conditions.

    ``validity`` holds the ``(valid_begin, valid_end)`` columns of a CALIBRATION
    collection's certifications (NULL literals elsewhere: valid at any time).
    ``ambiguous`` (a CALIBRATION collection looked up without a time) says the branch
    may hold several datasets for one data id, and that its rows must be made distinct:
    one dataset certified over several ranges is one candidate.
    """

    step: SearchStep
    from_: sa.FromClause
    conditions: list[sa.ColumnElement[bool]]
    validity: tuple[sa.ColumnElement[Any], sa.ColumnElement[Any]]
    ambiguous: bool = False


_NO_VALIDITY = (sa.null().label("valid_begin"), sa.null().label("valid_end"))
"""`Branch.validity` of collections whose datasets are valid at any time (built once: shared by every query)."""


def dataset_branch(registry: Registry, step: SearchStep, type_id: int, dataset_type: DatasetType, *,
                   time: datetime.datetime | None = None) -> Branch | None:
    """The datasets of one type in one (non-chained) collection, or None when it cannot hold any."""
    d = registry.tables.dataset
    conditions: list[sa.ColumnElement[bool]] = [d.c.dataset_type_id == type_id]
    if step.type is CollectionType.RUN:
        conditions.append(d.c.run_id == step.id)
        return Branch(step, d, conditions, _NO_VALIDITY)
    if step.type is CollectionType.TAGGED:
        tg = registry.tables.tagged
        return Branch(step, d.join(tg, sa.and_(tg.c.dataset_id == d.c.id, tg.c.collection_id == step.id)),
                      conditions, _NO_VALIDITY)
    if step.type is CollectionType.CALIBRATION:
        if not dataset_type.is_calibration:
            return None
        cal = registry.tables.calibration
        on = [cal.c.dataset_id == d.c.id, cal.c.collection_id == step.id]
        if time is not None:
            on += [cal.c.valid_begin <= time, cal.c.valid_end > time]
        return Branch(step, d.join(cal, sa.and_(*on)), conditions, (cal.c.valid_begin, cal.c.valid_end),
                      ambiguous=time is None)
    raise CollectionError(f"Collection {step.name!r} of type {step.type.value} cannot be searched directly")


def dataset_branches(registry: Registry, steps: Sequence[SearchStep], type_id: int, dataset_type: DatasetType,
                     *, time: datetime.datetime | None = None) -> list[tuple[int, Branch]]:
    """`dataset_branch` for each step, with its rank in the search order (skipped ones left out)."""
    out = []
    for rank, step in enumerate(steps):
        branch = dataset_branch(registry, step, type_id, dataset_type, time=time)
        if branch is not None:
            out.append((rank, branch))
    return out


def in_any_collection(registry: Registry, steps: Sequence[SearchStep], type_id: int, dataset_type: DatasetType,
                      dataset: sa.FromClause) -> sa.ColumnElement[bool] | None:
    """The condition "a row of ``dataset`` (the table or an alias) is of this type in any of these collections".

    RUNs are one ``run_id IN (...)`` test, the others one ``EXISTS`` each. Returns None
    when no collection can hold the type.
    """
    d = dataset
    runs = [s.id for s in steps if s.type is CollectionType.RUN]
    alternatives: list[sa.ColumnElement[bool]] = []
    if runs:
        alternatives.append(d.c.run_id.in_(runs))
    for step in steps:
        if step.type is CollectionType.TAGGED:
            tg = registry.tables.tagged
            alternatives.append(sa.exists().where(tg.c.dataset_id == d.c.id, tg.c.collection_id == step.id))
        elif step.type is CollectionType.CALIBRATION and dataset_type.is_calibration:
            cal = registry.tables.calibration
            alternatives.append(sa.exists().where(cal.c.dataset_id == d.c.id, cal.c.collection_id == step.id))
    if not alternatives:
        return None
    return sa.and_(d.c.dataset_type_id == type_id, sa.or_(*alternatives))


def ambiguity_error(registry: Registry, conn: sa.Connection, step: SearchStep, type_id: int,
                    dataset_type: DatasetType, data_id_key: str, data_id: DataId) -> CollectionError:
    """The error for a find-first lookup without a time that meets several certified datasets."""
    cal = registry.tables.calibration
    rows = conn.execute(sa.select(cal.c.dataset_id, cal.c.valid_begin, cal.c.valid_end).where(
        cal.c.collection_id == step.id, cal.c.dataset_type_id == type_id, cal.c.data_id_key == data_id_key,
    ).order_by(cal.c.valid_begin)).all()
    ranges = "; ".join(f"{ds} valid {b.isoformat()} .. {e.isoformat()}" for ds, b, e in rows[:6])
    more = f" and {len(rows) - 6} more" if len(rows) > 6 else ""
    return CollectionError(
        f"{dataset_type.name} {{{data_id}}} has {len({r[0] for r in rows})} datasets certified in CALIBRATION "
        f"collection {step.name!r} ({ranges}{more}); give a time to choose one"
    )
