"""Query results are streams of refs (data ids) and also Arrow tables with the same rows.

``query_datasets`` and ``query_data_ids`` return result objects that iterate exactly as
the generators they replace (lazily, once) and give ``to_arrow()``: one row per ref,
built column-wise, with the same find-first, collection, time and ``where`` semantics.
Each test compares the table with the refs of the same query, on SQLite and PostgreSQL.
"""

from __future__ import annotations

import contextlib
import datetime
import importlib.util
import os
import uuid

import pyarrow as pa
import pytest

from skybutler import CollectionError, CollectionType, DatasetTypeError, MissingDependencyError
from skybutler.registry import DataIdQueryResults, DatasetQueryResults, query_data_ids

T0 = datetime.datetime(2026, 3, 1)
T1 = datetime.datetime(2026, 3, 15)
T2 = datetime.datetime(2026, 4, 1)
CALEXP_DIMS = ["instrument", "visit", "detector"]


@pytest.fixture(params=["sqlite-local", "sqlite-memory", "postgresql-local"])
def backend(request):
    # Results are built in the registry: from the DB-API's rows on SQLite (a file or in
    # memory), through ADBC on PostgreSQL when the arrow-db extra is installed.
    return request.param


@pytest.fixture
def repo(make_butler):
    """calexps of 4 visits x 4 detectors in run ``old``; visits 903334 and 903338 again in ``new``."""
    butler = make_butler(records=True)
    butler.register_dataset_type("calexp", CALEXP_DIMS, "dict")
    for run, visits in (("old", (903334, 903336, 903338, 903340)), ("new", (903334, 903338))):
        butler.put_many([({"run": run, "v": v, "d": d}, "calexp", {"instrument": "HSC", "visit": v, "detector": d})
                         for v in visits for d in range(4)], run=run)
    butler.registry.set_chain("chain", ["new", "old"])
    return butler


def rows_of_refs(refs):
    """What a table row holds for each ref, sorted (row order is not part of either's contract)."""
    return sorted((r.id, r.dataset_type.name, r.run, *r.data_id.values()) for r in refs)


def rows_of_table(table, dims):
    columns = ["id", "dataset_type", "run", *dims]
    return sorted(zip(*[table.column(c).to_pylist() for c in columns], strict=True))


def assert_same(butler, dataset_type, **query):
    """The table of a query holds exactly the refs its iteration gives; returns the refs."""
    refs = list(butler.query_datasets(dataset_type, **query))
    table = butler.query_datasets(dataset_type, **query).to_arrow()
    dims = list(butler.registry.get_dataset_type(dataset_type).dimensions)
    assert rows_of_table(table, dims) == rows_of_refs(refs)
    return refs


def test_the_table_has_one_typed_column_per_field_and_dimension(repo):
    table = repo.query_datasets("calexp", collections=["old"]).to_arrow()
    assert table.num_rows == 16
    assert table.schema.field("id").type == pa.uuid()
    assert table.schema.field("dataset_type").type == pa.string()
    assert table.schema.field("run").type == pa.string()
    assert table.schema.field("instrument").type == pa.string()
    assert table.schema.field("visit").type == pa.int64()
    assert table.schema.field("detector").type == pa.int64()
    assert set(table.column_names) == {"id", "dataset_type", "run", *CALEXP_DIMS}
    assert all(isinstance(i, uuid.UUID) for i in table.column("id").to_pylist())
    assert set(table.column("run").to_pylist()) == {"old"}


def test_find_first_over_a_chain_takes_the_shadowing_dataset(repo):
    refs = assert_same(repo, "calexp", collections=["chain"])
    by_visit = {}
    for ref in refs:
        by_visit.setdefault(ref.data_id["visit"], set()).add(ref.run)
    assert by_visit == {903334: {"new"}, 903336: {"old"}, 903338: {"new"}, 903340: {"old"}}
    assert len(refs) == 16


