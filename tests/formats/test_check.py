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
