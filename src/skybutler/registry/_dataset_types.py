"""Dataset types: registration (race-free) and lookups by name or by id."""

from __future__ import annotations

import sqlalchemy as sa

from ..dimensions import DimensionUniverse
from ..errors import DatasetTypeError
from ..model import DatasetType, storage_class
from ._database import Database
from .schema import Tables

_NAME_OK = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_")


class DatasetTypeRecords:
    """The registered dataset types, each with its id in the ``dataset_type`` table.

    A dataset type is never changed once registered, so those read are cached (all
    forgotten when a write transaction rolls back: `forget_cached`).
    """

    def __init__(self, db: Database, tables: Tables, universe: DimensionUniverse):
        self.db = db
        self.tables = tables
        self.universe = universe
        self._by_name: dict[str, tuple[int, DatasetType]] = {}
        self._by_id: dict[int, DatasetType] = {}

    def register(self, dataset_type: DatasetType) -> bool:
        """Register a dataset type; identical re-registration is a no-op (returns False)."""
        name = dataset_type.name
        if not name or not name[0].isalpha() or not set(name) <= _NAME_OK:
            raise DatasetTypeError(
                f"Dataset type name {name!r} must start with a letter and hold only letters, digits and '_'"
            )
        if len(name) > 128:  # the width of the name column
            raise DatasetTypeError(f"Dataset type name {name[:40]!r}... is {len(name)} characters long; at most 128")
        storage_class(dataset_type.storage_class)
        dims = self.universe.closure(dataset_type.dimensions)
        normalised = DatasetType(name, dims, dataset_type.storage_class, dataset_type.is_calibration)
        try:
            existing = self.get(name)
        except DatasetTypeError:
            existing = None
        if existing is not None:
            if existing != normalised:
                raise DatasetTypeError(
                    f"Dataset type {name!r} is already registered as {existing}; "
                    f"cannot register it again as {normalised}"
                )
            return False
        with self.db.transaction() as conn:
            inserted = conn.execute(self.db.insert_new(self.tables.dataset_type).values(
                name=name, dimensions=",".join(dims), storage_class=normalised.storage_class,
                is_calibration=normalised.is_calibration)).rowcount == 1
        if not inserted:  # registered by another process meanwhile: it must be the same
            self.reload()
            existing = self.get(name)
            if existing != normalised:
                raise DatasetTypeError(
                    f"Dataset type {name!r} is already registered as {existing}; "
                    f"cannot register it again as {normalised}"
                )
        return inserted

    def forget_cached(self) -> None:
        """Drop every cached dataset type: one a rolled-back transaction registered and read is not there.

        Kept, it would make registering it again a no-op and give its next put an id that
        another writer's dataset type may have taken meanwhile.
        """
        self._by_name.clear()
        self._by_id.clear()

    def reload(self) -> None:
        """Read every registered dataset type (those registered by other processes too)."""
        t = self.tables.dataset_type
        with self.db.read() as conn:
            for row in conn.execute(sa.select(t)).mappings():
                dt = DatasetType(row["name"], tuple(row["dimensions"].split(",")) if row["dimensions"] else (),
                                 row["storage_class"], bool(row["is_calibration"]))
                self._by_name[dt.name] = (row["id"], dt)
                self._by_id[row["id"]] = dt

    def find(self, name: str) -> tuple[int, DatasetType]:
        """The id and the dataset type of that name (`DatasetTypeError`, naming the known ones, if none)."""
        if name not in self._by_name:
            self.reload()
        try:
            return self._by_name[name]
        except KeyError:
            known = ", ".join(sorted(self._by_name)) or "none registered yet"
            raise DatasetTypeError(f"Unknown dataset type {name!r}; known: {known}") from None

    def get(self, name: str) -> DatasetType:
        """The registered dataset type of that name (DatasetTypeError if none)."""
        return self.find(name)[1]

    def by_id(self, type_id: int) -> DatasetType:
        """The dataset type of that id (a ``dataset_type_id`` column value)."""
        dt = self._by_id.get(type_id)
        if dt is None:
            self.reload()
            dt = self._by_id[type_id]
        return dt

    def all(self) -> list[DatasetType]:
        """Every registered dataset type, sorted by name."""
        self.reload()
        return sorted((dt for _, dt in self._by_name.values()), key=lambda d: d.name)