def test_without_find_first_every_dataset_is_listed_once(repo):
    repo.registry.register_collection("tags", CollectionType.TAGGED)
    repo.registry.associate("tags", list(repo.query_datasets("calexp", collections=["old"], where="visit = 903336")))
    # A dataset reachable through its run and a tag is one row, not two.
    refs = assert_same(repo, "calexp", collections=["tags", "old", "new"], find_first=False)
    assert len(refs) == 24 and len({r.id for r in refs}) == 24


def test_where_on_an_implied_dimension_and_a_data_id(repo):
    refs = assert_same(repo, "calexp", collections=["chain"], where="band = 'i' AND detector > 1")
    assert {(r.data_id["visit"], r.data_id["detector"]) for r in refs} == {
        (v, d) for v in (903338, 903340) for d in (2, 3)}
    refs = assert_same(repo, "calexp", collections=["chain"], data_id={"visit": 903334}, where="detector IN (0, 3)")
    assert {r.run for r in refs} == {"new"} and len(refs) == 2


def test_a_spatial_constraint_on_a_dimension_the_type_lacks(repo):
    refs = assert_same(repo, "calexp", collections=["old"], where="patch = 0 AND skymap = 'rings' AND tract = 0")
    assert refs  # patch 0 overlaps some detectors of every visit


def test_calibrations_with_a_time_and_ambiguous_ones_without(repo):
    repo.register_dataset_type("bias", ["detector"], "dict", is_calibration=True)
    a = repo.put({"bias": "A"}, "bias", instrument="HSC", detector=0, run="calib/1")
    b = repo.put({"bias": "B"}, "bias", instrument="HSC", detector=0, run="calib/2")
    repo.registry.register_collection("calib", CollectionType.CALIBRATION)
    repo.registry.certify("calib", [a], T0, T1)
    repo.registry.certify("calib", [b], T1, T2)
    assert [r.id for r in assert_same(repo, "bias", collections=["calib"], time=T0)] == [a.id]
    assert [r.id for r in assert_same(repo, "bias", collections=["calib"], time=T1)] == [b.id]
    assert assert_same(repo, "bias", collections=["calib"], time=T2) == []
    # Without a time two datasets are certified for detector 0: the table refuses as the iterator does.
    with pytest.raises(CollectionError, match="2 datasets certified") as from_iterator:
        list(repo.query_datasets("bias", collections=["calib"]))
    with pytest.raises(CollectionError, match="2 datasets certified") as from_table:
        repo.query_datasets("bias", collections=["calib"]).to_arrow()
    assert str(from_table.value) == str(from_iterator.value)
    assert len(assert_same(repo, "bias", collections=["calib"], find_first=False)) == 2


def test_an_empty_result_keeps_the_schema(repo):
    full = repo.query_datasets("calexp", collections=["old"]).to_arrow()
    none_match = repo.query_datasets("calexp", collections=["old"], where="visit = 1").to_arrow()
    repo.registry.register_collection("calib", CollectionType.CALIBRATION)
    no_branch = repo.query_datasets("calexp", collections=["calib"]).to_arrow()  # never certified there
    for table in (none_match, no_branch):
        assert table.num_rows == 0 and table.schema == full.schema
    ids = repo.query_data_ids(["visit", "detector"], where="visit = 1").to_arrow()
    assert ids.num_rows == 0 and ids.schema == repo.query_data_ids(["visit", "detector"]).to_arrow().schema


def test_file_paths_and_sizes_on_request(repo):
    table = repo.query_datasets("calexp", collections=["chain"], where="visit = 903334").to_arrow(files=True)
    assert table.column_names[-2:] == ["path", "size"]
    ids = table.column("id").to_pylist()
    records = repo.registry.get_files(ids)
    assert len(ids) == 4 and set(records) == set(ids)
    assert table.column("path").to_pylist() == [records[i].path for i in ids]
    assert table.column("size").to_pylist() == [records[i].size for i in ids]
    assert {p.split("/")[0] for p in table.column("path").to_pylist()} == {"new"}


