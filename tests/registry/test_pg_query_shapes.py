"""Small dataset queries on PostgreSQL: compiled once per shape, planned for their own values.

`Database.rows_raw` runs the first read of a query (at most a visit's datasets) on
psycopg's cursor, with the SQL compiled once per statement shape (SQLAlchemy's cache key:
the statement without its values) and each call's values bound to it, unprepared so that
the server plans each query for its values. These tests say what that must keep: every
query answers with its own values, whatever was registered or removed since its shape was
compiled, through this butler or another one; and its rows are those SQLAlchemy gives.
"""

from __future__ import annotations

import re

import pytest

from skybutler import Butler, CollectionError, CollectionType
from skybutler.registry._database import Database

pytestmark = pytest.mark.parametrize("backend", ["postgresql-local"])

VISITS = (903334, 903336, 903338, 903340)


@pytest.fixture
def butler(make_butler):
    """calexps of 4 visits x 4 detectors in run ``old``, visits 903334 and 903338 again in ``new``."""
    b = make_butler(records=True)
    b.register_dataset_type("calexp", ["instrument", "visit", "detector"], "dict")
    for run, visits in (("old", VISITS), ("new", VISITS[::2])):
        b.put_many([({"v": v, "d": d}, "calexp", {"instrument": "HSC", "visit": v, "detector": d})
                    for v in visits for d in range(4)], run=run)
    return b


def detectors(refs) -> list[tuple[int, int, str]]:
    return sorted((r.data_id["visit"], r.data_id["detector"], r.run) for r in refs)


def visit_query(b, visit: int, collections=("old",)) -> list:
    return list(b.query_datasets("calexp", collections=list(collections), where=f"visit = {visit}"))


def shapes(b) -> int:
    return len(b.registry.database._shapes)


def test_queries_of_one_shape_are_compiled_once_and_each_answers_with_its_own_values(butler):
    before = shapes(butler)
    for visit in VISITS:
        assert detectors(visit_query(butler, visit)) == [(visit, d, "old") for d in range(4)]
    assert shapes(butler) == before + 1
    # Another run is another value of the same shape; another search path is another shape.
    assert detectors(visit_query(butler, VISITS[0], ["new"])) == [(VISITS[0], d, "new") for d in range(4)]
    assert shapes(butler) == before + 1
    assert detectors(visit_query(butler, VISITS[1], ["new", "old"])) == [(VISITS[1], d, "old") for d in range(4)]
    assert detectors(butler.query_datasets("calexp", collections=["old"], where="visit = 903336 AND detector > 1")) \
        == [(903336, 2, "old"), (903336, 3, "old")]


def test_a_dataset_query_is_never_a_prepared_statement(butler, tmp_path):
    """psycopg prepares a statement run five times; the server may then keep a generic plan for every value."""
    from test_pg_round_trips import RoundTrips

    trips = RoundTrips(butler.registry, tmp_path / "libpq.trace")
    for i in range(12):
        assert len(visit_query(butler, VISITS[i % 4])) == 4
    parses = re.findall(r'\tParse\t "([^"]*)" "([^"]*)"', trips.text())
    queries = [name for name, sql in parses if "LIMIT" in sql and ".visit" in sql]
    assert len(queries) == 12 and set(queries) == {""}  # unnamed every time: planned for its own values


def test_a_run_removed_and_made_again_after_its_shape_was_compiled_answers_with_its_new_datasets(butler):
    assert len(visit_query(butler, VISITS[1])) == 4
    butler.remove_runs(["old"])
    remade = butler.put_many([({"v": VISITS[1], "d": d}, "calexp",
                                {"instrument": "HSC", "visit": VISITS[1], "detector": d}) for d in (1, 3)], run="old")

    assert {r.id for r in visit_query(butler, VISITS[1])} == {r.id for r in remade}
    assert visit_query(butler, VISITS[0]) == []


def test_a_collection_registered_or_retyped_after_the_shape_was_compiled_is_searched_as_it_is_now(butler):
    assert len(visit_query(butler, VISITS[0], ["new"])) == 4
    tagged = [r for r in visit_query(butler, VISITS[0], ["old"]) if r.data_id["detector"] < 2]
    butler.registry.register_collection("picked", CollectionType.TAGGED)
    butler.registry.associate("picked", tagged)
    butler.registry.set_chain("both", ["picked", "new"])

    assert detectors(visit_query(butler, VISITS[0], ["picked"])) == [(VISITS[0], 0, "old"), (VISITS[0], 1, "old")]
    assert {r.id for r in visit_query(butler, VISITS[0], ["both"])} == \
        {r.id for r in tagged} | {r.id for r in visit_query(butler, VISITS[0], ["new"]) if r.data_id["detector"] >= 2}


