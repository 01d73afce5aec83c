"""A small repository to build and run the toy pipelines of `support.toy_tasks` against."""

from __future__ import annotations

import datetime

import pytest

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


@pytest.fixture(scope="session")
def filled_repo_template(tmp_path_factory):
    """A filled repository made once per session; `repo` copies it (a copy takes ms, filling ~1 s)."""
    from skybutler import Butler

    root = tmp_path_factory.mktemp("template") / "repo"
    butler = Butler.create(root)
    fill_repository(butler)
    butler.close()  # the last connection closing checkpoints SQLite's WAL into the file
    return root


def copy_repository(template, dest):
    """A fresh butler on a copy of a repository directory (SQLite registry and files inside it)."""
    import shutil

    from skybutler import Butler

    shutil.copytree(template, dest)
    return Butler(dest)


@pytest.fixture
def repo(filled_repo_template, tmp_path):
    """A filled repository (SQLite and files under ``tmp_path``), private to the test."""
    butler = copy_repository(filled_repo_template, tmp_path / "repo")
    yield butler
    butler.close()


@pytest.fixture
def pipeline():
    """The toy pipeline of `PIPELINE_YAML`."""
    from skybutler.pipeline import Pipeline

    return Pipeline.from_yaml(PIPELINE_YAML, source="toy.yaml")
