"""From daf_butler's model to skybutler's: dimension records, regions, times, dataset types, files.

Both daf_butler sources (an export file, a registry database) read daf_butler's own
values and hand them to one `DafMapping`, so the two mean the same thing. Nothing here
imports daf_butler or lsst.sphgeom: regions are decoded from sphgeom's byte encoding,
times from TAI (ISO text or nanoseconds since 1970-01-01 TAI) with ERFA's leap seconds.
"""

from __future__ import annotations

import base64
import datetime
import functools
import math
import struct
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

from ..dimensions import DimensionUniverse
from ..errors import DimensionError, StorageClassError, TransferError
from ..model import STORAGE_CLASSES, CollectionType, DataId, DatasetRef, DatasetType
from ..registry import FileRecord
from .content import Certification, DatasetContent

STORAGE_CLASS_MAP: dict[str, str] = {
    "StructuredDataDict": "dict",
    "TaskMetadata": "dict",
    "PropertySet": "dict",
    "PropertyList": "dict",
    "ArrowAstropy": "table",
    "ArrowTable": "table",
    "ArrowNumpy": "table",
    "ArrowNumpyDict": "table",
    "DataFrame": "table",
    "AstropyTable": "table",
    "AstropyQTable": "table",
    "Image": "image",
    "ImageF": "image",
    "ImageI": "image",
    "ImageU": "image",
    "DecoratedImageU": "image",
    "MaskedImageF": "image",
    "Exposure": "image",
    "ExposureF": "image",
    "ExposureI": "image",
    "NumpyArray": "array",
}
"""daf_butler storage class -> skybutler storage class, for those with a counterpart.

Others are refused by name unless the caller maps them (``storage_class_map``,
``--storage-class-map``).
"""

FORMATS_BY_EXTENSION: dict[str, str] = {
    ".yaml": "yaml", ".yml": "yaml", ".json": "json", ".parq": "parquet", ".parquet": "parquet",
    ".pq": "parquet", ".fits": "fits", ".fit": "fits", ".fz": "fits", ".npy": "npy",
    ".pickle": "pickle", ".pkl": "pickle",
}
"""File name extension of a daf_butler file -> skybutler format."""

DAF_IMPLIES: dict[str, tuple[str, ...]] = {
    "physical_filter": ("band",),
    "exposure": ("physical_filter", "group", "day_obs"),
    "visit": ("physical_filter", "day_obs"),
}
"""What daf_butler's default universe (namespace daf_butler, version 8) implies: a dataset
type's dimensions in an export list implied ones too, and only required ones identify it."""

DAF_COLLECTION_TYPES = {1: CollectionType.RUN, 2: CollectionType.TAGGED, 3: CollectionType.CHAINED,
                        4: CollectionType.CALIBRATION}
"""daf_butler's ``CollectionType`` values as its registry stores them."""

UNBOUNDED_BEGIN = datetime.datetime(1, 1, 1)
UNBOUNDED_END = datetime.datetime(9999, 12, 31)
"""What a validity range open at one end (daf_butler's None) becomes: skybutler stores both ends."""

# daf_butler stores times as TAI nanoseconds since 1970-01-01 TAI; these bound its range.
_DAF_NSEC_MIN = 0
_DAF_NSEC_MAX = 4102444800000000000  # 2100-01-01, daf_butler's "unbounded" in a database
_SPHGEOM_CONVEX_POLYGON = 0x70  # the first byte of lsst.sphgeom.ConvexPolygon.encode()


def decode_region(encoded: bytes | str) -> list[list[float]]:
    """The ``[ra, dec]`` vertices (degrees) of an lsst.sphgeom ConvexPolygon's encoding.

    ``encoded`` is the bytes of ``ConvexPolygon.encode()``, or their hex (export files) or
    base64 (registry databases) text: one type byte, then x, y, z of each vertex as
    little-endian doubles.
    """
    raw = _region_bytes(encoded)
    if not raw or raw[0] != _SPHGEOM_CONVEX_POLYGON or (len(raw) - 1) % 24:
        kind = f"type byte {raw[0]:#x}" if raw else "no bytes"
        raise DimensionError(f"A daf_butler region that is not a convex polygon ({kind}, {len(raw)} bytes); "
                             "only lsst.sphgeom.ConvexPolygon regions can be imported")
    vertices = []
    for x, y, z in struct.iter_unpack("<3d", raw[1:]):
        ra = math.degrees(math.atan2(y, x)) % 360.0
        dec = math.degrees(math.atan2(z, math.hypot(x, y)))
        vertices.append([ra, dec])
    return vertices


