"""The one-task pipeline of ``compare_daf_butler.py``, daf_butler side (needs ``lsst-pipe-base``).

The same work as ``_pipe_tasks.BenchCopy``: per (instrument, visit, detector), read the
small dict and write one number of it. Imports nothing from skybutler.
"""

from __future__ import annotations

from typing import Any

import lsst.pipe.base as pipe_base
from lsst.pipe.base import connectionTypes

INPUT_TYPE = "bench_metadata"
OUTPUT_TYPE = "bench_pipe_out"


class BenchCopyConnections(pipe_base.PipelineTaskConnections, dimensions=("instrument", "visit", "detector")):
    inp = connectionTypes.Input(name=INPUT_TYPE, storageClass="StructuredDataDict",
                   dimensions=("instrument", "visit", "detector"))
    out = connectionTypes.Output(name=OUTPUT_TYPE, storageClass="StructuredDataDict",
                    dimensions=("instrument", "visit", "detector"))


class BenchCopyConfig(pipe_base.PipelineTaskConfig, pipelineConnections=BenchCopyConnections):
    pass


class BenchCopyTask(pipe_base.PipelineTask):
    ConfigClass = BenchCopyConfig
    _DefaultName = "bench_copy"

    def run(self, inp: dict[str, Any]) -> pipe_base.Struct:
        return pipe_base.Struct(out={"visit": inp["visit"]})
