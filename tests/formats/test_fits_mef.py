"""Multi-extension FITS files of other pipelines: every HDU reachable, one meaning for a selection.

The files are built with astropy here, as another pipeline would write them: no
skybutler identity cards, an empty primary HDU, extensions told apart by EXTNAME
and EXTVER only.
"""

from __future__ import annotations

import io

import numpy as np
import pyarrow as pa
import pytest
from astropy.io import fits

from skybutler.errors import FormatError
from skybutler.formats import FitsFormatter
from skybutler.model import Image

from .conftest import ByteCountingFile

SHAPE = (50, 40)
BOX = (3, 8, 10, 15)  # 5 x 5


def pixels(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=SHAPE).astype(np.float32)


def to_bytes(hdus: list) -> bytes:
    buffer = io.BytesIO()
    fits.HDUList(hdus).writeto(buffer)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def four_sci() -> bytes:
    """An empty primary HDU and four SCI extensions, EXTVER 1..4, with headers of ~60 cards each."""
    hdus: list = [fits.PrimaryHDU()]
    hdus[0].header["TELESCOP"] = "HST"
    for version in range(1, 5):
        hdu = fits.ImageHDU(pixels(version), name="SCI", ver=version)
        for card in range(60):
            hdu.header[f"KEY{card}"] = version * 100 + card
        hdus.append(hdu)
    return to_bytes(hdus)


@pytest.fixture(scope="module")
def hst_like() -> bytes:
    """PRIMARY, then SCI,1 ERR,1 DQ,1 SCI,2 ERR,2 DQ,2 and a binary table."""
    hdus: list = [fits.PrimaryHDU()]
    for version in (1, 2):
        hdus.append(fits.ImageHDU(pixels(10 + version), name="SCI", ver=version))
        hdus.append(fits.ImageHDU(pixels(20 + version), name="ERR", ver=version))
        hdus.append(fits.ImageHDU(np.full(SHAPE, version, dtype=np.int16), name="DQ", ver=version))
    hdus.append(fits.BinTableHDU.from_columns([fits.Column(name="flux", format="D", array=[1.5, 2.5])],
                                              name="CATALOG"))
    return to_bytes(hdus)


def read(data: bytes, **parameters) -> object:
    return FitsFormatter().read(io.BytesIO(data), parameters=parameters or None)


def cutout(data: bytes, box=BOX, **selection) -> Image:
    (image,), _ = FitsFormatter().read_cutouts(io.BytesIO(data), [box], **selection)
    return image


@pytest.mark.parametrize(
    ("selection", "version"),
    [(("SCI", 1), 1), (("SCI", 2), 2), (("sci", 3), 3), (["SCI", 4], 4), (2, 2), (4, 4), ("SCI", 1), ("sci", 1)],
)
def test_every_sci_extension_is_reachable_by_name_and_version_or_index(four_sci, selection, version):
    image = read(four_sci, hdu=selection)
    np.testing.assert_array_equal(image.data, pixels(version))
    assert image.planes == {}
    assert image.header["KEY0"] == version * 100  # the extension's own cards...
    assert image.header["TELESCOP"] == "HST"  # ...under the primary's


def test_without_a_selection_the_image_is_the_first_sci_and_no_extension_is_lost(four_sci):
    image = read(four_sci)
    np.testing.assert_array_equal(image.data, pixels(1))
    assert list(image.planes) == ["sci,2", "sci,3", "sci,4"]
    for version in (2, 3, 4):
        np.testing.assert_array_equal(image.planes[f"sci,{version}"], pixels(version))


@pytest.mark.parametrize("selection", [1, ("SCI", 2), ("SCI", 3), 4, "SCI"])
def test_a_selection_means_the_same_in_get_with_and_without_bbox_and_in_cutouts(four_sci, selection):
    y0, y1, x0, x1 = BOX
    whole = read(four_sci, hdu=selection)
    boxed = read(four_sci, hdu=selection, bbox=BOX)
    cut = cutout(four_sci, hdu=selection)
    np.testing.assert_array_equal(boxed.data, whole.data[y0:y1, x0:x1])
    np.testing.assert_array_equal(cut.data, whole.data[y0:y1, x0:x1])
    assert boxed.origin == cut.origin == (y0, x0)
    assert cut.header == whole.header


@pytest.mark.parametrize("plane", ["sci,2", "sci,3", "SCI,4"])
def test_a_plane_means_the_same_in_get_with_and_without_bbox_and_in_cutouts(four_sci, plane):
    y0, y1, x0, x1 = BOX
    whole = read(four_sci).planes[plane.lower()]
    np.testing.assert_array_equal(read(four_sci, bbox=BOX).planes[plane.lower()], whole[y0:y1, x0:x1])
    np.testing.assert_array_equal(cutout(four_sci, plane=plane).data, whole[y0:y1, x0:x1])


def test_planes_of_an_hst_like_file_carry_their_version_when_it_is_not_one(hst_like):
    image = read(hst_like)
    assert list(image.planes) == ["err", "dq", "sci,2", "err,2", "dq,2"]
    np.testing.assert_array_equal(image.planes["err,2"], pixels(22))
    np.testing.assert_array_equal(cutout(hst_like, plane="dq,2").data, np.full((5, 5), 2))


