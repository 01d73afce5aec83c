"""Objects that do not fit their storage class are refused before anything is written."""

from __future__ import annotations

import io

import numpy as np
import pyarrow as pa
import pytest

from skybutler.errors import FormatError, StorageClassError
from skybutler.formats import FORMATS, FitsFormatter, get_formatter
from skybutler.model import Image

FITTING = {
    "dict": {"a": 1},
    "array": np.zeros(3),
    "image": Image(np.zeros((2, 2))),
    "table": pa.table({"a": [1]}),
    "bytes": b"abc",
    "text": "abc",
    "object": object(),
}


@pytest.mark.parametrize("name", sorted(FORMATS))
def test_objects_of_the_storage_class_type_pass(name):
    formatter = get_formatter(name)
    for storage_class in formatter.storage_classes:
        formatter.check(FITTING[storage_class], storage_class)


def test_mismatch_names_storage_class_expected_and_actual_type():
    with pytest.raises(StorageClassError) as caught:
        FitsFormatter().check({"a": 1}, "image")
    assert str(caught.value) == "storage class 'image' which holds skybutler.Image; got dict"


@pytest.mark.parametrize(
    ("name", "storage_class", "obj", "got"),
    [
        ("json", "dict", [1, 2], "list"),
        ("yaml", "dict", "a: 1", "str"),
        ("npy", "array", [1, 2], "list"),
        ("fits", "image", np.zeros((2, 2)), "numpy.ndarray"),
        ("fits", "table", {"a": [1]}, "dict"),
        ("parquet", "table", Image(np.zeros((2, 2))), "skybutler.Image"),
        ("raw", "bytes", "text", "str"),
        ("txt", "text", b"bytes", "bytes"),
    ],
)
def test_mismatches_raise_storage_class_error(name, storage_class, obj, got):
    with pytest.raises(StorageClassError, match=rf"storage class '{storage_class}' which holds .*; got {got}$"):
        get_formatter(name).check(obj, storage_class)


@pytest.mark.parametrize(
    ("name", "obj"),
    [("json", [1]), ("yaml", 1), ("npy", [1]), ("parquet", {"a": [1]}), ("raw", "s"), ("txt", b"s")],
)
def test_write_refuses_a_mismatch_and_writes_nothing(name, obj):
    buffer = io.BytesIO()
    with pytest.raises(StorageClassError):
        get_formatter(name).write(obj, buffer, identity={})
    assert buffer.getvalue() == b""


def test_fits_write_of_neither_image_nor_table_names_both():
    with pytest.raises(StorageClassError, match="stores skybutler.Image or pyarrow.Table; got dict"):
        FitsFormatter().write({"a": 1}, io.BytesIO(), identity={})


def test_checking_a_storage_class_the_format_cannot_store_is_a_format_error():
    with pytest.raises(FormatError, match="format 'fits' cannot store storage class 'dict'; it stores image, table"):
        FitsFormatter().check({}, "dict")


@pytest.mark.parametrize(
    ("image", "message"),
    [
        (Image(np.zeros((2, 2, 2))), r"Image.data to be a 2-d numpy array; got numpy.ndarray of shape \(2, 2, 2\)"),
        (Image([[1, 2]]), "Image.data to be a 2-d numpy array; got list"),  # type: ignore[arg-type]
        (Image(np.zeros((2, 2)), planes={"mask": np.zeros((3, 2))}), r"plane 'mask' must be .* shape \(2, 2\)"),
        (Image(np.zeros((2, 2)), planes={"mask": np.zeros((2, 2)), "MASK": np.zeros((2, 2))}), "differ only in case"),
    ],
)
def test_images_fits_cannot_store_are_refused(image, message):
    with pytest.raises(StorageClassError, match=message):
        FitsFormatter().check(image, "image")


def test_npy_refuses_object_arrays():
    with pytest.raises(FormatError, match="npy cannot store arrays of Python objects"):
        get_formatter("npy").write(np.array([{}, 1], dtype=object), io.BytesIO(), identity={})


def test_pickle_failure_writes_nothing():
    buffer = io.BytesIO()
    with pytest.raises(FormatError, match="cannot write pickle file"):
        get_formatter("pickle").write(lambda: None, buffer, identity={})
    assert buffer.getvalue() == b""


