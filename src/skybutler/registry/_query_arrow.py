"""Arrow tables and record batches of query results, built column-wise.

Columns of a dataset table: ``id`` (the ``arrow.uuid`` extension type over
``fixed_size_binary(16)``: 16 bytes per id, ``to_pylist`` gives `uuid.UUID`),
``dataset_type`` and ``run`` (strings), one column per dimension of the dataset type
(int64 or string, by the dimension's key type) and, with ``files=True``, ``path`` (the
file's name within the datastore) and ``size`` (bytes; both null for a dataset without a
file record). A data id table has one column per dimension, then the implied
dimensions when the query asked for them. An empty result has the same schema.

How a batch is built. The statement is the one the iterator runs, cut to the columns
the table shows (`DatasetQueryPlan.slim`). A whole dataset table on SQLite is first read
as one row of concatenated columns (`aggregated_columns`: no Python object per value),
and from rows as below only when a value does not fit that (a NULL, a separator). SQLAlchemy executes it and the first rows
are read from the DB-API cursor (on PostgreSQL the statement with a ``LIMIT``
parameter, `first_rows`: only those rows cross the wire; ADBC reads it again with
the limit NULL).
A small result ends there: its tuples are transposed
with ``zip(*rows)`` and each column becomes one Arrow array (ids by one
``bytes.fromhex`` over the joined hex text, run ids mapped to names with numpy). A
larger one from PostgreSQL, with the ``arrow-db`` extra installed, is read again by ADBC
(`skybutler.registry._arrow_adbc`) straight into Arrow arrays: no Python object per row.
Otherwise (SQLite, whose ADBC driver brings a second copy of SQLite that must never open
the process's databases; inside a write transaction; a calibration lookup that must check
for ambiguity; a query that must drop duplicates) the DB-API's tuples are read a chunk at
a time, so memory stays bounded by a batch either way.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from itertools import chain
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from .._gc import paused_gc
from ..errors import MissingDependencyError
from ..model import DatasetType
from ._arrow_adbc import open_reader, reader_errors, usable
from ._database import unprepared

if TYPE_CHECKING:
    import pandas
    import pyarrow

    from ._query_results import DatasetQueryPlan
    from ._registry import Registry

__all__ = ["DEFAULT_BATCH_ROWS", "FirstRows", "data_id_batches", "dataset_batches", "first_rows", "table_of",
           "to_pandas"]

DEFAULT_BATCH_ROWS = 65536
"""Rows per Arrow record batch (fewer, larger arrays are cheaper to build and to use)."""

_FETCH = 2000
"""Rows fetched at once on the DB-API path: bounds the Python tuples held before a batch is built."""

_PROBE = 500
"""Rows up to which a table is built from the DB-API's tuples rather than read again by ADBC.