def test_a_dataset_type_registered_after_the_shape_was_compiled_gives_its_own_datasets(butler):
    assert len(visit_query(butler, VISITS[0])) == 4
    butler.register_dataset_type("visit_summary", ["instrument", "visit"], "dict")
    stored = butler.put({"v": VISITS[0]}, "visit_summary", {"instrument": "HSC", "visit": VISITS[0]}, run="old")

    refs = list(butler.query_datasets("visit_summary", collections=["old"], where=f"visit = {VISITS[0]}"))
    assert refs == [stored] and refs[0].data_id.required_items == {"instrument": "HSC", "visit": VISITS[0]}
    assert list(butler.query_datasets("visit_summary", collections=["old"], where=f"visit = {VISITS[1]}")) == []
    assert len(visit_query(butler, VISITS[0])) == 4


def test_two_butlers_on_one_repository_each_see_what_the_other_wrote(butler):
    other = Butler(butler.root)
    try:
        assert len(visit_query(other, VISITS[2])) == 4
        assert len(visit_query(butler, VISITS[2])) == 4
        butler.remove_runs(["old"])
        butler.put({"v": 0}, "calexp", {"instrument": "HSC", "visit": VISITS[2], "detector": 3}, run="old")

        assert detectors(visit_query(other, VISITS[2])) == [(VISITS[2], 3, "old")]
        other.remove_runs(["old"])
        with pytest.raises(CollectionError, match="Unknown collection 'old'"):
            visit_query(butler, VISITS[2])
    finally:
        other.close()


QUERIES = [
    dict(collections=["old"], where="visit = 903334"),
    dict(collections=["old"], where="visit IN (903334, 903338) AND detector != 2"),
    dict(collections=["old"], where="visit = :v", bind={"v": 903336}),
    dict(collections=["old"], where="detector IN (1..3)"),
    dict(collections=["old"], where="band = 'r'"),
    dict(collections=["old"], where="visit.exposure_time > 0"),
    dict(collections=["old"], data_id={"visit": 903338}),
    dict(collections=["new", "old"], where="detector = 1"),
    dict(collections=["new", "old"], where="detector = 1", find_first=False),
    dict(collections=["old"], where="visit = 903334 AND run = 'old'"),
    dict(collections=["old"], where="glob(physical_filter, 'HSC-*')"),
    dict(collections=["old"], where="visit_detector_region.region OVERLAPS CIRCLE(150.1, 2.2, 0.5)"),
]


@pytest.mark.parametrize("query", QUERIES, ids=[str(q) for q in QUERIES])
def test_rows_read_on_the_cursor_are_those_sqlalchemy_reads(butler, query, monkeypatch):
    raw = detectors(butler.query_datasets("calexp", **query))
    ids = sorted(r.id for r in butler.query_datasets("calexp", **query))

    monkeypatch.setattr(Database, "rows_raw", lambda self, conn, stmt: None)  # every statement through SQLAlchemy
    assert detectors(butler.query_datasets("calexp", **query)) == raw
    assert sorted(r.id for r in butler.query_datasets("calexp", **query)) == ids
    assert raw  # each query finds something


def test_a_query_of_more_rows_than_the_first_read_streams_them_all(butler, monkeypatch):
    import skybutler.registry._query_results as query_results

    monkeypatch.setattr(query_results, "_FIRST", 5)
    refs = list(butler.query_datasets("calexp", collections=["old"]))

    assert len(refs) == len({r.id for r in refs}) == 16


def test_errors_of_a_query_on_the_cursor_are_sqlalchemys(butler):
    import sqlalchemy as sa

    registry = butler.registry
    with registry.database.read(autocommit=True) as conn:
        bad = sa.select(registry.tables.dataset.c.id).where(
            registry.tables.dataset.c.visit == sa.bindparam("v", 1, type_=sa.Integer)).limit(sa.bindparam("n", -1))
        with pytest.raises(sa.exc.DataError):
            registry.database.rows_raw(conn, bad)
    assert len(visit_query(butler, VISITS[0])) == 4
