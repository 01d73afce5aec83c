"""Two primitives of a local put: a rename that never replaces a file, and the syncs that follow it.

Split from `skybutler.datastore._transactions`, whose docstring says which syncs a commit does
and why each is needed; this module only does them.

``rename_no_replace`` places a file at a new name atomically, refusing a name that is taken.
On Linux (>= 3.15, glibc >= 2.28) that is one ``renameat2(..., RENAME_NOREPLACE)`` called
through ctypes: the kernel checks and renames in one step, so two writers racing for one
name get exactly one winner. Filesystems that do not implement the flag answer ``EINVAL``
(older NFS, some FUSE and overlay mounts); there, and on systems without ``renameat2``, a
hard link to the new name (which never replaces either) and an unlink of the old one do
the same in two steps; on filesystems without hard links, a check then a rename, which
leaves a window between the two (said where it is used).

``sync_paths`` ``fsync``s several files and directories at once, one thread each: a
journaling filesystem (ext4, XFS) answers syncs waiting at the same moment with one journal
commit, so the files of one commit cost about one device flush, not one each.

``sync_alongside`` ``fsync``s one file and the directories on its way: the file in the
process's one syncer thread, the directories meanwhile in the calling thread. The two waits
overlap (this project's disk, ext4 without a journal, where each ``fsync`` waits for its own
writes and a device flush): the file's and its directory's syncs took 155-157 µs together
against 207-210 µs in turn (bare, medians of 400, three rounds), and a durable put 699-725 µs
against 728-757 µs (1,500 puts, six alternated pairs, load 0.9). The thread lives as long as
the process (a forked process makes its own on its first sync): an earlier version started a
thread per put, and starting and ending it cost ~0.3 ms of system CPU per put, more than it
saved.
"""

from __future__ import annotations

import _thread
import ctypes
import ctypes.util
import errno
import os
import queue
import threading
from collections.abc import Sequence
from typing import Any

__all__ = ["MAX_SYNC_THREADS", "NO_RENAMEAT2", "link_or_check", "rename_no_replace", "renameat2_noreplace",
           "start_writeback", "sync_alongside", "sync_paths"]

_AT_FDCWD = -100
_RENAME_NOREPLACE = 1

# Answers of renameat2 meaning "this filesystem or kernel cannot do it": fall back.
NO_RENAMEAT2 = frozenset({errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP})


def _load_renameat2() -> ctypes._CFuncPtr | None:  # type: ignore[name-defined]
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        function = libc.renameat2
    except (OSError, AttributeError):  # not glibc >= 2.28 (musl < 1.2.4, macOS): fall back
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    function.restype = ctypes.c_int
    return function


_RENAMEAT2 = _load_renameat2()


def _load_sync_file_range() -> ctypes._CFuncPtr | None:  # type: ignore[name-defined]
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        function = libc.sync_file_range
    except (OSError, AttributeError):  # not Linux: `start_writeback` does nothing
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    function.restype = ctypes.c_int
    return function


_SYNC_FILE_RANGE = _load_sync_file_range()
_SYNC_FILE_RANGE_WRITE = 2


def start_writeback(fd: int) -> None:
    """Start writing the file open at ``fd`` to the device, without waiting (Linux ``sync_file_range``).

    Only a head start for the ``fsync`` that a durable commit makes later: the device
    writes the bytes while the registry's rows are inserted, and the ``fsync`` then waits
    for little more than the device's cache flush (a durable put's file ``fsync`` took
    ~100 µs instead of ~150 µs on this project's disk, medians of 400). It guarantees
    nothing, so its failure is ignored; where there is no ``sync_file_range`` it does nothing.
    """
    if _SYNC_FILE_RANGE is not None:
        _SYNC_FILE_RANGE(fd, 0, 0, _SYNC_FILE_RANGE_WRITE)


def renameat2_noreplace(source: str, target: str) -> int:
    """``renameat2(source, target, RENAME_NOREPLACE)``: 0, or the ``errno`` it failed with (``ENOSYS`` if absent)."""
    if _RENAMEAT2 is None:
        return errno.ENOSYS
    if _RENAMEAT2(_AT_FDCWD, os.fsencode(source), _AT_FDCWD, os.fsencode(target), _RENAME_NOREPLACE) == 0:
        return 0
    return ctypes.get_errno()


