"""Images as FITS: header cards, planes, identity and box reads."""

from __future__ import annotations

import io

import numpy as np
import pytest
from astropy.io import fits

from skybutler.errors import FormatError
from skybutler.formats import FitsFormatter
from skybutler.model import Image

from .conftest import from_bytes, to_bytes


def test_pixels_go_in_the_primary_hdu_and_planes_in_named_extensions(image):
    with fits.open(io.BytesIO(to_bytes(FitsFormatter(), image))) as hdul:
        assert [hdu.name for hdu in hdul] == ["PRIMARY", "VARIANCE", "MASK"]
        np.testing.assert_array_equal(hdul[0].data, image.data)
        np.testing.assert_array_equal(hdul["MASK"].data, image.planes["mask"])
        assert hdul[0].header["EXPTIME"] == 30.0
        assert hdul[0].header["FILTER"] == "HSC-R"


def test_planes_are_read_back_with_lower_case_names(image):
    back = from_bytes(FitsFormatter(), to_bytes(FitsFormatter(), image))
    assert list(back.planes) == ["variance", "mask"]
    assert back.planes["mask"].dtype == np.uint16


def test_identity_is_in_primary_header_cards(image, identity):
    with fits.open(io.BytesIO(to_bytes(FitsFormatter(), image, identity))) as hdul:
        header = hdul[0].header
        assert header["SB_ID"] == identity["dataset_id"]
        assert header["SB_TYPE"] == identity["dataset_type"]
        assert header["SB_DATAID"] == identity["data_id"]
        assert header["SB_RUN"] == identity["run"]


def test_long_identity_values_continue_on_further_cards(image, identity):
    identity["run"] = "u/someone/" + "very-long-run-name/" * 10
    identity["data_id"] = "instrument=HSC, " + ", ".join(f"key{i}={i}" for i in range(20))
    data = to_bytes(FitsFormatter(), image, identity)
    assert b"CONTINUE" in data
    assert FitsFormatter().read_identity(io.BytesIO(data)) == identity


def test_identity_cards_are_not_part_of_the_image_header(image):
    back = from_bytes(FitsFormatter(), to_bytes(FitsFormatter(), image))
    assert back.header == image.header


def test_no_identity_reads_as_none(image):
    assert FitsFormatter().read_identity(io.BytesIO(to_bytes(FitsFormatter(), image, {}))) is None


def test_unknown_identity_key_is_refused(image):
    with pytest.raises(FormatError, match="unknown identity key 'owner'; known: dataset_id"):
        to_bytes(FitsFormatter(), image, {"owner": "me"})


def test_header_values_come_back_as_python_values():
    header = {"EXPTIME": 30.0, "VISIT": 903334, "PHOTOMETRIC": False, "OBJECT": "COSMOS",
              "UNKNOWN": None, "PHASE": 1 + 2j, "GAIN": np.float32(3.5), "HIERARCH_KEY_LONG": 7}
    back = from_bytes(FitsFormatter(), to_bytes(FitsFormatter(), Image(np.zeros((2, 2)), header=header)))
    assert back.header == {**header, "GAIN": 3.5}
    assert [type(v) for v in back.header.values()] == [float, int, bool, str, type(None), complex, float, int]


def test_long_string_values_and_long_keywords_round_trip():
    header = {"COMMENT": ["first", "second"], "DATASET_DESCRIPTION": "x" * 200}
    back = from_bytes(FitsFormatter(), to_bytes(FitsFormatter(), Image(np.zeros((2, 2)), header=header)))
    assert back.header == header


def test_structural_cards_in_the_header_are_skipped():
    header = {"SIMPLE": True, "BITPIX": 8, "NAXIS": 3, "NAXIS1": 99, "EXTEND": False, "BZERO": 5, "EXPTIME": 1.0}
    data = to_bytes(FitsFormatter(), Image(np.ones((2, 3), dtype=np.float32), header=header))
    with fits.open(io.BytesIO(data)) as hdul:
        assert hdul[0].header["NAXIS"] == 2
        assert hdul[0].header["BITPIX"] == -32
        assert "BZERO" not in hdul[0].header
    back = from_bytes(FitsFormatter(), data)
    assert back.header == {"EXPTIME": 1.0}
    np.testing.assert_array_equal(back.data, np.ones((2, 3)))


