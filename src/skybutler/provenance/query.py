"""Asking where a dataset came from and what was made from it."""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import DatasetNotFoundError
from ..model import DatasetRef
from ..registry import provenance_sql

__all__ = ["DatasetEntry", "LineageEntry", "Provenance", "execution_summary", "lineage", "provenance_of"]


def registry_of(butler_or_registry: Any) -> Any:
    """The registry of a butler, or the registry itself."""
    return getattr(butler_or_registry, "registry", butler_or_registry)


def as_dataset_id(ref_or_id: DatasetRef | uuid.UUID | str) -> uuid.UUID:
    """The dataset id of a ref, a UUID or its text (DatasetNotFoundError for anything else)."""
    if isinstance(ref_or_id, DatasetRef):
        return ref_or_id.id
    if isinstance(ref_or_id, uuid.UUID):
        return ref_or_id
    try:
        return uuid.UUID(str(ref_or_id))
    except ValueError:
        raise DatasetNotFoundError(f"{ref_or_id!r} is not a dataset id (a UUID)") from None


def _execution(row: dict[str, Any] | None) -> dict[str, Any] | None:
    if row is None:
        return None
    out = dict(row)
    for key in ("software", "details"):
        if out.get(key):
            out[key] = json.loads(out[key])
    return out


@dataclass(frozen=True)
class DatasetEntry:
    """A dataset named by provenance: its id, its ref if it still exists, and its file."""

    id: uuid.UUID
    ref: DatasetRef | None
    path: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form."""
        out: dict[str, Any] = {"id": str(self.id), "path": self.path}
        if self.ref is not None:
            out.update(dataset_type=self.ref.dataset_type.name, data_id=dict(self.ref.data_id), run=self.ref.run)
        return out


@dataclass(frozen=True)
class Provenance:
    """How one dataset was made.

    Attributes
    ----------
    dataset
        The dataset itself.
    execution
        The execution that generated it (a row of the ``execution`` table, with
        ``software`` and ``details`` decoded), or None for ingested data.
    used
        Every input that execution was given (with the file it was read from).
    config
        The configuration dataset the execution ran with (it is "used" too, in the registry).
    derived_from
        The inputs the dataset was derived from: those the task reported it used
        (all of them unless it reported otherwise).
    outputs
        Everything the execution wrote, this dataset included.
    """

    dataset: DatasetEntry
    execution: dict[str, Any] | None
    used: list[DatasetEntry] = field(default_factory=list)
    derived_from: list[DatasetEntry] = field(default_factory=list)
    outputs: list[DatasetEntry] = field(default_factory=list)
    config: DatasetEntry | None = None

    @property
    def contributing_only(self) -> list[DatasetEntry]:
        """Inputs that were given but that the task reported it did not use."""
        derived = {d.id for d in self.derived_from}
        return [u for u in self.used if u.id not in derived]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form."""
        ex = None
        if self.execution is not None:
            ex = {k: (str(v) if isinstance(v, uuid.UUID) or hasattr(v, "isoformat") else v)
                  for k, v in self.execution.items()}
        return {
            "dataset": self.dataset.to_dict(), "execution": ex,
            "used": [u.to_dict() for u in self.used],
            "derived_from": [d.to_dict() for d in self.derived_from],
            "outputs": [o.to_dict() for o in self.outputs],
            "config": self.config.to_dict() if self.config is not None else None,
        }


def _entries(registry: Any, pairs: Sequence[tuple[uuid.UUID, str | None]]) -> list[DatasetEntry]:
    refs = registry.get_datasets([i for i, _ in pairs])
    return [DatasetEntry(i, refs.get(i), p) for i, p in pairs]


def provenance_of(butler: Any, ref_or_id: DatasetRef | uuid.UUID | str) -> Provenance:
    """The execution that made a dataset, what it used, and what the dataset derives from.

    Parameters
    ----------
    butler
        A `Butler` (or its registry).
    ref_or_id
        The dataset, by ref or id.

    Raises
    ------
    DatasetNotFoundError
        If neither a dataset nor any provenance has that id.
    """
    registry = registry_of(butler)
    did = as_dataset_id(ref_or_id)
    ref = registry.get_datasets([did]).get(did)
    generated = provenance_sql.generating_executions(registry, [did]).get(did)
    sources = [s for _, s in provenance_sql.derived_edges(registry, [did])]
    if ref is None and generated is None and not sources:
        raise DatasetNotFoundError(f"No dataset and no provenance for id {did}")
    files = registry.get_files([did])
    path = files[did].path if did in files else (generated[1] if generated else None)
    if generated is None:
        return Provenance(DatasetEntry(did, ref, path), None, derived_from=_entries(
            registry, [(s, None) for s in sources]))
    row, _ = generated
    execution = _execution(row)
    assert execution is not None
    edges = provenance_sql.execution_edges(registry, row["id"])
    used = _entries(registry, edges["used"])
    config_id = (execution.get("details") or {}).get("config_dataset_id")
    config = next((u for u in used if str(u.id) == config_id), None)
    used = [u for u in used if u is not config]
    by_id = {u.id: u for u in used}
    derived = [by_id.get(s) or _entries(registry, [(s, None)])[0] for s in sources]
    return Provenance(DatasetEntry(did, ref, path), execution, used=used, derived_from=derived,
                      outputs=_entries(registry, edges["generated"]), config=config)


@dataclass(frozen=True)
class LineageEntry:
    """One ancestor or descendant: the dataset, how many derivation steps away, who made it."""

    dataset: DatasetEntry
    depth: int
    task_label: str | None
    execution_id: uuid.UUID | None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form."""
        return {**self.dataset.to_dict(), "depth": self.depth, "task_label": self.task_label,
                "execution_id": str(self.execution_id) if self.execution_id else None}


def lineage(butler: Any, ref_or_id: DatasetRef | uuid.UUID | str, *, direction: str = "up",
            max_depth: int = 1000) -> list[LineageEntry]:
    """Ancestors (``direction="up"``) or descendants (``"down"``) of a dataset, nearest first.

    Follows wasDerivedFrom, so a coadd's ancestors are the warps it reported using
    (not those it rejected), their calexps, and so on back to the raws.

    Examples
    --------
    >>> for entry in lineage(butler, coadd_ref, direction="up"):   # doctest: +SKIP
    ...     print(entry.depth, entry.dataset.ref)
    """
    registry = registry_of(butler)
    did = as_dataset_id(ref_or_id)
    nodes = provenance_sql.lineage(registry, did, direction=direction, max_depth=max_depth)
    ids = [n for n, _ in nodes]
    refs = registry.get_datasets(ids)
    made = provenance_sql.generating_executions(registry, ids)
    files = registry.get_files(ids)
    out = []
    for node, depth in nodes:
        ex = made.get(node)
        path = files[node].path if node in files else (ex[1] if ex else None)
        out.append(LineageEntry(DatasetEntry(node, refs.get(node), path), depth,
                                ex[0]["task_label"] if ex else None, ex[0]["id"] if ex else None))
    return out


def execution_summary(butler: Any, *, run: str | None = None) -> list[tuple[str, str, int]]:
    """``(task_label, status, count)`` of executions, tasks in the order they first ran.

    The DMTN-059 report "how many executions of each step".
    """
    return provenance_sql.execution_counts(registry_of(butler), run=run)