def test_data_id_tables_match_the_data_ids(repo):
    for query in ({"dimensions": ["visit", "detector"], "where": "band = 'r'"},
                  {"dimensions": ["patch"], "where": "visit = 903334"},
                  {"dimensions": ["visit"], "datasets": ["calexp"], "collections": ["new"]}):
        data_ids = list(repo.query_data_ids(**query))
        table = repo.query_data_ids(**query).to_arrow()
        assert data_ids
        assert table.to_pylist() == [dict(d) for d in data_ids]


def test_data_id_tables_carry_implied_dimensions_when_asked(repo):
    result = query_data_ids(repo.registry, ["visit"], with_implied=True)
    table = result.to_arrow()
    assert "band" in table.column_names and "physical_filter" in table.column_names
    bands = dict(zip(table.column("visit").to_pylist(), table.column("band").to_pylist(), strict=True))
    assert bands == {903334: "r", 903336: "r", 903338: "i", 903340: "i"}
    assert [d["band"] for d in query_data_ids(repo.registry, ["visit"], with_implied=True)] == ["r", "r", "i", "i"]


def test_results_iterate_lazily_and_once_like_the_generators_they_replace(repo):
    result = repo.query_datasets("calexp", collections=["old"])
    assert isinstance(result, DatasetQueryResults)
    first = next(result)
    rest = list(result)
    assert len(rest) == 15 and first not in rest
    assert list(result) == []
    # The table is the query run again, whatever has been iterated.
    assert result.to_arrow().num_rows == 16
    # Nothing runs before the first item is asked for: a bad name is raised there.
    unknown = repo.query_datasets("no_such_type", collections=["old"])
    with pytest.raises(DatasetTypeError, match="no_such_type"):
        next(unknown)
    with pytest.raises(DatasetTypeError, match="no_such_type"):
        unknown.to_arrow()
    data_ids = repo.query_data_ids(["visit"])
    assert isinstance(data_ids, DataIdQueryResults)
    assert [d["visit"] for d in data_ids] == [903334, 903336, 903338, 903340]


def test_a_table_inside_a_transaction_sees_its_uncommitted_datasets(repo):
    with repo.transaction():
        repo.put({"run": "new"}, "calexp", instrument="HSC", visit=903336, detector=0, run="new")
        table = repo.query_datasets("calexp", collections=["new"]).to_arrow()
        assert table.num_rows == 9 and 903336 in table.column("visit").to_pylist()
        dims = list(repo.registry.get_dataset_type("calexp").dimensions)
        assert rows_of_table(table, dims) == rows_of_refs(repo.query_datasets("calexp", collections=["new"]))
        assert 903336 in repo.query_data_ids(["visit"], datasets=["calexp"], collections=["new"]).to_arrow().column(
            "visit").to_pylist()


@pytest.mark.skipif(importlib.util.find_spec("pandas") is not None, reason="pandas is installed here")
def test_to_pandas_without_pandas_says_how_to_install_it(repo):
    with pytest.raises(MissingDependencyError, match="pip install pandas"):
        repo.query_datasets("calexp", collections=["old"]).to_pandas()
    with pytest.raises(MissingDependencyError, match="pip install pandas"):
        repo.query_data_ids(["visit"]).to_pandas()


@pytest.mark.skipif(importlib.util.find_spec("pandas") is None, reason="pandas is not installed here")
def test_to_pandas_gives_the_table_as_a_data_frame(repo):
    frame = repo.query_datasets("calexp", collections=["old"]).to_pandas()
    assert len(frame) == 16 and list(frame.columns) == repo.query_datasets(
        "calexp", collections=["old"]).to_arrow().column_names
    assert sorted(repo.query_data_ids(["visit"]).to_pandas()["visit"]) == [903334, 903336, 903338, 903340]


