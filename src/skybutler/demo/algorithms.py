"""The science of the demo pipeline: small but real image algorithms, numpy only.

One function per DMTN-059 step, each a pure function of images and tables:

===========================  ===================================================
step                         function
===========================  ===================================================
processCcd                   `process_ccd`
makeCoaddTempExp             `make_warp`
assembleCoadd                `assemble_coadd`
detectCoaddSources           `detect_sources`
mergeCoaddDetections         `merge_detections`
measureCoaddSources          `measure_sources`
mergeCoaddMeasurements       `merge_measurements`
forcedPhotCoadd              `cutout_boxes` then `forced_photometry` (on calexps)
===========================  ===================================================

`flux_recovery` scores the result against the injected fluxes.

Conventions: images are `skybutler.model.Image`; array index ``[y, x]`` is pixel
``(x, y)`` with pixel centres at integer coordinates, which is astropy's origin-0
convention, while FITS ``CRPIX`` stays 1-based. Boxes are ``(y0, y1, x0, x1)``,
half-open. Tables are `pyarrow.Table`. Calibrated fluxes are in nJy; a calexp is
in ADU and carries ``PHOTCALIB`` (nJy per ADU) in its header. Mask planes use the
bits in `MASK_BITS`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
from astropy.wcs import WCS

from ..model import Image
from . import _pixels as px

__all__ = [
    "APERTURE_RADIUS_ARCSEC",
    "MASK_BITS",
    "assemble_coadd",
    "cutout_boxes",
    "detect_sources",
    "flux_recovery",
    "forced_photometry",
    "make_warp",
    "measure_sources",
    "merge_detections",
    "merge_measurements",
    "pixel_scale_arcsec",
    "process_ccd",
    "wcs_from_header",
    "wcs_to_header",
]

MASK_BITS: dict[str, int] = {
    "BAD": 1 << 0,  # dead or hot pixel, from the flat
    "SAT": 1 << 1,  # at or above the amplifier's saturation level
    "CR": 1 << 2,  # cosmic ray
    "INTRP": 1 << 3,  # value interpolated from neighbours (BAD or CR)
    "DETECTED": 1 << 4,  # inside a detection footprint
    "NO_DATA": 1 << 5,  # no input pixel (warps and coadds)
    "CLIPPED": 1 << 6,  # an input was rejected as an outlier (coadds)
}
"""Mask plane bits, by name. Mask planes are int16."""
_MASK_TYPE = np.int16

APERTURE_RADIUS_ARCSEC = 1.4
"""Radius of every aperture flux. 7 pixels: over 99.9% of a 0.75" Gaussian PSF."""

_DEFAULT_PSF_SIGMA = 1.5  # pixels, used to smooth for detection before the PSF is measured
_WCS_KEYS = ("CTYPE1", "CTYPE2", "CRVAL1", "CRVAL2", "CRPIX1", "CRPIX2",
             "CD1_1", "CD1_2", "CD2_1", "CD2_2")


# --------------------------------------------------------------------------- WCS and tables


def wcs_to_header(wcs: WCS) -> dict[str, Any]:
    """FITS cards of a celestial TAN WCS, with a ``CD`` matrix.

    Parameters
    ----------
    wcs
        A 2-d celestial WCS.

    Returns
    -------
    dict
        ``CTYPE1/2``, ``CUNIT1/2``, ``CRVAL1/2``, ``CRPIX1/2``, ``CD1_1`` ...
        ``CD2_2``, ``RADESYS``, ``EQUINOX``.
    """
    cd = wcs.wcs.cd if wcs.wcs.has_cd() else wcs.pixel_scale_matrix
    return {
        "CTYPE1": wcs.wcs.ctype[0], "CTYPE2": wcs.wcs.ctype[1],
        "CUNIT1": "deg", "CUNIT2": "deg",
        "CRVAL1": float(wcs.wcs.crval[0]), "CRVAL2": float(wcs.wcs.crval[1]),
        "CRPIX1": float(wcs.wcs.crpix[0]), "CRPIX2": float(wcs.wcs.crpix[1]),
        "CD1_1": float(cd[0, 0]), "CD1_2": float(cd[0, 1]),
        "CD2_1": float(cd[1, 0]), "CD2_2": float(cd[1, 1]),
        "RADESYS": "ICRS", "EQUINOX": 2000.0,
    }


def wcs_from_header(header: Mapping[str, Any]) -> WCS:
    """The celestial WCS that `wcs_to_header` wrote (a ``CD``-matrix TAN WCS).

    Parameters
    ----------
    header
        Header cards; other keys are ignored.

    Raises
    ------
    KeyError
        If a WCS card is missing.
    """
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = [header["CTYPE1"], header["CTYPE2"]]
    wcs.wcs.crval = [header["CRVAL1"], header["CRVAL2"]]
    wcs.wcs.crpix = [header["CRPIX1"], header["CRPIX2"]]
    wcs.wcs.cd = np.array([[header["CD1_1"], header["CD1_2"]], [header["CD2_1"], header["CD2_2"]]])
    wcs.wcs.radesys = header.get("RADESYS", "ICRS")
    wcs.wcs.set()
    return wcs


def pixel_scale_arcsec(wcs: WCS) -> float:
    """Mean pixel side in arcsec (square root of the pixel area)."""
    return float(np.sqrt(abs(np.linalg.det(wcs.pixel_scale_matrix))) * 3600.0)


def _column(table: pa.Table | Mapping[str, Any], name: str) -> np.ndarray:
    if isinstance(table, pa.Table):
        return table.column(name).to_numpy(zero_copy_only=False)
    return np.asarray(table[name])


def _has_column(table: pa.Table | Mapping[str, Any], name: str) -> bool:
    return name in (table.column_names if isinstance(table, pa.Table) else table)


def _tangent_offsets_arcsec(ra: np.ndarray, dec: np.ndarray, ra0: np.ndarray, dec0: np.ndarray
                            ) -> tuple[np.ndarray, np.ndarray]:
    """Small-angle offsets (east, north) in arcsec of (ra, dec) from (ra0, dec0); broadcasts."""
    dx = (ra - ra0) * np.cos(np.radians(dec0)) * 3600.0
    dy = (dec - dec0) * 3600.0
    return dx, dy


