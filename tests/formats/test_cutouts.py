"""Many small cutouts from one large FITS image, reading only the bytes they need."""

from __future__ import annotations

import io

import fsspec
import numpy as np
import pytest

from skybutler.errors import FormatError
from skybutler.formats import FitsFormatter
from skybutler.model import Image

from .conftest import IDENTITY, ByteCountingFile


@pytest.fixture(scope="module")
def large_image() -> Image:
    data = np.random.default_rng(7).random((2048, 2048), dtype=np.float32)
    return Image(data, header={"EXPTIME": 30.0}, planes={"variance": data * 2})


@pytest.fixture(scope="module")
def large_file(large_image) -> bytes:
    buffer = io.BytesIO()
    FitsFormatter().write(large_image, buffer, identity=IDENTITY)
    return buffer.getvalue()


def star_boxes(count: int, size: int = 21) -> list[tuple[int, int, int, int]]:
    centres = np.random.default_rng(3).integers(0, 2048, size=(count, 2))
    half = size // 2
    return [(int(y) - half, int(y) + half + 1, int(x) - half, int(x) + half + 1) for y, x in centres]


def test_hundred_cutouts_read_a_small_fraction_of_the_file_and_the_right_pixels(large_image, large_file):
    boxes = star_boxes(100)
    fileobj = ByteCountingFile(large_file)
    cutouts, bytes_read = FitsFormatter().read_cutouts(fileobj, boxes)

    assert bytes_read == fileobj.bytes_read
    assert bytes_read < 0.10 * len(large_file)
    assert len(cutouts) == 100
    for (y0, y1, x0, x1), cutout in zip(boxes, cutouts, strict=True):
        cy0, cx0 = max(y0, 0), max(x0, 0)
        np.testing.assert_array_equal(cutout.data, large_image.data[cy0:y1, cx0:x1])
        assert cutout.origin == (cy0, cx0)
        assert cutout.header == {"EXPTIME": 30.0}


def test_cutouts_from_an_fsspec_file_count_its_bytes(large_image, large_file):
    fs = fsspec.filesystem("memory")
    fs.pipe("/cutouts/large.fits", large_file)
    try:
        with fs.open("/cutouts/large.fits", "rb") as fileobj:
            cutouts, bytes_read = FitsFormatter().read_cutouts(fileobj, [(0, 21, 0, 21)])
    finally:
        fs.rm("/cutouts/large.fits")
    np.testing.assert_array_equal(cutouts[0].data, large_image.data[:21, :21])
    assert bytes_read < 20_000


def test_cutouts_of_a_plane(large_image, large_file):
    cutouts, _ = FitsFormatter().read_cutouts(io.BytesIO(large_file), [(10, 20, 30, 40)], plane="variance")
    np.testing.assert_array_equal(cutouts[0].data, large_image.planes["variance"][10:20, 30:40])


def test_unknown_plane_names_the_planes(large_file):
    with pytest.raises(FormatError, match="no plane 'mask' in this image; it has variance"):
        FitsFormatter().read_cutouts(io.BytesIO(large_file), [(0, 1, 0, 1)], plane="mask")


def test_boxes_are_clipped_at_the_edges(large_image, large_file):
    cutouts, _ = FitsFormatter().read_cutouts(io.BytesIO(large_file), [(2040, 2061, -5, 16)])
    assert cutouts[0].shape == (8, 16)
    assert cutouts[0].origin == (2040, 0)
    np.testing.assert_array_equal(cutouts[0].data, large_image.data[2040:, :16])


def test_box_wholly_outside_names_the_box_and_the_image_shape(large_file):
    with pytest.raises(FormatError, match=r"box \(3000, 3021, 5, 26\) .* outside the image of shape \(2048, 2048\)"):
        FitsFormatter().read_cutouts(io.BytesIO(large_file), [(0, 5, 0, 5), (3000, 3021, 5, 26)])


def test_empty_box_is_refused(large_file):
    with pytest.raises(FormatError, match=r"box \(5, 5, 0, 3\) is empty"):
        FitsFormatter().read_cutouts(io.BytesIO(large_file), [(5, 5, 0, 3)])


def test_cutout_origin_adds_to_the_stored_origin():
    image = Image(np.arange(100, dtype=np.float64).reshape(10, 10), origin=(500, 700))
    buffer = io.BytesIO()
    FitsFormatter().write(image, buffer, identity={})
    buffer.seek(0)
    cutouts, _ = FitsFormatter().read_cutouts(buffer, [(2, 4, 6, 9)])
    assert cutouts[0].origin == (502, 706)


def test_cutouts_from_a_table_file_are_refused():
    import pyarrow as pa

    buffer = io.BytesIO()
    FitsFormatter().write(pa.table({"a": [1]}), buffer, identity={})
    buffer.seek(0)
    with pytest.raises(FormatError, match="cannot read cutouts from fits file: it holds no image"):
        FitsFormatter().read_cutouts(buffer, [(0, 1, 0, 1)])
