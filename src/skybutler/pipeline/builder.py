"""Building quantum graphs from the registry: bulk SQL joins, grouping in Python.

For each task, in dependency order, one query over the union of the task's
dimensions, its inputs' dimensions and the dimensions the ``where`` expression
names lists every combination of data ids that exist together — visits and
detectors joined to tracts and patches through the overlap tables computed when
the records were inserted, bands through the records that imply them. Inputs
that already exist constrain that query in SQL; inputs that earlier tasks make
are matched against those tasks' planned outputs in Python. Rows are then
grouped by the task's own dimensions into quanta. Prerequisites (calibrations)
are found by validity range at each quantum's observation time, from one query
per dataset type. No geometry and no per-quantum SQL happen here.

Quanta are made one at a time as plain data (the lines of the graph file), so
`QuantumGraphBuilder.write` streams them to the file and holds none: a build keeps
only compact indexes (existing inputs, and outputs while a later task reads them)
and, when the data id rows come grouped by the task's dimensions, one group of rows.
`QuantumGraphBuilder.build` turns the same data into `Quantum` objects.
"""

from __future__ import annotations

import contextlib
import datetime
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._gc import paused_gc
from .._version import __version__
from ..errors import DatasetTypeError, GraphError, PipelineError
from ..model import DataId, DatasetRef, DatasetType, new_id
from ..registry import pipeline_sql, tuple_getter
from ..registry.expr import identifiers
from ..registry.expr import parse as parse_where
from ..registry.queries import query_datasets
from ._builder_parts import Entry, PathMaker, Plan, chunked, explain_empty, ref_record
from ._graph_file import GraphWriter, dumps_line
from .graph import Quantum, QuantumGraph, dataset_type_to_dict, ref_to_dict
from .pipeline import Pipeline
from .task import PrerequisiteInput, Task

if TYPE_CHECKING:
    from ..butler import Butler

__all__ = ["QuantumGraphBuilder", "build_quantum_graph"]

