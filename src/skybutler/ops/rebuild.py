"""Rebuild a lost registry from the repository's self-describing files and run manifests.

Every file the datastore writes carries its dataset's identity (dataset id, dataset type,
data id, run): FITS files in primary header cards, Parquet files in their key-value
metadata; files of formats with no room for it (JSON, YAML, npy, text, raw bytes) are
listed in the run manifests under ``.skybutler/manifests/``. `rebuild` walks the datastore,
reads those identities and recreates what they describe.

What comes back:

- dataset types: the name; dimensions from the data id's keys; the storage class from
  the file's format (FITS: an image, unless the file holds only a table). A type seen
  with two definitions is an error naming both files. Whether a type was a calibration
  type is not in its files: every type comes back as a non-calibration type.
- runs, as RUN collections;
- dimension records: only the keys a data id gives (``instrument=HSC``, ``visit=903334``);
  their other columns (a visit's filter, exposure time, region) and the records no
  dataset names are not in the files and come back empty. Insert them again (from the
  instrument's ingest plugin or a dump) where a query needs them.
- datasets with their original ids, data ids and runs, and their file records, sizes and
  checksums recomputed from the bytes (with the repository's checksum algorithm).

What does not: TAGGED, CHAINED and CALIBRATION collections and certifications, provenance,
the batch service's submissions, the dimension universe (the shipped one is used unless
one is given), files whose identity is nowhere (listed in the report as skipped).
"""

from __future__ import annotations

import datetime
import errno
import json
import os
import re
import time
import uuid
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..config import RepositoryConfig
from ..datastore import is_temporary, is_url
from ..dimensions import DimensionUniverse
from ..errors import (
    DatasetTypeError,
    FileAccessError,
    FormatError,
    RepositoryExistsError,
    RepositoryNotFoundError,
)
from ..formats import FORMATS, get_formatter, guess_format
from ..model import CollectionType, DataId, DatasetRef, DatasetType
from ..registry import FileRecord, Registry, integrity_sql
from .verify import ProgressBars, skipped_paths

if TYPE_CHECKING:
    from ..butler import Butler
    from ..datastore import Datastore

__all__ = ["RebuildReport", "rebuild"]

_FORMAT_STORAGE_CLASS = {"json": "dict", "yaml": "dict", "npy": "array", "parquet": "table", "raw": "bytes",
                         "txt": "text", "pickle": "object"}
_BATCH = 5000  # datasets per registry transaction
_FILES_PER_TASK = 64  # files read per thread task: a task's overhead is paid once per batch of small files
_HEAD = 5 * 2880  # bytes kept from the start of a file: the FITS primary header of any file skybutler writes
_TAIL = 1 << 16  # bytes kept from the end of a file: the footer (schema, key-value metadata) of a small Parquet file
_PARQUET_KEY = b"\x09skybutler\x18"  # the identity's key in the footer (Thrift compact: length 9, then the value field)
_CARD = re.compile(r"\s*'((?:[^']|'')*)'")
_FITS_CARDS = {"SB_ID": "dataset_id", "SB_TYPE": "dataset_type", "SB_DATAID": "data_id", "SB_RUN": "run"}


@dataclass
class RebuildReport:
    """What `rebuild` recreated.

    Attributes
    ----------
    root
        The repository.
    datasets, files
        Datasets registered, and files read under the root.
    dataset_types, runs
        Names of the dataset types and runs recreated.
    skipped
        Files whose identity was nowhere (no cards, no manifest entry), and duplicates:
        ``(path, why)``.
    notes
        What the operator should know (stale SQLite journal files moved aside, ...).
    seconds
        Wall time.
    """

    root: str
    datasets: int = 0
    files: int = 0
    dataset_types: list[str] = field(default_factory=list)
    runs: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0


@dataclass
class _Found:
    """One file's dataset as its identity describes it."""

    path: str
    dataset_id: uuid.UUID
    dataset_type: str
    data_id: DataId
    run: str
    format: str
    storage_class: str
    size: int
    checksum: str | None


