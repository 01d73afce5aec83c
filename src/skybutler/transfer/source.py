"""A live repository as a `ContentSource`: the datasets of some refs or of a query, and what they need.

`RegistrySource` reads any repository (SQLite or PostgreSQL registry, local or S3
datastore) and hands its content, in batches, to a writer
(`skybutler.transfer.importer.import_content`, or a dump writer).

What is read, in ``"limited"`` mode:

- the datasets (given as refs, or selected like `Butler.query_datasets`: dataset types
  x collections x ``where``, every match in every collection, not only the first);
- the dimension records their data ids need, with everything those records require
  or imply (a visit brings its instrument, physical filter, band and day), regions as
  stored (the target computes the same overlaps from them);
- their dataset types and RUN collections; the TAGGED, CALIBRATION and CHAINED
  collections named in ``collections`` (and the collections those chains hold), with
  the memberships and certifications of included datasets;
- with ``include_provenance``: the executions of included runs that generated or used
  an included dataset, whole (every edge of each).

``"full"`` mode adds the provenance chain of the selected datasets: their ancestors
through wasGeneratedBy / used / wasDerivedFrom edges, recursively, as datasets of their
own (with their runs, records and executions).

Memory: the selection is streamed again for each part of the content (records, datasets,
tags, provenance) instead of being held, so a run of 100,000 datasets is never one list.
Held are the distinct dimension record keys (records scale), the execution ids of the
provenance (executions scale) and, in ``"full"`` mode or when refs are given, the ids of
the datasets.
"""

from __future__ import annotations

import itertools
import json
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from .. import _modes
from ..datastore import is_url
from ..errors import CollectionError, ConfigError, DatasetTypeError
from ..model import CollectionType, DatasetRef, DatasetType
from ..registry import provenance_sql as prov
from ..registry import query_datasets
from ..registry.origin_sql import get_origins
from .content import Certification, CollectionContent, DatasetContent, ProvenanceBatch

if TYPE_CHECKING:
    from ..butler import Butler
    from ..dimensions import DimensionUniverse
    from ..model import DataId

__all__ = ["TRANSFER_SCOPES", "RegistrySource"]

TRANSFER_SCOPES = _modes.TRANSFER_SCOPES
"""What a transfer from a live repository brings besides the datasets (see `RegistrySource`)."""

_RECORD_BATCH = 5_000


