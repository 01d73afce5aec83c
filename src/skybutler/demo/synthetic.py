"""Synthetic HSC-like data for the demo: a sky of stars, a sky map, visits and raw frames.

Everything here is deterministic given its seed, so a demo repository built twice is
the same repository. The layout mimics the DMTN-059 test (one tract of 2x2 patches,
two bands) at a scale small enough to process in seconds:

- pixels are 0.2 arcsec; a detector is 256 x 512 pixels (x, y); a visit puts two
  detectors side by side with an 8 pixel chip gap, about 104" x 102" on the sky;
- tract 0 is 424 x 424 pixels (84.8") around RA=150, Dec=+2 on a TAN projection,
  cut into 4 patches of 200 x 200 inner pixels with a 12 pixel overlap border
  (224 x 224 pixels each);
- 8 visits, 4 per band (``HSC-R`` -> ``r``, ``HSC-I`` -> ``i``), dithered by up to
  3", so each visit (both detectors) covers the whole tract and every patch;
- visit `BAD_SEEING_VISIT` has 1.85" seeing, about three times the others, so that
  coadd assembly has a warp to reject.

Fluxes are in nJy throughout; a calibrated measurement in these units should
reproduce the injected flux (`make_sky`).

Examples
--------
>>> sky = make_sky(seed=1)
>>> visit = make_visits()[0]
>>> raw = make_raw(visit, 0, sky, seed=1)
>>> header_to_data_id(raw.header)["visit"]
903334
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pyarrow as pa
from astropy.coordinates import Angle
from astropy.time import Time
from astropy.wcs import WCS

from ..model import Image
from ..ops.hsc import INSTRUMENT, PHYSICAL_FILTER_BANDS, day_obs, header_to_data_id
from .algorithms import wcs_to_header

__all__ = [
    "BAD_SEEING_VISIT",
    "DETECTORS",
    "INSTRUMENT",
    "PHYSICAL_FILTER_BANDS",
    "PIXEL_SCALE_ARCSEC",
    "DetectorDef",
    "PatchDef",
    "SkyMapDef",
    "TractDef",
    "VisitDef",
    "header_to_data_id",
    "make_bias",
    "make_flat",
    "make_raw",
    "make_sky",
    "make_skymap",
    "make_visits",
    "true_photo_calib",
]

PIXEL_SCALE_ARCSEC = 0.2
BAD_SEEING_VISIT = 903338

Region = tuple[tuple[float, float], ...]
"""Sky polygon as (ra, dec) vertices in degrees, counter-clockwise in the (ra, dec) plane."""

_TRACT_CENTER = (150.0, 2.0)
_DETECTOR_SHAPE = (512, 256)  # (ny, nx)
_CHIP_GAP = 8
_PATCH_INNER = 200
_PATCH_BORDER = 12
_STAR_BOX = 600  # stars are scattered over a square this many tract pixels wide
_N_STARS = 240
# Electrons per second per nJy reaching a detector, and sky electrons per pixel per second.
_THROUGHPUT = {"r": 0.030, "i": 0.022}
_EXPOSURE_TIME = {"r": 150.0, "i": 200.0}


@dataclass(frozen=True, eq=False)
class DetectorDef:
    """A detector of the demo camera and its amplifier properties.

    Parameters
    ----------
    id
        Integer detector id, as in data ids.
    name
        HSC-style name (``"1_53"``).
    gain
        Electrons per ADU.
    read_noise
        Read noise in electrons.
    bias_level
        Mean bias in ADU.
    focal_x0
        Focal-plane x, in pixels from the boresight, of the detector's left edge.
    bad_column
        A column whose pixels respond at 5% (flagged by the flat).
    shape
        ``(ny, nx)`` in pixels.
    saturation
        Saturation level in ADU (``SATURATE``).
    """

    id: int
    name: str
    gain: float
    read_noise: float
    bias_level: float
    focal_x0: float
    bad_column: int
    shape: tuple[int, int] = _DETECTOR_SHAPE
    saturation: float = 50000.0


_NX = _DETECTOR_SHAPE[1]
DETECTORS: dict[int, DetectorDef] = {
    0: DetectorDef(0, "1_53", gain=3.0, read_noise=4.5, bias_level=1000.0,
                   focal_x0=-(_NX + _CHIP_GAP / 2), bad_column=171),
    1: DetectorDef(1, "1_54", gain=3.2, read_noise=4.8, bias_level=1012.0,
                   focal_x0=_CHIP_GAP / 2, bad_column=58),
}
"""The two detectors of the demo camera, by id."""


@dataclass(frozen=True, eq=False)
class PatchDef:
    """A patch of a tract.

    Parameters
    ----------
    id
        Sequential index ``cell_y * 2 + cell_x``.
    cell_x, cell_y
        Patch indices along x and y.
    bbox
        Outer (overlapping) box ``(y0, y1, x0, x1)``, half-open, in tract pixels.
    inner_bbox
        The non-overlapping part, same convention.
    wcs
        TAN WCS of the patch's own pixel grid: the tract WCS with ``CRPIX`` moved so
        that array index ``[0, 0]`` is tract pixel ``(y0, x0)``.
    region
        Sky polygon of the outer box.
    """

    id: int
    cell_x: int
    cell_y: int
    bbox: tuple[int, int, int, int]
    inner_bbox: tuple[int, int, int, int]
    wcs: WCS
    region: Region

    @property
    def name(self) -> str:
        """``"x,y"``, the LSST way of naming a patch."""
        return f"{self.cell_x},{self.cell_y}"

    @property
    def shape(self) -> tuple[int, int]:
        """``(ny, nx)`` of the patch image."""
        y0, y1, x0, x1 = self.bbox
        return (y1 - y0, x1 - x0)


@dataclass(frozen=True, eq=False)
class TractDef:
    """A tract: one TAN pixel grid and the patches cut from it."""

    id: int
    wcs: WCS
    bbox: tuple[int, int, int, int]
    region: Region
    patches: tuple[PatchDef, ...]


@dataclass(frozen=True, eq=False)
class SkyMapDef:
    """A sky map: its name and its tracts."""

    name: str
    tracts: tuple[TractDef, ...]

    def tract(self, tract_id: int) -> TractDef:
        """The tract with this id."""
        for tract in self.tracts:
            if tract.id == tract_id:
                return tract
        raise KeyError(tract_id)


@dataclass(frozen=True, eq=False)
class VisitDef:
    """One visit (= one exposure) of the demo and the truth used to simulate it.

    Parameters
    ----------
    id
        Visit and exposure id (HSC style, e.g. 903334).
    physical_filter, band
        ``"HSC-R"``/``"r"`` or ``"HSC-I"``/``"i"``.
    exposure_time
        Seconds.
    begin, end
        Start and end of the exposure, timezone-aware UTC.
    day_obs
        Observing day as ``YYYYMMDD``; it rolls over at 12:00 UTC-12h (the Rubin rule).
    ra, dec
        Boresight in degrees.
    rotation
        Sky rotation of the detectors in degrees.
    seeing
        PSF FWHM in arcsec (a Gaussian PSF).
    sky_level
        Sky background in electrons per pixel.
    transparency
        Fraction of the nominal throughput that reached the detector.
    pointing_error
        ``(dx, dy)`` in pixels: how far the WCS written in the raw headers is off the
        truth; processCcd has to fit it away.
    wcs
        True WCS of each detector, by detector id.
    regions
        Sky polygon of each detector, by detector id.
    region
        Sky polygon of the whole focal plane.
    """

    id: int
    physical_filter: str
    band: str
    exposure_time: float
    begin: datetime
    end: datetime
    day_obs: int
    ra: float
    dec: float
    rotation: float
    seeing: float
    sky_level: float
    transparency: float
    pointing_error: tuple[float, float]
    wcs: Mapping[int, WCS]
    regions: Mapping[int, Region]
    region: Region
    target_name: str = "COSMOS"

    @property
    def detectors(self) -> tuple[int, ...]:
        """Ids of the detectors read out in this visit."""
        return tuple(sorted(self.wcs))

    @property
    def exposure_id_string(self) -> str:
        """The ``EXP-ID`` header value, ``HSCE`` and eight digits."""
        return f"HSCE{self.id:08d}"


# id, physical filter, start (UTC), seeing ("), sky (e-/s/pixel), transparency,
# dither (", east/north), rotation (deg), header WCS error (pixels).
_VISIT_TABLE = (
    (903334, "HSC-R", "2015-03-18T10:12:04.52", 0.66, 6.0, 0.98, (0.0, 0.0), 0.00, (1.6, -0.9)),
    (903336, "HSC-R", "2015-03-18T10:15:41.07", 0.72, 6.1, 0.97, (2.4, 1.6), 0.20, (-1.1, 2.2)),
    (903338, "HSC-R", "2015-03-18T10:19:17.88", 1.85, 6.4, 0.93, (-2.0, 2.8), -0.15, (0.7, 1.3)),
    (903342, "HSC-R", "2015-03-18T10:26:33.30", 0.62, 6.3, 0.99, (1.2, -2.4), 0.10, (-2.0, -0.5)),
    (903986, "HSC-I", "2015-03-19T09:40:31.14", 0.58, 7.5, 0.99, (0.0, 0.0), 0.00, (0.4, 1.8)),
    (903988, "HSC-I", "2015-03-19T09:44:57.61", 0.64, 7.6, 0.98, (-2.6, -1.4), -0.25, (2.1, 0.3)),
    (903990, "HSC-I", "2015-03-19T09:49:24.02", 0.70, 7.4, 0.96, (1.8, 2.2), 0.15, (-0.8, -1.7)),
    (904010, "HSC-I", "2015-03-19T10:31:10.45", 0.61, 7.9, 0.99, (-1.0, -2.8), 0.05, (1.2, 0.9)),
)


def _ccw(vertices: Sequence[tuple[float, float]]) -> Region:
    """Vertices ordered counter-clockwise in the (ra cos dec, dec) plane."""
    ra = np.array([v[0] for v in vertices])
    dec = np.array([v[1] for v in vertices])
    x = (ra - ra.mean()) * np.cos(np.radians(dec.mean()))
    area = 0.5 * np.sum(x * np.roll(dec, -1) - np.roll(x, -1) * dec)
    ordered = list(vertices) if area > 0 else list(vertices)[::-1]
    return tuple((float(r), float(d)) for r, d in ordered)


def _box_region(wcs: WCS, x0: float, x1: float, y0: float, y1: float) -> Region:
    """Sky polygon of the pixel box whose pixel-centre coordinates span [x0, x1] x [y0, y1]."""
    xs = np.array([x0, x1, x1, x0]) + np.array([-0.5, 0.5, 0.5, -0.5])
    ys = np.array([y0, y0, y1, y1]) + np.array([-0.5, -0.5, 0.5, 0.5])
    ra, dec = wcs.wcs_pix2world(xs, ys, 0)
    return _ccw(list(zip(ra.tolist(), dec.tolist(), strict=True)))


def _tan_wcs(ra: float, dec: float, crpix: tuple[float, float], rotation: float = 0.0) -> WCS:
    """A TAN WCS with 0.2" pixels, north up and east left when ``rotation`` is 0."""
    scale = PIXEL_SCALE_ARCSEC / 3600.0
    theta = np.radians(rotation)
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.crval = [ra, dec]
    wcs.wcs.crpix = list(crpix)
    wcs.wcs.cd = scale * np.array([[-np.cos(theta), np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    wcs.wcs.radesys = "ICRS"
    wcs.wcs.set()
    return wcs


def make_skymap() -> SkyMapDef:
    """The demo sky map: tract 0 around RA=150, Dec=+2 with 2 x 2 patches.

    Returns
    -------
    SkyMapDef
        Named ``"demo"``; one tract of 424 x 424 pixels whose patches have 200 x 200
        inner pixels and a 12 pixel overlap border (224 x 224 pixels each).
    """
    size = 2 * _PATCH_INNER + 2 * _PATCH_BORDER
    # 1-based CRPIX at the centre of the tract's pixel grid.
    tract_wcs = _tan_wcs(*_TRACT_CENTER, crpix=((size + 1) / 2, (size + 1) / 2))
    patches = []
    for cell_y in range(2):
        for cell_x in range(2):
            ix0 = _PATCH_BORDER + cell_x * _PATCH_INNER
            iy0 = _PATCH_BORDER + cell_y * _PATCH_INNER
            inner = (iy0, iy0 + _PATCH_INNER, ix0, ix0 + _PATCH_INNER)
            outer = (iy0 - _PATCH_BORDER, iy0 + _PATCH_INNER + _PATCH_BORDER,
                     ix0 - _PATCH_BORDER, ix0 + _PATCH_INNER + _PATCH_BORDER)
            wcs = tract_wcs.deepcopy()
            wcs.wcs.crpix = [tract_wcs.wcs.crpix[0] - outer[2], tract_wcs.wcs.crpix[1] - outer[0]]
            wcs.wcs.set()
            region = _box_region(tract_wcs, outer[2], outer[3] - 1, outer[0], outer[1] - 1)
            patches.append(PatchDef(id=cell_y * 2 + cell_x, cell_x=cell_x, cell_y=cell_y, bbox=outer,
                                    inner_bbox=inner, wcs=wcs, region=region))
    tract = TractDef(id=0, wcs=tract_wcs, bbox=(0, size, 0, size),
                     region=_box_region(tract_wcs, 0, size - 1, 0, size - 1), patches=tuple(patches))
    return SkyMapDef(name="demo", tracts=(tract,))


def make_sky(seed: int = 0) -> pa.Table:
    """Stars scattered over the tract and the margins the visits cover.

    Parameters
    ----------
    seed
        Random seed; the same seed gives the same sky.

    Returns
    -------
    pyarrow.Table
        Columns ``id`` (int64), ``ra``, ``dec`` (degrees), ``flux_r``, ``flux_i``
        (injected fluxes in nJy). Fluxes are log-uniform between 1500 and 100000 nJy in
        r (AB 23.0 to 18.9), with an r-i colour between 0 and 0.8 mag; about 120 stars
        land inside the tract. Most have S/N > 20 in a single visit.
    """
    rng = np.random.default_rng(seed)
    tract = make_skymap().tract(0)
    center = (tract.bbox[3] - 1) / 2
    x = center + rng.uniform(-_STAR_BOX / 2, _STAR_BOX / 2, _N_STARS)
    y = center + rng.uniform(-_STAR_BOX / 2, _STAR_BOX / 2, _N_STARS)
    ra, dec = tract.wcs.wcs_pix2world(x, y, 0)
    flux_r = 10 ** rng.uniform(np.log10(1500.0), np.log10(1.0e5), _N_STARS)
    color = rng.uniform(0.0, 0.8, _N_STARS)
    flux_i = flux_r * 10 ** (0.4 * color)
    return pa.table({
        "id": pa.array(np.arange(_N_STARS, dtype=np.int64)),
        "ra": pa.array(ra), "dec": pa.array(dec),
        "flux_r": pa.array(flux_r), "flux_i": pa.array(flux_i),
    })


def make_visits() -> list[VisitDef]:
    """The 8 visits of the demo, 4 in ``HSC-R`` and 4 in ``HSC-I``, each with 2 detectors.

    Returns
    -------
    list of VisitDef
        Ordered by id. Every visit's two detectors together cover all of tract 0.
    """
    visits = []
    ny = _DETECTOR_SHAPE[0]
    for (vid, physical_filter, start, seeing, sky_rate, transparency, dither, rotation,
         pointing_error) in _VISIT_TABLE:
        band = PHYSICAL_FILTER_BANDS[physical_filter]
        exposure_time = _EXPOSURE_TIME[band]
        begin = datetime.fromisoformat(start).replace(tzinfo=UTC)
        end = begin + timedelta(seconds=exposure_time)
        ra = _TRACT_CENTER[0] + dither[0] / 3600.0 / np.cos(np.radians(_TRACT_CENTER[1]))
        dec = _TRACT_CENTER[1] + dither[1] / 3600.0
        wcs, regions = {}, {}
        for det in DETECTORS.values():
            # Pixel centre x sits at focal-plane x = focal_x0 + x + 0.5; the boresight is at 0.
            crpix = (-det.focal_x0 - 0.5 + 1.0, ny / 2 + 0.5)
            wcs[det.id] = _tan_wcs(ra, dec, crpix=crpix, rotation=rotation)
            regions[det.id] = _box_region(wcs[det.id], 0, det.shape[1] - 1, 0, det.shape[0] - 1)
        left, right = DETECTORS[0], DETECTORS[1]
        x_right = right.focal_x0 - left.focal_x0 + right.shape[1] - 1  # in detector 0 pixels
        region = _box_region(wcs[0], 0, x_right, 0, ny - 1)
        visits.append(VisitDef(
            id=vid, physical_filter=physical_filter, band=band, exposure_time=exposure_time,
            begin=begin, end=end, day_obs=day_obs(begin), ra=float(ra), dec=float(dec),
            rotation=rotation, seeing=seeing, sky_level=sky_rate * exposure_time,
            transparency=transparency, pointing_error=pointing_error, wcs=wcs, regions=regions,
            region=region,
        ))
    return visits


def true_photo_calib(visit: VisitDef, detector: int) -> float:
    """The exact nJy per ADU of a bias-subtracted, flat-fielded frame of this visit and detector.

    This is what processCcd's photometric calibration should recover.
    """
    gain = DETECTORS[detector].gain
    return gain / (visit.exposure_time * _THROUGHPUT[visit.band] * visit.transparency)


def _erf(x: np.ndarray) -> np.ndarray:
    """Error function (Abramowitz & Stegun 7.1.26, |error| < 1.5e-7), numpy only."""
    sign = np.sign(x)
    x = np.abs(x)
    t = 1.0 / (1.0 + 0.3275911 * x)
    poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))))
    return sign * (1.0 - poly * np.exp(-x * x))


