"""Portable dumps: a repository's content (or part of it) as plain, versioned files, and back.

A dump is a directory or one ``.zip`` file holding ``dump.json`` (the format name and
version, the skybutler that wrote it, counts, each stream's size and hash, the dimension
universe), one JSON Lines file per content stream, and with files, their bytes under
``files/``. docs/dump_format.md documents every file and field.

- `write_dump` writes any `ContentSource` (a live repository through
  `skybutler.transfer.source.RegistrySource`, or another dump) into a new dump.
- `DumpSource` reads a dump as a `ContentSource`; `skybutler.transfer.importer.import_content`
  writes it into a repository (`import_dump` does both, after checking the dump whole).
- `export_dump` selects datasets of a repository (as `RegistrySource` does) and writes them.

Compatibility rule: this code writes format `DUMP_FORMAT_VERSION` and reads that and every
older version; a dump of a newer version is refused with `DumpVersionError` naming both
versions and the skybutler that wrote it. A version changes whenever a reader of the
previous version would misread a dump of the new one.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import posixpath
import shutil
import tempfile
import uuid
import zipfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from .._version import __version__
from ..datastore.backends import is_url
from ..dimensions import DimensionUniverse
from ..errors import DumpVersionError, FileAccessError, TransferError
from ..model import DatasetType
from ._dump_format import (
    DUMP_FORMAT_NAME,
    DUMP_FORMAT_VERSION,
    FILES_DIR,
    HEADER,
    STREAMS,
    DecoderV1,
    decoder_for,
)
from ._dump_write import write_dump_to
from .content import (
    TRANSFER_CHOICES,
    Certification,
    CollectionContent,
    ContentSource,
    DatasetContent,
    ProvenanceBatch,
    TransferReport,
)

if TYPE_CHECKING:
    from ..butler import Butler

__all__ = ["DUMP_BATCH", "DUMP_FORMAT_VERSION", "DumpSource", "export_dump", "import_dump", "write_dump"]

DUMP_BATCH = 5000
"""Lines per batch a `DumpSource` yields (memory stays flat in the size of the dump)."""

FILES_CHOICES = ("none", "directory", "zip")

STAGE_BYTES = 64 << 20
"""Bytes of a zip dump's files extracted at once (a batch ends early when its files reach this)."""
SMALL_FILE = 4 << 20
"""A zip dump's files up to this size are extracted to RAM-backed ``/dev/shm`` when it has room."""


def write_dump(source: ContentSource, destination: str | Path, *, files: bool | str = False,
               progress: bool = False) -> TransferReport:
    """Write ``source`` into a new dump at ``destination``, atomically.

    Parameters
    ----------
    source
        What to write: `skybutler.transfer.source.RegistrySource` over a repository, a
        `DumpSource`, any `ContentSource`.
    destination
        A local path that does not exist yet: a directory, or a single zip file when it
        ends in ``.zip``. The dump is built under a hidden ``.NAME.partial-XXXXXXXX`` name
        beside it and renamed only when complete: a killed export never leaves something
        that looks like a dump (remove such leftovers at leisure).
    files
        False or ``"none"``: rows only (an import can then only register, ``transfer="none"``).
        ``"directory"`` or ``"zip"`` (or True): the bytes of every dataset's file too, checked
        against its recorded size and checksum while copied; the word must match
        ``destination`` (``"zip"`` for a ``.zip`` path).
    progress
        Show a progress line on stderr.

    Returns
    -------
    TransferReport
        What was written: ``datasets_added``, ``files_copied``, ``bytes_copied``,
        ``dimension_records_added``, ``collections_added``, ``executions_added``.

    Raises
    ------
    TransferError
        ``destination`` exists or its directory does not; ``files`` does not match it; a
        dataset has no readable bytes in ``source`` while files were asked for.
    FileAccessError, ChecksumMismatchError
        A source file that cannot be read, or whose bytes no longer match its record.
    """
    dest = Path(destination).absolute()
    zip_container = dest.suffix.lower() == ".zip"
    with_files = _with_files(files, zip_container, dest)
    if os.path.lexists(dest):
        raise TransferError(f"Cannot write a dump to {dest}: it exists; choose a new path (a dump is never "
                            "written over something else)")
    if not dest.parent.is_dir():
        raise TransferError(f"Cannot write a dump to {dest}: directory {dest.parent} does not exist")
    return write_dump_to(source, dest, zip_container=zip_container, with_files=with_files, progress=progress)