# --- check_file: a file's content against the storage class it is ingested as ----------------


def written(name: str, obj) -> io.BytesIO:
    buffer = io.BytesIO()
    get_formatter(name).write(obj, buffer, identity={})
    buffer.seek(0)
    return buffer


def foreign_fits(*hdus) -> io.BytesIO:
    from astropy.io import fits

    buffer = io.BytesIO()
    fits.HDUList(list(hdus)).writeto(buffer)
    buffer.seek(0)
    return buffer


@pytest.mark.parametrize(("name", "storage_class"), [
    ("fits", "image"), ("fits", "table"), ("parquet", "table"), ("json", "dict"), ("yaml", "dict"),
    ("npy", "array"), ("raw", "bytes"), ("txt", "text"), ("pickle", "object"),
])
def test_files_written_in_a_format_pass_its_check(name, storage_class):
    get_formatter(name).check_file(written(name, FITTING[storage_class]), storage_class)


def test_a_fits_table_checked_as_an_image_is_a_storage_class_error():
    with pytest.raises(StorageClassError, match=r"'image' needs a 2-d FITS image; the file holds a binary table "
                                                r"\(HDU 1, 1 rows\) and no image"):
        FitsFormatter().check_file(written("fits", pa.table({"a": [1]})), "image")


def test_a_fits_image_checked_as_a_table_is_a_storage_class_error():
    with pytest.raises(StorageClassError, match=r"'table' needs a FITS binary table; the file holds an image "
                                                r"\(HDU 0, shape \(2, 2\)\)"):
        FitsFormatter().check_file(written("fits", Image(np.zeros((2, 2)))), "table")


def test_a_3d_fits_image_is_refused_as_an_image():
    from astropy.io import fits

    with pytest.raises(StorageClassError, match=r"HDU 0 holds an image of shape \(3, 4, 5\)"):
        FitsFormatter().check_file(foreign_fits(fits.PrimaryHDU(np.zeros((3, 4, 5), "f4"))), "image")


def test_a_fits_plane_of_another_shape_is_refused_as_read_would():
    from astropy.io import fits

    buffer = foreign_fits(fits.PrimaryHDU(np.zeros((4, 4), "f4")), fits.ImageHDU(np.zeros((2, 2)), name="MASK"))
    with pytest.raises(FormatError, match=r"extension MASK has shape \(2, 2\), not the image's \(4, 4\)"):
        FitsFormatter().check_file(buffer, "image")


def test_a_truncated_fits_image_is_refused():
    data = written("fits", Image(np.ones((100, 100), dtype=np.float32))).getvalue()
    with pytest.raises(FormatError, match="it is truncated"):
        FitsFormatter().check_file(io.BytesIO(data[:-3000]), "image")


@pytest.mark.parametrize(("name", "storage_class", "content", "message"), [
    ("fits", "image", b"SIMPLE  =  not fits at all", "cannot read fits file"),
    ("parquet", "table", b"PAR1 but not parquet", "cannot read parquet file"),
    ("json", "dict", b"[1, 2]", "cannot read json file: it holds list, not a dict"),
    ("yaml", "dict", b"- 1\n", "cannot read yaml file: it holds list, not a dict"),
    ("npy", "array", b"\x93NUMPY\x01\x00garbage", "cannot read npy file"),
    ("txt", "text", "ünï".encode()[:1], "cannot read txt file"),
])
def test_files_that_do_not_read_in_their_format_fail_the_check(name, storage_class, content, message):
    with pytest.raises(FormatError, match=message):
        get_formatter(name).check_file(io.BytesIO(content), storage_class)


def test_an_npy_file_of_python_objects_fails_the_check_from_its_header():
    buffer = io.BytesIO()
    np.save(buffer, np.array([{}, 1], dtype=object), allow_pickle=True)
    buffer.seek(0)
    with pytest.raises(FormatError, match=r"holds Python objects \(dtype object\)"):
        get_formatter("npy").check_file(buffer, "array")


def test_checking_a_file_as_a_storage_class_the_format_cannot_store_is_a_format_error():
    with pytest.raises(FormatError, match="format 'parquet' cannot store storage class 'image'"):
        get_formatter("parquet").check_file(written("parquet", pa.table({"a": [1]})), "image")
