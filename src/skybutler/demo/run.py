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
    jobs: dict[str, Any] = field(default_factory=dict)
    """Job-level figures of the batch submission (empty for the direct executor)."""


def pipeline_path() -> str:
    return str(resources.files(__package__).joinpath("dmtn059.yaml"))


DEMO_CAMPAIGN = "demo"


def campaign_text(*, engine: str = "local", jobs: int = 2) -> str:
    """The demo's campaign file: the DMTN-059 pipeline cut into jobs the way a production campaign would be.

    One job per visit (its CCDs and their warps), one per patch and band (coadd and
    detection), one per patch for the multi-band steps; ``jobs`` workers at a time.
    """
    import yaml

    settings: dict[str, Any] = {}  # slurm: the cluster decides how many jobs run at once
    if engine == "local":
        settings = {"max_workers": jobs}
    elif engine == "parsl":
        settings = {"executor": {"max_workers_per_node": jobs}}
    data = {
        "campaign": DEMO_CAMPAIGN,
        "pipeline": pipeline_path(),
        "input_collections": [DEFAULTS],
        "output_run": OUTPUT_RUN,
        "clustering": {"clusters": [
            {"name": "visit", "tasks": ["processCcd", "makeCoaddTempExp"], "dimensions": ["visit"]},
            {"name": "coadd", "tasks": ["assembleCoadd", "detectCoaddSources"], "dimensions": ["patch", "band"]},
            {"name": "multiband", "tasks": ["mergeCoaddDetections", "measureCoaddSources", "mergeCoaddMeasurements",
                                            "forcedPhotCoadd"], "dimensions": ["patch"]},
        ]},
        "qc": [{"pattern": "(?i)\\bwarning\\b", "severity": "warning"},
               {"pattern": "^Traceback", "severity": "error"}],
        "metadata": {"calexp": ["SKYLEVEL", "SEEING"], "deepCoadd_calexp": ["NINPUTS"]},
        "environment": ["HOSTNAME", "USER"],
        "engine": {"name": engine, "settings": settings},
    }
    return yaml.safe_dump(data, sort_keys=False)


def run_demo(root: str | Path, *, jobs: int = 2, visits: int | None = None, progress: Any = None,
             engine: str = "local") -> DemoReport:
    """Run the whole demo in ``root``: make the data, submit the DMTN-059 campaign, report.

    ``engine`` is ``"local"``, ``"parsl"`` or ``"slurm"`` (the batch service; slurm: one
    Slurm job per job, on the cluster ``sinfo`` answers for), or ``"direct"`` (the
    single-machine executor, `skybutler pipeline run`, kept for comparison). A directory
    holding an interrupted demo is resumed: the data is kept and the submission restarted.
    """
    if engine == "slurm":
        from ..batch.engines.slurm import check_cluster

        check_cluster()  # before minutes of making data for a cluster that is not there
    say = progress or (lambda _msg: None)
    start = time.perf_counter()
    stages: dict[str, float] = {}
    t = time.perf_counter()
    repo = Path(root) / "repo"
    if (repo / "skybutler.yaml").exists():
        say("resuming")
        butler = Butler(repo)
    else:
        butler = create_demo_repository(root, visits=visits, progress=say)
    stages["make data + ingest"] = time.perf_counter() - t
    if engine == "direct":
        from ..pipeline.executor import execute_graph

        say("quantum graph")
        t = time.perf_counter()
        pipeline = Pipeline.from_file(pipeline_path())
        graph = build_quantum_graph(butler, pipeline, input_collections=[DEFAULTS], output_run=OUTPUT_RUN)
        graph.write(Path(root) / "dmtn059.qgraph")
        stages["quantum graph"] = time.perf_counter() - t
        say("executing")
        t = time.perf_counter()
        execute_graph(butler, graph, processes=jobs)
        stages["execution"] = time.perf_counter() - t
        counts = graph.counts()
        jobs_info: dict[str, Any] = {}
    else:
        counts, jobs_info = _run_campaign(butler, Path(root), engine=engine, jobs=jobs, say=say, stages=stages)
    wall = time.perf_counter() - start
    report = collect_report(butler, str(root), counts, wall, stages)
    report.jobs = jobs_info
    return report


def _run_campaign(butler: Butler, root: Path, *, engine: str, jobs: int, say: Any,
                  stages: dict[str, float]) -> tuple[dict[str, int], dict[str, Any]]:
    """Submit the demo campaign (or restart the submission an interrupted demo left); job figures."""
    from ..batch import api
    from ..registry import batch_sql

    campaign_file = root / "dmtn059_campaign.yaml"
    if not campaign_file.exists():
        campaign_file.write_text(campaign_text(engine=engine, jobs=jobs), encoding="utf-8")
    t = time.perf_counter()
    name = None
    for row in batch_sql.list_submissions(butler.registry):
        if row["name"] and row.get("campaign") == DEMO_CAMPAIGN:
            name = row["name"]
    if name is None:
        say("submitting the DMTN-059 campaign")
        result = api.submit(butler, campaign_file)
        name = result.name
    else:
        previous = batch_sql.get_submission(butler.registry, name)
        if previous is not None and previous["state"] != "succeeded":
            say(f"restarting submission {name}")
            api.restart(butler, name)
    stages["batch (plan, jobs, merge)"] = time.perf_counter() - t
    found = batch_sql.get_submission(butler.registry, name)
    assert found is not None
    row = found
    job_rows = batch_sql.jobs(butler.registry, row["id"])
    walls = [j["wall_time"] for j in job_rows if j.get("wall_time") is not None]
    per_cluster: dict[str, int] = {}
    for j in job_rows:
        per_cluster[j["cluster"]] = per_cluster.get(j["cluster"], 0) + 1
    info = {"submission": name, "jobs": len(job_rows), "per_cluster": per_cluster,
            "states": {s: sum(1 for j in job_rows if j["state"] == s) for s in {j["state"] for j in job_rows}},
            "job_wall_mean": sum(walls) / len(walls) if walls else None, "job_wall_max": max(walls, default=None),
            "attempts": max((j["attempt"] or 1 for j in job_rows), default=1)}
    counts = {t: sum(c.values()) for t, c in batch_sql.progress(butler.registry, row["id"]).items()}
    return counts, info


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
    parts: list[Any] = [steps, files, flux]
    if report.jobs:
        jt = Table(title=f"Batch submission {report.jobs['submission']}: {report.jobs['jobs']} shared-nothing jobs")
        for c in ("cluster", "jobs"):
            jt.add_column(c, justify="right" if c == "jobs" else "left")
        for cluster, n in report.jobs["per_cluster"].items():
            jt.add_row(cluster, str(n))
        mean, top = report.jobs.get("job_wall_mean"), report.jobs.get("job_wall_max")
        if mean is not None:
            jt.caption = (f"job wall time mean {mean:.2f} s, max {top:.2f} s; states "
                          + ", ".join(f"{k} {v}" for k, v in sorted(report.jobs["states"].items()))
                          + f"; attempts up to {report.jobs['attempts']}")
        parts.append(jt)
    timing = Text(f"Wall time: {report.wall_time:.1f} s (" + ", ".join(
        f"{k} {v:.1f} s" for k, v in report.stage_times.items()) + f")\nRepository: {report.root}/repo")
    return Group(*parts, timing)


def median_ratio_ok(report: DemoReport, tolerance: float = 0.03) -> bool:
    return all(abs(f["median_ratio"] - 1.0) < tolerance for f in report.flux.values()) and bool(report.flux)