class QuantumGraphBuilder:
    """Builds the quantum graph of a pipeline over the data a query selects.

    Parameters
    ----------
    butler
        The repository (read only here; nothing is written while building).
    pipeline
        The pipeline (validated again against the repository's universe).
    input_collections
        Where inputs and prerequisites are searched, in order.
    output_run
        The run outputs will be written to.
    where
        Query expression over dimensions (``"instrument = 'HSC' AND visit IN (1, 2)"``).
    bind
        Values of ``:name`` parameters in ``where``.
    skip_existing_in
        Collections where existing outputs make a quantum unnecessary: such a quantum is
        left out, and its existing outputs feed the quanta downstream.
    max_quanta
        Refuse (unless forced) a graph whose query matches more data ids than this
        (default: ``pipelines.max_quanta`` of the repository configuration).

    Examples
    --------
    >>> builder = QuantumGraphBuilder(butler, pipeline, input_collections=["HSC/raw"],
    ...                               output_run="u/me/run1", where="visit = 903334")  # doctest: +SKIP
    >>> builder.count()                                                                # doctest: +SKIP
    {'process_ccd': 16, 'make_warp': 8}
    >>> graph = builder.build()                                                        # doctest: +SKIP
    """

    def __init__(self, butler: Butler, pipeline: Pipeline, *, input_collections: Sequence[str], output_run: str,
                 where: str | None = None, bind: Mapping[str, Any] | None = None,
                 skip_existing_in: Sequence[str] = (), max_quanta: int | None = None):
        self.butler = butler
        self.registry = butler.registry
        self.universe = butler.universe
        self.pipeline = pipeline
        self.input_collections = list(input_collections)
        self.output_run = output_run
        self.where = where or None
        self.bind = dict(bind or {})
        self.skip_existing_in = list(skip_existing_in)
        self.max_quanta = max_quanta if max_quanta is not None else butler.config.pipelines.max_quanta
        self.timings: dict[str, float] = {}
        self.quanta_made = 0
        """Quanta made so far by the running (or last) build: progress, and what a streamed build has written."""
        self._order = pipeline.check(self.universe)
        self.dataset_types = self._resolve_dataset_types()
        where_dims = self._where_dimensions()
        self.plans: dict[str, Plan] = {}
        produced = {f.dataset_type.name for f in pipeline.dataset_types(self.universe).values() if f.producer}
        for label in self._order:
            task = pipeline.tasks[label]
            tdims = self.universe.closure(task.dimensions)
            dims = set(tdims) | where_dims
            for conn in task.inputs.values():
                dims |= set(self.dataset_types[conn.dataset_type].dimensions)
            for out in task.outputs.values():
                if out.multiple:
                    dims |= set(self.dataset_types[out.dataset_type].dimensions)
            external = [c.dataset_type for c in task.inputs.values() if c.dataset_type not in produced]
            self.plans[label] = Plan(task, tdims, self.universe.closure(dims), list(dict.fromkeys(external)))

    # -- checks against the repository -------------------------------------------------

    def _resolve_dataset_types(self) -> dict[str, DatasetType]:
        """Each dataset type as registered (external ones must be) or as the pipeline defines it."""
        out: dict[str, DatasetType] = {}
        for name, flow in self.pipeline.dataset_types(self.universe).items():
            who = flow.producer or flow.consumers[0]
            kind = self.pipeline.tasks[who[0]].connections[who[1]].kind
            where = f"Task {who[0]!r} {kind} connection {who[1]!r}"
            try:
                registered = self.registry.get_dataset_type(name)
            except DatasetTypeError:
                registered = None
            if registered is None:
                if flow.producer is None:
                    raise PipelineError(f"{where}: dataset type {name!r} is neither produced by an earlier task "
                                        "nor registered in the repository")
                out[name] = flow.dataset_type
                continue
            if (registered.dimensions, registered.storage_class) != (flow.dataset_type.dimensions,
                                                                      flow.dataset_type.storage_class):
                raise PipelineError(f"{where} says {flow.dataset_type} but the repository has {registered}")
            out[name] = registered
        for task in self.pipeline.tasks.values():
            for dt in (DatasetType(task.log_dataset_type, self.universe.closure(task.dimensions), "text"),
                       DatasetType(task.config_dataset_type, (), "dict")):
                try:
                    registered = self.registry.get_dataset_type(dt.name)
                except DatasetTypeError:
                    registered = None
                if registered is not None and registered != dt:
                    raise PipelineError(f"Task {task.label!r}: the repository already has dataset type "
                                        f"{registered}, not the {dt} its {dt.name.rsplit('_', 1)[1]} needs")
                out[dt.name] = dt
        return out

    def _where_dimensions(self) -> set[str]:
        names = identifiers(parse_where(self.where)) if self.where else set()
        return {n.split(".", 1)[0] for n in names if n.split(".", 1)[0] in self.universe.dimensions}

    # -- counting ----------------------------------------------------------------------

    def count(self) -> dict[str, int]:
        """How many data ids the query matches for each task (an upper bound on its quanta).

        One ``COUNT`` query per task; nothing is built.
        """
        start = time.perf_counter()
        for plan in self.plans.values():
            if plan.count is None:
                plan.count = pipeline_sql.count_distinct(
                    self.registry, plan.qdims, plan.tdims, where=self.where, bind=self.bind,
                    datasets=plan.external, collections=self.input_collections)
        self.timings["count"] = time.perf_counter() - start
        return {label: int(p.count or 0) for label, p in self.plans.items()}

    def _check_size(self, force: bool) -> None:
        if force:  # the counts would only be compared with the limit: at 10^6 data ids that is seconds of SQL
            return
        counts = self.count()
        total = sum(counts.values())
        if total > self.max_quanta and not force:
            per_task = ", ".join(f"{k}: {v}" for k, v in counts.items())
            raise GraphError(f"The query matches {total} data ids ({per_task}), more than the limit of "
                             f"{self.max_quanta}; narrow it with a where expression, or force the build")

    # -- building ----------------------------------------------------------------------

    def build(self, *, force: bool = False) -> QuantumGraph:
        """Build the graph in memory.

        For graphs too large to hold (10^6 quanta), `write` streams the same quanta to
        the graph file instead.

        Raises
        ------
        GraphError
            The query matches more data ids than ``max_quanta`` (unless ``force``); the
            graph is empty (the message says which constraint emptied it); a prerequisite
            is missing; outputs already exist in the output run.
        """
        self._check_size(force)
        start = time.perf_counter()
        with paused_gc():
            header = self._header()
            dts, run = self.dataset_types, self.output_run
            # The quanta are made as the lines of the file would hold them: one meaning
            # for a built graph and a streamed one, and a graph read back is the same.
            refs: dict[Any, DatasetRef] = {}  # one ref per dataset, shared by its producer and readers
            quanta = [Quantum.from_dict(record, dts, run=run, refs=refs) for _label, record in self._records()]
            if not quanta:
                raise self._empty_error()
            header["skipped"] = self._skipped()
        self.timings["build"] = time.perf_counter() - start
        return QuantumGraph(header, quanta)

    def write(self, path: str | Path, *, force: bool = False) -> dict[str, Any]:
        """Build the graph straight into its file, one quantum at a time, and return its header.

        No quantum is held once written: memory is that of the indexes the build needs
        (datasets of the inputs, outputs that later tasks read) and of one index entry
        per quantum, so graphs of 10^6 quanta build in bounded memory. The file is the
        one `QuantumGraph.write` gives (read it with `QuantumGraph.read`,
        `QuantumGraph.read_quantum` or `QuantumGraph.iter_quanta`), written under a
        temporary name and renamed at the end: a failed or killed build leaves nothing
        under ``path`` (an earlier file there is kept).

        Raises
        ------
        GraphError
            As `build`.

        Examples
        --------
        >>> header = builder.write("graph.qgraph")  # doctest: +SKIP
        >>> header["counts"]                        # doctest: +SKIP
        {'process_ccd': 16, 'make_warp': 8}
        """
        self._check_size(force)
        start = time.perf_counter()
        with paused_gc(), GraphWriter(path, self._header(), self._order) as writer:
            for label, record in self._records():
                writer.add(label, record["id"], dumps_line(record))
            if not writer.written:
                raise self._empty_error()
            header = writer.finish({"skipped": self._skipped()})
        self.timings["build"] = time.perf_counter() - start
        return header

    def _skipped(self) -> dict[str, int]:
        return {label: p.skipped for label, p in self.plans.items() if p.skipped}

    def _empty_error(self) -> GraphError:
        reasons = [explain_empty(self.registry, p, where=self.where, bind=self.bind,
                                 input_collections=self.input_collections, skip_existing_in=self.skip_existing_in)
                   for p in self.plans.values()]
        return GraphError("The graph is empty: " + "; ".join(reasons))

    def _records(self) -> Iterator[tuple[str, dict[str, Any]]]:
        """Every quantum as the plain data of its file line, task by task in dependency order.

        Ids are `uuid.UUID` objects, not yet text: the line's serialiser writes them as
        text, and `Quantum.from_dict` takes them without parsing.
        """
        self.quanta_made = 0
        # Outputs are kept (compactly) only while a later task still reads them.
        last_reader: dict[str, int] = {}
        for i, label in enumerate(self._order):
            for conn in self.pipeline.tasks[label].inputs.values():
                last_reader[conn.dataset_type] = i
        self._reads_later = last_reader
        self._produced: dict[str, dict[tuple[Any, ...], Entry]] = {}
        for i, label in enumerate(self._order):
            t0 = time.perf_counter()
            self._task_index = i
            for record in self._task_records(self.plans[label]):
                self.quanta_made += 1
                yield label, record
            for name in [n for n in self._produced if last_reader.get(n, -1) <= i]:
                del self._produced[name]
            self.timings[f"task:{label}"] = time.perf_counter() - t0

    def _index(self, dataset_type: str, collections: Sequence[str], *, narrow: bool = False,
               ) -> dict[tuple[Any, ...], Entry]:
        """Existing datasets by data id values; ``narrow``: only those the where expression allows.

        Entries are compact (id and run, no ref object): at 10^6 inputs a ref each
        would be most of a build's memory.
        """
        try:
            dt = self.registry.get_dataset_type(dataset_type)
        except DatasetTypeError:
            return {}
        if not collections:
            return {}
        where = None
        if narrow and self.where:
            # Pass the where expression down when the dataset type's own dimensions can answer it,
            # so a narrow query over a large repository does not load every dataset of the type.
            dims, implied = set(dt.dimensions), set(self.universe.implied_by(dt.dimensions))
            names = identifiers(parse_where(self.where))
            if all((n.split(".", 1)[0] in dims) if "." in n else (n in dims or n in implied) for n in names):
                where = self.where
        key_of = tuple_getter(dt.dimensions)
        return {key_of(ref.data_id): (ref.id, ref.run, None, None)
                for ref in query_datasets(self.registry, dataset_type, collections, where=where,
                                          bind=self.bind if where else None)}

    def _task_records(self, plan: Plan) -> Iterator[dict[str, Any]]:
        task, universe, run = plan.task, self.universe, self.output_run
        t0 = time.perf_counter()
        dims, implied, rows = pipeline_sql.data_id_rows(
            self.registry, plan.qdims, where=self.where, bind=self.bind, datasets=plan.external,
            collections=self.input_collections)
        pos = {name: i for i, name in enumerate((*dims, *implied))}
        tdims = plan.tdims
        t_key = tuple_getter([pos[d] for d in tdims])
        t_implied = [(n, pos[n]) for n in universe.implied_by(tdims) if n in pos]

        # Inputs whose dimensions the task's fix (one per quantum) are looked up once per quantum;
        # the others (multiple=True) are gathered row by row.
        fixed, gathered = [], []
        for name, conn in task.inputs.items():
            dt = self.dataset_types[conn.dataset_type]
            source = self._produced.get(dt.name)
            if source is None:
                source = self._index(dt.name, self.input_collections, narrow=True)
            key = tuple_getter([pos[d] for d in dt.dimensions])
            if conn.multiple:
                gathered.append((name, dt.name, conn.min_count, key, source))
            else:
                fixed.append((name, dt.name, key, source))
        multi_outputs = [tuple_getter([pos[d] for d in self.dataset_types[c.dataset_type].dimensions])
                         for c in task.outputs.values() if c.multiple]
        self.timings[f"inputs:{task.label}"] = time.perf_counter() - t0

        outputs = []
        for name, out in task.outputs.items():
            dt = self.dataset_types[out.dataset_type]
            outputs.append((name, dt, out.multiple, tuple_getter([pos[d] for d in dt.dimensions]),
                            [n for n in universe.implied_by(dt.dimensions) if n in pos]))
        log_dt = self.dataset_types[task.log_dataset_type]
        paths = PathMaker(self.butler)
        skip = {dt.name: self._index(dt.name, self.skip_existing_in) for _, dt, *_ in outputs} \
            if self.skip_existing_in else {}
        existing = {dt.name: self._index(dt.name, [run]) for dt in [*(o[1] for o in outputs), log_dt]} \
            if self._run_exists else {}
        produced = {dt.name: self._produced.setdefault(dt.name, {}) for _, dt, *_ in outputs
                    if self._reads_later.get(dt.name, -1) > self._task_index}
        order = list(task.connections)
        conflicts: list[str] = []
        dropped = plan.dropped
        prerequisites, fetch_times = self._prerequisite_lookup(plan)
        groups = self._groups(plan, rows, dims, t_key, gathered, multi_outputs)
        if fetch_times is not None:
            groups = chunked(groups, fetch_times)
        for tkey, group in groups:
            row = group[0]
            in_refs: dict[str, list[dict[str, Any]]] = {}
            upstream: set[uuid.UUID] = set()
            complete = True
            for name, type_name, key, source in fixed:
                ikey = key(row)
                entry = source.get(ikey)
                if entry is None:
                    dropped[name] = dropped.get(name, 0) + 1
                    complete = False
                    break
                in_refs[name] = [ref_record(type_name, ikey, entry, run)]
                if entry[3] is not None:
                    upstream.add(entry[3])
            if not complete:
                continue
            for j, (name, type_name, min_count, _key, _source) in enumerate(gathered, 1):
                found = group[j]
                if len(found) < min_count:
                    dropped[name] = dropped.get(name, 0) + 1
                    complete = False
                    break
                refs = in_refs[name] = []
                for ikey in sorted(found):
                    entry = found[ikey]
                    refs.append(ref_record(type_name, ikey, entry, run))
                    if entry[3] is not None:
                        upstream.add(entry[3])
            if not complete:
                continue
            q_values = dict(zip(tdims, tkey, strict=True))
            q_implied = {n: row[i] for n, i in t_implied}
            data_id = DataId(q_values, implied=q_implied)
            # Outputs' data ids first, to know whether the quantum can be skipped. A single
            # output has the task's dimensions: it shares the quantum's data id.
            planned: list[tuple[str, DatasetType, tuple[Any, ...], DataId]] = []
            j = 1 + len(gathered)
            for name, dt, multiple, key, out_implied in outputs:
                if multiple:
                    for okey, orow in sorted(group[j].items()):
                        planned.append((name, dt, okey, DataId(dict(zip(dt.dimensions, okey, strict=True)),
                                                               implied={n: orow[pos[n]] for n in out_implied})))
                    j += 1
                else:
                    planned.append((name, dt, key(row), data_id))
            if skip and all(okey in skip[dt.name] for _, dt, okey, _ in planned):
                for _, dt, okey, _ in planned:
                    if dt.name in produced:
                        produced[dt.name][okey] = skip[dt.name][okey]
                plan.skipped += 1
                continue
            for name, lookup in prerequisites.items():
                in_refs[name] = [ref_to_dict(lookup(tkey, data_id), run)]
            qid = new_id()
            out_refs: dict[str, list[dict[str, Any]]] = {name: [] for name, *_ in outputs}
            for name, dt, okey, odi in planned:
                if existing and okey in existing[dt.name]:
                    conflicts.append(f"{dt.name} {{{odi}}}")
                oid, path = paths.new(dt, odi, run)
                out_refs[name].append({"id": oid, "type": dt.name, "data_id": list(okey), "path": path})
                if dt.name in produced:
                    produced[dt.name][okey] = (oid, None, path, qid)
            if existing and tkey in existing[log_dt.name]:
                conflicts.append(f"{log_dt.name} {{{data_id}}}")
            if conflicts:
                continue  # reported once the task's data ids are all seen
            log_id, log_path = paths.new(log_dt, data_id, run)
            yield {"id": qid, "task": task.label, "data_id": q_values, "implied": q_implied,
                   "inputs": {k: in_refs[k] for k in order if k in in_refs}, "outputs": out_refs,
                   "log": {"id": log_id, "type": log_dt.name, "data_id": list(tkey), "path": log_path},
                   "upstream": sorted(upstream)}
        self.timings[f"query:{task.label}"] = time.perf_counter() - t0
        if conflicts:
            raise GraphError(f"Output run {run!r} already holds {len(conflicts)} dataset(s) task {task.label!r} "
                             f"would write, e.g. {conflicts[0]}; build with skip_existing_in=[{run!r}] "
                             "(--skip-existing-in) to do only what is missing, or choose another run")

    def _groups(self, plan: Plan, rows: Iterator[tuple[Any, ...]], dims: Sequence[str],
                t_key: Callable[[Any], tuple[Any, ...]], gathered: list[Any], multi_outputs: list[Any],
                ) -> Iterator[tuple[tuple[Any, ...], list[Any]]]:
        """Rows grouped by the task's data id: ``(key, [first row, gathered inputs..., multiple outputs...])``.

        Rows come sorted by ``dims``: when the task's dimensions lead them, a task's rows
        are consecutive and each group is given as soon as it is complete (a build then
        holds one group, not one per quantum); otherwise groups are gathered first.
        Either way, in the order of their first row.
        """
        n_gathered = len(gathered)
        simple = not gathered and not multi_outputs

        def new_group(row: tuple[Any, ...]) -> list[Any]:
            return [row, *({} for _ in gathered), *({} for _ in multi_outputs)]

        def add(group: list[Any], row: tuple[Any, ...]) -> None:
            for j, (_name, _type, _n, key, source) in enumerate(gathered, 1):
                ikey = key(row)
                found = group[j]
                if ikey not in found:
                    entry = source.get(ikey)
                    if entry is not None:
                        found[ikey] = entry
            for j, key in enumerate(multi_outputs, 1 + n_gathered):
                group[j].setdefault(key(row), row)

        n_rows = 0
        if tuple(dims[:len(plan.tdims)]) == tuple(plan.tdims):
            current: tuple[Any, ...] | None = None
            group: list[Any] | None = None
            for row in rows:
                n_rows += 1
                tkey = t_key(row)
                if tkey != current:
                    if group is not None:
                        yield current, group  # type: ignore[misc]
                    current, group = tkey, ([row] if simple else new_group(row))
                if not simple:
                    add(group, row)  # type: ignore[arg-type]
            if group is not None:
                yield current, group  # type: ignore[misc]
        else:
            table: dict[tuple[Any, ...], list[Any]] = {}
            for row in rows:
                n_rows += 1
                tkey = t_key(row)
                found_group = table.get(tkey)
                if found_group is None:
                    found_group = table[tkey] = [row] if simple else new_group(row)
                if not simple:
                    add(found_group, row)
            yield from table.items()
        plan.rows = n_rows

    def _prerequisite_lookup(self, plan: Plan,
                             ) -> tuple[dict[str, Any], Callable[[Sequence[tuple[Any, ...]]], None] | None]:
        """Finders of each prerequisite, and the function that reads observation times for some quanta.

        Times are read for a chunk of quanta at a time (one query each), so a streamed
        build needs no list of every quantum first.
        """
        task = plan.task
        if not task.prerequisites:
            return {}, None
        # The observation time of a quantum: timespan_begin of its visit or exposure.
        timed = [d for d in plan.tdims if "timespan_begin" in self.universe.elements[d].metadata]
        times: dict[tuple[Any, ...], datetime.datetime | None] = {}
        time_key: list[int] = []
        element = timed[-1] if timed else None
        if element is not None:
            pk = self.universe.elements[element].primary_key
            time_key = [plan.tdims.index(k) for k in pk]

        def fetch_times(tkeys: Sequence[tuple[Any, ...]]) -> None:
            if element is None:
                return
            keys = {tuple(tkey[i] for i in time_key) for tkey in tkeys} - times.keys()
            if keys:
                records = pipeline_sql.dimension_records(self.registry, element, keys)
                times.update({k: r.get("timespan_begin") for k, r in records.items()})

        lookups = {}
        for name, conn in task.prerequisites.items():
            lookups[name] = self._calibration_finder(task, name, conn, times, time_key)
        return lookups, fetch_times

    def _calibration_finder(self, task: Task, name: str, conn: PrerequisiteInput,
                            times: Mapping[tuple[Any, ...], Any], time_key: list[int]) -> Any:
        dt = self.dataset_types[conn.dataset_type]
        candidates = pipeline_sql.calibration_candidates(self.registry, dt.name, self.input_collections)
        colls = ", ".join(self.input_collections)

        def find(tkey: tuple[Any, ...], full: Mapping[str, Any]) -> DatasetRef:
            key = tuple(full[d] for d in dt.dimensions)
            when = times.get(tuple(tkey[i] for i in time_key)) if time_key else None
            items = candidates.get(key, [])
            for rank in dict.fromkeys(r for r, *_ in items):
                at_rank = [it for it in items if it[0] == rank]
                if at_rank[0][1] is None:  # RUN or TAGGED: valid at any time
                    return at_rank[0][3]
                if when is None:
                    if len(at_rank) == 1:
                        return at_rank[0][3]
                    raise GraphError(f"Task {task.label!r} prerequisite {name!r}: {len(at_rank)} {dt.name} "
                                     f"datasets for {dict(zip(dt.dimensions, key, strict=True))} are certified "
                                     "and the quantum has no observation time to choose one")
                for _rank, begin, end, ref in at_rank:
                    if begin <= when < end:
                        return ref
            at = f" valid at {when}" if when is not None else ""
            raise GraphError(f"Task {task.label!r} prerequisite {name!r}: no {dt.name} for "
                             f"{dict(zip(dt.dimensions, key, strict=True))}{at} in collections [{colls}]")

        return find

    def _header(self) -> dict[str, Any]:
        """The header known before any quantum is made (``skipped`` and ``counts`` come at the end)."""
        self._run_exists = any(c["name"] == self.output_run for c in self.registry.collections())
        paths = PathMaker(self.butler)
        init_outputs = {}
        for task in self.pipeline.tasks.values():
            dt = self.dataset_types[task.config_dataset_type]
            existing = None
            if self._run_exists:
                # The run may exist before this pipeline's config types are registered (a batch submit creates it).
                with contextlib.suppress(DatasetTypeError):
                    existing = pipeline_sql.dataset_refs_by_key(self.registry, dt.name, [self.output_run]).get(())
            ref = existing or paths.ref(dt, DataId({}), self.output_run)
            init_outputs[task.label] = ref_to_dict(ref)
        return {
            "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "skybutler_version": __version__,
            "run": self.output_run, "input_collections": self.input_collections,
            "where": self.where, "bind": self.bind, "skip_existing_in": self.skip_existing_in,
            "template_variables": self.butler.template_variables,
            "pipeline": self.pipeline.to_mapping(), "task_order": list(self._order),
            "dataset_types": {name: dataset_type_to_dict(dt) for name, dt in self.dataset_types.items()},
            "init_outputs": init_outputs,
        }

    # -- an empty graph ----------------------------------------------------------------


def build_quantum_graph(butler: Butler, pipeline: Pipeline, *, input_collections: Sequence[str], output_run: str,
                        where: str | None = None, bind: Mapping[str, Any] | None = None,
                        skip_existing_in: Sequence[str] = (), max_quanta: int | None = None,
                        force: bool = False) -> QuantumGraph:
    """Build a quantum graph in one call (see `QuantumGraphBuilder` for the parameters)."""
    return QuantumGraphBuilder(butler, pipeline, input_collections=input_collections, output_run=output_run,
                               where=where, bind=bind, skip_existing_in=skip_existing_in,
                               max_quanta=max_quanta).build(force=force)
