"""The 8 tasks of DMTN-059, as skybutler tasks over the small algorithms in `algorithms`.

processCcd → makeCoaddTempExp → assembleCoadd → detectCoaddSources →
mergeCoaddDetections → measureCoaddSources → mergeCoaddMeasurements → forcedPhotCoadd

The skymap's patch geometry is a dataset (``skyMap``, one per skymap) so that
warping reads it like any other input; the reference catalogue is ``ref_cat``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pyarrow as pa

from ..model import Image
from ..pipeline.task import Input, Output, PrerequisiteInput, QuantumContext, Task, TaskConfig
from . import algorithms as alg
from .synthetic import DETECTORS


class ProcessCcdConfig(TaskConfig):
    threshold_sigma: float = 5.0


class ProcessCcd(Task):
    """Bias/flat correction, background, detection, photometry and calibration of one detector."""

    dimensions = ("visit", "detector")
    config_class = ProcessCcdConfig
    raw = Input("raw", ("visit", "detector"), "image", doc="Raw frame")
    ref_cat = Input("ref_cat", ("skymap",), "table", multiple=True,
                    doc="Reference catalogue (positions, fluxes); one per skymap in the input collections")
    bias = PrerequisiteInput("bias", ("detector",), "image", doc="Bias frame (calibration)")
    flat = PrerequisiteInput("flat", ("detector", "physical_filter"), "image", doc="Flat field (calibration)")
    calexp = Output("calexp", ("visit", "detector"), "image", doc="Calibrated exposure")
    src = Output("src", ("visit", "detector"), "table", doc="Source catalogue")

    def run_quantum(self, context: QuantumContext) -> Mapping[str, Any]:
        inputs = context.load_inputs()
        ref_cat = pa.concat_tables(inputs["ref_cat"])
        calexp, src, _calib = alg.process_ccd(inputs["raw"], inputs["bias"], inputs["flat"], ref_cat,
                                              band=str(context.data_id["band"]),
                                              threshold_sigma=self.config.threshold_sigma)  # type: ignore[attr-defined]
        return {"calexp": calexp, "src": src}


class MakeCoaddTempExp(Task):
    """Warp the calexps of one visit onto one patch's pixel grid."""

    dimensions = ("visit", "tract", "patch")
    calexps = Input("calexp", ("visit", "detector"), "image", multiple=True)
    sky_map = Input("skyMap", ("skymap",), "dict", doc="Patch WCS and shapes")
    warp = Output("deepCoadd_directWarp", ("visit", "tract", "patch"), "image")

    def run_quantum(self, context: QuantumContext) -> Mapping[str, Any]:
        inputs = context.load_inputs()
        patch = inputs["sky_map"]["patches"][f"{context.data_id['tract']},{context.data_id['patch']}"]
        wcs = alg.wcs_from_header(patch["wcs"])
        return {"warp": alg.make_warp(inputs["calexps"], wcs, tuple(patch["shape"]))}


class AssembleCoaddConfig(TaskConfig):
    clip_sigma: float = 3.0
    psf_ratio_limit: float = 1.5


class AssembleCoadd(Task):
    """Combine the warps of one patch and band with outlier rejection; report the warps used."""

    dimensions = ("tract", "patch", "band")
    config_class = AssembleCoaddConfig
    warps = Input("deepCoadd_directWarp", ("visit", "tract", "patch"), "image", multiple=True)
    coadd = Output("deepCoadd", ("tract", "patch", "band"), "image")

    def run_quantum(self, context: QuantumContext) -> Mapping[str, Any]:
        warps = context.get("warps")
        cfg = self.config
        coadd, used = alg.assemble_coadd(warps, clip_sigma=cfg.clip_sigma,  # type: ignore[attr-defined]
                                         psf_ratio_limit=cfg.psf_ratio_limit)  # type: ignore[attr-defined]
        context.report_used("warps", used)
        return {"coadd": coadd}


class DetectCoaddSources(Task):
    """Detect peaks on one coadd."""

    dimensions = ("tract", "patch", "band")
    coadd = Input("deepCoadd", ("tract", "patch", "band"), "image")
    calexp = Output("deepCoadd_calexp", ("tract", "patch", "band"), "image")
    det = Output("deepCoadd_det", ("tract", "patch", "band"), "table")

    def run(self, coadd: Image) -> Mapping[str, Any]:
        return {"calexp": coadd, "det": alg.detect_sources(coadd)}


class MergeCoaddDetections(Task):
    """Merge the peaks of all bands of one patch."""

    dimensions = ("tract", "patch")
    dets = Input("deepCoadd_det", ("tract", "patch", "band"), "table", multiple=True)
    merged = Output("deepCoadd_mergeDet", ("tract", "patch"), "table")

    def run_quantum(self, context: QuantumContext) -> Mapping[str, Any]:
        by_band = _by_band(context, "dets")
        id_offset = int(context.data_id["patch"]) * 100_000
        return {"merged": alg.merge_detections(by_band, id_offset=id_offset)}


