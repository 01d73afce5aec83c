"""An ingest plugin for an imaginary one-filter camera, FAKECAM: loaded by dotted path and by entry point in tests.

It is the example of docs/ingest_plugins.md (keep the two alike), plus `write_fake_raw` to make its files.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
from astropy.io import fits

from skybutler.model import DatasetType
from skybutler.ops.plugins import IngestPlugin, footprint, observation_records


class FakeCamPlugin(IngestPlugin):
    """FAKECAM raws: one FITS file per detector, EXPNUM and CCDNUM in the header."""

    name = "fakecam"
    description = "FAKECAM raws (imaginary): EXPNUM, CCDNUM, FILTER, DATE-OBS; regions from the WCS"
    dataset_type = DatasetType("fake_raw", ("instrument", "exposure", "detector"), "image")
    metadata_keys = {"airmass": "AIRMASS", "seeing": "SEEING", "object": "OBJECT"}

    def data_id(self, header, path):
        band = header["FILTER"].strip()
        day_obs = int((datetime.fromisoformat(header["DATE-OBS"]) - timedelta(hours=12)).strftime("%Y%m%d"))
        return {"instrument": "FAKECAM", "exposure": int(header["EXPNUM"]), "visit": int(header["EXPNUM"]),
                "detector": int(header["CCDNUM"]), "physical_filter": f"FAKE-{band}", "band": band,
                "day_obs": day_obs}

    def records(self, header, path):
        values = self.data_id(header, path)
        begin = datetime.fromisoformat(header["DATE-OBS"]).replace(tzinfo=UTC)
        values.update(exposure_time=float(header["EXPTIME"]), timespan_begin=begin,
                      timespan_end=begin + timedelta(seconds=float(header["EXPTIME"])),
                      target_name=header.get("OBJECT"))
        return {
            "instrument": [{"instrument": "FAKECAM", "class_name": "FakeCam", "detector_max": 4}],
            "band": [{"band": values["band"]}],
            "physical_filter": [{"instrument": "FAKECAM", "physical_filter": values["physical_filter"],
                                 "band": values["band"]}],
            "detector": [{"instrument": "FAKECAM", "detector": values["detector"], "name": f"ccd{values['detector']}"}],
            **observation_records(values, footprint(header)),
        }


def write_fake_raw(path: Path, exposure: int, detector: int, *, band: str = "g", airmass: float = 1.2,
                   exptime: float = 30.0, ra: float = 10.0) -> Path:
    """Write a small FAKECAM raw: 8 x 16 pixels, detectors side by side on a TAN WCS."""
    header = fits.Header()
    header.update({"INSTRUME": "FAKECAM", "EXPNUM": exposure, "CCDNUM": detector, "FILTER": band,
                   "DATE-OBS": "2025-01-02T05:00:00", "EXPTIME": exptime, "AIRMASS": airmass, "OBJECT": "field1",
                   "CTYPE1": "RA---TAN", "CTYPE2": "DEC--TAN", "CRVAL1": ra, "CRVAL2": -5.0,
                   "CRPIX1": 8.5 - 16 * detector, "CRPIX2": 4.5, "CD1_1": -1e-4, "CD1_2": 0.0, "CD2_1": 0.0,
                   "CD2_2": 1e-4})
    fits.PrimaryHDU(np.zeros((8, 16), "f4"), header=header).writeto(path)
    return path
