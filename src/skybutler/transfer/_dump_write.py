"""Writing a dump: streams as they are read, files beside them, everything under a temporary name until done.

Two containers hold a dump: a directory, or one zip file. Either is built under a
hidden temporary name beside the destination (``.NAME.partial-XXXXXXXX``) and renamed
to the destination only after ``dump.json`` (which names every stream's size and hash)
has been written last, so a killed export leaves at most a ``.partial`` leftover that
no reader takes for a dump.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import json
import os
import shutil
import tempfile
import uuid
import zipfile
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO, Any, BinaryIO

from .._version import __version__
from ..datastore.backends import filesystem, is_url
from ..errors import ChecksumMismatchError, FileAccessError, SkyButlerError, TransferError
from ._dump_format import (
    DUMP_FORMAT_NAME,
    DUMP_FORMAT_VERSION,
    HEADER,
    dump_path_of,
    encode_certification,
    encode_collection,
    encode_dataset,
    encode_dataset_type,
    encode_execution,
    encode_record,
    encode_time,
)
from .content import ContentSource, DatasetContent, ProvenanceBatch, TransferReport

__all__ = ["write_dump_to"]

CHUNK = 1 << 20
FILE_WORKERS = 8

# One encoder for every line: json.dumps with non-default separators builds a new one per call.
_encode = json.JSONEncoder(separators=(",", ":")).encode


class _Stream:
    """One JSON Lines stream, counted and hashed as it is written (``dump.json`` records both)."""

    def __init__(self, fh: IO[bytes]):
        self.fh = fh
        self.sha256 = hashlib.sha256()
        self.lines = 0
        self.bytes = 0

    def write(self, objs: list[dict[str, Any]]) -> None:
        if not objs:
            return
        data = "".join(_encode(o) + "\n" for o in objs).encode()
        self.fh.write(data)
        self.sha256.update(data)
        self.lines += len(objs)
        self.bytes += len(data)

    def summary(self) -> dict[str, Any]:
        return {"lines": self.lines, "bytes": self.bytes, "sha256": self.sha256.hexdigest()}


class _Container:
    """Where a dump is built: a directory or a zip file, under a temporary name until `commit`."""

    parallel_files = False

    def __init__(self, destination: Path):
        self.destination = destination
        self.temporary = destination.with_name(f".{destination.name}.partial-{uuid.uuid4().hex[:8]}")

    def open_stream(self, name: str) -> IO[bytes]:
        raise NotImplementedError

    def close_stream(self, name: str, fh: IO[bytes]) -> None:
        fh.close()

    def write_file(self, dump_path: str, size: int, copy: Callable[[BinaryIO], None]) -> bool:
        """Write one file through ``copy(out)``; False when the dump holds it already (two datasets, one file)."""
        raise NotImplementedError

    def commit(self, header: bytes) -> None:
        raise NotImplementedError

    def abort(self) -> None:
        raise NotImplementedError

    def _rename(self) -> None:
        if os.path.lexists(self.destination):  # checked again: someone may have made it meanwhile
            raise TransferError(f"Cannot write the dump: {self.destination} appeared while it was being written")
        os.rename(self.temporary, self.destination)


class _DirectoryContainer(_Container):
    parallel_files = True

    def __init__(self, destination: Path):
        super().__init__(destination)
        self.temporary.mkdir()
        self.made: set[Path] = set()  # directories made: one per run and dataset type, not one call per file

    def open_stream(self, name: str) -> IO[bytes]:
        return open(self.temporary / name, "wb")

    def write_file(self, dump_path: str, size: int, copy: Callable[[BinaryIO], None]) -> bool:
        target = self.temporary / dump_path
        if target.parent not in self.made:
            target.parent.mkdir(parents=True, exist_ok=True)
            self.made.add(target.parent)
        try:
            with open(target, "xb") as out:
                copy(out)
        except FileExistsError:
            return False
        return True

    def commit(self, header: bytes) -> None:
        with open(self.temporary / HEADER, "wb") as fh:
            fh.write(header)
        self._rename()

    def abort(self) -> None:
        shutil.rmtree(self.temporary, ignore_errors=True)


class _ZipContainer(_Container):
    """A zip file: file bytes stored as they come (one entry open at a time); streams spooled to
    unnamed temporary files and deflated into the zip at the end."""

    def __init__(self, destination: Path):
        super().__init__(destination)
        self.zip = zipfile.ZipFile(self.temporary, "w", allowZip64=True)
        self.streams: dict[str, IO[bytes]] = {}
        self.date_time = datetime.datetime.now().timetuple()[:6]

    def open_stream(self, name: str) -> IO[bytes]:
        fh = tempfile.TemporaryFile(dir=self.destination.parent)  # noqa: SIM115  (closed by commit or abort)
        self.streams[name] = fh
        return fh

    def close_stream(self, name: str, fh: IO[bytes]) -> None:
        pass  # kept open until commit copies it into the zip

    def write_file(self, dump_path: str, size: int, copy: Callable[[BinaryIO], None]) -> bool:
        if dump_path in self.zip.NameToInfo:
            return False
        info = zipfile.ZipInfo(dump_path, date_time=self.date_time)
        info.compress_type = zipfile.ZIP_STORED  # files stay seekable in place for readers
        with self.zip.open(info, "w", force_zip64=size >= zipfile.ZIP64_LIMIT // 2) as out:
            copy(out)  # type: ignore[arg-type]
        return True

    def commit(self, header: bytes) -> None:
        for name, fh in self.streams.items():
            fh.seek(0)
            info = zipfile.ZipInfo(name, date_time=self.date_time)
            info.compress_type = zipfile.ZIP_DEFLATED
            with self.zip.open(info, "w", force_zip64=True) as out:
                shutil.copyfileobj(fh, out, CHUNK)
            fh.close()
        self.zip.writestr(zipfile.ZipInfo(HEADER, date_time=self.date_time), header,
                          compress_type=zipfile.ZIP_DEFLATED)
        self.zip.close()
        self._rename()

    def abort(self) -> None:
        for fh in self.streams.values():
            fh.close()
        with contextlib.suppress(Exception):
            self.zip.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.temporary)


def _copier(content: DatasetContent) -> Callable[[BinaryIO], int]:
    """``copy(out) -> bytes``: the dataset's bytes into ``out``, checked against its file record."""
    file, url, ref = content.file, content.url, content.ref
    assert file is not None and url is not None

    def copy(out: BinaryIO) -> int:
        digest = hashlib.new(file.checksum_algorithm, usedforsecurity=False) \
            if file.checksum and file.checksum_algorithm else None
        written = 0
        try:
            with _open_url(url, content.storage_options) as stream:
                while chunk := stream.read(CHUNK):
                    out.write(chunk)
                    written += len(chunk)
                    if digest is not None:
                        digest.update(chunk)
        except SkyButlerError:
            raise
        except OSError as exc:
            raise FileAccessError(f"Cannot read the file of {ref} at {url}: {exc.strerror or exc}") from None
        if written != file.size:
            raise ChecksumMismatchError(f"The file of {ref} at {url} has {written} bytes; "
                                        f"the registry recorded {file.size}")
        if digest is not None and digest.hexdigest() != file.checksum:
            raise ChecksumMismatchError(f"The file of {ref} at {url} no longer matches its "
                                        f"{file.checksum_algorithm} checksum (bit-rot or tampering); "
                                        "run `skybutler verify` on the source")
        return written

    return copy


