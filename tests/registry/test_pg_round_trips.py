"""Round trips to a PostgreSQL registry: a put is two, however many datasets the repository holds; a small query two.

Counted, not timed: libpq's own trace of every connection the registry's engine
checks out records each message; each ``ReadyForQuery`` the server sends ends one
round trip (the client waited for it). Also here: statistics kept current after bulk
inserts, and a transaction after a put is still one transaction.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from skybutler.errors import DatasetExistsError

pytestmark = pytest.mark.parametrize("backend", ["postgresql-local"])

DATASET_TYPE = "metrics"


class RoundTrips:
    """Round trips of a registry's connections to the server, read from libpq's trace.

    Each connection traces into a file of its own (two may be out at once: a kept reader,
    `Database.read_one`, and a pooled one), flushed by `count`.
    """

    def __init__(self, registry, path: Path):
        import psycopg

        registry.database.close_kept_connections()  # kept connections are traced from their next checkout
        self.path = path
        self._flags = psycopg.pq.Trace.SUPPRESS_TIMESTAMPS
        self._files: dict[int, Path] = {}
        self._out: list = []  # traced connections not checked in
        sa.event.listen(registry.engine, "checkout", self._checkout)
        sa.event.listen(registry.engine, "checkin", self._checkin)

    def _checkout(self, dbapi_conn, _record, _proxy) -> None:
        self._trace(dbapi_conn)
        self._out.append(dbapi_conn)

    def _trace(self, dbapi_conn) -> None:
        path = self._files.setdefault(id(dbapi_conn), self.path.with_name(f"{self.path.name}.{len(self._files)}"))
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)  # libpq keeps it while tracing
        dbapi_conn.pgconn.trace(fd)
        dbapi_conn.pgconn.set_trace_flags(self._flags)

    def _checkin(self, dbapi_conn, _record) -> None:
        if dbapi_conn is not None:
            dbapi_conn.pgconn.untrace()  # flushes what it wrote
            self._out = [c for c in self._out if c is not dbapi_conn]

    def text(self) -> str:
        """Every connection's trace so far, one after the other."""
        for dbapi_conn in self._out:  # flush what those still out wrote, and go on tracing them
            if not dbapi_conn.closed:
                dbapi_conn.pgconn.untrace()
                self._trace(dbapi_conn)
        return "".join(p.read_text() for p in self._files.values() if p.exists())

    def count(self) -> int:
        return self.text().count("\tReadyForQuery")

    def of(self, call) -> int:
        before = self.count()
        call()
        return self.count() - before


@pytest.fixture
def butler(make_butler):
    b = make_butler(records=True, run="r")
    b.insert_dimension_records("detector", [{"instrument": "HSC", "detector": d, "name": f"d{d}", "purpose": "SCIENCE"}
                                            for d in range(4, 40)])  # 4 visits x 40 detectors in all
    b.register_dataset_type(DATASET_TYPE, ["instrument", "visit", "detector"], "dict")
    return b


def data_ids(butler) -> list[dict]:
    visits = [r["visit"] for r in butler.registry.fetch_dimension_records("visit")]
    detectors = [r["detector"] for r in butler.registry.fetch_dimension_records("detector")]
    return [{"instrument": "HSC", "visit": v, "detector": d} for v in sorted(visits) for d in sorted(detectors)]


def test_a_put_is_two_round_trips_whatever_the_repository_holds(butler, tmp_path):
    ids = data_ids(butler)
    butler.put_many([({"n": i}, DATASET_TYPE, di) for i, di in enumerate(ids)])  # caches the data ids' records
    trips = RoundTrips(butler.registry, tmp_path / "libpq.trace")

    counts = [trips.of(lambda di=di: butler.put({"n": 1}, DATASET_TYPE, di, run="later")) for di in ids[:30]]

    # BEGIN + the statement (run, clash check, dataset and file rows) in one; then COMMIT.
    assert counts == [2] * 30
    assert len(list(butler.query_datasets(DATASET_TYPE, collections=["later"]))) == 30


def test_the_first_put_into_a_new_run_creates_it_in_the_same_round_trips(butler, tmp_path):
    ids = data_ids(butler)
    butler.put({"n": 0}, DATASET_TYPE, ids[0])
    trips = RoundTrips(butler.registry, tmp_path / "libpq.trace")

    assert trips.of(lambda: butler.put({"n": 1}, DATASET_TYPE, ids[0], run="brand/new")) == 2
    assert butler.registry.collection_type("brand/new").value == "RUN"