def _with_files(files: bool | str, zip_container: bool, dest: Path) -> bool:
    if isinstance(files, bool):
        return files
    if files not in FILES_CHOICES:
        raise TransferError(f"files={files!r}: use one of {', '.join(FILES_CHOICES)}")
    if files == "none":
        return False
    if (files == "zip") != zip_container:
        raise TransferError(f"files={files!r} does not fit {dest}: a zip dump is a path ending in .zip, "
                            "a directory dump any other path")
    return True


class DumpSource:
    """A dump (directory or zip file) read as a `ContentSource`, streaming.

    Parameters
    ----------
    path
        The dump: a directory holding ``dump.json``, or a ``.zip`` file.
    check
        Check the dump whole before anything is read: every stream's size and SHA-256 and
        the number and total size of its files against ``dump.json``, so that a damaged
        or truncated dump is refused before an import writes anything.
    batch_size
        Lines per yielded batch.

    Raises
    ------
    DumpVersionError
        ``path`` is not a dump, or a dump of a newer format version than this code reads.
    TransferError
        The dump is damaged (a stream or the files do not match ``dump.json``).

    Examples
    --------
    >>> from skybutler.transfer.importer import import_content  # doctest: +SKIP
    >>> with DumpSource("export.zip") as source:  # doctest: +SKIP
    ...     report = import_content(butler, source, transfer="copy")
    """

    def __init__(self, path: str | Path, *, check: bool = True, batch_size: int = DUMP_BATCH):
        self.path = Path(path).absolute()
        self.batch_size = batch_size
        self._zip: zipfile.ZipFile | None = None
        if self.path.is_file():
            try:
                self._zip = zipfile.ZipFile(self.path)
            except (zipfile.BadZipFile, OSError):
                raise DumpVersionError(f"{self.path} is not a skybutler dump: not a directory, and not a complete "
                                       "zip file (truncated, or another kind of file)") from None
        elif not self.path.is_dir():
            raise FileAccessError(f"No dump at {self.path}: no such file or directory")
        self.header = self._read_header()
        self.format_version = int(self.header["format_version"])
        self.written_by = str(self.header.get("skybutler_version", "unknown"))
        self.has_files = bool(self.header.get("files"))
        self.counts: dict[str, int] = dict(self.header.get("counts") or {})
        try:
            self._decoder: DecoderV1 = decoder_for(self.header)
        except Exception as exc:
            raise self.damaged(f"its dimension universe cannot be read ({exc})") from None
        if check:
            self.check()

    # -- opening -------------------------------------------------------------------------

    def __enter__(self) -> DumpSource:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        """Close the zip file (a directory dump holds nothing open between calls)."""
        if self._zip is not None:
            self._zip.close()
            self._zip = None

    @property
    def is_zip(self) -> bool:
        """Whether the dump is one zip file (its files can be copied out, not moved or linked)."""
        return self._zip is not None

    def damaged(self, what: str) -> TransferError:
        """The error for a damaged dump, naming it."""
        return TransferError(f"Dump {self.path} is damaged: {what}")

    def _open(self, name: str) -> IO[bytes]:
        if self._zip is not None:
            try:
                return self._zip.open(name)
            except KeyError:
                raise FileNotFoundError(name) from None
        return open(self.path / name, "rb")

    def _read_header(self) -> dict[str, Any]:
        not_dump = f"{self.path} is not a skybutler dump"
        try:
            with self._open(HEADER) as fh:
                text = fh.read()
        except FileNotFoundError:
            raise DumpVersionError(f"{not_dump}: it has no {HEADER} (an export that did not finish leaves "
                                   "a hidden .partial name, never a dump)") from None
        except (OSError, zipfile.BadZipFile) as exc:
            raise DumpVersionError(f"{not_dump}: cannot read its {HEADER} ({exc})") from None
        try:
            header = json.loads(text)
        except (ValueError, UnicodeDecodeError):
            raise DumpVersionError(f"{not_dump}: its {HEADER} is not valid JSON") from None
        if not isinstance(header, dict) or header.get("format") != DUMP_FORMAT_NAME:
            raise DumpVersionError(f"{not_dump}: its {HEADER} does not say format {DUMP_FORMAT_NAME!r}")
        version = header.get("format_version")
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise DumpVersionError(f"{not_dump}: its {HEADER} has no valid format_version ({version!r})")
        if version > DUMP_FORMAT_VERSION:
            raise DumpVersionError(
                f"{self.path} is a dump of format version {version}, written by skybutler "
                f"{header.get('skybutler_version', 'unknown')}; this skybutler ({__version__}) reads format "
                f"versions up to {DUMP_FORMAT_VERSION}: import it with a newer skybutler")
        if not isinstance(header.get("universe"), dict) or not isinstance(header.get("streams"), dict):
            raise DumpVersionError(f"{not_dump}: its {HEADER} lacks the universe or the stream list")
        return header

    def check(self) -> None:
        """Check every stream's size and hash, and the files' number and total size, against ``dump.json``."""
        streams: Mapping[str, Any] = self.header["streams"]
        for name in STREAMS:
            expected = streams.get(name)
            if expected is None:
                raise self.damaged(f"{HEADER} does not list {name}")
            digest, size = hashlib.sha256(), 0
            try:
                with self._open(name) as fh:
                    while chunk := fh.read(1 << 20):
                        digest.update(chunk)
                        size += len(chunk)
            except FileNotFoundError:
                raise self.damaged(f"{name} is missing") from None
            except (OSError, zipfile.BadZipFile, EOFError) as exc:
                raise self.damaged(f"{name} cannot be read ({exc})") from None
            if size != expected.get("bytes") or digest.hexdigest() != expected.get("sha256"):
                raise self.damaged(f"{name} has {size:,} bytes (SHA-256 {digest.hexdigest()[:12]}…) where "
                                   f"{HEADER} says {expected.get('bytes', 0):,} (SHA-256 "
                                   f"{str(expected.get('sha256'))[:12]}…): truncated or altered")
        if self.has_files:
            count, total = self._files_present()
            want = self.counts.get("files", 0), self.counts.get("file_bytes", 0)
            if (count, total) != want:
                raise self.damaged(f"{FILES_DIR}/ holds {count:,} files ({total:,} bytes) where {HEADER} says "
                                   f"{want[0]:,} ({want[1]:,} bytes)")

    def _files_present(self) -> tuple[int, int]:
        if self._zip is not None:
            infos = [i for i in self._zip.infolist() if i.filename.startswith(f"{FILES_DIR}/") and not i.is_dir()]
            return len(infos), sum(i.file_size for i in infos)
        count = total = 0
        for parent, _, names in os.walk(self.path / FILES_DIR):
            for name in names:
                count += 1
                total += os.stat(os.path.join(parent, name)).st_size
        return count, total

    # -- reading -------------------------------------------------------------------------

    def _lines(self, name: str) -> Iterator[tuple[int, dict[str, Any]]]:
        try:
            with self._open(name) as raw:
                for number, line in enumerate(io.TextIOWrapper(raw, encoding="utf-8"), start=1):
                    try:
                        yield number, json.loads(line)
                    except ValueError:
                        raise self.damaged(f"{name} line {number} is not valid JSON") from None
        except FileNotFoundError:
            raise self.damaged(f"{name} is missing") from None

    def _batches(self, name: str, decode: Callable[[dict[str, Any]], Any]) -> Iterator[list[Any]]:
        batch: list[Any] = []
        for number, line in self._lines(name):
            try:
                batch.append(decode(line))
            except (KeyError, ValueError, TypeError) as exc:
                raise self.damaged(f"{name} line {number} cannot be read ({exc})") from None
            if len(batch) >= self.batch_size:
                yield batch
                batch = []
        if batch:
            yield batch

    @property
    def universe(self) -> DimensionUniverse:
        """The dimension universe the dump was written in."""
        return self._decoder.universe

    def dimension_records(self) -> Iterator[tuple[str, list[dict[str, Any]]]]:
        """``(element, records)`` batches in the order written (elements in dependency order)."""
        element: str | None = None
        records: list[dict[str, Any]] = []
        for batch in self._batches("dimension_records.jsonl", self._decoder.record):
            for name, record in batch:
                if name != element or len(records) >= self.batch_size:
                    if records:
                        assert element is not None
                        yield element, records
                    element, records = name, []
                records.append(record)
        if records:
            assert element is not None
            yield element, records

    def dataset_types(self) -> list[DatasetType]:
        """Every dataset type of the dump."""
        return [dt for batch in self._batches("dataset_types.jsonl", self._decoder.dataset_type) for dt in batch]

    def collections(self) -> list[CollectionContent]:
        """Collections, each after the children it chains."""
        return [c for batch in self._batches("collections.jsonl", self._decoder.collection) for c in batch]

    def datasets(self) -> Iterator[list[DatasetContent]]:
        """The datasets in batches; ``url`` is where the bytes are (None in a dump without files).

        In a directory dump, ``url`` is the file in the dump. A zip dump's files are
        extracted batch by batch into private temporary directories (the datastore reads
        local and object-store files, not zip entries; see `_Staging`). A batch's copies are removed
        when the batch after next is read, and all of them when the stream ends, so at
        most two batches (`STAGE_BYTES` each, or one larger file) are on disk at once.
        """
        if not self._decoder.dataset_types:  # dataset_types() not called first: read them now
            self.dataset_types()
        stage = _Staging() if self.is_zip and self.has_files else None
        try:
            previous: list[str] = []
            for batch, staged in self._staged_batches(stage):
                yield batch
                if stage is not None:
                    stage.drop(previous)
                previous = staged
        finally:
            if stage is not None:
                stage.close()

    def _staged_batches(self, stage: _Staging | None) -> Iterator[tuple[list[DatasetContent], list[str]]]:
        out: list[DatasetContent] = []
        staged: list[str] = []
        staged_bytes = 0
        for batch in self._batches("datasets.jsonl", self._decoder.dataset):
            for ref, file, dump_path, origin in batch:
                if dump_path is None:
                    # A file the source shared in place (a direct ingest) is still where it was recorded.
                    out.append(DatasetContent(ref, file, file.path if file is not None and is_url(file.path) else None,
                                              origin=origin))
                    continue
                if not _inside_files(dump_path):
                    raise self.damaged(f"dataset {ref.id} names {dump_path!r}, which is not under {FILES_DIR}/")
                if stage is None:
                    out.append(DatasetContent(ref, file, f"file://{self.path / dump_path}", origin=origin))
                    continue
                url = self._extract(stage, dump_path)
                staged.append(url)
                staged_bytes += file.size if file is not None else 0
                out.append(DatasetContent(ref, file, url, origin=origin))
                if staged_bytes >= STAGE_BYTES:
                    yield out, staged
                    out, staged, staged_bytes = [], [], 0
            if len(out) >= self.batch_size:
                yield out, staged
                out, staged, staged_bytes = [], [], 0
        if out:
            yield out, staged

    def _extract(self, stage: _Staging, dump_path: str) -> str:
        assert self._zip is not None
        try:
            info = self._zip.getinfo(dump_path)
            with self._zip.open(info) as src:
                return stage.spool(dump_path, info.file_size, src)
        except KeyError:
            raise self.damaged(f"{dump_path} is missing") from None
        except (zipfile.BadZipFile, EOFError) as exc:
            raise self.damaged(f"{dump_path} cannot be read ({exc})") from None

    def tags(self) -> Iterator[list[tuple[str, uuid.UUID]]]:
        """``(tagged_collection, dataset_id)`` batches."""
        yield from self._batches("tags.jsonl", self._decoder.tag)

    def certifications(self) -> Iterator[list[Certification]]:
        """Certifications in batches."""
        yield from self._batches("certifications.jsonl", self._decoder.certification)

    def provenance(self) -> Iterator[ProvenanceBatch]:
        """Executions with their edges (each execution whole in one batch) and derived-from edges."""
        batch = ProvenanceBatch()
        size = 0
        for lines in self._batches("provenance.jsonl", lambda line: line):
            for line in lines:
                size += self._provenance_line(batch, line)
                if size >= self.batch_size:
                    yield batch
                    batch, size = ProvenanceBatch(), 0
        if size:
            yield batch

    def _provenance_line(self, batch: ProvenanceBatch, line: dict[str, Any]) -> int:
        try:
            kind = line["kind"]
            if kind == "execution":
                row, used, generated = self._decoder.execution(line)
                batch.executions.append(row)
                batch.used.extend((row["id"], d, p) for d, p in used)
                batch.generated.extend((row["id"], d, p) for d, p in generated)
                return 1 + len(used) + len(generated)
            if kind == "derived":
                batch.derived.append(self._decoder.derived(line))
                return 1
            if kind in ("used", "generated"):
                edge = (uuid.UUID(line["execution_id"]), uuid.UUID(line["dataset_id"]), line.get("path"))
                (batch.used if kind == "used" else batch.generated).append(edge)
                return 1
        except (KeyError, ValueError, TypeError) as exc:
            raise self.damaged(f"a provenance.jsonl line cannot be read ({exc})") from None
        raise self.damaged(f"provenance.jsonl has a line of unknown kind {kind!r}")