# --------------------------------------------------------------------------- processCcd


def _isr(raw: Image, bias: Image, flat: Image) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Bias subtraction, flat division, variance and mask; bad columns interpolated over."""
    gain = float(raw.header.get("GAIN", 1.0))
    read_noise = float(raw.header.get("RDNOISE", 0.0))
    saturation = float(raw.header.get("SATURATE", np.inf))
    raw_data = raw.data.astype(np.float64)
    flat_data = flat.data.astype(np.float64)
    mask = np.zeros(raw.shape, dtype=_MASK_TYPE)
    bad = ~np.isfinite(flat_data) | (flat_data < 0.2)
    mask[bad] |= MASK_BITS["BAD"]
    mask[raw_data >= saturation] |= MASK_BITS["SAT"]
    safe_flat = np.where(bad, 1.0, flat_data)
    counts = raw_data - bias.data
    data = counts / safe_flat
    # Poisson noise of the electrons detected plus read noise, back to ADU, through the flat.
    variance = (np.maximum(counts, 0.0) * gain + read_noise**2) / gain**2 / safe_flat**2
    px.interpolate_columns(data, variance, bad)
    mask[bad] |= MASK_BITS["INTRP"]
    return data, variance, mask


def _offset_vote(xd: np.ndarray, yd: np.ndarray, xr: np.ndarray, yr: np.ndarray, search: float
                 ) -> tuple[float, float]:
    """The (dx, dy) shared by most detection-reference pairs: the peak of their offset histogram."""
    dx = xd[:, None] - xr[None, :]
    dy = yd[:, None] - yr[None, :]
    near = (np.abs(dx) < search) & (np.abs(dy) < search)
    if not near.any():
        return 0.0, 0.0
    nbin = int(2 * search)
    hist, xe, ye = np.histogram2d(dx[near], dy[near], bins=nbin, range=[[-search, search]] * 2)
    # Sum 2x2 neighbouring bins so a true offset on a bin edge is not split in two.
    summed = hist[:-1, :-1] + hist[1:, :-1] + hist[:-1, 1:] + hist[1:, 1:]
    i, j = np.unravel_index(np.argmax(summed), summed.shape)
    cx, cy = xe[i + 1], ye[j + 1]
    close = near & (np.abs(dx - cx) < 1.5) & (np.abs(dy - cy) < 1.5)
    return float(np.median(dx[close])), float(np.median(dy[close]))


def _isolated(ra: np.ndarray, dec: np.ndarray, flux: np.ndarray, radius_arcsec: float,
              fraction: float) -> np.ndarray:
    """True for objects with no neighbour within the radius brighter than ``fraction`` of them."""
    ex, ny_ = _tangent_offsets_arcsec(ra[:, None], dec[:, None], ra[None, :], dec[None, :])
    close = (ex**2 + ny_**2 < radius_arcsec**2) & ~np.eye(len(ra), dtype=bool)
    contaminating = close & (flux[None, :] > fraction * flux[:, None])
    return ~contaminating.any(axis=1)


def process_ccd(raw: Image, bias: Image, flat: Image, ref_catalog: pa.Table | Mapping[str, Any], *,
                band: str | None = None, threshold_sigma: float = 5.0
                ) -> tuple[Image, pa.Table, dict[str, Any]]:
    """processCcd: calibrate one raw frame into a calexp and a source catalogue.

    Steps: bias subtraction and flat division (bad columns interpolated), variance
    and mask planes, a first background, cosmic-ray repair, detection, a second
    background with sources masked, detection again, PSF width from adaptive moments
    of bright isolated stars, centroids and aperture fluxes, an astrometric fit (a
    shift of ``CRPIX``, found by voting on detection-reference offsets) and a
    photometric zero point (median of reference flux over instrumental flux).

    Parameters
    ----------
    raw, bias, flat
        The raw frame and its master bias and normalised flat.
    ref_catalog
        Reference stars: ``ra``, ``dec`` in degrees and ``flux_<band>`` (or ``flux``)
        in nJy.
    band
        Band whose reference fluxes to use; default the header's ``BAND``.
    threshold_sigma
        Detection threshold in sigma of the PSF-smoothed image.

    Returns
    -------
    calexp : Image
        Background-subtracted image in ADU with ``variance`` and ``mask`` planes; the
        header is the raw's with the fitted WCS and ``PHOTCALIB`` (nJy/ADU),
        ``FLUXMAG0``, ``MAGZERO``, ``PSF_FWHM`` (arcsec), ``PSFSIGMA`` (pixels),
        ``BGMEAN`` and ``BAND``.
    src : pyarrow.Table
        One row per detection: ``id``, ``x``, ``y``, ``ra``, ``dec``, ``inst_flux``,
        ``inst_flux_err`` (ADU), ``flux``, ``flux_err`` (nJy), ``snr``,
        ``footprint_area``, ``ref_id`` (matched reference row, -1 if none).
    calib : dict
        ``photo_calib``, ``photo_calib_err``, ``zero_point``, ``n_photometric``,
        ``wcs_shift`` ([dx, dy] pixels), ``n_astrometric``, ``astrometric_rms_arcsec``,
        ``psf_fwhm_arcsec``, ``psf_sigma_pixels``, ``background_level``,
        ``n_sources``, ``n_cosmic_ray_pixels``; plain Python numbers.

    Raises
    ------
    ValueError
        If no reference flux column fits the band, or too few stars match.
    """
    header = dict(raw.header)
    band = band or header.get("BAND")
    flux_name = f"flux_{band}" if band and _has_column(ref_catalog, f"flux_{band}") else "flux"
    if not _has_column(ref_catalog, flux_name):
        raise ValueError(f"reference catalogue has no flux column for band {band!r}")
    data, variance, mask = _isr(raw, bias, flat)
    wcs = wcs_from_header(header)
    scale = pixel_scale_arcsec(wcs)
    radius = APERTURE_RADIUS_ARCSEC / scale

    background = px.background(data, (mask & MASK_BITS["BAD"]) > 0)
    cosmic = px.repair_cosmic_rays(data, variance, background, (mask & MASK_BITS["INTRP"]) > 0)
    mask[cosmic] |= MASK_BITS["CR"] | MASK_BITS["INTRP"]
    n_cosmic = int(cosmic.sum())
    peaks = px.detect(data - background, variance, _DEFAULT_PSF_SIGMA, threshold_sigma)
    sources = px.grow(peaks["labels"] > 0, 4)
    background = px.background(data, sources | ((mask & MASK_BITS["BAD"]) > 0))
    data -= background
    peaks = px.detect(data, variance, _DEFAULT_PSF_SIGMA, threshold_sigma)
    mask[peaks["labels"] > 0] |= MASK_BITS["DETECTED"]

    psf_sigma = _measure_psf(data, peaks)
    n = len(peaks["x"])
    x, y = np.empty(n), np.empty(n)
    inst_flux, inst_var = np.empty(n), np.empty(n)
    for k in range(n):
        x[k], y[k], _ = px.centroid(data, float(peaks["x"][k]), float(peaks["y"][k]), psf_sigma)
        inst_flux[k], inst_var[k], _ = px.aperture_sum(data, variance, (0, 0), x[k], y[k], radius)
    inst_err = np.sqrt(inst_var)
    snr = inst_flux / inst_err

    # Astrometry: reference stars through the header WCS, a shift voted on, then matched.
    ref_ra, ref_dec = _column(ref_catalog, "ra"), _column(ref_catalog, "dec")
    ref_flux = _column(ref_catalog, flux_name)
    xr, yr = wcs.wcs_world2pix(ref_ra, ref_dec, 0)
    ny, nx = data.shape
    on_chip = (xr > -10) & (xr < nx + 10) & (yr > -10) & (yr < ny + 10)
    good = snr > 10
    shift = _offset_vote(x[good], y[good], xr[on_chip], yr[on_chip], search=20.0 / (scale / 0.2))
    ref_id = np.full(n, -1, dtype=np.int64)
    d2 = (x[:, None] - shift[0] - xr[None, :]) ** 2 + (y[:, None] - shift[1] - yr[None, :]) ** 2
    nearest = np.argmin(d2, axis=1) if d2.size else np.zeros(n, dtype=int)
    matched = d2[np.arange(n), nearest] < 1.5**2 if d2.size else np.zeros(n, dtype=bool)
    ref_id[matched] = nearest[matched]
    if matched.sum() < 3:
        raise ValueError(f"only {int(matched.sum())} sources match the reference catalogue")
    dx = x[matched] - xr[nearest[matched]]
    dy = y[matched] - yr[nearest[matched]]
    shift = (float(np.median(dx)), float(np.median(dy)))
    rms = float(np.sqrt(np.mean((dx - shift[0]) ** 2 + (dy - shift[1]) ** 2)) * scale)
    wcs.wcs.crpix = [wcs.wcs.crpix[0] + shift[0], wcs.wcs.crpix[1] + shift[1]]
    wcs.wcs.set()
    ra, dec = wcs.wcs_pix2world(x, y, 0) if n else (np.empty(0), np.empty(0))

    # Photometry: bright matches with isolated reference stars (no blended apertures).
    isolated = _isolated(ref_ra, ref_dec, ref_flux, 3.0 * APERTURE_RADIUS_ARCSEC, 0.02)
    phot = matched & (snr > 20) & (inst_flux > 0)
    phot[phot] &= isolated[ref_id[phot]]
    if phot.sum() < 3:
        raise ValueError(f"only {int(phot.sum())} stars to fit the photometric zero point")
    ratio = ref_flux[ref_id[phot]] / inst_flux[phot]
    photo_calib = float(np.median(ratio))
    photo_calib_err = float(1.2533 * 1.4826 * np.median(np.abs(ratio - photo_calib)) / np.sqrt(phot.sum()))
    zero_point = 31.4 + 2.5 * np.log10(photo_calib)  # AB magnitude of 1 ADU

    header.update(wcs_to_header(wcs))
    psf_fwhm = float(2.3548 * psf_sigma * scale)
    header.update({
        "NAXIS1": nx, "NAXIS2": ny, "BUNIT": "adu", "BAND": band,
        "PHOTCALIB": photo_calib, "PHOTCERR": photo_calib_err,
        "FLUXMAG0": 3631.0e9 / photo_calib,  # ADU of a magnitude-0 (3631 Jy) source
        "MAGZERO": float(zero_point), "PSF_FWHM": psf_fwhm, "PSFSIGMA": float(psf_sigma),
        "BGMEAN": float(background.mean()),
    })
    header.update({f"MP_{name}": bit for name, bit in MASK_BITS.items()})
    calexp = Image(data=data.astype(np.float32), header=header,
                   planes={"variance": variance.astype(np.float32), "mask": mask})
    src = pa.table({
        "id": pa.array(np.arange(n, dtype=np.int64)),
        "x": pa.array(x), "y": pa.array(y), "ra": pa.array(ra), "dec": pa.array(dec),
        "inst_flux": pa.array(inst_flux), "inst_flux_err": pa.array(inst_err),
        "flux": pa.array(inst_flux * photo_calib), "flux_err": pa.array(inst_err * photo_calib),
        "snr": pa.array(snr), "footprint_area": pa.array(peaks["footprint_area"].astype(np.int64)),
        "ref_id": pa.array(ref_id),
    })
    calib = {
        "photo_calib": photo_calib, "photo_calib_err": photo_calib_err, "zero_point": float(zero_point),
        "n_photometric": int(phot.sum()), "wcs_shift": [shift[0], shift[1]],
        "n_astrometric": int(matched.sum()), "astrometric_rms_arcsec": rms,
        "psf_fwhm_arcsec": psf_fwhm, "psf_sigma_pixels": float(psf_sigma),
        "background_level": float(background.mean()), "n_sources": n,
        "n_cosmic_ray_pixels": n_cosmic,
    }
    return calexp, src, calib


def _measure_psf(data: np.ndarray, peaks: Mapping[str, np.ndarray]) -> float:
    """Median adaptive-moment sigma (pixels) of the brightest, isolated peaks."""
    x, y, snr = peaks["x"].astype(float), peaks["y"].astype(float), peaks["snr"]
    sigmas = []
    for k in np.nonzero(snr > 50)[0][:40]:
        d2 = (x - x[k]) ** 2 + (y - y[k]) ** 2
        d2[k] = np.inf
        if d2.min() < 20.0**2:
            continue
        sigmas.append(px.adaptive_sigma(data, x[k], y[k], _DEFAULT_PSF_SIGMA))
    sigmas = [s for s in sigmas if np.isfinite(s)]
    return float(np.median(sigmas)) if sigmas else _DEFAULT_PSF_SIGMA


# --------------------------------------------------------------------------- makeCoaddTempExp


def make_warp(calexps: Image | Sequence[Image], patch_wcs: WCS, patch_shape: tuple[int, int]) -> Image:
    """makeCoaddTempExp: resample one visit's calexps onto a patch's pixel grid, in nJy.

    Every patch pixel centre is taken through the patch WCS to the sky and through
    each calexp's WCS to that calexp's pixels, and the calexp is interpolated
    bilinearly there. Values are multiplied by ``PHOTCALIB`` and by the ratio of
    pixel areas, so a star's summed flux is kept. Patch pixels no calexp covers are
    NaN and flagged ``NO_DATA``.

    The variance plane is the same bilinear combination of the input variances
    (``sum w var``, not ``sum w^2 var``): interpolation only moves flux between
    neighbouring pixels, so this keeps the variance of sums over apertures right,
    which is what the measurements use.

    Parameters
    ----------
    calexps
        The calexps of one visit (any detectors); they are not expected to overlap.
    patch_wcs
        WCS of the patch's pixel grid (array index ``[0, 0]`` at the patch corner).
    patch_shape
        ``(ny, nx)`` of the patch.

    Returns
    -------
    Image
        The warp, with ``variance`` and ``mask`` planes and a header holding the patch
        WCS, ``BUNIT='nJy'``, ``BAND``, ``FILTER01``, ``EXP-ID``, ``EXPTIME``, ``MJD``,
        ``PSF_FWHM`` (mean over the calexps that contributed) and ``NCALEXP``.
    """
    if isinstance(calexps, Image):
        calexps = [calexps]
    ny, nx = patch_shape
    yy, xx = np.mgrid[0:ny, 0:nx]
    ra, dec = patch_wcs.wcs_pix2world(xx.ravel(), yy.ravel(), 0)
    patch_area = abs(np.linalg.det(patch_wcs.pixel_scale_matrix))
    data = np.full(ny * nx, np.nan)
    variance = np.full(ny * nx, np.nan)
    mask = np.full(ny * nx, MASK_BITS["NO_DATA"], dtype=_MASK_TYPE)
    psf_fwhm = []
    for calexp in calexps:
        wcs = wcs_from_header(calexp.header)
        scale = float(calexp.header["PHOTCALIB"]) * patch_area / abs(np.linalg.det(wcs.pixel_scale_matrix))
        cx, cy = wcs.wcs_world2pix(ra, dec, 0)
        cny, cnx = calexp.shape
        x0, y0 = np.floor(cx).astype(int), np.floor(cy).astype(int)
        inside = (x0 >= 0) & (x0 < cnx - 1) & (y0 >= 0) & (y0 < cny - 1) & np.isnan(data)
        if not inside.any():
            continue
        x0, y0 = x0[inside], y0[inside]
        fx, fy = cx[inside] - x0, cy[inside] - y0
        corners = ((y0, x0, (1 - fx) * (1 - fy)), (y0, x0 + 1, fx * (1 - fy)),
                   (y0 + 1, x0, (1 - fx) * fy), (y0 + 1, x0 + 1, fx * fy))
        calexp_var = calexp.planes.get("variance")
        calexp_mask = calexp.planes.get("mask")
        value = sum(w * calexp.data[j, i] for j, i, w in corners)
        data[inside] = value * scale
        if calexp_var is not None:
            variance[inside] = sum(w * calexp_var[j, i] for j, i, w in corners) * scale**2
        bits = np.zeros(inside.sum(), dtype=_MASK_TYPE)
        if calexp_mask is not None:
            for j, i, w in corners:
                bits |= np.where(w > 0, calexp_mask[j, i], 0)
        mask[inside] = bits & ~MASK_BITS["DETECTED"]
        psf_fwhm.append(float(calexp.header.get("PSF_FWHM", np.nan)))
    first = calexps[0].header if calexps else {}
    header: dict[str, Any] = {key: first[key] for key in ("INSTRUME", "EXP-ID", "FILTER01", "BAND", "EXPTIME", "MJD",
                                                          "DATE-OBS", "OBJECT") if key in first}
    header.update(wcs_to_header(patch_wcs))
    header.update({"NAXIS1": nx, "NAXIS2": ny, "BUNIT": "nJy", "NCALEXP": len(psf_fwhm),
                   "PSF_FWHM": float(np.mean(psf_fwhm)) if psf_fwhm else float("nan")})
    return Image(data=data.reshape(ny, nx).astype(np.float32), header=header,
                 planes={"variance": variance.reshape(ny, nx).astype(np.float32),
                         "mask": mask.reshape(ny, nx)})


# --------------------------------------------------------------------------- assembleCoadd


def assemble_coadd(warps: Sequence[Image], *, clip_sigma: float = 3.0, psf_ratio_limit: float = 1.5,
                   noise_ratio_limit: float = 2.0, signal_tolerance: float = 0.5
                   ) -> tuple[Image, list[int]]:
    """assembleCoadd: combine the warps of one patch and band, rejecting bad warps and outliers.

    1. Whole warps are dropped when their PSF (``PSF_FWHM``) is wider than
       ``psf_ratio_limit`` times the median of the warps, when their noise (median
       sqrt variance) is above ``noise_ratio_limit`` times the median, or when they
       have no pixel on the patch.
    2. At every pixel with at least 3 inputs, an input is an outlier if it is more
       than ``clip_sigma * sqrt(var + (signal_tolerance * median)^2)`` from the
       median of the inputs. The signal term keeps star cores, which differ between
       warps because the PSFs differ, from being clipped; cosmic rays and satellite
       trails on empty sky are clipped. With 2 inputs nothing can be told apart and
       nothing is clipped.
    3. The rest are averaged with one weight per warp, the inverse of its median
       variance. (Per-pixel inverse-variance weights would favour warps where a
       star happens to be faint, since a star's variance includes its own flux.)

    Parameters
    ----------
    warps
        Warps of the same patch and band, same shape and WCS.
    clip_sigma, psf_ratio_limit, noise_ratio_limit, signal_tolerance
        Rejection parameters, as above.

    Returns
    -------
    coadd : Image
        Mean image in nJy with ``variance`` and ``mask`` planes (``NO_DATA``,
        ``CLIPPED``) and a header with the patch WCS, ``BAND``, ``NINPUTS`` and
        ``PSF_FWHM`` (weighted mean of the inputs used).
    used : list of int
        Indices into ``warps`` of the warps that contributed.

    Raises
    ------
    ValueError
        If ``warps`` is empty.
    """
    if not warps:
        raise ValueError("no warps to coadd")
    n = len(warps)
    psf = np.array([float(w.header.get("PSF_FWHM", np.nan)) for w in warps])
    noise = np.full(n, np.nan)
    covered = np.zeros(n, dtype=bool)
    for i, warp in enumerate(warps):
        finite = np.isfinite(warp.data)
        covered[i] = finite.any()
        if covered[i] and "variance" in warp.planes:
            noise[i] = np.sqrt(np.nanmedian(warp.planes["variance"][finite]))
    with px.quiet_nan_warnings():
        median_psf = np.nanmedian(psf[covered]) if covered.any() else np.nan
        median_noise = np.nanmedian(noise[covered]) if covered.any() else np.nan
    used = [i for i in range(n) if covered[i]
            and not psf[i] > psf_ratio_limit * median_psf
            and not noise[i] > noise_ratio_limit * median_noise]
    ny, nx = warps[0].shape
    template = warps[used[0] if used else 0].header
    header: dict[str, Any] = {key: template[key] for key in ("INSTRUME", "BAND", "FILTER01")
                              if key in template}
    header.update({key: template[key] for key in _WCS_KEYS if key in template})
    header.update({"NAXIS1": nx, "NAXIS2": ny, "BUNIT": "nJy", "NINPUTS": len(used)})
    header.update({f"MP_{name}": bit for name, bit in MASK_BITS.items()})
    if not used:
        nan = np.full((ny, nx), np.nan, dtype=np.float32)
        header["PSF_FWHM"] = float("nan")
        return Image(data=nan, header=header, planes={
            "variance": nan.copy(), "mask": np.full((ny, nx), MASK_BITS["NO_DATA"], dtype=_MASK_TYPE)}), []

    data = np.stack([warps[i].data.astype(np.float64) for i in used])
    var = np.stack([warps[i].planes.get("variance", np.full((ny, nx), noise[i] ** 2)).astype(np.float64)
                    for i in used])
    finite = np.isfinite(data) & np.isfinite(var)
    outlier = np.zeros_like(finite)
    if len(used) >= 3:
        with px.quiet_nan_warnings():
            median = np.nanmedian(np.where(finite, data, np.nan), axis=0)
        tolerance = clip_sigma * np.sqrt(var + (signal_tolerance * median) ** 2)
        outlier = finite & (np.abs(data - median) > tolerance) & (finite.sum(axis=0) >= 3)
    keep = finite & ~outlier
    weight = np.where(keep, (1.0 / noise[used] ** 2)[:, None, None], 0.0)
    total = weight.sum(axis=0)
    with np.errstate(all="ignore"):
        coadd = np.where(total > 0, (weight * np.where(keep, data, 0.0)).sum(axis=0) / total, np.nan)
        coadd_var = np.where(total > 0, (weight**2 * np.where(keep, var, 0.0)).sum(axis=0) / total**2,
                             np.nan)
    mask = np.zeros((ny, nx), dtype=_MASK_TYPE)
    mask[total == 0] |= MASK_BITS["NO_DATA"]
    mask[outlier.any(axis=0)] |= MASK_BITS["CLIPPED"]
    w = 1.0 / noise[used] ** 2
    header["PSF_FWHM"] = float(np.sum(w * psf[used]) / np.sum(w))
    header["NCLIPPED"] = int(outlier.sum())
    return Image(data=coadd.astype(np.float32), header=header,
                 planes={"variance": coadd_var.astype(np.float32), "mask": mask}), used


# --------------------------------------------------------------------------- coadd measurement


def _psf_sigma_pixels(header: Mapping[str, Any], wcs: WCS) -> float:
    fwhm = float(header.get("PSF_FWHM", np.nan))
    if not np.isfinite(fwhm) or fwhm <= 0:
        return _DEFAULT_PSF_SIGMA
    return fwhm / 2.3548 / pixel_scale_arcsec(wcs)


def detect_sources(coadd: Image, threshold_sigma: float = 5.0) -> pa.Table:
    """detectCoaddSources: peaks in a coadd above ``threshold_sigma``.

    Parameters
    ----------
    coadd
        A coadd from `assemble_coadd` (NaN where there is no data).
    threshold_sigma
        Threshold on the S/N of the PSF-smoothed coadd.

    Returns
    -------
    pyarrow.Table
        ``id``, ``x``, ``y`` (centroid, patch pixels), ``ra``, ``dec``, ``peak_value``
        (coadd value at the peak pixel), ``significance`` (S/N of the smoothed coadd
        at the peak), ``footprint``, ``footprint_area``; brightest first.
    """
    wcs = wcs_from_header(coadd.header)
    sigma = _psf_sigma_pixels(coadd.header, wcs)
    variance = coadd.planes.get("variance")
    if variance is None:
        variance = np.full(coadd.shape, np.nanvar(coadd.data))
    data = coadd.data.astype(np.float64)
    peaks = px.detect(data, variance.astype(np.float64), sigma, threshold_sigma)
    n = len(peaks["x"])
    x, y = np.empty(n), np.empty(n)
    for k in range(n):
        x[k], y[k], _ = px.centroid(data, float(peaks["x"][k]), float(peaks["y"][k]), sigma)
    ra, dec = wcs.wcs_pix2world(x, y, 0) if n else (np.empty(0), np.empty(0))
    return pa.table({
        "id": pa.array(np.arange(n, dtype=np.int64)),
        "x": pa.array(x), "y": pa.array(y), "ra": pa.array(ra), "dec": pa.array(dec),
        "peak_value": pa.array(data[peaks["y"], peaks["x"]]),
        "significance": pa.array(peaks["snr"].astype(float)),
        "footprint": pa.array(peaks["footprint"].astype(np.int64)),
        "footprint_area": pa.array(peaks["footprint_area"].astype(np.int64)),
    })


def merge_detections(tables_by_band: Mapping[str, pa.Table], match_radius_arcsec: float = 1.0, *,
                     id_offset: int = 0) -> pa.Table:
    """mergeCoaddDetections: the union of the peaks of all bands, one row per object.

    Peaks are taken from the most significant down; a peak within
    ``match_radius_arcsec`` of an object already kept is the same object seen in
    another band (or a duplicate) and only marks that band as detected.

    Parameters
    ----------
    tables_by_band
        `detect_sources` tables of one patch, by band.
    match_radius_arcsec
        Peaks closer than this are one object.
    id_offset
        Added to the object ids ``0..n-1`` (e.g. ``patch * 10**6``) to make them
        unique across patches.

    Returns
    -------
    pyarrow.Table
        ``id``, ``ra``, ``dec``, ``x``, ``y`` (of the most significant peak),
        ``significance`` (the largest), ``n_bands`` and ``detected_<band>`` per band.
    """
    bands = sorted(tables_by_band)
    columns: dict[str, list[np.ndarray]] = {name: [] for name in ("ra", "dec", "x", "y", "significance", "band")}
    for b, band in enumerate(bands):
        table = tables_by_band[band]
        for name in ("ra", "dec", "x", "y", "significance"):
            columns[name].append(_column(table, name).astype(float))
        columns["band"].append(np.full(table.num_rows, b))
    cat = {name: np.concatenate(parts) if parts else np.empty(0) for name, parts in columns.items()}
    order = np.argsort(-cat["significance"], kind="stable")
    kept: list[int] = []
    detected: list[set[int]] = []
    for k in order:
        if kept:
            ex, ny_ = _tangent_offsets_arcsec(cat["ra"][kept], cat["dec"][kept], cat["ra"][k], cat["dec"][k])
            d2 = ex**2 + ny_**2
            j = int(np.argmin(d2))
            if d2[j] < match_radius_arcsec**2:
                detected[j].add(int(cat["band"][k]))
                continue
        kept.append(int(k))
        detected.append({int(cat["band"][k])})
    idx = np.array(kept, dtype=int)
    out = {
        "id": pa.array(id_offset + np.arange(len(kept), dtype=np.int64)),
        **{name: pa.array(cat[name][idx]) for name in ("ra", "dec", "x", "y", "significance")},
        "n_bands": pa.array(np.array([len(d) for d in detected], dtype=np.int64)),
    }
    for b, band in enumerate(bands):
        out[f"detected_{band}"] = pa.array([b in d for d in detected], type=pa.bool_())
    return pa.table(out)


def measure_sources(coadd: Image, merged_detections: pa.Table | Mapping[str, Any]) -> pa.Table:
    """measureCoaddSources: centroid and aperture flux of every merged object on one band's coadd.

    Parameters
    ----------
    coadd
        A coadd in nJy.
    merged_detections
        `merge_detections` output: ``id``, ``ra``, ``dec``.

    Returns
    -------
    pyarrow.Table
        ``id``, ``band``, ``ra``, ``dec``, ``x``, ``y`` (this band's centroid, or the
        detection position when ``centroid_flag`` is set), ``flux``, ``flux_err``
        (nJy, aperture of `APERTURE_RADIUS_ARCSEC`), ``snr``, ``centroid_flag``,
        ``aperture_flag`` (aperture incomplete: edge or missing pixels).
    """
    wcs = wcs_from_header(coadd.header)
    sigma = _psf_sigma_pixels(coadd.header, wcs)
    radius = APERTURE_RADIUS_ARCSEC / pixel_scale_arcsec(wcs)
    ids = _column(merged_detections, "id")
    ra0, dec0 = _column(merged_detections, "ra"), _column(merged_detections, "dec")
    n = len(ids)
    x, y = wcs.wcs_world2pix(ra0, dec0, 0) if n else (np.empty(0), np.empty(0))
    x, y = np.array(x, dtype=float), np.array(y, dtype=float)
    data = coadd.data.astype(np.float64)
    variance = coadd.planes.get("variance")
    flux, var = np.empty(n), np.empty(n)
    centroid_flag, aperture_flag = np.zeros(n, dtype=bool), np.zeros(n, dtype=bool)
    for k in range(n):
        x[k], y[k], ok = px.centroid(data, x[k], y[k], sigma)
        centroid_flag[k] = not ok
        flux[k], var[k], complete = px.aperture_sum(data, variance, (0, 0), x[k], y[k], radius)
        aperture_flag[k] = not complete
    ra, dec = wcs.wcs_pix2world(x, y, 0) if n else (np.empty(0), np.empty(0))
    err = np.sqrt(var)
    with np.errstate(all="ignore"):
        snr = flux / err
    return pa.table({
        "id": pa.array(ids.astype(np.int64)), "band": pa.array([coadd.header.get("BAND", "")] * n),
        "ra": pa.array(ra), "dec": pa.array(dec), "x": pa.array(x), "y": pa.array(y),
        "flux": pa.array(flux), "flux_err": pa.array(err), "snr": pa.array(snr),
        "centroid_flag": pa.array(centroid_flag), "aperture_flag": pa.array(aperture_flag),
    })


def merge_measurements(tables_by_band: Mapping[str, pa.Table]) -> pa.Table:
    """mergeCoaddMeasurements: one row per object, with a reference band and position.

    The reference band of an object is the band where it has the highest S/N (and a
    good centroid, if any band has one); its centroid there is the reference
    position forced photometry uses.

    Parameters
    ----------
    tables_by_band
        `measure_sources` tables of one patch, by band, with the same ``id``\\ s.

    Returns
    -------
    pyarrow.Table
        ``id``, ``ra``, ``dec``, ``ref_band``, and ``flux_<band>``,
        ``flux_err_<band>``, ``snr_<band>`` for every band (NaN where missing).
    """
    bands = sorted(tables_by_band)
    ids: np.ndarray = (np.unique(np.concatenate([_column(tables_by_band[b], "id") for b in bands]))
                       if bands else np.empty(0, dtype=np.int64))
    n = len(ids)
    out: dict[str, Any] = {"id": pa.array(np.asarray(ids, dtype=np.int64))}
    snr = np.full((len(bands), n), -np.inf)
    ra, dec = np.full((len(bands), n), np.nan), np.full((len(bands), n), np.nan)
    good = np.zeros((len(bands), n), dtype=bool)
    per_band = {}
    for b, band in enumerate(bands):
        table = tables_by_band[band]
        row = np.searchsorted(ids, _column(table, "id"))
        values = {name: np.full(n, np.nan) for name in ("flux", "flux_err", "snr")}
        for name in values:
            values[name][row] = _column(table, name)
        per_band[band] = values
        s = values["snr"]
        snr[b] = np.where(np.isfinite(s), s, -np.inf)
        ra[b, row], dec[b, row] = _column(table, "ra"), _column(table, "dec")
        if _has_column(table, "centroid_flag"):
            good[b, row] = ~_column(table, "centroid_flag").astype(bool)
        else:
            good[b, row] = True
    any_good = np.any(good, axis=0, keepdims=True)
    score = np.where(any_good & ~good, -np.inf, snr)
    best = np.argmax(score, axis=0) if bands else np.empty(0, dtype=int)
    cols = np.arange(n)
    out["ra"] = pa.array(ra[best, cols] if bands else np.empty(0))
    out["dec"] = pa.array(dec[best, cols] if bands else np.empty(0))
    out["ref_band"] = pa.array([bands[b] for b in best])
    for band in bands:
        for name in ("flux", "flux_err", "snr"):
            out[f"{name}_{band}"] = pa.array(per_band[band][name])
    return pa.table(out)


# --------------------------------------------------------------------------- forced photometry


def cutout_boxes(calexp_header: Mapping[str, Any], ras: Sequence[float] | np.ndarray,
                 decs: Sequence[float] | np.ndarray, half_size: int, *,
                 shape: tuple[int, int] | None = None) -> list[tuple[int, int, int, int]]:
    """Boxes of side ``2 * half_size + 1`` centred on each position, clipped to the image.

    Parameters
    ----------
    calexp_header
        Header with the WCS.
    ras, decs
        Positions in degrees.
    half_size
        Half the box side in pixels; at least the aperture radius plus 1 (8 at
        0.2"/pixel) so that forced photometry sees the whole aperture.
    shape
        ``(ny, nx)`` of the image to clip to; default ``NAXIS2``/``NAXIS1`` from the
        header (FITS readers drop those cards), else no clipping.

    Returns
    -------
    list of (y0, y1, x0, x1)
        Half-open boxes, one per position, in the input order. A position off the
        image gives an empty box (``y0 == y1`` or ``x0 == x1``); drop those before
        reading cutouts.
    """
    wcs = wcs_from_header(calexp_header)
    ras, decs = np.atleast_1d(np.asarray(ras, dtype=float)), np.atleast_1d(np.asarray(decs, dtype=float))
    if ras.size == 0:
        return []
    x, y = wcs.wcs_world2pix(ras, decs, 0)
    if shape is None:
        shape = (int(calexp_header.get("NAXIS2", 2**31 - 1)), int(calexp_header.get("NAXIS1", 2**31 - 1)))
    ny, nx = shape
    boxes = []
    for xi, yi in zip(np.round(x).astype(int), np.round(y).astype(int), strict=True):
        y0, y1 = min(max(yi - half_size, 0), ny), max(min(yi + half_size + 1, ny), 0)
        x0, x1 = min(max(xi - half_size, 0), nx), max(min(xi + half_size + 1, nx), 0)
        boxes.append((y0, max(y1, y0), x0, max(x1, x0)))
    return boxes


def forced_photometry(cutouts: Sequence[Image], positions: pa.Table | Mapping[str, Any],
                      calib: Mapping[str, Any] | float | None = None, *,
                      wcs_header: Mapping[str, Any] | None = None,
                      variances: Sequence[Image | np.ndarray] | None = None) -> pa.Table:
    """forcedPhotCoadd (on calexps): aperture flux at fixed positions, one cutout per position.

    Each position is taken through the full-image WCS to parent pixels, and the
    aperture is summed on the cutout using its ``origin``; the centroid is not
    refit. A cutout holding the whole aperture gives exactly the flux the full image
    would give.

    Parameters
    ----------
    cutouts
        One `Image` per position, ``origin`` set to its corner in the calexp. A
        ``variance`` plane, if any, gives the errors.
    positions
        ``ra``, ``dec`` in degrees, optionally ``id``; one row per cutout.
    calib
        nJy per ADU, or `process_ccd`'s calib dict; default ``PHOTCALIB`` from the
        header.
    wcs_header
        Header with the full image's WCS; default each cutout's own header (which
        then must be the calexp's, not re-centred).
    variances
        Variance cutouts matching ``cutouts`` box for box, for cutouts read without
        planes (e.g. ``read_cutouts(..., plane="variance")``); errors are NaN
        without either.

    Returns
    -------
    pyarrow.Table
        ``id``, ``ra``, ``dec``, ``x``, ``y`` (calexp pixels), ``inst_flux``,
        ``inst_flux_err`` (ADU), ``flux``, ``flux_err`` (nJy), ``snr``,
        ``aperture_flag`` (aperture not all on the cutout).

    Raises
    ------
    ValueError
        If the numbers of cutouts and positions differ.
    """
    ra, dec = _column(positions, "ra").astype(float), _column(positions, "dec").astype(float)
    n = len(ra)
    if len(cutouts) != n:
        raise ValueError(f"{len(cutouts)} cutouts for {n} positions")
    ids = _column(positions, "id").astype(np.int64) if _has_column(positions, "id") else np.arange(n)
    x, y = np.full(n, np.nan), np.full(n, np.nan)
    inst, inst_var = np.full(n, np.nan), np.full(n, np.nan)
    flag = np.ones(n, dtype=bool)
    factor = np.full(n, np.nan)
    wcs_cache: dict[tuple[Any, ...], tuple[WCS, float]] = {}
    for k, cutout in enumerate(cutouts):
        header = wcs_header if wcs_header is not None else cutout.header
        key = tuple(header[name] for name in _WCS_KEYS)
        if key not in wcs_cache:
            wcs = wcs_from_header(header)
            wcs_cache[key] = (wcs, APERTURE_RADIUS_ARCSEC / pixel_scale_arcsec(wcs))
        wcs, radius = wcs_cache[key]
        xk, yk = wcs.wcs_world2pix([ra[k]], [dec[k]], 0)
        x[k], y[k] = float(xk[0]), float(yk[0])
        if isinstance(calib, Mapping):
            factor[k] = float(calib["photo_calib"])
        elif calib is not None:
            factor[k] = float(calib)
        else:
            factor[k] = float(cutout.header.get("PHOTCALIB", header.get("PHOTCALIB", np.nan)))
        if cutout.data.size == 0:
            continue
        variance: np.ndarray | None = cutout.planes.get("variance")
        if variances is not None:
            given = variances[k]
            variance = np.asarray(given.data if isinstance(given, Image) else given)
        inst[k], inst_var[k], complete = px.aperture_sum(
            cutout.data, variance, (int(cutout.origin[0]), int(cutout.origin[1])), x[k], y[k], radius)
        flag[k] = not complete
    err = np.sqrt(inst_var)
    with np.errstate(all="ignore"):
        snr = inst / err
    return pa.table({
        "id": pa.array(ids), "ra": pa.array(ra), "dec": pa.array(dec),
        "x": pa.array(x), "y": pa.array(y),
        "inst_flux": pa.array(inst), "inst_flux_err": pa.array(err),
        "flux": pa.array(inst * factor), "flux_err": pa.array(err * factor),
        "snr": pa.array(snr), "aperture_flag": pa.array(flag),
    })


# --------------------------------------------------------------------------- scoring


def flux_recovery(measured: pa.Table | Mapping[str, Any], sky: pa.Table | Mapping[str, Any], *,
                  band: str | None = None, flux_column: str | None = None,
                  match_radius_arcsec: float = 0.5, min_snr: float = 20.0,
                  isolation_arcsec: float = 2.5, neighbour_fraction: float = 0.05) -> dict[str, float]:
    """Compare measured fluxes with the injected ones.

    Each measurement is matched to the nearest injected star within
    ``match_radius_arcsec``. Only measurements with S/N of at least ``min_snr`` are
    scored, and only stars with no injected neighbour within ``isolation_arcsec``
    brighter than ``neighbour_fraction`` of them: aperture photometry without
    deblending cannot be expected to recover blends.

    Parameters
    ----------
    measured
        ``ra``, ``dec`` and a flux column; ``snr`` (or ``snr_<band>``, or
        ``flux_err``) for the S/N cut.
    sky
        The injected stars (`skybutler.demo.synthetic.make_sky`).
    band
        Band to compare; default the table's single ``band`` value.
    flux_column
        Default ``flux`` if present, else ``flux_<band>``.

    Returns
    -------
    dict
        ``median_ratio`` (measured / injected), ``scatter`` (1.4826 x median absolute
        deviation of the ratio) and ``n_matched`` (stars scored).

    Raises
    ------
    ValueError
        If the band cannot be told.
    """
    if band is None:
        bands = set(_column(measured, "band").tolist()) if _has_column(measured, "band") else set()
        if len(bands) != 1:
            raise ValueError("pass band= : the table does not name a single band")
        band = bands.pop()
    if flux_column is None:
        flux_column = "flux" if _has_column(measured, "flux") else f"flux_{band}"
    flux = _column(measured, flux_column).astype(float)
    suffix = flux_column[len("flux"):]
    if _has_column(measured, f"snr{suffix}"):
        snr = _column(measured, f"snr{suffix}").astype(float)
    elif _has_column(measured, f"flux_err{suffix}"):
        snr = flux / _column(measured, f"flux_err{suffix}").astype(float)
    else:
        snr = np.full(len(flux), np.inf)
    ra, dec = _column(measured, "ra").astype(float), _column(measured, "dec").astype(float)
    true_ra, true_dec = _column(sky, "ra").astype(float), _column(sky, "dec").astype(float)
    true_flux = _column(sky, f"flux_{band}").astype(float)
    isolated = _isolated(true_ra, true_dec, true_flux, isolation_arcsec, neighbour_fraction)
    ex, ny_ = _tangent_offsets_arcsec(ra[:, None], dec[:, None], true_ra[None, :], true_dec[None, :])
    d2 = ex**2 + ny_**2
    nearest = np.argmin(d2, axis=1) if d2.size else np.zeros(len(ra), dtype=int)
    ok = (d2[np.arange(len(ra)), nearest] < match_radius_arcsec**2) if d2.size else np.zeros(0, bool)
    with np.errstate(invalid="ignore"):
        ok &= np.isfinite(flux) & ~(snr < min_snr)  # unknown (NaN) S/N is not cut
    ok &= isolated[nearest]
    if not ok.any():
        return {"median_ratio": float("nan"), "scatter": float("nan"), "n_matched": 0}
    ratio = flux[ok] / true_flux[nearest[ok]]
    median = float(np.median(ratio))
    return {"median_ratio": median, "scatter": float(1.4826 * np.median(np.abs(ratio - median))),
            "n_matched": int(ok.sum())}
