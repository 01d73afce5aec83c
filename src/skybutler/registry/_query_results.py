"""Query results: refs and data ids streamed as objects, or Arrow tables built column-wise.

`DatasetQueryResults` and `DataIdQueryResults` are what `query_datasets` and
`query_data_ids` return. Iterating one streams refs (data ids) exactly as the plain
generators did: lazily (nothing runs and no error is raised before the first item is
asked for), once. `to_arrow` and `arrow_batches` run the same SQL statement again,
whatever has been iterated, and build Arrow data without one Python object per row
(`skybutler.registry._query_arrow`, where the columns are described).

How refs are built. Rows are read from the DB-API cursor (SQLAlchemy compiles and
executes the statement, its Row objects skipped; on PostgreSQL a small result is one
statement compiled once per shape and run unprepared, `Database.rows_raw`) a chunk at a time, only the
columns a ref needs (id, run unless the query searched one run, dimensions), and each
chunk becomes refs column by column: ids by `uuids_from_hex` (SQLite keeps them as hex
text), data ids by `DataId.from_rows` (keys shared), refs by `DatasetRef.from_columns`,
each filling its objects without a Python-level call per row. Figures: benchmarks/README.md.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import chain
from operator import itemgetter
from typing import TYPE_CHECKING, Any, TypeVar

import sqlalchemy as sa

from .._gc import paused_gc
from ..model import DataId, DatasetRef, DatasetType, data_ids_of_tuples, uuids_from_hex
from ._query_arrow import (
    DEFAULT_BATCH_ROWS,
    data_id_batches,
    dataset_batches,
    first_rows,
    table_of,
    to_pandas,
)

if TYPE_CHECKING:
    import pandas
    import pyarrow

    from ._database import Database
    from ._registry import Registry

__all__ = ["DataIdQueryResults", "DatasetQueryPlan", "DatasetQueryResults", "ref_batches", "row_chunks"]

_CHUNK = 2000
"""Rows fetched at once: bounds the Python tuples held while refs are built."""

_FIRST = 1000
"""Rows a PostgreSQL query reads by one plain statement before it takes a server-side cursor (`row_chunks`)."""


@dataclass
class DatasetQueryPlan:
    """The SQL of one dataset query and what its rows mean.

    Rows are ``(id, dataset_type_id, run_id, data_id_key, *dimensions, rank, ...)``.
    ``statement`` is None when no collection can hold the type (an empty result).
    ``runs`` maps run ids to names (filled as more are met). ``dedupe``: several
    collections may return one dataset, keep its first row. ``check``: the position of a
    count that must be 1, else ``ambiguity(row)`` is raised. ``lean``: the statement with
    only ``(id, run_id, *dimensions)`` selected, when it can say so without a subquery
    (one collection's SELECT): what `slim` gives, without building a subquery's columns
    on every query (a third of a one-visit query's time in Python). ``run``: the id of
    the one RUN collection searched, when that is all: every row is in it, so ``lean``
    selects ``(id, *dimensions)`` (a column less to read per row: a tenth of reading
    them all).
    """

    dataset_type: DatasetType
    statement: sa.Select | None
    runs: dict[int, str]
    dedupe: bool = False
    check: int | None = None
    ambiguity: Callable[[Any], Exception] | None = None
    lean: sa.Select | None = None
    run: int | None = None

    def slim(self, *, files: sa.Table | None = None) -> tuple[sa.Select, int, int | None, int]:
        """The statement with only what a ref (or a table row) needs: ``(statement, id, run, first dimension)``.

        Rows are then ``(id, run_id, *dimensions)``, plus ``path, size`` when ``files``
        (the file table) is given: no data id key, type id or rank to fetch and convert.
        The run's position is None when the rows have none: all are in `run`.
        A plan that checks for ambiguity keeps its whole rows (the error names them).
        """
        assert self.statement is not None
        if self.check is not None and files is None:
            return self.statement, 0, 2, 4
        if self.lean is not None and files is None:
            return (self.lean, 0, None, 1) if self.run is not None else (self.lean, 0, 1, 2)
        inner = self.statement.subquery()
        columns = list(inner.c)
        n = len(self.dataset_type.dimensions)
        if self.check is not None:
            keep = columns
            at = (0, 2, 4)
        else:
            keep = [columns[0], columns[2], *columns[4:4 + n]]
            at = (0, 1, 2)
        stmt = sa.select(*keep)
        if files is not None:
            # One file record per dataset (its primary key), or none: an outer join keeps the row.
            stmt = stmt.add_columns(files.c.path, files.c.size).select_from(
                inner.outerjoin(files, files.c.dataset_id == columns[0]))
        return stmt, *at


def row_chunks(conn: sa.Connection, stmt: sa.Select, *, stream: bool,
               database: Database | None = None) -> Iterator[Sequence[Any]]:
    """The rows of ``stmt``, a chunk at a time.

    SQLAlchemy compiles and executes the statement (bound parameters, schema
    translation). On SQLite, and on PostgreSQL when not streaming, its Row objects are
    skipped and the DB-API cursor read directly: the columns read here need no result
    processing (SQLite ids are selected as text, dimension keys are ints and strings),
    and a Row per row costs as much as the fetch. SQLite's cursor steps through the
    result as it is read, so no option is set there: ``yield_per`` would make
    SQLAlchemy read ahead of us.

    ``stream`` on PostgreSQL: a result of at most `_FIRST` rows (a visit's datasets) is
    read by one plain statement with a ``LIMIT`` (`first_rows`: one round trip, and
    none for a transaction when ``conn`` is in autocommit). A larger one is read again
    from its start through a server-side cursor, memory bounded by the chunk (see
    `_streamed`); the first rows are dropped unseen, so every row handed out comes
    from that one statement. Given the ``database``, that statement runs on psycopg's
    cursor with its SQL compiled once per shape (`Database.rows_raw`) when it can.
    """
    if stream and conn.dialect.name != "sqlite":
        first, more = _first_read(conn, stmt, database)
        if not more:
            if first:
                yield first
            return
        yield from _streamed(conn, stmt)
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
                return
            yield rows
    finally:
        result.close()


def _first_read(conn: sa.Connection, stmt: sa.Select, database: Database | None) -> tuple[Sequence[Any], bool]:
    """At most `_FIRST` rows of ``stmt`` (PostgreSQL), and whether it has more: one LIMITed statement."""
    if database is not None:
        with paused_gc():
            rows = database.rows_raw(conn, stmt.limit(sa.bindparam("probe_rows", _FIRST + 1)))
        if rows is not None:
            return (rows[:_FIRST], True) if len(rows) > _FIRST else (rows, False)
    first = first_rows(conn, stmt, _FIRST)
    return first.rows, first.more


def _streamed(conn: sa.Connection, stmt: sa.Select) -> Iterator[Sequence[Any]]:
    """The rows of ``stmt`` from a server-side cursor, `_CHUNK` at a time (PostgreSQL).

    Why the whole statement again rather than the rows after the first ones: one
    statement sees one snapshot, so no row can be missed or met twice whatever is
    committed meanwhile. Reading "the rest" would need the first rows read in the same
    snapshot (a REPEATABLE READ transaction around every query: the BEGIN and ROLLBACK
    round trips a small result is spared) and an ORDER BY to say which rows are the
    rest (a sort of the whole result, and a plan that may differ). Reading `_FIRST`
    rows twice costs about a millisecond; a result that large takes tens to build.

    A server-side cursor lives in a transaction: a connection in autocommit (see
    `skybutler.registry._database.Database.read`) is switched back to the engine's
    isolation level first (the switch sends nothing; the DB-API then sends BEGIN before
    the DECLARE), and the pool resets it when the connection is returned.
    """
    if conn.get_execution_options().get("isolation_level") == "AUTOCOMMIT":
        conn.commit()  # ends SQLAlchemy's own (empty) transaction; nothing is sent
        conn.execution_options(isolation_level=conn.default_isolation_level)
    # yield_per for this statement only: Connection.execution_options would keep it for the next ones.
    streamed = conn.execute(stmt, execution_options={"yield_per": _CHUNK})
    try:
        yield from streamed.partitions()
    finally:
        streamed.close()


def ref_batches(registry: Registry, conn: sa.Connection, plan: DatasetQueryPlan,
                chunks: Iterable[Sequence[Any]] | None = None) -> Iterator[list[DatasetRef]]:
    """Refs of one dataset type from the plan's rows, a list per chunk (the hot path of `query_datasets`).

    The rows are those of ``chunks`` when given (of the plan's `slim` statement), else
    read here (`row_chunks`).
    """
    if plan.statement is None:
        return
    dt, runs, check, ambiguity = plan.dataset_type, plan.runs, plan.check, plan.ambiguity
    stmt, id_at, run_at, dims_at = plan.slim()
    ids_of = itemgetter(id_at)
    values_of = itemgetter(slice(dims_at, dims_at + len(dt.dimensions)))
    seen: set[Any] = set()
    if chunks is None:
        chunks = row_chunks(conn, stmt, stream=True, database=registry.database)
    for rows in chunks:
        if check is not None and ambiguity is not None:
            for row in rows:
                if row[check] > 1:
                    raise ambiguity(row)
        if plan.dedupe:
            rows = [row for row in rows if not (row[id_at] in seen or seen.add(row[id_at]))]  # type: ignore[func-returns-value]
            if not rows:
                continue
        if run_at is None:
            assert plan.run is not None
            names: list[str] = [runs[plan.run]] * len(rows)
        else:
            run_ids = list(map(itemgetter(run_at), rows))
            missing = set(run_ids) - runs.keys()
            if missing:
                registry.collection_records.run_names(conn, missing, runs)
            names = list(map(runs.__getitem__, run_ids))
        # Each ref is a few small objects; letting the cyclic collector run every few
        # hundred of them (it cannot free any: they are all referenced) costs more than
        # building them, so a chunk is built with it paused and handed out afterwards.
        with paused_gc():
            ids = list(map(ids_of, rows))
            if ids and type(ids[0]) is str:
                ids = uuids_from_hex(ids)
            # A row sliced is a tuple of the type's dimensions (sqlite3's, psycopg's and
            # SQLAlchemy's rows alike): `DataId.from_rows`'s checks would find nothing.
            data_ids = data_ids_of_tuples(dt.dimensions, list(map(values_of, rows)))
            refs = DatasetRef.from_columns(dt, ids, data_ids, names)
        yield refs


_T = TypeVar("_T")


class _BatchedResults(Iterator[_T]):
    """Iteration shared by query results: `_stream` yields batches, handed out one item at a time, once."""

    _batches: Iterator[list[_T]] | None = None
    _items: Iterator[_T] | None = None

    def _stream(self) -> Iterator[list[_T]]:
        raise NotImplementedError

    def _iterator(self) -> Iterator[_T]:
        if self._items is None:
            self._batches = self._stream()
            self._items = chain.from_iterable(self._batches)
        return self._items

    def __iter__(self) -> Iterator[_T]:
        # The items themselves, not this object: ``list(result)`` then runs at C speed
        # instead of one `__next__` call per item. It is the same stream as `__next__`'s.
        return self._iterator()

    def __next__(self) -> _T:
        return next(self._iterator())

    def close(self) -> None:
        """Stop a partly iterated stream now (its connection is returned to the pool)."""
        if self._batches is not None and hasattr(self._batches, "close"):
            self._batches.close()


class DatasetQueryResults(_BatchedResults[DatasetRef]):
    """The datasets a `query_datasets` call finds: iterate for refs, or take a table.

    Iterating streams `DatasetRef` objects (lazily, once, as a generator would);
    `to_arrow`, `arrow_batches` and `to_pandas` run the query again and give Arrow data
    built column-wise, with the same find-first, collection and ``where`` semantics.

    Examples
    --------
    >>> refs = list(butler.query_datasets("calexp", where="visit = 903334"))  # doctest: +SKIP
    >>> table = butler.query_datasets("calexp", collections=["HSC/runs/a"]).to_arrow()  # doctest: +SKIP
    >>> table.column_names  # doctest: +SKIP
    ['id', 'dataset_type', 'run', 'instrument', 'visit', 'detector']
    >>> for batch in butler.query_datasets("calexp", collections=["HSC/runs/a"]).arrow_batches():  # doctest: +SKIP
    ...     total += batch.num_rows
    """

    def __init__(self, registry: Registry, plan: Callable[[sa.Connection], DatasetQueryPlan]):
        self._registry = registry
        self._plan = plan

    def _stream(self) -> Iterator[list[DatasetRef]]:
        # One connection for the collection lookup and the query, in autocommit: each is one
        # statement, so a transaction around them would only add BEGIN and ROLLBACK.
        registry = self._registry
        database = registry.database
        if registry.dialect != "postgresql":
            with database.read(autocommit=True) as conn:
                yield from ref_batches(registry, conn, self._plan(conn))
            return
        # PostgreSQL: the lookup and the first read (all of a small result) on a kept
        # connection (`Database.read_one`: no pool checkout), returned before the refs are
        # handed out; a larger result is read again from a server-side cursor, on a pooled
        # connection (in the transaction the cursor needs), as `row_chunks` does.
        with database.read_one() as conn:
            plan = self._plan(conn)
            if plan.statement is None:
                return
            first, more = _first_read(conn, plan.slim()[0], database)
            refs = [] if more or not first else list(ref_batches(registry, conn, plan, [first]))
        if not more:
            yield from refs
            return
        with database.read(autocommit=True) as conn:
            yield from ref_batches(registry, conn, plan, _streamed(conn, plan.slim()[0]))

    def arrow_batches(self, size: int = DEFAULT_BATCH_ROWS, *, files: bool = False) -> Iterator[pyarrow.RecordBatch]:
        """The datasets as Arrow record batches of at most ``size`` rows, read as they are asked for.

        For results too large to hold as one table: memory is bounded by a batch (and,
        when read through ADBC, the driver's own read-ahead), never a Python object per row.

        Parameters
        ----------
        size : `int`
            Rows per batch at most (the last one may be shorter).
        files : `bool`
            Add ``path`` and ``size`` columns, as for `to_arrow`.
        """
        # Autocommit: each read is one statement (ADBC reads on its own connection).
        with self._registry.database.read(autocommit=True) as conn, paused_gc():
            _schema, batches = dataset_batches(self._registry, conn, self._plan(conn), files=files, size=size)
            yield from batches

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
        # Autocommit as in arrow_batches.
        with self._registry.database.read(autocommit=True) as conn, paused_gc():
            plan = self._plan(conn)
            return table_of(dataset_batches(self._registry, conn, plan, files=files, whole=True))

    def to_pandas(self, *, files: bool = False) -> pandas.DataFrame:
        """The table of `to_arrow` as a `pandas.DataFrame` (needs pandas installed)."""
        return to_pandas(self.to_arrow(files=files))


class DataIdQueryResults(_BatchedResults[DataId]):
    """The data ids a `query_data_ids` call finds: iterate for `DataId` objects, or take a table.

    ``statement`` gives the SELECT, its dimensions and its implied dimensions (built
    when first needed, so a bad ``where`` is raised where the old generator raised it).
    """

    def __init__(self, registry: Registry,
                 statement: Callable[[], tuple[sa.Select, tuple[str, ...], tuple[str, ...]]]):
        self._registry = registry
        self._statement = statement

    def _stream(self) -> Iterator[list[DataId]]:
        stmt, dims, implied_names = self._statement()
        n = len(dims)
        with self._registry.database.read(autocommit=True) as conn:  # as DatasetQueryResults._stream
            for rows in row_chunks(conn, stmt, stream=True, database=self._registry.database):
                with paused_gc():
                    if implied_names:
                        batch = [DataId(dict(zip(dims, row[:n], strict=True)),
                                        implied=dict(zip(implied_names, row[n:], strict=True))) for row in rows]
                    else:
                        batch = DataId.from_rows(dims, rows)
                yield batch

    def arrow_batches(self, size: int = DEFAULT_BATCH_ROWS) -> Iterator[pyarrow.RecordBatch]:
        """The data ids as Arrow record batches of at most ``size`` rows (see `DatasetQueryResults.arrow_batches`)."""
        stmt, dims, implied_names = self._statement()
        with self._registry.database.read(autocommit=True) as conn, paused_gc():  # as DatasetQueryResults's
            _schema, batches = data_id_batches(self._registry, conn, stmt, dims, implied_names, size=size)
            yield from batches

    def to_arrow(self) -> pyarrow.Table:
        """The data ids as a `pyarrow.Table`: one column per dimension, then the implied ones if asked for."""
        stmt, dims, implied_names = self._statement()
        with self._registry.database.read(autocommit=True) as conn, paused_gc():  # see DatasetQueryResults.to_arrow
            return table_of(data_id_batches(self._registry, conn, stmt, dims, implied_names))

    def to_pandas(self) -> pandas.DataFrame:
        """The table of `to_arrow` as a `pandas.DataFrame` (needs pandas installed)."""
        return to_pandas(self.to_arrow())
