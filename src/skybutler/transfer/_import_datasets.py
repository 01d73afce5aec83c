"""One batch of datasets into the target: look them up, place the files of new ones, then write their rows.

The order is what makes an import idempotent and safe to kill: files first (in parallel),
then the batch's dataset and file rows in one transaction. A killed import leaves at most
files no row names, which the repeat finds identical and adopts.

Until the rows commit, another writer may take the batch's files for leftovers: a put
replaces one once its own insert succeeded, and removes it again if it then fails. So,
inside the transaction and after the insert (whose rows now keep such writers out),
every file placed or adopted is checked to be still there, and only then are the
leftovers with other bytes replaced (`Placed.replacing`).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from .._butler_put import record_manifest
from ..datastore import is_url
from ..errors import DatasetTypeError, FileAccessError, TransferError
from ..model import CollectionType, DatasetRef, DatasetType, new_id
from ..registry import FileRecord
from ..registry.origin_sql import insert_origins
from ._placement import Placed, describe, place_file, remove_source_file, same_checksum
from ._target_rows import datasets_by_id, datasets_by_key, insert, taken_paths
from .content import DatasetContent, TransferReport

if TYPE_CHECKING:
    from ..butler import Butler

__all__ = ["DatasetWriter", "register_dataset_type"]

_FILE_COLUMNS = ["dataset_id", "path", "size", "checksum", "checksum_algorithm", "format"]


def register_dataset_type(target: Butler, dt: DatasetType) -> None:
    """Register ``dt`` in ``target``; one registered otherwise is a `DatasetTypeError` naming both."""
    try:
        target.registry.register_dataset_type(dt)
    except DatasetTypeError as exc:
        raise DatasetTypeError(f"Cannot transfer dataset type {dt.name!r}: {exc}") from None


@dataclass
class _Item:
    content: DatasetContent
    type_id: int
    run_id: int
    key: str
    target_id: uuid.UUID
    placed: Placed | None = None


@dataclass
class DatasetWriter:
    """Writes batches of `DatasetContent` into ``target`` (see `skybutler.transfer.importer.import_content`)."""

    target: Butler
    transfer: str
    new_ids: bool
    report: TransferReport
    pool: ThreadPoolExecutor
    advance: Callable[[int], None] = lambda n: None
    type_ids: dict[str, int] = field(default_factory=dict)
    run_ids: dict[str, int] = field(default_factory=dict)
    run_names: dict[int, str] = field(default_factory=dict)

    def type_id(self, dt: DatasetType) -> int:
        found = self.type_ids.get(dt.name)
        if found is None:
            register_dataset_type(self.target, dt)
            found = self.type_ids[dt.name] = self.target.registry.dataset_type_records.find(dt.name)[0]
        return found

    def run_id(self, run: str) -> int:
        found = self.run_ids.get(run)
        if found is None:
            self.target.registry.register_collection(run, CollectionType.RUN)
            found = self.run_ids[run] = self.target.registry.run_id(run)
            self.run_names[found] = run
        return found

    # -- one batch ---------------------------------------------------------------------

    def write(self, batch: Sequence[DatasetContent]) -> None:
        registry = self.target.registry
        items = [_Item(c, self.type_id(c.ref.dataset_type), self.run_id(c.ref.run), c.ref.data_id.key(), c.ref.id)
                 for c in batch]
        items = list({it.content.ref.id: it for it in items}.values())
        todo = self._classify(items)
        if todo:
            # Files first, in parallel: a row is never committed without its file.
            taken: set[str] | None = None

            def path_taken(path: str) -> bool:
                # Asked only when a file is found at a path (a leftover, or a conflict): then one
                # query for the whole batch, as a repeated import finds many, not one per file.
                nonlocal taken
                if taken is None:
                    paths = sorted({it.content.file.path for it in todo if it.content.file is not None})
                    with registry.database.read() as conn:
                        taken = taken_paths(registry, conn, paths)
                return path in taken

            def place(it: _Item) -> Placed:
                return place_file(self.target.datastore, it.content, self.transfer, it.target_id, path_taken)

            # Rows only, or a URL recorded: nothing to wait for, so no thread hand-offs either.
            inline = self.transfer in ("none", "direct")
            try:
                if inline:
                    for it in todo:
                        it.placed = place(it)
                else:
                    futures = [(it, self.pool.submit(place, it)) for it in todo]
                    for it, future in futures:
                        if future.exception() is None:
                            it.placed = future.result()
                    for _, future in futures:
                        future.result()
                self._insert(todo)
            except BaseException:
                # Replacements not committed: their bytes wait under temporary names.
                for it in todo:
                    if it.placed is not None and it.placed.replacing is not None:
                        self.target.datastore.abort(it.placed.replacing)
                raise
            for it in todo:
                assert it.placed is not None
                self.report.files_copied += it.placed.copied
                self.report.files_skipped += it.placed.adopted
                self.report.bytes_copied += it.placed.bytes_copied
            self.report.datasets_added += len(todo)
        if self.transfer == "move":
            # Only now that the rows are committed: the target holds each of these whole.
            done = [it.content for it in todo if it.placed is not None and it.placed.record is not None
                    and self.target.datastore.owns(it.placed.record.path)]
            skipped = [it for it in items if it.content.ref.id in self._skipped_ids]
            if skipped:  # held from an earlier, interrupted move: removed only if the target has its own copy
                held = registry.get_files([self._skipped_ids[it.content.ref.id] for it in skipped])
                done += [it.content for it in skipped
                         if (rec := held.get(self._skipped_ids[it.content.ref.id])) is not None
                         and self.target.datastore.owns(rec.path)]
            list(self.pool.map(remove_source_file, done))
        self.advance(len(batch))

    def _classify(self, items: list[_Item]) -> list[_Item]:
        """Drop (and count) what the target holds identically; report conflicts; assign ids to the rest."""
        registry = self.target.registry
        self._skipped_ids: dict[uuid.UUID, uuid.UUID] = {}  # source id -> target id
        with registry.database.read() as conn:
            by_id = {} if self.new_ids else datasets_by_id(registry, conn, [it.target_id.hex for it in items])
            by_key = datasets_by_key(registry, conn, [(it.type_id, it.run_id, it.key) for it in items])
        todo = []
        for it in items:
            ref, src = it.content.ref, it.content.file
            held = by_id.get(ref.id.hex)
            if held is not None:
                if tuple(held[:3]) != (it.type_id, it.run_id, it.key):
                    self._conflict(it, f"the target holds id {ref.id} for another dataset ({self._name(held)})")
                elif self._files_differ(held[3], held[4], src):
                    self._conflict(it, f"the target holds it (same id) with another file (size {held[4]}, "
                                       f"checksum {held[3]}; source: size {src and src.size}, checksum "
                                       f"{src and src.checksum})")
                else:
                    self._skip(it, ref.id)
                continue
            clash = by_key.get((it.type_id, it.run_id, it.key))
            if clash is not None:
                target_id = uuid.UUID(hex=clash[0])
                if self.new_ids and not self._files_differ(clash[1], clash[2], src):
                    self._skip(it, target_id)
                else:
                    self._conflict(it, f"the target holds dataset {target_id} for it; the source's is {ref.id}")
                continue
            if self.new_ids:
                it.target_id = new_id()
                self.report.id_map[ref.id] = it.target_id
            todo.append(it)
        return todo

    def _files_differ(self, checksum: str | None, size: int | None, src: Any) -> bool:
        if src is None:
            return False
        if size is not None and size != src.size:
            return True
        # The target's checksum has no algorithm in this lookup: compare where the source's algorithm is the
        # target datastore's (what a copy records); other algorithms compare by size only.
        algorithm = self.target.datastore.checksum_algorithm
        return same_checksum(algorithm, checksum, src.checksum_algorithm, src.checksum) is False

    def _skip(self, it: _Item, target_id: uuid.UUID) -> None:
        self.report.datasets_skipped += 1
        self._skipped_ids[it.content.ref.id] = target_id
        if self.new_ids:
            self.report.id_map[it.content.ref.id] = target_id

    def _conflict(self, it: _Item, why: str) -> None:
        self.report.conflicts.append(f"{describe(it.content)}: {why}")

    def _name(self, held: Sequence[Any]) -> str:
        dt = self.target.registry.dataset_type_records.by_id(held[0])
        run = self.run_names.get(held[1])
        if run is None:
            c = self.target.registry.tables.collection
            with self.target.registry.database.read() as conn:
                run = conn.execute(sa.select(c.c.name).where(c.c.id == held[1])).scalar()
        return f"{dt.name} {{{held[2]}}} in run {run!r}"

    def _record_manifest(self, todo: list[_Item]) -> None:
        """Run-manifest entries for placed files a rebuild could not identify otherwise, as a put writes them.

        Written before the rows commit (a killed import leaves at most entries naming files
        no row names, as a failed put does). Formats without room for identity are listed;
        so is every file shared in place (``direct``: outside the root, only its entry
        knows it) and, with new ids, every file (its own metadata names the source's id).
        """
        if self.transfer == "none":  # rows only: the files are not the target's to describe
            return
        refs, records, ingested = [], [], set()
        for it in todo:
            rec = it.placed.record if it.placed is not None else None
            if rec is None:
                continue
            ref = it.content.ref
            refs.append(ref if it.target_id == ref.id else
                        DatasetRef(it.target_id, ref.dataset_type, ref.data_id, ref.run))
            records.append(rec)
            if self.new_ids or is_url(rec.path):
                ingested.add(rec.path)
        if refs:
            record_manifest(self.target.datastore, refs, records, ingested)

    def _insert(self, todo: list[_Item]) -> None:
        registry = self.target.registry
        tables = registry.tables
        dims = registry.universe.dimensions
        columns = ["id", "dataset_type_id", "run_id", "data_id_key", *dims]
        dataset_rows = []
        file_rows = []
        for it in todo:
            values = it.content.ref.data_id.required_items
            dataset_rows.append((it.target_id.hex, it.type_id, it.run_id, it.key, *(values.get(d) for d in dims)))
            rec = it.placed.record if it.placed is not None else None
            if rec is not None:
                file_rows.append((it.target_id.hex, rec.path, rec.size, rec.checksum, rec.checksum_algorithm,
                                  rec.format))
        self._record_manifest(todo)
        replacing = [it.placed.replacing for it in todo if it.placed is not None and it.placed.replacing is not None]
        with registry.transaction() as conn:
            # Checked again inside the transaction: another writer may have added some since the lookup.
            again = datasets_by_id(registry, conn, [it.target_id.hex for it in todo]) or \
                datasets_by_key(registry, conn, [(it.type_id, it.run_id, it.key) for it in todo])
            if again:
                raise TransferError("The target changed during the transfer (another writer added some of the same "
                                    "datasets); transfer again: what is done is skipped")
            named = taken_paths(registry, conn, sorted(pf.path for pf in replacing)) if replacing else set()
            if named:
                raise TransferError(f"The target changed during the transfer (another writer stored a dataset at "
                                    f"{sorted(named)[0]!r}); transfer again: what is done is skipped")
            try:
                insert(conn, tables.dataset, columns, dataset_rows)
                insert(conn, tables.file, _FILE_COLUMNS, file_rows)
                # Where ingested files came from goes with them (re-homed to the target's ids).
                insert_origins(registry, [replace(it.content.origin, dataset_id=it.target_id) for it in todo
                                          if it.content.origin is not None])
            except conn.dialect.loaded_dbapi.IntegrityError as exc:
                detail = str(exc).strip().splitlines()[0]
                raise TransferError(f"The target changed during the transfer ({detail}); transfer again: what "
                                    "is done is skipped") from None
            self._check_placed(todo)
            if replacing:
                self.target.datastore.commit_many(replacing)

    def _check_placed(self, todo: list[_Item]) -> None:
        """Raise unless every file this batch placed or adopted is still at its path with its size.

        Run after the insert: a writer that took one for a leftover has either finished
        (committed, and the insert failed; or failed, and removed the file before its
        rollback) or is now kept out by these rows. Files of other bytes at the same path
        come only from a writer that committed, so the size tells.
        """
        store = self.target.datastore
        records = [it.placed.record for it in todo if it.placed is not None and it.placed.record is not None
                   and it.placed.replacing is None and (it.placed.copied or it.placed.adopted)]

        def kept(rec: FileRecord) -> bool:
            try:
                return store.size(rec.path) == rec.size
            except FileAccessError:
                return False

        for rec, ok in zip(records, self.pool.map(kept, records) if len(records) > 1 else map(kept, records),
                           strict=True):
            if not ok:
                raise TransferError(f"The target changed during the transfer (its file {rec.path!r} was replaced "
                                    "or removed by another writer); transfer again: what is done is skipped")
