"""Placing one dataset's file in the target's datastore for an import: copy, link, share or nothing.

Every file goes in atomically through the target `Datastore` (a temporary name and a
rename that never replaces, or an exclusive create on an object store) at the path it had
in the source. A file already at that path with the same size and checksum (left by an
import that was killed before its rows committed) is adopted, not copied again.

A file found there with other bytes and no row naming it is replaced only once the
import's rows are inserted (`Placed.replacing`, committed by the caller inside its
transaction), as a put replaces a leftover: until then it may be the file of another
writer about to commit, whose dataset would read this import's bytes.
"""

from __future__ import annotations

import errno
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, BinaryIO

from ..datastore import Datastore, PendingFile
from ..datastore.backends import filesystem, is_url
from ..errors import DatasetExistsError, FileAccessError, TransferError
from ..registry import FileRecord
from .content import DatasetContent

if TYPE_CHECKING:
    import uuid

__all__ = ["Placed", "describe", "place_file", "remove_source_file"]

_CHUNK = 1 << 20


@dataclass(frozen=True)
class Placed:
    """What placing one file did: the target's file record, and whether bytes were written.

    ``replacing`` is the file written to replace one found at the record's path that no
    row named: the caller commits it inside its transaction, after its rows are inserted
    and the path is checked again (or aborts it).
    """

    record: FileRecord | None
    bytes_copied: int = 0
    copied: bool = False
    adopted: bool = False
    replacing: PendingFile | None = None


def describe(content: DatasetContent) -> str:
    ref = content.ref
    return f"{ref.dataset_type.name} {{{ref.data_id}}} in run {ref.run!r} (dataset {ref.id})"


def same_checksum(a_algorithm: str | None, a: str | None, b_algorithm: str | None, b: str | None) -> bool | None:
    """Whether two checksums agree (None when they cannot be compared: one missing, or other algorithms)."""
    if a is None or b is None or a_algorithm != b_algorithm:
        return None
    return a == b


def place_file(store: Datastore, content: DatasetContent, transfer: str, dataset_id: uuid.UUID,
               path_taken: Callable[[str], bool]) -> Placed:
    """Place the file of ``content`` in ``store`` by ``transfer``; return the target's record of it.

    ``path_taken(path)`` says whether a row of the target names that path (a different file
    found there is then another dataset's, a conflict; otherwise a leftover to replace).
    ``move`` copies here (linking on one local disk); the caller removes the source file
    once the rows are committed. A file replacing one found at the path is not committed
    here (`Placed.replacing`).
    """
    src = content.file
    if src is None:
        return Placed(None)
    if transfer == "none" or not Datastore.owns(src.path):
        # Rows only; or a file the source shares in place (a direct ingest), shared the same way.
        return Placed(FileRecord(dataset_id, src.path, src.size, src.checksum, src.checksum_algorithm, src.format))
    if content.url is None:
        raise TransferError(f"Cannot transfer {describe(content)} with transfer={transfer!r}: the source gives "
                            f"no readable location for its file {src.path!r} (use transfer='none' for rows only)")
    if transfer == "direct":
        return Placed(FileRecord(dataset_id, content.url, src.size, src.checksum, src.checksum_algorithm,
                                 src.format))
    rel = src.path
    try:
        pending = _write(store, content, transfer, rel, replace=False)
    except DatasetExistsError:
        removal = store.removal_listing(rel)
        if removal is not None and not path_taken(rel):
            # The file of a removed dataset, next on its removal's list: neither adopted nor
            # replaced, or the removal would delete the file this transfer records.
            raise TransferError(f"Cannot transfer {describe(content)} now: the target's file at {rel!r} is still to "
                                f"be deleted by the removal of {removal!r}, which has not finished. Transfer again "
                                f"once it is over (repeat an interrupted removal to finish it)") from None
        held = _held_matches(store, rel, src)
        if held:
            return Placed(FileRecord(dataset_id, rel, src.size, src.checksum, src.checksum_algorithm, src.format),
                          adopted=True)
        if path_taken(rel):
            raise TransferError(f"Cannot transfer {describe(content)}: the target holds another dataset's file "
                                f"at {rel!r} with other content") from None
        pending = _write(store, content, transfer, rel, replace=True)
    algorithm, _, digest = (pending.checksum or "").partition(":")
    if same_checksum(algorithm or None, digest or None, src.checksum_algorithm, src.checksum) is False or \
            pending.size != src.size:
        store.abort(pending)
        raise TransferError(f"The source file of {describe(content)} ({content.url}) does not match its record: "
                            f"size {pending.size}, checksum {pending.checksum} read; size {src.size}, checksum "
                            f"{src.checksum_algorithm}:{src.checksum} recorded. Check the source (verify).")
    record = FileRecord(dataset_id, rel, pending.size, digest or None, algorithm or None, src.format)
    if pending.replaces:
        return Placed(record, bytes_copied=pending.size, copied=True, replacing=pending)
    try:
        store.commit(pending)
    except DatasetExistsError:  # another importer placed it meanwhile
        store.abort(pending)
        if not _held_matches(store, rel, src):
            raise TransferError(f"Cannot transfer {describe(content)}: another file appeared at {rel!r} "
                                "while it was copied") from None
        return Placed(FileRecord(dataset_id, rel, src.size, src.checksum, src.checksum_algorithm, src.format),
                      adopted=True)
    return Placed(record, bytes_copied=pending.size, copied=True)