def _render_stars(shape: tuple[int, int], x: np.ndarray, y: np.ndarray, flux: np.ndarray,
                  sigma: float) -> np.ndarray:
    """Gaussian stars integrated over each pixel (pixel centres at integer coordinates)."""
    ny, nx = shape
    image = np.zeros(shape)
    half = int(np.ceil(6 * sigma)) + 1
    root2s = np.sqrt(2.0) * sigma
    for xi, yi, fi in zip(x, y, flux, strict=True):
        cx, cy = int(round(xi)), int(round(yi))
        x0, x1 = max(cx - half, 0), min(cx + half + 1, nx)
        y0, y1 = max(cy - half, 0), min(cy + half + 1, ny)
        if x0 >= x1 or y0 >= y1:
            continue
        px = np.arange(x0, x1) - xi
        py = np.arange(y0, y1) - yi
        gx = 0.5 * (_erf((px + 0.5) / root2s) - _erf((px - 0.5) / root2s))
        gy = 0.5 * (_erf((py + 0.5) / root2s) - _erf((py - 0.5) / root2s))
        image[y0:y1, x0:x1] += fi * np.outer(gy, gx)
    return image


def make_bias(detector: int) -> Image:
    """The master bias of a detector: a level plus a faint column pattern, in ADU, noiseless."""
    det = DETECTORS[detector]
    ny, nx = det.shape
    columns = 2.0 * np.sin(np.arange(nx) / 23.0 + detector)
    rows = 0.5 * np.linspace(-1.0, 1.0, ny)
    data = (det.bias_level + columns[None, :] + rows[:, None]).astype(np.float32)
    header = {"INSTRUME": INSTRUMENT, "DATA-TYP": "BIAS", "DET-ID": det.id, "DETNAME": det.name,
              "NAXIS1": nx, "NAXIS2": ny, "BUNIT": "adu"}
    return Image(data=data, header=header)


