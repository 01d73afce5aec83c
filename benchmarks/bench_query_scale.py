"""Query all N datasets as refs, as one Arrow table and as Arrow batches, beside the raw fetch that bounds them.

Usage::

    python benchmarks/bench_query_scale.py                         # N = 1,000,000 on SQLite and PostgreSQL
    python benchmarks/bench_query_scale.py --n 10000 --backend sqlite --repeat 7
    python benchmarks/bench_query_scale.py --keep /tmp/qs          # reuse (or leave) the repositories there

One repository per backend (SQLite file, or a PostgreSQL schema of its own, dropped at
the end unless ``--keep``), HSC-like data ids (``N / 100`` visits x 100 detectors), N
datasets of one type in one run, inserted as registry rows (``Registry.insert_datasets``
in batches of 50,000: no files, which these queries never read). Every measurement runs
in a fresh process, so its peak RSS is its own; each is repeated ``--repeat`` times
(fresh process each time) and the median and range printed:

- ``refs``: ``len(list(butler.query_datasets(...)))`` — one `DatasetRef` per row.
- ``arrow``: ``query_datasets(...).to_arrow()``.
- ``batches``: ``sum(b.num_rows for b in query_datasets(...).arrow_batches())``.
- ``raw``: the floor: the same rows' columns (id, run id, dimensions) fetched by the bare
  driver (``sqlite3`` / ``psycopg``, Python tuples), and ``raw_adbc``: the same by ADBC
  into an Arrow table (what ``arrow`` adds to it is the conversion of ids and run names).

RSS growth is the highest RSS during the call (read every 2 ms) minus the RSS before it
(imports, connections and a warm-up query done): what the call itself held at its worst.
CPU time (this process's, all threads) is printed beside wall time: on a shared, loaded
machine it is the steadier figure. The 1-minute load average is printed too.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _records import (
    DETECTORS,
    FreshProcessError,
    drop_schemas,
    hsc_records,
    new_schema_name,
    print_result,
    run_fresh,
)

DATASET_TYPE = "bench_metadata"
RUN = "scale/query"
DEFAULT_PG = "postgresql://127.0.0.1:5432/test"
KINDS = ("raw", "raw_adbc", "refs", "arrow", "batches")


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _current_rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def build(root: Path, n: int, registry: str | None, namespace: str | None) -> None:
    """A repository with ``n`` datasets of one type in one run (registry rows only)."""
    from skybutler import Butler, DataId, DatasetRef
    from skybutler.model import new_dataset_id

    kwargs = {"registry": registry, "namespace": namespace} if registry else {}
    butler = Butler.create(root, **kwargs)
    pairs = hsc_records(butler, math.ceil(n / DETECTORS))[:n]
    butler.register_dataset_type(DATASET_TYPE, ["instrument", "visit", "detector"], "dict")
    dt = butler.registry.get_dataset_type(DATASET_TYPE)
    butler.registry.register_collection(RUN)
    t0 = time.perf_counter()
    for start in range(0, n, 50_000):
        butler.registry.insert_datasets([
            DatasetRef(new_dataset_id(), dt, DataId({"instrument": "HSC", "visit": v, "detector": d}), RUN)
            for v, d in pairs[start:start + 50_000]])
    print(f"  built {n:,} datasets in {time.perf_counter() - t0:.0f} s", flush=True)
    butler.close()


def _raw(butler: Any, adbc: bool) -> int:
    """The floor: id, run id and dimensions of the run's datasets, by the bare driver."""
    reg = butler.registry
    namespace = butler.config.registry.namespace
    prefix = f'"{namespace}".' if namespace else ""
    with reg.database.read() as conn:
        import sqlalchemy as sa

        run_id = conn.execute(sa.select(reg.tables.collection.c.id).where(
            reg.tables.collection.c.name == RUN)).scalar_one()
    sql = f"SELECT id, run_id, instrument, visit, detector FROM {prefix}dataset WHERE run_id = {int(run_id)}"
    if reg.dialect == "sqlite":
        path = str(Path(butler.root) / "registry.sqlite3")
        if adbc:
            import adbc_driver_sqlite.dbapi as driver

            # Its own copy of SQLite must not open the database beside this process's
            # connections (it deletes the WAL under them when it closes): close them first.
            butler.close()

            with driver.connect(path) as c, c.cursor() as cur:
                cur.execute(sql)
                return int(cur.fetch_arrow_table().num_rows)
        import sqlite3

        with sqlite3.connect(path) as c:
            return len(c.execute(sql).fetchall())
    import sqlalchemy as sa

    uri = sa.make_url(str(reg.engine.url)).set(drivername="postgresql").render_as_string(hide_password=False)
    if adbc:
        import adbc_driver_postgresql.dbapi as driver

        with driver.connect(uri, autocommit=True) as c, c.cursor() as cur:
            cur.execute(sql)
            return int(cur.fetch_arrow_table().num_rows)
    import psycopg

    with psycopg.connect(uri) as c:
        return len(c.execute(sql).fetchall())