def rename_no_replace(source: str, target: str, *, no_link: frozenset[int] = frozenset(),
                      use_renameat2: bool = True) -> bool:
    """Rename ``source`` to ``target`` unless ``target`` exists (a file, a directory or a link, even broken).

    Parameters
    ----------
    source, target
        Full local paths, ``target`` in an existing directory.
    no_link
        ``errno`` values of a failed hard link that mean "no hard links here": the last
        fallback then checks and renames (not atomic: a writer between the two would be
        replaced; filesystems without hard links and without ``RENAME_NOREPLACE`` leave no
        better way).
    use_renameat2
        False goes straight to the fallbacks (the filesystem has answered that it cannot).

    Returns
    -------
    bool
        Whether ``renameat2`` did it; False when a fallback did (the caller may remember
        that the filesystem needs one and pass ``use_renameat2=False`` next time).

    Raises
    ------
    FileExistsError
        If ``target`` is taken; ``source`` is left where it was.
    OSError
        Anything else (``FileNotFoundError`` if ``source`` is gone).
    """
    code = renameat2_noreplace(source, target) if use_renameat2 else errno.ENOSYS
    if code == 0:
        return True
    if code not in NO_RENAMEAT2:
        raise OSError(code, os.strerror(code), source, None, target)
    link_or_check(source, target, no_link)
    return False


def link_or_check(source: str, target: str, no_link: frozenset[int]) -> None:
    """The fallbacks of `rename_no_replace`: a hard link and an unlink, else a check and a rename."""
    try:
        os.link(source, target, follow_symlinks=False)
    except OSError as err:
        if err.errno not in no_link:
            raise
        if os.path.lexists(target):
            raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), target) from None
        os.replace(source, target)
        return
    os.unlink(source)


MAX_SYNC_THREADS = 16
"""Most syncs waiting at once (a commit of many files): enough to fill a journal commit, few threads."""


def sync_paths(paths: Sequence[str]) -> None:
    """``fsync`` every file or directory in ``paths`` (a symlink's target), all at once; return when all are done.

    Up to `MAX_SYNC_THREADS` syncs wait at the same time: the calling thread syncs too, and
    threads started per call (nothing outlives the call, and a forked process inherits no
    pool) take the rest from one queue. They are started without waiting for them to run
    (``_thread``, not ``threading.Thread.start``, which blocks until the new thread has been
    scheduled: on a loaded machine that wait cost more than the syncs). The first error is
    raised, after every sync has finished.
    """
    if len(paths) == 1:
        _sync(paths[0])
        return
    errors: list[BaseException] = []
    todo = iter(paths)
    take = threading.Lock()

    def run() -> None:
        while True:
            with take:
                path = next(todo, None)
            if path is None:
                return
            try:
                _sync(path)
            except BaseException as err:  # handed to the caller below
                errors.append(err)

    def helper(done: Any) -> None:
        try:
            run()
        finally:
            done.release()

    finished = []
    for _ in range(min(len(paths), MAX_SYNC_THREADS) - 1):
        done = _thread.allocate_lock()
        done.acquire()
        _thread.start_new_thread(helper, (done,))
        finished.append(done)
    run()
    for done in finished:
        done.acquire()  # released by its thread when the queue is empty
    if errors:
        raise errors[0]


def sync_alongside(paths: Sequence[str]) -> None:
    """``fsync`` one file (``paths[0]``) in the syncer thread while this thread syncs the directories on its way.

    For the paths of one placed file (see the module's docstring); returns once all are
    synced, raising the first error (the file's first), the commit they were for then fails.
    """
    if len(paths) < 2:
        for path in paths:
            _sync(path)
        return
    done = _thread.allocate_lock()
    done.acquire()
    failed: list[BaseException] = []
    _syncer().put((paths[0], done, failed))
    try:
        for path in paths[1:]:
            _sync(path)
    except BaseException as err:
        failed.append(err)  # after the file's, if it failed too: that one is raised
    finally:
        done.acquire()  # released by the syncer once the file's sync is over
    if failed:
        raise failed[0]


_SYNCER: list[Any] = [None, None]  # [process id, its request queue]
_SYNCER_LOCK = threading.Lock()


def _syncer() -> Any:
    """This process's syncer: the queue of a thread that syncs ``(path, done, failed)`` requests.

    Started on the first sync of a process (a forked process has no thread of its
    parent's, so it starts its own). Each request's ``done`` lock is released when its
    sync is over, any error appended to its ``failed`` list first.
    """
    if _SYNCER[0] == os.getpid():
        return _SYNCER[1]
    with _SYNCER_LOCK:
        if _SYNCER[0] != os.getpid():
            requests: Any = queue.SimpleQueue()

            def run() -> None:
                while True:
                    path, done, failed = requests.get()
                    try:
                        _sync(path)
                    except BaseException as err:  # handed to the caller
                        failed.insert(0, err)
                    finally:
                        done.release()

            _thread.start_new_thread(run, ())
            _SYNCER[:] = [os.getpid(), requests]
    return _SYNCER[1]


def _sync(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
