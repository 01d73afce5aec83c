"""What Slurm adds to a job: submission-to-running latency, per-job overhead, the demo's wall time (issue 13).

Usage::

    python benchmarks/bench_slurm.py                  # all three, on the cluster sinfo answers for
    python benchmarks/bench_slurm.py --jobs 20 --no-demo

Without a cluster answering, one is started with tests/support/slurm_cluster.py (as root:
munged, slurmdbd, slurmctld, slurmd on this host), shared as test sessions share it, and
stopped afterwards unless a test session still uses it.

1. **Latency**: ``--jobs`` trivial jobs (`support.engine_jobs.job`, no work) submitted one
   at a time to an idle node through the slurm engine: how long ``submit`` (Parsl's
   SlurmProvider writing the script and calling ``sbatch``) takes, how long until the
   engine sees the job RUNNING (polling at 50 ms), and until the job's own code starts
   (a fresh interpreter on the node: its time stamp in ``attempt_dir/times``).
2. **Per-job overhead**: the same trivial jobs, all submitted at once, through the
   slurm engine and the local engine (2 workers: the node's 2 cores); the figure is the
   wall time from the first submit to the last final report, per job. What Slurm
   adds = the difference.
3. **Demo**: ``skybutler demo`` (the DMTN-059 campaign, 20 jobs) through ``--engine
   slurm`` and ``--engine local``, whole wall time and the batch stage.

The machine is shared (2 cores, other people's tests and benchmarks): the load average
is printed before and after each part, and a wide min-max range means load.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
TESTS = HERE.parent / "tests"
sys.path.insert(0, str(TESTS))

from skybutler.batch.engines import EngineJob, EngineState, make_engine  # noqa: E402
from support import slurm_cluster  # noqa: E402
from support.engine_jobs import ENTRY, write_manifest  # noqa: E402

FINAL = {EngineState.EXITED, EngineState.CANCELLED, EngineState.LOST}


def load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def spread(values: list[float], unit: str = "s") -> str:
    return (f"median {statistics.median(values):.2f} {unit} (min {min(values):.2f}, max {max(values):.2f}, "
            f"n={len(values)})")


def slurm_engine(**settings):
    return make_engine("slurm", {"entry": ENTRY, "status_interval_s": 0.05,
                                 "worker_init": f"export PYTHONPATH={TESTS}${{PYTHONPATH:+:$PYTHONPATH}}", **settings})


def latency(root: Path, n: int) -> dict[str, list[float]]:
    """Trivial jobs one at a time: submit call, submit->RUNNING seen, submit->job code running."""
    figures: dict[str, list[float]] = {"sbatch": [], "running": [], "code": [], "final": []}
    engine = slurm_engine()
    try:
        for i in range(n):
            name = f"lat{i}"
            job = EngineJob(name, write_manifest(root / name / "manifest.json", then="exit:0"),
                            root / name / "attempt_1")
            t0 = time.time()
            engine.submit(job)
            figures["sbatch"].append(time.time() - t0)
            seen_running = None
            while True:
                states = {r.name: r for r in engine.poll()}
                report = states.get(name)
                if report is not None and report.state == EngineState.RUNNING and seen_running is None:
                    seen_running = time.time() - t0
                if report is not None and report.state in FINAL:
                    figures["final"].append(time.time() - t0)
                    break
                time.sleep(0.01)
            start = float((job.attempt_dir / "times").read_text().split()[0])
            figures["code"].append(start - t0)
            # A job shorter than the poll may go from pending to completed unseen as running.
            figures["running"].append(seen_running if seen_running is not None else figures["final"][-1])
    finally:
        engine.close()
    return figures


def throughput(root: Path, n: int, engine_name: str) -> float:
    """Wall time per job for n trivial jobs submitted at once (2 at a time on the 2 cores)."""
    engine = slurm_engine() if engine_name == "slurm" else make_engine("local", {"max_workers": 2, "entry": ENTRY})
    try:
        t0 = time.time()
        for i in range(n):
            name = f"{engine_name}{i}"
            engine.submit(EngineJob(name, write_manifest(root / name / "manifest.json", then="exit:0"),
                                    root / name / "attempt_1"))
        done = 0
        while done < n:
            done += sum(1 for r in engine.poll() if r.state in FINAL)
            time.sleep(0.01)
        return (time.time() - t0) / n
    finally:
        engine.close()


def demo(root: Path, engine: str) -> tuple[float, float]:
    from skybutler.demo.run import run_demo

    report = run_demo(root / f"demo-{engine}", engine=engine, jobs=2)
    failed = sum(n for per in report.executions.values() for s, n in per.items() if s != "succeeded")
    if failed:
        raise SystemExit(f"demo through {engine}: {failed} executions failed")
    return report.wall_time, report.stage_times.get("batch (plan, jobs, merge)", float("nan"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=10, help="trivial jobs per measurement")
    parser.add_argument("--no-demo", action="store_true", help="skip the demo comparison (minutes)")
    args = parser.parse_args()
    # Shared with test sessions as they share it (tests/support/slurm_cluster.py): started if none
    # answers, stopped by the last user.
    t0 = time.time()
    joined = slurm_cluster.join_session()
    if joined:
        os.environ.setdefault("SLURM_CONF", str(slurm_cluster.SESSION_DIR / "etc" / "slurm.conf"))
    print(f"cluster ready after {time.time() - t0:.1f} s (sinfo: node {slurm_cluster.node_state()})")
    root = Path(tempfile.mkdtemp(prefix="bench-slurm-"))
    rows = []
    try:
        print(f"load before: {load()}")
        lat = latency(root / "latency", args.jobs)
        print(f"latency ({args.jobs} trivial jobs, one at a time, idle node), load {load()}:")
        for key, what in (("sbatch", "submit call (script + sbatch)"), ("running", "submit -> RUNNING seen"),
                          ("code", "submit -> job code runs"), ("final", "submit -> final report")):
            print(f"  {what}: {spread(lat[key])}")
            rows.append(f"| slurm latency: {what} | {spread(lat[key])} |")
        per_slurm = throughput(root / "slurm", args.jobs * 2, "slurm")
        per_local = throughput(root / "local", args.jobs * 2, "local")
        line = (f"{per_slurm:.2f} s per job through Slurm vs {per_local:.2f} s local (2 at a time): "
                f"Slurm adds {per_slurm - per_local:.2f} s per job; load {load()}")
        print(f"per-job overhead ({args.jobs * 2} trivial jobs at once): {line}")
        rows.append(f"| per-job overhead, {args.jobs * 2} trivial jobs | {line} |")
        if not args.no_demo:
            for engine in ("slurm", "local"):
                wall, batch = demo(root, engine)
                line = f"wall {wall:.1f} s (batch stage {batch:.1f} s), load {load()}"
                print(f"demo --engine {engine}: {line}")
                rows.append(f"| skybutler demo --engine {engine} (DMTN-059, 20 jobs) | {line} |")
    finally:
        shutil.rmtree(root, ignore_errors=True)
        if joined:
            slurm_cluster.leave_session()
    print("\n| figure | value |\n|---|---|\n" + "\n".join(rows))


if __name__ == "__main__":
    main()
