"""Ingest checks each file's content against its dataset type's storage class before anything is stored."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from astropy.io import fits

from skybutler import Butler, FileDataset, FormatError, Image, StorageClassError
from skybutler.formats import get_formatter

DATA_ID = {"instrument": "HSC", "visit": 903334, "detector": 1}


@pytest.fixture
def butler(make_butler):
    b = make_butler(run="run1", records=True)
    b.register_dataset_type("calexp", ["visit", "detector"], "image")
    b.register_dataset_type("src", ["visit", "detector"], "table")
    return b


def snapshot(butler: Butler) -> tuple[int, list[str]]:
    """Rows in the file table and files in the store: what 'unchanged' compares (as tests/test_butler.py)."""
    return sum(1 for _ in butler.registry.all_files()), sorted(butler.stored_files())


def write(path, obj) -> str:
    with open(path, "wb") as f:
        get_formatter("fits").write(obj, f, identity={})
    return str(path)


@pytest.mark.parametrize("transfer", ["copy", "move"])
def test_a_fits_table_ingested_as_an_image_is_refused_and_nothing_is_stored(butler, tmp_path, transfer):
    good = write(tmp_path / "good.fits", Image(np.ones((4, 4), "f4")))
    table = write(tmp_path / "table.fits", pa.table({"flux": [1.0, 2.0]}))
    before = snapshot(butler)
    files = [FileDataset(good, "calexp", DATA_ID), FileDataset(table, "calexp", {**DATA_ID, "detector": 2})]
    with pytest.raises(StorageClassError) as caught:
        butler.ingest(files, run="raw", transfer=transfer)
    message = str(caught.value)
    assert message.startswith(f"Cannot ingest {table} as calexp (fits, storage class 'image'): ")
    assert "the file holds a binary table (HDU 1, 2 rows) and no image" in message
    assert "\n" not in message
    assert snapshot(butler) == before
    assert (tmp_path / "good.fits").exists() and (tmp_path / "table.fits").exists()


def test_a_3d_image_and_an_image_ingested_as_a_table_are_refused(butler, tmp_path):
    cube = tmp_path / "cube.fits"
    fits.PrimaryHDU(np.zeros((3, 4, 5), "f4")).writeto(cube)
    image = write(tmp_path / "image.fits", Image(np.ones((4, 4), "f4")))
    before = snapshot(butler)
    with pytest.raises(StorageClassError, match=r"cube.fits as calexp .*HDU 0 holds an image of shape \(3, 4, 5\)"):
        butler.ingest([FileDataset(str(cube), "calexp", DATA_ID)], run="raw")
    with pytest.raises(StorageClassError, match=r"image.fits as src .*needs a FITS binary table; the file holds an "):
        butler.ingest([FileDataset(image, "src", DATA_ID)], run="raw")
    with pytest.raises(FormatError, match=r"Cannot ingest .*cube.fits as src .*"):
        butler.ingest([FileDataset(str(cube), "src", DATA_ID, format="parquet")], run="raw")
    assert snapshot(butler) == before


def test_a_multi_extension_file_of_another_pipeline_is_ingested_and_every_hdu_read(butler, tmp_path):
    sci = [np.random.default_rng(v).normal(size=(30, 20)).astype("f4") for v in range(4)]
    path = tmp_path / "mef.fits"
    fits.HDUList([fits.PrimaryHDU(), *(fits.ImageHDU(s, name="SCI", ver=v + 1) for v, s in enumerate(sci))]
                 ).writeto(path)
    (ref,) = butler.ingest([FileDataset(str(path), "calexp", DATA_ID)], run="raw", transfer="copy")
    box = (2, 7, 3, 8)
    for version in (1, 2, 3, 4):
        whole = butler.get(ref, parameters={"hdu": ("SCI", version)})
        np.testing.assert_array_equal(whole.data, sci[version - 1])
        boxed = butler.get(ref, parameters={"hdu": ("SCI", version), "bbox": box})
        (cut,) = butler.get_cutouts(ref, [box], hdu=("SCI", version)).images
        np.testing.assert_array_equal(boxed.data, sci[version - 1][2:7, 3:8])
        np.testing.assert_array_equal(cut.data, boxed.data)
    assert list(butler.get(ref).planes) == ["sci,2", "sci,3", "sci,4"]
    with pytest.raises(FormatError) as caught:
        butler.get(ref, parameters={"hdu": ("ERR", 1)})
    record = butler.registry.get_files([ref.id])[ref.id]
    assert record.path in str(caught.value)
    assert "no HDU \"('ERR', 1)\" in this file; it has 0 PRIMARY,1 (no data), 1 SCI,1 (image 30x20)" in str(caught.value)
