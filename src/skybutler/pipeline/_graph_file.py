"""The quantum graph file's bytes: writing it as quanta come, and reading parts of it.

The layout is described in `skybutler.pipeline.graph`. This module knows only lines
of bytes, the index and the trailer; `QuantumGraph` turns lines into quanta.

A graph is written by `GraphWriter` one quantum line at a time, so a builder never
holds more than the quantum it is making: the header line is reserved first (padded
with spaces, which JSON allows) and filled in at the end, when the per-task counts are
known; the index, sorted by quantum id, and the trailer follow the quanta. All of it
goes to a temporary name beside the final one, synced, then renamed: a build that is
killed or fails leaves no file under the final name, and a file cut short has no
footer, so it never reads as complete.
"""

from __future__ import annotations

import datetime
import json
import os
import tempfile
import uuid
import zlib
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import pydantic_core

from ..errors import GraphError

__all__ = ["GRAPH_FORMAT", "GRAPH_VERSION", "GraphWriter", "dumps", "dumps_line", "find", "iter_task_lines",
           "loads", "open_graph", "read_header", "read_index_ids", "read_trailer"]

GRAPH_FORMAT = "skybutler-quantum-graph"
GRAPH_VERSION = 1
"""Version of the graph file layout written here; readers refuse newer ones.

Files written by the streaming builder are still version 1: the header line is padded
with spaces (valid JSON) and the layout is otherwise unchanged, so every version 1
reader reads them.
"""

_FOOTER_PREFIX = b"#skybutler-qg-index "
_FOOTER_SIZE = len(_FOOTER_PREFIX) + 20 + 1 + 20 + 1 + 10 + 1
_ENTRY_SIZE = 32 + 1 + 4 + 1 + 20 + 1 + 10 + 1
_LATE_KEYS = ("counts", "skipped")  # header keys known only when every quantum is written


def _default(obj: Any) -> Any:
    if isinstance(obj, uuid.UUID):
        return str(obj)
    if isinstance(obj, datetime.datetime | datetime.date):
        return obj.isoformat()
    raise TypeError(f"{type(obj).__name__} is not plain data")


# One encoder for every line: json.dumps with options builds a new one per call.
_ENCODER = json.JSONEncoder(separators=(",", ":"), default=_default)


def dumps(obj: Any) -> bytes:
    """Compact JSON bytes of plain data (UUIDs and datetimes as strings)."""
    return _ENCODER.encode(obj).encode()


def dumps_line(record: Mapping[str, Any]) -> bytes:
    """Compact JSON bytes of one quantum's line (text, numbers, UUIDs, lists and mappings only).

    pydantic-core's serializer (a dependency through pydantic) writes these ~3x faster
    than the standard library, which at 10^6 quanta is seconds of a build. The bytes
    are the same as `dumps` gives, except that non-ASCII text stays UTF-8 instead of
    ``\\u`` escapes: the file is UTF-8, and both read back the same.
    """
    return pydantic_core.to_json(record)


def loads(data: bytes, path: str | Path, what: str) -> Any:
    """Parse one JSON line of the file at ``path``; damage is a `GraphError` naming ``what``."""
    try:
        return json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise GraphError(f"Graph file {path} is damaged or truncated: cannot parse its {what}") from None


def open_graph(path: str | Path) -> IO[bytes]:
    """Open a graph file for reading (a `GraphError` naming it if that fails)."""
    try:
        return open(path, "rb")
    except OSError as exc:
        raise GraphError(f"Cannot open graph file {path}: {exc.strerror}") from None


