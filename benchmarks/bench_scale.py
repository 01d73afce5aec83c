"""A million datasets in one repository: does the per-item cost stay flat as it grows?

Usage::

    python benchmarks/bench_scale.py                                   # N = 10k, 100k, 1M on SQLite and PostgreSQL
    python benchmarks/bench_scale.py --n 10000 100000 --backend sqlite --plot benchmarks/scale.png
    python benchmarks/bench_scale.py --replot a.json b.json --plot benchmarks/scale.png   # plot saved figures

One repository per backend (SQLite file, or a throwaway PostgreSQL schema dropped at the
end), local files, HSC-like data ids: ``max(N) / 100`` visits (with regions, inserted
through the bulk dimension-record path) x 100 detectors. The repository grows by
``put_many`` in batches of ``--batch`` (small dicts as JSON, md5 checksums on, files
named per visit directory as an operator would configure them) into one run. Each
backend runs in its own process, one after the other. At each N it measures:

- **put_many**: per-item cost of the batches of the last 10,000 datasets before N
  (median batch, and their mean), with the floor beside it: bare file creation
  (``open 'xb'``, write, close) of 2,000 files in the same file system, same minute.
- **query one visit** (100 refs): in this process (median and worst of 30 calls over
  different visits), and in 3 fresh processes (first call, and median of 20 more);
  the figure judged is the worst of all of these.
- **find one** dataset: median and worst of 300 finds, and the first find of each fresh process.
- **query all N as Arrow** (``query_datasets(...).to_arrow()``) in a fresh process: time
  and peak RSS of the process (and the growth of RSS during the call), and, when the
  result offers one, its streaming Arrow method (any public method other than
  ``to_arrow`` whose name has ``arrow`` or ``batch`` in it) in another fresh process.
- **remove run**: at the largest N the main run itself; below it, a run of N datasets
  put beside the main run for this purpose. Split into the registry transaction (rows,
  and the list of files written before the commit) and the file deletion, with the bare
  ``unlink`` rate of 2,000 files as the floor.

With ``--fill rows`` (for a machine where writing a million files takes hours) the
repository grows between sizes by registry rows only (the dataset and file rows put_many
would write, in the same batches, without the files), and the last 10,000 datasets before
each N are put by ``put_many`` with their files: the put_many figure is still measured
with files, in a repository holding N datasets. The removal at the largest N then deletes
N rows but only the files that exist (30,000 for three sizes); its file part per file is
the one measured at the smaller sizes, whose runs are all real files.

Figures go to ``--json`` (rewritten after every N, so a run cut short keeps what it
measured) and, with ``--plot``, to a PNG of per-item cost against N (matplotlib, extra
``bench``). The 1-minute load average is recorded at every N: the machine is shared.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _records import DETECTORS, MethodTimer, hsc_records

DEFAULT_PG = "postgresql://postgres@127.0.0.1:5432/test"
DATASET_TYPE = "bench_metadata"
RUN = "scale/main"
WINDOW = 10_000
TEMPLATE = "{run}/{dataset_type}/{instrument}/{visit:08d}/{dataset_type}_{visit:08d}_{detector:03d}"
FRESH = 3

# Goals of issue 11 (per call or per N), for the table.
GOALS = {"put_many_flat": 1.3, "query_visit_ms": 5.0, "find_ms": 1.0, "arrow_s": 2.0, "arrow_mb": 1024.0,
         "remove_s": 60.0}


def _rss_mb() -> float:
    """Peak RSS of this process in MB.

    ``VmHWM`` where Linux gives it: ``ru_maxrss`` survives ``exec``, so a fresh process
    would report its parent's RSS at the fork as its own peak.
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _load() -> float:
    return os.getloadavg()[0]


def _obj(v: int, d: int) -> dict[str, Any]:
    return {"visit": v, "detector": d, "zero_point": 27.0 + d / 1000, "ok": True}


