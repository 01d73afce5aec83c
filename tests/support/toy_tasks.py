"""Small tasks for pipeline, graph, executor and provenance tests.

``make_calexp`` (visit, detector) -> ``gather_visit`` (visit), and
``make_calexp`` -> ``make_warp`` (visit, tract, patch, through sky overlaps)
-> ``coadd`` (tract, patch, band; drops its brightest warp and reports it).
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import numpy as np

from skybutler.pipeline import Input, Output, PrerequisiteInput, Task, TaskConfig


class MakeCalexpConfig(TaskConfig):
    scale: float = 2.0
    fail_detector: int | None = None
    fail_while_exists: str | None = None
    kill_detector: int | None = None
    kill_while_exists: str | None = None
    allocate_bytes: int = 0


class MakeCalexp(Task):
    """Scale a raw level into a 4x4 image, minus the bias."""

    dimensions = ("visit", "detector")
    config_class = MakeCalexpConfig

    raw = Input("raw", ("visit", "detector"), "dict")
    bias = PrerequisiteInput("bias", ("detector",), "dict")
    calexp = Output("calexp", ("visit", "detector"), "array")

    def run(self, raw, bias):
        cfg = self.config
        self.log.info("level %s bias %s", raw["level"], bias["level"])
        broken = cfg.fail_detector is not None and raw["detector"] == cfg.fail_detector
        if broken and (cfg.fail_while_exists is None or Path(cfg.fail_while_exists).exists()):
            raise RuntimeError(f"detector {raw['detector']} is broken")
        if cfg.kill_detector is not None and raw["detector"] == cfg.kill_detector and (
                cfg.kill_while_exists is None or Path(cfg.kill_while_exists).exists()):
            os.kill(os.getpid(), signal.SIGKILL)
        if cfg.allocate_bytes:
            np.ones(cfg.allocate_bytes, dtype=np.uint8)
        print("printed by make_calexp")
        return {"calexp": np.full((4, 4), (raw["level"] - bias["level"]) * cfg.scale)}


class GatherVisit(Task):
    """Sum the calexps of one visit."""

    dimensions = ("visit",)
    calexps = Input("calexp", ("visit", "detector"), "array", multiple=True)
    summary = Output("visit_summary", ("visit",), "dict")

    def run(self, calexps):
        return {"summary": {"n": len(calexps), "total": float(sum(c.sum() for c in calexps))}}


class MakeWarp(Task):
    """Average the calexps of a visit that overlap a patch."""

    dimensions = ("visit", "tract", "patch")
    calexps = Input("calexp", ("visit", "detector"), "array", multiple=True, deferred=True)
    warp = Output("warp", ("visit", "tract", "patch"), "array")

    def run_quantum(self, context):
        handles = context.handles("calexps")
        patch = context.dimension_record("patch")
        assert patch["region"], "patch records carry regions"
        data = [h.get() for h in handles]
        self.log.info("warping %d calexps of detectors %s", len(data), [h.data_id["detector"] for h in handles])
        return {"warp": np.mean(data, axis=0) + context.data_id["visit"] % 10}


class PatchSummary(Task):
    """One output per (visit, patch) from a visit-level input: quanta only where they overlap."""

    dimensions = ("visit", "tract", "patch")
    summary = Input("visit_summary", ("visit",), "dict")
    patch_summary = Output("patch_summary", ("visit", "tract", "patch"), "dict")

    def run(self, summary):
        return {"patch_summary": dict(summary)}


class CoaddConfig(TaskConfig):
    drop_brightest: bool = True


class Coadd(Task):
    """Average the warps of a patch and band, dropping the brightest one."""

    dimensions = ("tract", "patch", "band")
    config_class = CoaddConfig
    warps = Input("warp", ("visit", "tract", "patch"), "array", multiple=True)
    coadd = Output("coadd", ("tract", "patch", "band"), "dict")

    def run_quantum(self, context):
        warps = context.get("warps")
        refs = context.refs("warps")
        keep = list(range(len(warps)))
        if self.config.drop_brightest and len(warps) > 1:
            keep.remove(int(np.argmax([w.mean() for w in warps])))
        context.report_used("warps", keep)
        return {"coadd": {"mean": float(np.mean([warps[i].mean() for i in keep])),
                          "visits": [refs[i].data_id["visit"] for i in keep]}}


class SplitVisit(Task):
    """Per visit, one output per detector (a multiple output)."""

    dimensions = ("visit",)
    calexps = Input("calexp", ("visit", "detector"), "array", multiple=True)
    parts = Output("part", ("visit", "detector"), "dict", multiple=True)

    def run_quantum(self, context):
        refs = context.refs("parts")
        return {"parts": [{"detector": r.data_id["detector"]} for r in refs]}


class NotATask:
    pass
