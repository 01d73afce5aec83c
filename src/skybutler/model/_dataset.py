from __future__ import annotations

import hashlib
import os
import time
import uuid
from collections import deque
from collections.abc import Sequence
from dataclasses import FrozenInstanceError, dataclass, field
from itertools import repeat
from typing import Any

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


@dataclass(frozen=True, init=False, slots=True, weakref_slot=True)
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
        # The slots' own setters: a frozen dataclass's object.__setattr__ per field costs
        # several times more, and queries build refs by the hundred thousand.
        _SET_ID(self, id)
        _SET_TYPE(self, dataset_type)
        _SET_DATA_ID(self, data_id)
        _SET_RUN(self, run)
        if extra is not None:  # else made when first asked for (`_extra`)
            _SET_EXTRA(self, extra)

    @classmethod
    def from_columns(cls, dataset_type: DatasetType, ids: Sequence[uuid.UUID], data_ids: Sequence[DataId],
                     runs: Sequence[str]) -> list[DatasetRef]:
        """Refs of one dataset type from columns of ids, data ids and run names (as a query reads them).

        Equal to ``[DatasetRef(i, dataset_type, d, r) for i, d, r in zip(ids, data_ids, runs)]``,
        several times faster: each ref is filled without a Python-level call.

        Raises
        ------
        ValueError
            If the columns are not all of the same length.
        """
        n = len(ids)
        if len(data_ids) != n or len(runs) != n:
            raise ValueError(f"Ref columns of different lengths: {n} ids, {len(data_ids)} data ids, {len(runs)} runs")
        refs = list(map(object.__new__, repeat(cls, n)))
        # deque(map(setter, ...), 0) runs each slot's C setter over the list without a
        # Python frame per ref.
        deque(map(_SET_ID, refs, ids), 0)
        deque(map(_SET_TYPE, refs, repeat(dataset_type)), 0)
        deque(map(_SET_DATA_ID, refs, data_ids), 0)
        deque(map(_SET_RUN, refs, runs), 0)
        return refs

    def __str__(self) -> str:
        return f"{self.dataset_type.name}@{{{self.data_id}}} [{self.run}] ({self.id})"


def _frozen_setattr(self: DatasetRef, name: str, value: Any) -> None:
    raise FrozenInstanceError(f"cannot assign to field {name!r}")


def _frozen_delattr(self: DatasetRef, name: str) -> None:
    raise FrozenInstanceError(f"cannot delete field {name!r}")


# The frozen dataclass's own guards reach the class as it was before ``slots=True``
# remade it, and fail with a TypeError for a name that is not a field.
DatasetRef.__setattr__ = _frozen_setattr  # type: ignore[method-assign,assignment]
DatasetRef.__delattr__ = _frozen_delattr  # type: ignore[method-assign,assignment]

_SET_ID = vars(DatasetRef)["id"].__set__
_SET_TYPE = vars(DatasetRef)["dataset_type"].__set__
_SET_DATA_ID = vars(DatasetRef)["data_id"].__set__
_SET_RUN = vars(DatasetRef)["run"].__set__
_EXTRA_SLOT = vars(DatasetRef)["extra"]
_SET_EXTRA = _EXTRA_SLOT.__set__


def _extra(self: DatasetRef) -> dict:
    # Most refs (a query's) never have annotations: their dict is made when first asked for,
    # not with the ref (a dict per ref was a fifth of the cost of making one).
    try:
        return _EXTRA_SLOT.__get__(self, DatasetRef)  # type: ignore[no-any-return]
    except AttributeError:
        made: dict = {}
        _SET_EXTRA(self, made)
        return made


# The slot stays where it is; reading it goes through `_extra`. Setting it is reserved to
# `object.__setattr__` (unpickling), as for the other fields: `ref.extra = ...` is refused.
DatasetRef.extra = property(  # type: ignore[assignment,method-assign,misc]
    _extra, _SET_EXTRA, doc="Annotations that are not part of the identity.")

_UUID_INT = vars(uuid.UUID)["int"].__set__
_UUID_SAFE = vars(uuid.UUID)["is_safe"].__set__


def _uuids(values: Sequence[int]) -> list[uuid.UUID]:
    """`uuid.UUID` objects of valid 128-bit ``values``, set as `uuid.UUID.__setstate__` sets them.

    No Python-level call per id and none of ``UUID()``'s checks: the callers build the
    values valid (32 hex digits read, or version and variant bits set).
    """
    ids = list(map(object.__new__, repeat(uuid.UUID, len(values))))
    deque(map(_UUID_INT, ids, values), 0)
    deque(map(_UUID_SAFE, ids, repeat(uuid.SafeUUID.unknown, len(values))), 0)
    return ids


