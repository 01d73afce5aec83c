from __future__ import annotations

import os
import time
import uuid
from dataclasses import dataclass, field

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


@dataclass(frozen=True, init=False)
class DatasetRef:
    """A reference to one dataset: id, type, data id and run.

    ``extra`` holds annotations that are not part of the identity (e.g. the planned
    file name in a quantum graph).
    """

    id: uuid.UUID
    dataset_type: DatasetType
    data_id: DataId
    run: str
    extra: dict = field(default_factory=dict, compare=False, hash=False, repr=False)

    def __init__(self, id: uuid.UUID, dataset_type: DatasetType, data_id: DataId, run: str,
                 extra: dict | None = None):
        # Queries build refs by the hundred thousand: filling __dict__ at once is several
        # times faster than the one object.__setattr__ per field of a frozen dataclass.
        self.__dict__.update(id=id, dataset_type=dataset_type, data_id=data_id, run=run,
                             extra={} if extra is None else extra)

    def __str__(self) -> str:
        return f"{self.dataset_type.name}@{{{self.data_id}}} [{self.run}] ({self.id})"


def new_id() -> uuid.UUID:
    """Return a new time-ordered UUIDv7 (RFC 9562; append-friendly in database indexes).

    48 bits of Unix milliseconds, then 74 random bits: ids made later sort later
    (to the millisecond), and two processes never need to coordinate. Output
    datasets (`new_dataset_id`), quanta and executions all take their ids from here.
    """
    ms = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")
    value = (ms & 0xFFFF_FFFF_FFFF) << 80 | 0x7 << 76 | (rand >> 68) << 64 | 0b10 << 62 | (rand & ((1 << 62) - 1))
    return uuid.UUID(int=value)


def new_dataset_id() -> uuid.UUID:
    """Return the id of a new output dataset: a `new_id` (ingested raws use `dataset_id_for_ingest`)."""
    return new_id()


def dataset_id_for_ingest(dataset_type: str, data_id: DataId, run: str) -> uuid.UUID:
    """Return the deterministic UUID5 of an ingested dataset, so re-ingest is idempotent."""
    return uuid.uuid5(_INGEST_NAMESPACE, f"{dataset_type}/{data_id.key()}/{run}")
