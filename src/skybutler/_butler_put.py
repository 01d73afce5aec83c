"""How `Butler.put_many` and `Butler.ingest` store datasets: files placed, rows inserted, one commit.

The datastore's files and the registry's rows of one call exist together or not at all:
each file waits under a temporary name (a `PendingFile`) while the rows are inserted in one
transaction; the files are committed inside it, and on any failure those already placed
are removed and the rest aborted. `Butler` checks its arguments and makes the refs; this
module does the storing.
"""

from __future__ import annotations

import errno
import functools
import json
import logging
from collections.abc import Callable, Collection, Mapping, Sequence
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from ._gc import paused_gc
from .config import redact_url
from .errors import (
    CollectionError,
    DatabaseConnectionError,
    DatasetExistsError,
    FileAccessError,
    SkyButlerError,
    StorageClassError,
)
from .formats import FORMATS, Formatter
from .model import DatasetRef, DatasetType
from .registry import FileRecord, find_dataset, pipeline_sql

if TYPE_CHECKING:
    from .datastore import Datastore, PendingFile
    from .registry import Registry

__all__ = ["BeforeCommit", "check_leftover", "commit_datasets", "connection_lost", "file_record", "lost_connection",
           "write_datasets"]

_log = logging.getLogger(__name__)

BeforeCommit = Callable[[list[DatasetRef], list[FileRecord]], None]
"""``before_commit(refs, file_records)`` of `Butler.put_many`: runs inside the transaction."""


def lost_connection(exc: BaseException) -> sa.exc.DBAPIError | None:
    """The database error in ``exc`` if it means the connection to the server was lost."""
    if isinstance(exc, sa.exc.DBAPIError) and exc.connection_invalidated:
        return exc
    return None


def connection_lost(registry: Registry, exc: BaseException, doing: str, outcome: str) -> DatabaseConnectionError:
    """The error for a connection lost ``while {doing}``, saying what became of the work (``outcome``)."""
    reason = (str(getattr(exc, "orig", None) or exc).strip().splitlines() or [type(exc).__name__])[0]
    return DatabaseConnectionError(
        f"Lost the connection to registry database {redact_url(registry.url)} while {doing}: {reason}; {outcome}")


def file_record(ref: DatasetRef, pending: PendingFile, format: str) -> FileRecord:
    """The registry's record of the file ``pending`` holding ``ref``, in ``format``."""
    algo, _, digest = (pending.checksum or "").partition(":")
    return FileRecord(dataset_id=ref.id, path=pending.path, size=pending.size, checksum=digest or None,
                      checksum_algorithm=algo or None, format=format)


def write_datasets(registry: Registry, datastore: Datastore, objects: Sequence[Any], refs: Sequence[DatasetRef],
                   formatter_of: Callable[[DatasetType], Formatter],
                   file_namer: Callable[[DatasetType, str], Callable[[DatasetRef], str]],
                   before_commit: BeforeCommit | None = None) -> None:
    """Write ``objects[i]`` as ``refs[i]`` and commit them all at once (see `Butler.put_many`).

    ``formatter_of`` gives a dataset type's formatter and ``file_namer`` the function that
    names the files of a dataset type in a run (the butler's configuration decides both).
    """
    pending: list[PendingFile] = []
    records: list[FileRecord] = []
    # The formatter and the namer of each (dataset type, run), found once per call, not per item.
    per_type: dict[tuple[str, str], tuple[Formatter, Callable[[DatasetRef], str]]] = {}
    try:
        for obj, ref in zip(objects, refs, strict=True):
            dataset_type = ref.dataset_type
            key = (dataset_type.name, ref.run)
            known = per_type.get(key)
            if known is None:
                known = per_type[key] = (formatter_of(dataset_type), file_namer(dataset_type, ref.run))
            formatter, namer = known
            try:
                formatter.check(obj, dataset_type.storage_class)
            except StorageClassError as exc:
                raise StorageClassError(f"Cannot put {dataset_type.name} {{{ref.data_id}}}: {exc}") from None
            path = namer(ref)
            # Formats without room for it ignore the identity (`Formatter.write`): not built for them.
            identity = {"dataset_id": str(ref.id), "dataset_type": dataset_type.name, "data_id": str(ref.data_id),
                        "run": ref.run} if formatter.stores_identity else _NO_IDENTITY
            data = formatter.to_bytes(obj, identity=identity)
            write = data if data is not None else functools.partial(formatter.write, obj, identity=identity)
            try:
                pf = datastore.write_temporary(path, write)
            except DatasetExistsError as exc:
                check_leftover(registry, datastore, ref, path, exc)
                pf = datastore.write_temporary(path, write, replace=True)
            pending.append(pf)
            records.append(file_record(ref, pf, formatter.name))
        commit_datasets(registry, datastore, list(refs), records, pending, before_commit)
    except BaseException:
        for pf in pending:
            datastore.abort(pf)
        raise


