"""How `Butler` reads datasets: a dataset's file record, its object, cutouts, and copies of its file.

`Butler` resolves what to read (a ref, or a dataset type and data id searched in
collections); this module reads it, naming the dataset in every error.
"""

from __future__ import annotations

import errno
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._read_checks import lost_error, missing_error, read_verified
from .errors import ChecksumMismatchError, DatasetNotFoundError, FileAccessError, FileLostError, FormatError
from .formats import get_formatter
from .model import DatasetRef, Image
from .registry import integrity_sql

if TYPE_CHECKING:
    from .datastore import Datastore
    from .registry import FileRecord, Registry

__all__ = ["Cutouts", "copy_out", "file_records", "read_cutouts", "read_dataset", "read_datasets",
           "retrieve"]


@dataclass
class Cutouts:
    """Result of `Butler.get_cutouts`: the cutouts and how many bytes were read to make them.

    ``bytes_read`` counts what travelled from the store: on an object store the byte ranges
    fetched (headers included), locally the bytes read from the file.
    """

    images: list[Image]
    bytes_read: int
    file_size: int
    path: str = ""


def file_records(registry: Registry, refs: Sequence[DatasetRef]) -> Iterator[FileRecord]:
    """The file record of each ref, in order (one registry query).

    Raises `DatasetNotFoundError` when it reaches a ref without one, so a caller working
    through the refs has done the work of those before it.
    """
    files = registry.get_files([r.id for r in refs])
    for ref in refs:
        record = files.get(ref.id)
        if record is None:
            raise DatasetNotFoundError(f"Dataset {ref} has no file in this repository")
        yield record


def read_datasets(registry: Registry, datastore: Datastore, refs: Sequence[DatasetRef],
                  parameters: Mapping[str, Any] | None, *, verify_checksum: bool = False) -> list[Any]:
    """Read the objects of ``refs`` (`Butler.get_many`); a dataset recorded lost raises `FileLostError`.

    One registry query gives every file record with its lost mark (``verify --mark-lost``).
    A local file placed after that query (its change time says so) may be another
    dataset's: removed meanwhile and stored again at the same path. The registry is then
    asked again, and a removed dataset raises `DatasetNotFoundError` instead of returning
    the bytes of the one stored in its place. A file of an object store says when it was
    placed in whole seconds of its store's clock: one placed in the minute before the
    query costs one more query (`Datastore.placed_since`).
    """
    looked = time.time_ns() - _CLOCK_SLACK_NS
    found = integrity_sql.files_for_read(registry, [r.id for r in refs])
    out = []
    for ref in refs:
        record, mark = found.get(ref.id, (None, None))
        if record is None:
            raise DatasetNotFoundError(f"Dataset {ref} has no file in this repository")
        if mark is not None:
            raise lost_error(ref, record, mark)
        changed: list[bool] = []
        try:
            obj = read_dataset(datastore, ref, record, parameters, verify_checksum=verify_checksum,
                               changed_since=(looked, changed))
        except FileLostError:
            # Its file went after its record was read: removed meanwhile (rows first, then
            # files), unless the registry still names it.
            if registry.get_files([ref.id]):
                raise
            raise DatasetNotFoundError(f"Dataset {ref} was removed while it was read") from None
        if changed and not registry.get_files([ref.id]):
            raise DatasetNotFoundError(f"Dataset {ref} was removed while it was read")
        out.append(obj)
    return out


_CLOCK_SLACK_NS = 20_000_000
"""How far a file's change time may lag the clock: filesystems stamp it from a coarse clock, up to a tick
(4-10 ms) late. A file placed less than this before a get's query costs that get one more query."""