def child(root: str, kind: str) -> dict[str, Any]:
    """One measurement in this (fresh) process."""
    from skybutler import Butler

    butler = Butler(root)
    # Imports, connections (ADBC's too: 600 rows are read through it) and plans first, so
    # that the figures below are the call's own.
    few = "visit < 903346"
    butler.query_datasets(DATASET_TYPE, collections=[RUN], where=few).to_arrow()
    list(butler.query_datasets(DATASET_TYPE, collections=[RUN], where=few))
    gc.collect()
    base = _current_rss_mb()
    watcher = _RssWatcher()
    t0, c0 = time.perf_counter(), time.process_time()
    if kind == "refs":
        rows = len(list(butler.query_datasets(DATASET_TYPE, collections=[RUN])))
    elif kind == "arrow":
        rows = butler.query_datasets(DATASET_TYPE, collections=[RUN]).to_arrow().num_rows
    elif kind == "batches":
        rows = sum(b.num_rows for b in butler.query_datasets(DATASET_TYPE, collections=[RUN]).arrow_batches())
    else:
        rows = _raw(butler, adbc=kind == "raw_adbc")
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    call_peak = watcher.stop()
    butler.close()
    return {"rows": rows, "seconds": seconds, "cpu_s": cpu, "peak_rss_mb": _rss_mb(),
            "rss_growth_mb": call_peak - base, "load": os.getloadavg()[0]}


class _RssWatcher:
    """The highest RSS of this process while it runs (read every 2 ms by a thread)."""

    def __init__(self) -> None:
        import threading

        self.peak = _current_rss_mb()
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._watch, daemon=True)
        self.thread.start()

    def _watch(self) -> None:
        while not self.done.wait(0.002):
            self.peak = max(self.peak, _current_rss_mb())

    def stop(self) -> float:
        self.done.set()
        self.thread.join()
        return max(self.peak, _current_rss_mb())


def run_child(root: Path, kind: str) -> dict[str, Any]:
    try:
        return dict(run_fresh(__file__, "--child", str(root), kind))
    except FreshProcessError as failed:
        return {"error": failed.last_line}


def measure(root: Path, n: int, repeat: int, kinds: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    runs: dict[str, list[dict[str, Any]]] = {k: [] for k in kinds}
    for _ in range(repeat):  # alternated, so that each kind sees the same minutes of the machine
        for kind in kinds:
            runs[kind].append(run_child(root, kind))
    for kind, results in runs.items():
        good = [r for r in results if "error" not in r]
        if not good:
            out[kind] = {"error": results[0]["error"]}
            print(f"  {kind:8} failed: {results[0]['error']}")
            continue
        assert all(r["rows"] == n for r in good), (kind, [r["rows"] for r in good])
        secs = [r["seconds"] for r in good]
        cpu = [r["cpu_s"] for r in good]
        growth = [r["rss_growth_mb"] for r in good]
        out[kind] = {"median_s": statistics.median(secs), "min_s": min(secs), "max_s": max(secs),
                     "cpu_median_s": statistics.median(cpu),
                     "rss_growth_mb": max(growth), "peak_rss_mb": max(r["peak_rss_mb"] for r in good),
                     "load": [round(r["load"], 1) for r in good]}
        print(f"  {kind:8} {statistics.median(secs) * 1e3:9.1f} ms (range {min(secs) * 1e3:.1f}-{max(secs) * 1e3:.1f}),"
              f" CPU {statistics.median(cpu) * 1e3:8.1f} ms"
              f"  RSS growth {max(growth):7.1f} MB, peak {out[kind]['peak_rss_mb']:7.1f} MB"
              f"  load {out[kind]['load']}", flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--backend", nargs="+", default=["sqlite", "postgresql"], choices=["sqlite", "postgresql"])
    parser.add_argument("--postgresql", default=DEFAULT_PG, help="PostgreSQL URL (a schema of its own is made)")
    parser.add_argument("--repeat", type=int, default=3, help="fresh processes per measurement")
    parser.add_argument("--kinds", nargs="+", default=list(KINDS), choices=KINDS)
    parser.add_argument("--keep", type=Path, default=None, help="keep the repositories here (reused when present)")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--child", nargs=2, metavar=("ROOT", "KIND"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print_result(child(*args.child))
        return 0
    work = args.keep or Path(tempfile.mkdtemp(prefix="skybutler-query-scale-"))
    figures: dict[str, Any] = {"n": args.n, "cpus": os.cpu_count()}
    try:
        for backend in args.backend:
            root = work / f"{backend}-{args.n}"
            namespace = None
            if backend == "postgresql":
                marker = root / "namespace"
                namespace = marker.read_text() if marker.exists() else new_schema_name("qs")
            print(f"{backend}, N = {args.n:,}, load {os.getloadavg()[0]:.1f}", flush=True)
            if not (root / "skybutler.yaml").exists():
                shutil.rmtree(root, ignore_errors=True)
                build(root, args.n, args.postgresql if backend == "postgresql" else None, namespace)
                if namespace:
                    (root / "namespace").write_text(namespace)
            figures[backend] = measure(root, args.n, args.repeat, args.kinds)
            if args.json:
                args.json.write_text(json.dumps(figures, indent=1))
    finally:
        if args.keep is None:
            for backend in args.backend:
                marker = work / f"postgresql-{args.n}" / "namespace"
                if backend == "postgresql" and marker.exists():
                    drop_schemas(args.postgresql, [marker.read_text()])
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
