"""The dump format's vocabulary: names, versions, and how each line type is encoded and decoded.

One place says what a line of each stream holds (docs/dump_format.md is its prose), so
the writer (`_dump_write`) and the reader (`dump.DumpSource`) cannot drift apart.
Decoders are classes, one per format version: a later version subclasses the one before
and overrides only the lines that changed, which is how a v2 reader keeps reading v1.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import posixpath
import uuid
from collections.abc import Mapping
from typing import Any

from ..datastore.backends import is_url
from ..dimensions import DimensionUniverse
from ..model import CollectionType, DataId, DatasetRef, DatasetType
from ..registry import DatasetOrigin, FileRecord
from .content import Certification, CollectionContent

__all__ = [
    "DUMP_FORMAT_NAME",
    "DUMP_FORMAT_VERSION",
    "HEADER",
    "STREAMS",
    "DecoderV1",
    "decoder_for",
    "dump_path_of",
    "encode_certification",
    "encode_collection",
    "encode_dataset",
    "encode_dataset_type",
    "encode_execution",
    "encode_record",
    "encode_time",
]

DUMP_FORMAT_NAME = "skybutler-dump"
DUMP_FORMAT_VERSION = 1
"""The version of the dump format this code writes; it reads this one and every older one."""

HEADER = "dump.json"
STREAMS = ("dimension_records.jsonl", "dataset_types.jsonl", "collections.jsonl", "datasets.jsonl",
           "tags.jsonl", "certifications.jsonl", "provenance.jsonl")
"""The JSON Lines files of a dump, in the order they are written and read."""

FILES_DIR = "files"

_EXECUTION_TIMES = ("start_time", "end_time")
_EXECUTION_IDS = ("id", "quantum_id")


# -- values ------------------------------------------------------------------------------

def encode_time(value: datetime.datetime | None) -> str | None:
    """ISO-8601 in UTC with a ``Z`` (the registry's naive datetimes are UTC)."""
    if value is None:
        return None
    if value.tzinfo is not None:
        value = value.astimezone(datetime.UTC).replace(tzinfo=None)
    return value.isoformat() + "Z"


def decode_time(text: str | None) -> datetime.datetime | None:
    """The naive UTC datetime the registry gives for a time written by `encode_time`."""
    if text is None:
        return None
    value = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    if value.tzinfo is not None:
        value = value.astimezone(datetime.UTC).replace(tzinfo=None)
    return value


def _plain(value: Any) -> Any:
    if isinstance(value, datetime.datetime):
        return encode_time(value)
    if isinstance(value, uuid.UUID):
        return str(value)
    return value


def dump_path_of(path: str) -> str:
    """Where the bytes of a file recorded at ``path`` go inside a dump (always under ``files/``).

    A path relative to the source's root keeps its shape; one that could leave the dump
    (absolute, ``..``, backslashes, NUL) or a full URL of a ``direct`` ingest goes under
    ``files/external/<hash of the path>/<file name>``, so two external files with one
    name never collide and nothing is ever written outside the dump.

    Examples
    --------
    >>> dump_path_of("raw%2Fhsc/raw/raw_903334_016.fits")
    'files/raw%2Fhsc/raw/raw_903334_016.fits'
    >>> dump_path_of("s3://bucket/data/a.fits")
    'files/external/b57774965f6d3658/a.fits'
    """
    parts = path.split("/")
    safe = (path and not is_url(path) and not path.startswith("/") and "\\" not in path and "\0" not in path
            and ".." not in parts and parts[0] != "external"
            and posixpath.normpath(path) == path)
    if safe:
        return f"{FILES_DIR}/{path}"
    name = posixpath.basename(path.rstrip("/")).replace("\\", "_").replace("\0", "_") or "file"
    if name in (".", ".."):
        name = "file"
    return f"{FILES_DIR}/external/{hashlib.sha256(path.encode('utf-8', 'surrogatepass')).hexdigest()[:16]}/{name}"


# -- encoders (one per line type) --------------------------------------------------------

def encode_record(element: str, record: Mapping[str, Any]) -> dict[str, Any]:
    """A ``dimension_records.jsonl`` line: ``{"element", "record"}``; regions stay the registry's vertex lists."""
    return {"element": element, "record": {k: _plain(v) for k, v in record.items()}}


def encode_dataset_type(dt: DatasetType) -> dict[str, Any]:
    """A ``dataset_types.jsonl`` line."""
    return {"name": dt.name, "dimensions": list(dt.dimensions), "storage_class": dt.storage_class,
            "is_calibration": dt.is_calibration}


def encode_collection(c: CollectionContent) -> dict[str, Any]:
    """A ``collections.jsonl`` line."""
    return {"name": c.name, "type": c.type.value, "doc": c.doc, "children": list(c.children)}


def encode_dataset(ref: DatasetRef, file: FileRecord | None, dump_path: str | None,
                   origin: DatasetOrigin | None = None) -> dict[str, Any]:
    """A ``datasets.jsonl`` line: the ref, its file record as the source holds it, where its bytes are in the dump.

    ``origin`` (an ingested dataset's) is written only when there is one: a reader of an
    older dump finds none, and an older reader of this one skips the key.
    """
    line = {
        "id": str(ref.id), "dataset_type": ref.dataset_type.name, "run": ref.run,
        "data_id": {d: ref.data_id[d] for d in ref.dataset_type.dimensions},
        "file": None if file is None else {
            "path": file.path, "size": file.size, "checksum": file.checksum,
            "checksum_algorithm": file.checksum_algorithm, "format": file.format},
        "dump_path": dump_path,
    }
    if origin is not None:
        line["origin"] = {"original_path": origin.original_path, "plugin": origin.plugin,
                          "metadata": json.loads(json.dumps(dict(origin.metadata), default=str))}
    return line


def encode_certification(c: Certification) -> dict[str, Any]:
    """A ``certifications.jsonl`` line."""
    return {"collection": c.collection, "dataset_id": str(c.dataset_id),
            "begin": encode_time(c.begin), "end": encode_time(c.end)}


def encode_execution(row: Mapping[str, Any], used: list[list[str | None]],
                     generated: list[list[str | None]]) -> dict[str, Any]:
    """A ``provenance.jsonl`` line of kind ``execution``: the row with its used and generated edges."""
    return {"kind": "execution", "execution": {k: _plain(v) for k, v in row.items()},
            "used": used, "generated": generated}


# -- decoders ----------------------------------------------------------------------------

class DecoderV1:
    """Lines of format version 1 back into the values a `ContentSource` yields.

    A version 2 decoder subclasses this one and overrides the methods of the lines it
    changed; `decoder_for` picks the class by the dump's ``format_version``.
    """

    version = 1

    def __init__(self, header: Mapping[str, Any]):
        self.header = header
        self.universe = DimensionUniverse(header["universe"])
        self._time_columns = {
            name: tuple(c for c, t in self.universe.record_columns(name).items() if t == "datetime")
            for name in self.universe.elements}
        self.dataset_types: dict[str, DatasetType] = {}

    def record(self, line: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
        element = line["element"]
        record = dict(line["record"])
        for column in self._time_columns[element]:
            if record.get(column) is not None:
                record[column] = decode_time(record[column])
        return element, record

    def dataset_type(self, line: Mapping[str, Any]) -> DatasetType:
        dt = DatasetType(line["name"], tuple(line["dimensions"]), line["storage_class"],
                         bool(line.get("is_calibration", False)))
        self.dataset_types[dt.name] = dt
        return dt

    def collection(self, line: Mapping[str, Any]) -> CollectionContent:
        return CollectionContent(line["name"], CollectionType(line["type"]), line.get("doc"),
                                 tuple(line.get("children") or ()))

    def dataset(self, line: Mapping[str, Any]) -> tuple[DatasetRef, FileRecord | None, str | None,
                                                        DatasetOrigin | None]:
        dataset_id = uuid.UUID(line["id"])
        try:
            dt = self.dataset_types[line["dataset_type"]]
        except KeyError:
            raise KeyError(f"dataset {dataset_id} has dataset type {line['dataset_type']!r}, "
                           "which dataset_types.jsonl does not define") from None
        values = line["data_id"]
        ref = DatasetRef(dataset_id, dt, DataId({d: values[d] for d in dt.dimensions}), line["run"])
        f = line.get("file")
        file = None if f is None else FileRecord(dataset_id, f["path"], int(f["size"]), f.get("checksum"),
                                                 f.get("checksum_algorithm"), f["format"])
        o = line.get("origin")
        origin = None if o is None else DatasetOrigin(dataset_id, str(o["original_path"]), o.get("plugin"),
                                                      dict(o.get("metadata") or {}))
        return ref, file, line.get("dump_path"), origin

    def tag(self, line: Mapping[str, Any]) -> tuple[str, uuid.UUID]:
        return line["collection"], uuid.UUID(line["dataset_id"])

    def certification(self, line: Mapping[str, Any]) -> Certification:
        begin, end = decode_time(line["begin"]), decode_time(line["end"])
        assert begin is not None and end is not None, "a certification has both ends"
        return Certification(line["collection"], uuid.UUID(line["dataset_id"]), begin, end)

    def execution(self, line: Mapping[str, Any]) -> tuple[dict[str, Any], list[tuple[uuid.UUID, str | None]],
                                                          list[tuple[uuid.UUID, str | None]]]:
        row = dict(line["execution"])
        for key in _EXECUTION_IDS:
            if row.get(key) is not None:
                row[key] = uuid.UUID(row[key])
        for key in _EXECUTION_TIMES:
            if row.get(key) is not None:
                row[key] = decode_time(row[key])
        used = [(uuid.UUID(d), p) for d, p in line.get("used") or ()]
        generated = [(uuid.UUID(d), p) for d, p in line.get("generated") or ()]
        return row, used, generated

    def derived(self, line: Mapping[str, Any]) -> tuple[uuid.UUID, uuid.UUID]:
        return uuid.UUID(line["dataset_id"]), uuid.UUID(line["source_id"])


_DECODERS: dict[int, type[DecoderV1]] = {1: DecoderV1}


def decoder_for(header: Mapping[str, Any]) -> DecoderV1:
    """The decoder of the dump's ``format_version`` (the caller has checked it is not newer)."""
    return _DECODERS[int(header["format_version"])](header)
