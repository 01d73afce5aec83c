from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator, Mapping, Sequence
from itertools import repeat
from types import MappingProxyType
from typing import Any

DataIdValue = int | str

_EMPTY: Mapping[str, DataIdValue] = MappingProxyType({})

_INDEXES: dict[tuple[str, ...], dict[str, int]] = {}
"""Position of each key, one dict per tuple of keys, shared by every data id with those keys."""

_MAX_INDEXES = 4096
"""Tuples of keys remembered at most (a program makes a few dozen; this only bounds a pathological one)."""


def _index_of(keys: tuple[str, ...]) -> dict[str, int]:
    index = _INDEXES.get(keys)
    if index is None:
        index = {k: i for i, k in enumerate(keys)}
        if len(index) != len(keys):
            raise ValueError(f"Repeated key in data id keys {keys}")
        if len(_INDEXES) < _MAX_INDEXES:
            _INDEXES[keys] = index
    return index


class DataId(Mapping[str, DataIdValue]):
    """An immutable, hashable mapping from dimension name to value.

    Two data ids with the same content compare and hash equal, whatever the order
    their keys were given in; they iterate and print in that order.

    Examples
    --------
    >>> DataId({"instrument": "HSC", "visit": 903334, "detector": 16})
    DataId(instrument='HSC', visit=903334, detector=16)
    """

    # A data id is its values and the position of each key in them, shared by all data
    # ids with the same keys: queries make them by the hundred thousand (`from_rows`),
    # and a dict per data id cost more than the rest of a ref. ``_items``, ``_hash`` and
    # ``_key`` are caches, unset until first asked for; ``_implied_values`` too when there are
    # none (a query's data ids), read through ``_implied``.
    __slots__ = ("_index", "_values", "_implied_values", "_items", "_hash", "_key")

    def __init__(self, values: Mapping[str, DataIdValue] | None = None,
                 *, implied: Mapping[str, DataIdValue] | None = None, **kwargs: DataIdValue):
        merged = dict(values or {})
        merged.update(kwargs)
        self._index = _index_of(tuple(merged))
        self._values: tuple[DataIdValue, ...] = tuple(merged.values())
        self._items: dict[str, DataIdValue] = merged
        # Values of implied dimensions (band for a visit), known once the data id
        # was expanded against dimension records; they are not part of its identity.
        if implied:
            self._implied_values: Mapping[str, DataIdValue] = dict(implied)

    @property
    def _implied(self) -> Mapping[str, DataIdValue]:
        try:
            return self._implied_values
        except AttributeError:
            return _EMPTY

    def layout(self) -> tuple[Mapping[str, int], tuple[DataIdValue, ...], Mapping[str, DataIdValue]]:
        """The key index (key -> position), the values in that order, and the implied values.

        The index is one object shared by every data id with the same keys in the same order,
        so code that handles many data ids (file namers) can compile one plan per index
        (``id(index)``) and read values by position.
        """
        return self._index, self._values, self._implied

    @classmethod
    def from_rows(cls, keys: Sequence[str], rows: Iterable[Sequence[DataIdValue]]) -> list[DataId]:
        """Many data ids with the same keys, one per row of values (in the order of ``keys``).

        Equal to ``[DataId(dict(zip(keys, row))) for row in rows]``, several times faster:
        the keys are shared, and each data id is filled without a Python-level call.

        Examples
        --------
        >>> DataId.from_rows(("instrument", "detector"), [("HSC", 1), ("HSC", 2)])
        [DataId(instrument='HSC', detector=1), DataId(instrument='HSC', detector=2)]
        """
        values: list[Any] = rows if isinstance(rows, list) else list(rows)
        if values and set(map(type, values)) != {tuple}:  # database rows, lists: made tuples once
            values = list(map(tuple, values))
        index = _index_of(tuple(keys))
        if values and set(map(len, values)) != {len(index)}:
            raise ValueError(f"Data id values of another length than their keys {tuple(keys)}")
        return _made(cls, index, values)

    def __getitem__(self, key: str) -> DataIdValue:
        try:
            return self._values[self._index[key]]
        except KeyError:
            if key in self._implied:
                return self._implied[key]
            raise

    def __iter__(self) -> Iterator[str]:
        return iter(self._index)

    def __len__(self) -> int:
        return len(self._values)

    def __contains__(self, key: object) -> bool:
        return key in self._index

    def __hash__(self) -> int:
        try:
            return self._hash
        except AttributeError:
            self._hash: int = hash(tuple(sorted(zip(self._index, self._values, strict=True))))
            return self._hash

    def __eq__(self, other: object) -> bool:
        if isinstance(other, DataId):
            if self._index is other._index:
                return self._values == other._values
            return self.required_items == other.required_items
        if isinstance(other, Mapping):
            return self.required_items == dict(other)
        return NotImplemented

    def __repr__(self) -> str:
        inner = ", ".join(f"{k}={v!r}" for k, v in zip(self._index, self._values, strict=True))
        return f"DataId({inner})"

    def __str__(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in zip(self._index, self._values, strict=True))

    def __getstate__(self) -> tuple[tuple[str, ...], tuple[DataIdValue, ...], dict[str, DataIdValue]]:
        # Keys, values and implied values only: a cached hash would be wrong in another
        # process (str hashes are salted per process).
        return tuple(self._index), self._values, dict(self._implied)

    def __setstate__(self, state: tuple[tuple[str, ...], tuple[DataIdValue, ...], dict[str, DataIdValue]]) -> None:
        keys, values, implied = state
        self._index, self._values = _index_of(tuple(keys)), tuple(values)
        if implied:
            self._implied_values = dict(implied)

    @property
    def implied(self) -> Mapping[str, DataIdValue]:
        """Values of implied dimensions (e.g. ``band`` for a visit), if expanded."""
        return self._implied

    @property
    def required_items(self) -> Mapping[str, DataIdValue]:
        """The required values as a plain mapping (no copy; do not modify)."""
        try:
            return self._items
        except AttributeError:
            self._items = dict(zip(self._index, self._values, strict=True))
            return self._items

    @property
    def full(self) -> dict[str, DataIdValue]:
        """Required and implied values together."""
        return {**self._implied, **self.required_items}

    def with_implied(self, implied: Mapping[str, DataIdValue]) -> DataId:
        """Return a copy that also knows the given implied values."""
        copy: DataId = object.__new__(DataId)
        copy._index, copy._values = self._index, self._values
        copy._implied_values = {**self._implied, **implied}
        for cache in ("_items", "_hash", "_key"):  # same identity, so the same key and hash
            if hasattr(self, cache):
                object.__setattr__(copy, cache, getattr(self, cache))
        return copy

    def subset(self, keys: Any) -> DataId:
        """Return the data id restricted to ``keys`` (looked up in required and implied values)."""
        full = self.full
        return DataId({k: full[k] for k in keys})

    def key(self) -> str:
        """Canonical text form, used as the registry's uniqueness key."""
        try:
            return self._key
        except AttributeError:
            self._key: str = "|".join(f"{k}={v}" for k, v in sorted(zip(self._index, self._values, strict=True)))
            return self._key


def data_ids_of_tuples(keys: Sequence[str], values: list[tuple[DataIdValue, ...]]) -> list[DataId]:
    """`DataId.from_rows` for values already checked: one tuple per data id, each as long as ``keys``.

    For the query results, whose rows the database gives in that shape: the checks of
    `DataId.from_rows` (a type and a length per row) are a fifth of its cost there.
    """
    return _made(DataId, _index_of(tuple(keys)), values)


def _made(cls: type[DataId], index: dict[str, int], values: list[tuple[DataIdValue, ...]]) -> list[DataId]:
    data_ids = list(map(object.__new__, repeat(cls, len(values))))
    # deque(map(setattr, ...), 0) sets each slot over the list without a Python frame per
    # data id (``setattr`` takes its arguments without a tuple: cheaper than the slot's
    # own ``__set__``). No implied values: that slot is left unset (`DataId._implied`).
    deque(map(setattr, data_ids, repeat("_index"), repeat(index)), 0)
    deque(map(setattr, data_ids, repeat("_values"), values), 0)
    return data_ids