def _write(store: Datastore, content: DatasetContent, transfer: str, rel: str, *, replace: bool):
    url = content.url
    assert url is not None
    local_source = not is_url(url) or url.startswith("file://")
    if transfer in ("hardlink", "symlink") or (transfer == "move" and local_source and store.is_local):
        if not (local_source and store.is_local):
            raise TransferError(f"Cannot {transfer} {describe(content)} from {url} into {store.root}: both must "
                                "be on local disk (use transfer='copy')")
        try:
            return store.ingest(url.removeprefix("file://"), rel, transfer if transfer != "move" else "hardlink",
                                replace=replace)
        except FileAccessError as err:
            if transfer != "move" or err.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP):
                raise
    options = dict(content.storage_options)

    def copy(sink: BinaryIO) -> None:
        try:
            if local_source:
                stream = open(url.removeprefix("file://"), "rb")  # noqa: SIM115 - closed below
            else:
                fs, path = filesystem(url, options)
                stream = fs.open(path, "rb")
        except FileNotFoundError:
            raise FileAccessError(errno.ENOENT, f"Cannot transfer {describe(content)}: its source file {url} "
                                                "is missing") from None
        except OSError as err:
            raise FileAccessError(err.errno, f"Cannot transfer {describe(content)}: cannot read {url}: "
                                             f"{err}") from None
        with stream:
            shutil.copyfileobj(stream, sink, _CHUNK)

    return store.write_temporary(rel, copy, replace=replace)


def _held_matches(store: Datastore, rel: str, src: FileRecord) -> bool:
    """Whether the file at ``rel`` in ``store`` is the source's (same size, and same checksum when it has one)."""
    try:
        if store.size(rel) != src.size:
            return False
        if src.checksum is None or src.checksum_algorithm is None:
            return True
        return store.checksum(rel, src.checksum_algorithm) == f"{src.checksum_algorithm}:{src.checksum}"
    except FileAccessError:
        return False


def remove_source_file(content: DatasetContent) -> None:
    """Delete the source file of a moved dataset (after the target's rows committed); a missing one is fine."""
    url, src = content.url, content.file
    if url is None or src is None or not Datastore.owns(src.path):
        return
    try:
        if not is_url(url) or url.startswith("file://"):
            os.unlink(url.removeprefix("file://"))
        else:
            fs, path = filesystem(url, content.storage_options)
            fs.rm_file(path)
    except FileNotFoundError:
        pass
    except OSError as err:
        raise FileAccessError(err.errno, f"Moved {describe(content)}, but could not remove its source file "
                                         f"{url}: {err}") from None