def test_bulk_inserts_leave_sqlite_statistics_that_pick_the_visit_index_and_large_tables_match(make_butler, backend):
    """No manual ANALYZE: without statistics SQLite scans a whole run for a one-visit query."""
    if not backend.startswith("sqlite"):
        pytest.skip("PostgreSQL keeps its own statistics (autovacuum)")
    from skybutler import DataId, DatasetRef
    from skybutler.model import new_dataset_id
    from support.records import insert_records

    butler = make_butler()
    visits = {903334 + 2 * i: "HSC-R" for i in range(12)}
    insert_records(butler, visits=visits, detectors=range(100), skymap=False)
    butler.register_dataset_type("calexp", CALEXP_DIMS, "dict")
    dt = butler.registry.get_dataset_type("calexp")
    butler.registry.register_collection("run")
    pairs = [(v, d) for v in visits for d in range(100)]
    for start in range(0, len(pairs), 400):  # three transactions, as put_many batches would be
        butler.registry.insert_datasets([
            DatasetRef(new_dataset_id(), dt, DataId({"instrument": "HSC", "visit": v, "detector": d}), "run")
            for v, d in pairs[start:start + 400]])
    with butler.registry.engine.connect() as conn:
        stats = dict(conn.exec_driver_sql("SELECT idx, stat FROM sqlite_stat1 WHERE tbl = 'dataset'").all())
        plan = conn.exec_driver_sql(
            "EXPLAIN QUERY PLAN SELECT id FROM dataset WHERE run_id = 1 AND dataset_type_id = 1 AND visit = 903334"
        ).all()
    assert "ix_dataset_run" in stats and "ix_dataset_visit" in stats
    assert "ix_dataset_visit" in plan[-1][-1]
    assert len(list(butler.query_datasets("calexp", collections=["run"], where="visit = 903336"))) == 100
    # Large enough for a SQLite file to be read by ADBC when installed: same rows as the refs.
    assert len(assert_same(butler, "calexp", collections=["run"])) == 1200
    data_ids = list(butler.query_data_ids(["visit", "detector"], datasets=["calexp"], collections=["run"]))
    table = butler.query_data_ids(["visit", "detector"], datasets=["calexp"], collections=["run"]).to_arrow()
    assert len(data_ids) == 1200 and table.to_pylist() == [dict(d) for d in data_ids]


def test_large_results_as_one_table_or_as_batches_hold_the_refs(make_butler, backend):
    """Past a few hundred rows a table is read again (through ADBC when installed): same rows, any batch size."""
    from skybutler import DataId, DatasetRef
    from skybutler.model import new_dataset_id
    from support.records import insert_records

    butler = make_butler()
    visits = {903334 + 2 * i: "HSC-R" for i in range(7)}
    insert_records(butler, visits=visits, detectors=range(100), skymap=False)
    butler.register_dataset_type("calexp", CALEXP_DIMS, "dict")
    dt = butler.registry.get_dataset_type("calexp")
    for run in ("a", "b"):
        butler.registry.register_collection(run)
        butler.registry.insert_datasets([
            DatasetRef(new_dataset_id(), dt, DataId({"instrument": "HSC", "visit": v, "detector": d}), run)
            for v in visits for d in range(100) if (d % 2 == 0) == (run == "a")])
    butler.registry.set_chain("both", ["a", "b"])
    refs = assert_same(butler, "calexp", collections=["both"])
    assert len(refs) == 700 and {r.run for r in refs} == {"a", "b"}
    batches = list(butler.query_datasets("calexp", collections=["both"]).arrow_batches(256))
    assert [b.num_rows for b in batches] == [256, 256, 188]
    table = pa.Table.from_batches(batches)
    assert table.schema == butler.query_datasets("calexp", collections=["both"]).to_arrow().schema
    assert rows_of_table(table, list(dt.dimensions)) == rows_of_refs(refs)
    with_files = butler.query_datasets("calexp", collections=["both"]).to_arrow(files=True)
    assert with_files.num_rows == 700 and with_files.column("path").null_count == 700
    data_ids = butler.query_data_ids(["visit", "detector"], datasets=["calexp"], collections=["both"])
    batches = list(data_ids.arrow_batches(300))
    assert [b.num_rows for b in batches] == [300, 300, 100]
    assert sorted(map(DataId, pa.Table.from_batches(batches).to_pylist()), key=str) == \
        sorted((r.data_id for r in refs), key=str)


