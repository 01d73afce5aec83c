"""Query results: refs and data ids streamed as objects, or Arrow tables built column-wise.

`DatasetQueryResults` and `DataIdQueryResults` are what `query_datasets` and
`query_data_ids` return. Iterating one streams refs (data ids) exactly as the plain
generators did: lazily (nothing runs and no error is raised before the first item is
asked for), once. `to_arrow` runs the same SQL statement again, whatever has been
iterated, and builds a `pyarrow.Table` without one Python object per row.

How a table is built. The SQL is the statement SQLAlchemy compiles for the iterator
(search path, find-first window, ``where``, schema namespace). With the ``arrow-db``
extra (``adbc-driver-sqlite``) and a SQLite file read outside a write transaction,
ADBC reads the result into Arrow arrays in C (`skybutler.registry._arrow_adbc`): no
Python object per row, several times faster than the ``sqlite3`` module makes its row
tuples. Otherwise (in-memory SQLite, inside a transaction, PostgreSQL, a calibration
lookup that must check for ambiguity, a query that must drop duplicates) the rows come
from the DB-API cursor as plain tuples in chunks; each chunk is transposed with
``zip(*rows)`` and each column becomes one Arrow array (ids by one ``bytes.fromhex``
over the joined hex text, run ids mapped to names with numpy). Figures and the
comparison of both ways: benchmarks/README.md.

Columns of a dataset table: ``id`` (the ``arrow.uuid`` extension type over
``fixed_size_binary(16)``: 16 bytes per id, ``to_pylist`` gives `uuid.UUID`),
``dataset_type`` and ``run`` (strings), one column per dimension of the dataset type
(int64 or string, by the dimension's key type) and, with ``files=True``, ``path`` (the
file's name within the datastore) and ``size`` (bytes; both null for a dataset without a
file record). A data id table has one column per dimension, then the implied
dimensions when the query asked for them. An empty result has the same schema.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from .._gc import paused_gc
from ..errors import MissingDependencyError
from ..model import DataId, DatasetRef, DatasetType
from ._arrow_adbc import fetch_sqlite_table, ids_from_hex, usable

if TYPE_CHECKING:
    import pandas
    import pyarrow

    from ._registry import Registry

__all__ = ["DataIdQueryResults", "DatasetQueryPlan", "DatasetQueryResults", "stream_refs"]

_CHUNK = 2000
"""Rows fetched at once: bounds the Python tuples held while a table is built."""

_PROBE = 1000
"""Rows below which a table is built from the DB-API's tuples rather than read again by ADBC."""

_ARROW_CHUNK = 65536
"""Rows per Arrow record batch (fewer, larger arrays are cheaper to build and to use)."""


@dataclass
class DatasetQueryPlan:
    """The SQL of one dataset query and what its rows mean.

    Rows are ``(id, dataset_type_id, run_id, data_id_key, *dimensions, rank, ...)``.
    ``statement`` is None when no collection can hold the type (an empty result).
    ``runs`` maps run ids to names (filled as more are met). ``dedupe``: several
    collections may return one dataset, keep its first row. ``check``: the position of a
    count that must be 1, else ``ambiguity(row)`` is raised.
    """

    dataset_type: DatasetType
    statement: sa.Select | None
    runs: dict[int, str]
    dedupe: bool = False
    check: int | None = None
    ambiguity: Callable[[Any], Exception] | None = None