def rebuild(root: str | Path, *, progress: bool = False, workers: int = 8,
            universe: DimensionUniverse | str | Path | None = None) -> RebuildReport:
    """Recreate the registry of the repository at ``root`` from its files (see the module's docstring).

    Parameters
    ----------
    root
        The repository directory (its ``skybutler.yaml`` names the registry database and
        the datastore).
    progress
        Show a rich progress bar on standard error.
    workers
        Files read in parallel.
    universe
        The dimension universe the repository was created with, if not the shipped one.

    Returns
    -------
    RebuildReport

    Raises
    ------
    RepositoryExistsError
        The registry still exists and holds datasets: move it aside first (rename the
        SQLite file, or ``ALTER SCHEMA name RENAME TO name_old`` on PostgreSQL).
    DatasetTypeError
        Two files describe one dataset type differently (both files are named).
    """
    start = time.perf_counter()
    root = str(root)
    report = RebuildReport(root)
    cfg = RepositoryConfig.read(root)
    if isinstance(universe, (str, Path)):
        universe = DimensionUniverse.from_file(universe)
    _fresh_registry(root, cfg, universe, report)
    from ..butler import Butler

    butler = Butler(root)
    try:
        with ProgressBars(progress) as bars:
            found = _scan(butler, report, bars, workers)
            _register(butler, found, report)
    finally:
        butler.close()
    report.seconds = time.perf_counter() - start
    return report


# -- the registry ------------------------------------------------------------------------------


def _fresh_registry(root: str, cfg: RepositoryConfig, universe: DimensionUniverse | None,
                    report: RebuildReport) -> None:
    """Create an empty registry where the configuration says; refuse one that holds datasets."""
    reg = cfg.registry
    try:
        existing = Registry.open(reg.db, namespace=reg.namespace, root=root, writeable=False)
    except RepositoryNotFoundError:
        existing = None
    if existing is not None:
        try:
            count = integrity_sql.count_files(existing)
        finally:
            existing.close()
        if count:
            where = (f"the schema {reg.namespace!r} (ALTER SCHEMA \"{reg.namespace}\" RENAME TO "
                     f"\"{reg.namespace}_old\")" if reg.namespace else f"the database {reg.db} (rename its file)")
            raise RepositoryExistsError(
                f"The registry of {root} still exists and holds {count} file record(s); rebuild recreates a lost "
                f"registry only. To rebuild it anyway, move {where} aside first, then run rebuild again")
        report.notes.append("an empty registry was there; rebuilt into it")
        return
    sqlite = _sqlite_file(root, reg.db)
    if sqlite is not None:
        stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
        for suffix in ("-wal", "-shm", "-journal"):
            stale = sqlite + suffix
            if os.path.exists(stale):
                # A journal of the lost database would be replayed into the new one.
                os.rename(stale, f"{stale}.stale-{stamp}")
                report.notes.append(f"moved the stale {stale} aside to {stale}.stale-{stamp}")
    Registry.create(reg.db, universe=universe, namespace=reg.namespace, root=root,
                    sync_every_commit=reg.sync_every_commit).close()


def _sqlite_file(root: str, db: str) -> str | None:
    if not db.startswith("sqlite:///") or db == "sqlite:///:memory:":
        return None
    path = db[len("sqlite:///"):].split("?", 1)[0]
    return path if os.path.isabs(path) else os.path.join(root, path)


def _register(butler: Butler, found: list[_Found], report: RebuildReport) -> None:
    """Dataset types, runs, dimension records, datasets and file records, in bulk."""
    registry, universe = butler.registry, butler.universe
    types: dict[str, tuple[DatasetType, str]] = {}
    for f in found:
        dt = DatasetType(f.dataset_type, universe.closure(f.data_id.required_items), f.storage_class)
        seen = types.setdefault(dt.name, (dt, f.path))
        if seen[0] != dt:
            raise DatasetTypeError(
                f"Dataset type {dt.name!r} is described twice: as {seen[0]} by {seen[1]} and as {dt} by {f.path}; "
                "rebuild cannot tell which is right (move one file aside and run it again)")
    for dt, _ in types.values():
        registry.register_dataset_type(dt)
    runs = sorted({f.run for f in found})
    for run in runs:
        registry.register_collection(run, CollectionType.RUN)
    records: dict[str, set[tuple[Any, ...]]] = {}
    for f in found:
        for d in types[f.dataset_type][0].dimensions:
            records.setdefault(d, set()).add(tuple(f.data_id[k] for k in universe.elements[d].primary_key))
    for element in universe.dimensions:  # required dimensions before those that need them
        if element in records:
            keys = universe.elements[element].primary_key
            registry.insert_dimension_records(element, [dict(zip(keys, key, strict=True))
                                                        for key in sorted(records[element])], skip_existing=True)
    algorithm = butler.datastore.checksum_algorithm
    for i in range(0, len(found), _BATCH):
        batch = found[i:i + _BATCH]
        refs = [DatasetRef(f.dataset_id, types[f.dataset_type][0], f.data_id, f.run) for f in batch]
        files = [FileRecord(f.dataset_id, f.path, f.size, f.checksum, algorithm if f.checksum else None, f.format)
                 for f in batch]
        integrity_sql.insert_rebuilt(registry, refs, files)
    report.datasets = len(found)
    report.dataset_types = sorted(types)
    report.runs = runs


# -- the files ---------------------------------------------------------------------------------