@pytest.mark.parametrize("backend", ["sqlite-local"])
def test_writes_after_large_query_tables_are_stored_for_every_process(make_butler, tmp_path):
    """A put after a large query table in the same process is seen by another process.

    Before: the table was read by ADBC's SQLite driver, whose own copy of SQLite deleted
    the WAL and its shared memory when its connection closed, under this process's open
    connections. The next put returned its ref, but committed into the deleted WAL: no
    other process ever saw it, and a new connection in this one failed ("disk I/O error").
    """
    import subprocess
    import sys

    from skybutler import Butler

    butler = make_butler(records=True, run="r")
    butler.register_dataset_type("meta", ["instrument", "detector"], "dict")
    butler.put_many([({"d": d}, "meta", {"instrument": "HSC", "detector": d}) for d in range(2)])
    records = [{"instrument": "HSC", "detector": d} for d in range(10, 3010)]
    butler.insert_dimension_records("detector", records)
    butler.put_many([({"d": r["detector"]}, "meta", r) for r in records])
    for _ in range(2):
        assert butler.query_datasets("meta", collections=["r"]).to_arrow().num_rows == 3002
        assert len(list(butler.query_datasets("meta", collections=["r"]))) == 3002
    after = butler.put({"d": 1}, "meta", instrument="HSC", detector=1, run="later")

    with Butler(butler.root) as again:  # a new connection in this process
        assert again.find_dataset("meta", instrument="HSC", detector=1, collections=["later"]) == after
    seen = subprocess.run([sys.executable, "-c", (
        "import sys; from skybutler import Butler; b = Butler(sys.argv[1]); "
        "print(b.find_dataset('meta', instrument='HSC', detector=1, collections=['later']).id)"), str(butler.root)],
        capture_output=True, text=True, timeout=120)
    assert seen.stdout.strip() == str(after.id), seen.stderr[-2000:]


def _stored_refs(butler, runs, *, visits=7):
    """calexps of ``visits`` x 100 detectors split between ``runs``, with ids chosen to start
    and end with zero bytes (and all ones) among random ones; returns the refs as stored."""
    from skybutler import DataId, DatasetRef
    from support.records import insert_records

    visit_ids = {903334 + 2 * i: "HSC-R" for i in range(visits)}
    insert_records(butler, visits=visit_ids, detectors=range(100), skymap=False)
    butler.register_dataset_type("calexp", CALEXP_DIMS, "dict")
    dt = butler.registry.get_dataset_type("calexp")
    special = [uuid.UUID(bytes=bytes(15) + b"\x01"), uuid.UUID(bytes=b"\x01" + bytes(15)),
               uuid.UUID(bytes=b"\xff" * 16), uuid.UUID(bytes=bytes(8) + b"\x80" + bytes(7))]
    pairs = [(v, d) for v in visit_ids for d in range(100)]
    ids = special + [uuid.uuid4() for _ in range(len(pairs) - len(special))]
    stored = [DatasetRef(i, dt, DataId({"instrument": "HSC", "visit": v, "detector": d}), runs[k % len(runs)])
              for k, (i, (v, d)) in enumerate(zip(ids, pairs, strict=True))]
    for run in runs:
        butler.registry.register_collection(run)
        butler.registry.insert_datasets([r for r in stored if r.run == run])
    return stored


