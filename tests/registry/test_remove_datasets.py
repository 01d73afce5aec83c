"""Removing datasets (not runs): their tags, certifications, file rows and files go with them, however many."""

from __future__ import annotations

import pytest

from skybutler import CollectionType
from skybutler.registry import _values


@pytest.fixture
def butler(make_butler, monkeypatch):
    monkeypatch.setattr(_values, "CHUNK", 7)  # several slices of ids on SQLite ...
    monkeypatch.setattr(_values, "ARRAY_CHUNK", 7)  # ... and of arrays on PostgreSQL
    b = make_butler(run="r", records=True)
    b.register_dataset_type("flat", ["instrument", "visit", "detector"], "dict", is_calibration=True)
    return b


def test_removed_datasets_leave_no_tag_certification_row_or_file_and_the_others_keep_theirs(butler):
    pairs = [(r["visit"], r["detector"]) for r in butler.registry.fetch_dimension_records("visit_detector_region")]
    refs = butler.put_many([({"v": v, "d": d}, "flat", {"instrument": "HSC", "visit": v, "detector": d})
                            for v, d in pairs])
    assert len(refs) > 7
    butler.registry.register_collection("tags", CollectionType.TAGGED)
    butler.registry.associate("tags", refs)
    butler.collections.certify("calib", refs, "2020-01-01", "2021-01-01")
    doomed, kept = refs[:-1], refs[-1:]
    files = butler.registry.get_files([r.id for r in refs])

    assert butler.remove_datasets(doomed) == len(doomed)

    assert list(butler.query_datasets("flat", collections=["r"])) == kept
    assert list(butler.query_datasets("flat", collections=["tags"])) == kept
    assert [c["dataset_id"] for c in butler.registry.certifications("calib")] == [kept[0].id]
    assert set(butler.registry.get_files([r.id for r in refs])) == {kept[0].id}
    for ref in doomed:
        assert not butler.datastore.exists(files[ref.id].path)
    assert butler.get(kept[0]) == {"v": pairs[-1][0], "d": pairs[-1][1]}
