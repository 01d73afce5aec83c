"""A small repository to build and run the toy pipelines of `support.toy_tasks` against."""

from __future__ import annotations

import datetime

from skybutler import CollectionType

from .records import DETECTORS, VISITS, insert_records

RAW_RUN = "HSC/raw/all"
CALIB_RUN = "HSC/calib/run1"
CALIB = "HSC/calib"
INPUTS = [RAW_RUN, CALIB]
# Two bias epochs: visits 903334, 903336 (06:00, 06:05) get the first, 903338, 903340 the second.
BIAS_SPLIT = datetime.datetime(2026, 3, 15, 6, 7)

PIPELINE_YAML = """
description: Toy pipeline for tests
tasks:
  make_calexp:
    class: support.toy_tasks:MakeCalexp
    config:
      scale: 3.0
  gather_visit: support.toy_tasks.GatherVisit
  make_warp: support.toy_tasks:MakeWarp
  coadd:
    class: support.toy_tasks:Coadd
subsets:
  single_frame: [make_calexp, gather_visit]
  coaddition:
    description: warps and coadds
    tasks: [make_warp, coadd]
"""


def fill_repository(butler) -> None:
    """Records, one raw per (visit, detector) and two bias epochs certified in a CALIBRATION collection."""
    insert_records(butler)
    butler.register_dataset_type("raw", ("visit", "detector"), "dict")
    butler.register_dataset_type("bias", ("detector",), "dict", is_calibration=True)
    butler.put_many([({"level": 10.0 + i, "visit": v, "detector": d}, "raw", {"instrument": "HSC", "visit": v,
                                                                               "detector": d})
                     for i, v in enumerate(VISITS) for d in DETECTORS], run=RAW_RUN)
    early = butler.put_many([({"level": 1.0, "epoch": 1}, "bias", {"instrument": "HSC", "detector": d})
                             for d in DETECTORS], run=CALIB_RUN)
    late = butler.put_many([({"level": 2.0, "epoch": 2}, "bias", {"instrument": "HSC", "detector": d})
                            for d in DETECTORS], run=CALIB_RUN + "b")
    butler.registry.register_collection(CALIB, CollectionType.CALIBRATION)
    butler.registry.certify(CALIB, early, datetime.datetime(2026, 3, 15, 5), BIAS_SPLIT)
    butler.registry.certify(CALIB, late, BIAS_SPLIT, datetime.datetime(2026, 3, 15, 8))