def test_a_large_result_gives_the_refs_as_stored(make_butler, backend):
    """Refs made column-wise over several chunks (one run: no run column read; a chain: one
    per row) are the refs as stored, one by one: ids, data ids, runs."""
    butler = make_butler()
    stored = _stored_refs(butler, ["a", "b"])
    butler.registry.set_chain("both", ["a", "b"])
    for collections, expected in ((["a"], [r for r in stored if r.run == "a"]), (["both"], stored)):
        refs = list(butler.query_datasets("calexp", collections=collections))
        assert len(refs) == len(expected) and set(refs) == set(expected)
        by_id = {r.id: r for r in expected}
        for ref in refs:
            want = by_id[ref.id]
            assert type(ref.id) is uuid.UUID and ref.id.bytes == want.id.bytes and str(ref.id) == str(want.id)
            assert ref.data_id == want.data_id and hash(ref.data_id) == hash(want.data_id)
            assert ref.data_id.key() == want.data_id.key() and dict(ref.data_id.implied) == {}
            assert [type(v) for v in ref.data_id.values()] == [str, int, int]
            assert ref.run == want.run and ref.dataset_type == want.dataset_type and ref.extra == {}
        assert rows_of_table(butler.query_datasets("calexp", collections=collections).to_arrow(),
                             CALEXP_DIMS) == rows_of_refs(expected)


def test_a_large_result_read_again_sees_what_was_committed_since(make_butler, backend):
    """Reads between writes see each write, and a transaction's reads its own rows."""
    from skybutler import DataId, DatasetRef
    from skybutler.model import new_dataset_id

    butler = make_butler()
    stored = _stored_refs(butler, ["a"], visits=6)
    dt = butler.registry.get_dataset_type("calexp")
    assert len(list(butler.query_datasets("calexp", collections=["a"]))) == 600
    assert butler.query_datasets("calexp", collections=["a"]).to_arrow().num_rows == 600
    more = [DatasetRef(new_dataset_id(), dt, DataId({"instrument": "HSC", "visit": 903346, "detector": d}), "a")
            for d in range(100)]
    butler.registry.insert_datasets(more)
    assert set(butler.query_datasets("calexp", collections=["a"])) == set(stored + more)
    assert butler.query_datasets("calexp", collections=["a"]).to_arrow().num_rows == 700
    # Inside a write transaction its own uncommitted rows are read.
    last = [DatasetRef(new_dataset_id(), dt, DataId({"instrument": "HSC", "visit": 903348, "detector": d}), "a")
            for d in range(100)]
    with butler.transaction():
        butler.registry.insert_datasets(last)
        assert set(butler.query_datasets("calexp", collections=["a"])) == set(stored + more + last)
        assert butler.query_datasets("calexp", collections=["a"]).to_arrow().num_rows == 800


def test_a_repository_made_again_at_the_same_path_is_read_anew(tmp_path):
    """A registry made anew at the same path is read anew (nothing of the old file is kept)."""
    import shutil

    from skybutler import Butler

    found = []
    for _ in range(2):
        butler = Butler.create(tmp_path / "repo")
        stored = _stored_refs(butler, ["a"], visits=4)
        assert set(butler.query_datasets("calexp", collections=["a"])) == set(stored)
        found.append(butler.query_datasets("calexp", collections=["a"]).to_arrow().column("id").to_pylist())
        assert sorted(found[-1]) == sorted(r.id for r in stored)
        butler.close()
        shutil.rmtree(tmp_path / "repo")
    assert set(found[0]) != set(found[1])


def test_a_small_ref_result_does_not_load_the_arrow_driver(tmp_path):
    """A process that only reads a visit's refs never imports ADBC or pyarrow (tens of ms at first use)."""
    import subprocess
    import sys

    from skybutler import Butler

    butler = Butler.create(tmp_path / "repo")
    _stored_refs(butler, ["a"], visits=3)
    butler.close()
    code = ("import sys; from skybutler import Butler; b = Butler(sys.argv[1]); "
            "n = len(list(b.query_datasets('calexp', collections=['a'], where='visit = 903336'))); "
            "print(n, sorted(m for m in ('pyarrow', 'adbc_driver_sqlite', 'adbc_driver_manager') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path / "repo")], capture_output=True, text=True,
                          check=True)
    assert done.stdout.split() == ["100", "[]"]