def _region_bytes(encoded: bytes | str) -> bytes:
    if isinstance(encoded, bytes | bytearray | memoryview):
        return bytes(encoded)
    try:
        return bytes.fromhex(encoded)
    except ValueError:
        return base64.b64decode(encoded)


_TAI_EPOCH = datetime.datetime(1970, 1, 1)


def tai_to_utc(tai: datetime.datetime) -> datetime.datetime:
    """UTC of a TAI time (both naive datetimes), by the leap-second table of ERFA.

    ERFA (pyerfa, which astropy is built on) rather than ``astropy.time``: importing the
    latter costs seconds, the table lookup microseconds. TAI - UTC is looked up at the
    TAI date, then again at the UTC date found, so a time just after a leap second is
    converted with the right offset.
    """
    import warnings

    import erfa

    def offset(t: datetime.datetime) -> datetime.timedelta:
        day = (t.hour * 3600 + t.minute * 60 + t.second + t.microsecond / 1e6) / 86400
        with warnings.catch_warnings():  # "dubious year" before 1960 or far ahead: the table's edge is kept
            warnings.simplefilter("ignore")
            return datetime.timedelta(seconds=float(erfa.dat(t.year, t.month, t.day, day)))

    return tai - offset(tai - offset(tai))


@functools.lru_cache(maxsize=65536)
def tai_iso_to_utc(text: str) -> datetime.datetime:
    """A naive UTC datetime from daf_butler's TAI ISO text (``2026-03-02 01:00:00.000000000``)."""
    try:
        # Python reads any number of fractional digits and keeps microseconds, as daf_butler's
        # nanoseconds cannot be kept in a datetime anyway.
        tai = datetime.datetime.fromisoformat(text.strip().replace("T", " "))
    except ValueError:
        raise TransferError(f"Cannot read the daf_butler time {text!r} (expected TAI ISO text)") from None
    return tai_to_utc(tai.replace(tzinfo=None))


