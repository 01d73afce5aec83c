"""The demo's image algorithms, one DMTN-059 step at a time, then chained end to end.

The module fixtures run processCcd on the four r-band visits (two detectors each),
warp them onto patch 0, coadd, detect, measure: about one second in all.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from skybutler.demo import algorithms as alg
from skybutler.demo import synthetic as syn
from skybutler.model import Image

BAND = "r"


# The tests share module fixtures (the processed visits, warps and coadd): on one xdist worker (--dist loadgroup in
# pyproject.toml) they are built once per run, not once per worker.
pytestmark = pytest.mark.xdist_group("demo-algorithms")


@pytest.fixture(scope="module")
def sky() -> pa.Table:
    return syn.make_sky(seed=1)


@pytest.fixture(scope="module")
def patch() -> syn.PatchDef:
    return syn.make_skymap().tract(0).patches[0]


@pytest.fixture(scope="module")
def visits() -> list[syn.VisitDef]:
    return [v for v in syn.make_visits() if v.band == BAND]


@pytest.fixture(scope="module")
def processed(visits, sky) -> dict[tuple[int, int], tuple[Image, pa.Table, dict]]:
    """(visit, detector) -> (calexp, src, calib) for the r-band visits."""
    out = {}
    for visit in visits:
        for detector in visit.detectors:
            raw = syn.make_raw(visit, detector, sky, seed=1)
            out[visit.id, detector] = alg.process_ccd(
                raw, syn.make_bias(detector), syn.make_flat(detector, visit.physical_filter), sky, band=BAND)
    return out


@pytest.fixture(scope="module")
def warps(visits, processed, patch) -> list[Image]:
    return [alg.make_warp([processed[v.id, d][0] for d in v.detectors], patch.wcs, patch.shape)
            for v in visits]


@pytest.fixture(scope="module")
def coadd(warps) -> tuple[Image, list[int]]:
    return alg.assemble_coadd(warps)


def pixel_positions(wcs, sky):
    return wcs.wcs_world2pix(sky["ra"].to_numpy(), sky["dec"].to_numpy(), 0)


def nearest_arcsec(ra, dec, ra0, dec0) -> np.ndarray:
    """Distance in arcsec from each (ra0, dec0) to the nearest (ra, dec)."""
    dx = (np.asarray(ra)[None, :] - np.asarray(ra0)[:, None]) * np.cos(np.radians(2.0)) * 3600
    dy = (np.asarray(dec)[None, :] - np.asarray(dec0)[:, None]) * 3600
    return np.sqrt(dx**2 + dy**2).min(axis=1)


# --------------------------------------------------------------------------- processCcd


def test_process_ccd_recovers_the_known_zero_point(visits, processed):
    # ~35 stars at S/N > 20 each give the ratio to 1-3%; the median is then good to
    # ~0.6%. The bad-seeing visit is left out: its 1.4" aperture misses ~20% of the
    # light, which its zero point rightly absorbs.
    for visit in visits:
        if visit.id == syn.BAD_SEEING_VISIT:
            continue
        for detector in visit.detectors:
            calib = processed[visit.id, detector][2]
            assert calib["photo_calib"] == pytest.approx(syn.true_photo_calib(visit, detector), rel=0.015)
            assert calib["n_photometric"] >= 20


def test_process_ccd_writes_the_calibration_into_the_calexp_header(processed):
    calexp, _, calib = next(iter(processed.values()))
    assert calexp.header["PHOTCALIB"] == calib["photo_calib"]
    assert calexp.header["FLUXMAG0"] == pytest.approx(3631e9 / calib["photo_calib"])
    assert calexp.header["BAND"] == BAND
    assert calexp.header["PSF_FWHM"] == calib["psf_fwhm_arcsec"]


def test_process_ccd_fits_away_the_error_of_the_header_wcs(visits, processed):
    for visit in visits:
        for detector in visit.detectors:
            calexp, _, calib = processed[visit.id, detector]
            fitted = alg.wcs_from_header(calexp.header).wcs.crpix
            np.testing.assert_allclose(fitted, visit.wcs[detector].wcs.crpix, atol=0.05)
            np.testing.assert_allclose(calib["wcs_shift"], -np.array(visit.pointing_error), atol=0.05)
            assert calib["astrometric_rms_arcsec"] < 0.1


def test_process_ccd_measures_the_seeing(visits, processed):
    for visit in visits:
        calib = processed[visit.id, 0][2]
        assert calib["psf_fwhm_arcsec"] == pytest.approx(visit.seeing, rel=0.05)


def test_process_ccd_detects_the_bright_injected_stars(visits, processed, sky):
    visit = visits[0]
    calexp, src, _ = processed[visit.id, 0]
    x, y = pixel_positions(visit.wcs[0], sky)
    on_chip = (x > 10) & (x < 246) & (y > 10) & (y < 502) & (sky["flux_r"].to_numpy() > 3000)
    distance = nearest_arcsec(src["ra"].to_numpy(), src["dec"].to_numpy(),
                              sky["ra"].to_numpy()[on_chip], sky["dec"].to_numpy()[on_chip])
    assert on_chip.sum() > 40
    assert (distance < 0.3).mean() >= 0.95


def test_process_ccd_builds_variance_and_mask_planes(visits, processed):
    visit = visits[0]
    calexp, _, _ = processed[visit.id, 1]
    assert set(calexp.planes) == {"variance", "mask"}
    mask = calexp.planes["mask"]
    empty = mask == 0
    # On empty sky the variance plane predicts the pixel scatter.
    step = np.diff(np.where(empty, calexp.data, np.nan), axis=0).ravel()
    step = step[np.isfinite(step)] / np.sqrt(2)
    measured = 1.4826 * np.median(np.abs(step))
    assert measured**2 == pytest.approx(np.median(calexp.planes["variance"][empty]), rel=0.1)
    bad = syn.DETECTORS[1].bad_column
    assert (mask[:, bad] & alg.MASK_BITS["INTRP"]).all()
    assert np.median(calexp.data[empty]) == pytest.approx(0.0, abs=1.0)  # background subtracted


def test_process_ccd_masks_and_repairs_a_cosmic_ray(visits, sky):
    visit = visits[0]
    raw = syn.make_raw(visit, 0, sky, seed=1)
    bias, flat = syn.make_bias(0), syn.make_flat(0, visit.physical_filter)
    x, y = pixel_positions(visit.wcs[0], sky)
    # An empty spot: far from every star.
    yy, xx = np.mgrid[20:500:8, 20:240:8]
    far = np.hypot(xx.ravel()[:, None] - x[None, :], yy.ravel()[:, None] - y[None, :]).min(axis=1)
    spot = int(np.argmax(far))
    cy, cx = int(yy.ravel()[spot]), int(xx.ravel()[spot])
    hit = Image(raw.data.copy(), raw.header)
    hit.data[cy, cx:cx + 3] += 2000.0  # a 3-pixel track, ~200 sigma
    calexp, _, calib = alg.process_ccd(hit, bias, flat, sky, band=BAND)
    assert (calexp.planes["mask"][cy, cx:cx + 3] & alg.MASK_BITS["CR"]).all()
    assert np.abs(calexp.data[cy, cx:cx + 3]).max() < 5 * np.sqrt(calexp.planes["variance"][cy, cx])
    assert calib["n_cosmic_ray_pixels"] >= 3


def test_process_ccd_needs_a_reference_flux_for_the_band(visits, sky):
    raw = syn.make_raw(visits[0], 0, sky)
    with pytest.raises(ValueError, match="band 'z'"):
        alg.process_ccd(raw, syn.make_bias(0), syn.make_flat(0, "HSC-R"), sky.drop(["flux_r"]), band="z")


# --------------------------------------------------------------------------- makeCoaddTempExp


def star_image(wcs, ras, decs, fluxes, shape, sigma=1.6) -> np.ndarray:
    x, y = wcs.wcs_world2pix(ras, decs, 0)
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]]
    image = np.zeros(shape)
    for xi, yi, f in zip(x, y, fluxes, strict=True):
        image += f * np.exp(-((xx - xi) ** 2 + (yy - yi) ** 2) / (2 * sigma**2)) / (2 * np.pi * sigma**2)
    return image


def test_a_warp_preserves_flux_and_positions(patch):
    # A noiseless rotated "calexp" with three stars, warped onto the patch grid.
    visit = next(v for v in syn.make_visits() if v.rotation != 0)
    wcs = visit.wcs[0]
    ras, decs = patch.wcs.wcs_pix2world([60.0, 150.5, 100.2], [80.0, 40.3, 170.7], 0)
    fluxes = np.array([1000.0, 5000.0, 250.0])
    shape = (512, 256)
    header = {**alg.wcs_to_header(wcs), "PHOTCALIB": 2.0, "PSF_FWHM": 0.75, "BAND": BAND}
    calexp = Image(star_image(wcs, ras, decs, fluxes, shape).astype(np.float32), header,
                   planes={"variance": np.ones(shape, np.float32), "mask": np.zeros(shape, np.int16)})
    warp = alg.make_warp(calexp, patch.wcs, patch.shape)
    assert warp.shape == patch.shape
    assert warp.header["BUNIT"] == "nJy" and warp.header["PSF_FWHM"] == 0.75
    for ra, dec, flux in zip(ras, decs, fluxes, strict=True):
        x, y = patch.wcs.wcs_world2pix([ra], [dec], 0)
        cx, cy = int(round(x[0])), int(round(y[0]))
        stamp = warp.data[cy - 12:cy + 13, cx - 12:cx + 13].astype(float)
        assert np.nansum(stamp) == pytest.approx(2.0 * flux, rel=2e-3)
        yy, xx = np.mgrid[cy - 12:cy + 13, cx - 12:cx + 13]
        assert (stamp * xx).sum() / stamp.sum() == pytest.approx(x[0], abs=0.02)
        assert (stamp * yy).sum() / stamp.sum() == pytest.approx(y[0], abs=0.02)
    # Pixels the calexp does not reach are NaN and NO_DATA.
    missing = np.isnan(warp.data)
    assert missing.any()
    assert (warp.planes["mask"][missing] & alg.MASK_BITS["NO_DATA"]).all()
    np.testing.assert_allclose(warp.planes["variance"][~missing], 4.0, rtol=1e-5)


def test_a_visit_warp_covers_the_patch_except_the_chip_gap(warps, visits, processed, patch):
    warp = warps[0]
    missing = np.isnan(warp.data)
    assert 0 < missing.mean() < 0.1  # an 8-pixel gap across a 224-pixel patch, if it crosses it
    assert warp.header["NCALEXP"] == 2
    assert warp.header["EXP-ID"] == visits[0].exposure_id_string


# --------------------------------------------------------------------------- assembleCoadd


def test_the_coadd_rejects_the_bad_seeing_warp(coadd, visits):
    image, used = coadd
    bad = [i for i, v in enumerate(visits) if v.id == syn.BAD_SEEING_VISIT]
    assert bad and bad[0] not in used
    assert sorted(used) == [i for i in range(len(visits)) if i not in bad]
    assert image.header["NINPUTS"] == 3
    assert image.header["PSF_FWHM"] < 0.8


def test_the_coadd_clips_an_outlier_pixel(warps, coadd):
    image, used = coadd
    spot = np.unravel_index(np.nanargmin(np.abs(image.data)), image.shape)
    hit = [Image(w.data.copy(), dict(w.header), dict(w.planes)) for w in warps]
    hit[used[0]].data[spot] += 1000 * np.sqrt(hit[used[0]].planes["variance"][spot])
    clipped, used_again = alg.assemble_coadd(hit)
    assert used_again == used
    assert clipped.planes["mask"][spot] & alg.MASK_BITS["CLIPPED"]
    others = [hit[i].data[spot] for i in used[1:]]
    assert clipped.data[spot] == pytest.approx(np.mean(others), abs=3 * float(np.sqrt(image.planes["variance"][spot])))


def test_the_coadd_averages_without_clipping_when_only_two_warps(warps, coadd):
    _, used = coadd
    pair = [warps[i] for i in used[:2]]
    two, used_two = alg.assemble_coadd(pair)
    assert used_two == [0, 1]
    assert not (two.planes["mask"] & alg.MASK_BITS["CLIPPED"]).any()


def test_the_coadd_of_no_usable_warp_is_empty(warps):
    blank = Image(np.full(warps[0].shape, np.nan, np.float32), dict(warps[0].header))
    image, used = alg.assemble_coadd([blank])
    assert used == [] and np.isnan(image.data).all()


# --------------------------------------------------------------------------- detect, merge, measure


def test_coadd_detection_finds_the_injected_stars(coadd, patch, sky):
    image, _ = coadd
    peaks = alg.detect_sources(image)
    x, y = pixel_positions(patch.wcs, sky)
    inside = (x > 8) & (x < 216) & (y > 8) & (y < 216)
    distance = nearest_arcsec(peaks["ra"].to_numpy(), peaks["dec"].to_numpy(),
                              sky["ra"].to_numpy()[inside], sky["dec"].to_numpy()[inside])
    assert inside.sum() >= 25
    assert (distance < 0.3).mean() >= 0.95
    assert (peaks["significance"].to_numpy() > 5).all()
    # No spurious peaks: every peak is an injected star.
    spurious = nearest_arcsec(sky["ra"].to_numpy(), sky["dec"].to_numpy(),
                              peaks["ra"].to_numpy(), peaks["dec"].to_numpy()) > 0.5
    assert spurious.sum() == 0


def peaks_table(ra, dec, significance) -> pa.Table:
    n = len(ra)
    return pa.table({"id": np.arange(n), "x": np.zeros(n), "y": np.zeros(n), "ra": np.asarray(ra, float),
                     "dec": np.asarray(dec, float), "significance": np.asarray(significance, float)})


def test_merge_detections_deduplicates_across_bands():
    arcsec = 1 / 3600
    r = peaks_table([150.0, 150.0 + 10 * arcsec], [2.0, 2.0], [50.0, 8.0])
    i = peaks_table([150.0 + 0.3 * arcsec, 150.0 - 10 * arcsec], [2.0, 2.0], [80.0, 6.0])
    merged = alg.merge_detections({"r": r, "i": i}, match_radius_arcsec=1.0, id_offset=1000)
    assert merged.num_rows == 3
    assert merged["id"].to_pylist() == [1000, 1001, 1002]
    first = merged.slice(0, 1).to_pylist()[0]
    assert first["ra"] == pytest.approx(150.0 + 0.3 * arcsec)  # the most significant peak's position
    assert first["detected_r"] and first["detected_i"] and first["n_bands"] == 2
    assert merged["n_bands"].to_pylist() == [2, 1, 1]


def test_merge_detections_of_one_band_twice_is_that_band(coadd):
    peaks = alg.detect_sources(coadd[0])
    merged = alg.merge_detections({"r": peaks, "i": peaks})
    assert merged.num_rows <= peaks.num_rows
    assert all(merged["detected_i"].to_pylist())


def test_merge_measurements_picks_the_band_of_highest_snr():
    def measured(snr, ra):
        return pa.table({"id": [1, 2], "ra": ra, "dec": [2.0, 2.0], "flux": [10.0, 20.0],
                         "flux_err": [1.0, 1.0], "snr": snr, "centroid_flag": [False, False]})
    merged = alg.merge_measurements({"r": measured([30.0, 5.0], [150.0, 150.1]),
                                     "i": measured([10.0, 50.0], [150.01, 150.11])})
    assert merged["ref_band"].to_pylist() == ["r", "i"]
    assert merged["ra"].to_pylist() == [150.0, 150.11]
    assert merged["snr_r"].to_pylist() == [30.0, 5.0]
    assert {"flux_r", "flux_err_r", "flux_i", "flux_err_i"} <= set(merged.column_names)


# --------------------------------------------------------------------------- forced photometry


@pytest.fixture(scope="module")
def forced_inputs(processed, visits, sky):
    calexp, _, calib = processed[visits[0].id, 0]
    ny, nx = calexp.shape
    x, y = pixel_positions(alg.wcs_from_header(calexp.header), sky)
    inside = (x > 10) & (x < nx - 10) & (y > 10) & (y < ny - 10)
    positions = sky.filter(pa.array(inside)).select(["id", "ra", "dec"])
    return calexp, calib, positions


def cut(calexp: Image, boxes, planes=True) -> list[Image]:
    return [Image(calexp.data[y0:y1, x0:x1], calexp.header,
                  {"variance": calexp.planes["variance"][y0:y1, x0:x1]} if planes else {}, (y0, x0))
            for y0, y1, x0, x1 in boxes]


def test_forced_photometry_on_cutouts_equals_the_full_image(forced_inputs):
    calexp, calib, positions = forced_inputs
    boxes = alg.cutout_boxes(calexp.header, positions["ra"], positions["dec"], half_size=9)
    assert all((y1 - y0, x1 - x0) == (19, 19) for y0, y1, x0, x1 in boxes)
    on_cutouts = alg.forced_photometry(cut(calexp, boxes), positions, calib)
    on_full = alg.forced_photometry([calexp] * positions.num_rows, positions, calib)
    assert not any(on_cutouts["aperture_flag"].to_pylist())
    for name in ("flux", "flux_err", "x", "y"):
        np.testing.assert_array_equal(on_cutouts[name].to_numpy(), on_full[name].to_numpy())
    assert on_cutouts["id"].to_pylist() == positions["id"].to_pylist()


def test_forced_photometry_takes_variance_cutouts_and_the_header_calibration(forced_inputs):
    calexp, calib, positions = forced_inputs
    boxes = alg.cutout_boxes(calexp.header, positions["ra"], positions["dec"], half_size=9)
    variances = [calexp.planes["variance"][y0:y1, x0:x1] for y0, y1, x0, x1 in boxes]
    split = alg.forced_photometry(cut(calexp, boxes, planes=False), positions, variances=variances)
    whole = alg.forced_photometry(cut(calexp, boxes), positions, calib)
    np.testing.assert_array_equal(split["flux_err"].to_numpy(), whole["flux_err"].to_numpy())
    np.testing.assert_array_equal(split["flux"].to_numpy(), whole["flux"].to_numpy())


def test_forced_photometry_flags_an_aperture_cut_by_the_edge(forced_inputs):
    calexp, calib, positions = forced_inputs
    small = alg.cutout_boxes(calexp.header, positions["ra"], positions["dec"], half_size=4)
    table = alg.forced_photometry(cut(calexp, small), positions, calib)
    assert all(table["aperture_flag"].to_pylist())


def test_cutout_boxes_are_clipped_and_empty_off_the_image(forced_inputs):
    calexp, _, _ = forced_inputs
    wcs = alg.wcs_from_header(calexp.header)
    (ra_corner, ra_off), (dec_corner, dec_off) = wcs.wcs_pix2world([1.0, -100.0], [2.0, 50.0], 0)
    corner, off = alg.cutout_boxes(calexp.header, [ra_corner, ra_off], [dec_corner, dec_off], 5,
                                   shape=calexp.shape)
    assert corner == (0, 8, 0, 7)
    assert off[2] == off[3]


# --------------------------------------------------------------------------- end to end


def test_the_chain_recovers_the_injected_fluxes(coadd, processed, visits, sky):
    """Coadd measurement and forced photometry give back the injected fluxes.

    Only stars measured at S/N >= 20 are scored, so each ratio has an error of at
    most 5%; ~25 such stars per patch put the median within ~1.3% of 1 from noise
    alone, and the calibration adds ~0.6%. |median - 1| < 0.03 is over 2 sigma of
    that; a robust scatter below 0.1 is twice the worst single-star error.
    """
    image, _ = coadd
    merged = alg.merge_detections({"r": alg.detect_sources(image)})
    measured = alg.measure_sources(image, merged)
    reference = alg.merge_measurements({"r": measured})
    score = alg.flux_recovery(measured, sky)
    assert score["n_matched"] >= 20
    assert abs(score["median_ratio"] - 1) < 0.03 and score["scatter"] < 0.1
    assert alg.flux_recovery(reference, sky, band="r") == score

    calexp, _, calib = processed[visits[1].id, 0]
    boxes = alg.cutout_boxes(calexp.header, reference["ra"], reference["dec"], 9, shape=calexp.shape)
    keep = [k for k, (y0, y1, x0, x1) in enumerate(boxes) if y1 > y0 and x1 > x0]
    forced = alg.forced_photometry(cut(calexp, [boxes[k] for k in keep]), reference.take(keep), calib)
    forced = forced.filter(pa.compute.invert(forced["aperture_flag"]))
    score = alg.flux_recovery(forced, sky, band="r")
    assert score["n_matched"] >= 10
    assert abs(score["median_ratio"] - 1) < 0.03 and score["scatter"] < 0.1


def test_flux_recovery_of_the_truth_is_perfect(sky):
    truth = sky.rename_columns(["id", "ra", "dec", "flux", "flux_i"])
    score = alg.flux_recovery(truth, sky, band="r")
    assert score["median_ratio"] == 1.0 and score["scatter"] == 0.0
    assert 100 < score["n_matched"] < sky.num_rows  # blended stars are left out


def test_flux_recovery_needs_a_band(sky):
    with pytest.raises(ValueError, match="band"):
        alg.flux_recovery(sky.rename_columns(["id", "ra", "dec", "flux", "x"]), sky)
