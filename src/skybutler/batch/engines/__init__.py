"""Engines that run jobs: ``local`` (a process per job, the default) and ``parsl`` (clusters)."""

from .base import ENGINES, Engine, EngineJob, EngineState, JobReport, make_engine

__all__ = ["ENGINES", "Engine", "EngineJob", "EngineState", "JobReport", "make_engine"]