def make_flat(detector: int, physical_filter: str) -> Image:
    """The normalised flat of a detector in a filter: vignetting, 1% pixel response, a bad column."""
    det = DETECTORS[detector]
    ny, nx = det.shape
    rng = np.random.default_rng([det.id, sum(physical_filter.encode())])
    yy, xx = np.mgrid[0:ny, 0:nx]
    fx = det.focal_x0 + xx + 0.5  # distance from the boresight drives the vignetting
    fy = yy - ny / 2 + 0.5
    r2 = (fx**2 + fy**2) / (ny / 2) ** 2
    flat = (1.0 - 0.06 * r2) * (1.0 + 0.01 * rng.standard_normal((ny, nx)))
    flat /= flat.mean()
    flat[:, det.bad_column] = 0.05
    header = {"INSTRUME": INSTRUMENT, "DATA-TYP": "DOMEFLAT", "DET-ID": det.id, "DETNAME": det.name,
              "FILTER01": physical_filter, "NAXIS1": nx, "NAXIS2": ny}
    return Image(data=flat.astype(np.float32), header=header)


def _sexagesimal(ra: float, dec: float) -> tuple[str, str]:
    return (Angle(ra, "deg").to_string(unit="hour", sep=":", precision=3, pad=True),
            Angle(dec, "deg").to_string(unit="deg", sep=":", precision=2, alwayssign=True, pad=True))