def read_dataset(datastore: Datastore, ref: DatasetRef, record: FileRecord,
                 parameters: Mapping[str, Any] | None, *, verify_checksum: bool = False,
                 changed_since: tuple[int, list[bool]] | None = None) -> Any:
    """Read the object of ``ref`` from its file (``parameters`` read part of it).

    ``verify_checksum`` compares the file's checksum with the registry's (`ChecksumMismatchError`);
    a file that is gone raises `FileLostError`. ``changed_since`` is ``(time in ns, flags)``:
    True is appended to ``flags`` when the file read changed at or after that time (`Datastore.placed_since`).
    """
    formatter = get_formatter(record.format)
    try:
        # A box of an image is read in byte ranges; everything else whole, with large reads
        # (so is a box whose file is verified: its checksum needs every byte).
        partial = bool(parameters and "bbox" in parameters) and not verify_checksum
        with datastore.open(record.path, partial=partial) as f:
            if changed_since is not None and datastore.placed_since(f, changed_since[0]):
                changed_since[1].append(True)
            if verify_checksum:
                return read_verified(formatter, f, ref, record, parameters)
            return formatter.read(f, parameters=parameters)  # type: ignore[arg-type]
    except FormatError as exc:
        raise FormatError(f"Cannot read {ref.dataset_type.name} {{{ref.data_id}}} from {record.path}: {exc}") from None
    except FileAccessError as exc:
        if isinstance(exc, ChecksumMismatchError):
            raise
        if exc.errno == errno.ENOENT:
            raise missing_error(ref, record, exc) from None
        raise FileAccessError(exc.errno, f"File of {ref.dataset_type.name} {{{ref.data_id}}} is missing: {exc}") from None


def read_cutouts(datastore: Datastore, ref: DatasetRef, record: FileRecord,
                 boxes: Sequence[tuple[int, int, int, int]], *, plane: str | None,
                 hdu: int | str | tuple[str, int] | None) -> Cutouts:
    """Cut ``boxes`` out of the image of ``ref``, reading only the bytes they need (see `Butler.get_cutouts`)."""
    formatter = get_formatter(record.format)
    cutouts = getattr(formatter, "read_cutouts", None)
    if cutouts is None:
        raise FormatError(f"{ref.dataset_type.name} is stored as {record.format}, which has no cutout reads")
    try:
        with datastore.open(record.path, partial=True) as f:
            images, nbytes = cutouts(f, boxes, plane=plane, hdu=hdu)
            # A remote file counts the bytes of the ranges it fetched; a local one, read as
            # asked, is counted by the formatter.
            nbytes = getattr(f, "bytes_fetched", nbytes)
    except FormatError as exc:
        raise FormatError(f"Cannot cut out of {ref.dataset_type.name} {{{ref.data_id}}} ({record.path}): {exc}") from None
    return Cutouts(images, nbytes, record.size, record.path)


def retrieve(registry: Registry, datastore: Datastore, refs: Sequence[DatasetRef], destination: str | Path, *,
             overwrite: bool = False) -> list[Path]:
    """Copy the files of ``refs`` under ``destination`` at their paths in the datastore (see `Butler.retrieve`)."""
    root = Path(destination)
    written = []
    for ref, record in zip(refs, file_records(registry, refs), strict=True):
        relative = record.path if datastore.owns(record.path) else record.path.rsplit("/", 1)[-1]
        written.append(copy_out(datastore, ref, record, root / relative, overwrite))
    return written


def copy_out(datastore: Datastore, ref: DatasetRef, record: FileRecord, target: Path, overwrite: bool) -> Path:
    """Copy the file of ``ref`` to ``target``, whole or not at all; an existing target needs ``overwrite``."""
    if target.exists() and not overwrite:
        raise FileAccessError(f"Cannot copy {ref.dataset_type.name} {{{ref.data_id}}} to {target}: "
                              "the file exists (pass overwrite to replace it)")
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.part")
    with datastore.open(record.path) as src, open(partial, "wb") as dst:
        while chunk := src.read(1 << 20):
            dst.write(chunk)
    os.replace(partial, target)  # never a half-copied file under the final name
    return target
