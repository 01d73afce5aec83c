"""Quantum graphs of 10^4 to 10^6 quanta: build time, peak memory, file size, reading one quantum (issue 11).

Usage::

    python benchmarks/bench_graph_scale.py                           # 10k, 100k and 1M task-A quanta
    python benchmarks/bench_graph_scale.py --quanta 10000 100000     # other sizes
    python benchmarks/bench_graph_scale.py --mode memory             # build in memory, then write (the old path)
    python benchmarks/bench_graph_scale.py --keep /tmp/qg-repos      # keep (and reuse) the registries
    python benchmarks/bench_graph_scale.py --profile 100000          # cProfile top-20 of one streamed build

The pipeline is bench_graph's: ``bench_a`` per (visit, detector) reads ``raw`` and
writes ``a_out``; ``bench_b`` per visit gathers every ``a_out`` of the visit
(``multiple=True``). The registry (SQLite) has ⌈N/100⌉ visits x 100 detectors with
regions and one ``raw`` per (visit, detector), inserted as rows only with
``Registry.insert_datasets`` in batches (no files: graph building never reads them).

Each registry is made in its own subprocess and each build in another, so a build's
peak RSS (``ru_maxrss``) is its own. ``--mode stream`` (default) is
``QuantumGraphBuilder.write``: quanta go to the file as they are made; ``--mode memory``
is ``build()`` then ``QuantumGraph.write``. Figures: registry set-up time, build time
(file included; wall and CPU seconds, as the machine may be shared), quanta/s, µs per quantum, peak RSS, file size, one quantum read
(``QuantumGraph.read_quantum``, median of 50 in a fresh process, opening the file each
time) and one task's quanta streamed (`QuantumGraph.iter_quanta`).

Targets (issue 11): 1,000,000 quanta in ≤ 60 s, peak memory ≤ 2 GB, one quantum ≤ 1 ms.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import math
import pstats
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BATCH = 50_000
RAW_RUN = "bench/raw"
TARGET_S = 60.0
TARGET_RSS_MB = 2048
TARGET_READ_MS = 1.0


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _cpu_s() -> float:
    """CPU seconds of this process: on a shared machine, what a build costs apart from waiting for a core."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


# ----------------------------------------------------------------------------- workers


def make_registry(root: Path, n: int) -> dict[str, Any]:
    """A repository with ⌈n/100⌉ visits x 100 detectors and one raw row per pair."""
    from _records import DETECTORS, hsc_records

    from skybutler import Butler
    from skybutler.model import DataId, DatasetRef, DatasetType, new_dataset_id

    t0 = time.perf_counter()
    butler = Butler.create(root)
    pairs = hsc_records(butler, math.ceil(n / DETECTORS))[:n]
    t1 = time.perf_counter()
    butler.register_dataset_type("raw", ("visit", "detector"), "dict")
    registry = butler.registry
    registry.register_collection(RAW_RUN)
    dt: DatasetType = registry.get_dataset_type("raw")
    for i in range(0, len(pairs), BATCH):
        refs = [DatasetRef(new_dataset_id(), dt, DataId({"instrument": "HSC", "visit": v, "detector": d}), RAW_RUN)
                for v, d in pairs[i:i + BATCH]]
        registry.insert_datasets(refs)
    t2 = time.perf_counter()
    butler.close()
    return {"records_s": t1 - t0, "datasets_s": t2 - t1, "raws": len(pairs)}


def _pipeline() -> Any:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import bench_graph

    return bench_graph._pipeline()


def run_build(root: Path, graph_path: Path, mode: str, *, profile: bool = False) -> dict[str, Any]:
    from skybutler import Butler
    from skybutler.pipeline import QuantumGraphBuilder

    butler = Butler(root)
    pipeline = _pipeline()
    out: dict[str, Any] = {"rss_before_mb": _rss_mb()}
    prof = cProfile.Profile() if profile else None
    cpu0 = _cpu_s()
    t0 = time.perf_counter()
    if prof:
        prof.enable()
    builder = QuantumGraphBuilder(butler, pipeline, input_collections=[RAW_RUN], output_run="bench/out")
    if mode == "stream":
        header = builder.write(graph_path, force=True)
        counts = header["counts"]
    else:
        graph = builder.build(force=True)
        t_built = time.perf_counter()
        graph.write(graph_path)
        out["write_s"] = time.perf_counter() - t_built
        counts = graph.counts()
        del graph
    if prof:
        prof.disable()
    out["build_s"] = time.perf_counter() - t0
    out["build_cpu_s"] = _cpu_s() - cpu0
    out["rss_peak_mb"] = _rss_mb()
    out["counts"] = counts
    out["total"] = sum(counts.values())
    out["file_mb"] = graph_path.stat().st_size / 1e6
    out["timings"] = {k: round(v, 3) for k, v in builder.timings.items()}
    if prof:
        s = io.StringIO()
        pstats.Stats(prof, stream=s).sort_stats("tottime").print_stats(20)
        out["profile"] = s.getvalue()
    butler.close()
    return out


