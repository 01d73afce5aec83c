"""Moving a job's files: inputs into its scratch directory, outputs to the central datastore.

Stage-in brings each input named by the manifest to ``scratch/datastore/<path>``: a
hard link for a local file when asked and possible (the same inode, no bytes copied),
otherwise a copy, or a download through fsspec for a URL. Its size and checksum are
verified when the manifest gives them, so a job never runs on a truncated or changed
file; every problem is collected and reported at once, each naming the file and its
dataset.

Stage-out puts each output at its planned path under the destination through a
`Datastore` on it, so the rules of every put apply: on local disk the bytes go to a
temporary name beside the final one and are linked into place (never over an existing
file), on an object store to the final key with an exclusive create. A file already
there with the same size and checksum is a repeated attempt's and is kept, unless a
removal still has to delete it; a different one is a problem, never overwritten.
"""

from __future__ import annotations

import errno
import hashlib
import os
import posixpath
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

from ..datastore import Datastore, is_url
from ..errors import DatasetExistsError, FileAccessError, SkyButlerError, StagingError
from .manifest import StagedInput

__all__ = ["StagedOutput", "StageOutResult", "split_checksum", "stage_in", "stage_out"]

_CHUNK = 1 << 20
_THREADS = 8
# A hard link is impossible for these reasons; a copy then does.
_NO_LINK = {errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK, errno.EACCES}
_SHOWN = 5  # problems quoted in a StagingError; the rest are counted

T = TypeVar("T")
R = TypeVar("R")


def split_checksum(checksum: str | None, algorithm: str | None, default: str = "md5") -> tuple[str | None, str]:
    """``(hex digest, algorithm)`` of a manifest checksum, which may also be written ``"md5:<hex>"``.

    Examples
    --------
    >>> split_checksum("md5:abc", None), split_checksum("abc", "sha256"), split_checksum(None, None)
    (('abc', 'md5'), ('abc', 'sha256'), (None, 'md5'))
    """
    if checksum and algorithm is None and ":" in checksum:
        algorithm, _, checksum = checksum.partition(":")
    return checksum or None, algorithm or default


def _parallel(fn: Callable[[T], R], items: Sequence[T], threads: int) -> list[R]:
    # One file needs no pool (and its start-up is a noticeable part of a small job).
    if len(items) <= 1 or threads <= 1:
        return [fn(item) for item in items]
    with ThreadPoolExecutor(max_workers=min(threads, len(items)), thread_name_prefix="skybutler-stage") as pool:
        return list(pool.map(fn, items))


def _raise_problems(problems: list[str], what: str) -> None:
    if not problems:
        return
    more = f"; and {len(problems) - _SHOWN} more" if len(problems) > _SHOWN else ""
    raise StagingError(f"{len(problems)} {what}: {'; '.join(problems[:_SHOWN])}{more}")


# -- stage-in --------------------------------------------------------------------------


def _safe_target(root: Path, path: str) -> Path:
    parts = path.split("/")
    if not path or path.startswith("/") or "\\" in path or "\0" in path or ".." in parts or is_url(path):
        raise StagingError(f"input path {path!r} would lie outside the scratch datastore")
    return root / posixpath.normpath(path)


def _hash_file(path: Path, algorithm: str) -> str:
    digest = hashlib.new(algorithm, usedforsecurity=False)
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _copy_stream(src: BinaryIO, target: Path, algorithm: str | None) -> tuple[int, str | None]:
    """Copy a stream to a new file, hashing on the way: one read of the bytes."""
    digest = hashlib.new(algorithm, usedforsecurity=False) if algorithm else None
    size = 0
    with open(target, "xb") as out:
        while chunk := src.read(_CHUNK):
            out.write(chunk)
            size += len(chunk)
            if digest is not None:
                digest.update(chunk)
    return size, digest.hexdigest() if digest is not None else None


