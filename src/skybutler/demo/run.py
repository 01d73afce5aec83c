"""`skybutler demo`: make the data, build the graph, run the 8 steps, print the DMTN-059 style report."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from ..butler import Butler
from ..pipeline.builder import build_quantum_graph
from ..pipeline.pipeline import Pipeline
from . import algorithms as alg
from . import synthetic as syn
from .setup import DEFAULTS, create_demo_repository

STEPS = ("processCcd", "makeCoaddTempExp", "assembleCoadd", "detectCoaddSources", "mergeCoaddDetections",
         "measureCoaddSources", "mergeCoaddMeasurements", "forcedPhotCoadd")
OUTPUT_RUN = "demo/PROTO-0.1"


@dataclass
class DemoReport:
    """What the demo measured; `format_report` prints it the way DMTN-059 does."""

    root: str
    run: str
    executions: dict[str, dict[str, int]]
    coadd_files: list[str]
    wall_time: float
    stage_times: dict[str, float]
    flux: dict[str, dict[str, float]]
    graph_counts: dict[str, int]
    warps_used: dict[str, list[int]] = field(default_factory=dict)


def pipeline_path() -> str:
    return str(resources.files(__package__).joinpath("dmtn059.yaml"))


def run_demo(root: str | Path, *, jobs: int = 2, visits: int | None = None, progress: Any = None) -> DemoReport:
    """Run the whole demo in ``root`` (created; must not hold a repository)."""
    from ..pipeline.executor import execute_graph

    say = progress or (lambda _msg: None)
    start = time.perf_counter()
    stages: dict[str, float] = {}
    t = time.perf_counter()
    butler = create_demo_repository(root, visits=visits, progress=say)
    stages["make data + ingest"] = time.perf_counter() - t

    say("quantum graph")
    t = time.perf_counter()
    pipeline = Pipeline.from_file(pipeline_path())
    graph = build_quantum_graph(butler, pipeline, input_collections=[DEFAULTS], output_run=OUTPUT_RUN)
    graph_file = Path(root) / "dmtn059.qgraph"
    graph.write(graph_file)
    stages["quantum graph"] = time.perf_counter() - t

    say("executing")
    t = time.perf_counter()
    execute_graph(butler, graph, processes=jobs)
    stages["execution"] = time.perf_counter() - t
    wall = time.perf_counter() - start
    return collect_report(butler, str(root), graph.counts(), wall, stages)


def collect_report(butler: Butler, root: str, graph_counts: dict[str, int], wall: float,
                   stages: dict[str, float]) -> DemoReport:
    """Read the report back from the repository: executions, files, provenance, flux recovery."""
    from ..registry.provenance_sql import executions

    counts: dict[str, dict[str, int]] = {}
    for row in executions(butler.registry, run=OUTPUT_RUN):
        per = counts.setdefault(row["task_label"], {})
        per[row["status"]] = per.get(row["status"], 0) + 1
    coadds = []
    refs = list(butler.query_datasets("deepCoadd_calexp", collections=[OUTPUT_RUN]))
    files = butler.registry.get_files([r.id for r in refs])
    coadds = sorted(files[r.id].path for r in refs if r.id in files)
    sky = syn.make_sky(0)
    flux: dict[str, dict[str, float]] = {}
    for band in ("r", "i"):
        tables = [butler.get(r) for r in butler.query_datasets(
            "deepCoadd_forced_src", collections=[OUTPUT_RUN], where="band = :b", bind={"b": band})]
        if not tables:
            continue
        import pyarrow as pa

        merged = pa.concat_tables(tables)
        flux[band] = alg.flux_recovery(merged, sky, band=band)
    return DemoReport(root=root, run=OUTPUT_RUN, executions=counts, coadd_files=coadds, wall_time=wall,
                      stage_times=stages, flux=flux, graph_counts=graph_counts)


def format_report(report: DemoReport) -> Any:
    """A rich renderable with the DMTN-059 style report."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    steps = Table(title="Executions of each step (select modname, count(*) ... group by modname)")
    steps.add_column("step")
    steps.add_column("planned", justify="right")
    steps.add_column("succeeded", justify="right")
    steps.add_column("failed", justify="right")
    for step in STEPS:
        per = report.executions.get(step, {})
        steps.add_row(step, str(report.graph_counts.get(step, 0)), str(per.get("succeeded", 0)),
                      str(sum(v for k, v in per.items() if k != "succeeded")))
    files = Table(title=f"deepCoadd_calexp files of run {report.run} ({len(report.coadd_files)} rows)")
    files.add_column("path")
    for p in report.coadd_files:
        files.add_row(p)
    flux = Table(title="Forced photometry vs injected fluxes (isolated stars, S/N >= 20)")
    for c in ("band", "matched", "median ratio", "scatter"):
        flux.add_column(c, justify="right")
    for band, f in report.flux.items():
        flux.add_row(band, str(int(f["n_matched"])), f"{f['median_ratio']:.4f}", f"{f['scatter']:.4f}")
    timing = Text(f"Wall time: {report.wall_time:.1f} s (" + ", ".join(
        f"{k} {v:.1f} s" for k, v in report.stage_times.items()) + f")\nRepository: {report.root}/repo")
    return Group(steps, files, flux, timing)


def median_ratio_ok(report: DemoReport, tolerance: float = 0.03) -> bool:
    return all(abs(f["median_ratio"] - 1.0) < tolerance for f in report.flux.values()) and bool(report.flux)


