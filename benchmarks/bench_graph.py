"""Speed of quantum-graph building, graph files and per-quantum execution overhead (issue 3).

Usage::

    python benchmarks/bench_graph.py                          # 10,000 and 100,000 task-A quanta
    python benchmarks/bench_graph.py --quanta 10000 50000     # other sizes
    python benchmarks/bench_graph.py --profile 10000          # also a cProfile top-15 of one build
    python benchmarks/bench_graph.py --json out.json          # also write the raw figures

A two-task pipeline: ``bench_a`` per (visit, detector) reads ``raw`` (a tiny dict) and
writes ``a_out``; ``bench_b`` per visit reads every ``a_out`` of the visit
(``multiple=True``) and writes ``b_out``. The repository is SQLite plus local files
in a temporary directory, with ``N / 100`` visits x 100 detectors and one raw per
(visit, detector), put with ``put_many`` in batches of 5,000.

Each size runs in its own subprocess so that its peak RSS (``ru_maxrss``) is its own.
Figures: build time (quanta/s over all quanta, A and B; µs per quantum), graph file
write time and size, ``QuantumGraph.read_quantum`` of one quantum (median of 20),
peak RSS. Then ~200 trivial quanta (2 visits x 100 detectors, plus 2 per-visit quanta)
are run with ``execute_graph(..., processes=1)`` for the per-quantum overhead.

See benchmarks/RESULTS.md for figures on the project machine.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import io
import json
import math
import pstats
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _records import DETECTORS, hsc_records

from skybutler.pipeline import Input, Output, Task

BATCH = 5000
RAW_RUN = "bench/raw"
TARGET_RATE = 20_000  # quanta/s
TARGET_EXEC_MS = 10.0  # per trivial quantum, one process


# ----------------------------------------------------------------------------- tasks


class BenchA(Task):
    """Per (visit, detector): copy one number out of the raw."""

    dimensions = ("visit", "detector")
    raw = Input("raw", ("visit", "detector"), "dict")
    a_out = Output("a_out", ("visit", "detector"), "dict")

    def run(self, raw):
        return {"a_out": {"v": raw["v"]}}


class BenchB(Task):
    """Per visit: sum the outputs of task A."""

    dimensions = ("visit",)
    a_outs = Input("a_out", ("visit", "detector"), "dict", multiple=True)
    b_out = Output("b_out", ("visit",), "dict")

    def run(self, a_outs):
        return {"b_out": {"n": len(a_outs), "total": sum(a["v"] for a in a_outs)}}


def _pipeline():
    # Imported as the module ``bench_graph`` (not ``__main__``) so a graph's header names
    # task classes the executor can import again.
    import bench_graph

    from skybutler.pipeline import Pipeline

    return Pipeline([bench_graph.BenchA(label="bench_a"), bench_graph.BenchB(label="bench_b")],
                    description="bench_graph two-task pipeline")


# ----------------------------------------------------------------------------- repository




def _make_repo(root: Path, n: int) -> tuple[Any, float]:
    from skybutler import Butler

    butler = Butler.create(root)
    data_ids = hsc_records(butler, math.ceil(n / DETECTORS))[:n]
    butler.register_dataset_type("raw", ("visit", "detector"), "dict")
    t0 = time.perf_counter()
    for i in range(0, len(data_ids), BATCH):
        butler.put_many([({"v": v + d}, "raw", {"instrument": "HSC", "visit": v, "detector": d})
                         for v, d in data_ids[i:i + BATCH]], run=RAW_RUN)
    return butler, time.perf_counter() - t0


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


# ----------------------------------------------------------------------------- workers


def run_build_case(n: int, *, profile: bool) -> dict[str, Any]:
    from skybutler.pipeline import QuantumGraph, build_quantum_graph

    out: dict[str, Any] = {"n": n}
    with tempfile.TemporaryDirectory(prefix=f"skybutler-bench-graph-{n}-") as tmp:
        butler, put_s = _make_repo(Path(tmp) / "repo", n)
        out["put_many_s"] = put_s
        pipeline = _pipeline()
        gc.collect()
        out["rss_before_mb"] = _rss_mb()
        t0 = time.perf_counter()
        graph = build_quantum_graph(butler, pipeline, input_collections=[RAW_RUN], output_run="bench/out",
                                    force=True)
        build_s = time.perf_counter() - t0
        out["rss_peak_mb"] = _rss_mb()
        counts = graph.counts()
        total = sum(counts.values())
        out.update(counts=counts, total=total, build_s=build_s, rate=total / build_s,
                   us_per_quantum=1e6 * build_s / total)
        path = Path(tmp) / "graph.qg"
        t0 = time.perf_counter()
        graph.write(path)
        out["write_s"] = time.perf_counter() - t0
        out["file_mb"] = path.stat().st_size / 1e6
        ids = list(graph.quanta)
        samples = []
        for k in range(20):
            qid = ids[(k * 7919) % len(ids)]
            t0 = time.perf_counter()
            QuantumGraph.read_quantum(path, qid)
            samples.append(time.perf_counter() - t0)
        out["read_quantum_ms"] = statistics.median(samples) * 1e3
        out["rss_end_mb"] = _rss_mb()
        del graph
        gc.collect()
        if profile:
            prof = cProfile.Profile()
            prof.enable()
            build_quantum_graph(butler, pipeline, input_collections=[RAW_RUN], output_run="bench/out", force=True)
            prof.disable()
            s = io.StringIO()
            pstats.Stats(prof, stream=s).sort_stats("tottime").print_stats(15)
            out["profile"] = s.getvalue()
        butler.close()
    return out


def run_exec_case(n_visits: int = 2) -> dict[str, Any]:
    from skybutler.pipeline import build_quantum_graph, execute_graph

    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="skybutler-bench-exec-") as tmp:
        butler, _ = _make_repo(Path(tmp) / "repo", n_visits * DETECTORS)
        graph = build_quantum_graph(butler, _pipeline(), input_collections=[RAW_RUN], output_run="bench/exec")
        total = len(graph)
        t0 = time.perf_counter()
        report = execute_graph(butler, graph, processes=1)
        wall = time.perf_counter() - t0
        out.update(quanta=total, wall_s=wall, ms_per_quantum=1e3 * wall / total,
                   outcome=repr(report.counts()))
        butler.close()
    return out


# ----------------------------------------------------------------------------- driver


def _subprocess(args: list[str]) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"worker {args} failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quanta", type=int, nargs="+", default=[10_000, 100_000], help="task-A quanta per case")
    p.add_argument("--profile", type=int, default=None, help="also cProfile the build at this size")
    p.add_argument("--no-exec", action="store_true", help="skip the execution-overhead case")
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()

    if args.worker:
        kind, _, n = args.worker.partition(":")
        res = run_exec_case() if kind == "exec" else run_build_case(int(n), profile=kind == "profile")
        print(json.dumps(res))
        return

    from rich.console import Console
    from rich.table import Table

    console = Console(width=max(Console().width, 150))
    builds = []
    for n in args.quanta:
        console.print(f"[dim]building a graph of {n:,} task-A quanta...[/dim]")
        builds.append(_subprocess(["--worker", f"{'profile' if n == args.profile else 'build'}:{n}"]))
    if args.profile is not None and args.profile not in args.quanta:
        builds.append(_subprocess(["--worker", f"profile:{args.profile}"]))
    execution = None if args.no_exec else _subprocess(["--worker", "exec"])

    t = Table(title="Quantum graph build (SQLite, 2-task pipeline)")
    for col in ("task-A quanta", "all quanta", "build s", "quanta/s", "µs/quantum", "write s", "file MB",
                "read_quantum ms", "peak RSS MB", "RSS before MB", "put_many s"):
        t.add_column(col, justify="right")
    for b in builds:
        t.add_row(f"{b['n']:,}", f"{b['total']:,}", f"{b['build_s']:.2f}", f"{b['rate']:,.0f}",
                  f"{b['us_per_quantum']:.1f}", f"{b['write_s']:.2f}", f"{b['file_mb']:.1f}",
                  f"{b['read_quantum_ms']:.2f}", f"{b['rss_peak_mb']:.0f}", f"{b['rss_before_mb']:.0f}",
                  f"{b['put_many_s']:.1f}")
    console.print(t)
    rate_ok = all(b["rate"] >= TARGET_RATE for b in builds)
    console.print(f"target ≥ {TARGET_RATE:,} quanta/s: {'met' if rate_ok else 'MISSED'}")
    if len(builds) >= 2:
        small, big = builds[0], builds[-1]
        ok = big["us_per_quantum"] <= small["us_per_quantum"] * 1.05
        console.print(f"per-quantum cost at {big['n']:,} vs {small['n']:,}: "
                      f"{big['us_per_quantum']:.1f} vs {small['us_per_quantum']:.1f} µs "
                      f"({'met' if ok else 'MISSED'}, 5% tolerance)")
    if execution:
        e = execution
        console.print(f"execute_graph processes=1: {e['quanta']} quanta in {e['wall_s']:.2f} s = "
                      f"{e['ms_per_quantum']:.2f} ms/quantum (target ≤ {TARGET_EXEC_MS} ms: "
                      f"{'met' if e['ms_per_quantum'] <= TARGET_EXEC_MS else 'MISSED'}); {e['outcome']}")
    for b in builds:
        if "profile" in b:
            console.print(f"cProfile of the {b['n']:,} build (tottime):")
            console.print(b["profile"], markup=False, highlight=False)
    if args.json:
        args.json.write_text(json.dumps({"builds": builds, "execution": execution}, indent=2))


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    main()