def _chunks(conn: sa.Connection, stmt: sa.Select, *, stream: bool) -> Iterator[Sequence[Any]]:
    """The rows of ``stmt``, a chunk at a time.

    SQLAlchemy compiles and executes the statement (bound parameters, schema
    translation). On SQLite, and on PostgreSQL when not streaming, its Row objects are
    skipped and the DB-API cursor read directly: the columns read here need no result
    processing (SQLite ids are selected as text, dimension keys are ints and strings),
    and a Row per row costs as much as the fetch. SQLite's cursor steps through the
    result as it is read, so no option is set there: ``yield_per`` would make
    SQLAlchemy read ahead of us. ``stream`` on PostgreSQL takes a server-side cursor
    (memory bounded by the chunk, not the result), read through SQLAlchemy, which
    buffers its first row.
    """
    if stream and conn.dialect.name != "sqlite":
        streamed = conn.execution_options(yield_per=_CHUNK).execute(stmt)
        try:
            yield from streamed.partitions()
        finally:
            streamed.close()
        return
    result = conn.execute(stmt)
    try:
        cursor = result.cursor
        while True:
            # Every row is a new tuple the cyclic collector would walk (with every live
            # object of the process) each few hundred rows; none of them can be a cycle.
            with paused_gc():
                rows = cursor.fetchmany(_CHUNK)
            if not rows:
                break
            yield rows
    finally:
        result.close()


_new = object.__new__
_set = object.__setattr__
_UNKNOWN = uuid.SafeUUID.unknown


def _uuid_from_hex(text: str) -> uuid.UUID:
    """``uuid.UUID(text)`` for the 32 hex digits SQLite stores, without its parsing and checks.

    Set as `uuid.UUID.__setstate__` sets them (the class refuses plain assignment): a
    third of the constructor's cost, paid once per ref of every query on SQLite.
    """
    value = _new(uuid.UUID)
    _set(value, "int", int(text, 16))
    _set(value, "is_safe", _UNKNOWN)
    return value


def _probe(conn: sa.Connection, stmt: sa.Select) -> Sequence[Any]:
    """The first `_PROBE` rows of ``stmt`` (all of them when fewer), through the DB-API cursor."""
    result = conn.execute(stmt)
    try:
        return result.cursor.fetchmany(_PROBE)
    finally:
        result.close()


def stream_refs(registry: Registry, conn: sa.Connection, plan: DatasetQueryPlan) -> Iterator[DatasetRef]:
    """Refs of one dataset type from the plan's rows (the hot path of `query_datasets`).

    Positional rows and one shared `DatasetType` keep this to a few microseconds per ref.
    """
    if plan.statement is None:
        return
    dt, runs, check, ambiguity = plan.dataset_type, plan.runs, plan.check, plan.ambiguity
    dims = dt.dimensions
    end = 4 + len(dims)
    seen: set[Any] = set()
    for rows in _chunks(conn, plan.statement, stream=True):
        missing = {row[2] for row in rows} - runs.keys()
        if missing:
            registry.collection_records.run_names(conn, missing, runs)
        if check is not None and ambiguity is not None:
            for row in rows:
                if row[check] > 1:
                    raise ambiguity(row)
        # Each ref is a few small objects; letting the cyclic collector run every few
        # hundred of them (it cannot free any: they are all referenced) costs more than
        # building them, so a batch is built with it paused and handed out afterwards.
        with paused_gc():
            batch = []
            for row in rows:
                dataset_id = row[0]
                if plan.dedupe:
                    if dataset_id in seen:
                        continue
                    seen.add(dataset_id)
                if type(dataset_id) is str:
                    dataset_id = _uuid_from_hex(dataset_id)
                batch.append(DatasetRef(dataset_id, dt, DataId(dict(zip(dims, row[4:end], strict=True))),
                                        runs[row[2]]))
        yield from batch


def _pyarrow() -> Any:
    try:
        import pyarrow
    except ImportError:  # a dependency of skybutler, but an environment may lack it
        raise MissingDependencyError("Arrow query results need pyarrow: pip install pyarrow") from None
    return pyarrow


def _to_pandas(table: pyarrow.Table) -> pandas.DataFrame:
    try:
        import pandas  # noqa: F401  (to_pandas imports it; this gives the clear error)
    except ImportError:
        raise MissingDependencyError("to_pandas() needs pandas, which is not installed: pip install pandas "
                                     "(or use to_arrow(), which needs only pyarrow)") from None
    return table.to_pandas()


