"""Raw ingest with metadata plugins: read each file's header, derive its data id, sync dimension records.

A plugin is a *translator*: a function from a FITS header to a metadata dict
with at least ``instrument``, ``exposure``, ``detector``, ``physical_filter``,
``day_obs``, ``exposure_time``, ``timespan_begin``, ``timespan_end``. Plugins
are named by short names in `PLUGINS` (no dotted paths in configuration).
Regions come from the WCS in the header: the detector footprint becomes the
``visit_detector_region`` record, and the visit region is the convex hull of
its detectors' footprints, so overlaps with tracts and patches are computed
at ingest, once.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import ConfigError, FormatError

if TYPE_CHECKING:
    from ..butler import Butler, FileDataset

PLUGINS: dict[str, str] = {
    "hsc-raw": ".hsc:header_to_data_id",
}
"""Short name -> ``module:function`` of a header translator; a module of `skybutler.ops`, imported on first use."""


def translator(name: str) -> Callable[[Mapping[str, Any]], dict[str, Any]]:
    """The header translator registered under ``name``."""
    try:
        target = PLUGINS[name]
    except KeyError:
        raise ConfigError(f"Unknown ingest plugin {name!r}; known: {', '.join(sorted(PLUGINS))}") from None
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module, __package__), attr)  # type: ignore[no-any-return]


def read_header(path: str) -> dict[str, Any]:
    """The primary header of a FITS file as a dict (reads the header only)."""
    from astropy.io import fits

    try:
        header = fits.getheader(path, 0)
    except (OSError, ValueError) as exc:
        raise FormatError(f"Cannot read a FITS header from {path}: {exc}") from None
    return {k: header[k] for k in header if k not in ("COMMENT", "HISTORY", "")}


def footprint(header: Mapping[str, Any]) -> list[tuple[float, float]] | None:
    """Sky corners (ra, dec, degrees, counter-clockwise) of the image the header describes, or None."""
    if "CTYPE1" not in header or "NAXIS1" not in header:
        return None
    import warnings

    from astropy.wcs import WCS, FITSFixedWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        wcs = WCS({k: v for k, v in header.items() if isinstance(v, (int, float, str))})
    nx, ny = int(header["NAXIS1"]), int(header["NAXIS2"])
    corners = np.array([[-0.5, -0.5], [nx - 0.5, -0.5], [nx - 0.5, ny - 0.5], [-0.5, ny - 0.5]])
    ra, dec = wcs.all_pix2world(corners[:, 0], corners[:, 1], 0)
    return _counter_clockwise(list(zip(ra.tolist(), dec.tolist(), strict=True)))


def _counter_clockwise(points: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """Convex hull of points on a small patch of sky, counter-clockwise as seen from inside the sphere."""
    pts = np.asarray(points, dtype=float)
    ra0, dec0 = np.radians(pts[:, 0].mean()), np.radians(pts[:, 1].mean())
    ra, dec = np.radians(pts[:, 0]), np.radians(pts[:, 1])
    # Gnomonic projection around the mean point: straight lines are great circles there.
    cosc = np.sin(dec0) * np.sin(dec) + np.cos(dec0) * np.cos(dec) * np.cos(ra - ra0)
    x = np.cos(dec) * np.sin(ra - ra0) / cosc
    y = (np.cos(dec0) * np.sin(dec) - np.sin(dec0) * np.cos(dec) * np.cos(ra - ra0)) / cosc
    order = sorted(range(len(pts)), key=lambda i: (x[i], y[i]))

    def cross(o: int, a: int, b: int) -> float:
        return float((x[a] - x[o]) * (y[b] - y[o]) - (y[a] - y[o]) * (x[b] - x[o]))

    lower: list[int] = []
    for i in order:
        while len(lower) >= 2 and cross(lower[-2], lower[-1], i) <= 0:
            lower.pop()
        lower.append(i)
    upper: list[int] = []
    for i in reversed(order):
        while len(upper) >= 2 and cross(upper[-2], upper[-1], i) <= 0:
            upper.pop()
        upper.append(i)
    hull = lower[:-1] + upper[:-1]
    # (x east-positive on the sky is RA increasing) hull order here is counter-clockwise in (x, y).
    return [(float(pts[i, 0]), float(pts[i, 1])) for i in hull]


def plugin_datasets(butler: Butler, plugin: str, files: Sequence[str], dataset_type: str | None,
                    ) -> list[FileDataset]:
    """Read every file's header with the plugin, sync the records it implies, return what to ingest.

    Records synced (inserted only when absent): ``day_obs``, ``exposure``, ``visit``
    (one visit per exposure), ``visit_definition`` and ``visit_detector_region``.
    The instrument, its filters and detectors must exist already.
    """
    from ..butler import FileDataset

    translate = translator(plugin)
    dataset_type = dataset_type or "raw"
    dt = butler.registry.get_dataset_type(dataset_type)
    metas = []
    for path in files:
        header = read_header(path)
        try:
            meta = translate(header)
        except (ValueError, KeyError) as exc:
            raise FormatError(f"Ingest plugin {plugin!r} cannot read {path}: {exc}") from None
        meta["_footprint"] = footprint(header)
        metas.append(meta)
    sync_observation_records(butler, metas)
    return [FileDataset(path, dataset_type, {k: m[k] for k in dt.dimensions})
            for path, m in zip(files, metas, strict=True)]


def sync_observation_records(butler: Butler, metas: Sequence[Mapping[str, Any]]) -> None:
    """Insert (if absent) the day_obs, exposure, visit and region records the metadata implies."""
    day_obs, exposures, visits, definitions, vdr = {}, {}, {}, {}, {}
    corners: dict[tuple[str, int], list[tuple[float, float]]] = {}
    for m in metas:
        inst = m["instrument"]
        day_obs[(inst, m["day_obs"])] = {"instrument": inst, "day_obs": m["day_obs"]}
        common = {"instrument": inst, "physical_filter": m["physical_filter"], "day_obs": m["day_obs"],
                  "exposure_time": m["exposure_time"], "timespan_begin": m["timespan_begin"],
                  "timespan_end": m["timespan_end"], "target_name": m.get("target_name")}
        exposures[(inst, m["exposure"])] = {**common, "exposure": m["exposure"],
                                            "observation_type": m.get("observation_type")}
        visits[(inst, m["visit"])] = {**common, "visit": m["visit"]}
        definitions[(inst, m["exposure"], m["visit"])] = {"instrument": inst, "exposure": m["exposure"],
                                                          "visit": m["visit"]}
        if m.get("_footprint"):
            vdr[(inst, m["visit"], m["detector"])] = {"instrument": inst, "visit": m["visit"],
                                                      "detector": m["detector"], "region": m["_footprint"]}
            corners.setdefault((inst, m["visit"]), []).extend(m["_footprint"])
    for key, pts in corners.items():
        visits[key]["region"] = _counter_clockwise(pts)
    with butler.transaction():
        for element, records in (("day_obs", day_obs), ("exposure", exposures), ("visit", visits),
                                 ("visit_definition", definitions), ("visit_detector_region", vdr)):
            if records:
                butler.insert_dimension_records(element, records.values(), skip_existing=True)
