"""A task whose worker process dies on one detector, in a chosen way (for the executor's death reports)."""

from __future__ import annotations

import os
import signal

from skybutler.pipeline import Input, Output, Task, TaskConfig


class DieConfig(TaskConfig):
    detector: int = 1
    how: str = "SIGKILL"  # a signal name, "exit:N" for os._exit(N), "raise:MESSAGE" to log and raise MESSAGE


class Die(Task):
    """Copy a raw, except on ``detector``, where the process ends itself as ``how`` says."""

    dimensions = ("visit", "detector")
    config_class = DieConfig

    raw = Input("raw", ("visit", "detector"), "dict")
    copy = Output("raw_copy", ("visit", "detector"), "dict")

    def run(self, raw):
        cfg = self.config
        if raw["detector"] == cfg.detector:
            if cfg.how.startswith("raise:"):
                self.log.error("giving up: %s", cfg.how[6:])
                raise RuntimeError(cfg.how[6:])
            if cfg.how.startswith("exit:"):
                os._exit(int(cfg.how[5:]))
            os.kill(os.getpid(), getattr(signal, cfg.how))
        return {"copy": dict(raw)}