class MeasureCoaddSources(Task):
    """Measure every merged detection on one band's coadd."""

    dimensions = ("tract", "patch", "band")
    calexp = Input("deepCoadd_calexp", ("tract", "patch", "band"), "image")
    merged = Input("deepCoadd_mergeDet", ("tract", "patch"), "table")
    meas = Output("deepCoadd_meas", ("tract", "patch", "band"), "table")

    def run(self, calexp: Image, merged: pa.Table) -> Mapping[str, Any]:
        return {"meas": alg.measure_sources(calexp, merged)}


class MergeCoaddMeasurements(Task):
    """Choose a reference band per object and merge the measurements of all bands."""

    dimensions = ("tract", "patch")
    meas = Input("deepCoadd_meas", ("tract", "patch", "band"), "table", multiple=True)
    ref = Output("deepCoadd_ref", ("tract", "patch"), "table")

    def run_quantum(self, context: QuantumContext) -> Mapping[str, Any]:
        return {"ref": alg.merge_measurements(_by_band(context, "meas"))}


def _by_band(context: QuantumContext, connection: str) -> dict[str, Any]:
    """The loaded inputs of a ``multiple=True`` per-band connection, keyed by band."""
    refs = context.refs(connection)
    objects = context.get(connection)
    return {str(r.data_id.full["band"]): o for r, o in zip(refs, objects, strict=True)}  # type: ignore[arg-type]


class ForcedPhotCoaddConfig(TaskConfig):
    half_size: int = 8


class ForcedPhotCoadd(Task):
    """Forced photometry at the reference positions on every calexp of the band, through cutouts."""

    dimensions = ("tract", "patch", "band")
    config_class = ForcedPhotCoaddConfig
    ref = Input("deepCoadd_ref", ("tract", "patch"), "table")
    calexps = Input("calexp", ("visit", "detector"), "image", multiple=True, deferred=True)
    forced = Output("deepCoadd_forced_src", ("tract", "patch", "band"), "table")

    def run_quantum(self, context: QuantumContext) -> Mapping[str, Any]:
        ref = context.get("ref")
        ra = np.asarray(ref.column("ra").to_numpy(zero_copy_only=False), dtype=float)
        dec = np.asarray(ref.column("dec").to_numpy(zero_copy_only=False), dtype=float)
        ids = np.asarray(ref.column("id").to_numpy(zero_copy_only=False))
        half = self.config.half_size  # type: ignore[attr-defined]
        per_visit = []
        for handle in context.handles("calexps"):  # type: ignore[union-attr]
            header = handle.get(parameters={"bbox": (0, 1, 0, 1)}).header
            shape = DETECTORS[int(handle.data_id["detector"])].shape
            boxes = alg.cutout_boxes(header, ra, dec, half, shape=shape)
            keep = [i for i, b in enumerate(boxes) if b[1] > b[0] and b[3] > b[2]]
            if not keep:
                continue
            images = context.get_cutouts(handle, [boxes[i] for i in keep]).images
            variances = context.get_cutouts(handle, [boxes[i] for i in keep], plane="variance").images
            positions = {"ra": ra[keep], "dec": dec[keep], "id": ids[keep]}
            table = alg.forced_photometry(images, positions, wcs_header=header, variances=variances)
            good = ~np.asarray(table.column("aperture_flag").to_numpy(zero_copy_only=False))
            per_visit.append(table.filter(pa.array(good)))
        return {"forced": _average_per_object(per_visit)}


def _average_per_object(tables: list[pa.Table]) -> pa.Table:
    """Inverse-variance mean flux per object over visits."""
    if not tables:
        return pa.table({"id": pa.array([], pa.int64()), "ra": pa.array([], pa.float64()),
                         "dec": pa.array([], pa.float64()), "flux": pa.array([], pa.float64()),
                         "flux_err": pa.array([], pa.float64()), "snr": pa.array([], pa.float64()),
                         "n_visits": pa.array([], pa.int64())})
    allt = pa.concat_tables(tables)
    ids = np.asarray(allt.column("id").to_numpy(zero_copy_only=False))
    flux = np.asarray(allt.column("flux").to_numpy(zero_copy_only=False), dtype=float)
    err = np.asarray(allt.column("flux_err").to_numpy(zero_copy_only=False), dtype=float)
    ra = np.asarray(allt.column("ra").to_numpy(zero_copy_only=False), dtype=float)
    dec = np.asarray(allt.column("dec").to_numpy(zero_copy_only=False), dtype=float)
    out: dict[str, list[Any]] = {k: [] for k in ("id", "ra", "dec", "flux", "flux_err", "snr", "n_visits")}
    for obj in np.unique(ids):
        sel = (ids == obj) & np.isfinite(flux) & np.isfinite(err) & (err > 0)
        if not sel.any():
            continue
        w = 1.0 / err[sel] ** 2
        mean = float(np.sum(w * flux[sel]) / np.sum(w))
        mean_err = float(np.sqrt(1.0 / np.sum(w)))
        out["id"].append(int(obj))
        out["ra"].append(float(ra[sel][0]))
        out["dec"].append(float(dec[sel][0]))
        out["flux"].append(mean)
        out["flux_err"].append(mean_err)
        out["snr"].append(mean / mean_err)
        out["n_visits"].append(int(sel.sum()))
    return pa.table(out)
