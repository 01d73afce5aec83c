"""Remote files read in byte ranges: only the bytes a partial read needs travel from the store.

Opened by ``Datastore.open(path, partial=True)`` on object stores. fsspec's default remote
file reads ahead a large block on every miss (s3fs: 50 MiB), so 25 cutouts of a 64 MB
image fetched most of the file. A `RangedFile` instead

- serves reads from the parts of the file it holds, and on a miss fetches the bytes asked
  for plus a small read-ahead (`READ_AHEAD`), enough for a FITS header in one request;
- lets the reader name, before it reads, every range it is about to read (`prefetch`):
  they are merged (`merge_ranges`) and fetched in one concurrent batch (``fs.cat_ranges``,
  which s3fs runs as parallel ranged GETs), instead of one request after another;
- counts what travelled (`bytes_fetched`, `requests`), which callers report as the bytes a
  read cost.
"""

from __future__ import annotations

import bisect
import contextlib
import io
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from fsspec import AbstractFileSystem

__all__ = ["READ_AHEAD", "RangedFile", "merge_ranges"]

READ_AHEAD = 4 * 2880
"""Bytes fetched at least on a read the file does not hold: four FITS blocks, so the header
of a simple image (and the four bytes astropy peeks at first) costs one request."""


def merge_ranges(ranges: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    """Sort byte ranges ``(start, end)`` (end exclusive) and merge those worth one request.

    Overlapping and touching ranges become one; so does a range separated from the one
    before it by a gap no longer than itself. Fetching the gap costs at most as many bytes
    as the range, so the merged ranges never hold more than twice the bytes asked for,
    while the rows of a box as wide as the image (touching ranges) or close boxes become
    one request rather than hundreds.

    Examples
    --------
    >>> merge_ranges([(400, 500), (0, 100), (100, 150), (1000, 1010)])
    [(0, 150), (400, 500), (1000, 1010)]
    >>> merge_ranges([(0, 100), (150, 250)])  # a 50-byte gap before 100 bytes
    [(0, 250)]
    """
    merged: list[tuple[int, int]] = []
    for start, end in sorted(r for r in ranges if r[1] > r[0]):
        if merged:
            last_start, last_end = merged[-1]
            if start - last_end <= max(0, end - max(start, last_end)):
                merged[-1] = (last_start, max(last_end, end))
                continue
        merged.append((start, end))
    return merged


class RangedFile(io.RawIOBase):
    """A read-only remote file that fetches only the byte ranges read or prefetched.

    Parameters
    ----------
    fs
        The file's filesystem (s3fs; any fsspec filesystem works).
    path
        The file's path on ``fs``.
    size
        The file's size in bytes (from the ``info`` the opener made).
    guard
        Returns a context manager that turns the filesystem's errors into skybutler's
        (`StoreLocation.errors`); every fetch runs inside it.
    read_ahead
        Bytes fetched at least on a miss.

    Attributes
    ----------
    bytes_fetched
        Bytes that travelled from the store so far (what the store's responses held).
    requests
        Ranged reads sent to the store so far.
    """

    def __init__(self, fs: AbstractFileSystem, path: str, size: int, *,
                 guard: Callable[[], contextlib.AbstractContextManager[None]] = contextlib.nullcontext,
                 read_ahead: int = READ_AHEAD, details: Mapping[str, Any] | None = None):
        super().__init__()
        self.fs = fs
        self.path = path
        self.size = size
        self.details = dict(details or {})
        """The store's description of the file when it was opened (``fs.info``), as fsspec's files keep it."""
        self.bytes_fetched = 0
        self.requests = 0
        self._guard = guard
        self._read_ahead = read_ahead
        self._position = 0
        # The parts held: sorted, disjoint and never touching (touching parts are joined).
        self._starts: list[int] = []
        self._parts: list[bytes] = []

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: self.size}[whence]
        if base + offset < 0:
            raise OSError(f"negative seek position {base + offset} in {self.path}")
        self._position = base + offset
        return self._position

    def tell(self) -> int:
        return self._position

    def read(self, size: int | None = -1) -> bytes:
        start = self._position
        end = self.size if size is None or size < 0 else min(self.size, start + size)
        if start >= end:
            return b""
        data = self._held(start, end)
        if data is None:
            self._fetch([(start, min(self.size, max(end, start + self._read_ahead)))])
            data = self._held(start, end)
            assert data is not None
        self._position = end
        return data

    def readall(self) -> bytes:
        return self.read(-1)

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        data = self.read(len(view))
        view[: len(data)] = data
        return len(data)

    def prefetch(self, ranges: Sequence[tuple[int, int]]) -> None:
        """Fetch the byte ranges ``(start, end)`` (end exclusive) that later reads will ask for.

        Ranges are clipped to the file, parts already held are left out, the rest merged
        (`merge_ranges`) and fetched in one batch of concurrent requests.
        """
        wanted = [(max(0, s), min(self.size, e)) for s, e in ranges]
        self._fetch([r for r in merge_ranges(wanted) if self._held(*r) is None])

    def _held(self, start: int, end: int) -> bytes | None:
        """The bytes ``[start, end)`` if one held part covers them, else None."""
        at = bisect.bisect_right(self._starts, start) - 1
        if at < 0:
            return None
        offset = start - self._starts[at]
        part = self._parts[at]
        if end - self._starts[at] > len(part):
            return None
        return part if offset == 0 and end - start == len(part) else part[offset : offset + end - start]

    def _fetch(self, ranges: list[tuple[int, int]]) -> None:
        if not ranges:
            return
        with self._guard():
            if len(ranges) == 1:
                blocks = [self.fs.cat_file(self.path, start=ranges[0][0], end=ranges[0][1])]
            else:
                blocks = self.fs.cat_ranges([self.path] * len(ranges), [s for s, _ in ranges],
                                            [e for _, e in ranges], on_error="raise")
        for (start, end), block in zip(ranges, blocks, strict=True):
            if len(block) != end - start:
                raise OSError(f"{self.path} changed while being read: asked for bytes {start}-{end}, "
                              f"got {len(block)}")
            self.requests += 1
            self.bytes_fetched += len(block)
            self._keep(start, bytes(block))

    def _keep(self, start: int, block: bytes) -> None:
        """Hold ``block`` at ``start``, joining it with the parts it overlaps or touches."""
        end = start + len(block)
        first = bisect.bisect_left(self._starts, start)
        if first > 0 and self._starts[first - 1] + len(self._parts[first - 1]) >= start:
            first -= 1
        last = first
        while last < len(self._starts) and self._starts[last] <= end:
            last += 1
        if first == last:
            self._starts.insert(first, start)
            self._parts.insert(first, block)
            return
        new_start = min(start, self._starts[first])
        new_end = max(end, *(s + len(p) for s, p in zip(self._starts[first:last], self._parts[first:last],
                                                          strict=True)))
        joined = bytearray(new_end - new_start)
        for s, p in zip(self._starts[first:last], self._parts[first:last], strict=True):
            joined[s - new_start : s - new_start + len(p)] = p
        joined[start - new_start : end - new_start] = block
        self._starts[first:last] = [new_start]
        self._parts[first:last] = [bytes(joined)]