def test_put_many_round_trips_do_not_grow_with_the_number_of_datasets(butler, tmp_path):
    ids = data_ids(butler)
    butler.put_many([({"n": i}, DATASET_TYPE, di) for i, di in enumerate(ids)], run="warm")
    trips = RoundTrips(butler.registry, tmp_path / "libpq.trace")

    few = trips.of(lambda: butler.put_many([({"n": i}, DATASET_TYPE, di) for i, di in enumerate(ids[:3])], run="a"))
    many = trips.of(lambda: butler.put_many([({"n": i}, DATASET_TYPE, di) for i, di in enumerate(ids)], run="b"))

    assert len(ids) >= 150
    assert few == many == 2


def test_a_clash_found_in_the_one_statement_names_the_stored_dataset_and_stores_nothing(butler):
    ids = data_ids(butler)
    stored = butler.put({"n": 0}, DATASET_TYPE, ids[5])

    with pytest.raises(DatasetExistsError, match=str(stored.id)):
        butler.put_many([({"n": i}, DATASET_TYPE, di) for i, di in enumerate(ids[:10])])

    assert [r.id for r in butler.query_datasets(DATASET_TYPE, collections=["r"])] == [stored.id]


def test_a_transaction_after_a_put_is_still_one_transaction(butler):
    ids = data_ids(butler)
    butler.put({"n": 0}, DATASET_TYPE, ids[0])  # begins its transaction itself (see _pg_insert)
    with butler.registry.engine.connect() as conn:  # the connection the put used, back in the pool
        assert conn.connection.dbapi_connection.autocommit is False

    with pytest.raises(RuntimeError), butler.registry.transaction():
        butler.registry.register_collection("half-done")
        raise RuntimeError("fails before the commit")

    assert "half-done" not in {c["name"] for c in butler.registry.collections()}


def test_bulk_inserts_keep_the_planner_statistics_current(butler, monkeypatch):
    import skybutler.registry._db as db

    monkeypatch.setattr(db, "ANALYZE_AFTER_ROWS", 20)  # looked at every 20 rows, not every 1,000
    ids = data_ids(butler)
    namespace = butler.config.registry.namespace

    def estimated_rows() -> float:
        with butler.registry.engine.connect() as conn:
            return conn.execute(sa.text("SELECT reltuples FROM pg_class WHERE oid = to_regclass(:t)"),
                                {"t": f'"{namespace}".dataset'}).scalar_one()

    assert estimated_rows() < 0  # never analyzed
    butler.put_many([({"n": i}, DATASET_TYPE, di) for i, di in enumerate(ids[:40])], run="a")
    assert estimated_rows() == 40
    butler.put_many([({"n": i}, DATASET_TYPE, di) for i, di in enumerate(ids)], run="b")
    assert estimated_rows() == 40 + len(ids)


def _refs_of_detectors(butler, dataset_type: str, run: str, detectors, **data_id):
    from skybutler import DataId, DatasetRef
    from skybutler.model import new_dataset_id

    dt = butler.registry.get_dataset_type(dataset_type)
    return [DatasetRef(new_dataset_id(), dt, DataId({"instrument": "HSC", **data_id, "detector": d}), run)
            for d in detectors]


def rows_per_round_trip(trace: str) -> list[int]:
    """DataRow messages the server sent in each round trip of a trace."""
    return [part.count("\tDataRow") for part in trace.split("\tReadyForQuery")[:-1]]


def test_a_one_visit_query_is_two_round_trips_and_no_transaction(butler, tmp_path):
    butler.insert_dimension_records("detector", [{"instrument": "HSC", "detector": d, "name": f"d{d}"}
                                                 for d in range(40, 100)])
    visit = data_ids(butler)[0]["visit"]
    butler.registry.insert_datasets(_refs_of_detectors(butler, DATASET_TYPE, "r", range(100), visit=visit))
    query = lambda: list(butler.query_datasets(DATASET_TYPE, collections=["r"], where=f"visit = {visit}"))  # noqa: E731
    assert len(query()) == 100  # the dataset type is cached from here on
    trips = RoundTrips(butler.registry, tmp_path / "libpq.trace")

    assert trips.of(query) == 2  # the collection's row, then the datasets' rows (one LIMITed statement)
    trace = trips.text()
    assert "BEGIN" not in trace and "DECLARE" not in trace and "ROLLBACK" not in trace
    assert rows_per_round_trip(trace) == [1, 100]


def test_a_result_one_row_past_the_first_read_streams_it_all_again_from_a_cursor(butler, tmp_path, monkeypatch):
    import skybutler.registry._query_results as query_results

    monkeypatch.setattr(query_results, "_FIRST", 39)
    ids = data_ids(butler)
    butler.registry.insert_datasets(_refs_of_detectors(butler, DATASET_TYPE, "r", range(40), visit=ids[0]["visit"]))
    butler.registry.insert_datasets(_refs_of_detectors(butler, DATASET_TYPE, "r", range(39), visit=ids[-1]["visit"]))
    trips = RoundTrips(butler.registry, tmp_path / "libpq.trace")

    def query(visit: int) -> list:
        return list(butler.query_datasets(DATASET_TYPE, collections=["r"], where=f"visit = {visit}"))

    assert trips.of(lambda: query(ids[-1]["visit"])) == 2  # 39 rows: all in the first read
    assert "DECLARE" not in trips.text()
    refs = query(ids[0]["visit"])
    trace = trips.text()
    assert "DECLARE" in trace and "BEGIN" in trace
    assert sorted(r.data_id["detector"] for r in refs) == list(range(40))  # none missed, none twice


