"""rebuild recreates a lost registry from the files' own identities and the run manifests: the same datasets,
ids, data ids, runs, file paths and checksums as before; it refuses a registry that still holds datasets."""

from __future__ import annotations

import io
import os

import numpy as np
import pyarrow as pa
import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from skybutler import Butler, Image
from skybutler.cli import main
from skybutler.errors import DatasetTypeError, RepositoryExistsError
from skybutler.formats import get_formatter
from skybutler.ops.rebuild import rebuild


@pytest.fixture(params=["sqlite-local", "postgresql-s3"])
def backend(request):
    """The embedded default and the shared central repository's combination."""
    return request.param


VISITS = (903334, 903336)


@pytest.fixture
def butler(make_butler):
    """FITS images and tables, Parquet tables, JSON dicts and npy arrays, in two runs."""
    b = make_butler(run="raw/r1", records=True)
    b.register_dataset_type("calexp", ["instrument", "visit", "detector"], "image")
    b.register_dataset_type("src", ["instrument", "visit", "detector"], "table")
    b.register_dataset_type("visit_table", ["instrument", "visit"], "table")
    b.register_dataset_type("meta", ["instrument", "visit"], "dict")
    b.register_dataset_type("psf", ["instrument", "visit", "detector"], "array")
    b.register_dataset_type("coadd_meta", ["skymap", "tract", "patch"], "dict")
    for run in ("raw/r1", "u/someone/run2"):
        items = []
        for visit in VISITS:
            for detector in (0, 1):
                data_id = {"instrument": "HSC", "visit": visit, "detector": detector}
                items += [(Image(np.full((8, 8), visit + detector, "f4"), header={"EXPTIME": 30.0}), "calexp", data_id),
                          (pa.table({"flux": [float(detector), 2.0]}), "src", data_id),
                          (np.arange(detector + 3), "psf", data_id)]
            items.append(({"seeing": visit / 1e6}, "meta", {"instrument": "HSC", "visit": visit}))
        items.append(({"patch": 3}, "coadd_meta", {"skymap": "rings", "tract": 0, "patch": 3}))
        b.put_many(items, run=run)
    b.config.formats.dataset_types["visit_table"] = "fits"  # a table in a FITS file
    b.put(pa.table({"visit": list(VISITS)}), "visit_table", instrument="HSC", visit=903334)
    return b


def contents(butler: Butler):
    """What a rebuild must give back: every dataset with its file, and every dataset type."""
    files = sorted((str(ref.id), ref.dataset_type.name, tuple(ref.data_id.required_items.items()), ref.run,
                    record.path, record.size, record.checksum, record.checksum_algorithm, record.format)
                   for record, ref in butler.registry.all_files())
    types = sorted((dt.name, dt.dimensions, dt.storage_class) for dt in butler.registry.dataset_types())
    return files, types


def lose_registry(butler: Butler) -> None:
    """Delete the registry as a disk failure or a mistaken DROP would: the SQLite file, or the schema."""
    config = butler.config.registry
    engine = butler.registry.engine
    butler.close()
    if butler.registry.dialect == "postgresql":
        with engine.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{config.namespace}" CASCADE'))
        return
    for suffix in ("", "-wal", "-shm"):
        path = os.path.join(butler.root, "registry.sqlite3" + suffix)
        if os.path.exists(path):
            os.remove(path)


def test_rebuild_gives_back_every_dataset_id_data_id_run_file_and_checksum(butler):
    before_files, before_types = contents(butler)
    objects = {str(ref.id): butler.get(ref) for _, ref in butler.registry.all_files()}
    lose_registry(butler)

    report = rebuild(butler.root)

    assert report.datasets == len(before_files) == 31 and report.files == 31 and report.skipped == []
    assert report.runs == ["raw/r1", "u/someone/run2"]
    assert report.dataset_types == ["calexp", "coadd_meta", "meta", "psf", "src", "visit_table"]
    again = Butler(butler.root, collections=["u/someone/run2", "raw/r1"])
    try:
        assert contents(again) == (before_files, before_types)
        for _, ref in again.registry.all_files():
            got, expected = again.get(ref), objects[str(ref.id)]
            if isinstance(expected, Image):
                assert np.array_equal(got.data, expected.data) and got.header["EXPTIME"] == 30.0
            elif isinstance(expected, np.ndarray):
                assert np.array_equal(got, expected)
            else:
                assert got == expected
        # Found by data id too: the dimension records the data ids need are back (keys only).
        assert again.get("meta", instrument="HSC", visit=903336) == {"seeing": 0.903336}
        assert again.get("coadd_meta", skymap="rings", tract=0, patch=3) == {"patch": 3}
    finally:
        again.close()