class _Staging:
    """Copies of a zip dump's files while an import reads them, in private temporary directories.

    Small files go to a RAM-backed directory (``/dev/shm``) when there is one with room
    for a few batches: creating thousands of small files costs several times more on a
    journaling disk, and at most two batches (`STAGE_BYTES` each) are kept. Larger files
    go to the default temporary directory. Flat names (a counter and the file's own
    name) spare a directory per run and type. (fsspec's memory filesystem was tried: each
    open there scans all its files, so a batch of thousands cost quadratic time.)
    """

    def __init__(self) -> None:
        self.count = 0
        self.small: Path | None = None
        self.large: Path | None = None

    def _directory(self, small: bool) -> Path:
        if small and self.small is None:
            self.small = Path(tempfile.mkdtemp(prefix="skybutler-dump-", dir=_ram_directory()))
        if not small and self.large is None:
            self.large = Path(tempfile.mkdtemp(prefix="skybutler-dump-"))
        directory = self.small if small else self.large
        assert directory is not None
        return directory

    def spool(self, dump_path: str, size: int, stream: IO[bytes]) -> str:
        self.count += 1
        target = self._directory(size <= SMALL_FILE) / f"{self.count:09d}-{posixpath.basename(dump_path)}"
        with open(target, "wb") as dst:
            shutil.copyfileobj(stream, dst, 1 << 20)
        return f"file://{target}"

    def drop(self, urls: list[str]) -> None:
        for url in urls:
            Path(url.removeprefix("file://")).unlink(missing_ok=True)

    def close(self) -> None:
        for directory in (self.small, self.large):
            if directory is not None:
                shutil.rmtree(directory, ignore_errors=True)