def _key_types(registry: Registry, names: Sequence[str]) -> list[Any]:
    pa = _pyarrow()
    universe = registry.universe
    return [pa.int64() if universe.element(n).key_type == "int" else pa.string() for n in names]


def _ids(values: Sequence[Any]) -> pyarrow.Array:
    """Dataset ids (hex text from SQLite, `uuid.UUID` from PostgreSQL) as one ``arrow.uuid`` array."""
    if values and type(values[0]) is str:
        raw = bytes.fromhex("".join(values).replace("-", ""))
    else:
        raw = b"".join([v.bytes for v in values])
    return _ids_from_bytes(raw, len(values))


def _ids_from_bytes(raw: bytes, n: int) -> pyarrow.Array:
    pa = _pyarrow()
    storage = pa.FixedSizeBinaryArray.from_buffers(pa.binary(16), n, [None, pa.py_buffer(raw)])
    return pa.ExtensionArray.from_storage(pa.uuid(), storage)


def _dataset_schema(registry: Registry, dt: DatasetType, files: bool) -> pyarrow.Schema:
    pa = _pyarrow()
    fields = [pa.field("id", pa.uuid(), nullable=False), pa.field("dataset_type", pa.string(), nullable=False),
              pa.field("run", pa.string(), nullable=False)]
    fields += [pa.field(n, t, nullable=False) for n, t in zip(dt.dimensions, _key_types(registry, dt.dimensions),
                                                            strict=True)]
    if files:
        fields += [pa.field("path", pa.string()), pa.field("size", pa.int64())]
    return pa.schema(fields)


def _batches(chunks: Iterator[Sequence[Any]]) -> Iterator[list[Any]]:
    """Chunks of fetched rows regrouped into larger ones (one Arrow batch each)."""
    held: list[Any] = []
    for rows in chunks:
        held.extend(rows)
        if len(held) >= _ARROW_CHUNK:
            yield held
            held = []
    if held:
        yield held


def _dataset_batch(registry: Registry, conn: sa.Connection, plan: DatasetQueryPlan, schema: pyarrow.Schema,
                   ids: pyarrow.Array, run_ids: Any, rest: list[pyarrow.Array]) -> pyarrow.RecordBatch:
    """One batch of a dataset table: ids, the type's name, run names (from ``run_ids``), then ``rest``."""
    import numpy as np

    pa = _pyarrow()
    unique_runs, where = np.unique(run_ids, return_inverse=True)
    missing = set(unique_runs.tolist()) - plan.runs.keys()
    if missing:
        registry.collection_records.run_names(conn, missing, plan.runs)
    names = pa.array([plan.runs[int(r)] for r in unique_runs], pa.string())
    arrays = [ids, pa.repeat(pa.scalar(plan.dataset_type.name, pa.string()), len(ids)),
              names.take(pa.array(where.astype(np.int32)))]
    arrays += [a if a.type == f.type else a.cast(f.type) for a, f in zip(rest, list(schema)[3:], strict=True)]
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


