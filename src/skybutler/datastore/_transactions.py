"""The datastore's half of an atomic put: write to a temporary place, then commit or abort.

Split from `skybutler.datastore.store`, which documents the protocol (`Datastore.write_temporary`,
`Datastore.commit`, `Datastore.abort`); this module does it: temporary names and exclusive
creates, the rename that never replaces a stored file, the replacement of a leftover no row
names, removal, and the sweep of temporaries whose writer is gone.

Placing a file. On local disk `FileTransactions.commit` renames the temporary file to its
final name with ``renameat2(RENAME_NOREPLACE)`` (`rename_no_replace`): one atomic step that
fails if the name is taken, so of two writers racing for one name exactly one wins and a
stored file is never replaced. Filesystems without the flag get a hard link and an unlink
(equally safe), or, without hard links either, a check and a rename. `write` also checks
the final name before writing, but only to tell the caller early (the butler then looks
for a leftover of a crashed write it may replace); the rename is what guarantees.

Syncs (only with ``sync``: the repository's ``registry.sync_every_commit``). A committed put
must survive a power loss: once the registry's commit is on the device, so must be the
file's bytes, its name, and the name of every directory on the way to it. The butler calls
`commit` inside its registry transaction, just before the commit, so `commit` returns only
when all of these are on the device:

1. the file (``fsync`` of the final name, after the rename): its bytes and size. Not
   synced under its temporary name beforehand: a power loss before the registry commits
   may then leave a file with lost bytes at its final name, but no row names that file
   (the butler replaces such a leftover on the next put of it, and ``verify`` reports it),
   which is the same outcome as a process killed at that point. ``fsync`` rather than
   ``fdatasync``: the inode is new, so ``fdatasync`` would wait for the same journal
   commit (its size and blocks) and save nothing.
2. the directory holding the new name (``fsync`` of the directory): a rename is a change
   to the directory, not to the file; without it the file could come back nameless (or
   under its temporary name, which the sweep then deletes). Once per `commit`, since every
   commit renames; once per directory for all the files of one `commit_many`.
3. each directory's own name in its parent, for directories the store has not synced yet
   (``run/``, ``run/calexp/`` ...): a put into a directory made moments ago by this or any
   other writer must not leave its file's name in a directory that is itself lost. Each
   directory is synced in its parent once per store (`FileTransactions.durable_dirs`), not
   on every put; a directory removed and made again is synced again.
4. for ``hardlink``, ``symlink`` and ``move`` ingests, 1 covers the bytes someone else
   wrote (the link's target), perhaps moments ago and not yet on the device.

For several files, 1, 2 and 3 are started together once the renames are done (`sync_paths`:
a thread each, up to 16), so a journaling filesystem commits them as one; they are never
synced one file after another. For one file (a put of one dataset) the file is synced in the
process's syncer thread while the calling thread syncs its directory and each new one above
(`sync_alongside`): no thread is started per put. If any sync fails, the placed files are
removed again and `FileAccessError` raised (the registry transaction then rolls back).
The registry's own commit (SQLite's WAL with ``synchronous=FULL``) is the last flush, made
by the registry. Nothing else is synced: the temporary file (renamed away), the run
manifest lines the butler appends (a power loss may lose the last lines; every row and
file stays, and a rebuild reads the files' own identity where the format holds it), and
removals (a removal lost to a power loss leaves a file no row names, which ``verify``
finds). Object stores need none of this: a finished upload is stored.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import posixpath
import time
from collections.abc import Callable, Iterable, Sequence
from typing import IO, BinaryIO, TypeVar, cast

from ..errors import FileAccessError, SkyButlerError
from ._durability import rename_no_replace, start_writeback, sync_alongside, sync_paths
from ._files import HashingWriter, PendingFile, stamp_seconds, temporary_name, writer_gone
from ._location import StoreLocation, file_hash

__all__ = ["NO_LINK", "FileTransactions"]

_log = logging.getLogger(__name__)

NO_LINK = frozenset({errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK, errno.EACCES})
"""Errors of a link that can be replaced by a copy (or a check-then-rename)."""

def _inode(full: str) -> int | None:
    """The inode at local path ``full`` (not following a link), or None when nothing is there."""
    try:
        return os.lstat(full).st_ino
    except FileNotFoundError:
        return None


def _making_directories(create: Callable[[], _T], path: str) -> _T:
    """``create()`` of the local file ``path``, its directories made when missing.

    Made only when the first try finds them missing (one system call fewer per file), and
    again if a removal that emptied the directory took it away between the two (it
    removes the directories it leaves empty): a few tries, then the error.
    """
    for attempt in range(_TRIES):
        try:
            return create()
        except FileNotFoundError:
            if attempt == _TRIES - 1:
                raise
            os.makedirs(posixpath.dirname(path), exist_ok=True)
    raise AssertionError("unreachable")  # pragma: no cover


_T = TypeVar("_T")
_TRIES = 4

_NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
"""How `FileTransactions._write_bytes` opens a temporary file: created here or not at all."""


class FileTransactions:
    """Writes, commits, aborts and removals of files under one root.

    ``sync`` and ``disk_full_after`` are given per call: they are the `Datastore`'s
    attributes, which callers (and tests) may change on a live store. What ``sync``
    syncs, and why, is in the module's docstring.

    Parameters
    ----------
    location
        The root the files are under.
    """

    def __init__(self, location: StoreLocation):
        self.location = location
        # Directories whose abandoned temporaries this store has removed: each is listed
        # once per store, on the first write into it, not on every write.
        self.swept: set[str] = set()
        # Directories whose own entry in their parent is known to be on the device (``sync``):
        # a put into a new directory syncs each new ancestor once, not every put.
        self.durable_dirs: set[str] = set()
        # Whether renameat2(RENAME_NOREPLACE) works here: False once the filesystem said it does not.
        self.use_renameat2 = True

    # -- writing ---------------------------------------------------------------------------

    def write(
        self,
        rel: str,
        writer: Callable[[BinaryIO], object] | bytes,
        algorithm: str | None,
        *,
        transfer: str,
        source: str | None = None,
        replace: bool = False,
        disk_full_after: int | None = None,
        head_start: bool = False,
    ) -> PendingFile:
        """Write a new file at ``rel`` (already checked) through ``writer``; see `Datastore.write_temporary`.

        Nothing is synced here, even with ``sync``: `commit` syncs the file under its final name.
        ``head_start`` (given with ``sync``) starts writing a local file to the device
        (`start_writeback`), so that `commit`'s ``fsync`` finds most of it done. ``writer``
        may be the file's bytes (`Formatter.to_bytes`): on local disk they are written with
        ``os.write`` and hashed at once.
        """
        if isinstance(writer, bytes) and not (self.location.local and disk_full_after is None and not replace):
            data = writer
            writer = lambda f: f.write(data)  # noqa: E731
        loc = self.location
        final = loc.full(rel)
        if not replace:
            if loc.local:
                # lexists: a link, even broken, takes the name too. Straight to the syscall (a put
                # of many files makes one per file): `loc.errors` translates remote errors only.
                if os.path.lexists(final):
                    raise loc.exists_error(rel)
            else:
                self.refuse_existing(rel, final)
        directory = posixpath.dirname(rel)
        if directory not in self.swept:
            self.sweep(directory)
        to_temporary = loc.local or replace
        if isinstance(writer, bytes):  # a new local file: one os.write
            temp_rel, temp, fd = self._new_temporary(rel, lambda path: os.open(path, _NEW_FILE, 0o666))
            return self._write_bytes(rel, temp_rel, temp, fd, writer, algorithm, transfer, head_start)
        if to_temporary:
            temp_rel, temp, raw = self._new_temporary(rel, self._open_new)
        else:
            temp_rel, temp = rel, final
            try:
                with loc.errors("write", rel):
                    raw = loc.fs.open(final, "xb")
            except FileExistsError:
                raise loc.exists_error(rel) from None
            except OSError as err:
                if isinstance(err, SkyButlerError):
                    raise
                raise FileAccessError(err.errno, f"Cannot write {rel!r} under {loc.root}: {err}") from err
        sink = HashingWriter(raw, algorithm, disk_full_after)
        try:
            try:
                writer(cast(BinaryIO, sink))
                if head_start and to_temporary and loc.local:
                    raw.flush()
                    start_writeback(raw.fileno())
            finally:
                raw.close()
        except BaseException as caught:
            problem = self._translated(caught, rel) if isinstance(caught, Exception) else caught
            # An exclusive create that lost a race on an object store reports it when the
            # upload finishes; the key then holds someone else's file, so leave it.
            if to_temporary or not isinstance(problem, FileExistsError):
                loc.discard(temp)
            if isinstance(problem, FileExistsError) and not to_temporary:
                raise loc.exists_error(rel) from None
            if isinstance(problem, OSError) and not isinstance(problem, SkyButlerError):
                raise FileAccessError(
                    problem.errno, f"Cannot write {rel!r} under {loc.root}: {problem.strerror or problem}"
                ) from problem
            if problem is caught:
                raise
            raise problem from None
        size, digest = sink.size, sink.hexdigest()
        if sink.rewritten:
            size = int(loc.fs.size(temp))
            digest = file_hash(loc.fs, temp, algorithm) if algorithm else None
        checksum = f"{algorithm}:{digest}" if algorithm and digest else None
        inode = _inode(temp) if loc.local else None
        return PendingFile(rel, temp_rel, size, checksum, transfer, source, replaces=replace, inode=inode)

    def _new_temporary(self, rel: str, create: Callable[[str], _T]) -> tuple[str, str, _T]:
        """A temporary name beside ``rel`` (relative, full) and what ``create(full name)`` opened there.

        Local directories are made when missing; an error is one `FileAccessError` line.
        """
        loc = self.location
        temp_rel = temporary_name(rel)
        temp = loc.full(temp_rel)
        try:
            return temp_rel, temp, _making_directories(lambda: create(temp), temp) if loc.local else create(temp)
        except OSError as caught:
            translated = self._translated(caught, rel)
            if isinstance(translated, SkyButlerError):
                raise translated from None
            raise FileAccessError(caught.errno, f"Cannot write {rel!r} under {loc.root}: {caught}") from caught

    def _write_bytes(self, rel: str, temp_rel: str, temp: str, fd: int, data: bytes, algorithm: str | None,
                     transfer: str, head_start: bool) -> PendingFile:
        """`write`'s end for known bytes in a new local temporary file open at ``fd``: one ``os.write``, one hash."""
        loc = self.location
        try:
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
                if head_start:
                    start_writeback(fd)
                inode = os.fstat(fd).st_ino
            finally:
                os.close(fd)
        except OSError as caught:
            loc.discard(temp)
            raise FileAccessError(caught.errno, f"Cannot write {rel!r} under {loc.root}: "
                                                f"{caught.strerror or caught}") from caught
        checksum = f"{algorithm}:{hashlib.new(algorithm, data, usedforsecurity=False).hexdigest()}" if algorithm \
            else None
        return PendingFile(rel, temp_rel, len(data), checksum, transfer, inode=inode)

    def _translated(self, err: Exception, rel: str) -> Exception:
        """What ``location.errors("write", rel)`` makes of ``err`` (itself, or one `FileAccessError` line).

        Written out of the way of `write`'s success path, where entering the context
        manager around each step cost more than the step on local disk.
        """
        try:
            with self.location.errors("write", rel):
                raise err
        except Exception as translated:  # noqa: BLE001 - returned to the caller, who raises it
            return translated
        return err  # pragma: no cover - the block above always raises

    def _open_new(self, full: str) -> IO[bytes]:
        if self.location.local:
            return open(full, "xb")  # noqa: SIM115 - the caller closes it on every path
        return cast(IO[bytes], self.location.fs.open(full, "xb"))

    def refuse_existing(self, rel: str, full: str) -> None:
        """Raise `DatasetExistsError` if a file (or a link, even broken) is at ``full``."""
        loc = self.location
        with loc.errors("write", rel):
            taken = os.path.lexists(full) if loc.local else loc.fs.exists(full)
        if taken:
            raise loc.exists_error(rel)

    # -- leftovers of crashed writes -------------------------------------------------------

    def sweep(self, directory: str) -> None:
        """Remove abandoned temporaries from ``directory`` the first time this store writes there."""
        if directory in self.swept:
            return
        self.swept.add(directory)
        try:
            self.clean_directory(directory)
        except (OSError, SkyButlerError) as err:  # cleaning is a courtesy: never fail a write for it
            _log.warning("Could not clean temporary files in %s under %s: %s", directory, self.location.root, err)

    def clean_directory(self, directory: str) -> int:
        """Remove the temporaries in ``directory`` (not recursive) whose writer is gone; returns how many."""
        loc = self.location
        full_dir = loc.full(directory) if directory else loc.path
        now = time.time()
        stale: list[str] = []
        if loc.local:
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
            with loc.errors("list", directory or "/"):
                try:
                    infos = loc.fs.ls(full_dir, detail=True, refresh=True)
                except FileNotFoundError:
                    return 0
            for info in infos:
                name = posixpath.basename(str(info["name"]).rstrip("/"))
                if info.get("type") != "file" or not (name.startswith(".") and ".tmp-" in name):
                    continue
                stamp = stamp_seconds(info)
                changed = now if stamp is None else stamp
                if writer_gone(name, changed, now):
                    stale.append(str(info["name"]))
        for path in stale:
            loc.discard(path)
        if stale:
            _log.info("Removed %d abandoned temporary file(s) in %s under %s", len(stale), directory or "/", loc.root)
        return len(stale)

    def clean(self, directories: Iterable[str]) -> int:
        """`clean_directory` for each of ``directories``, each then counting as swept; returns how many."""
        removed = 0
        for directory in directories:
            removed += self.clean_directory(directory)
            self.swept.add(directory)
        return removed

    # -- commit and abort ------------------------------------------------------------------

    def commit(self, pending: PendingFile, *, sync: bool = False) -> None:
        """Put a pending file in its final place; see `Datastore.commit` (and the syncs above)."""
        self.commit_many([pending], sync=sync)

    def commit_many(self, pendings: Sequence[PendingFile], *, sync: bool = False) -> None:
        """Put pending files in their final places, all or none; see `Datastore.commit_many`.

        With ``sync`` the call returns once they are on the device; if a sync fails the
        placed files are removed and `FileAccessError` raised. A ``move``'s source is
        deleted once the files are in place (and synced).
        """
        loc = self.location
        placed: list[PendingFile] = []
        try:
            for pending in pendings:
                if pending.replaces:
                    self._replace_leftover(pending.temp_path, pending.path)
                elif pending.temp_path != pending.path:
                    self._rename_into_place(pending.temp_path, pending.path)
                placed.append(pending)
            if sync and loc.local:
                self._sync_placed([pf.path for pf in placed if pf.temp_path != pf.path])
        except BaseException:
            # No row will name these: the registry transaction they were for rolls back.
            for pending in placed:
                if pending.temp_path != pending.path:
                    loc.discard(loc.full(pending.path))
            raise
        self._remove_moved_sources(pendings)

    def _remove_moved_sources(self, pendings: Sequence[PendingFile]) -> None:
        loc = self.location
        for pending in pendings:
            if pending.source is not None:
                try:
                    fs, src = loc.filesystem_of(pending.source)
                    fs.rm_file(src)
                except OSError as err:
                    _log.warning("Stored %s, but could not remove the moved source %s: %s",
                                 pending.path, pending.source, err)

    def _rename_into_place(self, temp_rel: str, rel: str) -> None:
        loc = self.location
        # A pending file's paths were checked and normalised by `write` (or the ingest) that made it.
        temp, final = loc.full(temp_rel), loc.full(rel)
        try:
            if not rename_no_replace(temp, final, no_link=NO_LINK, use_renameat2=self.use_renameat2):
                self.use_renameat2 = False
        except FileExistsError:
            raise loc.exists_error(rel) from None
        except FileNotFoundError as err:
            raise FileAccessError(err.errno, f"Cannot commit {rel!r}: its temporary file {temp_rel!r} is gone") from err
        except OSError as err:
            raise FileAccessError(err.errno, f"Cannot commit {rel!r} under {loc.root}: {err}") from err

    def durable_paths(self, rel: str) -> list[str]:
        """What must be synced for a file just placed at ``rel`` to survive a power loss (see above).

        The file, its directory, and the parent of each directory on the way up to the root
        whose name this store has not synced yet.
        """
        loc = self.location
        final = loc.full(rel)
        directory = posixpath.dirname(final)
        paths = [final, directory]
        root = loc.path
        while directory.startswith(root + "/") and directory not in self.durable_dirs:
            directory = posixpath.dirname(directory)
            paths.append(directory)
        return paths

    def _sync_placed(self, placed: Sequence[str]) -> None:
        """Sync what the files just placed at ``placed`` need (`durable_paths`), all at once.

        One file's beside its directories' (`sync_alongside`), several files' together (`sync_paths`);
        raises `FileAccessError` if a sync failed.
        """
        if not placed:
            return
        loc = self.location
        chains = [self.durable_paths(loc.relative(path)) for path in placed]
        paths = list(dict.fromkeys(p for chain in chains for p in chain))
        try:
            if len(chains) == 1:
                sync_alongside(paths)  # the file, beside its directory and each new one above
            else:
                sync_paths(paths)
        except OSError as err:
            what = repr(placed[0]) if len(placed) == 1 else f"{len(placed)} files"
            raise FileAccessError(err.errno, f"Cannot commit {what} under {loc.root}: syncing to the device "
                                             f"failed: {err}") from err
        for chain in chains:
            # Each directory whose parent was synced (chain[2:] are those parents) has a durable name now.
            self.durable_dirs.update(chain[1:-1])

    def _replace_leftover(self, temp_rel: str, rel: str) -> None:
        loc = self.location
        temp, final = loc.full(loc.relative(temp_rel)), loc.full(loc.relative(rel))
        _log.warning("Replacing %r under %s: no registry row names it (left by an interrupted write)", rel, loc.root)
        try:
            with loc.errors("commit", rel):
                if loc.local:
                    os.replace(temp, final)  # atomic: readers see the old file or the new one
                    return
                # An object store has no rename: copy over the leftover, then drop the temporary.
                loc.fs.copy(temp, final)
        except FileNotFoundError as err:
            raise FileAccessError(errno.ENOENT, f"Cannot commit {rel!r}: its temporary file {temp_rel!r} is gone") from err
        loc.discard(temp)

    def abort(self, pending: PendingFile) -> None:
        """Discard a pending file that was not committed; see `Datastore.abort`."""
        if pending.transfer in ("direct", "in_place"):
            return
        full = self.location.full(self.location.relative(pending.temp_path))
        if pending.temp_path == pending.path and not self._holds(full, pending):
            # Another writer replaced what we wrote (it found no row naming the file and
            # committed its own): that file is stored now, so it stays.
            return
        self.location.discard(full)

    def _holds(self, full: str, pending: PendingFile) -> bool:
        """Whether the object at ``full`` still holds the bytes of ``pending`` (object stores)."""
        try:
            info = self.location.fs.info(full)
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

    # -- removal ---------------------------------------------------------------------------

    def remove_placed(self, placed: Iterable[PendingFile]) -> None:
        """Delete files `commit_many` placed for a registry transaction that failed; see `Datastore.remove_placed`."""
        loc = self.location
        doomed = []
        for pending in placed:
            if pending.temp_path == pending.path or pending.transfer in ("direct", "in_place"):
                continue  # written in place: the caller's `abort` decides
            if loc.local and pending.inode is not None and _inode(loc.full(pending.path)) != pending.inode:
                _log.warning("Left %r under %s in place: another writer stored its own file there after this one",
                             pending.path, loc.root)
                continue
            doomed.append(pending.path)
        self.remove(doomed)

    def remove(self, paths: Iterable[str]) -> None:
        """Delete files under the root, missing ones ignored; see `Datastore.remove`."""
        loc = self.location
        parents: set[str] = set()
        try:
            for path in paths:
                rel = loc.relative(path)
                full = loc.full(rel)
                try:
                    if loc.local:
                        # Straight to unlink: the error translation below is for remote
                        # stores, and costs more per file than a local unlink of a run.
                        os.unlink(full)
                        parents.add(posixpath.dirname(rel))
                        continue
                    with loc.errors("remove", rel):
                        loc.delete(full)
                except FileNotFoundError:
                    continue
                except OSError as err:
                    if isinstance(err, SkyButlerError):
                        raise
                    raise FileAccessError(err.errno, f"Cannot remove {rel!r} under {loc.root}: {err}") from err
        finally:
            # Emptied directories go once the files are gone, deepest first: trying each file's
            # parent after each file failed for all but the last file of a directory and cost
            # as much as the delete itself (measured at 1,000,000 files).
            for parent in sorted(parents, key=lambda p: p.count("/"), reverse=True):
                self._remove_empty_parents(parent)

    def _remove_empty_parents(self, parent: str) -> None:
        while parent:
            try:
                os.rmdir(self.location.full(parent))
            except OSError:  # not empty, or already gone
                return
            self.durable_dirs.discard(self.location.full(parent))  # made again, it needs syncing again
            parent = posixpath.dirname(parent)
