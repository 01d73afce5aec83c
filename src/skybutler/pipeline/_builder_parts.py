"""Pieces of the quantum graph builder (`skybutler.pipeline.builder`): new refs with their file
names, input refs as graph lines hold them, chunks of quanta.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..model import DataId, DatasetRef, DatasetType, new_dataset_ids
from ..registry import pipeline_sql
from .task import Task

if TYPE_CHECKING:
    from ..butler import Butler
    from ..registry import Registry

__all__ = ["CHUNK", "Entry", "PathMaker", "Plan", "chunked", "explain_empty", "ref_record"]

CHUNK = 2000
"""Quanta whose prerequisites' observation times are read in one query."""

Entry = tuple[uuid.UUID, str | None, str | None, uuid.UUID | None]
"""A dataset as the builder keeps it: id, run (None: the output run), planned file name, producer quantum id."""


class PathMaker:
    """Refs with new ids and the file names their datasets will have (namers kept per dataset type).

    Ids are made a few hundred at a time (`new_dataset_ids`: one ``os.urandom`` call, no
    parsing): a build makes two or more per quantum. They keep `new_dataset_id`'s order
    (by millisecond); an id handed out a few milliseconds after its batch was made carries
    the batch's time.
    """

    _BATCH = 256
    """Ids made at once: enough to share the cost, few enough that their time is that of their use."""

    def __init__(self, butler: Butler):
        self.butler = butler
        self._namers: dict[str, Callable[[DatasetRef], str]] = {}
        self._ids: list[uuid.UUID] = []

    def _namer(self, dt: DatasetType, run: str) -> Callable[[DatasetRef], str]:
        namer = self._namers.get(dt.name)
        if namer is None:
            namer = self._namers[dt.name] = self.butler.file_namer(dt, run)
        return namer

    def _refill(self) -> list[uuid.UUID]:
        self._ids = new_dataset_ids(self._BATCH)
        self._ids.reverse()  # handed out from the end, in increasing order
        return self._ids

    def _new_id(self) -> uuid.UUID:
        return (self._ids or self._refill()).pop()

    def ref(self, dt: DatasetType, data_id: DataId, run: str) -> DatasetRef:
        ref = DatasetRef(self._new_id(), dt, data_id, run, extra={})
        ref.extra["path"] = self._namer(dt, run)(ref)
        return ref

    def new(self, dt: DatasetType, data_id: DataId, run: str) -> tuple[uuid.UUID, str]:
        """The id and file name of a new dataset."""
        # Called twice or more per quantum: _new_id and _namer written out.
        ids = self._ids or self._refill()
        dataset_id = ids.pop()
        namer = self._namers.get(dt.name) or self._namer(dt, run)
        return dataset_id, namer(DatasetRef(dataset_id, dt, data_id, run))


def ref_record(type_name: str, key: tuple[Any, ...], entry: Entry, run: str) -> dict[str, Any]:
    """An input ref as a graph line holds it (`graph.ref_to_dict`), from a compact index entry."""
    out: dict[str, Any] = {"id": entry[0], "type": type_name, "data_id": list(key)}
    if entry[1] is not None and entry[1] != run:
        out["run"] = entry[1]
    if entry[2] is not None:
        out["path"] = entry[2]
    return out


def chunked(groups: Iterator[tuple[tuple[Any, ...], list[Any]]],
             prepare: Callable[[Sequence[tuple[Any, ...]]], None],
             ) -> Iterator[tuple[tuple[Any, ...], list[Any]]]:
    """``groups`` unchanged, ``prepare`` called with the keys of each chunk before it is given."""
    while chunk := list(itertools.islice(groups, CHUNK)):
        prepare([tkey for tkey, _ in chunk])
        yield from chunk


@dataclass
class Plan:
    """What to ask the registry for one task."""

    task: Task
    tdims: tuple[str, ...]
    qdims: tuple[str, ...]
    external: list[str]
    count: int | None = None
    rows: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    skipped: int = 0


def explain_empty(registry: Registry, plan: Plan, *, where: str | None, bind: Mapping[str, Any] | None,
                  input_collections: Sequence[str], skip_existing_in: Sequence[str]) -> str:
    """Why a task has no quanta: skipped, inputs missing, no data ids, or the where expression."""

    def count_without(*, use_where: bool, datasets: bool, only: str | None = None) -> int:
        return pipeline_sql.count_distinct(
            registry, plan.qdims, plan.tdims, where=None if use_where else where,
            bind=None if use_where else bind,
            datasets=[] if datasets else ([only] if only else plan.external), collections=input_collections)

    label, dims = plan.task.label, ", ".join(plan.tdims)
    if plan.skipped:
        return (f"task {label!r}: all {plan.skipped} quanta skipped, their outputs exist in "
                f"[{', '.join(skip_existing_in)}]")
    if plan.rows:
        parts = [f"{n} data id(s) lack input {name!r}" for name, n in plan.dropped.items()]
        return f"task {label!r}: {'; '.join(parts) or 'no complete set of inputs'}"
    count = count_without(use_where=True, datasets=True)
    if count == 0:
        return (f"task {label!r}: no data ids over ({', '.join(plan.qdims)}) at all — are dimension records "
                "(and their sky regions, for overlaps) inserted?")
    reasons = []
    if where and count_without(use_where=False, datasets=True) == 0:
        reasons.append(f"the where expression {where!r} matches none of the {count} data ids")
    for name in plan.external:
        if count_without(use_where=True, datasets=False, only=name) == 0:
            reasons.append(f"no {name} datasets in collections [{', '.join(input_collections)}]")
    if not reasons:
        reasons.append(f"the where expression and the {', '.join(plan.external)} datasets match no common "
                       f"data id over ({dims})")
    return f"task {label!r}: " + "; ".join(reasons)
