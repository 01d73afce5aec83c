"""The DMTN-059 demo through the batch service (local engine) against the direct executor (issue 8).

Usage::

    python benchmarks/bench_batch_demo.py                  # 3 pairs, order alternating
    python benchmarks/bench_batch_demo.py --repeat 2 --jobs 2 --json out.json

Each run is `skybutler.demo.run.run_demo` in a fresh temporary directory, in this
process: ``engine="direct"`` (the single-machine executor, what ``skybutler pipeline
run`` does) and ``engine="local"`` (``batch submit`` on the local engine: jobs per
visit, per patch and band, per patch, staged in and out, merged back). The order
alternates between pairs so that a trend in the machine's load does not favour one.

Compared: the execution part. For the direct run, building the quantum graph plus
executing it; for the batch run, its one stage, which holds the same graph build plus
planning, submission files, the jobs and the merges. Making the data is left out
(it is the same for both). Target: batch no more than 1.5 x direct.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

TARGET_RATIO = 1.5
BATCH_STAGE = "batch (plan, jobs, merge)"


def run_once(engine: str, jobs: int) -> dict[str, Any]:
    """One demo in a fresh directory; its stage times (seconds) and job figures."""
    from skybutler.demo.run import run_demo

    with tempfile.TemporaryDirectory(prefix=f"skybutler-bench-demo-{engine}-") as tmp:
        t0, c0 = time.perf_counter(), time.process_time()
        report = run_demo(tmp, jobs=jobs, engine=engine)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    stages = dict(report.stage_times)
    # Both sides include building the graph: the batch stage builds it too.
    execution = stages["quantum graph"] + stages["execution"] if engine == "direct" else stages[BATCH_STAGE]
    ok = sum(per.get("succeeded", 0) for per in report.executions.values())
    return {"engine": engine, "execution_s": execution, "stages": stages, "wall_s": wall, "cpu_main_s": cpu,
            "succeeded": ok, "jobs": report.jobs.get("jobs"), "job_wall_mean": report.jobs.get("job_wall_mean"),
            "job_wall_max": report.jobs.get("job_wall_max"), "load": _load()}


def _load() -> float | None:
    try:
        return float(Path("/proc/loadavg").read_text().split()[0])
    except OSError:
        return None


def main() -> None:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    p.add_argument("--repeat", type=int, default=3, help="pairs of runs (direct and local)")
    p.add_argument("--jobs", type=int, default=2, help="worker processes (direct) / jobs at a time (local)")
    p.add_argument("--engine", default="local", help="batch engine to compare with direct (local or parsl)")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()

    runs: list[dict[str, Any]] = []
    for i in range(args.repeat):
        order = ["direct", args.engine] if i % 2 == 0 else [args.engine, "direct"]
        for engine in order:
            r = run_once(engine, args.jobs)
            runs.append(r)
            print(f"pair {i + 1}: {engine:6s} execution {r['execution_s']:6.2f} s  (whole demo {r['wall_s']:.2f} s, "
                  f"{r['succeeded']} executions succeeded, load {r['load']})", flush=True)
    direct = [r["execution_s"] for r in runs if r["engine"] == "direct"]
    batch = [r["execution_s"] for r in runs if r["engine"] != "direct"]
    ratios = [b / d for b, d in zip(batch, direct, strict=True)]
    print(f"direct: {min(direct):.2f}–{max(direct):.2f} s (median {statistics.median(direct):.2f})")
    print(f"{args.engine}:  {min(batch):.2f}–{max(batch):.2f} s (median {statistics.median(batch):.2f})")
    print(f"ratio {args.engine}/direct per pair: {', '.join(f'{x:.2f}' for x in ratios)}; "
          f"median {statistics.median(ratios):.2f} (target ≤ {TARGET_RATIO}: "
          f"{'met' if statistics.median(ratios) <= TARGET_RATIO else 'MISSED'})")
    for r in runs:
        if r["engine"] != "direct":
            stages = ", ".join(f"{k} {v:.2f}" for k, v in r["stages"].items())
            print(f"  {r['engine']}: {r['jobs']} jobs, job wall mean {r['job_wall_mean'] or 0:.2f} s, "
                  f"max {r['job_wall_max'] or 0:.2f} s; stages: {stages}")
        else:
            print(f"  direct: stages: {', '.join(f'{k} {v:.2f}' for k, v in r['stages'].items())}")
    if args.json:
        args.json.write_text(json.dumps(runs, indent=2))


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    main()