def test_header_values_fits_cannot_hold_are_refused_by_key():
    with pytest.raises(FormatError, match=r"header card 'WCS' holds dict; FITS cards hold str"):
        to_bytes(FitsFormatter(), Image(np.zeros((2, 2)), header={"WCS": {"a": 1}}))
    with pytest.raises(FormatError, match=r"header card 'HISTORY' must hold a str or a list of str lines"):
        to_bytes(FitsFormatter(), Image(np.zeros((2, 2)), header={"HISTORY": [1, 2]}))


def test_header_text_fits_cannot_hold_is_a_format_error():
    with pytest.raises(FormatError, match="cannot write fits file"):
        to_bytes(FitsFormatter(), Image(np.zeros((2, 2)), header={"OBSERVER": "Ødegaard"}))
    with pytest.raises(FormatError, match="cannot write fits file"):
        to_bytes(FitsFormatter(), Image(np.zeros((2, 2))), {"run": "u/ødegaard/run"})


@pytest.mark.parametrize("dtype", ["u1", "i1", "i2", "u2", "i4", "u4", "i8", "u8", "f4", "f8"])
def test_pixel_types_round_trip_in_native_byte_order(dtype):
    data = np.arange(6).astype(dtype).reshape(2, 3)
    back = from_bytes(FitsFormatter(), to_bytes(FitsFormatter(), Image(data)))
    assert back.data.dtype == np.dtype(dtype)
    assert back.data.dtype.isnative
    np.testing.assert_array_equal(back.data, data)


def test_bool_pixels_are_refused_with_advice():
    with pytest.raises(FormatError, match=r"cannot store bool pixels \(in 'mask'\).*uint8"):
        to_bytes(FitsFormatter(), Image(np.zeros((2, 2)), planes={"mask": np.zeros((2, 2), bool)}))


def test_bbox_reads_only_that_box_of_every_plane(image):
    data = to_bytes(FitsFormatter(), image)
    box = from_bytes(FitsFormatter(), data, bbox=(5, 15, 10, 12))
    np.testing.assert_array_equal(box.data, image.data[5:15, 10:12])
    np.testing.assert_array_equal(box.planes["variance"], image.planes["variance"][5:15, 10:12])
    np.testing.assert_array_equal(box.planes["mask"], image.planes["mask"][5:15, 10:12])
    assert box.origin == (5, 10)
    assert box.header == image.header


def test_bbox_is_clipped_to_the_image(image):
    box = from_bytes(FitsFormatter(), to_bytes(FitsFormatter(), image), bbox=(-5, 3, 25, 99))
    np.testing.assert_array_equal(box.data, image.data[0:3, 25:30])
    assert box.origin == (0, 25)


def test_bbox_outside_the_image_names_box_and_shape(image):
    with pytest.raises(FormatError, match=r"box \(50, 60, 0, 5\) .* outside the image of shape \(40, 30\)"):
        from_bytes(FitsFormatter(), to_bytes(FitsFormatter(), image), bbox=(50, 60, 0, 5))


@pytest.mark.parametrize("bbox", [(1, 2, 3), ("a", 2, 3, 4), 7])
def test_bbox_that_is_not_four_integers_is_refused(image, bbox):
    with pytest.raises(FormatError, match="bbox must be four integers"):
        from_bytes(FitsFormatter(), to_bytes(FitsFormatter(), image), bbox=bbox)


def test_image_parameters_do_not_include_table_ones(image):
    with pytest.raises(FormatError, match="unknown read parameter 'columns' for fits images; allowed: bbox, hdu"):
        from_bytes(FitsFormatter(), to_bytes(FitsFormatter(), image), columns=["a"])


def test_origin_of_a_cutout_round_trips_and_adds_to_a_bbox(image):
    image.origin = (1000, 2000)
    data = to_bytes(FitsFormatter(), image)
    assert from_bytes(FitsFormatter(), data).origin == (1000, 2000)
    assert from_bytes(FitsFormatter(), data, bbox=(2, 4, 3, 5)).origin == (1002, 2003)


def test_image_in_the_first_extension_of_a_foreign_file_is_read():
    data = np.arange(20, dtype=np.int16).reshape(4, 5)
    buffer = io.BytesIO()
    primary = fits.PrimaryHDU()
    primary.header["TELESCOP"] = "Subaru"
    fits.HDUList([primary, fits.ImageHDU(data, name="SCI")]).writeto(buffer)
    back = from_bytes(FitsFormatter(), buffer.getvalue())
    np.testing.assert_array_equal(back.data, data)
    assert back.header == {"TELESCOP": "Subaru"}