class GraphWriter:
    """Writes a graph file one quantum line at a time, atomically.

    Parameters
    ----------
    path
        The final file name; nothing appears under it before `finish`.
    header
        The header without ``format``/``version`` (added here) and without the keys
        known only at the end (``counts``, ``skipped``), which `finish` adds.
    labels
        Every task label, in the order their quanta will come (dependency order).

    Notes
    -----
    Quanta of one task must come together (a task is one byte range of the file).
    Memory held: one index entry (72 bytes) per quantum, never a quantum.
    """

    def __init__(self, path: str | Path, header: Mapping[str, Any], labels: Sequence[str]):
        self.path = Path(path)
        self.labels = list(labels)
        self.header = {"format": GRAPH_FORMAT, "version": GRAPH_VERSION,
                       **{k: v for k, v in header.items() if k not in _LATE_KEYS}}
        self.counts: dict[str, int] = dict.fromkeys(self.labels, 0)
        self.written = 0
        self._label_index = {label: i for i, label in enumerate(self.labels)}
        self._ranges: dict[str, list[int]] = {}
        self._current: str | None = None
        self._entries: list[bytes] = []
        # Room for the late keys: a count never exceeds 20 digits, and their keys are the labels.
        per_label = sum(len(dumps(label)) + 22 for label in self.labels) + 2
        self._reserved = len(dumps(self.header)) + len(_LATE_KEYS) * (per_label + 16)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, self._tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent)
        self._file: IO[bytes] | None = os.fdopen(fd, "wb")
        self._file.write(b" " * self._reserved + b"\n")
        self._offset = self._reserved + 1

    def __enter__(self) -> GraphWriter:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if self._file is not None:  # not finished: an error, or the caller stopped early
            self.abort()

    def add(self, label: str, quantum_id: uuid.UUID, line: bytes) -> None:
        """Append one quantum's JSON line (without newline) of task ``label``."""
        if label != self._current:
            if label in self._ranges or label not in self._label_index:
                raise GraphError(f"Quanta of task {label!r} come out of order or the task is not in the header "
                                 "(a bug in the graph's producer)")
            self._close_range()
            self._current = label
            self._ranges[label] = [self._offset, self._offset, 0]
        assert self._file is not None
        self._file.write(line)
        self._file.write(b"\n")
        n = len(line) + 1
        self._entries.append(b"%s %04d %020d %010d\n" % (quantum_id.hex.encode(),
                                                          self._label_index[label], self._offset, n))
        self._offset += n
        self.counts[label] += 1
        self.written += 1

    def _close_range(self) -> None:
        if self._current is not None:
            r = self._ranges[self._current]
            r[1], r[2] = self._offset, self.counts[self._current]

    def finish(self, late: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Write index, trailer and header, sync, rename; returns the header as written.

        ``late`` holds ``skipped`` (and may hold ``counts``, else the quanta added are counted).
        """
        assert self._file is not None
        f = self._file
        self._close_range()
        tasks = {label: self._ranges.get(label, [self._offset, self._offset, 0]) for label in self.labels}
        self._entries.sort()
        index = b"".join(self._entries)
        self._entries = []
        f.write(index)
        trailer = dumps({"count": self.written, "tasks": tasks,
                         "index": [self._offset, len(index), zlib.crc32(index)]}) + b"\n"
        f.write(trailer)
        trailer_offset = self._offset + len(index)
        f.write(_FOOTER_PREFIX + b"%020d %020d %010d\n" % (trailer_offset, len(trailer), zlib.crc32(trailer)))
        header = {**self.header, "counts": dict(self.counts)}
        for key, value in (late or {}).items():
            if key not in _LATE_KEYS:
                raise GraphError(f"Header key {key!r} must be given when the graph file is started")
            header[key] = value
        line = dumps(header)
        if len(line) > self._reserved:  # a bug: the reservation bounds every count and label
            raise GraphError(f"The graph header outgrew its reserved {self._reserved} bytes")
        f.seek(0)
        f.write(line + b" " * (self._reserved - len(line)))
        f.flush()
        os.fsync(f.fileno())
        f.close()
        self._file = None
        try:
            os.replace(self._tmp, self.path)
        except BaseException:
            Path(self._tmp).unlink(missing_ok=True)
            raise
        return header

    def abort(self) -> None:
        """Drop the temporary file (nothing is left under the final name)."""
        if self._file is not None:
            self._file.close()
            self._file = None
        Path(self._tmp).unlink(missing_ok=True)


# -- reading -----------------------------------------------------------------------------


def read_header(f: IO[bytes], path: str | Path) -> dict[str, Any]:
    """The header line, its format and version checked."""
    first = f.readline()
    if not first.startswith(b"{"):
        raise GraphError(f"{path} is not a skybutler quantum graph file")
    header = loads(first, path, "header")
    if not isinstance(header, dict) or header.get("format") != GRAPH_FORMAT:
        raise GraphError(f"{path} is not a skybutler quantum graph file")
    version = header.get("version")
    if not isinstance(version, int) or version > GRAPH_VERSION:
        raise GraphError(f"Graph file {path} has format version {version}; this skybutler reads up to "
                         f"{GRAPH_VERSION}. Upgrade skybutler to read it.")
    return header


def read_trailer(f: IO[bytes], path: str | Path) -> dict[str, Any]:
    """The trailer (task byte ranges, where the index is), found through the fixed-size footer."""
    size = f.seek(0, os.SEEK_END)
    truncated = GraphError(f"Graph file {path} is truncated or damaged: its index footer is missing "
                           "(was it copied while being written?)")
    if size < _FOOTER_SIZE:
        raise truncated
    f.seek(size - _FOOTER_SIZE)
    footer = f.read(_FOOTER_SIZE)
    if not footer.startswith(_FOOTER_PREFIX) or not footer.endswith(b"\n"):
        raise truncated
    try:
        offset, length, crc = (int(x) for x in footer[len(_FOOTER_PREFIX):].split())
    except ValueError:
        raise truncated from None
    if offset + length + _FOOTER_SIZE != size:
        raise truncated
    f.seek(offset)
    data = f.read(length)
    if zlib.crc32(data) != crc:
        raise GraphError(f"Graph file {path} is damaged: its trailer fails its checksum")
    trailer = loads(data, path, "trailer")
    if not isinstance(trailer, dict):
        raise GraphError(f"Graph file {path} is damaged: its trailer is not an object")
    return trailer


def find(f: IO[bytes], path: str | Path, trailer: Mapping[str, Any], qid: uuid.UUID) -> tuple[int, int]:
    """Offset and length of a quantum's line, by binary search of the fixed-width index."""
    start, length, _crc = trailer["index"]
    lo, hi = 0, length // _ENTRY_SIZE
    target = qid.hex.encode()
    while lo < hi:
        mid = (lo + hi) // 2
        f.seek(start + mid * _ENTRY_SIZE)
        entry = f.read(_ENTRY_SIZE)
        key = entry[:32]
        if key == target:
            try:
                _hex, _task, offset, n = entry.split()
                return int(offset), int(n)
            except ValueError:
                raise GraphError(f"Graph file {path} is damaged: bad index entry {entry!r}") from None
        if key < target:
            lo = mid + 1
        else:
            hi = mid
    raise GraphError(f"Graph file {path} has no quantum {qid}")


def read_index_ids(f: IO[bytes], path: str | Path, trailer: Mapping[str, Any],
                   tasks: Sequence[str] | None = None) -> list[uuid.UUID]:
    """Quantum ids from the index (sorted by id), all or those of some tasks; no quantum is read."""
    start, length, crc = trailer["index"]
    f.seek(start)
    index = f.read(length)
    if zlib.crc32(index) != crc:
        raise GraphError(f"Graph file {path} is damaged: its index fails its checksum")
    positions = None
    if tasks is not None:
        order = list(trailer["tasks"])
        positions = {b"%04d" % order.index(t) for t in tasks}
    out = []
    for i in range(0, len(index), _ENTRY_SIZE):
        if positions is None or index[i + 33:i + 37] in positions:
            out.append(uuid.UUID(index[i:i + 32].decode()))
    return out


def iter_task_lines(f: IO[bytes], path: str | Path, trailer: Mapping[str, Any], label: str) -> Iterator[bytes]:
    """The quantum lines of one task, read one at a time (memory: the file's read buffer)."""
    start, end, count = trailer["tasks"][label]
    f.seek(start)
    offset, n = start, 0
    while offset < end:
        line = f.readline()
        if not line.endswith(b"\n") or offset + len(line) > end:
            break
        offset += len(line)
        n += 1
        yield line
    if n != count or offset != end:
        raise GraphError(f"Graph file {path} is damaged: task {label!r} should have {count} quanta, "
                         f"found {n}")
