"""Copying the files of many datasets out of a repository into a local directory, in parallel.

`Butler.retrieve` copies one file after another and refuses any file already there;
`retrieve_files` is what an operator copying a query's thousands of files wants: parallel
copies, a progress bar, and a repeat that skips the files already copied (same size and
checksum), so an interrupted retrieve is simply run again.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from .._butler_read import copy_out, file_records
from ..errors import ConfigError, FileAccessError
from .importer import progress_bar

if TYPE_CHECKING:
    from ..butler import Butler
    from ..model import DatasetRef
    from ..registry import FileRecord

__all__ = ["RetrieveReport", "retrieve_files"]

_BATCH = 2_000
_CHUNK = 1 << 20


@dataclass
class RetrieveReport:
    """What `retrieve_files` did: files copied, files found already there identically, bytes copied."""

    copied: int = 0
    skipped: int = 0
    bytes_copied: int = 0
    paths: list[Path] = field(default_factory=list)


def retrieve_files(butler: Butler, refs: Iterable[DatasetRef], destination: str | Path, *, overwrite: bool = False,
                   workers: int = 8, progress: bool = False) -> RetrieveReport:
    """Copy the files of ``refs`` under ``destination``, each at its path relative to the datastore root.

    Files ingested in place (by absolute path or URL) keep their name only. A file already
    at its destination with the size and checksum the registry records is skipped; one
    that differs is an error (`FileAccessError` naming the dataset and the file) unless
    ``overwrite``. Each copy is written under a temporary name and renamed, so a killed
    retrieve leaves no half-copied file under a final name.

    Examples
    --------
    >>> retrieve_files(butler, butler.query_datasets("calexp", where="visit = 903334"), "out/")  # doctest: +SKIP
    RetrieveReport(copied=16, skipped=0, ...)
    """
    if workers < 1:
        raise ConfigError(f"workers must be at least 1, not {workers}")
    root = Path(destination)
    report = RetrieveReport()
    store = butler.datastore

    def one(item: tuple[DatasetRef, FileRecord]) -> tuple[Path, int | None]:
        ref, record = item
        relative = record.path if store.owns(record.path) else record.path.rsplit("/", 1)[-1]
        target = root / relative
        if target.exists():
            if _same_file(target, record):
                return target, None
            if not overwrite:
                raise FileAccessError(f"Cannot copy {ref.dataset_type.name} {{{ref.data_id}}} to {target}: another "
                                      "file is there (pass overwrite / --overwrite to replace it)")
        return copy_out(store, ref, record, target, True), record.size

    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="skybutler-retrieve") as pool, \
            progress_bar(progress, "files") as advance:
        stream = iter(refs)
        while True:
            batch = [ref for _, ref in zip(range(_BATCH), stream, strict=False)]
            if not batch:
                break
            items = list(zip(batch, file_records(butler.registry, batch), strict=True))
            for path, size in pool.map(one, items):
                report.paths.append(path)
                if size is None:
                    report.skipped += 1
                else:
                    report.copied += 1
                    report.bytes_copied += size
            advance(len(items))
    return report


def _same_file(path: Path, record: FileRecord) -> bool:
    try:
        if os.path.getsize(path) != record.size:
            return False
    except OSError:
        return False
    if not record.checksum or not record.checksum_algorithm:
        return True
    digest = hashlib.new(record.checksum_algorithm, usedforsecurity=False)
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest() == record.checksum
