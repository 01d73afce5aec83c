"""One meaning of a collection search: RUN, TAGGED, CHAINED (nested) and CALIBRATION collections.

Validity ranges are begin-inclusive and end-exclusive. Without a time, a calibration
collection is skipped for types that are not calibrations, and several certified
datasets for one data id are an error for a find-first lookup (listed once each
otherwise). Every lookup — query, find, get, data id constraints, the graph builder's
candidates — agrees.
"""

from __future__ import annotations

import datetime

import pytest

from skybutler import CollectionError, CollectionType, DimensionError
from skybutler.registry import pipeline_sql

T0 = datetime.datetime(2026, 3, 1)
T1 = datetime.datetime(2026, 3, 15, 6, 5)
T2 = datetime.datetime(2026, 4, 1)
SECOND = datetime.timedelta(seconds=1)


@pytest.fixture(params=["sqlite-memory", "postgresql-local"])
def backend(request):
    # Collection semantics live in the registry: one SQLite and one PostgreSQL run suffice.
    return request.param


@pytest.fixture
def repo(make_butler):
    """Biases A (run calib/1) and B (calib/2) for detectors 0 and 1, certified in ``calib``.

    Detector 0: A over [T0, T1), B over [T1, T2). Detector 1: A over [T0, T1) and again
    over [T1, T2) (one dataset, two ranges). Calexps in run ``out``.
    """
    butler = make_butler(records=True)
    butler.register_dataset_type("bias", ["detector"], "dict", is_calibration=True)
    butler.register_dataset_type("calexp", ["visit", "detector"], "dict")
    a = {d: butler.put({"bias": "A", "d": d}, "bias", instrument="HSC", detector=d, run="calib/1") for d in (0, 1)}
    b0 = butler.put({"bias": "B"}, "bias", instrument="HSC", detector=0, run="calib/2")
    butler.registry.register_collection("calib", CollectionType.CALIBRATION)
    butler.registry.certify("calib", [a[0]], T0, T1)
    butler.registry.certify("calib", [b0], T1, T2)
    butler.registry.certify("calib", [a[1]], T0, T1)
    butler.registry.certify("calib", [a[1]], T1, T2)
    calexp = butler.put({"calexp": 1}, "calexp", instrument="HSC", visit=903334, detector=0, run="out")
    return butler, {"A0": a[0], "A1": a[1], "B0": b0, "calexp": calexp}


def ids(refs):
    return sorted(str(r.id) for r in refs)


def test_without_a_time_find_first_over_two_certified_datasets_is_an_error_naming_them(repo):
    butler, refs = repo
    with pytest.raises(CollectionError) as info:
        list(butler.query_datasets("bias", collections=["calib"]))
    message = str(info.value)
    assert "detector=0" in message and "2 datasets certified" in message
    assert str(refs["A0"].id) in message and str(refs["B0"].id) in message
    assert T0.isoformat() in message and T1.isoformat() in message and "\n" not in message
    with pytest.raises(CollectionError, match="give a time"):
        butler.find_dataset("bias", instrument="HSC", detector=0, collections=["calib"])


def test_without_a_time_the_non_find_first_form_lists_each_dataset_once(repo):
    butler, refs = repo
    found = list(butler.query_datasets("bias", collections=["calib"], find_first=False))
    assert ids(found) == ids([refs["A0"], refs["B0"], refs["A1"]])


def test_one_dataset_certified_over_two_ranges_is_found_without_a_time(repo):
    butler, refs = repo
    assert butler.find_dataset("bias", instrument="HSC", detector=1, collections=["calib"]) == refs["A1"]
    found = list(butler.query_datasets("bias", collections=["calib"], where="detector = 1"))
    assert found == [refs["A1"]]