ADBC's fixed cost (a connection, a statement prepared outside SQLAlchemy's cache) is
about what the DB-API takes for a few hundred rows.
"""


def pyarrow_module() -> Any:
    try:
        import pyarrow
    except ImportError:  # a dependency of skybutler, but an environment may lack it
        raise MissingDependencyError("Arrow query results need pyarrow: pip install pyarrow") from None
    return pyarrow


def to_pandas(table: pyarrow.Table) -> pandas.DataFrame:
    try:
        import pandas  # noqa: F401  (to_pandas imports it; this gives the clear error)
    except ImportError:
        raise MissingDependencyError("to_pandas() needs pandas, which is not installed: pip install pandas "
                                     "(or use to_arrow(), which needs only pyarrow)") from None
    return table.to_pandas()


def table_of(schema_and_batches: tuple[pyarrow.Schema, Iterator[pyarrow.RecordBatch]]) -> pyarrow.Table:
    """All the batches as one table (the schema's empty table when there are none)."""
    pa = pyarrow_module()
    schema, batches = schema_and_batches
    return pa.Table.from_batches(list(batches), schema=schema)


def _key_types(registry: Registry, names: Sequence[str]) -> list[Any]:
    pa = pyarrow_module()
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
    pa = pyarrow_module()
    storage = pa.FixedSizeBinaryArray.from_buffers(pa.binary(16), n, [None, pa.py_buffer(raw)])
    return pa.ExtensionArray.from_storage(pa.uuid(), storage)


def _arrow_ids(column: Any) -> pyarrow.Array:
    """An id column read by ADBC (PostgreSQL: ``arrow.uuid``) as ``arrow.uuid``."""
    pa = pyarrow_module()
    if column.type == pa.uuid():
        return column
    if pa.types.is_fixed_size_binary(column.type) and column.type.byte_width == 16:
        return pa.ExtensionArray.from_storage(pa.uuid(), column)
    return _ids(column.to_pylist())


def _dataset_schema(registry: Registry, dt: DatasetType, files: bool) -> pyarrow.Schema:
    pa = pyarrow_module()
    fields = [pa.field("id", pa.uuid(), nullable=False), pa.field("dataset_type", pa.string(), nullable=False),
              pa.field("run", pa.string(), nullable=False)]
    fields += [pa.field(n, t, nullable=False) for n, t in zip(dt.dimensions, _key_types(registry, dt.dimensions),
                                                            strict=True)]
    if files:
        fields += [pa.field("path", pa.string()), pa.field("size", pa.int64())]
    return pa.schema(fields)


def _rechunk(batches: Iterator[Any], size: int) -> Iterator[list[Any]]:
    """ADBC's record batches regrouped into lists of columns of ``size`` rows (the last one shorter)."""
    pa = pyarrow_module()
    held: list[Any] = []
    rows = 0
    for batch in batches:
        if batch.num_rows:
            held.append(batch)
            rows += batch.num_rows
        while rows >= size:
            table = pa.Table.from_batches(held)
            yield [c.combine_chunks() for c in table.slice(0, size).columns]
            rest = table.slice(size)
            held, rows = rest.to_batches(), rest.num_rows
    if rows:
        yield [c.combine_chunks() for c in pa.Table.from_batches(held).columns]


def _regroup(chunks: Iterator[Sequence[Any]], size: int) -> Iterator[list[Any]]:
    """Chunks of DB-API rows regrouped into ``size`` rows."""
    held: list[Any] = []
    for rows in chunks:
        held.extend(rows)
        while len(held) >= size:
            yield held[:size]
            held = held[size:]
    if held:
        yield held


def _columns(registry: Registry, conn: sa.Connection, stmt: sa.Select, *, size: int,
             adbc: bool) -> Iterator[tuple[bool, Any]]:
    """The rows of ``stmt`` a batch at a time: ``(True, Arrow columns)`` read by ADBC, or ``(False, row tuples)``.

    ADBC reads only from PostgreSQL (`usable`); elsewhere the DB-API's rows are read.
    """
    if adbc and usable(conn, registry.database.url):
        yield from _postgres_columns(registry, conn, stmt, size=size)
        return
    result = conn.execute(stmt)
    try:
        fetch = result.cursor.fetchmany
        with paused_gc():
            probe = fetch(_PROBE)
        yield from ((False, rows) for rows in _regroup(_fetched(probe, fetch), size))
    finally:
        result.close()


def _adbc_first(registry: Registry, conn: sa.Connection, sql: str, parameters: Any,
                size: int) -> Iterator[tuple[bool, Any]] | None:
    """ADBC's batches of ``sql``, once its first one is read; None if ADBC failed before handing any out."""
    try:
        reader = open_reader(conn, registry.database.url, sql, parameters, size)
        if reader is None:
            return None
        chunks = _rechunk(reader, size)
        first = next(chunks, None)
    except reader_errors():
        return None
    if first is None:
        return iter(())
    return chain([(True, first)], ((True, columns) for columns in chunks))


@dataclass
class FirstRows:
    """The first rows of a statement, read by one LIMITed statement (`first_rows`).

    ``more``: the statement has more rows than ``rows`` holds. ``sql`` and
    ``parameters`` run it again without a limit (``probe_rows`` set to None), as the
    driver was given it.
    """

    rows: Sequence[Any]
    more: bool
    sql: str
    parameters: dict[str, Any]


def first_rows(conn: sa.Connection, stmt: sa.Select, limit: int) -> FirstRows:
    """At most ``limit`` rows of ``stmt`` from one plain statement (PostgreSQL), and whether there are more.

    A client-side cursor receives a whole result (so reading only its first rows would
    cost the full transfer) and a server-side one costs round trips (DECLARE, Describe,
    a FETCH per chunk, CLOSE, and the transaction it needs): the statement gets a
    ``LIMIT`` one row past ``limit``, a bound parameter so that one prepared statement
    serves every size, and a small result is read whole in one round trip.
    """
    with unprepared(conn):  # planned for its values, as `Database.rows_raw` does
        result = conn.execute(stmt.limit(sa.bindparam("probe_rows", limit + 1)))
    try:
        with paused_gc():
            rows = result.cursor.fetchall()
        context = result.context
        parameters = dict(context.parameters[0]) if context.parameters else {}
    finally:
        result.close()
    parameters["probe_rows"] = None
    more = len(rows) > limit
    return FirstRows(rows[:limit] if more else rows, more, context.statement, parameters)


def _postgres_columns(registry: Registry, conn: sa.Connection, stmt: sa.Select, *,
                      size: int) -> Iterator[tuple[bool, Any]]:
    """As `_columns` on PostgreSQL: the first rows by a LIMIT (`first_rows`), the whole result by ADBC if there are more.

    ADBC reads the statement again with the limit NULL (none).
    """
    first = first_rows(conn, stmt, _PROBE)
    if not first.more:
        if first.rows:
            yield False, first.rows
        return
    batches = _adbc_first(registry, conn, first.sql, first.parameters, size)
    if batches is not None:
        yield from batches
        return
    result = conn.execute(stmt)
    try:
        yield from ((False, rows) for rows in _regroup(_fetched([], result.cursor.fetchmany, start=True), size))
    finally:
        result.close()


def _fetched(probe: Sequence[Any], fetch: Callable[[int], Sequence[Any]], *,
             start: bool = False) -> Iterator[Sequence[Any]]:
    """The probe's rows, then the rest a chunk at a time (``start``: no probe was read)."""
    rows = probe
    if start:
        with paused_gc():
            rows = fetch(_FETCH)
    while rows:
        yield rows
        # Every row is a new tuple the cyclic collector would walk (with every live
        # object of the process) each few hundred rows; none of them can be a cycle.
        with paused_gc():
            rows = fetch(_FETCH)


def _dataset_batch(registry: Registry, conn: sa.Connection, plan: DatasetQueryPlan, schema: pyarrow.Schema,
                   ids: pyarrow.Array, run_ids: Any, rest: list[pyarrow.Array]) -> pyarrow.RecordBatch:
    """One batch of a dataset table: ids, the type's name, run names (from ``run_ids``, None: the plan's run), then ``rest``."""
    import numpy as np

    pa = pyarrow_module()
    if run_ids is None:  # every row is in the plan's one run
        assert plan.run is not None
        runs = pa.repeat(pa.scalar(plan.runs[plan.run], pa.string()), len(ids))
    else:
        unique_runs, where = np.unique(run_ids, return_inverse=True)
        missing = set(unique_runs.tolist()) - plan.runs.keys()
        if missing:
            registry.collection_records.run_names(conn, missing, plan.runs)
        names = pa.array([plan.runs[int(r)] for r in unique_runs], pa.string())
        runs = names.take(pa.array(where.astype(np.int32)))
    arrays = [ids, pa.repeat(pa.scalar(plan.dataset_type.name, pa.string()), len(ids)), runs]
    arrays += [a if a.type == f.type else a.cast(f.type) for a, f in zip(rest, list(schema)[3:], strict=True)]
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


def dataset_batches(registry: Registry, conn: sa.Connection, plan: DatasetQueryPlan, *, files: bool = False,
                    size: int = DEFAULT_BATCH_ROWS, whole: bool = False,
                    ) -> tuple[pyarrow.Schema, Iterator[pyarrow.RecordBatch]]:
    """The plan's datasets as record batches of at most ``size`` rows, and their schema.

    ``whole``: the caller holds every batch at once (a table), so on SQLite the columns
    may be read whole (`aggregated_columns`) rather than a batch of rows at a time.
    """
    schema = _dataset_schema(registry, plan.dataset_type, files)
    if plan.statement is None:
        return schema, iter(())
    return schema, _dataset_batches(registry, conn, plan, schema, files, size, whole)


def _dataset_batches(registry: Registry, conn: sa.Connection, plan: DatasetQueryPlan, schema: pyarrow.Schema,
                     files: bool, size: int, whole: bool) -> Iterator[pyarrow.RecordBatch]:
    import numpy as np

    pa = pyarrow_module()
    stmt, id_at, run_at, dims_at = plan.slim(files=registry.tables.file if files else None)
    n_dims = len(plan.dataset_type.dimensions)
    rest_at = [*range(dims_at, dims_at + n_dims)]
    if files:
        width = len(stmt.selected_columns)
        rest_at += [width - 2, width - 1]
    types = [f.type for f in list(schema)[3:]]
    # Ambiguity checks and duplicates need the rows themselves.
    columns_will_do = plan.check is None and not plan.dedupe
    if whole and columns_will_do and not files and conn.dialect.name == "sqlite":
        kinds = {id_at: "id", **({run_at: "int"} if run_at is not None else {})}
        kinds.update((i, "int" if t == pa.int64() else "str") for i, t in zip(rest_at, types, strict=True))
        aggregated = aggregated_columns(conn, stmt, kinds)
        if aggregated is not None:
            n = len(aggregated[id_at]) // 16
            run_ids = None if run_at is None else aggregated[run_at]
            rest = [pa.array(aggregated[i], t) for i, t in zip(rest_at, types, strict=True)]
            for start in range(0, n, size):
                end = min(n, start + size)
                yield _dataset_batch(registry, conn, plan, schema,
                                     _ids_from_bytes(aggregated[id_at][16 * start:16 * end], end - start),
                                     None if run_ids is None else run_ids[start:end],
                                     [a.slice(start, end - start) for a in rest])
            return
    seen: set[Any] = set()
    for arrow, data in _columns(registry, conn, stmt, size=size, adbc=columns_will_do):
        if arrow:
            yield _dataset_batch(registry, conn, plan, schema, _arrow_ids(data[id_at]),
                                 None if run_at is None else data[run_at].to_numpy(zero_copy_only=False),
                                 [data[i] for i in rest_at])
            continue
        rows = data
        if plan.check is not None and plan.ambiguity is not None:
            counts = np.fromiter((r[plan.check] for r in rows), dtype=np.int64, count=len(rows))
            bad = np.flatnonzero(counts > 1)
            if bad.size:
                raise plan.ambiguity(rows[bad[0]])
        if plan.dedupe:
            rows = [row for row in rows if not (row[id_at] in seen or seen.add(row[id_at]))]  # type: ignore[func-returns-value]
            if not rows:
                continue
        columns = list(zip(*rows, strict=True))
        rest = [pa.array(columns[i], t) for i, t in zip(rest_at, types, strict=True)]
        yield _dataset_batch(registry, conn, plan, schema, _ids(columns[id_at]),
                             None if run_at is None else np.asarray(columns[run_at], dtype=np.int64), rest)


_UNIT_SEPARATOR = "\x1f"


def aggregated_columns(conn: sa.Connection, stmt: sa.Select, kinds: dict[int, str]) -> dict[int, Any] | None:
    """The columns of ``stmt`` (SQLite) read as one row: each column's values concatenated by SQLite.

    The DB-API makes a Python object of every value and a tuple of every row, then the
    table is made of them: three quarters of a query table's time. Here SQLite
    concatenates each column (``group_concat``, one pass over the rows, so the columns
    stay aligned) and each long text becomes a column at C speed: ids (``"id"``, 32 hex
    digits each) 16 bytes each by ``unhexlify``, integers (``"int"``) by numpy, strings
    (``"str"``) split on the ASCII unit separator. Positions of ``stmt``'s columns map to
    their kind; the result maps them to ``bytes`` (ids), a numpy array (integers) or a
    list of ``str``.

    The texts are held whole, about 100 bytes a row at their peak (SQLite's and Python's
    copies): for a caller that holds the whole table anyway (`to_arrow`), not for
    batches read as they are asked for. None when a text does not split into one value
    per row: a NULL (left out of the concatenation), a string holding the separator, a
    value of another type; the caller then reads the rows. One statement: what it reads
    is one snapshot, as the rows would be.
    """
    import binascii
    import warnings

    import numpy as np

    inner = stmt.subquery()
    columns = list(inner.c)
    concatenated = {"id": lambda c: sa.func.group_concat(c, ""), "int": lambda c: sa.func.group_concat(c, ","),
                    "str": lambda c: sa.func.group_concat(c, _UNIT_SEPARATOR)}
    positions = list(kinds)
    try:
        row = conn.execute(sa.select(sa.func.count(), *[sa.func.count(columns[i]) for i in positions],
                                     *[concatenated[kinds[i]](columns[i]) for i in positions])).one()
    except sa.exc.DBAPIError as exc:  # SQLITE_TOOBIG: a DataError
        if "too big" not in str(exc.orig):
            raise
        return None  # a column's text past SQLite's longest string (1 GB, tens of millions of rows): read rows
    n = row[0]
    if any(count != n for count in row[1:1 + len(positions)]):
        return None  # a NULL: left out of its concatenation, which would no longer line up with the others
    out: dict[int, Any] = {}
    for i, value in zip(positions, row[1 + len(positions):], strict=True):
        kind = kinds[i]
        text = str(value or "")
        if kind == "id":
            if len(text) != 32 * n:
                return None
            try:
                out[i] = binascii.unhexlify(text)
            except binascii.Error:
                return None
        elif kind == "int":
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # text numpy cannot read: told by the count below
                numbers = np.fromstring(text, dtype=np.int64, sep=",") if n else np.zeros(0, np.int64)
            if len(numbers) != n or (n and text.count(",") != n - 1):
                return None
            out[i] = numbers
        else:
            words = text.split(_UNIT_SEPARATOR) if n else []
            if len(words) != n:
                return None
            out[i] = words
    return out


def data_id_batches(registry: Registry, conn: sa.Connection, stmt: sa.Select, dims: Sequence[str],
                    implied_names: Sequence[str], *, size: int = DEFAULT_BATCH_ROWS,
                    ) -> tuple[pyarrow.Schema, Iterator[pyarrow.RecordBatch]]:
    """The data ids of ``stmt`` (values of ``dims``, then of ``implied_names``) as record batches, and their schema."""
    pa = pyarrow_module()
    names = [*dims, *implied_names]
    types = _key_types(registry, names)
    schema = pa.schema([pa.field(n, t, nullable=i >= len(dims))
                        for i, (n, t) in enumerate(zip(names, types, strict=True))])

    def batches() -> Iterator[pyarrow.RecordBatch]:
        for arrow, data in _columns(registry, conn, stmt, size=size, adbc=True):
            if arrow:
                arrays = [c if c.type == t else c.cast(t) for c, t in zip(data, types, strict=True)]
            else:
                arrays = [pa.array(c, t) for c, t in zip(zip(*data, strict=True), types, strict=True)]
            yield pa.RecordBatch.from_arrays(arrays, schema=schema)

    return schema, batches()
