"""Bringing an existing file into the datastore: copy, move, hard or symbolic link, or leave it in place.

Split from `skybutler.datastore.store`, which documents the modes (`Datastore.ingest`);
the result is a `PendingFile` that the store's transactions commit or abort like a write.
"""

from __future__ import annotations

import errno
import functools
import hashlib
import io
import os
import posixpath
import shutil
import stat
from collections.abc import Callable
from typing import Any, BinaryIO

from fsspec import AbstractFileSystem
from fsspec.implementations.local import LocalFileSystem

from .. import _modes
from ..errors import ConfigError, FileAccessError
from ._files import CHUNK, PendingFile, temporary_name
from ._location import file_hash
from ._transactions import NO_LINK, FileTransactions
from .backends import is_url

__all__ = ["SMALL_FILE", "TRANSFER_MODES", "ingest_file", "scan_local"]

TRANSFER_MODES = _modes.INGEST_TRANSFER_MODES
"""How `Datastore.ingest` may bring a file in."""

SMALL_FILE = CHUNK
"""Files up to this size are read into memory once, for both their check and their checksum."""

# A FIFO or device opened by mistake must not block: the mode is checked once it is open.
_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0)


def ingest_file(
    transactions: FileTransactions,
    source: str,
    path: str,
    transfer: str,
    algorithm: str | None,
    *,
    replace: bool = False,
    disk_full_after: int | None = None,
) -> PendingFile:
    """Bring ``source`` in at ``path`` by ``transfer``, checksummed by ``algorithm``; see `Datastore.ingest`."""
    if transfer not in TRANSFER_MODES:
        raise ConfigError(f"Unknown transfer mode {transfer!r}; use one of {', '.join(TRANSFER_MODES)}")
    loc = transactions.location
    if transfer == "direct" and not is_url(source):
        return scan_local(source, algorithm)
    src_size = None
    if is_url(source):
        src_fs, src = loc.filesystem_of(source)
        src_local = isinstance(src_fs, LocalFileSystem)
        try:
            is_file = src_fs.isfile(src)
        except OSError:
            is_file = False
        src_url = str(src_fs.unstrip_protocol(src))
    else:
        # A local path: one stat, no fsspec path handling (bulk ingest speed); the same checks.
        src_fs, src, src_local = loc.fs if loc.local else LocalFileSystem(), os.path.abspath(source), True
        try:
            st = os.stat(src)
            is_file, src_size = stat.S_ISREG(st.st_mode), st.st_size
        except OSError:
            is_file = False
        src_url = "file://" + src
    if not is_file:
        raise FileAccessError(errno.ENOENT, f"Cannot ingest {source!r}: no such file")
    if src_local and not os.access(src, os.R_OK):
        raise FileAccessError(errno.EACCES, f"Cannot ingest {source!r}: the file is not readable")

    if transfer == "direct":
        return _in_place(src_fs, src, src_url, algorithm, "direct")
    if transfer == "auto" and src_fs is loc.fs and src.startswith(loc.path + "/"):
        return _in_place(src_fs, src, src[len(loc.path) + 1 :], algorithm, "in_place")

    rel = loc.relative(path)
    both_local = src_local and loc.local
    if transfer in ("hardlink", "symlink") and not both_local:
        raise FileAccessError(
            f"Cannot {transfer} {source!r} into {loc.root}: both must be on local disk"
        )
    if transfer in ("hardlink", "symlink", "auto", "move") and both_local:
        pending = _link(transactions, src, rel, transfer, algorithm, replace)
        if pending is not None:
            return pending if transfer != "move" else PendingFile(
                pending.path, pending.temp_path, pending.size, pending.checksum, "move", src_url, replace
            )

    def copy(sink: BinaryIO) -> None:
        try:
            stream = src_fs.open(src, "rb") if src_size is None else open(src, "rb", buffering=0)  # noqa: SIM115
        except OSError as err:
            raise FileAccessError(err.errno, f"Cannot ingest {source!r}: {err}") from err
        with stream:
            if src_size is None:
                shutil.copyfileobj(stream, sink, CHUNK)
                return
            # A local file unbuffered, in reads of its own size (not of a 1 MiB buffer each):
            # the last (empty) read ends it however the file changed since its stat.
            step = max(1, min(CHUNK, src_size + 1))
            while chunk := stream.read(step):
                sink.write(chunk)

    return transactions.write(
        rel,
        copy,
        algorithm,
        transfer="move" if transfer == "move" else "copy",
        source=src_url if transfer == "move" else None,
        replace=replace,
        disk_full_after=disk_full_after,
    )


