from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

DataIdValue = int | str


class DataId(Mapping[str, DataIdValue]):
    """An immutable, hashable mapping from dimension name to value.

    Keys are kept in the order given by the universe (required dimensions
    first) so that two data ids with the same content compare and hash equal
    and print the same way.

    Examples
    --------
    >>> DataId({"instrument": "HSC", "visit": 903334, "detector": 16})
    DataId(instrument='HSC', visit=903334, detector=16)
    """

    __slots__ = ("_items", "_hash", "_implied", "_key")

    def __init__(self, values: Mapping[str, DataIdValue] | None = None,
                 *, implied: Mapping[str, DataIdValue] | None = None, **kwargs: DataIdValue):
        merged = dict(values or {})
        merged.update(kwargs)
        self._items: dict[str, DataIdValue] = merged
        self._hash: int | None = None
        self._key: str | None = None
        # Values of implied dimensions (band for a visit), known once the data id
        # was expanded against dimension records; they are not part of its identity.
        self._implied: dict[str, DataIdValue] = dict(implied or {})

    def __getitem__(self, key: str) -> DataIdValue:
        try:
            return self._items[key]
        except KeyError:
            if key in self._implied:
                return self._implied[key]
            raise

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: object) -> bool:
        return key in self._items

    def __hash__(self) -> int:
        if self._hash is None:
            self._hash = hash(tuple(sorted(self._items.items())))
        return self._hash

    def __eq__(self, other: object) -> bool:
        if isinstance(other, DataId):
            return self._items == other._items
        if isinstance(other, Mapping):
            return self._items == dict(other)
        return NotImplemented

    def __repr__(self) -> str:
        inner = ", ".join(f"{k}={v!r}" for k, v in self._items.items())
        return f"DataId({inner})"

    def __str__(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self._items.items())

    @property
    def implied(self) -> Mapping[str, DataIdValue]:
        """Values of implied dimensions (e.g. ``band`` for a visit), if expanded."""
        return self._implied

    @property
    def required_items(self) -> Mapping[str, DataIdValue]:
        """The required values as a plain mapping (no copy; do not modify)."""
        return self._items

    @property
    def full(self) -> dict[str, DataIdValue]:
        """Required and implied values together."""
        return {**self._implied, **self._items}

    def with_implied(self, implied: Mapping[str, DataIdValue]) -> DataId:
        """Return a copy that also knows the given implied values."""
        copy = DataId(self._items, implied={**self._implied, **implied})
        copy._key, copy._hash = self._key, self._hash  # same identity, so the same key and hash
        return copy

    def subset(self, keys: Any) -> DataId:
        """Return the data id restricted to ``keys`` (looked up in required and implied values)."""
        full = self.full
        return DataId({k: full[k] for k in keys})

    def key(self) -> str:
        """Canonical text form, used as the registry's uniqueness key."""
        if self._key is None:
            self._key = "|".join(f"{k}={v}" for k, v in sorted(self._items.items()))
        return self._key
