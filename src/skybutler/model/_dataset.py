from __future__ import annotations

import uuid
from dataclasses import dataclass, field

import uuid6

from ._data_id import DataId

# Namespace for deterministic ids of ingested files (a fixed, arbitrary UUID).
_INGEST_NAMESPACE = uuid.UUID("8a4b2c1e-5f0d-4e7a-9b3c-2d1e0f6a7b8c")


@dataclass(frozen=True)
class DatasetType:
    """A named kind of dataset: its dimensions and its storage class.

    Parameters
    ----------
    name
        E.g. ``"calexp"``. Letters, digits and underscores, starting with a letter.
    dimensions
        The dimensions of its data ids (closed over required dimensions by the universe).
    storage_class
        Short name of the storage class (``"image"``, ``"table"``, ...).
    is_calibration
        Whether datasets of this type may be certified in CALIBRATION collections.
    """

    name: str
    dimensions: tuple[str, ...]
    storage_class: str
    is_calibration: bool = False

    def __str__(self) -> str:
        return f"{self.name}({', '.join(self.dimensions)}) [{self.storage_class}]"


@dataclass(frozen=True)
class DatasetRef:
    """A reference to one dataset: id, type, data id and run."""

    id: uuid.UUID
    dataset_type: DatasetType
    data_id: DataId
    run: str
    extra: dict = field(default_factory=dict, compare=False, hash=False, repr=False)

    def __str__(self) -> str:
        return f"{self.dataset_type.name}@{{{self.data_id}}} [{self.run}] ({self.id})"


def new_dataset_id() -> uuid.UUID:
    """Return a new time-ordered UUIDv7 (append-friendly in database indexes)."""
    return uuid.UUID(bytes=uuid6.uuid7().bytes)


def dataset_id_for_ingest(dataset_type: str, data_id: DataId, run: str) -> uuid.UUID:
    """Return the deterministic UUID5 of an ingested dataset, so re-ingest is idempotent."""
    return uuid.uuid5(_INGEST_NAMESPACE, f"{dataset_type}/{data_id.key()}/{run}")
