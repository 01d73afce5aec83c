"""The synthetic HSC-like data set: sky map, visits, raws, calibrations, raw metadata."""

from __future__ import annotations

import numpy as np
import pytest
from spherical_geometry.polygon import SphericalPolygon

from skybutler.demo import synthetic as syn
from skybutler.demo.algorithms import wcs_from_header
from skybutler.model import Image


@pytest.fixture(scope="module")
def skymap() -> syn.SkyMapDef:
    return syn.make_skymap()


@pytest.fixture(scope="module")
def visits() -> list[syn.VisitDef]:
    return syn.make_visits()


@pytest.fixture(scope="module")
def sky():
    return syn.make_sky(seed=1)


def polygon(region) -> SphericalPolygon:
    ra, dec = zip(*region, strict=True)
    return SphericalPolygon.from_radec(ra, dec)


def signed_area(region) -> float:
    ra, dec = (np.array(v) for v in zip(*region, strict=True))
    x = ra * np.cos(np.radians(dec.mean()))
    return 0.5 * float(np.sum(x * np.roll(dec, -1) - np.roll(x, -1) * dec))


# --------------------------------------------------------------------------- sky map


def test_the_sky_map_has_one_tract_of_two_by_two_patches(skymap):
    tract = skymap.tract(0)
    assert [p.id for p in tract.patches] == [0, 1, 2, 3]
    assert [(p.cell_x, p.cell_y) for p in tract.patches] == [(0, 0), (1, 0), (0, 1), (1, 1)]
    assert [p.name for p in tract.patches] == ["0,0", "1,0", "0,1", "1,1"]
    assert all(p.shape == (224, 224) for p in tract.patches)
    assert tract.bbox == (0, 424, 0, 424)


def test_inner_patch_boxes_tile_the_tract_and_outer_boxes_overlap(skymap):
    tract = skymap.tract(0)
    covered = np.zeros((424, 424), dtype=int)
    for patch in tract.patches:
        y0, y1, x0, x1 = patch.inner_bbox
        covered[y0:y1, x0:x1] += 1
        oy0, oy1, ox0, ox1 = patch.bbox
        assert (oy0, ox0) == (y0 - 12, x0 - 12) and (oy1, ox1) == (y1 + 12, x1 + 12)
    assert (covered[12:412, 12:412] == 1).all()


def test_a_patch_wcs_is_the_tract_wcs_shifted_to_the_patch_corner(skymap):
    tract = skymap.tract(0)
    for patch in tract.patches:
        y0, _, x0, _ = patch.bbox
        np.testing.assert_allclose(patch.wcs.wcs_pix2world([[3.0, 5.0]], 0),
                                   tract.wcs.wcs_pix2world([[x0 + 3.0, y0 + 5.0]], 0), rtol=0, atol=1e-12)
        np.testing.assert_allclose(patch.wcs.wcs.crval, [150.0, 2.0])


def test_regions_are_counter_clockwise_and_the_size_of_their_boxes(skymap, visits):
    tract = skymap.tract(0)
    side = 0.2 / 3600
    regions = [tract.region, *(p.region for p in tract.patches), visits[0].region,
               *visits[0].regions.values()]
    assert all(signed_area(region) > 0 for region in regions)
    assert np.radians(424 * side) ** 2 == pytest.approx(polygon(tract.region).area(), rel=1e-3)
    assert np.radians(224 * side) ** 2 == pytest.approx(polygon(tract.patches[0].region).area(), rel=1e-3)
    assert np.radians(256 * side) * np.radians(512 * side) == pytest.approx(
        polygon(visits[0].regions[0]).area(), rel=1e-3)


# --------------------------------------------------------------------------- visits


def test_eight_visits_four_per_band_two_detectors_each(visits):
    assert len(visits) == 8
    assert [v.id for v in visits] == sorted(v.id for v in visits)
    assert sorted({(v.physical_filter, v.band) for v in visits}) == [("HSC-I", "i"), ("HSC-R", "r")]
    assert sum(v.band == "r" for v in visits) == 4
    assert all(v.detectors == (0, 1) for v in visits)
    assert {syn.DETECTORS[d].name for d in (0, 1)} == {"1_53", "1_54"}


def test_visit_times_and_day_obs(visits):
    for visit in visits:
        assert visit.begin.tzinfo is not None
        assert (visit.end - visit.begin).total_seconds() == visit.exposure_time
        # Observed before noon UTC-12h: the night that began the day before.
        assert visit.day_obs == int(visit.begin.strftime("%Y%m%d")) - 1
        assert visit.exposure_id_string == f"HSCE00{visit.id}"


def test_one_visit_has_much_worse_seeing(visits):
    seeing = {v.id: v.seeing for v in visits}
    worst = max(seeing, key=seeing.get)
    assert worst == syn.BAD_SEEING_VISIT
    others = [s for vid, s in seeing.items() if vid != worst]
    assert seeing[worst] > 2 * max(others)


def test_every_visit_overlaps_every_patch_and_covers_the_tract(skymap, visits):
    tract = skymap.tract(0)
    for visit in visits:
        visit_poly = polygon(visit.region)
        for ra, dec in tract.region:
            assert visit_poly.contains_radec(ra, dec)
        for patch in tract.patches:
            assert any(polygon(visit.regions[d]).intersects_poly(polygon(patch.region))
                       for d in visit.detectors), (visit.id, patch.id)