_NO_IDENTITY: Mapping[str, str] = MappingProxyType({})
_SORTED_JSON = json.JSONEncoder(sort_keys=True).encode  # json.dumps(..., sort_keys=True) makes an encoder per call


def check_leftover(registry: Registry, datastore: Datastore, ref: DatasetRef, path: str,
                   exc: DatasetExistsError) -> None:
    """Raise unless the file found at ``path`` is a leftover of a crashed write that may be replaced.

    A file that some dataset's row names is never overwritten. One that no row names was
    placed by a write killed before its transaction committed (which also rolled back
    any run it registered: the run need not exist): the next write replaces it, after
    checking again inside its own transaction (see `commit_datasets`). Unless a removal
    lists it: its datasets' rows are deleted and the file is next on the removal's list,
    so a file put in its place would be deleted with it (`FileAccessError`, ``EBUSY``).
    """
    if not pipeline_sql.known_paths(registry, [path]):
        removal = datastore.removal_listing(path)
        if removal is None:
            return
        raise FileAccessError(
            errno.EBUSY, f"Cannot store {ref.dataset_type.name} {{{ref.data_id}}} in run {ref.run!r}: its file "
            f"{path!r} is still to be deleted by the removal of {removal!r}, which has not finished. Store it again "
            f"once that removal is over; one interrupted by a crash is finished by repeating it (`skybutler "
            f"remove-runs {removal}`) or by Butler.finish_removals()") from None
    error = _already_stored(registry, ref)
    if error is not None:
        raise error from None
    raise exc


def _already_stored(registry: Registry, ref: DatasetRef, how: str = "") -> DatasetExistsError | None:
    """The error for a put of ``ref`` when its run already holds that dataset (None when it does not).

    ``how`` is added after the stored dataset's id (", stored by another writer meanwhile").
    A run that does not exist (yet: it may be this transaction's own) holds nothing.
    """
    try:
        existing = find_dataset(registry, ref.dataset_type.name, ref.data_id, [ref.run])
    except CollectionError:
        return None
    if existing is None:
        return None
    return DatasetExistsError(
        f"Dataset {ref.dataset_type.name} {{{ref.data_id}}} already exists in run {ref.run!r} "
        f"(id {existing.id}{how}); no put ever overwrites a stored dataset")


def _stored_meanwhile(registry: Registry, datastore: Datastore, refs: Sequence[DatasetRef],
                      records: Sequence[FileRecord], path: str) -> DatasetExistsError:
    """The error for a leftover file at ``path`` that another writer's committed dataset now names.

    Usually that writer stored the same dataset (it won a race to put it): say so as any
    put of an existing dataset does; otherwise name the file.
    """
    ref = next((r for r, rec in zip(refs, records, strict=True) if rec.path == path), None)
    error = _already_stored(registry, ref, ", stored by another writer meanwhile") if ref is not None else None
    return error or DatasetExistsError(f"File {path!r} was stored by another dataset meanwhile in the datastore "
                                       f"at {datastore.root}; no put ever overwrites a stored dataset")


