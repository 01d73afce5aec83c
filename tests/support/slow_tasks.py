"""The toy pipeline's ``make_calexp`` that takes its time, for tests that act on a running submission."""

from __future__ import annotations

import time
from pathlib import Path

from .toy_tasks import MakeCalexp, MakeCalexpConfig


class SlowCalexpConfig(MakeCalexpConfig):
    sleep_s: float = 0.0
    """Seconds each quantum sleeps before its work (while ``sleep_while_exists`` exists, when given)."""
    sleep_while_exists: str | None = None


class SlowCalexp(MakeCalexp):
    """`MakeCalexp` after a sleep; with a marker file, the sleep ends early once the marker is gone."""

    config_class = SlowCalexpConfig

    def run(self, raw, bias):
        cfg = self.config
        end = time.monotonic() + cfg.sleep_s
        while time.monotonic() < end:
            if cfg.sleep_while_exists is not None and not Path(cfg.sleep_while_exists).exists():
                break
            time.sleep(min(0.05, max(0.0, end - time.monotonic())))
        return super().run(raw, bias)
