"""HSC-like dimension records shared by the benchmarks: ⌈N/100⌉ visits x 100 detectors."""

from __future__ import annotations

import datetime
from typing import Any

DETECTORS = 100


def hsc_records(butler: Any, n_visits: int) -> list[tuple[int, int]]:
    """Insert instrument, bands, filters, day_obs, detectors and visits (with regions).

    Returns the ``(visit, detector)`` pairs that have records.
    """
    butler.insert_dimension_records("instrument", [{"instrument": "HSC", "class_name": "HSC"}])
    butler.insert_dimension_records("band", [{"band": b} for b in "grizy"])
    butler.insert_dimension_records("physical_filter", [
        {"instrument": "HSC", "physical_filter": f"HSC-{b.upper()}", "band": b} for b in "grizy"])
    butler.insert_dimension_records("day_obs", [{"instrument": "HSC", "day_obs": 20260315 + i} for i in range(3)])
    butler.insert_dimension_records("detector", [
        {"instrument": "HSC", "detector": d, "name": f"{d // 10}_{d % 10}", "purpose": "SCIENCE"}
        for d in range(DETECTORS)])
    start = datetime.datetime(2026, 3, 15, 6, 0, 0)
    visits = []
    for i in range(n_visits):
        begin = start + datetime.timedelta(seconds=40 * i)
        # Pointings on a 10 x 20 grid, repeated: regions stay valid for any number of visits.
        ra, dec = 150.0 + 0.5 * (i % 10), 2.0 + 0.5 * ((i // 10) % 20)
        visits.append({
            "instrument": "HSC", "visit": 903334 + 2 * i, "physical_filter": f"HSC-{'GRIZY'[i % 5]}",
            "day_obs": 20260315 + i * 3 // max(n_visits, 1), "exposure_time": 30.0,
            "timespan_begin": begin, "timespan_end": begin + datetime.timedelta(seconds=30),
            "region": [(ra - 0.75, dec - 0.75), (ra + 0.75, dec - 0.75), (ra + 0.75, dec + 0.75),
                       (ra - 0.75, dec + 0.75)],
        })
    butler.insert_dimension_records("visit", visits)
    return [(v["visit"], d) for v in visits for d in range(DETECTORS)]
