"""The dimension universe is data: new dimensions and columns need a YAML edit, not code."""

from __future__ import annotations

import pytest

from skybutler import Butler, ConfigError, DataIdError, DimensionUniverse, Region
from skybutler.dimensions import overlapping_pairs


def test_default_universe_relations():
    u = DimensionUniverse.default()
    assert u.closure(["visit", "detector"]) == ("instrument", "detector", "visit")
    assert u.implied_closure("visit") == ("physical_filter", "day_obs", "band")
    assert u.closure(["patch"]) == ("skymap", "tract", "patch")


def test_a_new_dimension_and_metadata_column_need_no_code(tmp_path):
    doc = DimensionUniverse.default().document
    doc["elements"]["visit"]["metadata"]["airmass"] = "float"
    doc["elements"]["campaign"] = {"key_type": "str", "metadata": {"purpose": "str"}}
    path = tmp_path / "universe.yaml"
    path.write_text(DimensionUniverse(doc).to_yaml())
    butler = Butler.create(tmp_path / "repo", universe=path, run="r")
    butler.insert_dimension_records("campaign", [{"campaign": "DRP-2026", "purpose": "test"}])
    butler.insert_dimension_records("instrument", [{"instrument": "HSC"}])
    butler.insert_dimension_records("band", [{"band": "r"}])
    butler.insert_dimension_records("physical_filter", [{"instrument": "HSC", "physical_filter": "HSC-R", "band": "r"}])
    butler.insert_dimension_records("day_obs", [{"instrument": "HSC", "day_obs": 20260101}])
    butler.insert_dimension_records("visit", [
        {"instrument": "HSC", "visit": v, "physical_filter": "HSC-R", "day_obs": 20260101, "airmass": 1.0 + v / 10}
        for v in (1, 2, 3)])
    butler.register_dataset_type("summary", ["campaign", "visit"], "dict")
    for v in (1, 2, 3):
        butler.put({"v": v}, "summary", campaign="DRP-2026", instrument="HSC", visit=v)
    refs = list(butler.query_datasets("summary", where="visit.airmass > 1.15 AND band = 'r'"))
    assert sorted(r.data_id["visit"] for r in refs) == [2, 3]
    # Reopening reads the universe from the database, not from the file.
    path.unlink()
    assert "campaign" in Butler(tmp_path / "repo").universe.dimensions


@pytest.mark.parametrize("doc, match", [
    ({"elements": {"a": {"key_type": "float"}}}, "key_type"),
    ({"elements": {"a": {"requires": ["nope"]}}}, "unknown dimension 'nope'"),
    ({"elements": {"a": {"metadata": {"x": "complex"}}}}, "unknown type"),
    ({"nothing": 1}, "elements"),
])
def test_bad_universe_files_are_rejected_with_the_reason(doc, match):
    with pytest.raises(ConfigError, match=match):
        DimensionUniverse(doc)


def test_data_id_validation_names_the_problem():
    u = DimensionUniverse.default()
    assert u.data_id(["visit"], instrument="HSC", visit="903334")["visit"] == 903334
    with pytest.raises(DataIdError, match="missing visit"):
        u.data_id(["visit"], instrument="HSC")
    with pytest.raises(DataIdError, match="unexpected key"):
        u.data_id(["visit"], instrument="HSC", visit=1, patch=3)
    with pytest.raises(DataIdError, match="must be a string"):
        u.data_id(["instrument"], instrument=5)


def square(ra, dec, half):
    return Region.from_vertices([(ra - half, dec - half), (ra + half, dec - half),
                                 (ra + half, dec + half), (ra - half, dec + half)])


def test_overlaps_need_shared_area_not_just_a_touching_edge():
    a = square(150.0, 2.0, 0.1)
    assert a.overlaps(square(150.15, 2.0, 0.1))
    assert not a.overlaps(square(150.2, 2.0, 0.1))  # shares only the edge at ra=150.1
    assert not a.overlaps(square(10.0, -40.0, 0.1))
    assert a.overlaps(square(150.0, 2.0, 0.01))  # containment counts


def test_overlaps_across_ra_zero():
    left = Region.from_vertices([(359.9, -0.1), (0.1, -0.1), (0.1, 0.1), (359.9, 0.1)])
    assert left.overlaps(square(0.05, 0.0, 0.02))
    assert overlapping_pairs([left], [square(0.05, 0.0, 0.02), square(180.0, 0.0, 0.1)]) == [(0, 0)]