def _stage_one(item: StagedInput, root: Path, mode: str) -> str | None:
    """Stage one input; None when done, else the problem in words (naming file and dataset)."""
    name = f"input {item.path!r} (dataset {item.dataset_id}) from {item.source}"
    expected, algorithm = split_checksum(item.checksum, item.checksum_algorithm)
    want_hash = algorithm if expected else None
    try:
        target = _safe_target(root, item.path)
        target.parent.mkdir(parents=True, exist_ok=True)
        source = item.source
        if source.startswith("file://"):
            source = source[len("file://"):]
        if is_url(source):
            from fsspec.core import url_to_fs

            fs, remote = url_to_fs(source, **item.storage_options)
            with fs.open(remote, "rb") as stream:
                size, found = _copy_stream(stream, target, want_hash)
        else:
            linked = False
            if mode == "link":
                try:
                    os.link(source, target)
                    linked = True
                except OSError as exc:
                    if exc.errno not in _NO_LINK:
                        raise
            if linked:
                size = target.stat().st_size
                found = _hash_file(target, want_hash) if want_hash and (item.size is None or
                                                                        size == item.size) else None
            else:
                with open(source, "rb") as stream:
                    size, found = _copy_stream(stream, target, want_hash)
    except StagingError as exc:
        return f"{name}: {exc}"
    except FileNotFoundError:
        return f"{name}: no such file"
    except PermissionError:
        return f"{name}: not readable (permission denied)"
    except (OSError, SkyButlerError) as exc:
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        return f"{name}: cannot be staged ({reason})"
    except Exception as exc:  # an fsspec backend's own error (botocore, aiohttp...): reported, not raised
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        return f"{name}: cannot be staged ({type(exc).__name__}: {reason})"
    if item.size is not None and size != item.size:
        return f"{name}: {size} bytes, the manifest says {item.size}"
    if expected and found != expected:
        return f"{name}: {algorithm} checksum {found}, the manifest says {expected}"
    return None


def stage_in(inputs: Sequence[StagedInput], root: str | Path, *, mode: str = "link", threads: int = _THREADS) -> None:
    """Bring a job's inputs to ``root/<path>``, verifying size and checksum where the manifest gives them.

    Parameters
    ----------
    inputs
        The manifest's inputs.
    root
        The scratch datastore root.
    mode
        ``"link"``: local files are hard-linked when possible (else copied); ``"copy"``: copied.
        URLs are always downloaded (fsspec, with each input's ``storage_options``).
    threads
        Files staged at the same time.

    Raises
    ------
    StagingError
        Any input missing, unreadable, or of another size or checksum: one message listing
        the problems, each naming the file and its dataset id, expected and found values.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    results = _parallel(lambda item: _stage_one(item, root, mode), list(inputs), threads)
    _raise_problems([r for r in results if r is not None], "input(s) could not be staged")


# -- stage-out -------------------------------------------------------------------------


@dataclass(frozen=True)
class StagedOutput:
    """One output file to stage out: where it is in scratch, where it goes, what it is."""

    local: Path
    path: str
    """Relative to the destination root (the dataset's planned path)."""
    dataset_id: uuid.UUID
    size: int
    checksum: str | None = None
    checksum_algorithm: str | None = None


@dataclass
class StageOutResult:
    """What stage-out did: paths copied, paths found already there (identical), problems in words."""

    copied: list[str]
    present: list[str]
    problems: list[str]

    @property
    def staged(self) -> set[str]:
        """Paths the destination now holds with this job's bytes."""
        return {*self.copied, *self.present}

    def raise_problems(self) -> None:
        """`StagingError` listing the problems, if any."""
        _raise_problems(self.problems, "output(s) could not be staged out")


class _Destination:
    """The central datastore as seen by one job: one `Datastore` per checksum algorithm."""

    def __init__(self, root: str, options: Mapping[str, Any], sync: bool):
        self.root = root
        self.options = dict(options)
        self.sync = sync
        self._stores: dict[str, Datastore] = {}

    def store(self, algorithm: str) -> Datastore:
        if algorithm not in self._stores:
            self._stores[algorithm] = Datastore(self.root, storage_options=self.options, checksum=algorithm,
                                                sync=self.sync)
        return self._stores[algorithm]


def _compare(store: Datastore, item: StagedOutput, digest: str, algorithm: str) -> str | None:
    """None when the destination holds the same bytes at ``item.path``, else the difference in words."""
    found_size = store.size(item.path)
    found = store.checksum(item.path, algorithm).partition(":")[2]
    if found_size == item.size and found == digest:
        return None
    return (f"output {item.path!r} (dataset {item.dataset_id}): the destination {store.url(item.path)} already "
            f"holds a different file ({found_size} bytes, {algorithm} {found}; this job's has {item.size} bytes, "
            f"{algorithm} {digest}); not overwritten")


def _kept(store: Datastore, item: StagedOutput, digest: str, algorithm: str) -> tuple[str, str | None]:
    """``("present", None)`` when the file at ``item.path`` holds this job's bytes and may be kept, else why not.

    Not when a removal still has to delete it (its rows are gone, the file is next on the
    list): the merge would name a file that the removal then deletes.
    """
    problem = _compare(store, item, digest, algorithm)
    if problem is not None:
        return "failed", problem
    removal = store.removal_listing(item.path)
    if removal is not None:
        return "failed", (f"output {item.path!r} (dataset {item.dataset_id}): the destination's file with the same "
                          f"bytes is still to be deleted by the removal of {removal!r}, which has not finished; not "
                          "kept (run the job again once the removal is over)")
    return "present", None


def _stage_out_one(item: StagedOutput, dest: _Destination, transfer: str) -> tuple[str, str | None]:
    """``("copied" | "present" | "failed", problem)`` for one output."""
    digest, algorithm = split_checksum(item.checksum, item.checksum_algorithm)
    name = f"output {item.path!r} (dataset {item.dataset_id})"
    try:
        store = dest.store(algorithm)
        if digest is None:  # the scratch repository kept no checksum: compare against the file itself
            digest = _hash_file(item.local, algorithm)
        try:
            pending = _place(store, item, transfer)
        except DatasetExistsError:
            return _kept(store, item, digest, algorithm)
        if pending.checksum != f"{algorithm}:{digest}" or pending.size != item.size:
            store.abort(pending)
            return "failed", (f"{name}: {pending.size} bytes, {pending.checksum} written, but the job recorded "
                              f"{item.size} bytes, {algorithm}:{digest} (changed in scratch after it was written?)")
        try:
            store.commit(pending)
        except DatasetExistsError:  # another attempt got there between our check and our commit
            store.abort(pending)
            return _kept(store, item, digest, algorithm)
        return "copied", None
    except (OSError, SkyButlerError) as exc:
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        return "failed", f"{name}: cannot be staged out to {dest.root}: {reason}"


def _place(store: Datastore, item: StagedOutput, transfer: str) -> Any:
    """Write ``item`` under its temporary name in ``store``: a hard link when asked and possible, else a copy.

    Never the datastore's "auto" mode: scratch may lie under the datastore root (the
    default submission directory is inside the repository), and "auto" would then leave
    the file in place, in a scratch directory that is removed after the job.
    """
    if transfer == "hardlink" and store.is_local:
        try:
            return store.ingest(str(item.local), item.path, "hardlink", checksum=True)
        except FileAccessError as exc:
            if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP):
                raise
    return store.ingest(str(item.local), item.path, "copy", checksum=True)


