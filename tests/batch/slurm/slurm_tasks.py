"""The toy pipeline's ``make_calexp`` that misbehaves under Slurm on chosen visits, while a marker file exists.

On detector 0 of ``hog_visit``, while ``hog_while_exists`` exists, it holds ``hog_mb``
MiB for ``hold_s`` seconds (Slurm's memory sampling, once a second, sees it and kills
the job); on detector 0 of ``sleep_visit`` it writes the Slurm job id (``SLURM_JOB_ID``)
to ``report_dir/VISIT`` and sleeps while ``sleep_while_exists`` exists (a minute at
most), for a ``scancel`` from outside. Otherwise both do their ordinary work.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from support.toy_tasks import MakeCalexp, MakeCalexpConfig


class SlurmCalexpConfig(MakeCalexpConfig):
    hog_while_exists: str = ""
    sleep_while_exists: str = ""
    hog_visit: int | None = None
    hog_mb: int = 0
    hold_s: float = 4.0
    sleep_visit: int | None = None
    report_dir: str = ""


class SlurmCalexp(MakeCalexp):
    config_class = SlurmCalexpConfig

    def run(self, raw, bias):
        cfg = self.config
        hog, sleep = Path(cfg.hog_while_exists), Path(cfg.sleep_while_exists)
        if raw["detector"] == 0 and raw["visit"] == cfg.hog_visit and cfg.hog_while_exists and hog.exists():
            held = bytearray(cfg.hog_mb << 20)
            held[:: 4096] = b"x" * len(held[:: 4096])  # resident, not just reserved
            time.sleep(cfg.hold_s)
            del held
        elif raw["detector"] == 0 and raw["visit"] == cfg.sleep_visit and cfg.sleep_while_exists and sleep.exists():
            report = Path(cfg.report_dir) / str(raw["visit"])
            report.write_text(os.environ.get("SLURM_JOB_ID", ""))
            end = time.monotonic() + 60
            while sleep.exists() and time.monotonic() < end:
                time.sleep(0.1)
        return super().run(raw, bias)