def datasets_table(registry: Registry, conn: sa.Connection, plan: DatasetQueryPlan, *,
                   files: bool = False) -> pyarrow.Table:
    """The plan's datasets as an Arrow table (see the module docstring for its columns)."""
    import numpy as np

    pa = _pyarrow()
    dt = plan.dataset_type
    schema = _dataset_schema(registry, dt, files)
    if plan.statement is None:
        return schema.empty_table()
    stmt = plan.statement
    n_dims = len(dt.dimensions)
    width = len(stmt.selected_columns)
    if files:
        # One file record per dataset (its primary key), or none: an outer join keeps the row.
        f = registry.tables.file
        inner = stmt.subquery()
        stmt = sa.select(inner, f.c.path, f.c.size).select_from(
            inner.outerjoin(f, f.c.dataset_id == inner.c.id))
    extra = [width, width + 1] if files else []
    chunks = _chunks(conn, stmt, stream=False)
    if plan.check is None and not plan.dedupe and usable(conn, registry.database.url):
        # The common case (no ambiguity to check, no duplicates to drop). A small result is
        # read as it is (ADBC's fixed cost, a connection and a statement compiled outside
        # SQLAlchemy's cache, is larger than the fetch); a larger one is read again by ADBC.
        probe = _probe(conn, stmt)
        if len(probe) < _PROBE:
            chunks = iter([probe] if probe else [])
        else:
            table = fetch_sqlite_table(conn, registry.database.url, stmt)
            raw = ids_from_hex(table.column(0)) if table is not None and table.num_rows else None
            if table is not None and raw is not None:
                ids = _ids_from_bytes(raw, table.num_rows)
                rest = [table.column(i).combine_chunks() for i in [*range(4, 4 + n_dims), *extra]]
                batch = _dataset_batch(registry, conn, plan, schema, ids, table.column(2).to_numpy(), rest)
                return pa.Table.from_batches([batch], schema=schema)
    seen: set[Any] = set()
    batches = []
    for rows in _batches(chunks):
        if plan.check is not None and plan.ambiguity is not None:
            counts = np.fromiter((r[plan.check] for r in rows), dtype=np.int64, count=len(rows))
            bad = np.flatnonzero(counts > 1)
            if bad.size:
                raise plan.ambiguity(rows[bad[0]])
        if plan.dedupe:
            kept = []
            for row in rows:
                if row[0] not in seen:
                    seen.add(row[0])
                    kept.append(row)
            rows = kept
            if not rows:
                continue
        columns = list(zip(*rows, strict=True))
        types = [schema.field(3 + i).type for i in range(n_dims)] + [pa.string(), pa.int64()][:len(extra)]
        rest = [pa.array(columns[i], t) for i, t in zip([*range(4, 4 + n_dims), *extra], types, strict=True)]
        batches.append(_dataset_batch(registry, conn, plan, schema, _ids(columns[0]),
                                      np.asarray(columns[2], dtype=np.int64), rest))
    if not batches:
        return schema.empty_table()
    return pa.Table.from_batches(batches, schema=schema)


class DatasetQueryResults(Iterator[DatasetRef]):
    """The datasets a `query_datasets` call finds: iterate for refs, or take a table.

    Iterating streams `DatasetRef` objects (lazily, once, as a generator would);
    `to_arrow` and `to_pandas` run the query again and give a table built column-wise,
    with the same find-first, collection and ``where`` semantics.

    Examples
    --------
    >>> refs = list(butler.query_datasets("calexp", where="visit = 903334"))  # doctest: +SKIP
    >>> table = butler.query_datasets("calexp", collections=["HSC/runs/a"]).to_arrow()  # doctest: +SKIP
    >>> table.column_names  # doctest: +SKIP
    ['id', 'dataset_type', 'run', 'instrument', 'visit', 'detector']
    """

    def __init__(self, registry: Registry, plan: Callable[[sa.Connection], DatasetQueryPlan]):
        self._registry = registry
        self._plan = plan
        self._refs: Iterator[DatasetRef] | None = None

    def _stream(self) -> Iterator[DatasetRef]:
        # One connection for the collection lookup and the query (on PostgreSQL each
        # checkout costs round trips).
        with self._registry.database.read() as conn:
            yield from stream_refs(self._registry, conn, self._plan(conn))

    def __iter__(self) -> DatasetQueryResults:
        return self

    def __next__(self) -> DatasetRef:
        if self._refs is None:
            self._refs = self._stream()
        return next(self._refs)

    def close(self) -> None:
        """Stop a partly iterated stream now (its connection is returned to the pool)."""
        if self._refs is not None and hasattr(self._refs, "close"):
            self._refs.close()

    def to_arrow(self, *, files: bool = False) -> pyarrow.Table:
        """The datasets as a `pyarrow.Table`, one row per dataset.

        Parameters
        ----------
        files : `bool`
            Add ``path`` (within the datastore) and ``size`` columns from the file records.

        Returns
        -------
        table : `pyarrow.Table`
            Columns ``id`` (``arrow.uuid``), ``dataset_type``, ``run``, one per
            dimension, then ``path`` and ``size`` when asked for.
        """
        # The rows of a chunk are live tuples until their columns are built: the cyclic
        # collector, which cannot free any of them, would walk them over and over.
        with self._registry.database.read() as conn, paused_gc():
            return datasets_table(self._registry, conn, self._plan(conn), files=files)

    def to_pandas(self, *, files: bool = False) -> pandas.DataFrame:
        """The table of `to_arrow` as a `pandas.DataFrame` (needs pandas installed)."""
        return _to_pandas(self.to_arrow(files=files))