@pytest.mark.parametrize(("when", "detector0", "detector1"), [
    (T0 - SECOND, None, None),      # before every range
    (T0, "A0", "A1"),               # begin is inclusive
    (T1 - SECOND, "A0", "A1"),
    (T1, "B0", "A1"),               # end is exclusive: the next range starts here
    (T2 - SECOND, "B0", "A1"),
    (T2, None, None),               # end is exclusive
])
def test_with_a_time_validity_begins_inclusive_and_ends_exclusive(repo, when, detector0, detector1):
    butler, refs = repo
    for detector, want in ((0, detector0), (1, detector1)):
        got = butler.find_dataset("bias", instrument="HSC", detector=detector, collections=["calib"], time=when)
        assert got == (refs[want] if want else None)
    queried = {r.data_id["detector"]: r for r in butler.query_datasets("bias", collections=["calib"], time=when)}
    assert queried == {d: refs[w] for d, w in ((0, detector0), (1, detector1)) if w}


def test_a_non_calibration_type_is_found_with_a_calibration_collection_in_the_path(repo):
    butler, refs = repo
    data_id = {"instrument": "HSC", "visit": 903334, "detector": 0}
    assert butler.find_dataset("calexp", data_id, collections=["calib", "out"]) == refs["calexp"]
    assert butler.get("calexp", data_id, collections=["calib", "out"]) == {"calexp": 1}
    assert list(butler.query_datasets("calexp", collections=["calib", "out"])) == [refs["calexp"]]
    # The usual defaults chain: calibrations + outputs, for every type.
    butler.registry.set_chain("defaults", ["calib", "out"])
    assert butler.find_dataset("calexp", data_id, collections=["defaults"]) == refs["calexp"]
    assert butler.find_dataset("bias", instrument="HSC", detector=0, collections=["defaults"], time=T1) == refs["B0"]
    assert [di["visit"] for di in butler.query_data_ids(["visit"], datasets=["calexp"],
                                                        collections=["defaults"])] == [903334]


def test_collections_are_searched_in_order_through_nested_chains(repo):
    butler, refs = repo
    newer = butler.put({"bias": "N"}, "bias", instrument="HSC", detector=0, run="calib/3")
    butler.registry.register_collection("tags", CollectionType.TAGGED)
    butler.registry.associate("tags", [newer])
    butler.registry.set_chain("inner", ["tags", "calib"])
    butler.registry.set_chain("outer", ["inner", "calib/1"])
    # The tagged bias wins at any time; without a time it is found before calib is met.
    assert butler.find_dataset("bias", instrument="HSC", detector=0, collections=["outer"]) == newer
    assert butler.find_dataset("bias", instrument="HSC", detector=1, collections=["outer"], time=T0) == refs["A1"]
    by_detector = {r.data_id["detector"]: r for r in butler.query_datasets("bias", collections=["outer"], time=T0)}
    assert by_detector == {0: newer, 1: refs["A1"]}
    assert butler.registry.resolve_collections(["outer"]) == ["tags", "calib", "calib/1"]


def test_the_graph_builder_candidates_use_the_same_search(repo):
    butler, refs = repo
    candidates = pipeline_sql.calibration_candidates(butler.registry, "bias", ["calib"])
    assert [(rank, begin, end, ref) for rank, begin, end, ref in candidates[("HSC", 0)]] == [
        (0, T0, T1, refs["A0"]), (0, T1, T2, refs["B0"])]
    # A non-calibration type has no candidates in a CALIBRATION collection, and is found in its run.
    assert pipeline_sql.calibration_candidates(butler.registry, "calexp", ["calib"]) == {}
    found = pipeline_sql.dataset_refs_by_key(butler.registry, "calexp", ["calib", "out"])
    dims = butler.registry.get_dataset_type("calexp").dimensions
    assert found == {tuple(refs["calexp"].data_id[d] for d in dims): refs["calexp"]}


def test_a_chain_cycle_through_nested_chains_is_refused_naming_it(repo):
    butler, _ = repo
    butler.registry.set_chain("a", ["out"])
    butler.registry.set_chain("b", ["a"])
    with pytest.raises(CollectionError, match=r"cycle a -> b -> a"):
        butler.registry.set_chain("a", ["b"])
    with pytest.raises(CollectionError, match="cycle"):
        butler.registry.set_chain("b", ["b"])
    # Refused means unchanged: the chains still resolve.
    assert butler.registry.resolve_collections(["b"]) == ["out"]


