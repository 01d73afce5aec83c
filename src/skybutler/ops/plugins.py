"""Ingest plugins: what a file's header says about the dataset it holds, found by short name.

An ingest plugin is a subclass of `IngestPlugin`. Given one file's header (and path) it
gives the file's data id, the dimension records the file implies (instrument, band,
physical filter, detector, day_obs, exposure, visit, and the visit's and detector's sky
regions from the WCS), and extra metadata columns recorded per dataset (airmass, seeing,
object). `skybutler.ops.ingest.ingest_raws` does the rest: it merges the records of every
file, checks them against the repository's, and ingests the files with their records in
one transaction.

Plugins are found by name (`get_plugin`), in this order:

1. the built-ins of `BUILTIN_PLUGINS` (``hsc-raw``), imported on first use;
2. Python entry points of group ``skybutler.ingest_plugins`` (installed packages declare
   ``my-cam = "my_package.plugin:MyCamPlugin"`` in their ``pyproject.toml``);
3. a dotted path ``package.module:Class``, for a plugin not installed as a package.

docs/ingest_plugins.md shows how to write one.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import warnings
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from ..errors import ConfigError, FormatError
from ..model import DatasetType

__all__ = [
    "BUILTIN_PLUGINS",
    "ENTRY_POINT_GROUP",
    "IngestPlugin",
    "available_plugins",
    "convex_hull",
    "footprint",
    "get_plugin",
    "observation_records",
    "read_fits_header",
]

ENTRY_POINT_GROUP = "skybutler.ingest_plugins"
"""The entry point group third-party packages register their plugins in."""

BUILTIN_PLUGINS: dict[str, str] = {
    "hsc-raw": ".hsc:HscRawPlugin",
}
"""Short name -> ``module:Class`` of a plugin in `skybutler.ops`, imported on first use."""


class IngestPlugin:
    """Base of ingest plugins: one file's header in; data id, dimension records and metadata out.

    A subclass sets the class attributes and implements `data_id` and `records`; the
    defaults of `read_header` (the primary FITS header) and `metadata` (the header keys of
    `metadata_keys`) suit most cameras. Methods must not write anything: they are called
    for every file before anything is stored, so a file that cannot be read stops the
    ingest with nothing done.

    Attributes
    ----------
    name
        The short name operators type (``--plugin hsc-raw``).
    description
        One line for ``skybutler ingest --help``.
    dataset_type
        The dataset type the files are ingested as, registered when the repository has
        none of that name (an existing one of that name is used as it is).
    metadata_keys
        Metadata column name -> header key (``{"airmass": "AIRMASS"}``), recorded per
        dataset with its origin (`skybutler.ops.ingest.origin_of`).

    Raises
    ------
    ValueError, KeyError
        From any method, for a file the plugin cannot read; ingest reports the file and
        the message (one line) and stores nothing.
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    dataset_type: ClassVar[DatasetType] = DatasetType("raw", ("instrument", "visit", "detector"), "image")
    metadata_keys: ClassVar[Mapping[str, str]] = {}

    def read_header(self, path: str) -> Mapping[str, Any]:
        """The header of the file at ``path`` (default: its primary FITS header, see `read_fits_header`)."""
        return read_fits_header(path)

    def data_id(self, header: Mapping[str, Any], path: str) -> dict[str, Any]:
        """The dimension values of the file: those of `dataset_type` and any implied ones.

        Returns
        -------
        dict
            E.g. ``{"instrument": "HSC", "exposure": 903334, "visit": 903334, "detector": 16,
            "physical_filter": "HSC-R", "band": "r", "day_obs": 20240310}``. Keys the
            dataset type does not use are ignored, so one plugin serves ``raw`` by visit
            or by exposure.
        """
        raise NotImplementedError(f"{type(self).__name__} must implement data_id")

    def records(self, header: Mapping[str, Any], path: str) -> dict[str, list[dict[str, Any]]]:
        """The dimension records the file implies, by element name.

        Records of one key given by several files are merged: their values must agree,
        and their regions are combined (a visit's region is the convex hull of the
        regions its detectors' files give it). A record that already exists in the
        repository is kept if its values (regions aside) are the same, and is an error
        otherwise. Build regions with `footprint`; `observation_records` builds the
        usual observation records from a few values.

        Returns
        -------
        dict
            ``{"instrument": [{"instrument": "HSC", ...}], "detector": [...], ...}``.
        """
        raise NotImplementedError(f"{type(self).__name__} must implement records")

    def metadata(self, header: Mapping[str, Any], path: str) -> dict[str, Any]:
        """Extra columns recorded per dataset: each of `metadata_keys` the header has, by column name."""
        return {column: header[key] for column, key in self.metadata_keys.items() if key in header}


# -- lookup ------------------------------------------------------------------------------


def _entry_points() -> dict[str, importlib.metadata.EntryPoint]:
    return {ep.name: ep for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)}


def _load(target: str, package: str | None, what: str) -> type[IngestPlugin]:
    module_name, _, attr = target.partition(":")
    try:
        obj = getattr(importlib.import_module(module_name, package), attr)
    except (ImportError, AttributeError, ValueError) as exc:
        raise ConfigError(f"Cannot load ingest plugin {what} ({target}): {type(exc).__name__}: {exc}") from None
    if not (isinstance(obj, type) and issubclass(obj, IngestPlugin)):
        raise ConfigError(f"Ingest plugin {what} ({target}) is not a subclass of skybutler.ops.plugins.IngestPlugin")
    return obj