def scan_local(source: str, algorithm: str | None, check: Callable[[BinaryIO], None] | None = None,
               ) -> PendingFile:
    """A local file as a ``direct`` ingest: opened once, its content checked and checksummed.

    The file is opened once, without fsspec: a small file (up to `SMALL_FILE`) is read
    once and both ``check`` and the checksum see those bytes; a larger one is given to
    ``check`` as the open file, then read again for its checksum. With neither, only
    its size is taken (one ``fstat``).

    Parameters
    ----------
    source
        Local path of the file.
    algorithm
        Checksum algorithm (``"md5"``), or None for none.
    check
        Called with a readable, seekable binary file object holding the content,
        positioned at its start (a format's check of the content); what it raises
        passes through.

    Raises
    ------
    FileAccessError
        If the file is missing, not a regular file, unreadable, or a read fails.
    """
    src = os.path.abspath(source)
    try:
        fd = os.open(src, _OPEN_FLAGS)
    except OSError as err:
        if err.errno in (errno.EACCES, errno.EPERM):
            raise FileAccessError(errno.EACCES, f"Cannot ingest {source!r}: the file is not readable") from None
        raise FileAccessError(errno.ENOENT, f"Cannot ingest {source!r}: no such file") from None
    url = "file://" + src
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise FileAccessError(errno.ENOENT, f"Cannot ingest {source!r}: no such file")
        if algorithm is None and check is None:
            return PendingFile(url, url, st.st_size, None, "direct")
        try:
            if st.st_size <= SMALL_FILE:
                data = _read_all(fd, st.st_size)
                if check is not None:
                    check(io.BytesIO(data))
                size, digest = len(data), _digest(algorithm, data)
            else:
                if check is not None:
                    with open(fd, "rb", closefd=False) as fileobj:
                        check(fileobj)
                    os.lseek(fd, 0, os.SEEK_SET)
                size, digest = _hash_fd(fd, algorithm) if algorithm else (st.st_size, None)
        except OSError as err:
            if isinstance(err, FileAccessError):
                raise
            raise FileAccessError(err.errno, f"Cannot read {url!r}: {err}") from err
    finally:
        os.close(fd)
    return PendingFile(url, url, size, f"{algorithm}:{digest}" if digest else None, "direct")


def _read_all(fd: int, size: int) -> bytes:
    # A regular file's read returns all it is asked for up to the end of the file, so a
    # short read is the end; one byte more than fstat said tells a file that grew meanwhile.
    data = os.read(fd, size + 1)
    if len(data) <= size:
        return data
    parts = [data]
    while chunk := os.read(fd, CHUNK):
        parts.append(chunk)
    return b"".join(parts)


def _digest(algorithm: str | None, data: bytes) -> str | None:
    return _hasher(algorithm)(data, usedforsecurity=False).hexdigest() if algorithm else None


@functools.cache
def _hasher(algorithm: str) -> Callable[..., Any]:
    # hashlib's named constructor (hashlib.md5) skips the lookup by name that hashlib.new
    # makes on every call: a third of the cost of hashing a small file.
    named = getattr(hashlib, algorithm, None) if algorithm in hashlib.algorithms_guaranteed else None
    return named if named is not None else functools.partial(hashlib.new, algorithm)


def _hash_fd(fd: int, algorithm: str) -> tuple[int, str]:
    digest = _hasher(algorithm)(usedforsecurity=False)
    size = 0
    while chunk := os.read(fd, CHUNK):
        digest.update(chunk)
        size += len(chunk)
    return size, digest.hexdigest()


def _in_place(fs: AbstractFileSystem, full: str, path: str, algorithm: str | None, transfer: str) -> PendingFile:
    try:
        size = int(fs.size(full))
        digest = f"{algorithm}:{file_hash(fs, full, algorithm)}" if algorithm else None
    except OSError as err:
        raise FileAccessError(err.errno, f"Cannot read {path!r}: {err}") from err
    return PendingFile(path, path, size, digest, transfer)


def _link(transactions: FileTransactions, src: str, rel: str, transfer: str, algorithm: str | None,
          replace: bool = False) -> PendingFile | None:
    """Link ``src`` to a temporary name; None when a hard link is impossible and a copy may do."""
    loc = transactions.location
    final = loc.full(rel)
    if not replace:
        transactions.refuse_existing(rel, final)
    transactions.sweep(posixpath.dirname(rel))
    temp_rel = temporary_name(rel)
    temp = loc.full(temp_rel)
    try:
        os.makedirs(posixpath.dirname(temp), exist_ok=True)
        if transfer == "symlink":
            os.symlink(os.path.abspath(src), temp)
        else:
            os.link(src, temp)
    except OSError as err:
        if transfer in ("auto", "move") and err.errno in NO_LINK:
            return None
        raise FileAccessError(err.errno, f"Cannot {transfer} {src!r} to {rel!r}: {err}") from err
    try:
        size = os.stat(temp).st_size
        digest = f"{algorithm}:{file_hash(loc.fs, temp, algorithm)}" if algorithm else None
    except OSError as err:
        loc.discard(temp)
        raise FileAccessError(err.errno, f"Cannot read {src!r}: {err}") from err
    return PendingFile(rel, temp_rel, size, digest, "hardlink" if transfer == "auto" else transfer,
                       replaces=replace)