@functools.lru_cache(maxsize=65536)
def tai_nsec_to_utc(nsec: int) -> datetime.datetime | None:
    """A naive UTC datetime from daf_butler's database time (TAI ns since 1970); None at its bounds."""
    if nsec is None or nsec <= _DAF_NSEC_MIN or nsec >= _DAF_NSEC_MAX:
        return None
    return tai_to_utc(_TAI_EPOCH + datetime.timedelta(microseconds=nsec // 1000))


@dataclass
class Dropped:
    """What a daf_butler import left out, for the report: never silent.

    Attributes
    ----------
    elements
        Element -> records not imported (elements the target's universe lacks).
    dimensions
        Dataset type -> data id keys it lost (dimensions the target's universe lacks).
    fields
        Element -> record fields with no column in the target's universe (e.g. ``obs_id``).
    """

    elements: dict[str, int] = field(default_factory=dict)
    dimensions: dict[str, list[str]] = field(default_factory=dict)
    fields: dict[str, set[str]] = field(default_factory=dict)

    def lines(self) -> list[str]:
        """One line per thing dropped, for people."""
        out = [f"element {e}: {n} record(s)" for e, n in sorted(self.elements.items())]
        out += [f"dataset type {t}: dimension(s) {', '.join(d)}" for t, d in sorted(self.dimensions.items())]
        out += [f"element {e}: field(s) {', '.join(sorted(f))}" for e, f in sorted(self.fields.items())]
        return out


class DafMapping:
    """Turns daf_butler values into skybutler ones for one target universe.

    Parameters
    ----------
    universe
        The universe of the repository the content goes to.
    storage_class_map
        Extra or overriding daf_butler -> skybutler storage class names (`STORAGE_CLASS_MAP`).
    drop_unknown_dimensions
        Leave out elements and data id keys ``universe`` lacks (reported in `dropped`)
        instead of refusing the whole import.
    """

    def __init__(self, universe: DimensionUniverse, *, storage_class_map: Mapping[str, str] | None = None,
                 drop_unknown_dimensions: bool = False):
        self.universe = universe
        self.storage_classes = {**STORAGE_CLASS_MAP, **(storage_class_map or {})}
        for daf_name, ours in self.storage_classes.items():
            if ours not in STORAGE_CLASSES:
                raise StorageClassError(f"The storage class map sends {daf_name!r} to {ours!r}, which skybutler "
                                        f"does not know; known: {', '.join(sorted(STORAGE_CLASSES))}")
        self.drop_unknown = drop_unknown_dimensions
        self.dropped = Dropped()
        self.dataset_types: dict[str, DatasetType] = {}

    # -- refusals ----------------------------------------------------------------------

    def check_elements(self, counts: Mapping[str, int], dataset_types: Iterable[tuple[str, Iterable[str]]]) -> None:
        """Refuse (or, when dropping, note) elements with records and data id keys the universe lacks.

        Called before anything is read in bulk, so a refused import has written nothing.
        ``counts`` gives records per daf_butler element; ``dataset_types`` names and dimensions.
        """
        known = self.universe.elements
        unknown_elements = {e: n for e, n in counts.items() if n and e not in known and e != "band"}
        unknown_keys = {}
        for name, dims in dataset_types:
            missing = [d for d in self.required_dimensions(dims) if d not in known]
            if missing:
                unknown_keys[name] = missing
        if not (unknown_elements or unknown_keys):
            return
        if not self.drop_unknown:
            parts = [f"element {e} ({n} record(s))" for e, n in sorted(unknown_elements.items())]
            parts += [f"dataset type {t} (data id key(s) {', '.join(d)})" for t, d in sorted(unknown_keys.items())]
            raise TransferError(
                "The daf_butler content uses dimensions this repository's universe lacks: " + "; ".join(parts)
                + f". Known elements: {', '.join(known)}. Import without them with --drop-unknown-dimensions "
                "(drop_unknown_dimensions=True), or create the repository with a universe that has them.")
        self.dropped.elements.update(unknown_elements)
        self.dropped.dimensions.update(unknown_keys)

    # -- dimension records -------------------------------------------------------------

    def element_order(self) -> list[str]:
        """The universe's elements, each after those it requires or implies (records go in this order)."""
        elements = self.universe.elements
        order: list[str] = []

        def place(name: str) -> None:
            if name in order:
                return
            for dep in (*elements[name].requires, *elements[name].implies):
                place(dep)
            order.append(name)

        for name in elements:
            place(name)
        return order

    def required_dimensions(self, dims: Iterable[str]) -> list[str]:
        """daf_butler dimensions of a dataset type less those another of them implies."""
        dims = list(dims)
        implied: set[str] = set()
        for d in dims:
            implied.update(DAF_IMPLIES.get(d, ()))
            if d in self.universe.elements:
                implied.update(self.universe.implied_closure(d))
        return [d for d in dims if d not in implied]

    def records(self, element: str, rows: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """skybutler records of ``element`` from daf_butler records (as exported or as stored).

        The element's own value is daf_butler's ``id`` (or ``name``); ``full_name`` of a
        detector is its ``name``; ``timespan``, ``datetime_begin``/``_end`` and
        ``timespan_begin``/``_end`` become ``timespan_begin``/``_end``; regions are decoded;
        other fields keep their names where the element has such a column, else they are
        dropped and reported.
        """
        el = self.universe.elements[element]
        columns = self.universe.record_columns(element)
        wanted = {*el.primary_key, *el.implies, *el.metadata}
        out = []
        dropped: set[str] = set()
        for row in rows:
            rec: dict[str, Any] = {}
            for key, value in row.items():
                name, value = self._field(element, el.is_dimension, key, value, row)
                if name is None:
                    continue
                if name in wanted or (name == "region" and el.region):
                    rec[name] = self._value(name, columns.get(name), value)
                elif value is not None:  # a null dropped loses nothing worth a line
                    dropped.add(name)
            out.append(rec)
        if dropped:
            self.dropped.fields.setdefault(element, set()).update(dropped)
        return out

    def _field(self, element: str, is_dimension: bool, key: str, value: Any,
               row: Mapping[str, Any]) -> tuple[str | None, Any]:
        if is_dimension and (key == "id" or (key == "name" and "id" not in row)):
            return element, value
        if key == "full_name" and element == "detector":
            return "name", value
        if key in ("datetime_begin", "timespan_begin"):
            return "timespan_begin", value
        if key in ("datetime_end", "timespan_end"):
            return "timespan_end", value
        return key, value

    def _value(self, name: str, column_type: str | None, value: Any) -> Any:
        if value is None:
            return None
        if name == "region":
            return decode_region(value)
        if column_type == "datetime":
            return self.time(value)
        if isinstance(value, bytes | bytearray | memoryview):
            return bytes(value).hex()  # e.g. a skymap hash: skybutler keeps text
        return value

    def time(self, value: Any) -> datetime.datetime | None:
        """A naive UTC datetime from a daf_butler time: TAI ISO text, TAI ns, or a datetime."""
        if value is None or isinstance(value, datetime.datetime):
            return value
        if isinstance(value, int):
            return tai_nsec_to_utc(value)
        return tai_iso_to_utc(str(value))

    def band_records(self, physical_filters: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """Band records: daf_butler has none of its own (a band is a view of physical filters)."""
        bands = sorted({r["band"] for r in physical_filters if r.get("band") is not None})
        return [{"band": b} for b in bands]

    # -- dataset types and datasets ----------------------------------------------------

    def dataset_type(self, name: str, dims: Iterable[str], storage_class: str, is_calibration: bool) -> DatasetType:
        """The skybutler dataset type of a daf_butler one (kept for the datasets that follow)."""
        ours = self.storage_classes.get(storage_class)
        if ours is None:
            raise StorageClassError(
                f"Dataset type {name!r} has daf_butler storage class {storage_class!r}, which has no skybutler "
                f"counterpart. Mapped: {', '.join(f'{k}->{v}' for k, v in sorted(self.storage_classes.items()))}. "
                f"Map it with --storage-class-map {storage_class}=<one of {', '.join(sorted(STORAGE_CLASSES))}>.")
        required = [d for d in self.required_dimensions(dims) if d in self.universe.elements]
        dataset_type = DatasetType(name, self.universe.closure(required), ours, bool(is_calibration))
        previous = self.dataset_types.setdefault(name, dataset_type)
        if previous != dataset_type:
            raise TransferError(f"Dataset type {name!r} is defined twice, differently: {previous} and {dataset_type}")
        return dataset_type

    def dataset(self, dataset_id: Any, type_name: str, data_id: Mapping[str, Any], run: str, path: str | None,
                size: int | None, url: str | None) -> DatasetContent:
        """One dataset with its file; ``path`` relative to the datastore root (or a full URL)."""
        dataset_type = self.dataset_types[type_name]
        values = {}
        for d in dataset_type.dimensions:
            if data_id.get(d) is None:
                raise TransferError(f"Dataset {dataset_id} of type {type_name} has no {d} in its data id "
                                    f"{dict(data_id)} ({path})")
            values[d] = self.universe.coerce(d, data_id[d])
        ref = DatasetRef(as_uuid(dataset_id), dataset_type, DataId(values), run)
        if path is None:
            return DatasetContent(ref, None, None)
        record = FileRecord(ref.id, path, int(size or 0), None, None,
                            self.file_format(dataset_type, path, f"Dataset {ref}"))
        return DatasetContent(ref, record, url)

    def file_format(self, dataset_type: DatasetType, path: str, what: str) -> str:
        """The skybutler format of a daf_butler file of ``what`` (a dataset), by its name's extension."""
        suffix = PurePosixPath(path.split("#")[0]).suffix.lower()
        fmt = FORMATS_BY_EXTENSION.get(suffix)
        allowed = STORAGE_CLASSES[dataset_type.storage_class].formats
        if fmt is None or fmt not in allowed:
            raise TransferError(
                f"{what} is in file {path}, whose extension {suffix or '(none)'!r} gives no format "
                f"skybutler reads as {dataset_type.storage_class!r} (formats: {', '.join(allowed)}; "
                f"extensions known: {', '.join(sorted(FORMATS_BY_EXTENSION))})")
        return fmt

    def certification(self, collection: str, dataset_id: Any, begin: Any, end: Any) -> Certification:
        """A certification over ``[begin, end)``; an open end becomes `UNBOUNDED_BEGIN` / `UNBOUNDED_END`."""
        lo, hi = self.time(begin), self.time(end)
        return Certification(collection, as_uuid(dataset_id), lo or UNBOUNDED_BEGIN, hi or UNBOUNDED_END)


def as_uuid(value: Any) -> uuid.UUID:
    """A dataset id as daf_butler gives it (UUID, 32 hex digits, bytes) as a `uuid.UUID`."""
    if isinstance(value, uuid.UUID):
        return value
    if isinstance(value, bytes | bytearray | memoryview):
        return uuid.UUID(bytes=bytes(value))
    return uuid.UUID(str(value))