def test_every_hdu_of_an_hst_like_file_is_reachable(hst_like):
    for version in (1, 2):
        np.testing.assert_array_equal(read(hst_like, hdu=("ERR", version)).data, pixels(20 + version))
        np.testing.assert_array_equal(read(hst_like, hdu=("DQ", version), bbox=BOX).data, np.full((5, 5), version))
    table = read(hst_like, hdu="CATALOG", columns=["flux"])
    assert table.equals(pa.table({"flux": [1.5, 2.5]}))
    assert read(hst_like, hdu=7, rows=(1, 2)).column("flux").to_pylist() == [2.5]


def test_a_missing_hdu_is_a_format_error_listing_the_hdus_present(four_sci):
    with pytest.raises(FormatError) as caught:
        read(four_sci, hdu=("SCI", 5))
    assert str(caught.value) == (
        "no HDU \"('SCI', 5)\" in this file; it has 0 PRIMARY,1 (no data), 1 SCI,1 (image 50x40), "
        "2 SCI,2 (image 50x40), 3 SCI,3 (image 50x40), 4 SCI,4 (image 50x40)"
    )
    with pytest.raises(FormatError, match=r"no HDU 'ERR' in this file; it has 0 PRIMARY"):
        cutout(four_sci, hdu="ERR")
    with pytest.raises(FormatError, match=r"no HDU 9 in this file; it has 0 PRIMARY.*4 SCI,4"):
        read(four_sci, hdu=9, bbox=BOX)


def test_a_missing_plane_lists_the_planes_by_the_names_get_uses(four_sci):
    with pytest.raises(FormatError, match=r"no plane 'sci' in this image; it has sci,2, sci,3, sci,4"):
        cutout(four_sci, plane="sci")


@pytest.mark.parametrize("value", [True, -1, 1.5, ("SCI", "2"), ("SCI",), ("", 1), "", None, {"SCI": 1}])
def test_an_hdu_that_is_neither_index_name_nor_pair_is_refused(four_sci, value):
    with pytest.raises(FormatError, match=r"hdu (must be|index must be 0 or more)"):
        read(four_sci, hdu=value)


def test_an_hdu_without_pixels_cannot_be_read_as_an_image(four_sci, hst_like):
    with pytest.raises(FormatError, match=r"HDU 0 \(PRIMARY\) holds no data, not an image's pixels"):
        read(four_sci, hdu=0)
    with pytest.raises(FormatError, match=r"HDU 7 \(CATALOG\) holds a table, not an image's pixels"):
        cutout(hst_like, hdu="CATALOG")


def test_parameters_must_fit_the_kind_of_hdu_selected(hst_like):
    with pytest.raises(FormatError, match="unknown read parameter 'bbox' for fits tables"):
        read(hst_like, hdu="CATALOG", bbox=BOX)
    with pytest.raises(FormatError, match="unknown read parameter 'columns' for fits images"):
        read(hst_like, hdu="SCI", columns=["flux"])


def test_plane_and_hdu_together_are_refused(four_sci):
    with pytest.raises(FormatError, match="give a plane or an hdu to cut out of, not both"):
        cutout(four_sci, plane="sci,2", hdu=1)


def header_bytes(data: bytes) -> list[int]:
    """Size of each HDU's header, padding included."""
    with fits.open(io.BytesIO(data)) as hdul:
        return [hdu.fileinfo()["datLoc"] - hdu.fileinfo()["hdrLoc"] for hdu in hdul]


@pytest.mark.parametrize(
    ("selection", "index"), [({}, 1), ({"hdu": ("SCI", 2)}, 2), ({"hdu": 3}, 3), ({"plane": "sci,3"}, 3)]
)
def test_a_cutout_reads_no_header_after_the_hdu_it_cuts(four_sci, selection, index):
    headers = header_bytes(four_sci)
    row_bytes = SHAPE[1] * 4
    fileobj = ByteCountingFile(four_sci)
    (image,), bytes_read = FitsFormatter().read_cutouts(fileobj, [BOX], **selection)
    assert bytes_read == fileobj.bytes_read
    # The headers up to the one cut (plus one card astropy reads twice) and the box's rows at most:
    # far below the headers after it, which an earlier version read too (63 of 75 KB of such a file).
    assert bytes_read <= sum(headers[: index + 1]) + 80 + (BOX[1] - BOX[0]) * row_bytes
    assert bytes_read < sum(headers) - sum(headers[index + 1 :]) + 2880
    np.testing.assert_array_equal(image.data, read(four_sci, hdu=index).data[3:8, 10:15])


def test_a_file_written_by_skybutler_reads_as_before_with_hdu_selection_too():
    data_pixels = pixels(5)
    buffer = io.BytesIO()
    FitsFormatter().write(Image(data_pixels, {"EXPTIME": 3.0}, planes={"variance": data_pixels * 2}), buffer,
                          identity={})
    data = buffer.getvalue()
    assert list(read(data).planes) == ["variance"]
    np.testing.assert_array_equal(read(data, hdu="VARIANCE").data, data_pixels * 2)
    np.testing.assert_array_equal(read(data, hdu=0).data, data_pixels)
    assert read(data, hdu=0).planes == {}
