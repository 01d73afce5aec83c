"""What moves between repositories: the content of a repository (or part of one), as a stream.

Every way of moving data (`transfer_from` between two live repositories, `export` to a
dump and `import` of one, `import-daf-butler` from the field's reference) is one
*source* of content read by one *writer*:

- a `ContentSource` yields, in this order, the dimension universe, dimension records
  (elements in dependency order), dataset types, collections, datasets with their file
  records and where their bytes can be read, TAGGED memberships, certifications and
  provenance. Every stream of unbounded size comes in batches, so memory stays flat in
  the number of datasets. Sources: a live repository (`skybutler.transfer.source`), a
  dump (`skybutler.transfer.dump`), a daf_butler export or registry
  (`skybutler.transfer.daf_butler`).
- `skybutler.transfer.importer.import_content` writes any source into a `Butler`,
  placing files first and rows after, in bounded transactions: idempotent, skipping what
  the target holds identically, refusing what conflicts without overwriting it.
- `skybutler.transfer.dump.write_dump` writes any source into a dump.

Values are as the registry's Python API gives and takes them: dimension records as the
dicts of `Registry.fetch_dimension_records` (regions, timespans as there), datasets as
`DatasetRef` (data ids with their required values) plus `FileRecord`, executions as
rows of the ``execution`` table with ``run`` (a name) instead of ``run_id``.
"""

from __future__ import annotations

import datetime
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from .. import _modes
from ..dimensions import DimensionUniverse
from ..model import CollectionType, DatasetRef, DatasetType
from ..registry import DatasetOrigin, FileRecord

__all__ = [
    "TRANSFER_CHOICES",
    "Certification",
    "CollectionContent",
    "ContentSource",
    "DatasetContent",
    "ProvenanceBatch",
    "TransferReport",
]

TRANSFER_CHOICES = _modes.TRANSFER_CHOICES
"""How files travel between repositories.

``copy``/``move``/``hardlink``/``symlink``: the file is placed in the target's datastore
at the same relative path it had in the source. ``direct``: the target records the
source file's full URL and shares it in place (nothing is copied; the target never
writes or removes it). ``none``: rows only, at the source's relative path; another
system moves the files (`verify` reports them lost until they arrive).
"""


@dataclass(frozen=True)
class CollectionContent:
    """One collection as it moves: name, type, doc, and for a CHAINED one its children in order.

    TAGGED members and certifications are streams of their own (`ContentSource.tags`,
    `ContentSource.certifications`): they may be large.
    """

    name: str
    type: CollectionType
    doc: str | None = None
    children: tuple[str, ...] = ()


@dataclass(frozen=True)
class DatasetContent:
    """One dataset as it moves: its ref, its file record, and where its bytes can be read.

    Attributes
    ----------
    ref
        Id, dataset type, data id and run (the run is a RUN collection of the source).
    file
        Its file record in the source (path relative to the source's datastore root, or a
        full URL for a file the source holds in place); None when it has no file.
    url
        An fsspec URL the writer can read the bytes from (``file:///…``, ``s3://…``), or
        None when the bytes are not available (e.g. a dump made without files).
    storage_options
        fsspec options to open ``url`` with (S3 endpoint, keys).
    origin
        Where an ingested dataset's file came from (path, plugin, header metadata), as the
        source recorded it; None for a dataset that was put, or a source that has none.
    """

    ref: DatasetRef
    file: FileRecord | None
    url: str | None = None
    storage_options: Mapping[str, Any] = field(default_factory=dict)
    origin: DatasetOrigin | None = None


@dataclass(frozen=True)
class Certification:
    """A dataset certified in a CALIBRATION collection over ``[begin, end)`` (UTC)."""

    collection: str
    dataset_id: uuid.UUID
    begin: datetime.datetime
    end: datetime.datetime


@dataclass
class ProvenanceBatch:
    """Executions with their edges, whole (an execution is never split across batches).

    Attributes
    ----------
    executions
        Rows of the ``execution`` table (``id``, ``task_label``, ``quantum_id``,
        ``data_id_key``, ``status``, ``reason``, ``host``, ``start_time``, ``end_time``,
        ``cpu_time``, ``peak_memory``, ``software``, ``config_hash``, ``details``) with
        ``run`` (a run name, or None) in place of ``run_id``.
    used, generated
        ``(execution_id, dataset_id, path)``.
    derived
        ``(dataset_id, source_id)``.
    """

    executions: list[dict[str, Any]] = field(default_factory=list)
    used: list[tuple[uuid.UUID, uuid.UUID, str | None]] = field(default_factory=list)
    generated: list[tuple[uuid.UUID, uuid.UUID, str | None]] = field(default_factory=list)
    derived: list[tuple[uuid.UUID, uuid.UUID]] = field(default_factory=list)


class ContentSource(Protocol):
    """Anything content can be read from (a repository, a dump, a daf_butler export).

    Every method may be called once, in the order listed; streams yield batches (lists)
    of a size the source picks (a few thousand items).
    """

    @property
    def universe(self) -> DimensionUniverse:
        """The dimension universe the content is expressed in."""
        ...

    def dimension_records(self) -> Iterator[tuple[str, list[dict[str, Any]]]]:
        """``(element, records)`` batches, elements in dependency order (instrument before detector)."""
        ...

    def dataset_types(self) -> list[DatasetType]:
        """Every dataset type the datasets use (and any others the source chose to include)."""
        ...

    def collections(self) -> list[CollectionContent]:
        """Collections, each after the children it chains (RUN collections of every dataset included)."""
        ...

    def datasets(self) -> Iterator[list[DatasetContent]]:
        """The datasets, in batches."""
        ...

    def tags(self) -> Iterator[list[tuple[str, uuid.UUID]]]:
        """``(tagged_collection, dataset_id)`` batches: TAGGED memberships of included datasets."""
        ...

    def certifications(self) -> Iterator[list[Certification]]:
        """Certifications of included datasets, in batches."""
        ...

    def provenance(self) -> Iterator[ProvenanceBatch]:
        """Executions of the included runs with their edges, in batches (empty when not asked for)."""
        ...


@dataclass
class TransferReport:
    """What a transfer, import or export did (printed by the CLI, asserted by the tests).

    ``conflicts`` lists datasets refused because the target holds another dataset for the
    same type, data id and run (or another content under the same id): one line each,
    naming type, data id, run and both ids. A conflict never overwrites anything; the
    writer raises `skybutler.errors.TransferConflictError` with these lines after
    writing everything else, unless asked to only report.
    """

    datasets_added: int = 0
    datasets_skipped: int = 0
    files_copied: int = 0
    files_skipped: int = 0
    bytes_copied: int = 0
    executions_added: int = 0
    executions_skipped: int = 0
    dimension_records_added: int = 0
    collections_added: int = 0
    conflicts: list[str] = field(default_factory=list)
    id_map: dict[uuid.UUID, uuid.UUID] = field(default_factory=dict)
    """With ``new_ids=True``: source id -> target id of every dataset and execution."""
