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

import hashlib
import io
import json
import os
import posixpath
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import IO, Any, BinaryIO, cast

from fsspec.implementations.local import LocalFileSystem
from fsspec.implementations.memory import MemoryFileSystem

from ..errors import ConfigError, ReadOnlyError
from ._files import TEMPORARY_MAX_AGE, GuardedFile, PendingFile, is_temporary, stamp_seconds
from ._ingest import TRANSFER_MODES, ingest_file
from ._journal import (
    MANIFEST_DIR,
    append_manifest,
    forget_removal,
    pending_removals,
    record_removal,
    removal_listing,
)
from ._location import StoreLocation, file_hash
from ._ranges import RangedFile
from ._transactions import FileTransactions
from .backends import is_in_memory, is_url

REMOTE_CLOCK_SLACK = 60.0
"""Seconds an object store's modification time may lag this machine's clock (`Datastore.placed_since`): a
file placed that long before a get's registry query costs the get one more query."""

__all__ = ["MANIFEST_DIR", "REMOTE_CLOCK_SLACK", "TEMPORARY_MAX_AGE", "TRANSFER_MODES", "Datastore", "PendingFile", "is_temporary"]


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
        On local disk, make every committed file survive a power loss: `commit` returns
        only once the file, the directory holding its name and any directory the put made
        are on the device (``fsync``; exactly which and why in
        ``skybutler.datastore._transactions``). Off by default: a killed process never
        loses a file the kernel has accepted; only a power loss or kernel crash can.

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
        # Where the files are (paths, errors), and how they are written, committed and removed:
        # the methods here say what each does and delegate the doing.
        self._location = StoreLocation(root, storage_options or {})
        self._transactions = FileTransactions(self._location)
        self._removal_lists: dict[str, tuple[str, frozenset[str]]] = {}  # read by `removal_listing`
        self._storage_options = self._location.storage_options
        self._fs = self._location.fs
        self._root = self._location.path
        self._local = self._location.local

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
        # A URL has "://" (`is_url`): a run's paths almost never do, and a removal asks of each.
        return not path.startswith("/") and ("://" not in path or not is_url(path))

    @property
    def in_memory(self) -> bool:
        """Whether the root is in this process's memory (other processes cannot see its files)."""
        return is_in_memory(self.root)

    def _full(self, relative: str) -> str:
        """The full path of ``relative`` on the store's filesystem (`StoreLocation.full`)."""
        return self._location.full(relative)

    def url(self, path: str) -> str:
        """Return the full URL of ``path`` (an absolute path when the root is local)."""
        fs, full = self._location.locate(path)
        if isinstance(fs, LocalFileSystem):
            return full
        return str(fs.unstrip_protocol(full))

    # -- writing (done by ._transactions) ------------------------------------------------

    def write_temporary(self, path: str, writer: Callable[[BinaryIO], object] | bytes, *, replace: bool = False,
                        ) -> PendingFile:
        """Write a new file through ``writer``, ready to `commit`.

        Parameters
        ----------
        path
            Final path relative to the root.
        writer
            Called once with a binary file open for writing (closing it is harmless).
            Size and checksum are computed as it writes; a writer that seeks back and
            rewrites gets its file hashed again afterwards. Or the file's bytes
            (`Formatter.to_bytes`), written at once.
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
        return self._transactions.write(
            self._location.relative(path), writer, self.checksum_algorithm, transfer="write", replace=replace,
            disk_full_after=self.disk_full_after, head_start=self.sync,
        )

    def commit(self, pending: PendingFile) -> None:
        """Put a pending file in its final place.

        On local disk the temporary file is renamed, never over an existing file (one
        ``renameat2(RENAME_NOREPLACE)``: of two writers racing for one path, exactly one
        wins), and with ``sync`` the call returns once the file and its name are on the
        device; on other filesystems the bytes are already in place. A ``move`` ingest then
        deletes its source (a failure to do so is logged, not raised: the file is stored).

        Raises
        ------
        DatasetExistsError
            If another file took the final path meanwhile (the temporary file is left for
            `abort`).
        FileAccessError
            If the temporary file is gone or cannot be renamed, or (``sync``) the file
            cannot be synced; the file placed is then removed again.
        """
        self._transactions.commit(pending, sync=self.sync)

    def commit_many(self, pendings: Sequence[PendingFile]) -> None:
        """`commit` every pending file, all or none: the way to commit the files of one transaction.

        With ``sync``, the files and their directories are synced once all are in place
        (each directory once however many files it received): several files side by side,
        a single file and then its directory in turn (the file's sync already commits the
        journal holding its rename, so the directory's finds little left to do).

        Parameters
        ----------
        pendings
            The files to place.

        Raises
        ------
        DatasetExistsError, FileAccessError
            As `commit`; the files this call had already placed are removed again, so the
            caller aborts every pending file as if none had been committed.
        """
        self._transactions.commit_many(pendings, sync=self.sync)

    def abort(self, pending: PendingFile) -> None:
        """Discard a pending file that was not committed; never raises if it is already gone.

        Files that stay where they were (``direct`` and in-place ingests) and the source of
        a ``move`` are never touched. On an object store this deletes the final key, so
        call it only before `commit`.
        """
        self._transactions.abort(pending)

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
            dirs = sorted({self._location.relative(d) if d not in ("", ".") else "" for d in directories})
        return self._transactions.clean(dirs)

    def remove_placed(self, placed: Iterable[PendingFile]) -> None:
        """Delete files `commit_many` placed for a registry transaction that then failed.

        A file placed (renamed into its final name) for a transaction that did not commit
        is named by no row: another writer of the same dataset may take it for a crashed
        write's leftover and put its own file in its place once this transaction has
        ended. A local file is therefore deleted only while its path still holds the inode
        this store wrote (`PendingFile.inode`); another is left, with a warning. Files
        written in place (object stores, ``direct`` and in-place ingests) are left to
        `abort`. Missing files are ignored.

        Raises
        ------
        FileAccessError
            As `remove`.
        """
        self._transactions.remove_placed(placed)

    def remove(self, paths: Iterable[str]) -> None:
        """Delete files under the root; missing ones are ignored, so a repeated prune is harmless.

        Empty directories left behind on local disk are removed too.

        Raises
        ------
        FileAccessError
            If a path is not under the root (files outside it, like ``direct`` ingests,
            are never deleted) or a file cannot be deleted.
        """
        self._transactions.remove(paths)

    # -- ingest (done by ._ingest) -------------------------------------------------------

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
        algorithm = self.checksum_algorithm if checksum else None
        return ingest_file(self._transactions, source, path, transfer, algorithm, replace=replace,
                           disk_full_after=self.disk_full_after)

    # -- reading -------------------------------------------------------------------------

    def exists(self, path: str) -> bool:
        """Whether a file exists at ``path`` (a broken symlink does not count)."""
        fs, full = self._location.locate(path)
        with self._location.errors("check", path):
            if isinstance(fs, (LocalFileSystem, MemoryFileSystem)):
                return bool(fs.isfile(full))
            # Remote filesystems' isfile() answers False when the store cannot be reached;
            # a verify would then call every file missing.
            try:
                return bool(fs.info(full).get("type") == "file")
            except FileNotFoundError:
                return False

    def changed(self, path: str) -> float | None:
        """When the file at ``path`` was last placed or changed (seconds since the epoch), None if there is none.

        On local disk the inode's change time (a rename or a hard link into place sets it,
        where the modification time stays the source's); on an object store the object's
        last modification.
        """
        fs, full = self._location.locate(path)
        with self._location.errors("check", path):
            if isinstance(fs, LocalFileSystem):
                try:
                    return os.stat(full, follow_symlinks=False).st_ctime
                except (FileNotFoundError, NotADirectoryError):
                    return None
            try:
                return stamp_seconds(fs.info(full))
            except FileNotFoundError:
                return None

    def open(self, path: str, mode: str = "rb", *, partial: bool = False) -> IO[Any]:
        """Open a file for reading (``"rb"`` or ``"r"``); use it as a context manager.

        Parameters
        ----------
        path
            The file, relative to the root (or the URL of a ``direct`` ingest).
        mode
            ``"rb"`` or ``"r"``.
        partial
            The caller reads a few parts of the file (cutouts, a box of an image), not all
            of it. On an object store the file is then a `RangedFile`: it fetches only the
            bytes read (no large read-ahead), its ``prefetch(ranges)`` fetches many ranges in
            one concurrent batch, and its ``bytes_fetched`` counts the bytes that travelled.
            Whole-file reads leave it False: they keep the filesystem's large reads. Local
            and in-memory files are the same either way.

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
        fs, full = self._location.locate(path)
        try:
            with self._location.errors("read", path):
                if self._local and fs is self._location.fs:
                    # A file under a local root: Python's own file (fsspec's wrapper cost a get ~0.1 ms).
                    return open(full, "rb") if mode == "rb" else open(full, encoding="utf-8")  # noqa: SIM115
                if isinstance(fs, MemoryFileSystem):
                    # The memory filesystem hands out its one shared buffer; give each reader its own.
                    data: IO[Any] = io.BytesIO(fs.cat_file(full))
                    return io.TextIOWrapper(data, encoding="utf-8") if mode == "r" else data
                if partial and mode == "rb" and not isinstance(fs, LocalFileSystem):
                    info = fs.info(full)
                    if info.get("type") != "file":
                        raise IsADirectoryError(full)
                    return cast(IO[Any], RangedFile(fs, full, int(info["size"]), details=info,
                                                    guard=lambda: self._location.errors("read", path)))
                stream = fs.open(full, mode)
        except (FileNotFoundError, IsADirectoryError):
            raise self._location.missing(path) from None
        if isinstance(fs, LocalFileSystem):
            return cast(IO[Any], stream)
        # A remote file reads lazily: the store can fail on any read, long after open.
        return cast(IO[Any], GuardedFile(stream, lambda: self._location.errors("read", path)))

    @staticmethod
    def placed_since(fileobj: Any, since_ns: int) -> bool:
        """Whether the file ``fileobj`` (from `open`) was placed or changed at or after ``since_ns`` (ns since the epoch).

        A local file says by its change time (True if it cannot tell). An object store's
        file by the modification time its store gave when it was opened, which comes
        from another clock and in whole seconds: it counts as changed up to
        `REMOTE_CLOCK_SLACK` seconds earlier. An in-memory file never says (False).
        """
        details = getattr(fileobj, "details", None)  # before fileno: a remote file may pass on any attribute
        if not isinstance(details, Mapping) and isinstance(fileobj, io.IOBase):
            try:
                fd = fileobj.fileno()
            except io.UnsupportedOperation:  # in memory: no descriptor
                return False
            try:
                return os.fstat(fd).st_ctime_ns >= since_ns
            except OSError:
                return True
        if not isinstance(details, Mapping):
            return False
        seconds = stamp_seconds(details)
        return seconds is None or seconds + REMOTE_CLOCK_SLACK >= since_ns / 1e9

    def size(self, path: str) -> int:
        """Size of a file in bytes; `FileAccessError` if it is missing."""
        fs, full = self._location.locate(path)
        try:
            if not fs.isfile(full):
                raise self._location.missing(path)
            return int(fs.size(full))
        except FileNotFoundError:
            raise self._location.missing(path) from None

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
        fs, full = self._location.locate(path)
        try:
            return f"{algorithm}:{file_hash(fs, full, algorithm)}"
        except (FileNotFoundError, IsADirectoryError):
            raise self._location.missing(path) from None

    # -- removals that survive a crash, and run manifests (kept by ._journal) -------------------------

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
        return record_removal(self._location, paths, label=label)

    def pending_removals(self) -> Iterator[tuple[str, str, list[str]]]:
        """Lists of files whose removal was interrupted: ``(list path, label, paths)``.

        Lists of removals still running in another process are left out (same rule as for
        temporary files); so are unreadable ones (a list cut short by a crash is removed).
        """
        return pending_removals(self._location, self.open)

    def removal_listing(self, path: str) -> str | None:
        """The label of a removal (running, or interrupted) that will delete the file at ``path``; None if none.

        A file that no registry row names may be a crashed write's leftover, which the next
        write replaces, or a file of removed datasets not deleted yet, which must not be
        replaced: the removal would delete the new file after it. This tells them apart.
        """
        return self.removal_listings([path]).get(path)

    def removal_listings(self, paths: Iterable[str]) -> dict[str, str]:
        """`removal_listing` of many paths with one listing: the label for each path a removal lists."""
        return removal_listing(self._location, self.open, paths, self._removal_lists)

    def forget_removal(self, rel: str) -> None:
        """Delete a list written by `record_removal` once its files are gone."""
        forget_removal(self._location, rel)

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
        return append_manifest(self._location, run, entries)

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
        with self._location.errors("list", "/"):
            found = sorted(self._fs.find(self._root or "/"))
        for full in found:
            yield full[len(prefix) :] if full.startswith(prefix) else full.lstrip("/")