def uuids_from_hex(texts: Sequence[str]) -> list[uuid.UUID]:
    """`uuid.UUID` objects from 32-digit hex texts (as SQLite stores ids), without ``UUID()``'s parsing.

    Equal to ``[uuid.UUID(t) for t in texts]`` for such texts, several times faster: the
    values are set as `uuid.UUID.__setstate__` sets them, with no Python-level call per id.

    Raises
    ------
    ValueError
        If a text is not 32 hex digits.
    """
    n = len(texts)
    if n and set(map(len, texts)) != {32}:
        raise ValueError("Dataset ids must be 32 hex digits")
    values = list(map(int, texts, repeat(16, n)))
    if n and min(values) < 0:
        raise ValueError("Dataset ids must be 32 hex digits")
    return _uuids(values)


def new_id() -> uuid.UUID:
    """Return a new time-ordered UUIDv7 (RFC 9562; append-friendly in database indexes).

    48 bits of Unix milliseconds, then 74 random bits: ids made later sort later
    (to the millisecond), and two processes never need to coordinate. Output
    datasets (`new_dataset_id`), quanta and executions all take their ids from here
    (`new_ids` makes many at once).
    """
    ms = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")
    value = (ms & 0xFFFF_FFFF_FFFF) << 80 | 0x7 << 76 | (rand >> 68) << 64 | 0b10 << 62 | (rand & ((1 << 62) - 1))
    # Set as `new_ids` sets them: the value is built valid, so UUID()'s checks are skipped.
    made: uuid.UUID = object.__new__(uuid.UUID)
    _UUID_INT(made, value)
    _UUID_SAFE(made, uuid.SafeUUID.unknown)
    return made


def new_dataset_id() -> uuid.UUID:
    """Return the id of a new output dataset: a `new_id` (ingested raws use `dataset_id_for_ingest`)."""
    return new_id()


# The bits new_ids draws at random (rand_a: 12 bits, rand_b: 62 bits); the rest are the
# timestamp, the version (7) and the variant (0b10).
_RANDOM_BITS = (0xFFF << 64) | ((1 << 62) - 1)
_V7_BITS = 0x7 << 76 | 0b10 << 62


def new_ids(n: int) -> list[uuid.UUID]:
    """Return ``n`` new UUIDv7s, in increasing order, as `new_id` makes them, from one ``os.urandom`` call.

    Same layout as `new_id` (48 bits of Unix milliseconds, version 7, 74 random bits,
    RFC 4122 variant), all with the time of the call: they sort after every id made
    before the call and before every id made after it (to the millisecond), and among
    themselves in list order. Several times cheaper per id than `new_id` for a few
    hundred at a time.

    Examples
    --------
    >>> ids = new_ids(3)
    >>> [i.version for i in ids], ids == sorted(ids)
    ([7, 7, 7], True)
    """
    if n <= 0:
        return []
    head = (time.time_ns() // 1_000_000 & 0xFFFF_FFFF_FFFF) << 80 | _V7_BITS
    raw = os.urandom(16 * n)
    values = [int.from_bytes(raw[i:i + 16]) & _RANDOM_BITS | head for i in range(0, 16 * n, 16)]
    values.sort()
    return _uuids(values)


def new_dataset_ids(n: int) -> list[uuid.UUID]:
    """Return the ids of ``n`` new output datasets: `new_ids` (see `new_dataset_id`)."""
    return new_ids(n)


def dataset_id_for_ingest(dataset_type: str, data_id: DataId, run: str) -> uuid.UUID:
    """Return the deterministic UUID5 of an ingested dataset, so re-ingest is idempotent."""
    return uuid.uuid5(_INGEST_NAMESPACE, f"{dataset_type}/{data_id.key()}/{run}")


# The bits of a UUID's integer that say its variant (RFC 4122) and version (5).
_V5_CLEAR = ~((0xC000 << 48) | (0xF000 << 64))
_V5_SET = (0x8000 << 48) | (5 << 76)


def dataset_ids_for_ingest(dataset_types: Sequence[str], data_ids: Sequence[DataId], run: str) -> list[uuid.UUID]:
    """`dataset_id_for_ingest` of each (dataset type, data id) in ``run``: equal ids, made in bulk.

    The namespace is hashed once and each id is filled as `uuids_from_hex` fills them,
    without ``UUID()``'s argument checks (a third of the cost of an id).
    """
    base = hashlib.sha1(_INGEST_NAMESPACE.bytes, usedforsecurity=False)
    values = []
    for name, data_id in zip(dataset_types, data_ids, strict=True):
        h = base.copy()
        h.update(f"{name}/{data_id.key()}/{run}".encode())
        values.append((int.from_bytes(h.digest()[:16], "big") & _V5_CLEAR) | _V5_SET)
    return _uuids(values)