# --------------------------------------------------------------------------- sky and frames


def test_the_sky_is_deterministic_and_fills_the_tract(skymap, sky):
    again = syn.make_sky(seed=1)
    assert sky.equals(again)
    assert not sky.equals(syn.make_sky(seed=2))
    assert sky.column_names == ["id", "ra", "dec", "flux_r", "flux_i"]
    x, y = skymap.tract(0).wcs.wcs_world2pix(sky["ra"].to_numpy(), sky["dec"].to_numpy(), 0)
    in_tract = ((x >= 0) & (x < 424) & (y >= 0) & (y < 424)).sum()
    assert 100 <= in_tract <= 300
    flux = sky["flux_r"].to_numpy()
    assert flux.min() >= 1500 and flux.max() <= 1e5


def test_raw_is_bias_plus_flat_times_signal_in_float32(visits, sky):
    visit = visits[0]
    raw = syn.make_raw(visit, 0, sky, seed=1)
    bias, flat = syn.make_bias(0), syn.make_flat(0, visit.physical_filter)
    assert isinstance(raw, Image)
    assert raw.data.dtype == np.float32 and raw.shape == (512, 256)
    electrons = (raw.data - bias.data) / flat.data * raw.header["GAIN"]
    # The median pixel is sky; stars cover a small fraction of the frame.
    assert np.median(electrons) == pytest.approx(visit.sky_level, rel=0.02)
    # Differences of neighbouring pixels cancel the sky gradient and the vignetting.
    step = np.diff(electrons, axis=0) / np.sqrt(2)
    sky_noise = 1.4826 * np.median(np.abs(step - np.median(step)))
    assert sky_noise == pytest.approx(np.sqrt(visit.sky_level + raw.header["RDNOISE"] ** 2), rel=0.05)


def test_raws_are_deterministic_per_seed(visits, sky):
    a = syn.make_raw(visits[1], 1, sky, seed=3)
    b = syn.make_raw(visits[1], 1, sky, seed=3)
    c = syn.make_raw(visits[1], 1, sky, seed=4)
    np.testing.assert_array_equal(a.data, b.data)
    assert not np.array_equal(a.data, c.data)


def test_raw_header_wcs_is_off_by_the_pointing_error(visits, sky):
    visit = visits[2]
    raw = syn.make_raw(visit, 1, sky)
    header_wcs = wcs_from_header(raw.header)
    np.testing.assert_allclose(header_wcs.wcs.crpix - visit.wcs[1].wcs.crpix, visit.pointing_error)


def test_raw_headers_hold_only_fits_card_values(visits, sky):
    raw = syn.make_raw(visits[0], 0, sky)
    for frame in (raw, syn.make_bias(0), syn.make_flat(0, "HSC-R")):
        assert all(isinstance(v, str | int | float | bool) for v in frame.header.values())
    assert raw.header["INSTRUME"] == "HSC"
    assert raw.header["FRAMEID"] == "HSCA90333400"


def test_flat_is_normalised_and_marks_a_bad_column():
    flat = syn.make_flat(1, "HSC-I")
    bad = syn.DETECTORS[1].bad_column
    good = np.delete(flat.data, bad, axis=1)
    assert good.mean() == pytest.approx(1.0, abs=0.01)
    assert (flat.data[:, bad] < 0.2).all()
    assert not np.array_equal(flat.data, syn.make_flat(1, "HSC-R").data)


# --------------------------------------------------------------------------- raw metadata


def test_header_to_data_id_reads_back_the_visit(visits, sky):
    visit = visits[5]
    data_id = syn.header_to_data_id(syn.make_raw(visit, 1, sky).header)
    assert data_id == {
        "instrument": "HSC", "exposure": visit.id, "visit": visit.id, "detector": 1,
        "detector_name": "1_54", "physical_filter": "HSC-I", "band": "i", "day_obs": visit.day_obs,
        "exposure_time": visit.exposure_time, "timespan_begin": visit.begin, "timespan_end": visit.end,
        "observation_type": "science", "target_name": "COSMOS",
        "tracking_ra": pytest.approx(visit.ra, abs=1e-5), "tracking_dec": pytest.approx(visit.dec, abs=1e-5),
    }


def test_header_to_data_id_falls_back_to_the_frame_id(visits, sky):
    header = dict(syn.make_raw(visits[0], 1, sky).header)
    del header["EXP-ID"]
    header["FRAMEID"] = "HSCA90333401"
    assert syn.header_to_data_id(header)["exposure"] == 903334


@pytest.mark.parametrize(("change", "message"), [
    ({"INSTRUME": "DECam"}, "not an HSC raw"),
    ({"EXP-ID": "garbage"}, "exposure id"),
    ({"FILTER01": "HSC-Z9"}, "unknown HSC filter"),
])
def test_header_to_data_id_rejects_what_is_not_an_hsc_raw(visits, sky, change, message):
    header = {**syn.make_raw(visits[0], 0, sky).header, **change}
    with pytest.raises(ValueError, match=message):
        syn.header_to_data_id(header)


def test_header_to_data_id_names_a_missing_key(visits, sky):
    header = dict(syn.make_raw(visits[0], 0, sky).header)
    del header["DET-ID"]
    with pytest.raises(ValueError, match="DET-ID"):
        syn.header_to_data_id(header)
