"""Partial reads on an object store fetch only the byte ranges they need.

Cutouts and boxes of an image on S3 (moto's server) are checked three ways: the pixels equal
those read from a repository on local disk; the bytes that travelled are at most twice the
bytes returned, plus the headers; and `Cutouts.bytes_read` equals what botocore saw arrive.
`Transport` counts GetObject responses with an event hook on the s3fs client, so it measures
the transport, independently of skybutler's own counting.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from skybutler import Butler, FileAccessError, Image
from skybutler.datastore import Datastore
from skybutler.datastore._ranges import merge_ranges
from skybutler.datastore.backends import filesystem

HEADER = 4 * 2880
"""What reading one FITS header may fetch: four 2880-byte blocks (one read-ahead)."""

HEIGHT, WIDTH = 512, 1024  # float32 pixels plus a uint16 plane: a 3 MB file
DATA_ID = {"instrument": "HSC", "detector": 1}


class Transport:
    """Bytes and requests of the GetObject responses the s3fs client received, as botocore saw them."""

    def __init__(self, fs: Any):
        self.bytes = 0
        self.requests = 0
        fs.s3.meta.events.register("after-call.s3.GetObject", self._count)

    def _count(self, parsed: dict[str, Any], **_: Any) -> None:
        self.bytes += int(parsed["ContentLength"])
        self.requests += 1

    def reset(self) -> None:
        self.bytes = self.requests = 0


@pytest.fixture(scope="module")
def image() -> Image:
    rng = np.random.default_rng(11)
    data = rng.random((HEIGHT, WIDTH), dtype=np.float32)
    # uint16 is stored as int16 with BZERO = 32768: its byte ranges follow the stored type.
    mask = rng.integers(0, 65535, size=(HEIGHT, WIDTH), dtype=np.uint16)
    return Image(data, header={"EXPTIME": 30.0}, planes={"mask": mask})


def _repository(root, datastore: str | None = None, options: dict | None = None, **settings: Any) -> Butler:
    config = {"datastore": {"storage_options": options, **settings}} if options else None
    butler = Butler.create(root, run="r", datastore=datastore, config=config)
    butler.insert_dimension_records("instrument", [{"instrument": "HSC", "class_name": "HSC"}])
    butler.insert_dimension_records("detector", [{"instrument": "HSC", "detector": 1, "name": "1_54"}])
    butler.register_dataset_type("calexp", ["detector"], "image")
    return butler


@pytest.fixture
def local(tmp_path, image):
    """A repository on local disk holding ``image``: ``(butler, ref)``."""
    butler = _repository(tmp_path / "local")
    yield butler, butler.put(image, "calexp", DATA_ID)
    butler.close()


@pytest.fixture
def remote(tmp_path, s3_bucket, image):
    """A repository on S3 holding ``image``: ``(butler, ref, transport)``."""
    bucket, options = s3_bucket
    root = f"s3://{bucket}/repo"
    butler = _repository(tmp_path / "s3", root, options)
    ref = butler.put(image, "calexp", DATA_ID)
    transport = Transport(filesystem(root, options)[0])  # fsspec hands out one instance per options
    transport.reset()
    yield butler, ref, transport
    butler.close()


def star_boxes(count: int, size: int) -> list[tuple[int, int, int, int]]:
    corners = np.random.default_rng(5).integers(0, (HEIGHT - size, WIDTH - size), size=(count, 2))
    return [(int(y), int(y) + size, int(x), int(x) + size) for y, x in corners]


def assert_same_cutouts(got, expected) -> None:
    assert len(got) == len(expected)
    for a, b in zip(got, expected, strict=True):
        np.testing.assert_array_equal(a.data, b.data)
        assert a.data.dtype == b.data.dtype and a.origin == b.origin and a.header == b.header


def test_cutouts_on_s3_fetch_only_their_rows_and_report_the_bytes_that_travelled(local, remote):
    butler, ref, transport = remote
    boxes = star_boxes(25, 9)

    cut = butler.get_cutouts(ref, boxes)

    assert_same_cutouts(cut.images, local[0].get_cutouts(local[1], boxes).images)
    returned = sum(image.data.nbytes for image in cut.images)
    assert cut.bytes_read == transport.bytes
    assert returned <= cut.bytes_read <= 2 * returned + HEADER
    # One request for the header, then at most one per row of a box, all sent in one batch.
    assert transport.requests <= 1 + 25 * 9
    assert cut.bytes_read < cut.file_size / 50


def test_cutouts_of_a_plane_on_s3_read_its_stored_pixels(local, remote):
    butler, ref, transport = remote
    boxes = star_boxes(25, 5)

    cut = butler.get_cutouts(ref, boxes, plane="mask")

    assert_same_cutouts(cut.images, local[0].get_cutouts(local[1], boxes, plane="mask").images)
    assert cut.images[0].data.dtype == np.uint16
    returned = sum(image.data.nbytes for image in cut.images)
    assert cut.bytes_read == transport.bytes
    assert returned <= cut.bytes_read <= 2 * returned + 2 * HEADER  # the primary and the plane's headers


def test_a_box_of_whole_rows_is_one_request_and_overlapping_boxes_share_their_bytes(remote, image):
    butler, ref, transport = remote
    rows = (100, 140, 0, WIDTH)

    cut = butler.get_cutouts(ref, [rows, (110, 120, 0, WIDTH), (120, 150, 0, WIDTH)])

    np.testing.assert_array_equal(cut.images[0].data, image.data[100:140])
    np.testing.assert_array_equal(cut.images[2].data, image.data[120:150])
    assert transport.requests == 2  # the header, then rows 100-150 at once
    assert cut.bytes_read == transport.bytes <= 50 * WIDTH * 4 + HEADER


def test_a_bbox_get_on_s3_fetches_only_the_box_of_the_image_and_its_planes(local, remote, image):
    butler, ref, transport = remote
    box = (200, 264, 300, 364)

    got = butler.get(ref, parameters={"bbox": box})

    expected = local[0].get(local[1], parameters={"bbox": box})
    np.testing.assert_array_equal(got.data, expected.data)
    np.testing.assert_array_equal(got.planes["mask"], image.planes["mask"][200:264, 300:364])
    assert got.origin == expected.origin == (200, 300)
    returned = got.data.nbytes + got.planes["mask"].nbytes
    assert returned <= transport.bytes <= 2 * returned + 2 * HEADER


def test_a_whole_get_on_s3_keeps_its_few_large_reads(local, remote, image):
    butler, ref, transport = remote

    got = butler.get(ref)

    np.testing.assert_array_equal(got.data, image.data)
    np.testing.assert_array_equal(got.planes["mask"], local[0].get(local[1]).planes["mask"])
    assert transport.requests <= 2
    assert transport.bytes == butler.datastore.size(butler.registry.get_files([ref.id])[ref.id].path)


def test_a_verified_bbox_get_on_s3_reads_the_file_once_whole(tmp_path, s3_bucket, image):
    bucket, options = s3_bucket
    root = f"s3://{bucket}/verified"
    butler = _repository(tmp_path / "verified", root, options, verify_on_read=True)
    ref = butler.put(image, "calexp", DATA_ID)
    transport = Transport(filesystem(root, options)[0])
    transport.reset()

    got = butler.get(ref, parameters={"bbox": (10, 20, 30, 40)})

    np.testing.assert_array_equal(got.data, image.data[10:20, 30:40])
    # Its checksum needs every byte: one large read, not the box's rows and then the rest.
    assert transport.requests == 1
    assert transport.bytes == butler.datastore.size(butler.registry.get_files([ref.id])[ref.id].path)
    butler.close()


def test_local_cutouts_still_report_the_bytes_read_from_the_file(local):
    from skybutler.formats import FitsFormatter

    butler, ref = local
    boxes = star_boxes(25, 9)
    cut = butler.get_cutouts(ref, boxes)
    with butler.datastore.open(cut.path) as f:
        _, bytes_read = FitsFormatter().read_cutouts(f, boxes)
    assert cut.bytes_read == bytes_read < 2 * 25 * 9 * 9 * 4 + HEADER


def test_a_partial_read_of_a_missing_file_names_it(s3_bucket):
    bucket, options = s3_bucket
    store = Datastore(f"s3://{bucket}/repo", storage_options=options)
    with pytest.raises(FileAccessError, match=r"No file 'run/gone\.fits' in the datastore at s3://"):
        store.open("run/gone.fits", partial=True)


def test_a_partial_read_reads_what_a_whole_read_reads(s3_bucket):
    bucket, options = s3_bucket
    store = Datastore(f"s3://{bucket}/repo", storage_options=options)
    content = bytes(range(256)) * 400
    store.commit(store.write_temporary("run/a.bin", lambda f: f.write(content)))
    with store.open("run/a.bin", partial=True) as f:
        f.prefetch([(1000, 1100), (90_000, 200_000), (5, 6)])
        assert f.requests == 3 and f.bytes_fetched == 100 + (len(content) - 90_000) + 1
        assert f.seek(1010) == 1010 and f.read(50) == content[1010:1060]
        assert f.seek(-10, 2) == len(content) - 10 and f.read() == content[-10:]
        assert f.requests == 3  # served from what was prefetched
        f.seek(0)
        assert f.read() == content  # a read past what it holds fetches it


ranges = st.lists(st.tuples(st.integers(0, 10_000), st.integers(1, 500)).map(lambda r: (r[0], r[0] + r[1])),
                  max_size=40)


def _covered(parts: list[tuple[int, int]]) -> set[int]:
    return {i for start, end in parts for i in range(start, end)}


@given(ranges)
def test_merged_ranges_cover_every_range_with_at_most_twice_its_bytes(wanted):
    merged = merge_ranges(wanted)
    assert _covered(wanted) <= _covered(merged)
    assert sum(end - start for start, end in merged) <= 2 * len(_covered(wanted))
    assert all(a[1] < b[0] for a, b in zip(merged, merged[1:], strict=False))  # sorted, apart


def test_touching_ranges_merge_and_far_ones_stay_apart():
    assert merge_ranges([(0, 10), (10, 20), (20, 25)]) == [(0, 25)]
    assert merge_ranges([(0, 10), (100, 110)]) == [(0, 10), (100, 110)]
    assert merge_ranges([(0, 10), (15, 25)]) == [(0, 25)]
