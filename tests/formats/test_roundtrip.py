"""Every format gives back what was written, through memory, a local file and fsspec."""

from __future__ import annotations

import dataclasses
import io
from typing import Any

import fsspec
import numpy as np
import pyarrow as pa
import pytest

from skybutler.errors import FormatError
from skybutler.formats import get_formatter
from skybutler.model import Image

from .conftest import IDENTITY


@dataclasses.dataclass(frozen=True)
class Point:
    x: float
    y: float


def _image() -> Image:
    data = np.arange(12 * 9, dtype=np.float32).reshape(12, 9)
    return Image(
        data,
        header={"EXPTIME": 30.0, "FILTER": "HSC-R", "HISTORY": ["bias subtracted", "flat fielded"]},
        planes={"variance": data.astype(np.float64) / 2, "mask": np.eye(12, 9, dtype=np.int32)},
        origin=(100, 200),
    )


SAMPLES: list[tuple[str, Any]] = [
    ("json", {"seeing": 0.71, "n_stars": 1203, "band": "r", "ok": True, "none": None,
              "zeropoints": [27.1, 27.25], "nested": {"a": {"b": [1, {"c": "d"}]}}}),
    ("yaml", {"seeing": 0.71, "n_stars": 1203, "band": "r", "ok": True, "none": None,
              "zeropoints": [27.1, 27.25], "nested": {"a": {"b": [1, {"c": "d"}]}}}),
    ("npy", np.arange(24, dtype=np.int16).reshape(2, 3, 4)),
    ("fits", _image()),
    ("fits", pa.table({"id": [1, 2, 3], "flux": [1.5, 2.5, float("inf")], "name": ["a", "bb", "ccc"]})),
    ("parquet", pa.table({"id": [1, 2, None], "name": ["a", None, "c"], "tags": [["x"], [], ["y", "z"]]})),
    ("raw", b"\x00\x01\xffSIMPLE"),
    ("txt", "line one\r\nline two — ünïcode\n"),
    ("pickle", {"point": Point(1.0, 2.0), "set": {1, 2}}),
]
IDS = [f"{name}-{type(obj).__name__}" for name, obj in SAMPLES]


def assert_same(actual: Any, expected: Any) -> None:
    assert type(actual) is type(expected)
    if isinstance(expected, np.ndarray):
        assert actual.dtype == expected.dtype
        np.testing.assert_array_equal(actual, expected)
    elif isinstance(expected, Image):
        assert_same(actual.data, expected.data)
        assert actual.header == expected.header
        assert actual.planes.keys() == expected.planes.keys()
        for name in expected.planes:
            assert_same(actual.planes[name], expected.planes[name])
        assert actual.origin == expected.origin
    elif isinstance(expected, pa.Table):
        assert actual.equals(expected), f"{actual}\n!=\n{expected}"
    else:
        assert actual == expected


@pytest.mark.parametrize(("name", "obj"), SAMPLES, ids=IDS)
def test_roundtrip_through_memory(name, obj):
    formatter = get_formatter(name)
    buffer = io.BytesIO()
    formatter.write(obj, buffer, identity=IDENTITY)
    buffer.seek(0)
    assert_same(formatter.read(buffer), obj)
    assert not buffer.closed, "the caller's file object stays open"


@pytest.mark.parametrize(("name", "obj"), SAMPLES, ids=IDS)
def test_roundtrip_through_a_local_file(name, obj, tmp_path):
    formatter = get_formatter(name)
    path = tmp_path / f"dataset{formatter.extension}"
    with fsspec.open(f"file://{path}", "wb") as fileobj:
        formatter.write(obj, fileobj, identity=IDENTITY)
    with open(path, "rb") as fileobj:
        assert_same(formatter.read(fileobj), obj)
    with fsspec.open(f"file://{path}", "rb") as fileobj:
        assert_same(formatter.read(fileobj), obj)


@pytest.mark.parametrize(("name", "obj"), SAMPLES, ids=IDS)
def test_roundtrip_through_an_fsspec_memory_file(name, obj):
    formatter = get_formatter(name)
    fs = fsspec.filesystem("memory")
    path = f"/roundtrip/{name}-{type(obj).__name__}{formatter.extension}"
    with fs.open(path, "wb") as fileobj:
        formatter.write(obj, fileobj, identity=IDENTITY)
    with fs.open(path, "rb") as fileobj:
        assert_same(formatter.read(fileobj), obj)
    fs.rm(path)


@pytest.mark.parametrize(("name", "obj"), SAMPLES, ids=IDS)
def test_read_identity_gives_the_identity_or_none(name, obj):
    formatter = get_formatter(name)
    buffer = io.BytesIO()
    formatter.write(obj, buffer, identity=IDENTITY)
    buffer.seek(0)
    stored = formatter.read_identity(buffer)
    assert stored == (IDENTITY if name in {"fits", "parquet"} else None)


@pytest.mark.parametrize(("name", "obj"), SAMPLES, ids=IDS)
def test_unknown_read_parameter_names_the_allowed_ones(name, obj):
    formatter = get_formatter(name)
    buffer = io.BytesIO()
    formatter.write(obj, buffer, identity=IDENTITY)
    buffer.seek(0)
    with pytest.raises(FormatError, match=r"unknown read parameter 'zoom' for .*; allowed: "):
        formatter.read(buffer, parameters={"zoom": 2})