def get_plugin(name: str) -> IngestPlugin:
    """The ingest plugin of a short name (built-in or entry point) or a dotted path ``package.module:Class``.

    Raises
    ------
    ConfigError
        If no plugin has that name (the message lists the known ones and how to
        register another), or it cannot be loaded.

    Examples
    --------
    >>> get_plugin("hsc-raw").dataset_type.name
    'raw'
    """
    if name in BUILTIN_PLUGINS:
        return _load(BUILTIN_PLUGINS[name], __package__, repr(name))()
    entry_point = _entry_points().get(name)
    if entry_point is not None:
        return _load(entry_point.value, None, repr(name))()
    if ":" in name and all(part.isidentifier() for part in name.replace(":", ".").split(".")):
        return _load(name, None, repr(name))()
    known = ", ".join(sorted({*BUILTIN_PLUGINS, *_entry_points()}))
    raise ConfigError(
        f"Unknown ingest plugin {name!r}; known: {known}. Register one as a Python entry point in group "
        f"{ENTRY_POINT_GROUP!r} or give its dotted path package.module:Class (see docs/ingest_plugins.md)")


def available_plugins() -> dict[str, str]:
    """Every plugin found by name (built-in and entry points) -> its one-line description, sorted by name.

    A plugin that cannot be loaded is listed with the reason instead of a description.
    """
    out: dict[str, str] = {}
    for name in sorted({*BUILTIN_PLUGINS, *_entry_points()}):
        try:
            out[name] = type(get_plugin(name)).description or "(no description)"
        except ConfigError as exc:
            out[name] = f"(cannot load: {exc})"
    return out


# -- helpers for plugins -----------------------------------------------------------------


def read_fits_header(path: str) -> dict[str, Any]:
    """The header of a FITS file's image as a dict (reads headers only; COMMENT and HISTORY left out).

    The primary header, unless the primary HDU holds no data and the next HDU is an image
    (a tile-compressed ``.fits.fz`` file, or a raw written with its pixels in an
    extension): then the primary's keys with the image's over them, as the image's
    size and WCS are there.

    Raises
    ------
    FormatError
        If the file cannot be read as FITS (the message names it).
    """
    from astropy.io import fits

    try:
        with fits.open(path, memmap=False, lazy_load_hdus=True) as hdus:
            header = hdus[0].header
            merged = {k: header[k] for k in header if k not in _NOT_METADATA}
            if header.get("NAXIS", 0) == 0:
                try:
                    image = hdus[1]
                except IndexError:
                    image = None
                if image is not None and image.is_image:
                    extension = image.header
                    merged.update({k: extension[k] for k in extension if k not in _NOT_METADATA + _EXTENSION_ONLY})
    except (OSError, ValueError) as exc:
        raise FormatError(f"Cannot read a FITS header from {path}: {exc}") from None
    return merged


_NOT_METADATA = ("COMMENT", "HISTORY", "")
_EXTENSION_ONLY = ("XTENSION", "PCOUNT", "GCOUNT", "EXTNAME", "EXTVER", "INHERIT")


def footprint(header: Mapping[str, Any]) -> list[tuple[float, float]] | None:
    """Sky corners (ra, dec, degrees, counter-clockwise) of the image the header's WCS describes, or None.

    None when the header has no celestial WCS (``CTYPE1``) or no image size (``NAXIS1``).
    """
    if "CTYPE1" not in header or "NAXIS1" not in header:
        return None
    import numpy as np
    from astropy.wcs import WCS, FITSFixedWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        wcs = WCS({k: v for k, v in header.items() if isinstance(v, (int, float, str))})
    nx, ny = int(header["NAXIS1"]), int(header["NAXIS2"])
    corners = np.array([[-0.5, -0.5], [nx - 0.5, -0.5], [nx - 0.5, ny - 0.5], [-0.5, ny - 0.5]])
    ra, dec = wcs.all_pix2world(corners[:, 0], corners[:, 1], 0)
    return convex_hull(list(zip(ra.tolist(), dec.tolist(), strict=True)))


def convex_hull(points: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """Convex hull of points on a small patch of sky, counter-clockwise as seen from inside the sphere."""
    import numpy as np

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


def observation_records(values: Mapping[str, Any], region: Sequence[tuple[float, float]] | None,
                        ) -> dict[str, list[dict[str, Any]]]:
    """The ``day_obs``, ``exposure``, ``visit`` (one per exposure), ``visit_definition`` and region records of one file.

    Parameters
    ----------
    values
        ``instrument``, ``exposure``, ``visit``, ``detector``, ``physical_filter``,
        ``day_obs``, ``exposure_time``, ``timespan_begin``, ``timespan_end`` and
        optionally ``observation_type`` and ``target_name``.
    region
        The detector's footprint (`footprint`), or None: then no region records. It is
        the ``visit_detector_region`` and, merged with the other detectors', the visit's.
    """
    inst = values["instrument"]
    common = {"instrument": inst, "physical_filter": values["physical_filter"], "day_obs": values["day_obs"],
              "exposure_time": values["exposure_time"], "timespan_begin": values["timespan_begin"],
              "timespan_end": values["timespan_end"], "target_name": values.get("target_name")}
    visit: dict[str, Any] = {**common, "visit": values["visit"]}
    out: dict[str, list[dict[str, Any]]] = {
        "day_obs": [{"instrument": inst, "day_obs": values["day_obs"]}],
        "exposure": [{**common, "exposure": values["exposure"], "observation_type": values.get("observation_type")}],
        "visit": [visit],
        "visit_definition": [{"instrument": inst, "exposure": values["exposure"], "visit": values["visit"]}],
    }
    if region:
        visit["region"] = list(region)
        out["visit_detector_region"] = [{"instrument": inst, "visit": values["visit"],
                                         "detector": values["detector"], "region": list(region)}]
    return out