def test_decertify_splits_a_range_and_lookups_follow(repo):
    butler, refs = repo
    hole = (T0 + datetime.timedelta(days=2), T0 + datetime.timedelta(days=3))
    changed = butler.registry.decertify("calib", "bias", *hole, data_ids=[refs["A0"].data_id])
    assert changed == 1
    ranges = [(c["begin"], c["end"]) for c in butler.registry.certifications("calib", "bias")
              if c["dataset_id"] == refs["A0"].id]
    assert ranges == [(T0, hole[0]), (hole[1], T1)]
    find = lambda when: butler.find_dataset("bias", instrument="HSC", detector=0,  # noqa: E731
                                            collections=["calib"], time=when)
    assert find(hole[0] - SECOND) == refs["A0"]
    assert find(hole[0]) is None and find(hole[1] - SECOND) is None
    assert find(hole[1]) == refs["A0"]
    # Unbounded: every certification of one dataset goes; the other dataset's stay.
    butler.registry.decertify("calib", "bias", refs=[refs["A0"]])
    assert find(T0) is None and find(T1) == refs["B0"]
    # Now detector 0 has one certified dataset: no longer ambiguous without a time.
    assert butler.find_dataset("bias", instrument="HSC", detector=0, collections=["calib"]) == refs["B0"]


def test_disassociate_removes_a_tag_and_associate_refuses_two_datasets_for_one_data_id(repo):
    butler, refs = repo
    butler.registry.register_collection("best", CollectionType.TAGGED)
    butler.registry.associate("best", [refs["A0"], refs["A1"]])
    with pytest.raises(CollectionError, match="one dataset per type and data id"):
        butler.registry.associate("best", [refs["A0"], refs["B0"]])
    assert ids(butler.query_datasets("bias", collections=["best"])) == ids([refs["A0"], refs["A1"]])
    assert butler.registry.disassociate("best", [refs["A0"]]) == 1
    assert list(butler.query_datasets("bias", collections=["best"])) == [refs["A1"]]
    # Associate replaces the dataset tagged for the same type and data id.
    butler.registry.associate("best", [refs["B0"]])
    assert ids(butler.query_datasets("bias", collections=["best"])) == ids([refs["B0"], refs["A1"]])


HAWAII = datetime.timezone(datetime.timedelta(hours=-10))


@pytest.mark.parametrize("given", [
    T1.replace(tzinfo=datetime.UTC).astimezone(HAWAII),           # an aware datetime, HST
    T1.replace(tzinfo=datetime.UTC).astimezone(HAWAII).isoformat(),  # the same as an ISO string with its offset
    T1.isoformat() + "Z",
])
def test_a_time_with_a_time_zone_means_that_instant_in_utc(repo, given):
    """Times are compared in UTC; one with an offset is converted, not read as if it were UTC.

    T1 given in Hawaii time (10 hours behind UTC) is the instant T1, where B0 starts. Before:
    its wall-clock digits were taken as UTC (T1 - 10 h), inside A0's range.
    """
    butler, refs = repo
    assert butler.find_dataset("bias", instrument="HSC", detector=0, collections=["calib"], time=given) == refs["B0"]


def test_a_certification_given_with_a_time_zone_covers_that_utc_range(repo):
    butler, refs = repo
    butler.registry.register_collection("calib_hst", CollectionType.CALIBRATION)
    begin = T0.replace(tzinfo=datetime.UTC).astimezone(HAWAII)
    butler.registry.certify("calib_hst", [refs["A0"]], begin, begin + (T1 - T0))
    (cert,) = butler.registry.certifications("calib_hst")
    assert (cert["begin"], cert["end"]) == (T0, T1)
    assert butler.find_dataset("bias", instrument="HSC", detector=0, collections=["calib_hst"],
                               time=T1 - SECOND) == refs["A0"]
    assert butler.find_dataset("bias", instrument="HSC", detector=0, collections=["calib_hst"], time=T1) is None


def test_a_time_that_is_not_one_is_a_clear_error(repo):
    butler, _ = repo
    with pytest.raises(DimensionError, match="Cannot interpret 'last tuesday' as a time"):
        butler.find_dataset("bias", instrument="HSC", detector=0, collections=["calib"], time="last tuesday")