class RegistrySource:
    """The content of a live repository, or of part of one, as a stream (a `ContentSource`).

    Parameters
    ----------
    butler
        The repository read (opened read-only is enough).
    refs
        The datasets, as refs of ``butler``; or None to select them by query.
    dataset_types
        With ``refs=None``: the dataset type names to query (None: every registered type).
    collections
        With ``refs=None``: the collections searched (required then). TAGGED, CALIBRATION
        and CHAINED collections named here are carried with the memberships of included
        datasets, with refs given too.
    where, bind
        With ``refs=None``: a query expression and its bound values, as for `Butler.query_datasets`.
    mode
        ``"limited"`` or ``"full"`` (adds the provenance ancestors as datasets).
    include_provenance
        Carry the executions of included runs that touch included datasets.
    batch_size
        Datasets per batch handed to the writer.

    Examples
    --------
    >>> source = RegistrySource(butler, dataset_types=["calexp"], collections=["HSC/runs/w01"],
    ...                         where="visit = 903334")                            # doctest: +SKIP
    >>> report = import_content(target, source)                                    # doctest: +SKIP
    """

    def __init__(self, butler: Butler, refs: Iterable[DatasetRef] | None = None, *,
                 dataset_types: Sequence[str] | None = None, collections: Sequence[str] | None = None,
                 where: str | None = None, bind: Mapping[str, Any] | None = None, mode: str = "limited",
                 include_provenance: bool = True, batch_size: int = 5_000):
        if mode not in TRANSFER_SCOPES:
            raise ConfigError(f"Unknown transfer mode {mode!r}; use one of {', '.join(TRANSFER_SCOPES)}")
        if batch_size < 1:
            raise ConfigError(f"batch_size must be at least 1, not {batch_size}")
        self.butler = butler
        self.registry = butler.registry
        self.mode = mode
        self.include_provenance = include_provenance
        self.batch_size = batch_size
        self.where, self.bind = where, dict(bind or {})
        self.named = list(collections or [])
        for name in self.named:  # an unknown collection is an error now, not after the records went
            self.registry.collection_type(name)
        if refs is not None:
            self._refs: list[DatasetRef] | None = list({r.id: r for r in refs}.values())
            self._types = sorted({r.dataset_type.name for r in self._refs})
        else:
            if not self.named:
                raise CollectionError("Selecting datasets by query needs collections (-c); none were given")
            self._refs = None
            known = {dt.name for dt in self.registry.dataset_types()}
            if dataset_types is None:
                self._types = sorted(known)
            else:
                unknown = [t for t in dataset_types if t not in known]
                if unknown:
                    raise DatasetTypeError(f"Unknown dataset type {unknown[0]!r} in the source repository "
                                           f"{butler.root}")
                self._types = list(dict.fromkeys(dataset_types))
        self._ancestors: set[uuid.UUID] | None = None
        self._runs: list[str] | None = None
        # The record keys `dimension_records` handed out (by element), once it has run; and by
        # the dimensions of a data id, the elements (and their keys) it needs records of.
        self._record_keys: dict[str, set[tuple]] | None = None
        self._record_plans: dict[tuple[str, ...], list[tuple[str, tuple[str, ...]]]] = {}
        self._storage_options = dict(butler.config.datastore.storage_options)

    # -- the selection, streamed -------------------------------------------------------

    def _selected(self) -> Iterator[list[DatasetRef]]:
        """The selected datasets (not their ancestors), in batches; run again for every pass."""
        if self._refs is not None:
            for i in range(0, len(self._refs), self.batch_size):
                yield self._refs[i:i + self.batch_size]
            return
        for name in self._types:
            stream = query_datasets(self.registry, name, self.named, where=self.where, bind=self.bind,
                                    find_first=False)
            while batch := list(itertools.islice(stream, self.batch_size)):
                yield batch

    def _batches(self) -> Iterator[list[DatasetRef]]:
        """Every included dataset in batches: the selection, then (``"full"``) its ancestors not selected."""
        yield from self._selected()
        if self.mode == "full":
            ancestors = sorted(self._ancestor_ids())
            for i in range(0, len(ancestors), self.batch_size):
                found = self.registry.get_datasets(ancestors[i:i + self.batch_size])
                if found:
                    yield list(found.values())

    def _ancestor_ids(self) -> set[uuid.UUID]:
        """Ids of the provenance ancestors of the selection that are not selected themselves."""
        if self._ancestors is not None:
            return self._ancestors
        selected: set[uuid.UUID] = set()
        for batch in self._selected():
            selected.update(r.id for r in batch)
        seen = set(selected)
        frontier = list(selected)
        while frontier:
            parents: set[uuid.UUID] = {source for _, source in prov.derived_edges(self.registry, frontier)}
            generators = {rec["id"] for rec, _ in prov.generating_executions(self.registry, frontier).values()}
            used, _ = prov.edges_of_executions(self.registry, sorted(generators))
            parents.update(dataset_id for _, dataset_id, _ in used)
            frontier = [p for p in parents if p not in seen]
            seen.update(frontier)
        self._ancestors = seen - selected
        return self._ancestors

    def _included_ids(self) -> set[uuid.UUID] | None:
        """Ids of every included dataset when they are held anyway (refs given, or ``"full"``), else None."""
        if self._refs is None and self.mode != "full":
            return None
        ids = {r.id for batch in self._selected() for r in batch} if self._refs is None else \
            {r.id for r in self._refs}
        if self.mode == "full":
            ids |= self._ancestor_ids()
        return ids

    # -- ContentSource -----------------------------------------------------------------

    @property
    def universe(self) -> DimensionUniverse:
        return self.registry.universe

    def dimension_records(self) -> Iterator[tuple[str, list[dict[str, Any]]]]:
        """Records of every data id of the included datasets and all they require or imply, in universe order."""
        universe = self.universe
        elements = universe.elements
        wanted: dict[str, set[tuple]] = {}
        runs: set[str] = set()
        seen_ids: set[DataId] = set()
        for batch in self._batches():
            for ref in batch:
                runs.add(ref.run)
                di = ref.data_id
                if di in seen_ids:
                    continue
                seen_ids.add(di)
                items = di.required_items
                for name, pk in self._record_plan(tuple(items)):
                    wanted.setdefault(name, set()).add(tuple(items[k] for k in pk))
            if len(seen_ids) > 100_000:  # distinct data ids are only a shortcut: keep memory bounded
                seen_ids.clear()
        self._runs = sorted(runs)
        self._record_keys = wanted
        records: dict[str, dict[tuple, dict[str, Any]]] = {}
        todo = {name: keys for name, keys in wanted.items() if keys}
        while todo:
            found_now: dict[str, set[tuple]] = {}
            for name, keys in todo.items():
                have = records.setdefault(name, {})
                missing = [k for k in keys if k not in have]
                if not missing:
                    continue
                found = self.registry.dimension_records.raw_rows(name, missing)
                have.update(found)
                el = elements[name]
                for dep in (*el.requires, *el.implies):
                    dep_pk = elements[dep].primary_key
                    dep_keys = found_now.setdefault(dep, set())
                    for row in found.values():
                        key = tuple(row.get(k) for k in dep_pk)
                        if None not in key:
                            dep_keys.add(key)
            todo = found_now
        for name in elements:  # universe order: what a record requires comes before it
            rows = list(records.get(name, {}).values())
            for i in range(0, len(rows), _RECORD_BATCH):
                yield name, [_record(row) for row in rows[i:i + _RECORD_BATCH]]

    def _record_plan(self, names: tuple[str, ...]) -> list[tuple[str, tuple[str, ...]]]:
        """The elements whose records a data id over the dimensions ``names`` needs, with their keys."""
        plan = self._record_plans.get(names)
        if plan is None:
            given = set(names)
            plan = self._record_plans[names] = [(n, el.primary_key) for n, el in self.universe.elements.items()
                                                if el.primary_key and set(el.primary_key) <= given]
        return plan

    def _has_records(self, ref: DatasetRef) -> bool:
        """Whether `dimension_records` handed out the records of ``ref``'s data id (it has run)."""
        assert self._record_keys is not None
        items = ref.data_id.required_items
        return all(tuple(items[k] for k in pk) in self._record_keys.get(name, ())
                   for name, pk in self._record_plan(tuple(items)))

    def dataset_types(self) -> list[DatasetType]:
        if self.mode == "full" or self._refs is not None:
            names = set(self._types)
            if self.mode == "full":
                for batch in self._batches():
                    names.update(r.dataset_type.name for r in batch)
            return [self.registry.get_dataset_type(n) for n in sorted(names)]
        return [self.registry.get_dataset_type(n) for n in self._types]

    def collections(self) -> list[CollectionContent]:
        """RUN collections of the included datasets, then the named collections, each after its children."""
        if self._runs is None:
            self._runs = sorted({r.run for batch in self._batches() for r in batch})
        info = {c["name"]: c for c in self.registry.collections()}
        out: dict[str, CollectionContent] = {}

        def add(name: str, depth: int = 0) -> None:
            if name in out or depth > 50:
                return
            c = info[name]
            ctype = CollectionType(c["type"])
            for child in c["children"]:
                add(child, depth + 1)
            out[name] = CollectionContent(name, ctype, c["doc"], tuple(c["children"]))

        for run in self._runs:
            add(run)
        for name in self.named:
            add(name)
        return list(out.values())

    def datasets(self) -> Iterator[list[DatasetContent]]:
        store = self.butler.datastore
        options = self._storage_options
        for batch in self._batches():
            if self._record_keys is not None and self._refs is None:
                # The selection is read again for each part: a dataset stored since the records
                # were handed out (an import reads them first) may need records they lack. It is
                # left out, as if it had been stored after the transfer.
                batch = [r for r in batch if self._has_records(r)]
            ids = [r.id for r in batch]
            files = self.registry.get_files(ids)
            if len(files) < len(ids):
                # A dataset removed since the selection was read has no file row either: it is
                # left out, as if the removal had come first, not written without its file.
                there = self.registry.get_datasets([i for i in ids if i not in files])
                batch = [r for r in batch if r.id in files or r.id in there]
                ids = [r.id for r in batch]
            origins = get_origins(self.registry, ids)
            out = []
            for ref in batch:
                record = files.get(ref.id)
                url = store.url(record.path) if record is not None else None
                if url is not None and not is_url(url):  # a local absolute path: the seam speaks URLs
                    url = "file://" + url
                out.append(DatasetContent(ref, record, url, options, origins.get(ref.id)))
            yield out

    def _named_of_type(self, ctype: CollectionType) -> list[str]:
        """Non-chained collections of ``ctype`` reached from the named collections (chains expanded)."""
        if not self.named:
            return []
        return [s.name for s in self.registry.search_path(self.named) if s.type is ctype]

    def _members(self, collection: str, included: set[uuid.UUID] | None) -> Iterator[DatasetRef]:
        """Datasets of the included types found in ``collection`` that are included."""
        types = self._types if self.mode != "full" else [dt.name for dt in self.dataset_types()]
        for name in types:
            where = self.where if self._refs is None else None
            for ref in query_datasets(self.registry, name, [collection], where=where, bind=self.bind,
                                      find_first=False):
                if included is None or ref.id in included:
                    yield ref

    def tags(self) -> Iterator[list[tuple[str, uuid.UUID]]]:
        tagged = self._named_of_type(CollectionType.TAGGED)
        if not tagged:
            return
        included = self._included_ids()
        for collection in tagged:
            stream = ((collection, ref.id) for ref in self._members(collection, included))
            while batch := list(itertools.islice(stream, self.batch_size)):
                yield batch

    def certifications(self) -> Iterator[list[Certification]]:
        calibrations = self._named_of_type(CollectionType.CALIBRATION)
        if not calibrations:
            return
        included = self._included_ids()
        for collection in calibrations:
            ids = {ref.id for ref in self._members(collection, included)}
            certs = [Certification(collection, c["dataset_id"], c["begin"], c["end"])
                     for c in self.registry.certifications(collection) if c["dataset_id"] in ids]
            for i in range(0, len(certs), self.batch_size):
                yield certs[i:i + self.batch_size]

    def provenance(self) -> Iterator[ProvenanceBatch]:
        """Executions of included runs that generated or used an included dataset, with all their edges."""
        if not self.include_provenance:
            return
        if self._runs is None:
            self._runs = sorted({r.run for batch in self._batches() for r in batch})
        run_ids = {self.registry.run_id(run) for run in self._runs}
        if not prov.runs_have_executions(self.registry, sorted(run_ids)):
            return  # the usual case for ingested or put data: no need to stream the selection again
        executions: set[uuid.UUID] = set()
        for batch in self._batches():
            touching = prov.touching_executions(self.registry, [r.id for r in batch])
            executions.update(e for e, run_id in touching.items() if run_id in run_ids)
        ordered = sorted(executions)
        step = max(1, self.batch_size // 10)  # an execution brings a few edges
        for i in range(0, len(ordered), step):
            chunk = ordered[i:i + step]
            rows = prov.executions_by_id(self.registry, chunk)
            for row in rows:
                row.pop("run_id", None)
            used, generated = prov.edges_of_executions(self.registry, chunk)
            derived = prov.derived_edges(self.registry, [d for _, d, _ in generated])
            yield ProvenanceBatch(rows, used, generated, derived)


def _record(row: Mapping[str, Any]) -> dict[str, Any]:
    """A raw record row as `Registry.fetch_dimension_records` gives it (the region decoded from its JSON)."""
    rec = dict(row)
    region = rec.get("region")
    if isinstance(region, str):
        rec["region"] = json.loads(region)
    return rec
