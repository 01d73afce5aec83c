"""How `Butler` removes datasets and runs: rows first, then files, and an interruption finished later.

Inside the registry transaction, after the rows are deleted and before the commit, the list
of files to delete is written to the datastore (`Datastore.record_removal`); once committed,
the files are deleted (by several threads: `delete_files`) and the list dropped. A removal
cut short by a crash, an unreachable store or a file that cannot be deleted leaves its list
behind, and `finish_removals` (run by the next removal) deletes the files that no row names.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

import sqlalchemy as sa

from ._butler_put import connection_lost, lost_connection
from .datastore import Datastore
from .registry import pipeline_sql

if TYPE_CHECKING:
    from .registry import FileRecord, Registry

__all__ = ["DELETE_THREADS", "PART_SECONDS", "delete_files", "finish_removals", "in_parts_kept_out", "next_part_size",
           "owned_paths", "remove_then_delete", "writers_kept_out"]

DELETE_THREADS = 8
"""Threads deleting the files of one removal.

Deleting a file waits on the file system (local disk) or on a round trip (object stores),
not on Python, so a few threads overlap those waits: a run of 1,000,000 files is otherwise
1,000,000 waits one after the other.
"""

_PER_TASK = 1000
"""Paths per thread task: a removal smaller than this runs in the calling thread."""

PART_SECONDS = 0.5
"""About how long one part of a removal being finished keeps other writers out (`finish_removals`).

Every other writer of the repository waits meanwhile (SQLite: up to its 60 s busy timeout).
8,000 local files take about 0.15 s; on an object store each file is a round trip (1,000
took 6 s on a loopback moto server, one thread), so a part's size follows the time its
last part took.
"""

_FIRST_PART = 64
_MAX_PART = _PER_TASK * DELETE_THREADS


def next_part_size(size: int, seconds: float) -> int:
    """The size of a removal's next part after one of ``size`` paths kept writers out ``seconds``.

    Scaled to `PART_SECONDS` at the pace of the last part, but at most twice its size
    (starting from 64 files, a slow store is found out before a part takes long), between
    1 and 8,000.

    Examples
    --------
    >>> next_part_size(64, 0.01), next_part_size(64, 1.0), next_part_size(8000, 0.15)
    (128, 32, 8000)
    """
    scaled = int(size * PART_SECONDS / seconds) if seconds > 0 else 2 * size
    return max(1, min(scaled, 2 * size, _MAX_PART))


def owned_paths(records: Sequence[FileRecord]) -> list[str]:
    """The paths of ``records`` that the datastore owns (and so may delete)."""
    # Files recorded by absolute location were ingested "direct": they are not ours to delete.
    return [r.path for r in records if Datastore.owns(r.path)]


def delete_files(datastore: Datastore, paths: Sequence[str]) -> None:
    """Delete ``paths`` from ``datastore`` with up to `DELETE_THREADS` threads.

    Each path is tried, even after another failed; the first error is then raised (the
    caller's list of pending files stays, so the next removal finishes the rest).

    Raises
    ------
    FileAccessError
        A file that could not be deleted, or a store that cannot be reached.
    """
    # Sorted, so the files of one directory fall mostly into one task: the worker that
    # deletes a directory's last file is then the one that removes the emptied directory.
    ordered = sorted(paths)
    if len(ordered) <= _PER_TASK:
        datastore.remove(ordered)
        return
    parts = [ordered[i:i + _PER_TASK] for i in range(0, len(ordered), _PER_TASK)]
    with ThreadPoolExecutor(max_workers=min(DELETE_THREADS, len(parts)),
                            thread_name_prefix="skybutler-delete") as pool:
        futures = [pool.submit(datastore.remove, part) for part in parts]
    for future in futures:
        error = future.exception()
        if error is not None:
            raise error


def remove_then_delete(registry: Registry, datastore: Datastore, remove_rows: Callable[[], list[FileRecord]],
                       label: str, purge: bool = True) -> int:
    """Run ``remove_rows`` in a transaction, then delete the files of the rows it removed; returns how many.

    ``label`` names what is removed (a run, or ``"datasets"``) in the list of files and in
    errors; with ``purge`` False the files stay.
    """
    try:
        with registry.transaction():
            records = remove_rows()
            paths = owned_paths(records) if purge else []
            pending = datastore.record_removal(paths, label=label) if paths else None
    except sa.exc.DBAPIError as exc:
        if lost_connection(exc) is None:
            raise
        raise connection_lost(registry, exc, f"removing {label}", "repeat the removal to finish it") from None
    if pending is not None:
        delete_files(datastore, paths)
        datastore.forget_removal(pending)
    return len(records)


def finish_removals(registry: Registry, datastore: Datastore) -> dict[str, int]:
    """Delete the files no row names of every interrupted removal; the count per label (see `Butler.finish_removals`).

    The check and the deletion of each part of a list happen while writers of file rows
    are kept out (`writers_kept_out`): a removal that got to a file before it was cut
    short leaves no file at that path, so a write of the same dataset places a new one
    there without meeting the list; checked before that write committed and deleted
    after, the new dataset would have no file (`in_parts_kept_out`).
    """
    def delete_unnamed(part: Sequence[str], named: set[str]) -> int:
        unnamed = [p for p in part if p not in named]
        delete_files(datastore, unnamed)
        return len(unnamed)

    done: dict[str, int] = {}
    for rel, label, paths in datastore.pending_removals():
        deleted = in_parts_kept_out(registry, paths, delete_unnamed)
        datastore.forget_removal(rel)
        done[label] = done.get(label, 0) + deleted
    return done


def in_parts_kept_out(registry: Registry, paths: Sequence[str],
                      act: Callable[[Sequence[str], set[str]], int]) -> int:
    """Call ``act(part, named)`` on ``paths`` in parts, ``named`` the part's paths a file row names; the sum of its counts.

    Each part is looked up and acted on (its unnamed files deleted or moved) while writers
    of file rows are kept out (`writers_kept_out`): no dataset can be stored at one of its
    paths between the check and the act. A part keeps them out about `PART_SECONDS`: its
    size follows the time the previous part took, the wait for the lock left out
    (`next_part_size`).
    """
    start, size, total = 0, _FIRST_PART, 0
    while start < len(paths):
        part = paths[start:start + size]
        with writers_kept_out(registry):
            t0 = time.monotonic()  # not the wait for the lock: that is other writers' time
            total += act(part, pipeline_sql.known_paths(registry, part))
            held = time.monotonic() - t0
        size = next_part_size(len(part), held)
        start += len(part)
    return total


@contextlib.contextmanager
def writers_kept_out(registry: Registry) -> Iterator[None]:
    """A write transaction no other writer of file rows runs beside, committed or not.

    SQLite: the transaction holds the write lock (a put places its files and commits
    under it; an import checks its files are still there under it). PostgreSQL: ``LOCK
    TABLE file IN SHARE MODE`` waits for the transactions inserting file rows to end and
    makes new ones wait until this one commits. Nothing is written in it.
    """
    with registry.transaction() as conn:
        registry.database.lock_table(conn, registry.tables.file, "SHARE")
        yield
