"""How `Butler.ingest` brings existing files in: checked first, then transferred and committed together.

Every file is checked (it exists, is readable, and its content reads as its dataset type's
storage class) before any is transferred, so a refused file leaves no trace; the transfers
are then committed with the registry rows as a put's files are (see ``_butler_put``).
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ._butler_put import check_leftover, commit_datasets, file_record
from .datastore.backends import is_url
from .errors import DatasetExistsError, FileAccessError, FormatError, StorageClassError
from .formats import Formatter, file_suffixes, guess_format
from .model import DatasetRef, DatasetType

if TYPE_CHECKING:
    from .datastore import Datastore, FileTemplates, PendingFile
    from .registry import FileRecord, Registry

__all__ = ["FileDataset", "check_sources", "ingest_files", "ingest_formatter"]


@dataclass(frozen=True)
class FileDataset:
    """A file to ingest: where it is, and the dataset it holds.

    Parameters
    ----------
    path
        Local path or URL of the file.
    dataset_type
        Name of a registered dataset type.
    data_id
        Its data id (required dimensions; implied values are checked if given).
    format
        File format; defaults to the storage class default (or a guess from the extension).
    """

    path: str
    dataset_type: str
    data_id: Mapping[str, Any]
    format: str | None = None


def check_sources(files: Sequence[FileDataset]) -> None:
    """Raise `FileAccessError` naming a local file that is missing, not a file, or unreadable."""
    missing = [f.path for f in files if not is_url(f.path) and not os.path.isfile(f.path)]
    if missing:
        raise FileAccessError(
            errno.ENOENT, f"Cannot ingest: {len(missing)} file(s) do not exist or are not files, e.g. {missing[0]}")
    unreadable = [f.path for f in files if not is_url(f.path) and not os.access(f.path, os.R_OK)]
    if unreadable:
        raise FileAccessError(errno.EACCES, f"Cannot ingest: file {unreadable[0]} is not readable")


def ingest_formatter(datastore: Datastore, dt: DatasetType, f: FileDataset,
                     formatter_of: Callable[[DatasetType, str | None], Formatter]) -> Formatter:
    """The formatter of a file to ingest, once its content is checked against the storage class.

    ``formatter_of(dt, format)`` is the butler's choice of formatter for a dataset type
    (``format`` None for its configured default).
    """
    formatter = _guess_formatter(dt, f, formatter_of)
    try:
        # Local files are opened directly: bulk ingest of local files goes without fsspec.
        with datastore.open(f.path) if is_url(f.path) else open(f.path, "rb") as fileobj:
            formatter.check_file(fileobj, dt.storage_class)  # type: ignore[arg-type]
    except (FormatError, StorageClassError) as exc:
        raise type(exc)(f"Cannot ingest {f.path} as {dt.name} ({formatter.name}, storage class "
                        f"{dt.storage_class!r}): {exc}") from None
    return formatter


def _guess_formatter(dt: DatasetType, f: FileDataset,
                     formatter_of: Callable[[DatasetType, str | None], Formatter]) -> Formatter:
    if f.format:
        return formatter_of(dt, f.format)
    guess = guess_format(f.path)
    try:
        return formatter_of(dt, guess) if guess else formatter_of(dt, None)
    except FormatError:
        return formatter_of(dt, None)


def ingest_files(registry: Registry, datastore: Datastore, templates: FileTemplates, variables: Mapping[str, Any],
                 todo: Sequence[tuple[FileDataset, DatasetRef]], formatters: Sequence[Formatter], transfer: str,
                 checksum: bool, progress: Any = None) -> None:
    """Transfer each file of ``todo`` as its ref, named by ``templates``, and commit them all at once."""
    pending: list[PendingFile] = []
    records: list[FileRecord] = []
    try:
        for (f, ref), formatter in zip(todo, formatters, strict=True):
            path = ""  # a direct ingest keeps the file where it is: no name to make
            if transfer != "direct":
                suffix = file_suffixes(f.path) or formatter.extension
                path = templates.template_for(ref.dataset_type.name, ref.run).format(
                    ref, values=ref.data_id.full, variables=variables, extension=suffix)
            try:
                pf = datastore.ingest(f.path, path, transfer, checksum=checksum)
            except DatasetExistsError as exc:
                check_leftover(registry, ref, path, exc)
                pf = datastore.ingest(f.path, path, transfer, checksum=checksum, replace=True)
            pending.append(pf)
            records.append(file_record(ref, pf, formatter.name))
            if progress is not None:
                progress()
        commit_datasets(registry, datastore, [r for _, r in todo], records, pending)
    except BaseException:
        for pf in pending:
            datastore.abort(pf)
        raise