def test_rebuild_refuses_a_registry_that_still_holds_datasets(butler):
    before = contents(butler)
    with pytest.raises(RepositoryExistsError) as caught:
        rebuild(butler.root)
    message = str(caught.value)
    assert "still exists and holds 31 file record(s)" in message and "aside" in message
    assert contents(butler) == before


def test_a_dataset_type_described_two_ways_is_an_error_naming_both_files(butler):
    # A Parquet file claiming to be a "meta" (a dict, by visit) per its identity.
    stray = io.BytesIO()
    get_formatter("parquet").write(pa.table({"x": [1]}), stray, identity={
        "dataset_id": "01a22ade-ccb8-7c2a-be18-24b0a5cd9aa0", "dataset_type": "meta",
        "data_id": "instrument=HSC, visit=903340", "run": "raw/r1"})
    butler.datastore.commit(butler.datastore.write_temporary("raw/r1/odd/meta_903340.parquet",
                                                             lambda f: f.write(stray.getvalue())))
    lose_registry(butler)
    with pytest.raises(DatasetTypeError) as caught:
        rebuild(butler.root)
    message = str(caught.value)
    assert "Dataset type 'meta' is described twice" in message
    assert "raw/r1/odd/meta_903340.parquet" in message and ".json" in message


def test_files_that_describe_no_dataset_are_reported_not_registered(butler):
    butler.datastore.commit(butler.datastore.write_temporary("notes/readme.txt", lambda f: f.write(b"hello")))
    lose_registry(butler)
    report = rebuild(butler.root)
    assert report.datasets == 31
    assert report.skipped == [("notes/readme.txt", "a txt file without the identity of a dataset, in no run manifest")]


def test_cli_rebuild_rebuilds_a_lost_registry_and_refuses_a_live_one(butler):
    runner = CliRunner()
    refused = runner.invoke(main, ["rebuild", butler.root])
    assert refused.exit_code == 1 and "still exists" in refused.output
    lose_registry(butler)
    result = runner.invoke(main, ["rebuild", butler.root])
    assert result.exit_code == 0, result.output
    assert "31 dataset(s) of 6 type(s) in 2 run(s)" in " ".join(result.output.split())


def test_ingested_files_without_identity_come_back_from_the_run_manifest(butler, tmp_path):
    from astropy.io import fits

    from skybutler import FileDataset

    butler.register_dataset_type("raw", ["instrument", "visit", "detector"], "image")
    for detector in (2, 3):
        fits.PrimaryHDU(np.full((4, 4), detector, "f4")).writeto(tmp_path / f"raw_{detector}.fits")
    butler.ingest([FileDataset(str(tmp_path / "raw_2.fits"), "raw", {"instrument": "HSC", "visit": 903334,
                                                                     "detector": 2})], run="raw/all", transfer="copy")
    butler.ingest([FileDataset(str(tmp_path / "raw_3.fits"), "raw", {"instrument": "HSC", "visit": 903334,
                                                                     "detector": 3})], run="raw/all",
                  transfer="direct")
    before = contents(butler)
    lose_registry(butler)
    report = rebuild(butler.root)
    assert report.datasets == 33 and report.skipped == []
    again = Butler(butler.root, collections=["raw/all"])
    try:
        assert contents(again) == before
        assert again.get("raw", instrument="HSC", visit=903334, detector=3).data[0, 0] == 3.0
    finally:
        again.close()