def _open_url(url: str, storage_options: Mapping[str, Any]) -> IO[bytes]:
    if not is_url(url) or url.startswith("file://"):  # local files without fsspec's per-call overhead
        return open(url.removeprefix("file://"), "rb")
    fs, path = filesystem(url, storage_options)
    return fs.open(path, "rb")  # type: ignore[no-any-return]


@contextlib.contextmanager
def _progress(enabled: bool) -> Iterator[Callable[[int, int], None]]:
    """``advance(datasets, bytes)`` on a rich progress line on stderr when enabled."""
    if not enabled:
        yield lambda n, b: None
        return
    from rich.console import Console
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    with Progress(SpinnerColumn(), TextColumn("export: {task.completed:,} datasets, {task.fields[mb]:,.1f} MB"),
                  TimeElapsedColumn(), console=Console(stderr=True), transient=False) as bar:
        task = bar.add_task("export", total=None, mb=0.0)
        total = [0]

        def advance(n: int, b: int) -> None:
            total[0] += b
            bar.update(task, advance=n, mb=total[0] / 1e6)

        yield advance


def write_dump_to(source: ContentSource, destination: Path, *, zip_container: bool, with_files: bool,
                  progress: bool = False, workers: int = FILE_WORKERS) -> TransferReport:
    """Write ``source`` into a new dump at ``destination`` (see `skybutler.transfer.dump.write_dump`)."""
    container: _Container = _ZipContainer(destination) if zip_container else _DirectoryContainer(destination)
    report = TransferReport()
    summaries: dict[str, dict[str, Any]] = {}
    counts = {"dimension_records": 0, "dataset_types": 0, "collections": 0, "datasets": 0, "files": 0,
              "file_bytes": 0, "tags": 0, "certifications": 0, "executions": 0, "derived": 0}

    @contextlib.contextmanager
    def stream(name: str) -> Iterator[_Stream]:
        fh = container.open_stream(name)
        s = _Stream(fh)
        yield s
        container.close_stream(name, fh)
        summaries[name] = s.summary()

    try:
        universe = source.universe
        with stream("dimension_records.jsonl") as s:
            for element, records in source.dimension_records():
                s.write([encode_record(element, r) for r in records])
                counts["dimension_records"] += len(records)
        with stream("dataset_types.jsonl") as s:
            types = source.dataset_types()
            s.write([encode_dataset_type(dt) for dt in types])
            counts["dataset_types"] = len(types)
        with stream("collections.jsonl") as s:
            collections = source.collections()
            s.write([encode_collection(c) for c in collections])
            counts["collections"] = len(collections)
        with stream("datasets.jsonl") as s, _progress(progress) as advance, \
                ThreadPoolExecutor(max(1, workers)) as pool:
            for batch in source.datasets():
                lines, placed = _dataset_lines(container, batch, with_files, pool)
                s.write(lines)
                counts["datasets"] += len(batch)
                counts["files"] += placed[0]
                counts["file_bytes"] += placed[1]
                advance(len(batch), placed[1])
        with stream("tags.jsonl") as s:
            for tags in source.tags():
                s.write([{"collection": c, "dataset_id": str(i)} for c, i in tags])
                counts["tags"] += len(tags)
        with stream("certifications.jsonl") as s:
            for certifications in source.certifications():
                s.write([encode_certification(c) for c in certifications])
                counts["certifications"] += len(certifications)
        with stream("provenance.jsonl") as s:
            for prov in source.provenance():
                s.write(_provenance_lines(prov))
                counts["executions"] += len(prov.executions)
                counts["derived"] += len(prov.derived)
        header = {
            "format": DUMP_FORMAT_NAME, "format_version": DUMP_FORMAT_VERSION, "skybutler_version": __version__,
            "created": encode_time(datetime.datetime.now(datetime.UTC)),
            "files": with_files, "counts": counts, "streams": summaries, "universe": universe.document,
        }
        container.commit(json.dumps(header, indent=1).encode() + b"\n")
    except BaseException:
        container.abort()
        raise
    report.datasets_added = counts["datasets"]
    report.files_copied = counts["files"]
    report.bytes_copied = counts["file_bytes"]
    report.dimension_records_added = counts["dimension_records"]
    report.collections_added = counts["collections"]
    report.executions_added = counts["executions"]
    return report