def _ram_directory() -> str | None:
    """``/dev/shm`` when it is a writable directory with room for four batches, else None (the default)."""
    try:
        stat = os.statvfs("/dev/shm")
    except OSError:
        return None
    room = stat.f_bavail * stat.f_frsize >= 4 * STAGE_BYTES
    return "/dev/shm" if room and os.access("/dev/shm", os.W_OK) else None


def _inside_files(dump_path: str) -> bool:
    """Whether a path a dump names for a file stays under its ``files/`` (a hostile dump cannot reach out)."""
    return (dump_path.startswith(f"{FILES_DIR}/") and "\\" not in dump_path and "\0" not in dump_path
            and ".." not in dump_path.split("/") and posixpath.normpath(dump_path) == dump_path)


def export_dump(butler: Butler, destination: str | Path, dataset_types: Sequence[str] | None = None, *,
                collections: Sequence[str] | None = None, where: str | None = None,
                bind: Mapping[str, Any] | None = None, files: bool | str = False, mode: str = "limited",
                include_provenance: bool = True, progress: bool = False) -> TransferReport:
    """Write the datasets of a query on ``butler`` (and what they need) into a new dump.

    The selection is `skybutler.transfer.source.RegistrySource`'s (dataset types ×
    collections × where; ``mode="full"`` adds the provenance chain); without
    ``collections``, every collection of the repository (so TAGGED, CALIBRATION and
    CHAINED collections travel whole). The writing is `write_dump`'s. Returns what was
    written.
    """
    from .source import RegistrySource

    if not collections:
        collections = [c["name"] for c in butler.registry.collections()]
    source = RegistrySource(butler, dataset_types=list(dataset_types) if dataset_types else None,
                            collections=list(collections) if collections else None, where=where, bind=bind,
                            mode=mode, include_provenance=include_provenance)
    return write_dump(source, destination, files=files, progress=progress)


