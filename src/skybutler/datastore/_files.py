"""The files of an unfinished put: temporary names, their writers, and the writer that hashes.

Split from `skybutler.datastore.store` (the datastore's operations) so that each stays
short: this module knows how a temporary file is named and when its writer is gone; the
store decides when to write, commit, abort and sweep.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import os
import posixpath
import random
import re
import socket
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import IO, Any

__all__ = ["CHUNK", "HOST_TAG", "TEMPORARY_MAX_AGE", "TEMPORARY_NAME", "GuardedFile", "HashingWriter",
           "PendingFile", "is_temporary", "owner_gone", "stamp_seconds", "temporary_name", "writer_gone"]

CHUNK = 1 << 20
# ``.{name}.tmp-{host tag}-{pid}-{random}``; names without host and pid (older releases) too.
TEMPORARY_NAME = re.compile(r"^\..*\.tmp-(?:(?P<host>[0-9a-f]{8})-(?P<pid>[0-9]{1,10})-)?[0-9a-f]{32}$", re.DOTALL)
HOST_TAG = hashlib.blake2s(socket.gethostname().encode(), digest_size=4).hexdigest()

TEMPORARY_MAX_AGE = 3600
"""Seconds after which a temporary file whose writer cannot be checked (another host, or a
process id now reused) counts as abandoned. A writer touches its file while it writes and
commits within seconds after, so an hour untouched is far beyond any live put, while short
enough that a crashed batch does not fill a disk for days."""

def is_temporary(path: str) -> bool:
    """Whether ``path`` names a temporary file left by an unfinished put (``.{name}.tmp-{hex}``).

    Examples
    --------
    >>> is_temporary("run/calexp/.calexp_1.fits.tmp-0123456789abcdef0123456789abcdef")
    True
    >>> is_temporary("run/calexp/calexp_1.fits")
    False
    """
    return bool(TEMPORARY_NAME.match(posixpath.basename(path)))


def temporary_name(path: str) -> str:
    head, name = posixpath.split(path)
    # Keep the temporary name within the 255-byte limit of most filesystems.
    # The random part only keeps writers apart (the file is created O_EXCL): the random
    # module's generator (reseeded in a forked child) instead of a getrandom syscall per file.
    return posixpath.join(head, f".{name[:190]}.tmp-{HOST_TAG}-{os.getpid()}-{random.getrandbits(128):032x}")


def stamp_seconds(info: Mapping[str, Any]) -> float | None:
    """When a file was last changed, in seconds since the epoch, from a filesystem's description of it; None if not said.

    ``info`` is what fsspec's ``info``/``ls`` give (``LastModified`` on S3, ``created`` /
    ``mtime`` elsewhere, a datetime or a number) or a local ``{"ctime": ...}``.
    """
    stamp = info.get("ctime") or info.get("LastModified") or info.get("created") or info.get("mtime")
    if stamp is None:
        return None
    return float(stamp.timestamp() if hasattr(stamp, "timestamp") else stamp)


def writer_gone(name: str, changed: float, now: float) -> bool:
    """Whether the writer of temporary file ``name`` (last changed at ``changed``) is gone."""
    match = TEMPORARY_NAME.match(name)
    if match is None:
        return False
    return owner_gone(match["host"], match["pid"], changed, now)


def owner_gone(host: str | None, pid_text: str | None, changed: float, now: float) -> bool:
    if now - changed > TEMPORARY_MAX_AGE:
        return True
    if host != HOST_TAG or pid_text is None:
        return False  # another host's writer: only age tells
    pid = int(pid_text)
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # exists, but is another user's process
        return False
    return False


@dataclass(frozen=True)
class PendingFile:
    """A file written or ingested but not yet committed.

    Attributes
    ----------
    path
        Final path relative to the root; for a ``direct`` ingest, the absolute URL of
        the file where it stays.
    temp_path
        Where the bytes are now (relative to the root); equal to ``path`` when they were
        written in place (object stores, ``direct`` and in-place ingests).
    size
        Size in bytes.
    checksum
        ``"<algorithm>:<hex digest>"`` (``"md5:9e10..."``), or None when checksums are
        disabled or were skipped.
    transfer
        What was done: ``"write"``, ``"copy"``, ``"move"``, ``"hardlink"``, ``"symlink"``,
        ``"direct"`` or ``"in_place"`` (an ``auto`` ingest of a file already under the root).
    source
        For ``"move"``: the URL of the source file, deleted by `Datastore.commit`.
    replaces
        The final path holds a file no registry row names (left by a crashed write), which
        `Datastore.commit` replaces; the bytes wait under a temporary name until then.
    inode
        The inode of a local file this store wrote, or None: a clean-up after its registry
        transaction failed deletes the file only while the path still holds this inode
        (`Datastore.remove_placed`).
    """

    path: str
    temp_path: str
    size: int
    checksum: str | None
    transfer: str = "write"
    source: str | None = None
    replaces: bool = False
    inode: int | None = None


class HashingWriter(io.RawIOBase):
    """A write-only file that hashes and counts what passes through to ``raw``.

    A writer that seeks back and rewrites (some formats patch a header at the end) makes
    the running hash invalid; ``rewritten`` tells the store to hash the file again.
    """

    def __init__(self, raw: IO[bytes], algorithm: str | None, limit: int | None):
        super().__init__()
        self._raw = raw
        self._hash = hashlib.new(algorithm, usedforsecurity=False) if algorithm else None
        self._limit = limit
        self._pos = 0
        self.size = 0
        self.rewritten = False

    mode = "wb"

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return bool(self._raw.seekable())

    def write(self, b: Any) -> int:
        data = memoryview(b).cast("B")
        n = len(data)
        if self._limit is not None and self._pos + n > self._limit:
            raise OSError(errno.ENOSPC, "No space left on device (simulated by disk_full_after)")
        self._raw.write(data)
        if self._pos == self.size and self._hash is not None:
            self._hash.update(data)
        elif self._pos != self.size:
            self.rewritten = True
        self._pos += n
        self.size = max(self.size, self._pos)
        return n

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        self._pos = self._raw.seek(offset, whence)
        return self._pos

    def flush(self) -> None:
        if not self.closed and not getattr(self._raw, "closed", False):
            self._raw.flush()

    def hexdigest(self) -> str | None:
        return None if self._hash is None else self._hash.hexdigest()


class GuardedFile:
    """A remote file whose read errors become one `FileAccessError` line (see `StoreLocation.errors`)."""

    def __init__(self, stream: Any, guard: Callable[[], contextlib.AbstractContextManager[None]]):
        self._stream = stream
        self._guard = guard

    def read(self, *args: Any) -> Any:
        with self._guard():
            return self._stream.read(*args)

    def readinto(self, buffer: Any) -> Any:
        with self._guard():
            return self._stream.readinto(buffer)

    def readline(self, *args: Any) -> Any:
        with self._guard():
            return self._stream.readline(*args)

    def seek(self, *args: Any) -> Any:
        with self._guard():
            return self._stream.seek(*args)

    def __iter__(self) -> Iterator[Any]:
        while line := self.readline():
            yield line

    def __enter__(self) -> GuardedFile:
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stream.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