def _scan(butler: Butler, report: RebuildReport, bars: ProgressBars, workers: int) -> list[_Found]:
    """Every dataset the files describe, one per (type, data id, run) and per id."""
    datastore, universe = butler.datastore, butler.universe
    manifest = _manifest(datastore)
    own_files, own_dirs = skipped_paths(butler)
    paths = [p for p in datastore.walk()
             if p not in own_files and not p.startswith(own_dirs) and not is_temporary(p)]
    # Files ingested in place ("direct") live outside the root: only their manifest entry knows them.
    paths += sorted(p for p in manifest if is_url(p) or p.startswith("/"))
    task = bars.add("files", len(paths))

    def read_one(path: str) -> _Found | tuple[str, str]:
        try:
            return _describe(datastore, universe, path, manifest.get(path))
        except (FormatError, ValueError, KeyError) as exc:
            return path, f"cannot read its identity: {exc}"
        except FileAccessError as exc:
            if exc.errno == errno.ENOENT:
                return path, "listed in a run manifest, but the file is gone"
            raise

    def read_batch(batch: list[str]) -> list[_Found | tuple[str, str]]:
        return [read_one(path) for path in batch]

    found: list[_Found] = []
    by_key: dict[tuple[str, str, str], _Found] = {}
    by_id: dict[uuid.UUID, _Found] = {}
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="rebuild") as pool:
        batches = pool.map(read_batch, [paths[i:i + _FILES_PER_TASK] for i in range(0, len(paths), _FILES_PER_TASK)])
        for result in (r for batch in batches for r in batch):
            bars.advance(task)
            if isinstance(result, tuple):
                report.skipped.append(result)
                continue
            report.files += 1
            key = (result.dataset_type, result.data_id.key(), result.run)
            clash = by_key.get(key) or by_id.get(result.dataset_id)
            if clash is not None:
                keep, drop = (result, clash) if _newer(result.dataset_id, clash.dataset_id) else (clash, result)
                report.skipped.append((drop.path, f"describes the dataset {keep.path} holds (kept: the newer id)"))
                if keep is clash:
                    continue
                found.remove(clash)
            by_key[key], by_id[result.dataset_id] = result, result
            found.append(result)
    return found


def _newer(a: uuid.UUID, b: uuid.UUID) -> bool:
    """Whether id ``a`` was made after ``b`` (time-ordered UUIDv7 ids; others count as oldest)."""
    def when(i: uuid.UUID) -> int:
        return i.int >> 80 if i.version == 7 else -1

    return when(a) > when(b)


def _manifest(datastore: Datastore) -> dict[str, dict[str, str]]:
    """The newest manifest entry of each path (a path reused after a removal has several)."""
    out: dict[str, dict[str, str]] = {}
    for entry in datastore.manifest_entries():
        path = entry.get("path")
        if not path:
            continue
        old = out.get(path)
        if old is None or not _newer(uuid.UUID(old["dataset_id"]), uuid.UUID(entry["dataset_id"])):
            out[path] = entry
    return out


def _describe(datastore: Datastore, universe: DimensionUniverse, path: str,
              entry: Mapping[str, str] | None) -> _Found | tuple[str, str]:
    """Read one file: size, checksum and the first blocks in one pass; then its identity."""
    size, checksum, head, tail = _read(datastore, path)
    fmt = (entry or {}).get("format") or guess_format(path)
    if fmt is None or fmt not in FORMATS:
        return path, "not a file skybutler writes (unknown format) and in no run manifest"
    identity: Mapping[str, str] | None = entry
    storage_class = _FORMAT_STORAGE_CLASS.get(fmt)
    if fmt == "fits":
        cards, is_image = _fits_head(head)
        identity = identity or cards
        if is_image is None:
            is_image = _fits_holds_image(datastore, path)
        storage_class = "image" if is_image else "table"
    elif identity is None and fmt == "parquet":
        identity = _parquet_tail(tail)
    if identity is None and fmt != "fits" and FORMATS[fmt].stores_identity:
        with datastore.open(path) as f:
            identity = get_formatter(fmt).read_identity(f)  # type: ignore[arg-type]
    if not identity:
        return path, f"a {fmt} file without the identity of a dataset, in no run manifest"
    assert storage_class is not None
    data_id = _data_id(universe, identity["data_id"])
    return _Found(path, uuid.UUID(str(identity["dataset_id"])), str(identity["dataset_type"]), DataId(data_id),
                  str(identity["run"]), fmt, storage_class, size, checksum)