def test_a_five_thousand_row_query_is_read_in_bounded_batches_from_one_snapshot(make_butler, tmp_path):
    import skybutler.registry._query_results as query_results

    b = make_butler(records=True, run="r")
    b.insert_dimension_records("detector", [{"instrument": "HSC", "detector": d, "name": f"d{d}"}
                                            for d in range(4, 5000)])
    b.register_dataset_type("bias", ["instrument", "detector"], "dict")
    b.registry.insert_datasets(_refs_of_detectors(b, "bias", "r", range(5000)))
    trips = RoundTrips(b.registry, tmp_path / "libpq.trace")

    results = b.query_datasets("bias", collections=["r"])
    first = next(results)
    # Committed while the query is half read: not in its result, which is one statement's snapshot.
    b.insert_dimension_records("detector", [{"instrument": "HSC", "detector": 5000, "name": "late"}])
    b.registry.insert_datasets(_refs_of_detectors(b, "bias", "r", [5000]))
    refs = [first, *results]

    assert sorted(r.data_id["detector"] for r in refs) == list(range(5000))
    assert len({r.id for r in refs}) == 5000
    rows = rows_per_round_trip(trips.text())
    # The LIMITed first read (one row past _FIRST, dropped), then the cursor's FETCHes:
    # no round trip brought more than a chunk, so memory is bounded by a chunk, not the result.
    assert query_results._FIRST + 1 in rows
    assert max(rows) <= query_results._CHUNK
    assert sum(rows) >= 5000 + query_results._FIRST + 1
    assert len(list(b.query_datasets("bias", collections=["r"]))) == 5001


def test_a_small_table_is_two_round_trips(butler, tmp_path):
    ids = data_ids(butler)
    butler.registry.insert_datasets(_refs_of_detectors(butler, DATASET_TYPE, "r", range(40), visit=ids[0]["visit"]))
    query = lambda: butler.query_datasets(DATASET_TYPE, collections=["r"], where=f"visit = {ids[0]['visit']}")  # noqa: E731
    assert query().to_arrow().num_rows == 40
    trips = RoundTrips(butler.registry, tmp_path / "libpq.trace")

    assert trips.of(lambda: query().to_arrow()) == 2
    assert "BEGIN" not in trips.text()


def test_a_find_in_one_collection_is_one_round_trip_and_finds_what_a_search_finds(butler, tmp_path):
    from skybutler import CollectionError, CollectionType

    ids = data_ids(butler)[:3]
    refs = butler.put_many([({"n": i}, DATASET_TYPE, di) for i, di in enumerate(ids)])
    butler.registry.register_collection("tags", CollectionType.TAGGED)
    butler.registry.associate("tags", refs[:1])
    butler.registry.set_chain("chain", ["tags", "r"])
    trips = RoundTrips(butler.registry, tmp_path / "libpq.trace")

    found = []
    assert trips.of(lambda: found.append(butler.find_dataset(DATASET_TYPE, ids[1], collections=["r"]))) == 1
    assert found == [refs[1]] and found[0].data_id == refs[1].data_id and found[0].run == "r"
    assert butler.find_dataset(DATASET_TYPE, data_ids(butler)[5], collections=["r"]) is None  # a RUN without it
    # Another kind of collection is searched the general way, with the same answers.
    assert butler.find_dataset(DATASET_TYPE, ids[0], collections=["tags"]) == refs[0]
    assert butler.find_dataset(DATASET_TYPE, ids[1], collections=["tags"]) is None
    assert butler.find_dataset(DATASET_TYPE, ids[1], collections=["chain"]) == refs[1]
    with pytest.raises(CollectionError, match="Unknown collection 'nowhere'"):
        butler.find_dataset(DATASET_TYPE, ids[0], collections=["nowhere"])


def test_a_get_by_ref_is_one_round_trip(butler, tmp_path):
    ids = data_ids(butler)[:2]
    refs = butler.put_many([({"n": i}, DATASET_TYPE, di) for i, di in enumerate(ids)])
    time.sleep(0.03)  # a file placed within 20 ms of a get's query makes it ask once more (`_butler_read`)
    trips = RoundTrips(butler.registry, tmp_path / "libpq.trace")

    got = []
    assert [trips.of(lambda ref=ref: got.append(butler.get(ref))) for ref in refs] == [1, 1]
    assert got == [{"n": 0}, {"n": 1}]
