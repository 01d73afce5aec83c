"""Where a repository's bytes live: one fsspec-backed store for local disk, memory and S3.

A put is two steps so the butler can make it atomic with its registry transaction:
`Datastore.write_temporary` (or `Datastore.ingest`) puts the bytes down and returns a
`PendingFile`; after the registry rows are inserted the butler calls `Datastore.commit`,
or `Datastore.abort` if anything failed.

On local disk the bytes go to a temporary name beside the final one and `commit` renames
it into place (never over an existing file). On every other filesystem (S3, and the
in-memory store, which behaves like an object store so that the default test run covers
that code path) a rename would be a copy, so the bytes go straight to the final key with
an exclusive create, `commit` does nothing and `abort` deletes the key.

Recovery from crashed writes. A writer killed mid-put leaves a temporary file, or (killed
between placing the file and the registry commit) a file at the final name that no registry
row names. Temporary names carry the writer's host and process id
(``.{name}.tmp-{host}-{pid}-{random}``), so a later write into the same directory, or
`Datastore.clean_temporaries`, removes those whose writer is gone: on this host at once
(its process no longer exists), from other hosts once untouched for `TEMPORARY_MAX_AGE`
seconds (a live writer keeps its file's change time fresh while it writes). A leftover at
a final name is replaced only when the butler has checked that no row names it (see
``write_temporary(..., replace=True)``).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import json
import logging
import os
import posixpath
import re
import shutil
import stat
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import IO, Any, BinaryIO, cast

from fsspec import AbstractFileSystem
from fsspec.implementations.local import LocalFileSystem
from fsspec.implementations.memory import MemoryFileSystem

from ..errors import ConfigError, DatasetExistsError, FileAccessError, ReadOnlyError, SkyButlerError
from ._files import (
    CHUNK,
    HOST_TAG,
    TEMPORARY_MAX_AGE,
    GuardedFile,
    HashingWriter,
    PendingFile,
    is_temporary,
    owner_gone,
    temporary_name,
    writer_gone,
)
from .backends import filesystem, is_in_memory, is_url, scheme_of
from .templates import sanitize

__all__ = ["TEMPORARY_MAX_AGE", "TRANSFER_MODES", "Datastore", "PendingFile", "is_temporary"]

_log = logging.getLogger(__name__)

TRANSFER_MODES = ("auto", "copy", "move", "hardlink", "symlink", "direct")
"""How `Datastore.ingest` may bring a file in."""

# Errors of remote filesystem libraries (s3fs and what it builds on) that mean "cannot reach
# or use the store": turned into one FileAccessError line naming the endpoint and the path.
_REMOTE_ERROR_MODULES = ("botocore", "aiobotocore", "aiohttp", "s3fs", "urllib3", "requests")
# Links that fail for these reasons can be replaced by a copy (or a check-then-rename).
_NO_LINK = {errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK, errno.EACCES}


MANIFEST_DIR = ".skybutler/manifests"
"""Where run manifests live, relative to the datastore root."""

REMOVALS_DIR = ".skybutler/removals"
"""Where lists of files to delete wait until they are deleted (see `Datastore.record_removal`)."""
_REMOVAL = re.compile(r"^(?P<host>[0-9a-f]{8})-(?P<pid>[0-9]{1,10})-[0-9a-f]{32}\.json$")


class Datastore:
    """The files of one repository, under one root on local disk, in memory or on S3.

    Every path a caller gives is relative to the root and POSIX-style; absolute paths,
    ``..`` segments, backslashes and NUL are refused (`FileAccessError`). Read methods
    (`open`, `exists`, `size`, `checksum`, `url`) also accept the full URL of a file kept
    outside the root by a ``direct`` ingest (``file:///data/raw.fits``); nothing outside
    the root is ever written or removed.

    Parameters
    ----------
    root
        A local path, ``file://`` URL, ``memory://name`` (the memory filesystem is one per
        process, so give every repository its own name) or ``s3://bucket/prefix``.
    storage_options
        Passed to fsspec (credentials, endpoint URL, ...).
    checksum
        A `hashlib` algorithm (``"md5"``, ``"sha256"``, ``"blake2b"``, ...) computed while
        writing, or ``"none"`` to disable checksums.
    disk_full_after
        For tests: every write raises ``OSError(ENOSPC)`` once one file would exceed this
        many bytes, as a full disk would. Also settable as an attribute.
    sync
        On local disk, flush every written file to the device (``fsync``) before it is
        renamed into place, and its directory after, so that a file whose registry row has
        committed survives a power loss too. Off by default: a killed process never loses
        a file the kernel has accepted; only a power loss or kernel crash can.

    Examples
    --------
    >>> store = Datastore("memory://doc-example")
    >>> pending = store.write_temporary("run/a.txt", lambda f: f.write(b"hello"))
    >>> store.commit(pending)
    >>> store.open("run/a.txt").read(), pending.checksum
    (b'hello', 'md5:5d41402abc4b2a76b9719d911017c592')
    """

    def __init__(
        self,
        root: str,
        *,
        storage_options: Mapping[str, Any] | None = None,
        checksum: str = "md5",
        disk_full_after: int | None = None,
        sync: bool = False,
    ):
        if checksum != "none":
            try:
                hashlib.new(checksum, usedforsecurity=False)
            except (ValueError, TypeError):
                raise ConfigError(
                    f"Unknown checksum algorithm {checksum!r}; use one of "
                    f"{', '.join(sorted(hashlib.algorithms_guaranteed))} or 'none'"
                ) from None
        self.root = root
        self.checksum_algorithm = None if checksum == "none" else checksum
        self.disk_full_after = disk_full_after
        self.sync = sync
        self._storage_options = dict(storage_options or {})
        fs, root_path = filesystem(root, self._storage_options)
        self._fs: AbstractFileSystem = fs
        self._root = root_path.rstrip("/")
        self._local = isinstance(fs, LocalFileSystem)
        # Directories whose abandoned temporaries this store has removed: each is listed
        # once per store, on the first write into it, not on every write.
        self._swept: set[str] = set()

    def __repr__(self) -> str:
        return f"Datastore({self.root!r}, checksum={self.checksum_algorithm or 'none'!r})"

    @property
    def is_local(self) -> bool:
        """Whether the root is on local disk (temporary names and renames are used)."""
        return self._local

    @staticmethod
    def owns(path: str) -> bool:
        """Whether a recorded file path is the datastore's own (relative to its root).

        Files ingested in place ("direct") are recorded by absolute path or URL: they
        belong to whoever put them there, and removing a dataset never deletes them.
        """
        return not is_url(path) and not path.startswith("/")

    @property
    def in_memory(self) -> bool:
        """Whether the root is in this process's memory (other processes cannot see its files)."""
        return is_in_memory(self.root)

    # -- paths ---------------------------------------------------------------------------

    def _relative(self, path: str) -> str:
        bad = (
            not isinstance(path, str)
            or not path
            or "\0" in path
            or "\\" in path
            or path.startswith("/")
            or is_url(path)
            or ".." in path.split("/")
        )
        norm = "" if bad else posixpath.normpath(path)
        if bad or norm in (".", ""):
            raise FileAccessError(
                f"Path {path!r} would lie outside the datastore root {self.root} "
                "(paths are relative, POSIX-style, without '..' or NUL)"
            )
        return norm

    def _full(self, relative: str) -> str:
        return f"{self._root}/{relative}" if self._root else f"/{relative}"

    def _filesystem_of(self, url: str) -> tuple[AbstractFileSystem, str]:
        """The filesystem and path of a URL or local path outside the root."""
        if not is_url(url):
            url = os.path.abspath(url)
        protocols = self._fs.protocol if isinstance(self._fs.protocol, tuple) else (self._fs.protocol,)
        if scheme_of(url) in protocols or (self._local and not is_url(url)):
            return self._fs, self._fs._strip_protocol(url)
        fs, path = filesystem(url)
        return fs, path

    def _locate(self, path: str) -> tuple[AbstractFileSystem, str]:
        """Filesystem and full path for a read: a path under the root, or a ``direct`` URL."""
        if isinstance(path, str) and is_url(path):
            return self._filesystem_of(path)
        return self._fs, self._full(self._relative(path))

    def _endpoint(self) -> str:
        options = self._storage_options
        url = options.get("endpoint_url") or (options.get("client_kwargs") or {}).get("endpoint_url")
        return f" (endpoint {url})" if url else ""

    @contextlib.contextmanager
    def _errors(self, action: str, path: str) -> Iterator[None]:
        """Turn an error of the filesystem library into one `FileAccessError` line.

        An unreachable or refusing object store otherwise surfaces as a botocore or aiohttp
        traceback of a hundred lines; the line names the store, its endpoint and the path.
        """
        try:
            yield
        except SkyButlerError:
            raise
        except (FileNotFoundError, FileExistsError, IsADirectoryError):
            raise  # callers give these their own meaning
        except Exception as err:
            module = type(err).__module__.split(".")[0]
            if not isinstance(err, OSError) and module not in _REMOTE_ERROR_MODULES:
                raise
            reason = (str(err).strip().splitlines() or [type(err).__name__])[0]
            code = err.errno if isinstance(err, OSError) and err.errno else errno.EIO
            raise FileAccessError(
                code, f"Cannot {action} {path!r} in the datastore at {self.root}{self._endpoint()}: {reason}"
            ) from None

    def _missing(self, path: str) -> FileAccessError:
        return FileAccessError(errno.ENOENT, f"No file {path!r} in the datastore at {self.root}")

    def url(self, path: str) -> str:
        """Return the full URL of ``path`` (an absolute path when the root is local)."""
        fs, full = self._locate(path)
        if isinstance(fs, LocalFileSystem):
            return full
        return str(fs.unstrip_protocol(full))

    # -- writing -------------------------------------------------------------------------

    def write_temporary(self, path: str, writer: Callable[[BinaryIO], object], *, replace: bool = False,
                        ) -> PendingFile:
        """Write a new file through ``writer``, ready to `commit`.

        Parameters
        ----------
        path
            Final path relative to the root.
        writer
            Called once with a binary file open for writing (closing it is harmless).
            Size and checksum are computed as it writes; a writer that seeks back and
            rewrites gets its file hashed again afterwards.
        replace
            The caller has found a file at ``path`` that no registry row names (left by a
            crashed write): the bytes go to a temporary name even on an object store, and
            `commit` replaces that file. Never pass it for a file a row may name.

        Returns
        -------
        PendingFile
            To pass to `commit` or `abort`.

        Raises
        ------
        DatasetExistsError
            If a file already exists at ``path`` (and ``replace`` is False): no put ever
            overwrites a stored dataset.
        FileAccessError
            If ``path`` is unsafe, or writing fails (the ``errno`` is kept: ``ENOSPC`` for
            a full disk). Whatever ``writer`` raises, nothing is left behind.
        """
        return self._write(self._relative(path), writer, self.checksum_algorithm, transfer="write", replace=replace)

    def _write(
        self,
        rel: str,
        writer: Callable[[BinaryIO], object],
        algorithm: str | None,
        *,
        transfer: str,
        source: str | None = None,
        replace: bool = False,
    ) -> PendingFile:
        final = self._full(rel)
        if not replace:
            self._refuse_existing(rel, final)
        self._sweep(posixpath.dirname(rel))
        to_temporary = self._local or replace
        if to_temporary:
            temp_rel = temporary_name(rel)
            temp = self._full(temp_rel)
            try:
                with self._errors("write", rel):
                    try:
                        raw: IO[bytes] = self._open_new(temp)
                    except FileNotFoundError:
                        # Directories are made only when missing: one syscall fewer per file.
                        if self._local:
                            os.makedirs(posixpath.dirname(temp), exist_ok=True)
                        raw = self._open_new(temp)
            except OSError as err:
                if isinstance(err, SkyButlerError):
                    raise
                raise FileAccessError(err.errno, f"Cannot write {rel!r} under {self.root}: {err}") from err
        else:
            temp_rel, temp = rel, final
            try:
                with self._errors("write", rel):
                    raw = self._fs.open(final, "xb")
            except FileExistsError:
                raise self._exists_error(rel) from None
            except OSError as err:
                if isinstance(err, SkyButlerError):
                    raise
                raise FileAccessError(err.errno, f"Cannot write {rel!r} under {self.root}: {err}") from err
        sink = HashingWriter(raw, algorithm, self.disk_full_after)
        try:
            with self._errors("write", rel):
                try:
                    writer(cast(BinaryIO, sink))
                    if self.sync and self._local:
                        raw.flush()
                        os.fsync(raw.fileno())
                finally:
                    raw.close()
        except BaseException as err:
            # An exclusive create that lost a race on an object store reports it when the
            # upload finishes; the key then holds someone else's file, so leave it.
            if to_temporary or not isinstance(err, FileExistsError):
                self._discard(temp)
            if isinstance(err, FileExistsError) and not to_temporary:
                raise self._exists_error(rel) from None
            if isinstance(err, OSError) and not isinstance(err, SkyButlerError):
                raise FileAccessError(
                    err.errno, f"Cannot write {rel!r} under {self.root}: {err.strerror or err}"
                ) from err
            raise
        size, digest = sink.size, sink.hexdigest()
        if sink.rewritten:
            size = int(self._fs.size(temp))
            digest = self._hash(self._fs, temp, algorithm) if algorithm else None
        checksum = f"{algorithm}:{digest}" if algorithm and digest else None
        return PendingFile(rel, temp_rel, size, checksum, transfer, source, replaces=replace)

    def _open_new(self, full: str) -> IO[bytes]:
        if self._local:
            return open(full, "xb")  # noqa: SIM115 - the caller closes it on every path
        return cast(IO[bytes], self._fs.open(full, "xb"))

    def _exists_error(self, rel: str) -> DatasetExistsError:
        return DatasetExistsError(
            f"File {rel!r} already exists in the datastore at {self.root}; "
            "no put ever overwrites a stored dataset"
        )

    def _refuse_existing(self, rel: str, full: str) -> None:
        with self._errors("write", rel):
            taken = os.path.lexists(full) if self._local else self._fs.exists(full)
        if taken:
            raise self._exists_error(rel)

    # -- leftovers of crashed writes -------------------------------------------------------

    def _sweep(self, directory: str) -> None:
        """Remove abandoned temporaries from ``directory`` the first time this store writes there."""
        if directory in self._swept:
            return
        self._swept.add(directory)
        try:
            self._clean_directory(directory)
        except (OSError, SkyButlerError) as err:  # cleaning is a courtesy: never fail a write for it
            _log.warning("Could not clean temporary files in %s under %s: %s", directory, self.root, err)

    def _clean_directory(self, directory: str) -> int:
        full_dir = self._full(directory) if directory else self._root
        now = time.time()
        stale: list[str] = []
        if self._local:
            try:
                entries = list(os.scandir(full_dir))
            except (FileNotFoundError, NotADirectoryError):
                return 0
            for entry in entries:
                if entry.name.startswith(".") and ".tmp-" in entry.name:
                    try:
                        changed = entry.stat(follow_symlinks=False).st_ctime
                    except FileNotFoundError:
                        continue
                    if writer_gone(entry.name, changed, now):
                        stale.append(entry.path)
        else:
            with self._errors("list", directory or "/"):
                try:
                    infos = self._fs.ls(full_dir, detail=True, refresh=True)
                except FileNotFoundError:
                    return 0
            for info in infos:
                name = posixpath.basename(str(info["name"]).rstrip("/"))
                if info.get("type") != "file" or not (name.startswith(".") and ".tmp-" in name):
                    continue
                modified = info.get("LastModified") or info.get("created") or info.get("mtime")
                changed = modified.timestamp() if hasattr(modified, "timestamp") else float(modified or now)
                if writer_gone(name, changed, now):
                    stale.append(str(info["name"]))
        for path in stale:
            self._discard(path)
        if stale:
            _log.info("Removed %d abandoned temporary file(s) in %s under %s", len(stale), directory or "/", self.root)
        return len(stale)

    def clean_temporaries(self, directories: Iterable[str] | None = None) -> int:
        """Remove temporary files left by writers that are gone; returns how many.

        A temporary file's writer is gone when it ran on this host and its process no
        longer exists, or when the file has not changed for `TEMPORARY_MAX_AGE` seconds.
        Files of live writers are left alone.

        Parameters
        ----------
        directories
            Directories relative to the root to clean (not recursive); None cleans every
            directory under the root.
        """
        if directories is None:
            dirs = sorted({posixpath.dirname(p) for p in self.walk() if is_temporary(p)})
        else:
            dirs = sorted({self._relative(d) if d not in ("", ".") else "" for d in directories})
        removed = 0
        for directory in dirs:
            removed += self._clean_directory(directory)
            self._swept.add(directory)
        return removed

    def _discard(self, full: str) -> None:
        try:
            if self._local:
                os.unlink(full)
            else:
                self._fs.rm_file(full)
        except FileNotFoundError:
            pass
        except Exception as err:  # never mask the error that made us clean up
            _log.warning("Could not remove %s: %s", full, (str(err).splitlines() or [""])[0])

    def commit(self, pending: PendingFile) -> None:
        """Put a pending file in its final place.

        On local disk the temporary file is renamed, never over an existing file; on
        other filesystems the bytes are already in place. A ``move`` ingest then deletes
        its source (a failure to do so is logged, not raised: the file is stored).

        Raises
        ------
        DatasetExistsError
            If another file took the final path meanwhile (the temporary file is left for
            `abort`).
        FileAccessError
            If the temporary file is gone or cannot be renamed.
        """
        if pending.replaces:
            self._replace_leftover(pending.temp_path, pending.path)
        elif pending.temp_path != pending.path:
            self._rename_into_place(pending.temp_path, pending.path)
        if pending.source is not None:
            try:
                fs, src = self._filesystem_of(pending.source)
                fs.rm_file(src)
            except OSError as err:
                _log.warning("Stored %s, but could not remove the moved source %s: %s",
                             pending.path, pending.source, err)

    def _rename_into_place(self, temp_rel: str, rel: str) -> None:
        temp, final = self._full(self._relative(temp_rel)), self._full(self._relative(rel))
        try:
            # A hard link never replaces an existing file, so no check-then-rename race.
            os.link(temp, final, follow_symlinks=False)
        except FileExistsError:
            raise self._exists_error(rel) from None
        except FileNotFoundError as err:
            raise FileAccessError(err.errno, f"Cannot commit {rel!r}: its temporary file {temp_rel!r} is gone") from err
        except OSError as err:
            if err.errno not in _NO_LINK:
                raise FileAccessError(err.errno, f"Cannot commit {rel!r} under {self.root}: {err}") from err
            # A filesystem without hard links: check, then rename.
            if os.path.lexists(final):
                raise self._exists_error(rel) from None
            os.replace(temp, final)
            self._sync_directory(final)
            return
        self._discard(temp)
        self._sync_directory(final)

    def _sync_directory(self, full: str) -> None:
        """Make a new directory entry durable (``sync``): the rename is on the device before the commit."""
        if not (self.sync and self._local):
            return
        fd = os.open(posixpath.dirname(full), os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def _replace_leftover(self, temp_rel: str, rel: str) -> None:
        temp, final = self._full(self._relative(temp_rel)), self._full(self._relative(rel))
        _log.warning("Replacing %r under %s: no registry row names it (left by an interrupted write)", rel, self.root)
        try:
            with self._errors("commit", rel):
                if self._local:
                    os.replace(temp, final)  # atomic: readers see the old file or the new one
                    self._sync_directory(final)
                    return
                # An object store has no rename: copy over the leftover, then drop the temporary.
                self._fs.copy(temp, final)
        except FileNotFoundError as err:
            raise FileAccessError(errno.ENOENT, f"Cannot commit {rel!r}: its temporary file {temp_rel!r} is gone") from err
        self._discard(temp)

    def abort(self, pending: PendingFile) -> None:
        """Discard a pending file that was not committed; never raises if it is already gone.

        Files that stay where they were (``direct`` and in-place ingests) and the source of
        a ``move`` are never touched. On an object store this deletes the final key, so
        call it only before `commit`.
        """
        if pending.transfer in ("direct", "in_place"):
            return
        full = self._full(self._relative(pending.temp_path))
        if pending.temp_path == pending.path and not self._holds(full, pending):
            # Another writer replaced what we wrote (it found no row naming the file and
            # committed its own): that file is stored now, so it stays.
            return
        self._discard(full)

    def _holds(self, full: str, pending: PendingFile) -> bool:
        """Whether the object at ``full`` still holds the bytes of ``pending`` (object stores)."""
        try:
            info = self._fs.info(full)
        except FileNotFoundError:
            return False
        except Exception:  # cannot tell (store unreachable): deleting is then what fails anyway
            return True
        if int(info.get("size", -1)) != pending.size:
            return False
        algorithm, _, digest = (pending.checksum or "").partition(":")
        etag = str(info.get("ETag") or "").strip('"')
        if algorithm == "md5" and etag and "-" not in etag:
            return etag == digest
        return True

    def remove(self, paths: Iterable[str]) -> None:
        """Delete files under the root; missing ones are ignored, so a repeated prune is harmless.

        Empty directories left behind on local disk are removed too.

        Raises
        ------
        FileAccessError
            If a path is not under the root (files outside it, like ``direct`` ingests,
            are never deleted) or a file cannot be deleted.
        """
        for path in paths:
            rel = self._relative(path)
            full = self._full(rel)
            try:
                with self._errors("remove", rel):
                    if self._local:
                        os.unlink(full)
                    else:
                        self._fs.rm_file(full)
            except FileNotFoundError:
                continue
            except OSError as err:
                if isinstance(err, SkyButlerError):
                    raise
                raise FileAccessError(err.errno, f"Cannot remove {rel!r} under {self.root}: {err}") from err
            if self._local:
                self._remove_empty_parents(rel)

    def _remove_empty_parents(self, rel: str) -> None:
        parent = posixpath.dirname(rel)
        while parent:
            try:
                os.rmdir(self._full(parent))
            except OSError:  # not empty, or already gone
                return
            parent = posixpath.dirname(parent)

    # -- ingest --------------------------------------------------------------------------

    def ingest(self, source: str, path: str, transfer: str, *, checksum: bool = True, replace: bool = False,
               ) -> PendingFile:
        """Bring an existing file into the datastore, ready to `commit`.

        Parameters
        ----------
        source
            A local path or URL of the file.
        path
            Final path relative to the root (ignored for ``direct``).
        transfer
            ``"copy"``; ``"move"`` (copied, or hard-linked when possible, and the source
            deleted only by `commit`); ``"hardlink"`` or ``"symlink"`` (local disk only);
            ``"direct"`` (the file stays where it is and ``PendingFile.path`` is its
            absolute URL); ``"auto"`` (a file already under the root stays in place at its
            own path, otherwise a hard link when possible, else a copy).
        checksum
            False skips computing the checksum (for speed on large files).
        replace
            As for `write_temporary`: ``path`` holds a leftover no registry row names.

        Raises
        ------
        FileAccessError
            If the source is missing or unreadable, ``path`` is unsafe, or the transfer is
            impossible (a link to or from a non-local filesystem).
        DatasetExistsError
            If a file already exists at ``path``.
        ConfigError
            If ``transfer`` is not one of `TRANSFER_MODES`.
        """
        if transfer not in TRANSFER_MODES:
            raise ConfigError(f"Unknown transfer mode {transfer!r}; use one of {', '.join(TRANSFER_MODES)}")
        algorithm = self.checksum_algorithm if checksum else None
        if transfer == "direct" and not is_url(source):
            return self._direct_local(source, algorithm)
        src_fs, src = self._filesystem_of(source)
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
            return self._in_place(src_fs, src, src_url, algorithm, "direct")
        if transfer == "auto" and src_fs is self._fs and src.startswith(self._root + "/"):
            return self._in_place(src_fs, src, src[len(self._root) + 1 :], algorithm, "in_place")

        rel = self._relative(path)
        both_local = src_local and self._local
        if transfer in ("hardlink", "symlink") and not both_local:
            raise FileAccessError(
                f"Cannot {transfer} {source!r} into {self.root}: both must be on local disk"
            )
        if transfer in ("hardlink", "symlink", "auto", "move") and both_local:
            pending = self._link(src, rel, transfer, algorithm, replace)
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

        return self._write(
            rel,
            copy,
            algorithm,
            transfer="move" if transfer == "move" else "copy",
            source=src_url if transfer == "move" else None,
            replace=replace,
        )

    def _direct_local(self, source: str, algorithm: str | None) -> PendingFile:
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
        return self._in_place(self._fs if self._local else LocalFileSystem(), src, url, algorithm, "direct")

    def _in_place(
        self, fs: AbstractFileSystem, full: str, path: str, algorithm: str | None, transfer: str
    ) -> PendingFile:
        try:
            size = int(fs.size(full))
            digest = f"{algorithm}:{self._hash(fs, full, algorithm)}" if algorithm else None
        except OSError as err:
            raise FileAccessError(err.errno, f"Cannot read {path!r}: {err}") from err
        return PendingFile(path, path, size, digest, transfer)

    def _link(self, src: str, rel: str, transfer: str, algorithm: str | None, replace: bool = False,
              ) -> PendingFile | None:
        """Link ``src`` to a temporary name; None when a hard link is impossible and a copy may do."""
        final = self._full(rel)
        if not replace:
            self._refuse_existing(rel, final)
        self._sweep(posixpath.dirname(rel))
        temp_rel = temporary_name(rel)
        temp = self._full(temp_rel)
        try:
            os.makedirs(posixpath.dirname(temp), exist_ok=True)
            if transfer == "symlink":
                os.symlink(os.path.abspath(src), temp)
            else:
                os.link(src, temp)
        except OSError as err:
            if transfer in ("auto", "move") and err.errno in _NO_LINK:
                return None
            raise FileAccessError(err.errno, f"Cannot {transfer} {src!r} to {rel!r}: {err}") from err
        try:
            size = os.stat(temp).st_size
            digest = f"{algorithm}:{self._hash(self._fs, temp, algorithm)}" if algorithm else None
        except OSError as err:
            self._discard(temp)
            raise FileAccessError(err.errno, f"Cannot read {src!r}: {err}") from err
        return PendingFile(rel, temp_rel, size, digest, "hardlink" if transfer == "auto" else transfer,
                           replaces=replace)

    # -- reading -------------------------------------------------------------------------

    def exists(self, path: str) -> bool:
        """Whether a file exists at ``path`` (a broken symlink does not count)."""
        fs, full = self._locate(path)
        with self._errors("check", path):
            if isinstance(fs, (LocalFileSystem, MemoryFileSystem)):
                return bool(fs.isfile(full))
            # Remote filesystems' isfile() answers False when the store cannot be reached;
            # a verify would then call every file missing.
            try:
                return bool(fs.info(full).get("type") == "file")
            except FileNotFoundError:
                return False

    def open(self, path: str, mode: str = "rb") -> IO[Any]:
        """Open a file for reading (``"rb"`` or ``"r"``); use it as a context manager.

        Raises
        ------
        FileAccessError
            If there is no such file (the message names the path and the root).
        ReadOnlyError
            If ``mode`` would write: datastore files are written only through `write_temporary`.
        """
        if mode not in ("rb", "r"):
            raise ReadOnlyError(f"Datastore file {path!r} is opened for reading only, not {mode!r}; "
                                "use write_temporary")
        fs, full = self._locate(path)
        try:
            with self._errors("read", path):
                if isinstance(fs, MemoryFileSystem):
                    # The memory filesystem hands out its one shared buffer; give each reader its own.
                    data: IO[Any] = io.BytesIO(fs.cat_file(full))
                    return io.TextIOWrapper(data, encoding="utf-8") if mode == "r" else data
                stream = fs.open(full, mode)
        except (FileNotFoundError, IsADirectoryError):
            raise self._missing(path) from None
        if isinstance(fs, LocalFileSystem):
            return cast(IO[Any], stream)
        # A remote file reads lazily: the store can fail on any read, long after open.
        return cast(IO[Any], GuardedFile(stream, lambda: self._errors("read", path)))

    def size(self, path: str) -> int:
        """Size of a file in bytes; `FileAccessError` if it is missing."""
        fs, full = self._locate(path)
        try:
            if not fs.isfile(full):
                raise self._missing(path)
            return int(fs.size(full))
        except FileNotFoundError:
            raise self._missing(path) from None

    def checksum(self, path: str, algorithm: str | None = None) -> str:
        """Checksum of a file, ``"<algorithm>:<hex digest>"``, read in chunks.

        Parameters
        ----------
        path
            The file.
        algorithm
            Defaults to the store's; give the one a recorded checksum names to verify it.

        Raises
        ------
        FileAccessError
            If the file is missing.
        ConfigError
            If no algorithm is given and checksums are disabled.
        """
        algorithm = algorithm or self.checksum_algorithm
        if algorithm is None:
            raise ConfigError(f"Checksums are disabled for the datastore at {self.root}")
        fs, full = self._locate(path)
        try:
            return f"{algorithm}:{self._hash(fs, full, algorithm)}"
        except (FileNotFoundError, IsADirectoryError):
            raise self._missing(path) from None

    @staticmethod
    def _hash(fs: AbstractFileSystem, full: str, algorithm: str) -> str:
        digest = hashlib.new(algorithm, usedforsecurity=False)
        with fs.open(full, "rb") as stream:
            while chunk := stream.read(CHUNK):
                digest.update(chunk)
        return digest.hexdigest()

    # -- removals that survive a crash ---------------------------------------------------------

    def record_removal(self, paths: Iterable[str], *, label: str) -> str:
        """Write down files about to be deleted, before their registry rows are deleted.

        The butler deletes rows, then files; a crash or an unreachable store in between
        would leave files no row names. The list lets the next removal (or
        `Butler.clean_temporaries`) finish the job; it only deletes files that no row names
        then, so a list whose transaction never committed deletes nothing.

        Returns
        -------
        str
            The list's path relative to the root, for `forget_removal`.
        """
        rel = f"{REMOVALS_DIR}/{HOST_TAG}-{os.getpid()}-{os.urandom(16).hex()}.json"
        text = json.dumps({"label": label, "paths": sorted(self._relative(p) for p in paths)})
        full = self._full(rel)
        with self._errors("write", rel):
            if self._local:
                os.makedirs(posixpath.dirname(full), exist_ok=True)
            with self._fs.open(full, "wb") as f:
                f.write(text.encode("utf-8"))
        return rel

    def pending_removals(self) -> Iterator[tuple[str, str, list[str]]]:
        """Lists of files whose removal was interrupted: ``(list path, label, paths)``.

        Lists of removals still running in another process are left out (same rule as for
        temporary files); so are unreadable ones (a list cut short by a crash is removed).
        """
        base = self._full(REMOVALS_DIR)
        with self._errors("list", REMOVALS_DIR):
            try:
                infos = self._fs.ls(base, detail=True, refresh=True) if not self._local else [
                    {"name": e.path, "ctime": e.stat().st_ctime} for e in os.scandir(base)]
            except (FileNotFoundError, NotADirectoryError):
                return
        now = time.time()
        for info in sorted(infos, key=lambda i: str(i["name"])):
            name = posixpath.basename(str(info["name"]))
            match = _REMOVAL.match(name)
            if match is None:
                continue
            changed = info.get("ctime") or info.get("LastModified") or info.get("created") or now
            changed = changed.timestamp() if hasattr(changed, "timestamp") else float(changed)
            mine = match["host"] == HOST_TAG and int(match["pid"]) == os.getpid()
            if not mine and not owner_gone(match["host"], match["pid"], changed, now):
                continue
            rel = f"{REMOVALS_DIR}/{name}"
            try:
                with self.open(rel) as f:
                    data = json.loads(f.read())
                yield rel, str(data["label"]), [str(p) for p in data["paths"]]
            except (ValueError, KeyError, TypeError):
                self.forget_removal(rel)

    def forget_removal(self, rel: str) -> None:
        """Delete a list written by `record_removal` once its files are gone."""
        with self._errors("remove", rel):
            self._discard(self._full(self._relative(rel)))

    def append_manifest(self, run: str, entries: Iterable[Mapping[str, str]]) -> str:
        """Record the identity of files that cannot carry it, in the run's manifest.

        One JSON object per line (``dataset_id``, ``dataset_type``, ``data_id``, ``run``,
        ``path``) under ``MANIFEST_DIR``: on local disk appended to one file per run (an
        ``O_APPEND`` write of whole lines, safe between processes); on object stores, which
        cannot append, one new object per call. With the files and their manifests, the
        registry of a lost repository can be rebuilt and another site can ingest the files.

        Returns
        -------
        str
            The manifest's path relative to the root.
        """
        text = "".join(json.dumps(dict(e), sort_keys=True) + "\n" for e in entries)
        if not text:
            return ""
        name = sanitize(run)
        if self._local:
            rel = f"{MANIFEST_DIR}/{name}.jsonl"
            full = self._full(rel)
            try:
                fd = os.open(full, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            except FileNotFoundError:
                os.makedirs(os.path.dirname(full), exist_ok=True)
                fd = os.open(full, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, text.encode("utf-8"))
            finally:
                os.close(fd)
            return rel
        rel = f"{MANIFEST_DIR}/{name}/{os.urandom(16).hex()}.jsonl"
        with self._errors("write", rel), self._fs.open(self._full(rel), "wb") as f:
            f.write(text.encode("utf-8"))
        return rel

    def manifest_entries(self) -> Iterator[dict[str, str]]:
        """Every entry of every run manifest (see `append_manifest`)."""
        for path in self.walk():
            if path.startswith(MANIFEST_DIR + "/") and path.endswith(".jsonl"):
                with self.open(path, "r") as f:
                    for line in f:
                        if line.strip():
                            yield json.loads(line)

    def walk(self) -> Iterator[str]:
        """Every file under the root as a relative path, temporary files included.

        Files come sorted within each directory; symlinks (from ``symlink`` ingests) are
        listed even when broken, so `verify` can report them.
        Use `is_temporary` to tell leftovers of unfinished puts apart.
        """
        if self._local:
            for dirpath, dirnames, filenames in os.walk(self._root):
                dirnames.sort()
                base = os.path.relpath(dirpath, self._root)
                for name in sorted(filenames):
                    yield name if base == "." else posixpath.join(base.replace(os.sep, "/"), name)
            return
        prefix = self._root + "/"
        with self._errors("list", "/"):
            found = sorted(self._fs.find(self._root or "/"))
        for full in found:
            yield full[len(prefix) :] if full.startswith(prefix) else full.lstrip("/")