def run_read(graph_path: Path) -> dict[str, Any]:
    from skybutler.pipeline import QuantumGraph

    header = QuantumGraph.read_header(graph_path)
    labels = list(header["counts"])
    # Ids to look up, taken from the file's index without reading the quanta.
    ids = QuantumGraph.quantum_ids(graph_path)
    samples = []
    for k in range(50):
        qid = ids[(k * 7919) % len(ids)]
        t0 = time.perf_counter()
        QuantumGraph.read_quantum(graph_path, qid)
        samples.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    n = sum(1 for _ in QuantumGraph.iter_quanta(graph_path, tasks=[labels[-1]]))
    stream_s = time.perf_counter() - t0
    return {"read_quantum_ms": statistics.median(samples) * 1e3, "read_quantum_max_ms": max(samples) * 1e3,
            "stream_task": labels[-1], "stream_n": n, "stream_s": stream_s, "read_rss_mb": _rss_mb()}


# ----------------------------------------------------------------------------- driver


def _subprocess(args: list[str]) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"worker {args} failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    p.add_argument("--quanta", type=int, nargs="+", default=[10_000, 100_000, 1_000_000],
                   help="task-A quanta per case (task B adds 1 %%)")
    p.add_argument("--mode", choices=["stream", "memory"], default="stream")
    p.add_argument("--keep", type=Path, default=None, help="directory to keep registries in (reused when present)")
    p.add_argument("--profile", type=int, default=None, help="cProfile the build at this size")
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--worker", nargs="+", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()

    if args.worker:
        kind, *rest = args.worker
        if kind == "repo":
            res = make_registry(Path(rest[0]), int(rest[1]))
        elif kind == "build":
            res = run_build(Path(rest[0]), Path(rest[1]), rest[2], profile=rest[3] == "1")
        else:
            res = run_read(Path(rest[0]))
        print(json.dumps(res))
        return

    import os

    base = args.keep or Path(tempfile.mkdtemp(prefix="skybutler-bench-qg-"))
    base.mkdir(parents=True, exist_ok=True)
    load = os.getloadavg()[0]
    print(f"machine: {os.cpu_count()} cores, load average {load:.2f} at start (shared machine: figures are "
          f"under that load); mode {args.mode}", flush=True)
    rows = []
    try:
        for n in args.quanta:
            root = base / f"repo-{n}"
            setup: dict[str, Any] = {}
            if not (root / "skybutler.yaml").exists():
                shutil.rmtree(root, ignore_errors=True)
                print(f"  registry of {n:,} raws...", flush=True)
                setup = _subprocess(["--worker", "repo", str(root), str(n)])
            graph_path = base / f"graph-{n}.qg"
            print(f"  building a graph of {n:,} task-A quanta...", flush=True)
            build = _subprocess(["--worker", "build", str(root), str(graph_path), args.mode,
                                 "1" if n == args.profile else "0"])
            read = _subprocess(["--worker", "read", str(graph_path)])
            rows.append({"n": n, **setup, **build, **read, "load": os.getloadavg()[0]})
            graph_path.unlink(missing_ok=True)
            r = rows[-1]
            print(f"  {r['total']:,} quanta: build {r['build_s']:.1f} s ({r['build_cpu_s']:.1f} CPU s), {r['total'] / r['build_s']:,.0f} quanta/s, "
                  f"peak RSS {r['rss_peak_mb']:,.0f} MB, file {r['file_mb']:,.0f} MB, "
                  f"read one {r['read_quantum_ms']:.2f} ms", flush=True)
    finally:
        if args.keep is None:
            shutil.rmtree(base, ignore_errors=True)

    print()
    print(f"| task-A quanta | all quanta | registry set-up (records + raws) | build ({args.mode}, file included) "
          "| quanta/s | CPU s (µs/quantum) | peak RSS | file | read one quantum (median / max of 50) "
          "| stream one task | load |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        setup_s = (f"{r['records_s']:.1f} + {r['datasets_s']:.1f} s" if "records_s" in r else "reused")
        print(f"| {r['n']:,} | {r['total']:,} | {setup_s} | {r['build_s']:.1f} s | {r['total'] / r['build_s']:,.0f} "
              f"| {r['build_cpu_s']:.1f} ({1e6 * r['build_cpu_s'] / r['total']:.1f}) | {r['rss_peak_mb']:,.0f} MB | {r['file_mb']:,.0f} MB "
              f"| {r['read_quantum_ms']:.2f} / {r['read_quantum_max_ms']:.2f} ms "
              f"| {r['stream_n']:,} {r['stream_task']} in {r['stream_s']:.2f} s | {r['load']:.1f} |")
    big = [r for r in rows if r["total"] >= 1_000_000]
    for r in big:
        print(f"targets at {r['total']:,} quanta: build ≤ {TARGET_S:.0f} s: "
              f"{'met' if r['build_s'] <= TARGET_S else 'MISSED'} ({r['build_s']:.1f} s wall, "
              f"{r['build_cpu_s']:.1f} s CPU: {'met' if r['build_cpu_s'] <= TARGET_S else 'missed'} on a free core); "
              f"peak RSS ≤ {TARGET_RSS_MB} MB: {'met' if r['rss_peak_mb'] <= TARGET_RSS_MB else 'MISSED'} "
              f"({r['rss_peak_mb']:,.0f} MB); read one ≤ {TARGET_READ_MS} ms: "
              f"{'met' if r['read_quantum_ms'] <= TARGET_READ_MS else 'MISSED'} ({r['read_quantum_ms']:.2f} ms)")
    for r in rows:
        print(f"timings at {r['n']:,}: {r['timings']}")
        if "profile" in r:
            print(f"cProfile of the {r['n']:,} build (tottime):")
            print(r["profile"])
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    main()
