"""Bringing an existing file into the datastore: copy, move, hard or symbolic link, or leave it in place.

Split from `skybutler.datastore.store`, which documents the modes (`Datastore.ingest`);
the result is a `PendingFile` that the store's transactions commit or abort like a write.
"""

from __future__ import annotations

import errno
import os
import posixpath
import shutil
import stat
from typing import BinaryIO

from fsspec import AbstractFileSystem
from fsspec.implementations.local import LocalFileSystem

from ..errors import ConfigError, FileAccessError
from ._files import CHUNK, PendingFile, temporary_name
from ._location import file_hash
from ._transactions import NO_LINK, FileTransactions
from .backends import is_url

__all__ = ["TRANSFER_MODES", "ingest_file"]

TRANSFER_MODES = ("auto", "copy", "move", "hardlink", "symlink", "direct")
"""How `Datastore.ingest` may bring a file in."""


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
        return _direct_local(transactions, source, algorithm)
    src_fs, src = loc.filesystem_of(source)
    src_local = isinstance(src_fs, LocalFileSystem)
    try:
        is_file = src_fs.isfile(src)
    except OSError:
        is_file = False
    if not is_file:
        raise FileAccessError(errno.ENOENT, f"Cannot ingest {source!r}: no such file")
    if src_local and not os.access(src, os.R_OK):
        raise FileAccessError(errno.EACCES, f"Cannot ingest {source!r}: the file is not readable")
    src_url = str(src_fs.unstrip_protocol(src))

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
            stream = src_fs.open(src, "rb")
        except OSError as err:
            raise FileAccessError(err.errno, f"Cannot ingest {source!r}: {err}") from err
        with stream:
            shutil.copyfileobj(stream, sink, CHUNK)

    return transactions.write(
        rel,
        copy,
        algorithm,
        transfer="move" if transfer == "move" else "copy",
        source=src_url if transfer == "move" else None,
        replace=replace,
        disk_full_after=disk_full_after,
    )


def _direct_local(transactions: FileTransactions, source: str, algorithm: str | None) -> PendingFile:
    """``direct`` ingest of a local path: one ``stat``, no fsspec round trips (bulk ingest speed)."""
    src = os.path.abspath(source)
    try:
        st = os.stat(src)
    except OSError:
        st = None
    if st is None or not stat.S_ISREG(st.st_mode):
        raise FileAccessError(errno.ENOENT, f"Cannot ingest {source!r}: no such file")
    if not os.access(src, os.R_OK):
        raise FileAccessError(errno.EACCES, f"Cannot ingest {source!r}: the file is not readable")
    url = "file://" + src
    if algorithm is None:
        return PendingFile(url, url, st.st_size, None, "direct")
    loc = transactions.location
    return _in_place(loc.fs if loc.local else LocalFileSystem(), src, url, algorithm, "direct")


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