@paused_gc()
def commit_datasets(registry: Registry, datastore: Datastore, refs: list[DatasetRef], records: list[FileRecord],
                    pending: list[PendingFile], before_commit: BeforeCommit | None = None) -> None:
    """Insert rows, move files into place, commit; on failure remove what was placed.

    With the cyclic collector paused: a put_many's or an ingest's rows, origins and
    manifest lines are thousands of small objects in no cycle, and the collector's passes
    over them cost an ingest of small files ~30 % of its CPU (`skybutler._gc`).
    """
    placed: list[PendingFile] = []
    try:
        with registry.transaction():
            try:
                replaced = [pf.path for pf in pending if pf.replaces]
                # Checked again under the write transaction: on SQLite it holds the write lock,
                # on PostgreSQL a writer of the same dataset is stopped by the insert below.
                named = pipeline_sql.known_paths(registry, replaced) if replaced else set()
                if named:
                    raise _stored_meanwhile(registry, datastore, refs, records, sorted(named)[0])
                # The runs are registered by the insert itself: on PostgreSQL the run, the clash
                # check and the rows are one statement sent with the BEGIN, one round trip.
                registry.insert_datasets(refs, records, register_runs=True)
                if before_commit is not None:
                    before_commit(refs, records)
                # Only now, with the rows inserted: until this transaction ends, no other writer's
                # insert of these datasets can succeed, so none can replace a file placed here
                # (it replaces a leftover only after its own insert). All or none; with sync,
                # every file and directory flushed before the COMMIT.
                datastore.commit_many(pending)
                placed.extend(pending)
                # Files an ingest brought in carry no identity of this repository's: listed whatever their format.
                record_manifest(datastore, refs, records, {pf.path for pf in pending if pf.transfer != "write"})
            except BaseException as exc:
                if lost_connection(exc) is None:
                    # Removed before the rollback, while the rows' locks still keep out any writer
                    # that took these files for a crashed write's leftovers: once they are gone,
                    # its insert succeeds and it puts its own file in their place, which a
                    # removal after the rollback could delete.
                    _remove_placed(datastore, placed)
                raise
    except BaseException as exc:
        lost = lost_connection(exc)
        doing = f"storing {len(refs)} dataset(s)"
        if lost is not None or placed:
            # The connection dropped, or the failure came with the COMMIT or after it (the
            # body's own failures removed their files above): perhaps before the commit,
            # perhaps while the server was acknowledging it, perhaps after (Ctrl-C while
            # statistics were refreshed). Ask again before removing anything.
            try:
                stored = bool(refs) and bool(registry.get_datasets([refs[0].id]))
            except Exception:
                # Cannot tell: keep every file (a file without a row is harmless and found
                # by verify; a row without its file is not). The caller must not abort them.
                pending.clear()
                if lost is not None:
                    raise connection_lost(registry, lost, doing, "it may or may not be stored") from None
                raise
            if stored:
                pending.clear()  # committed: not one of them may be aborted
                if isinstance(exc, Exception):
                    _log.warning("Stored %d dataset(s), then: %s", len(refs), exc)
                    return
                raise  # an interrupt after the COMMIT: the datasets are stored, the caller still stops
        # The COMMIT failed, or the connection was lost: the files placed (if any are left) have no row.
        _remove_placed(datastore, placed)
        _keep_named(registry, pending)
        if lost is not None:
            raise connection_lost(registry, lost, doing, "nothing of it was stored") from None
        raise


def _remove_placed(datastore: Datastore, placed: list[PendingFile]) -> None:
    """Delete the files `commit_datasets` moved into place (none is named by a committed row), then forget them.

    Each only while it is still the file written here (`Datastore.remove_placed`): after
    a failed COMMIT another writer may have replaced it already. Files written in place
    (object stores) and ingested in place or ``direct`` are left to the caller's
    `Datastore.abort`, which deletes an object only while it holds our bytes.
    """
    try:
        datastore.remove_placed(placed)
    except SkyButlerError as err:  # never mask the error that made us clean up
        _log.warning("%s", err)
    placed.clear()


def _keep_named(registry: Registry, pending: list[PendingFile]) -> None:
    """Drop from ``pending`` the files written in place whose path a committed row names now.

    On an object store a put's bytes go to their final key before its insert. A writer
    that found them there, took them for a crashed write's leftover and stored the same
    dataset first put its own object at that key: the caller's `Datastore.abort` must
    leave it, even when its bytes equal ours (its check compares sizes and checksums).
    """
    in_place = [pf.path for pf in pending if pf.temp_path == pf.path and pf.transfer == "write"]
    if not in_place:
        return
    try:
        named = pipeline_sql.known_paths(registry, in_place)
    except Exception as err:  # noqa: BLE001 - cannot tell: keep them all (verify finds a file without a row)
        _log.warning("Could not check which files other writers stored meanwhile (%s); keeping them", err)
        named = set(in_place)
    if named:
        pending[:] = [pf for pf in pending if pf.path not in named]


def record_manifest(datastore: Datastore, refs: list[DatasetRef], records: list[FileRecord],
                    ingested: Collection[str] = ()) -> None:
    """Write the identity of files whose format has no room for it to the run manifests.

    Files at ``ingested`` paths were written elsewhere (a raw from the camera, a copy from
    another repository): listed whatever their format, as their own metadata does not
    hold this repository's identity (`skybutler.ops.rebuild` prefers the manifest).

    Written before the registry commits, so a manifest may name a file whose put then
    failed (and was removed) but never misses one that was stored.
    """
    by_run: dict[str, list[dict[str, str]]] = {}
    for ref, record in zip(refs, records, strict=True):
        if FORMATS[record.format].stores_identity and record.path not in ingested:  # a class attribute
            continue
        by_run.setdefault(ref.run, []).append({
            "dataset_id": str(ref.id), "dataset_type": ref.dataset_type.name,
            "data_id": _SORTED_JSON(dict(ref.data_id.required_items)),
            "run": ref.run, "path": record.path, "format": record.format})
    for run, entries in by_run.items():
        datastore.append_manifest(run, entries)
