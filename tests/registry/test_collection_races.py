"""Collection changes racing each other keep the rules a single writer keeps.

Each test holds writer A's transaction open after its change (not yet committed) while
writer B, another butler on the same repository, makes a conflicting change:

- two certifications of one calibration over overlapping ranges: one of them must be
  refused, or a lookup at a time in both ranges finds two calibrations (an ambiguous
  lookup is an error, not a pick);
- two chains each made to contain the other: one of them must be refused, or the chain
  contains itself;
- two datasets of one type and data id tagged in one TAGGED collection: the later one
  replaces the other, as for one writer.

On SQLite the write lock serialises the two; on PostgreSQL (READ COMMITTED) B's checks
did not see A's uncommitted rows and both committed.
"""

from __future__ import annotations

import pytest

from skybutler import Butler, CollectionError, CollectionType
from support.holding import while_a_holds


@pytest.fixture(params=["sqlite-local", "postgresql-local"])
def backend(request):
    return request.param


@pytest.fixture
def butler(make_butler):
    butler = make_butler(run="u/me/run", records=True)
    butler.register_dataset_type("bias", ["detector"], "dict", is_calibration=True)
    return butler


def test_two_writers_never_certify_one_calibration_over_overlapping_ranges(butler):
    first = butler.put({"b": 1}, "bias", instrument="HSC", detector=0)
    second = butler.put({"b": 2}, "bias", instrument="HSC", detector=0, run="u/me/run2")
    a, b = Butler(butler.root, writeable=True), Butler(butler.root, writeable=True)
    a.collections.register("calib", CollectionType.CALIBRATION)

    outcome = while_a_holds(
        a, lambda: a.collections.certify("calib", [first], "2026-01-01", "2027-01-01"),
        lambda: b.collections.certify("calib", [second], "2026-06-01", "2027-06-01"))

    assert isinstance(outcome.get("error"), CollectionError), outcome
    assert "overlaps" in str(outcome["error"])
    certified = butler.collections.certifications("calib")
    assert [c["dataset_id"] for c in certified] == [first.id]
    assert butler.find_dataset("bias", {"instrument": "HSC", "detector": 0}, collections=["calib"],
                               time="2026-07-01") == first


def test_two_writers_never_make_two_chains_contain_each_other(butler):
    a, b = Butler(butler.root, writeable=True), Butler(butler.root, writeable=True)
    a.collections.set_chain("left", ["u/me/run"])
    a.collections.set_chain("right", ["u/me/run"])

    outcome = while_a_holds(a, lambda: a.collections.set_chain("left", ["right"]),
                            lambda: b.collections.set_chain("right", ["left"]))

    assert isinstance(outcome.get("error"), CollectionError), outcome
    assert "cycle" in str(outcome["error"])
    assert butler.collections.resolve(["left"]) == ["u/me/run"]
    assert butler.collections.resolve(["right"]) == ["u/me/run"]


def test_two_writers_redefining_one_chain_leave_one_of_the_definitions(butler):
    butler.collections.register("other", CollectionType.RUN)
    a, b = Butler(butler.root, writeable=True), Butler(butler.root, writeable=True)
    a.collections.set_chain("defaults", ["u/me/run"])

    outcome = while_a_holds(a, lambda: a.collections.set_chain("defaults", ["u/me/run", "other"]),
                            lambda: b.collections.set_chain("defaults", ["other"]))

    assert outcome == {"done": True}  # B waited for A, then replaced A's definition
    assert butler.collections.resolve(["defaults"]) == ["other"]


def test_two_writers_tagging_one_data_id_leave_the_later_dataset_tagged(butler):
    butler.register_dataset_type("meta", ["detector"], "dict")
    first = butler.put({"m": 1}, "meta", instrument="HSC", detector=0)
    second = butler.put({"m": 2}, "meta", instrument="HSC", detector=0, run="u/me/run2")
    a, b = Butler(butler.root, writeable=True), Butler(butler.root, writeable=True)
    a.collections.register("best", CollectionType.TAGGED)

    outcome = while_a_holds(a, lambda: a.collections.tag("best", [first]), lambda: b.collections.tag("best", [second]))

    assert outcome == {"done": True}
    assert list(butler.query_datasets("meta", collections=["best"])) == [second]