def test_a_query_repeated_after_its_chain_changed_searches_the_new_chain(repo):
    """Plans of where-less queries are kept per search path: a redefined chain is searched anew."""
    first = list(repo.query_datasets("calexp", collections=["chain"]))
    assert {r.run for r in first} == {"new", "old"} and len(first) == 16
    repo.registry.set_chain("chain", ["old"])
    assert {r.run for r in repo.query_datasets("calexp", collections=["chain"])} == {"old"}
    assert set(repo.query_datasets("calexp", collections=["chain"]).to_arrow().column("run").to_pylist()) == {"old"}
    repo.registry.set_chain("chain", ["new"])
    assert len(list(repo.query_datasets("calexp", collections=["chain"]))) == 8
    repo.put({"run": "new"}, "calexp", instrument="HSC", visit=903336, detector=0, run="new")
    assert len(list(repo.query_datasets("calexp", collections=["chain"]))) == 9
    assert [len(list(repo.query_datasets("calexp", collections=["chain"], find_first=f))) for f in (True, False)] == [9, 9]


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc to list open files")
def test_a_closed_repository_keeps_no_file_open_for_its_tables(tmp_path):
    """A closed repository leaves no file of its registry open, once tables and refs were read."""
    from skybutler import Butler

    butler = Butler.create(tmp_path / "repo")
    _stored_refs(butler, ["a"], visits=3)
    assert butler.query_datasets("calexp", collections=["a"]).to_arrow().num_rows == 300
    assert len(list(butler.query_datasets("calexp", collections=["a"]))) == 300
    butler.close()
    registry = str(tmp_path / "repo")
    open_files = []
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            open_files.append(os.readlink(f"/proc/self/fd/{fd}"))
    assert [f for f in open_files if f.startswith(registry)] == []


def test_a_table_of_values_holding_separators_matches_the_refs(make_butler, backend):
    """On SQLite a table's columns are read concatenated; a value holding a separator (a
    comma, the unit separator) is read as it is: the table still holds exactly the refs."""
    butler = make_butler()
    odd = "A\x1fB,C"
    butler.insert_dimension_records("instrument", [{"instrument": odd, "class_name": "x"},
                                                   {"instrument": "HSC", "class_name": "x"}])
    butler.insert_dimension_records("detector", [{"instrument": i, "detector": k} for i in (odd, "HSC") for k in range(3)])
    butler.register_dataset_type("meta", ["instrument", "detector"], "dict")
    butler.put_many([({"k": k}, "meta", {"instrument": i, "detector": k}) for i in (odd, "HSC") for k in range(3)],
                    run="r")
    refs = assert_same(butler, "meta", collections=["r"])
    assert sorted(r.data_id["instrument"] for r in refs) == [odd] * 3 + ["HSC"] * 3


@pytest.mark.parametrize("backend", ["sqlite-local"])
def test_a_table_too_large_for_one_concatenated_column_is_read_from_rows(make_butler):
    """SQLite's longest string (1 GB by default: tens of millions of ids) bounds a concatenated column;
    past it the table is read from rows, not refused. The limit is lowered on the connection here."""
    import sqlite3

    butler = make_butler(records=True, run="r")
    butler.register_dataset_type("meta", ["instrument", "detector"], "dict")
    records = [{"instrument": "HSC", "detector": d} for d in range(10, 1010)]
    butler.insert_dimension_records("detector", records)
    butler.put_many([({"d": r["detector"]}, "meta", r) for r in records])
    refs = list(butler.query_datasets("meta", collections=["r"]))
    with butler.transaction():  # the table is read on the transaction's connection, whose limit is lowered
        with butler.registry.database.read() as conn:
            dbapi = conn.connection.dbapi_connection
        before = dbapi.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, 10_000)  # 1,000 ids are 32,000 hex digits
        try:
            with pytest.raises(sqlite3.Error, match="too big"):  # the limit does bite
                dbapi.execute("SELECT group_concat(id, '') FROM dataset").fetchall()
            table = butler.query_datasets("meta", collections=["r"]).to_arrow()
        finally:
            dbapi.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, before)
    assert sorted(table.column("id").to_pylist()) == sorted(r.id for r in refs)