def _items(pairs: list[tuple[int, int]]) -> list[tuple[Any, str, dict[str, Any]]]:
    return [(_obj(v, d), DATASET_TYPE, {"instrument": "HSC", "visit": v, "detector": d}) for v, d in pairs]


def file_floor(directory: Path, n: int = 2_000) -> dict[str, float]:
    """µs per bare file creation and per unlink in ``directory``'s file system, nothing else."""
    bare = directory / f"bare-{uuid.uuid4().hex[:8]}"
    bare.mkdir()
    t0 = time.perf_counter()
    for i in range(n):
        with open(bare / f"f{i}", "xb") as f:
            f.write(b"x" * 80)
    create = time.perf_counter() - t0
    t0 = time.perf_counter()
    for i in range(n):
        os.unlink(bare / f"f{i}")
    unlink = time.perf_counter() - t0
    bare.rmdir()
    return {"create_us": 1e6 * create / n, "unlink_us": 1e6 * unlink / n}


# --------------------------------------------------------------------------- fresh processes


def child(root: str, kind: str, visit: int) -> dict[str, Any]:
    """One fresh process on the repository: ``visit`` (one-visit query + find), ``arrow`` or ``stream``."""
    from skybutler import Butler

    butler = Butler(root)
    try:
        if kind == "visit":
            samples = []
            for _ in range(21):
                t0 = time.perf_counter()
                refs = list(butler.query_datasets(DATASET_TYPE, collections=[RUN], where=f"visit = {visit}"))
                samples.append(time.perf_counter() - t0)
            assert len(refs) == DETECTORS, len(refs)
            t0 = time.perf_counter()
            ref = butler.find_dataset(DATASET_TYPE, instrument="HSC", visit=visit, detector=7, collections=[RUN])
            find_first = time.perf_counter() - t0
            assert ref is not None
            return {"first_ms": samples[0] * 1e3, "median_ms": statistics.median(samples[1:]) * 1e3,
                    "find_first_ms": find_first * 1e3}
        import pyarrow as pa

        # Imports and connections first, so the RSS growth below is the query's own.
        butler.query_datasets(DATASET_TYPE, collections=[RUN], where=f"visit = {visit}").to_arrow()
        gc.collect()
        base = _rss_mb()
        results = butler.query_datasets(DATASET_TYPE, collections=[RUN])
        t0 = time.perf_counter()
        if kind == "arrow":
            rows = results.to_arrow().num_rows
            method = "to_arrow"
        else:
            names = [n for n in dir(results) if not n.startswith("_") and n not in ("to_arrow", "to_pandas")
                     and ("arrow" in n or "batch" in n) and callable(getattr(results, n))]
            if not names:
                return {"method": None}
            method = names[0]
            out = getattr(results, method)()
            if isinstance(out, pa.Table):
                rows = out.num_rows
            else:
                if hasattr(out, "read_next_batch") and not hasattr(out, "__iter__"):
                    out = iter(out.read_next_batch, None)
                rows = sum(b.num_rows for b in out)
        seconds = time.perf_counter() - t0
        return {"method": method, "rows": rows, "seconds": seconds, "peak_rss_mb": _rss_mb(),
                "rss_growth_mb": _rss_mb() - base, "arrow_pool_peak_mb": pa.default_memory_pool().max_memory() / 2**20}
    finally:
        butler.close()


