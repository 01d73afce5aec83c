"""The one writer: any `ContentSource` into a repository, idempotently, never overwriting.

`import_content` writes, in this order: dimension records (skip-existing; another record
under the same key is a conflict), dataset types, collections (RUN, TAGGED, CALIBRATION,
then CHAINED), datasets in bounded batches (files first, in parallel, then each batch's
rows in one transaction), TAGGED memberships, certifications, and provenance (whole
executions per transaction). Whatever the target already holds identically is skipped
and counted; whatever it holds otherwise is a conflict, reported and never overwritten.

Killed at any point and run again, an import finishes the work without doing any of it
twice: a killed import leaves at most files that no row names, which the repeat finds
identical (size and checksum) and adopts.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from ..errors import CollectionError, ConfigError, ReadOnlyError, TransferConflictError, TransferError
from ..model import CollectionType, new_id
from ._import_datasets import DatasetWriter, register_dataset_type
from ._target_rows import executions_by_key, insert, raw
from .content import (
    TRANSFER_CHOICES,
    Certification,
    CollectionContent,
    ContentSource,
    ProvenanceBatch,
    TransferReport,
)
from .merge import remap_details

if TYPE_CHECKING:
    from ..butler import Butler
    from ..dimensions import DimensionUniverse

__all__ = ["check_universe", "import_content", "progress_bar", "register_dataset_type"]

_CONFLICT_CHOICES = ("raise", "report")
_COLLECTION_ORDER = (CollectionType.RUN, CollectionType.TAGGED, CollectionType.CALIBRATION, CollectionType.CHAINED)


def import_content(target: Butler, source: ContentSource, *, transfer: str = "copy", new_ids: bool = False,
                   on_conflict: str = "raise", workers: int = 8, progress: bool = False) -> TransferReport:
    """Write the content of ``source`` into the repository ``target``.

    Parameters
    ----------
    target
        The repository written (opened writeable).
    source
        A `ContentSource`: a live repository (`skybutler.transfer.source.RegistrySource`),
        a dump, a daf_butler export.
    transfer
        How files travel (`skybutler.transfer.content.TRANSFER_CHOICES`): ``copy``,
        ``hardlink`` and ``symlink`` (both on local disk) place each file at the path it
        had in the source; ``direct`` records the source's URL and shares the file in
        place; ``none`` writes rows only, at the source's paths. ``move`` copies (or links
        on one local disk) and deletes each source file once the target's rows are
        committed. The source's own rows are left as they were: from a live repository
        they then name missing files (its ``verify`` reports them lost), so ``move`` is for
        sources that are about to be thrown away (a dump, an ingest area, a scratch
        repository), not for one that stays in use.
    new_ids
        Give every dataset and execution a fresh id (`skybutler.model.new_id`); tags,
        certifications and provenance edges follow them (``report.id_map``). A dataset
        the target already holds for the same type, data id and run with the same file
        is skipped and mapped to the target's id, so a repeated import adds nothing.
    on_conflict
        ``"raise"``: after writing everything else, raise `TransferConflictError` listing
        the conflicts. ``"report"``: only list them in the report.
    workers
        Threads placing files at once.
    progress
        Show a progress bar of datasets (rich, on the terminal's stderr).

    Returns
    -------
    TransferReport
        What was added, skipped, and refused.

    Raises
    ------
    TransferError
        The universes differ; a source file is missing or does not match its record; a
        collection exists in the target with another type.
    DatasetTypeError
        A dataset type registered otherwise in the target (naming both definitions).
    TransferConflictError
        With ``on_conflict="raise"``: datasets (or records, memberships, chains) the
        target holds otherwise; everything else was written.

    Examples
    --------
    >>> report = import_content(target, RegistrySource(source, refs), transfer="copy")  # doctest: +SKIP
    >>> report.datasets_added, report.datasets_skipped, report.conflicts                 # doctest: +SKIP
    (120, 0, [])
    """
    if transfer not in TRANSFER_CHOICES:
        raise ConfigError(f"Unknown transfer mode {transfer!r}; use one of {', '.join(TRANSFER_CHOICES)}")
    if on_conflict not in _CONFLICT_CHOICES:
        raise ConfigError(f"on_conflict must be one of {', '.join(_CONFLICT_CHOICES)}, not {on_conflict!r}")
    if workers < 1:
        raise ConfigError(f"workers must be at least 1, not {workers}")
    if not target.writeable:
        raise ReadOnlyError(f"Cannot transfer into {target.root}: the butler was opened read-only")
    check_universe(source.universe, target.universe)
    report = TransferReport()
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="skybutler-transfer") as pool, \
            progress_bar(progress, "datasets") as advance:
        writer = DatasetWriter(target, transfer, new_ids, report, pool, advance)
        _import_records(target, source, report)
        for dt in source.dataset_types():
            writer.type_id(dt)
        _import_collections(target, source.collections(), report)
        for batch in source.datasets():
            writer.write(batch)
        _import_tags(target, source.tags(), report)
        _import_certifications(target, source.certifications(), report)
        _import_provenance(target, source.provenance(), report, new_ids)
    if report.conflicts and on_conflict == "raise":
        shown = "; ".join(report.conflicts[:5])
        more = f"; and {len(report.conflicts) - 5} more" if len(report.conflicts) > 5 else ""
        raise TransferConflictError(f"{len(report.conflicts)} conflict(s), nothing overwritten (everything else "
                                    f"was written): {shown}{more}", report.conflicts)
    return report


@contextlib.contextmanager
def progress_bar(show: bool, what: str) -> Iterator[Callable[[int], None]]:
    """A function to count ``what`` done, shown as a rich progress bar on stderr when ``show``."""
    if not show:
        yield lambda n: None
        return
    from rich.console import Console
    from rich.progress import MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    with Progress(SpinnerColumn(), TextColumn(what), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=Console(stderr=True), transient=False) as bar:
        task = bar.add_task(what, total=None)
        yield lambda n: bar.advance(task, n)


# -- universe, records, types, collections ------------------------------------------------


def check_universe(source: DimensionUniverse, target: DimensionUniverse) -> None:
    """Raise `TransferError` unless every element and overlap of ``source`` is in ``target`` alike."""
    src, dst = source.document.get("elements", {}), target.document.get("elements", {})
    for name, definition in src.items():
        if name not in dst:
            raise TransferError(f"The target's dimension universe has no element {name!r} (the source's defines "
                                f"it as {definition}); the universes are not compatible")
        if dst[name] != definition:
            raise TransferError(f"Dimension element {name!r} differs: the source defines it as {definition}, the "
                                f"target as {dst[name]}; the universes are not compatible")
    missing = {tuple(p) for p in source.document.get("overlaps", [])} - \
        {tuple(p) for p in target.document.get("overlaps", [])}
    if missing:
        raise TransferError(f"The target's dimension universe computes no overlaps of {sorted(missing)[0]}; the "
                            "universes are not compatible")


def _same_record(incoming: dict[str, Any], held: dict[str, Any]) -> bool:
    import json

    for key, value in incoming.items():
        other = held.get(key)
        if key == "region" and isinstance(other, str):
            other = json.loads(other)
            value = [list(v) for v in value] if value is not None else None
        if value != other and value is not None:
            return False
    return True


def _import_records(target: Butler, source: ContentSource, report: TransferReport) -> None:
    registry = target.registry
    universe = registry.universe
    for element, records in source.dimension_records():
        if not records:
            continue
        pk = universe.elements[element].primary_key
        keys = [tuple(universe.coerce(k, r[k]) for k in pk) for r in records]
        held = registry.dimension_records.raw_rows(element, keys)
        new, new_keys = [], []
        for key, rec in zip(keys, records, strict=True):
            found = held.get(key)
            if found is None:
                new.append(rec)
                new_keys.append(key)
            elif not _same_record(rec, found):
                report.conflicts.append(_record_conflict(element, pk, key, found, rec))
        if new:
            added = registry.insert_dimension_records(element, new, skip_existing=True)
            report.dimension_records_added += added
            if added < len(new):
                # Another writer inserted some of them since they were looked up: compared now,
                # as they would have been had it been first.
                held = registry.dimension_records.raw_rows(element, new_keys)
                report.conflicts.extend(_record_conflict(element, pk, key, held[key], rec)
                                        for key, rec in zip(new_keys, new, strict=True)
                                        if key in held and not _same_record(rec, held[key]))


def _record_conflict(element: str, pk: Sequence[str], key: tuple, held: dict[str, Any], rec: dict[str, Any]) -> str:
    return (f"{element} record {dict(zip(pk, key, strict=True))}: the target holds another record under this key "
            f"({held}; source: {rec})")


def _import_collections(target: Butler, collections: list[CollectionContent], report: TransferReport) -> None:
    registry = target.registry
    by_type = {t: [c for c in collections if c.type is t] for t in _COLLECTION_ORDER}
    for ctype in _COLLECTION_ORDER:
        for c in by_type[ctype]:
            try:
                held = registry.collection_type(c.name)
            except CollectionError:
                held = None
            if held is not None and held is not c.type:
                raise TransferError(f"Collection {c.name!r} is {c.type.value} in the source but {held.value} in "
                                    "the target; rename one of them first")
            if held is None:
                report.collections_added += registry.register_collection(c.name, c.type, doc=c.doc)
            if ctype is CollectionType.CHAINED:
                current: list[str] = next((x["children"] for x in registry.collections(types=[CollectionType.CHAINED])
                                if x["name"] == c.name), [])
                if held is None or not current:
                    registry.set_chain(c.name, list(c.children))
                elif tuple(current) != c.children:
                    report.conflicts.append(f"Chain {c.name!r} holds {current} in the target; the source's holds "
                                            f"{list(c.children)} (left as it is)")


# -- memberships ----------------------------------------------------------------------------


def _target_id(report: TransferReport, source_id: uuid.UUID) -> uuid.UUID:
    return report.id_map.get(source_id, source_id)


def _import_tags(target: Butler, batches: Iterator[list[tuple[str, uuid.UUID]]], report: TransferReport) -> None:
    registry = target.registry
    tg = registry.tables.tagged
    for batch in batches:
        by_collection: dict[str, list[uuid.UUID]] = {}
        for collection, dataset_id in batch:
            by_collection.setdefault(collection, []).append(_target_id(report, dataset_id))
        for collection, ids in by_collection.items():
            row = registry.collection_records.of_type(collection, CollectionType.TAGGED)
            refs = registry.get_datasets(ids)  # a dataset refused as a conflict is not there: nor is its tag
            with registry.transaction() as conn:
                held = {(r[0], r[1], r[2]) for r in conn.execute(
                    sa.select(tg.c.dataset_id, tg.c.dataset_type_id, tg.c.data_id_key)
                    .where(tg.c.collection_id == row["id"]))}
                held_ids = {h[0] for h in held}
                by_key = {(h[1], h[2]): h[0] for h in held}
                rows = []
                for dataset_id, ref in refs.items():
                    if dataset_id in held_ids:
                        continue
                    type_id = registry.dataset_type_records.find(ref.dataset_type.name)[0]
                    key = ref.data_id.key()
                    other = by_key.get((type_id, key))
                    if other is not None:
                        report.conflicts.append(f"TAGGED {collection!r} holds dataset {other} for "
                                                f"{ref.dataset_type.name} {{{ref.data_id}}}; the source tags "
                                                f"{dataset_id} (left as it is)")
                        continue
                    by_key[(type_id, key)] = dataset_id
                    rows.append((row["id"], raw(dataset_id), type_id, key))
                insert(conn, tg, ["collection_id", "dataset_id", "dataset_type_id", "data_id_key"], rows)


def _import_certifications(target: Butler, batches: Iterator[list[Certification]], report: TransferReport) -> None:
    registry = target.registry
    cal = registry.tables.calibration
    for batch in batches:
        ids = [_target_id(report, c.dataset_id) for c in batch]
        refs = registry.get_datasets(ids)
        with registry.transaction() as conn:
            for cert, dataset_id in zip(batch, ids, strict=True):
                ref = refs.get(dataset_id)
                if ref is None:
                    continue
                row = registry.collection_records.of_type(cert.collection, CollectionType.CALIBRATION)
                begin, end = _naive(cert.begin), _naive(cert.end)
                same = conn.execute(sa.select(cal.c.id).where(
                    cal.c.collection_id == row["id"], cal.c.dataset_id == dataset_id, cal.c.valid_begin == begin,
                    cal.c.valid_end == end)).first()
                if same is not None:
                    continue
                try:  # certify checks for an overlapping certification before it writes anything
                    registry.certify(cert.collection, [ref], begin, end)
                except CollectionError as exc:
                    report.conflicts.append(f"Certification of {ref} in {cert.collection!r}: {exc} (left as it is)")


def _naive(value: Any) -> Any:
    import datetime

    if isinstance(value, datetime.datetime) and value.tzinfo is not None:
        return value.astimezone(datetime.UTC).replace(tzinfo=None)
    return value


# -- provenance -----------------------------------------------------------------------------


def _import_provenance(target: Butler, batches: Iterator[ProvenanceBatch], report: TransferReport,
                       new_ids: bool) -> None:
    registry = target.registry
    t = registry.tables
    columns = {c.name for c in t.execution.columns}
    for batch in batches:
        rows = []
        for e in batch.executions:
            row = {k: v for k, v in e.items() if k in columns and k != "run_id"}
            row["run_id"] = registry.run_id(e["run"]) if e.get("run") is not None else None
            rows.append(row)
        ids = _execution_ids(target, rows, report, new_ids)
        if new_ids:  # ids named in details follow the datasets and executions, as a merge's do
            for row in rows:
                if isinstance(row.get("details"), str):
                    row["details"] = remap_details(row["details"], lambda h: _new_hex(report, h))
        with registry.transaction() as conn:
            held = _existing_executions(conn, t.execution, list(ids.values()))
            new = [{**r, "id": ids[r["id"]]} for r in rows if ids[r["id"]] not in held]
            new_ids_set = {r["id"] for r in new}

            def dataset(i: uuid.UUID) -> uuid.UUID:
                return _target_id(report, i)

            used = [{"execution_id": ids[e], "dataset_id": dataset(d), "path": p} for e, d, p in batch.used
                    if ids.get(e) in new_ids_set]
            generated = [{"execution_id": ids[e], "dataset_id": dataset(d), "path": p} for e, d, p in batch.generated
                         if ids.get(e) in new_ids_set]
            derived = [{"dataset_id": dataset(d), "source_id": dataset(s)} for d, s in dict.fromkeys(batch.derived)]
            for table, data in ((t.execution, new), (t.used, used), (t.generated, generated), (t.derived, derived)):
                if data:
                    conn.execute(registry.database.insert_new(table), data)
        report.executions_added += len(new)
        report.executions_skipped += len(rows) - len(new)


def _new_hex(report: TransferReport, hex_id: str) -> str | None:
    found = report.id_map.get(uuid.UUID(hex=hex_id))
    return found.hex if found is not None else None


def _existing_executions(conn: sa.Connection, table: sa.Table, ids: list[uuid.UUID]) -> set[uuid.UUID]:
    out: set[uuid.UUID] = set()
    for i in range(0, len(ids), 500):
        out.update(r[0] for r in conn.execute(sa.select(table.c.id).where(table.c.id.in_(ids[i:i + 500]))))
    return out


def _execution_ids(target: Butler, rows: list[dict[str, Any]], report: TransferReport,
                   new_ids: bool) -> dict[uuid.UUID, uuid.UUID]:
    """Source execution id -> target id: the same, or (``new_ids``) the target's for the same attempt, or fresh."""
    if not new_ids:
        return {r["id"]: r["id"] for r in rows}
    out: dict[uuid.UUID, uuid.UUID] = {}
    registry = target.registry
    by_run: dict[int | None, list[dict[str, Any]]] = {}
    for r in rows:
        by_run.setdefault(r["run_id"], []).append(r)
    with registry.database.read() as conn:
        for run_id, run_rows in by_run.items():
            raw_rows = [{k: raw(v) for k, v in r.items()} for r in run_rows]
            matches = executions_by_key(registry, conn, run_id, raw_rows) if run_id is not None else {}
            for r, rr in zip(run_rows, raw_rows, strict=True):
                found = matches.get((rr["task_label"], rr["quantum_id"], rr["data_id_key"], rr["start_time"]))
                out[r["id"]] = uuid.UUID(hex=found) if found else new_id()
                report.id_map[r["id"]] = out[r["id"]]
    return out