def _dataset_lines(container: _Container, batch: list[DatasetContent], with_files: bool,
                   pool: ThreadPoolExecutor) -> tuple[list[dict[str, Any]], tuple[int, int]]:
    """The batch's ``datasets.jsonl`` lines, its files written first; ``(files written, bytes)``."""
    jobs: list[tuple[str, DatasetContent]] = []
    lines = []
    for content in batch:
        dump_path = None
        if with_files and content.file is not None:
            if content.url is None:
                raise TransferError(f"Cannot export the file of {content.ref}: the source has no bytes for it "
                                    "(a dump made without files?); export without --files, or from the repository")
            dump_path = dump_path_of(content.file.path)
            jobs.append((dump_path, content))
        lines.append(encode_dataset(content.ref, content.file, dump_path, content.origin))

    def place(job: tuple[str, DatasetContent]) -> int:
        path, content = job
        assert content.file is not None
        copy = _copier(content)
        size = [0]

        def run(out: BinaryIO) -> None:
            size[0] = copy(out)

        return size[0] if container.write_file(path, content.file.size, run) else -1

    sizes = list(pool.map(place, jobs)) if container.parallel_files and len(jobs) > 1 else [place(j) for j in jobs]
    written = [n for n in sizes if n >= 0]
    return lines, (len(written), sum(written))


def _provenance_lines(batch: ProvenanceBatch) -> list[dict[str, Any]]:
    """One line per execution with its edges (whole, as the batch holds it), then one per derived-from edge."""
    used: dict[Any, list[list[str | None]]] = {}
    generated: dict[Any, list[list[str | None]]] = {}
    for edges, into in ((batch.used, used), (batch.generated, generated)):
        for execution_id, dataset_id, path in edges:
            into.setdefault(execution_id, []).append([str(dataset_id), path])
    rest: dict[Any, list[list[str | None]]]
    lines = [encode_execution(row, used.pop(row["id"], []), generated.pop(row["id"], []))
             for row in batch.executions]
    # Edges of executions the batch does not hold (a source should not yield them) are kept, not dropped.
    for kind, rest in (("used", used), ("generated", generated)):
        for execution_id, pairs in rest.items():
            lines.extend({"kind": kind, "execution_id": str(execution_id), "dataset_id": d, "path": p}
                         for d, p in pairs)
    lines.extend({"kind": "derived", "dataset_id": str(d), "source_id": str(s)} for d, s in batch.derived)
    return lines