def _column(table: pa.Table | Mapping[str, Any], name: str) -> np.ndarray:
    if isinstance(table, pa.Table):
        return table.column(name).to_numpy()
    return np.asarray(table[name])


def make_raw(visit: VisitDef, detector: int, sky: pa.Table | Mapping[str, Any], seed: int = 0) -> Image:
    """Simulate one raw frame, as the camera would write it.

    The frame is ``bias + (flat * (sky + stars) + noise + cosmic rays) / gain`` in
    ADU, float32, where the noise is Poisson (Gaussian-approximated) plus read
    noise. Stars have a Gaussian PSF of the visit's seeing, integrated over pixels.
    The header WCS is off by ``visit.pointing_error``.

    Parameters
    ----------
    visit
        One of `make_visits`.
    detector
        Detector id.
    sky
        The stars, from `make_sky`.
    seed
        Noise seed (combined with the visit and detector ids).

    Returns
    -------
    Image
        The raw pixels and an HSC-like header (``INSTRUME``, ``EXP-ID``, ``FRAMEID``,
        ``DET-ID``, ``DETNAME``, ``FILTER01``, ``DATE-OBS``, ``MJD``, ``EXPTIME``,
        ``OBJECT``, ``GAIN``, ``RDNOISE``, ``BIAS``, ``SATURATE``, WCS cards).
    """
    det = DETECTORS[detector]
    ny, nx = det.shape
    rng = np.random.default_rng([seed, visit.id, detector])
    true_wcs = visit.wcs[detector]
    x, y = true_wcs.wcs_world2pix(_column(sky, "ra"), _column(sky, "dec"), 0)
    electrons_per_njy = visit.exposure_time * _THROUGHPUT[visit.band] * visit.transparency
    flux = _column(sky, f"flux_{visit.band}") * electrons_per_njy
    sigma = visit.seeing / 2.3548 / PIXEL_SCALE_ARCSEC
    margin = 6 * sigma + 2
    near = (x > -margin) & (x < nx + margin) & (y > -margin) & (y < ny + margin)
    yy, xx = np.mgrid[0:ny, 0:nx]
    sky_level = visit.sky_level * (1.0 + 0.03 * (xx / nx - 0.5) + 0.02 * (yy / ny - 0.5))
    signal = sky_level + _render_stars((ny, nx), x[near], y[near], flux[near], sigma)
    flat = make_flat(detector, visit.physical_filter).data.astype(np.float64)
    expected = flat * signal
    electrons = expected + np.sqrt(expected) * rng.standard_normal((ny, nx))
    electrons += det.read_noise * rng.standard_normal((ny, nx))
    _add_cosmic_rays(electrons, rng)
    data = make_bias(detector).data + electrons / det.gain
    data = np.clip(data, 0.0, 65535.0).astype(np.float32)

    header: dict[str, Any] = {
        "SIMPLE": True, "NAXIS": 2, "NAXIS1": nx, "NAXIS2": ny,
        "TELESCOP": "Subaru", "INSTRUME": INSTRUMENT, "DATA-TYP": "OBJECT", "OBJECT": visit.target_name,
        "EXP-ID": visit.exposure_id_string, "FRAMEID": f"HSCA{visit.id * 100 + detector:08d}",
        "DET-ID": det.id, "DETNAME": det.name, "FILTER01": visit.physical_filter,
        "DATE-OBS": visit.begin.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3],
        "MJD": float(Time(visit.begin).mjd), "EXPTIME": visit.exposure_time,
        "RA2000": _sexagesimal(visit.ra, visit.dec)[0], "DEC2000": _sexagesimal(visit.ra, visit.dec)[1],
        "GAIN": det.gain, "RDNOISE": det.read_noise, "BIAS": det.bias_level,
        "SATURATE": det.saturation, "BUNIT": "adu",
    }
    header_wcs = true_wcs.deepcopy()
    header_wcs.wcs.crpix = [true_wcs.wcs.crpix[0] + visit.pointing_error[0],
                            true_wcs.wcs.crpix[1] + visit.pointing_error[1]]
    header_wcs.wcs.set()
    header.update(wcs_to_header(header_wcs))
    return Image(data=data, header=header)


def _add_cosmic_rays(electrons: np.ndarray, rng: np.random.Generator) -> None:
    """Add a handful of short, sharp cosmic-ray tracks (1 to 4 pixels) in place."""
    ny, nx = electrons.shape
    steps = ((0, 1), (1, 0), (1, 1), (1, -1))
    for _ in range(rng.poisson(6)):
        y, x = int(rng.integers(2, ny - 6)), int(rng.integers(6, nx - 6))
        dy, dx = steps[rng.integers(len(steps))]
        energy = rng.uniform(2000.0, 15000.0)
        for k in range(int(rng.integers(1, 5))):
            electrons[y + k * dy, x + k * dx] += energy
