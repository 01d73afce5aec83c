"""write_subset: a small SQLite registry holding what some data ids and refs need, and nothing else."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa

from skybutler import Butler, DatasetNotFoundError, DimensionError, RepositoryConfig
from skybutler.model import DataId, DatasetRef, DatasetType, new_id
from skybutler.registry import FileRecord, Registry
from skybutler.transfer import SUBSET_PAGE_SIZE, write_subset

VISIT_DETECTOR = DataId({"instrument": "HSC", "visit": 903334, "detector": 0})
PATCH = DataId({"skymap": "rings", "tract": 0, "patch": 0})


@pytest.fixture(scope="module")
def central(filled_repo_template):
    """The filled repository's registry, read-only (shared by the tests)."""
    registry = Registry.open(f"sqlite:///{Path(filled_repo_template) / 'registry.sqlite3'}", writeable=False)
    yield registry
    registry.close()


def records(registry, element):
    return list(registry.fetch_dimension_records(element))


def open_subset(path):
    return Registry.open(f"sqlite:///{path}")


def test_a_subset_holds_the_records_of_its_data_ids_and_everything_they_require_or_imply(central, tmp_path):
    sub = open_subset(write_subset(central, tmp_path / "s.sqlite3", data_ids=[VISIT_DETECTOR]))
    assert [r["instrument"] for r in records(sub, "instrument")] == ["HSC"]
    assert [r["visit"] for r in records(sub, "visit")] == [903334]  # no other visit
    assert [r["detector"] for r in records(sub, "detector")] == [0]
    assert [r["physical_filter"] for r in records(sub, "physical_filter")] == ["HSC-R"]  # implied by the visit
    assert [r["band"] for r in records(sub, "band")] == ["r"]  # implied by the filter, through the visit
    assert [r["day_obs"] for r in records(sub, "day_obs")] == [20260315]
    assert [(r["visit"], r["detector"]) for r in records(sub, "visit_detector_region")] == [(903334, 0)]
    assert records(sub, "patch") == records(sub, "tract") == []
    # Copied whole, regions and metadata included.
    assert records(sub, "visit") == [r for r in records(central, "visit") if r["visit"] == 903334]


def test_overlaps_among_the_copied_records_are_copied_not_recomputed(central, tmp_path, filled_repo_template):
    source = Path(tmp_path / "source.sqlite3")
    source.write_bytes((Path(filled_repo_template) / "registry.sqlite3").read_bytes())
    with sa.create_engine(f"sqlite:///{source}").begin() as conn:
        # Remove one true overlap: a subset that recomputed overlaps would bring it back.
        conn.execute(sa.text("DELETE FROM overlap_visit_detector_region_patch "
                             "WHERE visit = 903334 AND detector = 0 AND patch = 0"))
    registry = Registry.open(f"sqlite:///{source}", writeable=False)
    detectors = [DataId({"instrument": "HSC", "visit": 903334, "detector": d}) for d in (0, 1)]
    patches = [DataId({"skymap": "rings", "tract": 0, "patch": p}) for p in (0, 1)]
    sub = open_subset(write_subset(registry, tmp_path / "s.sqlite3", data_ids=[*detectors, *patches]))

    def overlaps(reg, pair):
        t = reg.tables.overlaps[pair]
        with reg.database.read() as conn:
            return {tuple(r) for r in conn.execute(sa.select(t)).all()}

    everything = overlaps(registry, ("visit_detector_region", "patch"))
    registry.close()
    expected = {r for r in everything if r[1] == 903334 and r[2] in (0, 1) and r[5] in (0, 1)}
    assert expected and overlaps(sub, ("visit_detector_region", "patch")) == expected
    assert ("HSC", 903334, 0, "rings", 0, 0) not in expected
    assert overlaps(sub, ("visit", "tract")) == {("HSC", 903334, "rings", 0)}


def test_refs_become_datasets_with_their_ids_whether_or_not_the_source_holds_them(central, tmp_path):
    raw_type = central.get_dataset_type("raw")
    raw = _raws(central)[0]
    calexp = DatasetRef(new_id(), DatasetType("calexp", central.universe.closure(["visit", "detector"]), "array"),
                        raw.data_id, "u/job/run")
    file = central.get_files([raw.id])[raw.id]
    path = write_subset(central, tmp_path / "s.sqlite3", data_ids=[raw.data_id], dataset_types=["bias"],
                        refs=[raw, calexp, raw], files={raw.id: file})  # an input of two quanta comes twice
    sub = open_subset(path)
    assert {dt.name for dt in sub.dataset_types()} == {"raw", "calexp", "bias"}
    assert sub.get_dataset_type("raw") == raw_type
    assert {c["name"] for c in sub.collections()} == {raw.run, "u/job/run"}
    assert sub.get_datasets([raw.id, calexp.id]) == {raw.id: raw, calexp.id: calexp}
    assert sub.get_files([raw.id, calexp.id]) == {raw.id: file}  # a ref without a file record has none


def test_a_butler_opens_the_subset_and_finds_its_inputs(central, tmp_path):
    raw = _raws(central)[0]
    file = central.get_files([raw.id])[raw.id]
    root = tmp_path / "scratch"
    root.mkdir()
    write_subset(central, root / "registry.sqlite3", data_ids=[raw.data_id], refs=[raw], files={raw.id: file})
    RepositoryConfig().write(root)  # the default configuration names registry.sqlite3 in the root
    butler = Butler(root)
    assert butler.find_dataset("raw", raw.data_id, collections=[raw.run]) == raw
    assert butler.registry.expand_data_ids(("instrument", "visit", "detector"), [raw.data_id])[0].implied["band"]
    butler.close()


def test_subsets_are_small_files_with_small_pages(central, tmp_path):
    path = write_subset(central, tmp_path / "s.sqlite3", data_ids=[VISIT_DETECTOR])
    assert path.stat().st_size < 120_000
    with sa.create_engine(f"sqlite:///{path}").connect() as conn:
        assert conn.exec_driver_sql("PRAGMA page_size").scalar() == SUBSET_PAGE_SIZE
        assert conn.exec_driver_sql("PRAGMA integrity_check").scalar() == "ok"
    assert not list(tmp_path.glob(".*tmp"))  # written under a temporary name, then renamed


def test_a_data_id_without_a_record_is_refused_naming_it(central, tmp_path):
    with pytest.raises(DimensionError, match="visit.*999"):
        write_subset(central, tmp_path / "s.sqlite3",
                     data_ids=[DataId({"instrument": "HSC", "visit": 999, "detector": 0})])
    assert not (tmp_path / "s.sqlite3").exists()


def test_a_file_record_for_a_dataset_not_in_the_refs_is_refused(central, tmp_path):
    stray = FileRecord(new_id(), "a/b.json", 1, None, None, "json")
    with pytest.raises(DatasetNotFoundError, match=str(stray.dataset_id)):
        write_subset(central, tmp_path / "s.sqlite3", data_ids=[], files={stray.dataset_id: stray})


def _raws(registry):
    from skybutler.registry import query_datasets

    return list(query_datasets(registry, "raw", collections=["HSC/raw/all"]))
