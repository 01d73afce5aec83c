"""Build the demo repository: synthetic HSC-like raws, calibrations, a skymap and a reference catalogue.

Everything goes in through the paths operators use: raws are written as FITS
files and ingested with the ``hsc-raw`` header plugin; calibrations are put
and certified into a CALIBRATION collection; the skymap's tract and patches
are dimension records with sky regions (their overlaps with visits are
computed when they are inserted).
"""

from __future__ import annotations

import datetime
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..butler import Butler
from ..formats import get_formatter
from ..ops.ingest import ingest_raws
from . import algorithms as alg
from . import synthetic as syn

SKYMAP = "demo_rings"
RAW_RUN = "HSC/raw/all"
CALIB_RUN = "HSC/calib/gen"
CALIB = "HSC/calib"
REFCATS = "refcats"
SKYMAPS = "skymaps"
DEFAULTS = "HSC/defaults"

DATASET_TYPES: list[tuple[str, tuple[str, ...], str, bool]] = [
    ("raw", ("visit", "detector"), "image", False),
    ("bias", ("detector",), "image", True),
    ("flat", ("detector", "physical_filter"), "image", True),
    ("ref_cat", ("skymap",), "table", False),
    ("skyMap", ("skymap",), "dict", False),
]


def _region(vertices: Any) -> list[tuple[float, float]]:
    verts = getattr(vertices, "vertices", vertices)
    return [(float(ra), float(dec)) for ra, dec in verts]


def create_demo_repository(root: str | Path, *, visits: int | None = None, seed: int = 0,
                           progress: Callable[[str], None] | None = None) -> Butler:
    """Create and fill the demo repository in ``root`` (which must not hold one).

    Parameters
    ----------
    visits
        Use only the first ``visits`` visits of each band (default: all 4 per band).
    """
    say = progress or (lambda _msg: None)
    root = Path(root)
    butler = Butler.create(root / "repo")
    say("dimension records")
    butler.insert_dimension_records("instrument", [{"instrument": syn.INSTRUMENT, "class_name": "HSC",
                                                    "detector_max": 112}])
    bands = sorted(set(syn.PHYSICAL_FILTER_BANDS.values()))
    butler.insert_dimension_records("band", [{"band": b} for b in bands])
    butler.insert_dimension_records("physical_filter", [
        {"instrument": syn.INSTRUMENT, "physical_filter": pf, "band": b}
        for pf, b in syn.PHYSICAL_FILTER_BANDS.items()])
    butler.insert_dimension_records("detector", [
        {"instrument": syn.INSTRUMENT, "detector": d.id, "name": d.name, "purpose": "SCIENCE"}
        for d in syn.DETECTORS.values()])
    skymap = syn.make_skymap()
    tract = skymap.tract(0)
    butler.insert_dimension_records("skymap", [{"skymap": SKYMAP, "tract_max": 1, "patch_nx_max": 2,
                                                "patch_ny_max": 2}])
    butler.insert_dimension_records("tract", [{"skymap": SKYMAP, "tract": tract.id, "region": _region(tract.region)}])
    butler.insert_dimension_records("patch", [
        {"skymap": SKYMAP, "tract": tract.id, "patch": p.id, "cell_x": p.cell_x, "cell_y": p.cell_y,
         "region": _region(p.region)} for p in tract.patches])
    for name, dims, sc, is_calib in DATASET_TYPES:
        butler.register_dataset_type(name, dims, sc, is_calibration=is_calib)

    say("synthetic raw files")
    sky = syn.make_sky(seed)
    all_visits = syn.make_visits()
    if visits is not None:
        per_band: dict[str, int] = {}
        chosen = []
        for v in all_visits:
            if per_band.get(v.band, 0) < visits:
                chosen.append(v)
                per_band[v.band] = per_band.get(v.band, 0) + 1
        all_visits = chosen
    incoming = root / "incoming"
    incoming.mkdir(parents=True, exist_ok=True)
    fits = get_formatter("fits")
    files = []
    for v in all_visits:
        for det in v.detectors:
            path = incoming / f"HSC-{v.id:07d}-{det:03d}.fits"
            with open(path, "wb") as f:
                fits.write(syn.make_raw(v, det, sky, seed=seed), f, identity={})
            files.append(str(path))

    say("raw ingest (hsc-raw header plugin)")
    ingest_raws(butler, "hsc-raw", files, run=RAW_RUN, transfer="copy")

    say("calibrations")
    calib = butler.with_run(CALIB_RUN)
    bias_refs = [calib.put(syn.make_bias(d), "bias", instrument=syn.INSTRUMENT, detector=d) for d in syn.DETECTORS]
    flat_refs = [calib.put(syn.make_flat(d, pf), "flat", instrument=syn.INSTRUMENT, detector=d, physical_filter=pf)
                 for d in syn.DETECTORS for pf in syn.PHYSICAL_FILTER_BANDS]
    butler.collections.certify(CALIB, bias_refs + flat_refs, datetime.datetime(2000, 1, 1),
                               datetime.datetime(2100, 1, 1))

    say("reference catalogue and skymap geometry")
    butler.with_run(REFCATS).put(sky, "ref_cat", skymap=SKYMAP)
    patches = {f"{tract.id},{p.id}": {"wcs": alg.wcs_to_header(p.wcs), "shape": list(p.shape),
                                      "cell": [p.cell_x, p.cell_y]} for p in tract.patches}
    butler.with_run(SKYMAPS).put({"name": SKYMAP, "patches": patches}, "skyMap", skymap=SKYMAP)
    butler.collections.set_chain(DEFAULTS, [RAW_RUN, CALIB, REFCATS, SKYMAPS])
    return butler
