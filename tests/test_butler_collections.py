"""`Butler.collections` and `Butler.retrieve`: what users do with collections and files, through the facade."""

from __future__ import annotations

import json

import pytest

from skybutler import Butler, CollectionError, CollectionType, FileAccessError, ReadOnlyError


@pytest.fixture(params=["sqlite-local", "sqlite-s3"])
def backend(request):
    return request.param


@pytest.fixture
def butler(make_butler):
    butler = make_butler(run="u/me/run", records=True)
    butler.register_dataset_type("bias", ["detector"], "dict", is_calibration=True)
    butler.register_dataset_type("metadata", ["visit", "detector"], "dict")
    return butler


def test_the_default_search_path_is_a_sequence(butler):
    assert list(butler.collections) == ["u/me/run"] == butler.collections.defaults
    assert butler.collections == ["u/me/run"] and len(butler.collections) == 1
    assert butler.collections[0] == "u/me/run"


def test_register_chain_tag_certify_and_list_through_the_facade(butler):
    bias = butler.put({"b": 0}, "bias", instrument="HSC", detector=0)
    meta = [butler.put({"m": d}, "metadata", instrument="HSC", visit=903334, detector=d) for d in (0, 1)]
    butler.collections.certify("calib", [bias], "2026-01-01", "2027-01-01")
    butler.collections.tag("best", meta)
    assert butler.collections.untag("best", meta[:1]) == 1
    butler.collections.set_chain("defaults", ["calib", "best", "u/me/run"])
    assert butler.collections.resolve(["defaults"]) == ["calib", "best", "u/me/run"]
    assert {c["name"]: c["type"] for c in butler.collections.query()} == {
        "best": "TAGGED", "calib": "CALIBRATION", "defaults": "CHAINED", "u/me/run": "RUN"}
    assert butler.collections.runs() == ["u/me/run"]
    assert [c["name"] for c in butler.collections.query("u/*")] == ["u/me/run"]
    assert butler.collections.type_of("calib") is CollectionType.CALIBRATION
    assert [c["dataset_id"] for c in butler.collections.certifications("calib")] == [bias.id]
    assert butler.collections.decertify("calib", "bias", "2026-06-01", "2026-07-01") == 1
    assert len(butler.collections.certifications("calib")) == 2
    assert list(butler.query_datasets("metadata", collections=["defaults"])) == meta
    with pytest.raises(CollectionError, match="cycle"):
        butler.collections.set_chain("calib_chain", ["defaults", "calib_chain"])
    with pytest.raises(CollectionError, match="in chain"):
        butler.collections.remove("best")
    butler.collections.set_chain("defaults", ["calib", "u/me/run"])
    butler.collections.remove("best")
    assert "best" not in [c["name"] for c in butler.collections.query()]


def test_a_collection_type_may_be_given_by_name(butler):
    assert butler.collections.register("calib", "calibration") is True
    assert butler.collections.register("calib", CollectionType.CALIBRATION) is False
    assert butler.collections.type_of("calib") is CollectionType.CALIBRATION
    with pytest.raises(CollectionError, match="Unknown collection type 'CALIB'; one of RUN, TAGGED, CHAINED, CALIBRATION"):
        butler.collections.register("other", "CALIB")


def test_a_read_only_butler_refuses_every_collection_change(butler):
    ro = Butler(butler.root, writeable=False)
    for change in (lambda: ro.collections.register("x", CollectionType.TAGGED),
                   lambda: ro.collections.set_chain("x", ["u/me/run"]),
                   lambda: ro.collections.tag("x", []),
                   lambda: ro.collections.certify("x", [], "2026-01-01", "2027-01-01")):
        with pytest.raises(ReadOnlyError):
            change()
    assert [c["name"] for c in ro.collections.query()] == ["u/me/run"]


def test_retrieve_copies_files_out_keeping_their_relative_paths(butler, tmp_path):
    refs = [butler.put({"m": d}, "metadata", instrument="HSC", visit=903334, detector=d) for d in (0, 1, 2)]
    written = butler.retrieve(refs, tmp_path / "out")
    assert len(set(written)) == 3 and all(p.is_file() and p.is_relative_to(tmp_path / "out") for p in written)
    assert [json.loads(p.read_bytes()) for p in written] == [{"m": 0}, {"m": 1}, {"m": 2}]
    with pytest.raises(FileAccessError, match="exists"):
        butler.retrieve(refs[:1], tmp_path / "out")
    one = butler.retrieve_file("metadata", tmp_path / "one.json", instrument="HSC", visit=903334, detector=2)
    assert one.read_bytes() == written[2].read_bytes()
    assert not list((tmp_path).glob("**/.*.part"))


def test_put_many_with_refs_refuses_items_that_disagree_with_them(butler):
    from skybutler import DatasetRef, DatasetTypeError
    from skybutler.model import new_dataset_id

    dt = butler.registry.get_dataset_type("metadata")
    ref = DatasetRef(new_dataset_id(), dt, butler.universe.data_id(dt.dimensions, instrument="HSC", visit=903334,
                                                                    detector=0), "u/me/run")
    with pytest.raises(DatasetTypeError, match="does not match its ref"):
        butler.put_many([({"m": 1}, "metadata", {"instrument": "HSC", "visit": 903334, "detector": 1})], refs=[ref])
    with pytest.raises(DatasetTypeError, match="1 ref"):
        butler.put_many([({"m": 1}, "metadata", None), ({"m": 2}, "metadata", None)], refs=[ref])
    assert list(butler.query_datasets("metadata")) == []
    (stored,) = butler.put_many([({"m": 1}, "metadata", None)], refs=[ref])
    assert stored.id == ref.id and butler.get(stored) == {"m": 1}
