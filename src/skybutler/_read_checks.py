"""What a get checks about the file it reads: recorded lost, gone, or changed since it was written.

``_butler_read`` reads datasets; this module holds the checks it makes on the way, so each
error names the dataset, its data id and the file:

- a dataset marked lost by ``verify --mark-lost`` raises `FileLostError` (with when it was
  noticed and why) without reading anything;
- a file that is gone when read (a ``direct`` ingest whose file was deleted where it lay,
  a disk that lost it) raises `FileLostError`;
- with ``datastore.verify_on_read``, the bytes read are hashed as the formatter reads them
  (`ChecksumReader`), the rest of the file after it, and a checksum that differs from the
  registry's raises `ChecksumMismatchError`.
"""

from __future__ import annotations

import errno
import hashlib
import io
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .errors import ChecksumMismatchError, FileLostError, FormatError

if TYPE_CHECKING:
    from .formats import Formatter
    from .model import DatasetRef
    from .registry import FileRecord
    from .registry.integrity_sql import LostMark

__all__ = ["ChecksumReader", "lost_error", "missing_error", "read_verified"]

_CHUNK = 1 << 20


def _dataset(ref: DatasetRef) -> str:
    return f"{ref.dataset_type.name} {{{ref.data_id}}} (id {ref.id}, run {ref.run})"


def lost_error(ref: DatasetRef, record: FileRecord, mark: LostMark) -> FileLostError:
    """The error for a get of a dataset that `verify --mark-lost` recorded lost."""
    return FileLostError(errno.ENOENT, (
        f"Dataset {_dataset(ref)} is recorded lost (noticed {mark.noticed:%Y-%m-%d %H:%M:%S} UTC): "
        f"its file {record.path}: {mark.reason}. Restore the file and run "
        "`skybutler verify --mark-lost` to clear the mark, or remove the dataset"))


def missing_error(ref: DatasetRef, record: FileRecord, exc: BaseException) -> FileLostError:
    """The error for a get of a dataset whose file is not there."""
    return FileLostError(errno.ENOENT, f"File of dataset {_dataset(ref)} is lost: {record.path} is gone ({exc})")


class ChecksumReader(io.RawIOBase):
    """A read-only view of a file that hashes the bytes read through it, in file order.

    Bytes read past the hashed prefix (a reader that seeks ahead: FITS data after its
    header, a Parquet footer first) are read again by `verify` once the reader is done,
    from where hashing stopped; most formats read the whole file front to back, so
    verifying costs the hash only. Closing it leaves the wrapped file open.

    Parameters
    ----------
    raw
        A readable, seekable binary file, positioned at its start.
    algorithm
        The `hashlib` algorithm of the registry's checksum.
    """

    def __init__(self, raw: Any, algorithm: str):
        super().__init__()
        self._raw = raw
        self._hash = hashlib.new(algorithm, usedforsecurity=False)
        self._algorithm = algorithm
        self._pos = 0
        self._hashed = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def _account(self, data: Any) -> None:
        start, end = self._pos, self._pos + len(data)
        if start <= self._hashed < end:
            self._hash.update(memoryview(data)[self._hashed - start:])
            self._hashed = end
        self._pos = end

    def read(self, size: int | None = -1) -> bytes:
        data = self._raw.read(-1 if size is None else size)
        self._account(data)
        return bytes(data)

    def readall(self) -> bytes:
        return self.read(-1)

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        data = self._raw.read(len(view))
        view[: len(data)] = data
        self._account(data)
        return len(data)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        self._pos = self._raw.seek(offset, whence)
        return self._pos

    def tell(self) -> int:
        return self._pos

    def close(self) -> None:  # the caller's file stays open (astropy closes what it is given)
        pass

    def checksum(self) -> str:
        """The hex digest of the whole file: hashes what the reader skipped, to the end."""
        self._raw.seek(self._hashed)
        while chunk := self._raw.read(_CHUNK):
            self._hash.update(chunk)
            self._hashed += len(chunk)
        return self._hash.hexdigest()

    def verify(self, ref: DatasetRef, record: FileRecord) -> None:
        """Raise `ChecksumMismatchError` if the file's checksum is not the registry's."""
        found = self.checksum()
        if found != record.checksum:
            raise ChecksumMismatchError(errno.EIO, (
                f"File of dataset {_dataset(ref)} is corrupted: {record.path} has checksum "
                f"{self._algorithm}:{found}, the registry recorded {self._algorithm}:{record.checksum} "
                "(run `skybutler verify` on the repository)"))


def read_verified(formatter: Formatter, fileobj: Any, ref: DatasetRef, record: FileRecord,
                  parameters: Mapping[str, Any] | None) -> Any:
    """Read ``ref`` from ``fileobj`` with ``formatter``, then check the file's checksum against the registry's.

    A file without a recorded checksum (ingested with ``checksum=False``, or a datastore
    with checksums off) is read unchecked. A file the formatter cannot read is checked
    too: a corrupted file then raises `ChecksumMismatchError`, which says why.
    """
    if not (record.checksum and record.checksum_algorithm):
        return formatter.read(fileobj, parameters=parameters)
    checked = ChecksumReader(fileobj, record.checksum_algorithm)
    try:
        obj = formatter.read(checked, parameters=parameters)  # type: ignore[arg-type]
    except FormatError:
        checked.verify(ref, record)
        raise
    checked.verify(ref, record)
    return obj