def run_child(root: Path, kind: str, visit: int) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, __file__, "--child", str(root), kind, str(visit)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        return {"error": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"exit {proc.returncode}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------- one backend


def timed_remove(butler: Any, run: str) -> dict[str, float]:
    """Remove ``run``; total seconds and the registry / file-list / after-commit (file deletion) parts."""
    timers = [MethodTimer(butler.registry, "remove_run"), MethodTimer(butler.datastore, "record_removal")]
    try:
        gc.collect()
        t0 = time.perf_counter()
        counts = butler.remove_runs([run])
        total = time.perf_counter() - t0
    finally:
        for t in timers:
            t.restore()
    # Files are deleted by several threads: their part is the wall time after the commit.
    return {"n": counts[run], "seconds": total, "rows_s": timers[0].seconds, "list_s": timers[1].seconds,
            "files_s": total - timers[0].seconds - timers[1].seconds}


def put_batches(butler: Any, pairs: list[tuple[int, int]], batch: int) -> list[float]:
    """put_many ``pairs`` in batches; the µs per item of each batch."""
    out = []
    for i in range(0, len(pairs), batch):
        items = _items(pairs[i:i + batch])
        t0 = time.perf_counter()
        butler.put_many(items)
        out.append(1e6 * (time.perf_counter() - t0) / len(items))
    return out


def fill_rows(butler: Any, pairs: list[tuple[int, int]], batch: int) -> float:
    """Register ``pairs`` in RUN as rows only (dataset + file record, no file); µs per dataset.

    For ``--fill rows``: what a repository of N datasets looks like to the registry, without
    writing the files of all N (see the module docstring).
    """
    from skybutler import DataId, DatasetRef
    from skybutler.model import new_dataset_id
    from skybutler.registry import FileRecord

    dt = butler.registry.get_dataset_type(DATASET_TYPE)
    t0 = time.perf_counter()
    for i in range(0, len(pairs), batch):
        refs = [DatasetRef(new_dataset_id(), dt, DataId({"instrument": "HSC", "visit": v, "detector": d}), RUN)
                for v, d in pairs[i:i + batch]]
        files = [FileRecord(r.id, f"scale%2Fmain/{DATASET_TYPE}/HSC/{v:08d}/{DATASET_TYPE}_{v:08d}_{d:03d}.json",
                            66, "0" * 32, "md5", "json") for r, (v, d) in zip(refs, pairs[i:i + batch], strict=True)]
        butler.registry.insert_datasets(refs, files, register_runs=True)
    return 1e6 * (time.perf_counter() - t0) / max(len(pairs), 1)


def run_backend(backend: str, sizes: list[int], *, pg_url: str, batch: int, workdir: Path,
                out: Path, fill: str, window_n: int = WINDOW) -> dict[str, Any]:
    from skybutler import Butler

    tmp = Path(tempfile.mkdtemp(prefix=f"skybutler-scale-{backend}-", dir=workdir))
    namespace = f"scale_{uuid.uuid4().hex[:12]}" if backend == "postgresql" else None
    result: dict[str, Any] = {"backend": backend, "batch": batch, "fill": fill, "window": window_n, "host": platform.node(), "python": sys.version.split()[0],
                              "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()), "points": []}
    butler = None
    try:
        config = {"templates": {"dataset_types": {DATASET_TYPE: TEMPLATE}}}
        butler = Butler.create(tmp / "repo", registry=pg_url if namespace else None, namespace=namespace,
                               config=config)
        n_max = max(sizes)
        t0 = time.perf_counter()
        pairs = hsc_records(butler, math.ceil(n_max / DETECTORS))[:n_max]
        result["records_s"] = time.perf_counter() - t0
        print(f"[{backend}] {math.ceil(n_max / DETECTORS):,} visits inserted in {result['records_s']:.1f} s",
              file=sys.stderr, flush=True)
        butler.register_dataset_type(DATASET_TYPE, ["instrument", "visit", "detector"], "dict")
        main = butler.with_run(RUN)
        visits = sorted({v for v, _ in pairs})
        done = real_files = 0
        all_batches: list[float] = []
        for n in sorted(sizes):
            point: dict[str, Any] = {"n": n}
            real_from = done if fill == "put_many" else max(done, n - window_n)
            if real_from > done:
                point["fill_rows_us"] = fill_rows(butler, pairs[done:real_from], batch)
            t_seg = time.perf_counter()
            all_batches += put_batches(main, pairs[real_from:n], batch)
            seg_s = time.perf_counter() - t_seg
            real_files += n - real_from
            window = all_batches[-max(1, window_n // batch):]
            point.update({"load_put": _load(), "put_many_segment_us": 1e6 * seg_s / (n - real_from),
                          "put_many_us": statistics.median(window),
                          "put_many_window_mean_us": statistics.fmean(window), "real_files": real_files})
            done = n
            point.update(file_floor(tmp))
            print(f"[{backend}] N={n:,}: put_many {point['put_many_us']:.0f} µs/item (floor "
                  f"{point['create_us']:.0f} µs/file), load {point['load_put']:.1f}", file=sys.stderr, flush=True)

            # reads, in this process
            own_visits = [v for v in visits if v <= pairs[n - 1][0]]
            samples = []
            for i in range(33):
                v = own_visits[(i * 7919) % len(own_visits)]
                t0 = time.perf_counter()
                refs = list(main.query_datasets(DATASET_TYPE, collections=[RUN], where=f"visit = {v}"))
                samples.append(time.perf_counter() - t0)
                assert len(refs) == DETECTORS
            point["query_visit_ms"] = statistics.median(samples[3:]) * 1e3
            point["query_visit_max_ms"] = max(samples[3:]) * 1e3
            samples = []
            for i in range(310):
                v, d = pairs[(i * 104729) % n]
                t0 = time.perf_counter()
                ref = main.find_dataset(DATASET_TYPE, instrument="HSC", visit=v, detector=d, collections=[RUN])
                samples.append(time.perf_counter() - t0)
                assert ref is not None
            point["find_ms"] = statistics.median(samples[10:]) * 1e3
            point["find_max_ms"] = max(samples[10:]) * 1e3

            # fresh processes
            root = tmp / "repo"
            fresh = [run_child(root, "visit", own_visits[(k * 31 + len(own_visits) // 2) % len(own_visits)])
                     for k in range(FRESH)]
            point["fresh"] = fresh
            ok = [f for f in fresh if "error" not in f]
            point["query_visit_worst_ms"] = max([point["query_visit_max_ms"]] + [f["first_ms"] for f in ok]
                                                + [f["median_ms"] for f in ok])
            point["find_worst_ms"] = max([point["find_max_ms"]] + [f["find_first_ms"] for f in ok])
            point["load_read"] = _load()
            point["arrow"] = run_child(root, "arrow", own_visits[0])
            point["stream"] = run_child(root, "stream", own_visits[0])
            a = point["arrow"]
            print(f"[{backend}] N={n:,}: one visit {point['query_visit_ms']:.2f} ms (worst "
                  f"{point['query_visit_worst_ms']:.2f}), find {point['find_ms']:.3f} ms (worst "
                  f"{point['find_worst_ms']:.2f}), Arrow {a.get('seconds', float('nan')):.2f} s "
                  f"{a.get('peak_rss_mb', float('nan')):.0f} MB peak RSS, stream {point['stream']}",
                  file=sys.stderr, flush=True)

            # remove a run of N datasets (the main run itself at the largest N)
            if n == n_max:
                target = RUN
            else:
                target = f"scale/remove-{n}"
                put_batches(butler.with_run(target), pairs[:n], batch)
            point["load_remove"] = _load()
            floor = file_floor(tmp)
            point["unlink_floor_us"] = floor["unlink_us"]
            point["remove"] = timed_remove(butler, target) | {"real_files": real_files if target == RUN else n}
            r = point["remove"]
            print(f"[{backend}] N={n:,}: remove run {r['seconds']:.1f} s (rows {r['rows_s']:.1f}, list "
                  f"{r['list_s']:.1f}, files {r['files_s']:.1f}; unlink floor {floor['unlink_us']:.0f} µs/file), "
                  f"load {_load():.1f}", file=sys.stderr, flush=True)
            result["points"].append(point)
            result["peak_rss_mb"] = _rss_mb()
            out.write_text(json.dumps(result, indent=1))
        return result
    finally:
        if butler is not None:
            butler.close()
        if namespace is not None:
            import sqlalchemy as sa

            from skybutler.registry._db import make_engine, normalise_url

            engine = make_engine(normalise_url(pg_url))
            with engine.begin() as conn:
                conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{namespace}" CASCADE'))
            engine.dispose()
        shutil.rmtree(tmp, ignore_errors=True)


# --------------------------------------------------------------------------- report and plot


def _flat(points: list[dict[str, Any]], key: str) -> float:
    return points[-1][key] / points[0][key]


def report(results: list[dict[str, Any]]) -> None:
    for res in results:
        pts = res["points"]
        if not pts:
            continue
        print(f"\n{res['backend']} (started {res['started']}, batch {res['batch']}, "
              f"visit records inserted in {res.get('records_s', 0):.1f} s)")
        head = f"{'N':>10} {'put_many µs':>12} {'floor µs':>9} {'visit ms':>9} {'worst':>7} {'find ms':>8} " \
               f"{'worst':>7} {'Arrow s':>8} {'RSS MB':>7} {'+MB':>6} {'stream s':>9} {'remove s':>9} " \
               f"{'rows':>6} {'files':>6} {'load':>10}"
        print(head)
        for p in pts:
            a, s, r = p["arrow"], p["stream"], p["remove"]
            print(f"{p['n']:>10,} {p['put_many_us']:>12.0f} {p['create_us']:>9.0f} {p['query_visit_ms']:>9.2f} "
                  f"{p['query_visit_worst_ms']:>7.2f} {p['find_ms']:>8.3f} {p['find_worst_ms']:>7.2f} "
                  f"{a.get('seconds', float('nan')):>8.2f} {a.get('peak_rss_mb', float('nan')):>7.0f} "
                  f"{a.get('rss_growth_mb', float('nan')):>6.0f} "
                  f"{s.get('seconds', float('nan')):>9.2f} {r['seconds']:>9.1f} {r['rows_s']:>6.1f} "
                  f"{r['files_s']:>6.1f} {p['load_put']:>4.1f}/{p['load_remove']:.1f}")
        if len(pts) > 1:
            print(f"put_many per item at {pts[-1]['n']:,} / at {pts[0]['n']:,}: {_flat(pts, 'put_many_us'):.2f} "
                  f"(goal ≤ {GOALS['put_many_flat']}); bare file creation {_flat(pts, 'create_us'):.2f}")
        stream = pts[-1]["stream"]
        print(f"streaming Arrow method: {stream.get('method') or 'none offered'}")


def plot(results: list[dict[str, Any]], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 5.2))
    styles = {"sqlite": "-", "postgresql": "--"}
    series: list[tuple[str, str, Callable[[dict[str, Any]], float | None]]] = [
        ("put_many", "C0", lambda p: p["put_many_us"]),
        ("bare file creation (floor)", "C7", lambda p: p["create_us"]),
        ("query all as Arrow", "C2", lambda p: 1e6 * p["arrow"]["seconds"] / p["n"] if "seconds" in p["arrow"]
         else None),
        ("remove run", "C3", lambda p: 1e6 * p["remove"]["seconds"] / p["remove"]["n"]),
        # Per file that existed: with --fill rows the largest run is mostly rows without files.
        ("remove run: file part, per file", "C1",
         lambda p: 1e6 * p["remove"]["files_s"] / p["remove"].get("real_files", p["remove"]["n"])),
    ]
    for res in results:
        pts, ls = res["points"], styles.get(res["backend"], ":")
        ns = [p["n"] for p in pts]
        for label, color, fn in series:
            ys = [fn(p) for p in pts]
            if any(y is not None for y in ys):
                ax1.plot(ns, ys, ls, color=color, marker="o", label=f"{label} ({res['backend']})")
        for label, color, key in (("query one visit, worst", "C4", "query_visit_worst_ms"),
                                  ("query one visit, median", "C9", "query_visit_ms"),
                                  ("find one, worst", "C5", "find_worst_ms"),
                                  ("find one, median", "C6", "find_ms")):
            ax2.plot(ns, [p[key] for p in pts], ls, color=color, marker="o", label=f"{label} ({res['backend']})")
    ax1.set(xscale="log", yscale="log", xlabel="datasets in the repository (N)", ylabel="µs per dataset",
            title="Per-item cost (solid: SQLite, dashed: PostgreSQL)")
    ax2.set(xscale="log", yscale="log", xlabel="datasets in the repository (N)", ylabel="ms per call",
            title="Per-call latency (goals: visit ≤ 5 ms, find ≤ 1 ms)")
    ax2.axhline(5.0, color="C4", lw=0.6, ls=":")
    ax2.axhline(1.0, color="C5", lw=0.6, ls=":")
    for ax in (ax1, ax2):
        ax.grid(True, which="both", lw=0.3)
        ax.legend(fontsize=7)
    how = {"put_many": "grown by put_many", "rows": "grown by rows, last 10k before each N by put_many"}
    loads = "; ".join(f"{r['backend']}: {how[r.get('fill', 'put_many')]}, load "
                      f"{min(p['load_put'] for p in r['points']):.1f}–{max(p['load_remove'] for p in r['points']):.1f}"
                      for r in results if r["points"])
    fig.suptitle(f"skybutler at scale, local files, {platform.machine()} {os.cpu_count()} CPUs, shared machine "
                 f"(1-min load average)\n{loads}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"plot written to {path}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--backend", nargs="+", default=["sqlite", "postgresql"], choices=["sqlite", "postgresql"])
    parser.add_argument("--postgresql", default=DEFAULT_PG, help="PostgreSQL URL (a schema of its own is made)")
    parser.add_argument("--batch", type=int, default=1000, help="datasets per put_many call")
    parser.add_argument("--window", type=int, default=WINDOW,
                        help="put_many per item is measured over the last this many datasets before each N")
    parser.add_argument("--fill", choices=["put_many", "rows"], default="put_many",
                        help="how the repository grows between sizes: put_many (files and all), or rows only "
                             "with the last 10,000 before each N put_many (see the module docstring)")
    parser.add_argument("--workdir", type=Path, default=None, help="where repositories go (default: the temp dir)")
    parser.add_argument("--json", default=None, help="figures go here (default: scale-<backend>.json in the temp dir)")
    parser.add_argument("--plot", default=None, help="write a PNG of per-item cost against N")
    parser.add_argument("--replot", nargs="+", default=None, help="only report and plot these JSON files")
    parser.add_argument("--child", nargs=3, metavar=("ROOT", "KIND", "VISIT"), help=argparse.SUPPRESS)
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child:
        print(json.dumps(child(args.child[0], args.child[1], int(args.child[2]))))
        return 0
    workdir = args.workdir or Path(tempfile.gettempdir())
    if args.worker:
        run_backend(args.worker, args.n, pg_url=args.postgresql, batch=args.batch, workdir=workdir,
                    out=Path(args.json), fill=args.fill, window_n=args.window)
        return 0
    if args.replot:
        results = [json.loads(Path(p).read_text()) for p in args.replot]
    else:
        results = []
        for backend in args.backend:
            out = Path(args.json or workdir / "scale.json").with_suffix(f".{backend}.json")
            cmd = [sys.executable, __file__, "--worker", backend, "--n", *map(str, args.n), "--postgresql",
                   args.postgresql, "--batch", str(args.batch), "--fill", args.fill, "--window", str(args.window), "--workdir", str(workdir), "--json", str(out)]
            print(f"running {backend} (figures in {out}) ...", file=sys.stderr, flush=True)
            code = subprocess.run(cmd).returncode
            if out.exists():
                results.append(json.loads(out.read_text()))
            if code != 0:
                print(f"{backend} stopped with exit {code}; its figures so far are kept", file=sys.stderr)
    report(results)
    if args.plot:
        plot(results, args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