def import_dump(butler: Butler, path: str | Path, *, transfer: str = "copy", new_ids: bool = False,
                on_conflict: str = "raise", workers: int = 8, progress: bool = False) -> TransferReport:
    """Import a dump into ``butler``: the dump is checked whole first, then written by `import_content`.

    Parameters
    ----------
    path
        The dump (directory or ``.zip``).
    transfer
        How files travel (`skybutler.transfer.content.TRANSFER_CHOICES`). A dump made
        without files can only be registered (``"none"``; ``"direct"`` for files the
        source itself held in place by URL). From a zip dump, ``move``, ``hardlink``,
        ``symlink`` and ``direct`` are refused: its files are entries of one zip file.
        ``move`` from a directory dump takes the files out of it (the dump is then no
        longer whole, and refused if read again); ``direct`` makes the repository use
        the dump's files where they are (keep the dump then).
    new_ids, on_conflict, workers, progress
        As `skybutler.transfer.importer.import_content`.

    Raises
    ------
    DumpVersionError
        Not a dump, or a dump of a newer format version.
    TransferError
        A damaged dump (nothing written), or a transfer the dump cannot give.
    TransferConflictError
        Datasets the target holds otherwise (everything else was written).
    """
    from .importer import import_content

    if transfer not in TRANSFER_CHOICES:
        raise TransferError(f"transfer={transfer!r}: use one of {', '.join(TRANSFER_CHOICES)}")
    with DumpSource(path) as source:
        if not source.has_files and transfer not in ("none", "direct") and source.counts.get("datasets"):
            raise TransferError(
                f"Dump {source.path} holds no files (exported without --files): transfer={transfer!r} has "
                "nothing to copy; import it with --transfer none (rows only; place the files at the same "
                "relative paths yourself), or export again with --files")
        if source.is_zip and transfer in ("move", "hardlink", "symlink", "direct"):
            raise TransferError(f"Dump {source.path} is a zip file: its files can be copied out "
                                f"(--transfer copy) but not {transfer}; unzip it first for that")
        return import_content(butler, source, transfer=transfer, new_ids=new_ids, on_conflict=on_conflict,
                              workers=workers, progress=progress)
