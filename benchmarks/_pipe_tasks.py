"""The one-task pipeline both systems run in ``compare_daf_butler.py`` (the skybutler side).

A module of its own (not ``__main__``) so that the quantum graph names a task class the
executor can import again. The daf_butler side is ``_daf_pipe_tasks.py``.
"""

from __future__ import annotations

from typing import Any

from skybutler.pipeline import Input, Output, Pipeline, Task

INPUT_TYPE = "bench_metadata"
OUTPUT_TYPE = "bench_pipe_out"


class BenchCopy(Task):
    """Per (visit, detector): read the small dict, write one number of it."""

    dimensions = ("visit", "detector")
    inp = Input(INPUT_TYPE, ("instrument", "visit", "detector"), "dict")
    out = Output(OUTPUT_TYPE, ("instrument", "visit", "detector"), "dict")

    def run(self, inp: dict[str, Any]) -> dict[str, Any]:
        return {"out": {"visit": inp["visit"]}}


def pipeline() -> Pipeline:
    return Pipeline([BenchCopy(label="bench_copy")], description="compare_daf_butler one-task pipeline")
