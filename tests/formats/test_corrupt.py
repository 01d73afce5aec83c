"""A corrupt or truncated file raises FormatError naming its format, never a library's own error."""

from __future__ import annotations

import io

import numpy as np
import pyarrow as pa
import pytest

from skybutler.errors import FormatError
from skybutler.formats import get_formatter
from skybutler.model import Image

from .conftest import IDENTITY

STRUCTURED = [
    ("json", {"a": [1, 2, 3], "b": "text"}),
    ("yaml", {"a": [1, 2, 3], "b": "text"}),
    ("npy", np.arange(1000, dtype=np.float64)),
    ("fits", Image(np.ones((100, 100), dtype=np.float32), planes={"variance": np.ones((100, 100))})),
    ("fits", pa.table({"a": np.arange(1000)})),
    ("parquet", pa.table({"a": np.arange(1000)})),
    ("pickle", {"a": list(range(100))}),
]
IDS = [f"{name}-{type(obj).__name__}" for name, obj in STRUCTURED]

# astropy warns that a truncated file "may have been truncated" before we raise.
pytestmark = pytest.mark.filterwarnings("ignore:File may have been truncated")


def written(name: str, obj: object) -> bytes:
    buffer = io.BytesIO()
    get_formatter(name).write(obj, buffer, identity=IDENTITY)
    return buffer.getvalue()


@pytest.mark.parametrize(("name", "obj"), STRUCTURED, ids=IDS)
@pytest.mark.parametrize("keep", [0.5, 0.9, 0.999], ids=["half", "most", "all-but-a-little"])
def test_truncated_file_raises_format_error_naming_the_format(name, obj, keep):
    data = written(name, obj)
    cut = data[: int(len(data) * keep)] if keep < 0.999 else data[:-3]
    with pytest.raises(FormatError, match=rf"cannot read {name} file: ") as caught:
        get_formatter(name).read(io.BytesIO(cut))
    assert not isinstance(caught.value.__cause__, FormatError)


@pytest.mark.parametrize("name", ["json", "yaml", "npy", "fits", "parquet", "pickle"])
def test_garbage_raises_format_error(name):
    with pytest.raises(FormatError, match=rf"cannot read {name} file"):
        get_formatter(name).read(io.BytesIO(b"\x89garbage{[: \x00\xff" * 50))


@pytest.mark.parametrize("name", ["fits", "parquet"])
def test_identity_of_a_corrupt_file_raises_format_error(name):
    with pytest.raises(FormatError, match=rf"cannot read {name} file"):
        get_formatter(name).read_identity(io.BytesIO(b"not a file at all" * 300))


def test_bbox_read_of_a_truncated_image_is_refused_even_when_the_box_lies_before_the_cut():
    data = written("fits", Image(np.ones((100, 100), dtype=np.float32)))
    with pytest.raises(FormatError, match="cannot read fits file: it is truncated"):
        get_formatter("fits").read(io.BytesIO(data[:-3000]), parameters={"bbox": (0, 2, 0, 2)})


def test_text_cut_inside_a_character_raises_format_error():
    data = "ünïcode".encode()
    with pytest.raises(FormatError, match="cannot read txt file"):
        get_formatter("txt").read(io.BytesIO(data[:1]))


def test_npz_archive_is_not_an_npy_array():
    buffer = io.BytesIO()
    np.savez(buffer, a=np.zeros(2))
    with pytest.raises(FormatError, match="cannot read npy file: it holds numpy.NpzFile, not one array"):
        get_formatter("npy").read(io.BytesIO(buffer.getvalue()))
