"""Speed of batch submission (issue 8): plan, submission files, recorded rows; 10,000 and 100,000 quanta.

Usage::

    python benchmarks/bench_batch_submit.py                        # 10k (per visit, per quantum) and 100k (per visit)
    python benchmarks/bench_batch_submit.py --quanta 10000 --repeat 3
    python benchmarks/bench_batch_submit.py --profile visit:10000  # also a cProfile top-25 of that case
    python benchmarks/bench_batch_submit.py --json out.json        # also write the raw figures

A two-task pipeline: ``bench_a`` per (visit, detector) reads ``raw`` and writes
``a_out``; ``bench_b`` per visit reads every ``a_out`` of the visit and writes
``b_out``. The central repository is SQLite plus a local datastore in a temporary
directory with ``N / 100`` visits x 100 detectors (records with regions, as
benchmarks/_records.py makes them, and a ``visit_detector_region`` record per CCD) and
one raw per (visit, detector), whose dataset and
file rows are inserted in bulk (the files themselves are never read: no job runs).

Cases: ``visit`` clusters both tasks by visit (100 A quanta + 1 B quantum per job,
``N / 100`` jobs); ``quantum`` gives every quantum its own job (``N + N / 100`` jobs).
Each case runs in its own process on a fresh repository, timing the phases of
`skybutler.batch.api.submit` up to the engine (which is never started):

- ``plan``: `plan_submission` (campaign checks, quantum graph build, clustering), with
  the graph build and `cluster_graph` also timed on their own;
- ``prepare``: `prepare_run` (dataset types, task configurations, campaign and pipeline files);
- ``files``: `write_submission_files` (graph file, jobs.json, per job a manifest and a subset);
- ``record``: the submission, job, dependency and quantum rows (``api._record``).

Target: the whole submission of 10,000 quanta under 10 s; the per-quantum cost at
100,000 compared with 10,000.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import io
import json
import math
import os
import pstats
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from skybutler.pipeline import Input, Output, Task

RAW_RUN = "bench/raw"
TARGET_S = 10.0  # whole submission of 10,000 quanta
PHASES = ("plan", "prepare", "files", "record")


class BenchA(Task):
    """Per (visit, detector): copy one number out of the raw."""

    dimensions = ("visit", "detector")
    raw = Input("raw", ("visit", "detector"), "dict")
    a_out = Output("a_out", ("visit", "detector"), "dict")

    def run(self, raw):
        return {"a_out": {"v": raw["v"]}}


class BenchB(Task):
    """Per visit: count the outputs of task A."""

    dimensions = ("visit",)
    a_outs = Input("a_out", ("visit", "detector"), "dict", multiple=True)
    b_out = Output("b_out", ("visit",), "dict")

    def run(self, a_outs):
        return {"b_out": {"n": len(a_outs)}}


# ----------------------------------------------------------------------------- repository and campaign


def make_repo(root: Path, n: int) -> Any:
    """A central repository with ⌈n/100⌉ visits x 100 detectors and one raw (rows only) per pair."""
    from _records import DETECTORS, hsc_records

    from skybutler import Butler
    from skybutler.model import DataId, DatasetRef, new_id
    from skybutler.registry import FileRecord

    butler = Butler.create(root)
    pairs = hsc_records(butler, math.ceil(n / DETECTORS))[:n]
    # A CCD's sky region, as a real repository has one per (visit, detector): subsets copy them.
    butler.insert_dimension_records("visit_detector_region", [
        {"instrument": "HSC", "visit": v, "detector": d,
         "region": [(150.0 + 0.1 * (d % 10), 2.0 + 0.1 * (d // 10)), (150.1 + 0.1 * (d % 10), 2.0 + 0.1 * (d // 10)),
                    (150.1 + 0.1 * (d % 10), 2.1 + 0.1 * (d // 10)), (150.0 + 0.1 * (d % 10), 2.1 + 0.1 * (d // 10))]}
        for v, d in pairs])
    raw = butler.register_dataset_type("raw", ("visit", "detector"), "dict")
    registry = butler.registry
    registry.register_collection(RAW_RUN)
    refs, files = [], []
    for v, d in pairs:
        ref = DatasetRef(new_id(), raw, DataId({"instrument": "HSC", "visit": v, "detector": d}), RAW_RUN)
        refs.append(ref)
        files.append(FileRecord(ref.id, f"{RAW_RUN}/raw/raw_{v}_{d:03d}.json", 12, f"{v:08x}{d:024x}", "md5", "json"))
    with registry.transaction():
        registry.insert_datasets(refs, files)
    return butler


def write_campaign(directory: Path, case: str) -> Path:
    """The pipeline and campaign files for a case (``visit`` or ``quantum`` clustering)."""
    import yaml

    (directory / "bench_pipeline.yaml").write_text(yaml.safe_dump({
        "description": "bench_batch_submit two-task pipeline",
        "tasks": {"bench_a": {"class": "bench_batch_submit:BenchA"},
                  "bench_b": {"class": "bench_batch_submit:BenchB"}}}))
    clusters = [{"name": "per_visit", "tasks": ["bench_a", "bench_b"], "dimensions": ["visit"]}] \
        if case == "visit" else []
    path = directory / f"campaign_{case}.yaml"
    path.write_text(yaml.safe_dump({
        "campaign": f"bench_{case}", "pipeline": "bench_pipeline.yaml", "input_collections": [RAW_RUN],
        "variables": {"reqnum": 1, "attnum": 1}, "clustering": {"clusters": clusters},
        "submission_dir": str(directory / "submissions"),
    }, sort_keys=False))
    return path


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _dir_size(path: Path) -> tuple[int, int]:
    files = [p for p in path.rglob("*") if p.is_file()]
    return len(files), sum(p.stat().st_size for p in files)


# ----------------------------------------------------------------------------- worker


def run_case(case: str, n: int, *, profile: str | None) -> dict[str, Any]:
    """One submission of ``n`` A quanta in this process; phase times in seconds."""
    from skybutler.batch import api
    from skybutler.batch.campaign import Campaign, exclusion_where
    from skybutler.batch.clustering import cluster_graph
    from skybutler.batch.service import write_resolved_campaign
    from skybutler.batch.submit import campaign_butler, plan_submission, prepare_run, write_submission_files
    from skybutler.pipeline import build_quantum_graph

    out: dict[str, Any] = {"case": case, "n": n}
    prof = cProfile.Profile() if profile else None
    with tempfile.TemporaryDirectory(prefix=f"skybutler-bench-submit-{case}-{n}-") as tmp:
        directory = Path(tmp)
        t0 = time.perf_counter()
        butler = make_repo(directory / "repo", n)
        out["setup_s"] = time.perf_counter() - t0
        campaign = Campaign.from_file(write_campaign(directory, case))
        gc.collect()

        # The graph build and the clustering alone, for the split of `plan`.
        pipeline = campaign.load_pipeline()
        central = campaign_butler(butler, campaign)
        where, bind = exclusion_where(campaign)
        t0 = time.perf_counter()
        graph = build_quantum_graph(central, pipeline, input_collections=campaign.search_collections(),
                                    output_run=central.run or "", where=where, bind=bind)
        out["build_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        cluster_graph(graph, campaign.clustering, universe=butler.universe)
        out["cluster_s"] = time.perf_counter() - t0
        del graph, central
        gc.collect()

        def phase(name: str, fn: Any, *args: Any) -> Any:
            if prof is not None and profile == name:
                prof.enable()
            t, c = time.perf_counter(), time.process_time()
            try:
                return fn(*args)
            finally:
                out[f"{name}_s"] = time.perf_counter() - t
                out[f"{name}_cpu_s"] = time.process_time() - c
                if prof is not None and profile == name:
                    prof.disable()

        plan = phase("plan", plan_submission, butler, campaign)
        out.update(quanta=len(plan.graph), jobs=len(plan.jobs))
        phase("prepare", prepare_run, plan)
        writer = phase("files", write_submission_files, plan)
        write_resolved_campaign(plan.directory, campaign)
        phase("record", api._record, butler, plan, writer)
        out["total_s"] = sum(out[f"{k}_s"] for k in PHASES)
        out["total_cpu_s"] = sum(out[f"{k}_cpu_s"] for k in PHASES)
        out["us_per_quantum"] = 1e6 * out["total_s"] / out["quanta"]
        out["rss_peak_mb"] = _rss_mb()
        out["files"], size = _dir_size(plan.directory)
        out["dir_mb"] = size / 1e6
        subset = next((plan.directory / "jobs").iterdir()) / "subset.sqlite3"
        out["subset_kb"] = subset.stat().st_size / 1e3
        butler.close()
    if prof is not None:
        s = io.StringIO()
        pstats.Stats(prof, stream=s).sort_stats("tottime").print_stats(25)
        out["profile"] = s.getvalue()
    return out


# ----------------------------------------------------------------------------- driver


def _subprocess(args: list[str]) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"worker {args} failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    p.add_argument("--cases", nargs="+", default=["visit:10000", "quantum:10000", "visit:100000"],
                   help="CLUSTERING:N (clustering 'visit' or 'quantum', N task-A quanta)")
    p.add_argument("--repeat", type=int, default=1, help="runs of each case (ranges over runs)")
    p.add_argument("--profile", default=None, help="CLUSTERING:N[:PHASE] to cProfile (phase default: files)")
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()

    if args.worker:
        case, n, prof = (args.worker.split(":") + [""])[:3]
        print(json.dumps(run_case(case, int(n), profile=prof or None)))
        return

    from rich.console import Console
    from rich.table import Table

    console = Console(width=max(Console().width, 160))
    profiled = None
    if args.profile:
        case, n, *rest = args.profile.split(":")
        profiled = (f"{case}:{n}", rest[0] if rest else "files")
    runs = []
    for _ in range(args.repeat):
        for spec in args.cases:
            console.print(f"[dim]submission {spec}...[/dim]")
            worker = spec + (f":{profiled[1]}" if profiled and profiled[0] == spec else "")
            runs.append(_subprocess(["--worker", worker]))
    if profiled and profiled[0] not in args.cases:
        runs.append(_subprocess(["--worker", f"{profiled[0]}:{profiled[1]}"]))

    t = Table(title="Batch submission (SQLite central repository, 2-task pipeline; wall s / CPU s)")
    for col in ("clustering", "quanta", "jobs", "graph build", "clustering alone", "plan", "prepare",
                "files", "record", "total", "µs/quantum", "files written", "dir MB", "subset KB", "peak RSS MB"):
        t.add_column(col, justify="right")
    for r in runs:
        t.add_row(r["case"], f"{r['quanta']:,}", f"{r['jobs']:,}", f"{r['build_s']:.2f}", f"{r['cluster_s']:.2f}",
                  *(f"{r[f'{k}_s']:.2f} / {r[f'{k}_cpu_s']:.2f}" for k in (*PHASES, "total")),
                  f"{r['us_per_quantum']:.0f}", f"{r['files']:,}", f"{r['dir_mb']:.1f}",
                  f"{r['subset_kb']:.0f}", f"{r['rss_peak_mb']:.0f}")
    console.print(t)
    if os.path.exists("/proc/loadavg"):
        console.print(f"load average now: {Path('/proc/loadavg').read_text().split()[:3]}")
    for r in runs:
        n_jobs = r["jobs"]
        console.print(f"{r['case']}:{r['n']}: files {1e3 * r['files_s'] / n_jobs:.2f} ms/job, "
                      f"record {1e6 * r['record_s'] / r['quanta']:.1f} µs/quantum")
    small = [r for r in runs if r["quanta"] < 20_000]
    for r in small:
        console.print(f"target: {r['case']} {r['quanta']:,} quanta in {r['total_s']:.2f} s (< {TARGET_S:.0f} s: "
                      f"{'met' if r['total_s'] < TARGET_S else 'MISSED'})")
    big = [r for r in runs if r["quanta"] >= 20_000]
    for b in big:
        same = [r for r in small if r["case"] == b["case"]]
        if same:
            console.print(f"per-quantum cost {b['case']}: {b['us_per_quantum']:.0f} µs at {b['quanta']:,} vs "
                          f"{min(r['us_per_quantum'] for r in same):.0f}–{max(r['us_per_quantum'] for r in same):.0f}"
                          f" µs at {same[0]['quanta']:,}")
    for r in runs:
        if "profile" in r:
            console.print(f"cProfile of {r['case']}:{r['n']} (tottime):")
            console.print(r["profile"], markup=False, highlight=False)
    if args.json:
        args.json.write_text(json.dumps(runs, indent=2))


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    main()
