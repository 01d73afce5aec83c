"""Verify a repository: every registered file there, whole and unchanged; nothing else under the root.

`verify` compares the registry's file records with the files in the datastore and reports,
by kind of problem (`PROBLEM_KINDS`):

- ``lost``: a dataset's file is missing (also a file registered in place by a ``direct``
  ingest, outside the root, that has since disappeared);
- ``size`` / ``checksum``: the file is there but its size, or the checksum of its bytes
  (bit-rot: same size, flipped bits), is not what the registry recorded;
- ``unreadable``: the file is there but cannot be read (permissions);
- ``dark``: a file under the root that no dataset names (a put killed between placing its
  file and committing, files left by ``remove_runs(purge=False)``, files copied in by hand);
- ``temporary``: a temporary file of a write that never finished;
- ``removal``: a file (or the list of files) of a removal that was interrupted.

It works in two streaming passes, so memory stays flat in the number of files (it grows
with the number of problems only): the registry's file records are checked by a pool of
threads (reading a file and hashing it both release the GIL), then the datastore is
walked and its files looked up in the registry in batches.

It never changes a file a dataset names: a corrupted file is reported (and with
``mark_lost`` recorded lost), never "fixed" by overwriting it. ``quarantine`` moves dark
files aside, never deletes them.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime
import errno
import functools
import hashlib
import os
import posixpath
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..config import CONFIG_FILE
from ..datastore import is_temporary, is_url
from ..errors import ConfigError, FileAccessError, ReadOnlyError
from ..registry import integrity_sql, pipeline_sql

if TYPE_CHECKING:
    from ..butler import Butler
    from ..datastore import Datastore
    from ..model import DatasetRef
    from ..registry import FileRecord, Registry

__all__ = ["MAX_LISTED", "PROBLEM_KINDS", "QUARANTINE_DIR", "Problem", "ProgressBars", "VerifyReport", "check_file",
           "skipped_paths", "verify"]

PROBLEM_KINDS: dict[str, str] = {
    "lost": "registered, but the file is missing",
    "size": "the file's size is not the registered one",
    "checksum": "the file's bytes do not match the registered checksum (bit-rot or tampering)",
    "unreadable": "the file is there but cannot be read",
    "dark": "a file under the root that no dataset names",
    "temporary": "a temporary file of a write that never finished",
    "removal": "a file of an interrupted removal, still there",
}
"""Every kind of problem `verify` reports, with what it means (the order of reports and tables)."""

MAX_LISTED = 1000
"""Problems listed per kind in a `VerifyReport` (all are counted): a disk that died can lose millions."""

QUARANTINE_DIR = ".skybutler/quarantine"
"""Where ``quarantine`` moves dark files, under a directory per verify (``<UTC time>/<path>``)."""

QUARANTINE_MIN_AGE = 3600.0
"""Seconds since a dark file was placed before ``quarantine`` moves it (see `verify`)."""

_SUBMISSIONS = "submissions/"  # the batch service's files, when the datastore root is the repository's
_CHUNK = 1 << 20
_SMALL = 1 << 16  # files up to this size are read in one system call
_HASHERS: dict[str, Callable[..., Any]] = {}
_buffers = threading.local()
_BATCH = 64  # files per task: per-task overhead of the pool is paid once per batch of small files
_LOOKUP = 500  # walked paths looked up in the registry per query


@dataclass(frozen=True)
class Problem:
    """One problem found by `verify`.

    Attributes
    ----------
    kind
        A key of `PROBLEM_KINDS`.
    path
        The file, relative to the datastore root (a full URL for files kept outside it).
    dataset_id
        The dataset whose file it is (None for dark, temporary and removal files).
    dataset
        The dataset type, data id and run (empty when there is no dataset).
    detail
        What was expected and found (sizes, checksums, the error).
    """

    kind: str
    path: str
    dataset_id: uuid.UUID | None = None
    dataset: str = ""
    detail: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "path": self.path, "dataset_id": str(self.dataset_id) if self.dataset_id else None,
                "dataset": self.dataset, "detail": self.detail}


@dataclass
class VerifyReport:
    """What `verify` found.

    Attributes
    ----------
    root
        The datastore root verified.
    counts
        Number of problems of each kind (every kind present, zero when none).
    problems
        The first `MAX_LISTED` problems of each kind.
    files_checked
        Registered files checked.
    bytes_read
        Bytes read to compute checksums.
    files_walked
        Files found under the root (0 when ``runs`` limited the check to registered files).
    checksums
        Whether checksums were compared (else sizes only).
    seconds
        Wall time of the whole verify.
    quarantine
        The directory dark files were moved to, relative to the root (None if none were).
    quarantined
        Dark files moved there.
    too_recent
        Dark files left in place because they were placed less than ``quarantine_min_age``
        seconds ago (a write, an import or a batch job's output may be about to name them).
    named_meanwhile
        Files found dark that a dataset stored while verify ran now names (left in place;
        they are no longer a problem).
    marked_lost, cleared
        Datasets recorded lost, and marks removed because the file is back and correct
        (``mark_lost`` only).
    """

    root: str
    checksums: bool
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(PROBLEM_KINDS, 0))
    problems: dict[str, list[Problem]] = field(default_factory=lambda: {k: [] for k in PROBLEM_KINDS})
    files_checked: int = 0
    bytes_read: int = 0
    files_walked: int = 0
    seconds: float = 0.0
    quarantine: str | None = None
    quarantined: int = 0
    too_recent: int = 0
    named_meanwhile: int = 0
    marked_lost: int = 0
    cleared: int = 0

    @property
    def ok(self) -> bool:
        """Whether nothing was found."""
        return not any(self.counts.values())

    def add(self, problem: Problem) -> None:
        self.counts[problem.kind] += 1
        if len(self.problems[problem.kind]) < MAX_LISTED:
            self.problems[problem.kind].append(problem)

    def to_dict(self) -> dict[str, Any]:
        """The report as one JSON-ready document (``skybutler verify --json``)."""
        return {"root": self.root, "ok": self.ok, "checksums": self.checksums, "counts": dict(self.counts),
                "problems": {k: [p.to_dict() for p in v] for k, v in self.problems.items()},
                "files_checked": self.files_checked, "bytes_read": self.bytes_read,
                "files_walked": self.files_walked, "seconds": round(self.seconds, 3),
                "quarantine": self.quarantine, "quarantined": self.quarantined, "too_recent": self.too_recent,
                "named_meanwhile": self.named_meanwhile, "marked_lost": self.marked_lost, "cleared": self.cleared}


def verify(butler: Butler, *, checksums: bool = True, workers: int = 8, progress: bool = False,
           quarantine: bool = False, mark_lost: bool = False, runs: Sequence[str] | None = None,
           quarantine_min_age: float = QUARANTINE_MIN_AGE) -> VerifyReport:
    """Compare the files of a repository with its registry.

    Parameters
    ----------
    butler
        The repository (writeable if ``quarantine`` or ``mark_lost``).
    checksums
        Read every registered file and compare its checksum (False compares sizes only:
        much faster, blind to bit-rot).
    workers
        Threads checking files in parallel.
    progress
        Show rich progress bars on standard error.
    quarantine
        Move dark files to ``.skybutler/quarantine/<UTC time>/<their path>`` (never deleted:
        look at them, then delete or ingest them). Each is checked again just before it is
        moved, while no writer of file rows runs: one that a dataset stored meanwhile names
        stays. One placed less than ``quarantine_min_age`` seconds ago stays too: a write
        to an object store, an import or a batch job's staged output is in place before its
        row is committed (`VerifyReport.too_recent`).
    quarantine_min_age
        See ``quarantine``; 0 moves every dark file that no row names.
    mark_lost
        Record datasets whose file is lost, of the wrong size or checksum in the registry
        (a get then raises `FileLostError` naming them), and remove the mark of datasets
        whose file is back and correct.
    runs
        Check only the registered files of these runs; the walk for dark and temporary
        files, which belong to no run, is then skipped.

    Returns
    -------
    VerifyReport
        ``report.ok`` is True when nothing was found.

    Raises
    ------
    CollectionError
        A name in ``runs`` that is not a run.
    FileAccessError
        The datastore cannot be reached (a remote store down is not reported as files lost).

    Examples
    --------
    >>> report = verify(Butler("/repo"), workers=16)       # doctest: +SKIP
    >>> report.counts["checksum"], report.problems["lost"][:3]  # doctest: +SKIP
    """
    if workers < 1:
        raise ConfigError(f"verify needs at least one worker, not {workers}")
    if not quarantine_min_age >= 0:
        raise ConfigError(f"verify's quarantine_min_age is seconds, 0 or more, not {quarantine_min_age}")
    if (quarantine or mark_lost) and not butler.writeable:
        raise ReadOnlyError(f"verify with quarantine or mark_lost changes the repository at {butler.root}; "
                            "open it writeable")
    start = time.perf_counter()
    datastore, registry = butler.datastore, butler.registry
    report = VerifyReport(datastore.root, checksums)
    runs = None if runs is None else list(runs)
    with ProgressBars(progress) as bars:
        total = integrity_sql.count_files(registry, runs)
        marks = integrity_sql.lost_marks(registry) if mark_lost else {}
        to_mark: list[tuple[uuid.UUID, str]] = []
        to_clear: list[uuid.UUID] = []
        task = bars.add("registered files", total)
        for record, problem, nbytes in _check_all(datastore, integrity_sql.stored_files(registry, runs),
                                                  checksums, workers):
            report.files_checked += 1
            report.bytes_read += nbytes
            bars.advance(task)
            if problem is not None:
                report.add(problem)
                if problem.kind in ("lost", "size", "checksum"):
                    kind = "missing" if problem.kind == "lost" else problem.kind
                    to_mark.append((record.dataset_id, f"{kind}: {problem.detail}"))
            elif record.dataset_id in marks and (checksums or not marks[record.dataset_id].reason.startswith("checksum")):
                to_clear.append(record.dataset_id)
        _describe_datasets(registry, report)
        if mark_lost:
            report.marked_lost = integrity_sql.mark_lost(registry, to_mark)
            report.cleared = integrity_sql.clear_lost(registry, to_clear)
        if runs is None:
            dark = _walk(butler, report, bars, keep=quarantine)
            if quarantine and dark:
                _quarantine(butler, dark, quarantine_min_age, report)
    report.seconds = time.perf_counter() - start
    return report


# -- registered files ------------------------------------------------------------------------


def _describe_datasets(registry: Registry, report: VerifyReport) -> None:
    """Name the dataset (type, data id, run) of each listed problem of a registered file: one query for all."""
    listed = [p for kind in ("lost", "size", "checksum", "unreadable") for p in report.problems[kind]]
    refs = registry.get_datasets([p.dataset_id for p in listed if p.dataset_id is not None])
    for kind in ("lost", "size", "checksum", "unreadable"):
        report.problems[kind] = [
            dataclasses.replace(p, dataset=_describe(refs[p.dataset_id])) if p.dataset_id in refs else p
            for p in report.problems[kind]]


def _describe(ref: DatasetRef) -> str:
    return f"{ref.dataset_type.name} {{{ref.data_id}}} in run {ref.run}"


def _check_all(datastore: Datastore, files: Iterator[FileRecord], checksums: bool, workers: int,
               ) -> Iterator[tuple[FileRecord, Problem | None, int]]:
    """Check ``files`` on ``workers`` threads, a few batches ahead of the consumer (memory stays bounded)."""
    def batches() -> Iterator[list[FileRecord]]:
        batch: list[FileRecord] = []
        for item in files:
            batch.append(item)
            if len(batch) == _BATCH:
                yield batch
                batch = []
        if batch:
            yield batch

    def run(batch: list[FileRecord]) -> list[tuple[FileRecord, Problem | None, int]]:
        return [(record, *check_file(datastore, record, checksums)) for record in batch]

    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="verify") as pool:
        pending: collections.deque[Future[Any]] = collections.deque()
        try:
            for batch in batches():
                pending.append(pool.submit(run, batch))
                if len(pending) >= 2 * workers:
                    yield from pending.popleft().result()
            while pending:
                yield from pending.popleft().result()
        finally:
            for future in pending:
                future.cancel()


def check_file(datastore: Datastore, record: FileRecord, checksums: bool) -> tuple[Problem | None, int]:
    """Check one registered file: is it there, of its size, with its checksum? Returns the problem and bytes read.

    Local files (under the root or ingested in place) are read with plain system calls;
    others through the datastore.
    """
    location = datastore.url(record.path)
    algorithm = record.checksum_algorithm if checksums and record.checksum else None
    try:
        if is_url(location):
            size = datastore.size(record.path)
            digest = None
            if algorithm and size == record.size:
                digest = datastore.checksum(record.path, algorithm).partition(":")[2]
        else:
            size, digest = _local_file(location, record.size, algorithm)
    except FileAccessError as exc:
        if exc.errno != errno.ENOENT:
            raise  # the store cannot be reached: not a verdict on this file
        return Problem("lost", record.path, record.dataset_id, "", "no file"), 0
    except FileNotFoundError:
        return Problem("lost", record.path, record.dataset_id, "", "no file"), 0
    except OSError as exc:
        return Problem("unreadable", record.path, record.dataset_id, "", exc.strerror or str(exc)), 0
    if size != record.size:
        return Problem("size", record.path, record.dataset_id, "", f"expected {record.size} bytes, found {size}"), 0
    if digest is not None and digest != record.checksum:
        detail = f"expected {algorithm}:{record.checksum}, found {algorithm}:{digest}"
        return Problem("checksum", record.path, record.dataset_id, "", detail), size
    return None, size if digest is not None else 0


def _local_file(full: str, expected_size: int, algorithm: str | None) -> tuple[int, str | None]:
    """Size and (when ``algorithm``, and the size is as expected) hex digest of a local file, from one open.

    Small files (most of a repository by count) are read in one call; large ones through
    one reused buffer per thread. Both keep the per-file cost near that of ``md5sum``.
    """
    fd = os.open(full, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        if algorithm is None or size != expected_size:
            return size, None
        digest = _hasher(algorithm)
        if size <= _SMALL:
            while data := os.read(fd, _SMALL):
                digest.update(data)
            return size, digest.hexdigest()
        buffer = getattr(_buffers, "buffer", None)
        if buffer is None:
            buffer = _buffers.buffer = bytearray(_CHUNK)
        view = memoryview(buffer)
        while n := os.readv(fd, [buffer]):
            digest.update(view[:n])
        return size, digest.hexdigest()
    finally:
        os.close(fd)


def _hasher(algorithm: str) -> Any:
    """A new hash object; the named constructors (``hashlib.md5``) cost less than ``hashlib.new``."""
    constructor = _HASHERS.get(algorithm)
    if constructor is None:
        constructor = _HASHERS[algorithm] = getattr(hashlib, algorithm, None) or functools.partial(
            hashlib.new, algorithm)
    return constructor(usedforsecurity=False)


# -- files under the root ------------------------------------------------------------------------


def skipped_paths(butler: Butler) -> tuple[set[str], tuple[str, ...]]:
    """Files and directories under the datastore root that belong to the repository, not to datasets.

    The configuration, the SQLite registry (and its journal files), ``.skybutler/`` (run
    manifests, removal lists, quarantine) and, when the datastore root is the repository
    root, the batch service's ``submissions/``.
    """
    files = {CONFIG_FILE, CONFIG_FILE + ".tmp"}
    db = butler.config.registry.db
    if db.startswith("sqlite:///") and not os.path.isabs(db[len("sqlite:///"):]):
        name = db[len("sqlite:///"):]
        files.update(name + suffix for suffix in ("", "-wal", "-shm", "-journal"))
    dirs: tuple[str, ...] = (".skybutler/",)
    root = butler.datastore.root
    if not is_url(root) and os.path.realpath(root) == os.path.realpath(butler.root):
        dirs += (_SUBMISSIONS,)
    return files, dirs


def _walk(butler: Butler, report: VerifyReport, bars: ProgressBars, *, keep: bool) -> list[str]:
    """Report dark, temporary and removal files under the root; returns the dark ones when ``keep``."""
    datastore, registry = butler.datastore, butler.registry
    own, skipped = skipped_paths(butler)
    removals: dict[str, str] = {}
    for rel, label, paths in datastore.pending_removals():
        left = 0
        for path in paths:
            removals[path] = f"listed in {rel} (removal of {label})"
            left += 1
        if not left:
            report.add(Problem("removal", rel, detail=f"an empty list of an interrupted removal of {label}"))
    task = bars.add("files under the root", None)
    dark: list[str] = []
    batch: list[str] = []

    # A file under the root ingested in place by a "direct" ingest is registered by its full URL.
    base = datastore.url("x")[:-1]
    prefixes = [base, "file://" + base] if not is_url(base) else [base]
    by_url = integrity_sql.urls_under(registry, prefixes)

    def lookup() -> None:
        known = pipeline_sql.known_paths(registry, batch)
        for path in batch:
            if path not in known and not any(prefix + path in by_url for prefix in prefixes):
                if path in removals:
                    report.add(Problem("removal", path, detail=removals[path]))
                else:
                    report.add(Problem("dark", path, detail="no dataset names this file"))
                    if keep:
                        dark.append(path)
        batch.clear()

    for path in datastore.walk():
        if path in own or path.startswith(skipped):
            continue
        report.files_walked += 1
        bars.advance(task)
        if is_temporary(path):
            report.add(Problem("temporary", path, detail="left by a write that did not finish "
                                                         "(or one running now)"))
            continue
        batch.append(path)
        if len(batch) >= _LOOKUP:
            lookup()
    if batch:
        lookup()
    return dark


def _quarantine(butler: Butler, paths: Sequence[str], min_age: float, report: VerifyReport) -> None:
    """Move the dark ``paths`` placed at least ``min_age`` seconds ago to a new directory under `QUARANTINE_DIR`.

    Found dark during the walk, a file may have been named since: a put, an import or a
    merge placed it before committing its row, or replaced it as a crashed write's
    leftover. Each part is looked up again and moved while writers of file rows are kept
    out (as `finish_removals` deletes), so a row committed before the move names a file
    that stays, and none can be committed while it moves.
    """
    from .._butler_remove import in_parts_kept_out

    datastore, registry = butler.datastore, butler.registry
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%S.%fZ")
    base = f"{QUARANTINE_DIR}/{stamp}"
    now = time.time()
    old: list[str] = []
    for path in paths:
        changed = datastore.changed(path)
        if changed is None:
            continue  # gone meanwhile (its writer failed and removed it, or someone else did)
        if now - changed < min_age:
            report.too_recent += 1
        else:
            old.append(path)
    def move_unnamed(part: Sequence[str], named: set[str]) -> int:
        report.named_meanwhile += len(named)
        return sum(_move(datastore, path, f"{base}/{path}") for path in part if path not in named)

    # Writers wait while a part moves (on an object store a move is a copy and a delete).
    report.quarantined = in_parts_kept_out(registry, old, move_unnamed)
    if report.quarantined:
        report.quarantine = base


def _move(datastore: Datastore, path: str, target: str) -> bool:
    """Move the file at ``path`` to ``target`` (both under the root); False if it was gone."""
    source = datastore.url(path)
    if not is_url(source):
        # Local disk: a rename keeps the file as it is (a symlink stays a symlink).
        destination = datastore.url(target)
        os.makedirs(os.path.dirname(destination), exist_ok=True)
        try:
            os.rename(source, destination)
        except FileNotFoundError:
            return False
        _remove_empty_parents(datastore, path)
        return True
    if not datastore.exists(path):
        return False
    with datastore.open(path) as src:
        pending = datastore.write_temporary(target, _copier(src))
    datastore.commit(pending)
    datastore.remove([path])
    return True


def _copier(src: Any) -> Callable[[Any], None]:
    return lambda dst: shutil.copyfileobj(src, dst, _CHUNK)


def _remove_empty_parents(datastore: Datastore, path: str) -> None:
    parent = posixpath.dirname(path)
    while parent:
        try:
            os.rmdir(datastore.url(parent))
        except OSError:  # not empty
            return
        parent = posixpath.dirname(parent)


# -- progress ------------------------------------------------------------------------------------


class ProgressBars:
    """Rich progress bars on standard error when asked, nothing otherwise."""

    def __init__(self, enabled: bool):
        self._bars: Any = None
        if enabled:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self._bars = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                  TimeElapsedColumn(), console=Console(stderr=True), transient=False)

    def __enter__(self) -> ProgressBars:
        if self._bars is not None:
            self._bars.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._bars is not None:
            self._bars.stop()

    def add(self, description: str, total: int | None) -> Any:
        return None if self._bars is None else self._bars.add_task(description, total=total)

    def advance(self, task: Any) -> None:
        if self._bars is not None:
            self._bars.advance(task)