class DataIdQueryResults(Iterator[DataId]):
    """The data ids a `query_data_ids` call finds: iterate for `DataId` objects, or take a table.

    ``statement`` gives the SELECT, its dimensions and its implied dimensions (built
    when first needed, so a bad ``where`` is raised where the old generator raised it).
    """

    def __init__(self, registry: Registry,
                 statement: Callable[[], tuple[sa.Select, tuple[str, ...], tuple[str, ...]]]):
        self._registry = registry
        self._statement = statement
        self._data_ids: Iterator[DataId] | None = None

    def _stream(self) -> Iterator[DataId]:
        stmt, dims, implied_names = self._statement()
        n = len(dims)
        with self._registry.database.read() as conn:
            for rows in _chunks(conn, stmt, stream=True):
                with paused_gc():
                    if implied_names:
                        batch = [DataId(dict(zip(dims, row[:n], strict=True)),
                                        implied=dict(zip(implied_names, row[n:], strict=True))) for row in rows]
                    else:
                        batch = [DataId(dict(zip(dims, row, strict=True))) for row in rows]
                yield from batch

    def __iter__(self) -> DataIdQueryResults:
        return self

    def __next__(self) -> DataId:
        if self._data_ids is None:
            self._data_ids = self._stream()
        return next(self._data_ids)

    def close(self) -> None:
        """Stop a partly iterated stream now (its connection is returned to the pool)."""
        if self._data_ids is not None and hasattr(self._data_ids, "close"):
            self._data_ids.close()

    def to_arrow(self) -> pyarrow.Table:
        """The data ids as a `pyarrow.Table`: one column per dimension, then the implied ones if asked for."""
        pa = _pyarrow()
        stmt, dims, implied_names = self._statement()
        names = [*dims, *implied_names]
        types = _key_types(self._registry, names)
        schema = pa.schema([pa.field(n, t, nullable=i >= len(dims))
                            for i, (n, t) in enumerate(zip(names, types, strict=True))])
        batches = []
        with self._registry.database.read() as conn, paused_gc():  # see DatasetQueryResults.to_arrow
            chunks = _chunks(conn, stmt, stream=False)
            if usable(conn, self._registry.database.url):  # as for datasets_table
                probe = _probe(conn, stmt)
                table = fetch_sqlite_table(conn, self._registry.database.url, stmt) if len(probe) >= _PROBE else None
                if table is not None and table.num_rows:
                    return pa.Table.from_arrays([c.cast(t) for c, t in zip(table.columns, types, strict=True)],
                                                schema=schema)
                if len(probe) < _PROBE:
                    chunks = iter([probe] if probe else [])
            for rows in _batches(chunks):
                columns = list(zip(*rows, strict=True))
                batches.append(pa.RecordBatch.from_arrays(
                    [pa.array(c, t) for c, t in zip(columns, types, strict=True)], schema=schema))
        return pa.Table.from_batches(batches, schema=schema) if batches else schema.empty_table()

    def to_pandas(self) -> pandas.DataFrame:
        """The table of `to_arrow` as a `pandas.DataFrame` (needs pandas installed)."""
        return _to_pandas(self.to_arrow())
