"""`Butler.collections`: a butler's default search path and every collection operation.

One place for what users do with collections — register, chain, tag and untag, certify
and decertify, list and resolve — so that the command line and programs go through the
same calls, and a read-only butler refuses every change here (and again in the registry).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, overload

from .errors import CollectionError
from .model import CollectionType, DataId, DatasetRef

if TYPE_CHECKING:
    from .registry import Registry


class ButlerCollections(Sequence[str]):
    """The collections of one repository, seen through one butler.

    As a sequence it is the butler's default search path (``butler.collections[0]``,
    ``list(butler.collections)``); its methods act on the repository.

    Examples
    --------
    >>> butler.collections.register("u/me/tags", CollectionType.TAGGED)         # doctest: +SKIP
    >>> butler.collections.tag("u/me/tags", refs)                               # doctest: +SKIP
    >>> butler.collections.certify("HSC/calib", biases, "2026-03-01", "2026-04-01")  # doctest: +SKIP
    >>> butler.collections.set_chain("HSC/defaults", ["HSC/calib", "HSC/raw/all"])   # doctest: +SKIP
    >>> [c["name"] for c in butler.collections.query("HSC/*", types=[CollectionType.RUN])]  # doctest: +SKIP
    """

    def __init__(self, registry: Registry, defaults: Sequence[str], require_writeable: Callable[[], None]):
        self._registry = registry
        self._defaults = list(defaults)
        self._require_writeable = require_writeable  # the butler's: raises ReadOnlyError when read-only

    # -- the default search path ---------------------------------------------------------

    @property
    def defaults(self) -> list[str]:
        """The collections searched when a call names none (a copy)."""
        return list(self._defaults)

    @overload
    def __getitem__(self, index: int) -> str: ...

    @overload
    def __getitem__(self, index: slice) -> list[str]: ...

    def __getitem__(self, index: int | slice) -> str | list[str]:
        return self._defaults[index]

    def __len__(self) -> int:
        return len(self._defaults)

    def __iter__(self) -> Iterator[str]:
        return iter(self._defaults)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, ButlerCollections | list | tuple):
            return list(self) == list(other)
        return NotImplemented

    def __hash__(self) -> int:
        return hash(tuple(self._defaults))

    def __repr__(self) -> str:
        return f"ButlerCollections(defaults={self._defaults!r})"

    # -- reading -------------------------------------------------------------------------

    def query(self, pattern: str = "*", *, types: Iterable[CollectionType] | None = None) -> list[dict[str, Any]]:
        """Collections whose names match a glob ``pattern``: ``{name, type, doc, children}``, by name."""
        found = self._registry.collections(types=types)
        return [c for c in found if fnmatch.fnmatchcase(c["name"], pattern)]

    def runs(self, pattern: str = "*") -> list[str]:
        """Names of the RUN collections matching ``pattern`` (every run by default)."""
        return [c["name"] for c in self.query(pattern, types=[CollectionType.RUN])]

    def resolve(self, names: Sequence[str] | None = None) -> list[str]:
        """The non-chained collections searched for ``names`` (default: the defaults), in order."""
        return self._registry.resolve_collections(list(names) if names is not None else self._defaults)

    def type_of(self, name: str) -> CollectionType:
        return self._registry.collection_type(name)

    def certifications(self, collection: str, dataset_type: str | None = None) -> list[dict[str, Any]]:
        """Every certification of a CALIBRATION collection (``dataset_id, dataset_type, data_id_key, begin, end``)."""
        return self._registry.certifications(collection, dataset_type)

    # -- changing ------------------------------------------------------------------------

    def register(self, name: str, type: CollectionType | str = CollectionType.RUN, *, doc: str | None = None) -> bool:
        """Register a collection; an existing one of the same type is left alone (returns False).

        ``type`` is a `CollectionType` or its name (``"CALIBRATION"``, any case).
        """
        self._require_writeable()
        return self._registry.register_collection(name, _collection_type(type), doc=doc)

    def set_chain(self, name: str, children: Sequence[str]) -> None:
        """Define (or redefine) a CHAINED collection; a cycle through nested chains is refused."""
        self._require_writeable()
        self._registry.set_chain(name, list(children))

    def tag(self, collection: str, refs: Iterable[DatasetRef]) -> None:
        """Add datasets to a TAGGED collection (created if missing), replacing one of the same type and data id."""
        self._require_writeable()
        self._registry.register_collection(collection, CollectionType.TAGGED)
        self._registry.associate(collection, refs)

    def untag(self, collection: str, refs: Iterable[DatasetRef]) -> int:
        """Remove datasets from a TAGGED collection; returns how many were there."""
        self._require_writeable()
        return self._registry.disassociate(collection, refs)

    def certify(self, collection: str, refs: Iterable[DatasetRef], begin: Any, end: Any) -> None:
        """Certify calibrations over ``[begin, end)`` in a CALIBRATION collection (created if missing)."""
        self._require_writeable()
        self._registry.register_collection(collection, CollectionType.CALIBRATION)
        self._registry.certify(collection, refs, begin, end)

    def decertify(self, collection: str, dataset_type: str, begin: Any = None, end: Any = None, *,
                  data_ids: Iterable[DataId] | None = None, refs: Iterable[DatasetRef] | None = None) -> int:
        """Remove certifications over ``[begin, end)`` (unbounded by default), splitting ranges that reach outside."""
        self._require_writeable()
        return self._registry.decertify(collection, dataset_type, begin, end, data_ids=data_ids, refs=refs)

    def remove(self, name: str) -> None:
        """Remove a TAGGED, CHAINED or CALIBRATION collection (not its datasets); runs go with `remove_runs`."""
        self._require_writeable()
        self._registry.remove_collection(name)


def _collection_type(value: CollectionType | str) -> CollectionType:
    """``value`` as a `CollectionType`; a name of one in any case is accepted, anything else is a `CollectionError`."""
    if isinstance(value, CollectionType):
        return value
    try:
        return CollectionType(str(value).upper())
    except ValueError:
        raise CollectionError(f"Unknown collection type {value!r}; one of "
                              f"{', '.join(t.value for t in CollectionType)}") from None
