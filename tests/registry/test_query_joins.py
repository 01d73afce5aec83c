"""Constraints users write in daf_butler's language: other dimensions, dataset fields, datasets=.

A constraint on a dimension a query does not return joins that dimension (through sky
overlaps when needed), in `query_data_ids`, `query_datasets` and
`query_dimension_records`; dataset fields (``run``, ``collection``, ``id``,
``ingest_date``) filter datasets. Expected answers come from the regions themselves.
"""

from __future__ import annotations

import pytest

from skybutler import QueryError
from skybutler.dimensions import Region
from support.records import DETECTORS, square


@pytest.fixture(params=["sqlite-memory", "postgresql-local"])
def backend(request):
    return request.param


@pytest.fixture
def repo(make_butler):
    butler = make_butler(run="r", records=True)
    # A second tract far away: nothing overlaps it.
    butler.insert_dimension_records("tract", [{"skymap": "rings", "tract": 1, "region": square(160.0, 2.0, 0.3)}])
    butler.register_dataset_type("calexp", ["visit", "detector"], "dict")
    refs = [butler.put({"d": d}, "calexp", instrument="HSC", visit=903334, detector=d) for d in DETECTORS]
    other = butler.put({"d": 0}, "calexp", instrument="HSC", visit=903336, detector=0, run="s")
    return butler, refs, other


def regions(butler, element):
    return {tuple(r[k] for k in butler.universe.elements[element].primary_key): Region.from_vertices(r["region"])
            for r in butler.query_dimension_records(element)}


def test_datasets_constrained_by_a_tract_or_patch_they_lack(repo):
    butler, refs, _ = repo
    assert sorted(r.data_id["detector"] for r in butler.query_datasets("calexp", where="tract = 0")) == [0, 1, 2, 3]
    assert list(butler.query_datasets("calexp", where="tract = 1")) == []
    assert sorted(r.data_id["detector"] for r in butler.query_datasets("calexp", data_id={"tract": 0})) == [0, 1, 2, 3]
    vdr, patches = regions(butler, "visit_detector_region"), regions(butler, "patch")
    for p in range(4):
        want = sorted(d for d in DETECTORS if vdr[("HSC", 903334, d)].overlaps(patches[("rings", 0, p)]))
        got = [r.data_id["detector"] for r in butler.query_datasets("calexp", where=f"tract = 0 AND patch = {p}")]
        assert sorted(got) == want and len(got) == len(set(got))  # each dataset once


def test_dimension_records_constrained_by_other_dimensions(repo):
    butler, _, _ = repo
    assert [r["visit"] for r in butler.query_dimension_records("visit", where="tract = 1")] == []
    assert len(list(butler.query_dimension_records("visit", where="tract = 0"))) == 4
    vdr, patches = regions(butler, "visit_detector_region"), regions(butler, "patch")
    want = [d for d in DETECTORS if vdr[("HSC", 903334, d)].overlaps(patches[("rings", 0, 3)])]
    got = [r["detector"] for r in butler.query_dimension_records("detector", where="visit = 903334 AND patch = 3")]
    assert got == want
    # Own columns still work alone and with others.
    assert [r["visit"] for r in butler.query_dimension_records(
        "visit", where="exposure_time > 40 AND tract = 0")] == [903336, 903340]
    assert [r["visit"] for r in butler.query_dimension_records(
        "visit", where="visit.region OVERLAPS POINT(150.0, 2.0)")] == [903334, 903336, 903338, 903340]


def test_data_ids_over_the_dimensions_of_datasets(repo):
    butler, _, _ = repo
    assert [di["tract"] for di in butler.query_data_ids(["tract"], datasets=["calexp"], collections=["r"])] == [0]
    assert [di["tract"] for di in butler.query_data_ids(["tract"], where="instrument = 'HSC' AND visit = 903334")] == [0]
    patches = {di["patch"] for di in butler.query_data_ids(["patch"], datasets=["calexp"], collections=["s"])}
    vdr, pr = regions(butler, "visit_detector_region"), regions(butler, "patch")
    assert patches == {p for p in range(4) if vdr[("HSC", 903336, 0)].overlaps(pr[("rings", 0, p)])}


def test_dataset_fields_run_collection_id_and_ingest_date(repo):
    butler, refs, other = repo
    both = ["r", "s"]
    assert [r.id for r in butler.query_datasets("calexp", collections=both, where="run = 's'")] == [other.id]
    assert [r.id for r in butler.query_datasets("calexp", collections=both, where="calexp.run = 's'")] == [other.id]
    assert len(list(butler.query_datasets("calexp", collections=both, where="collection = 'r'"))) == 4
    found = list(butler.query_datasets("calexp", collections=both, where=f"id = UUID('{refs[2].id}')"))
    assert found == [refs[2]]
    assert len(list(butler.query_datasets("calexp", collections=both, where="ingest_date > T'2020-01-01T00:00:00'",
                                          find_first=False))) == 5
    assert list(butler.query_datasets("calexp", collections=both, where="ingest_date < T'2020-01-01T00:00:00'")) == []
    with pytest.raises(QueryError, match="Unknown name 'run'"):
        list(butler.query_data_ids(["visit"], where="run = 'r'"))


def test_a_region_matching_more_records_than_a_statement_takes_parameters(make_butler):
    # 12,000 (visit, detector) regions inside one circle: 36,000 key values, more than
    # SQLite accepts as parameters in one statement.
    butler = make_butler()
    butler.insert_dimension_records("instrument", [{"instrument": "HSC"}])
    butler.insert_dimension_records("detector", [{"instrument": "HSC", "detector": d} for d in range(100)])
    butler.insert_dimension_records("visit", [{"instrument": "HSC", "visit": v, "region": square(10, 0, 1)}
                                              for v in range(120)])
    butler.insert_dimension_records("visit_detector_region", [
        {"instrument": "HSC", "visit": v, "detector": d, "region": square(9.5 + (d % 10) * 0.1, -0.5 + (d // 10) * 0.1,
                                                                             0.04)}
        for v in range(120) for d in range(100)])
    found = list(butler.query_data_ids(["visit", "detector"],
                                       where="visit_detector_region.region OVERLAPS CIRCLE(10, 0, 3)"))
    assert len(found) == 12_000
    some = list(butler.query_data_ids(["visit", "detector"],
                                      where="visit_detector_region.region OVERLAPS POINT(9.5, -0.5) AND visit < 3"))
    assert sorted((di["visit"], di["detector"]) for di in some) == [(0, 0), (1, 0), (2, 0)]