def _read(datastore: Datastore, path: str) -> tuple[int, str | None, bytes, bytes]:
    """Size, checksum (the datastore's algorithm), first `_HEAD` and last `_TAIL` bytes of a file, reading it once."""
    import hashlib

    algorithm = datastore.checksum_algorithm
    digest = hashlib.new(algorithm, usedforsecurity=False) if algorithm else None
    location = datastore.url(path)
    size, head, tail = 0, b"", b""
    stream: Any = datastore.open(path) if is_url(location) else open(location, "rb", buffering=0)  # noqa: SIM115
    with stream:
        while chunk := stream.read(1 << 20):
            if size < _HEAD:
                head += chunk[:_HEAD - size]
            tail = (tail + chunk)[-_TAIL:] if len(chunk) < _TAIL else chunk[-_TAIL:]
            size += len(chunk)
            if digest is not None:
                digest.update(chunk)
    return size, None if digest is None else digest.hexdigest(), head, tail


def _data_id(universe: DimensionUniverse, text: str | Mapping[str, Any]) -> dict[str, Any]:
    """A data id from a manifest (JSON object) or a file's identity (``instrument=HSC, visit=903334``)."""
    if isinstance(text, Mapping):
        values = dict(text)
    elif text.lstrip().startswith("{"):
        values = json.loads(text)
    else:
        # Split at ", <dimension>=" only: a value may itself hold a comma (a patch "8,6").
        names = "|".join(re.escape(d) for d in sorted(universe.dimensions, key=len, reverse=True))
        parts = re.split(rf"(?:^|, )({names})=", text)
        if parts[0]:
            raise ValueError(f"data id {text!r} does not start with a dimension name")
        values = dict(zip(parts[1::2], parts[2::2], strict=True))
    return {k: universe.coerce(k, v) for k, v in values.items()}


def _fits_head(head: bytes) -> tuple[dict[str, str] | None, bool | None]:
    """The identity cards of a FITS primary header, and whether the primary HDU holds a 2-d image.

    Parsed here from the raw 80-character cards (long strings continued on CONTINUE
    cards, HIERARCH keywords) because astropy takes ~4 ms to open a file for them, which
    would bound a rebuild to a few hundred files a second. ``is_image`` is None when the
    header does not say (no pixels in the primary HDU): the caller then asks the formatter.
    """
    values: dict[str, str] = {}
    naxis = 0
    key: str | None = None
    for start in range(0, len(head) - 79, 80):
        card = head[start:start + 80].decode("ascii", "replace")
        keyword = card[:8].rstrip()
        if keyword == "END":
            break
        if keyword == "CONTINUE" and key is not None and values[key].endswith("&"):
            match = _CARD.match(card[8:])
            if match:
                values[key] = values[key][:-1] + match.group(1).replace("''", "'").rstrip()
            continue
        key = None
        if keyword == "HIERARCH":
            keyword, _, value = card[9:].partition("=")
            keyword = keyword.strip()
        elif card[8:10] == "= ":
            value = card[10:]
        else:
            continue
        if keyword == "NAXIS":
            naxis = int(value.split("/")[0])
        elif keyword in _FITS_CARDS:
            match = _CARD.match(value)
            if match:
                key = _FITS_CARDS[keyword]
                values[key] = match.group(1).replace("''", "'").rstrip()
    identity = values if len(values) == len(_FITS_CARDS) else None
    return identity, (True if naxis == 2 else None)


def _fits_holds_image(datastore: Datastore, path: str) -> bool:
    """Whether a FITS file reads as an image (else a table), asked of the formatter."""
    from ..errors import StorageClassError

    formatter = get_formatter("fits")
    with datastore.open(path) as f:
        try:
            formatter.check_file(f, "image")  # type: ignore[arg-type]
        except (StorageClassError, FormatError):
            return False
    return True


def _parquet_tail(tail: bytes) -> dict[str, str] | None:
    """The identity in a Parquet file's footer, found in its last bytes without pyarrow; None if not found.

    pyarrow takes ~0.5 ms to parse a footer; the identity is one key-value pair of it, a
    Thrift string after the key ``skybutler``. Anything unexpected returns None, and the
    caller asks the formatter (a footer longer than `_TAIL`, another layout).
    """
    if len(tail) < 12 or not tail.endswith(b"PAR1"):
        return None
    at = tail.rfind(_PARQUET_KEY, max(0, len(tail) - 8 - int.from_bytes(tail[-8:-4], "little")))
    if at < 0:
        return None
    pos, length, shift = at + len(_PARQUET_KEY), 0, 0
    while pos < len(tail):  # the value's length, a varint
        byte = tail[pos]
        pos += 1
        length |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            break
    try:
        identity = json.loads(tail[pos:pos + length])
    except ValueError:
        return None
    if not isinstance(identity, dict) or set(identity) != set(_FITS_CARDS.values()):
        return None
    return {str(k): str(v) for k, v in identity.items()}