def stage_out(outputs: Iterable[StagedOutput], destination: str, options: Mapping[str, Any] | None = None, *,
              link: bool = True, sync: bool = False, threads: int = _THREADS) -> StageOutResult:
    """Put outputs at their paths under ``destination`` (a path or URL); never overwrites a file.

    Parameters
    ----------
    outputs
        The files and their planned paths.
    destination
        The central datastore root.
    options
        fsspec storage options of the destination.
    link
        Local to local: hard-link when possible instead of copying (scratch is removed after).
    sync
        Flush each file to the device before it is linked into place (the repository's
        ``registry.sync_every_commit``).
    threads
        Files staged at the same time.

    Returns
    -------
    StageOutResult
        Every output is tried; problems (a different file already at a path, an
        unreachable store) are collected, not raised.
    """
    dest = _Destination(destination, options or {}, sync)
    items = list(outputs)
    transfer = "hardlink" if link else "copy"
    out = StageOutResult([], [], [])
    if items:
        # A path that a removal (running or interrupted) still lists is refused, file or no file:
        # between this stage-out and the merge that names it, finishing that removal would
        # delete the file placed here (nothing names it until the merge).
        listed = dest.store(split_checksum(items[0].checksum, items[0].checksum_algorithm)[1]).removal_listings(
            item.path for item in items)
        for item in items:
            if item.path in listed:
                out.problems.append(
                    f"output {item.path!r} (dataset {item.dataset_id}): its path is still to be deleted by the "
                    f"removal of {listed[item.path]!r}, which has not finished; not staged (run the job again "
                    "once the removal is over; one interrupted by a crash is finished by repeating it)")
        items = [item for item in items if item.path not in listed]
    results = _parallel(lambda item: _stage_out_one(item, dest, transfer), items, threads)
    for item, (status, problem) in zip(items, results, strict=True):
        if status == "copied":
            out.copied.append(item.path)
        elif status == "present":
            out.present.append(item.path)
        elif problem:
            out.problems.append(problem)
    return out

