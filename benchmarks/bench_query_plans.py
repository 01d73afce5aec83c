"""Are one-visit query plans stable across fresh processes without a manual ANALYZE?

Usage::

    python benchmarks/bench_query_plans.py                 # 100,000 datasets, 5 fresh processes per case
    python benchmarks/bench_query_plans.py --n 20000 --processes 3

Builds a SQLite repository of N datasets (HSC-like data ids, ⌈N/100⌉ visits x 100
detectors) in one run, registered the way ``put_many`` registers them (the registry's
dataset insert, in batches of 1,000, each its own transaction; no files are written, as
file creation is not what is measured), then runs the same one-visit query
(``query_datasets(..., where="visit = V")``, 100 refs) in several fresh processes, each
opening the repository anew. Each process reports its first call and the median of 30
more, and what SQLite's ``EXPLAIN QUERY PLAN`` says of the statement the query ran.

Cases:

- ``as kept``: the statistics the registry kept by itself while the datasets were
  inserted (`skybutler.registry._db.keep_sqlite_statistics`); nobody ran ANALYZE.
- ``no statistics``: the same database with ``sqlite_stat1`` dropped, which is what
  every repository looked like before (shows what the planner does without them).

Prints the worst and best per case. See benchmarks/RESULTS.md for figures.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _records import DETECTORS, hsc_records

DATASET_TYPE = "bench_metadata"
RUN = "bench/put_many"
BATCH = 1000


def build(root: Path, n: int) -> dict[str, float]:
    """A repository with N datasets in RUN; returns how long the inserts took and the ANALYZE count seen."""
    from skybutler import Butler, DataId, DatasetRef
    from skybutler.model import new_dataset_id

    butler = Butler.create(root)
    pairs = hsc_records(butler, math.ceil(n / DETECTORS))[:n]
    butler.register_dataset_type(DATASET_TYPE, ["instrument", "visit", "detector"], "dict")
    dt = butler.registry.get_dataset_type(DATASET_TYPE)
    butler.registry.register_collection(RUN)
    t0 = time.perf_counter()
    for i in range(0, n, BATCH):
        refs = [DatasetRef(new_dataset_id(), dt, DataId({"instrument": "HSC", "visit": v, "detector": d}), RUN)
                for v, d in pairs[i:i + BATCH]]
        butler.registry.insert_datasets(refs)
    seconds = time.perf_counter() - t0
    butler.close()
    return {"insert_s": seconds, "us_per_dataset": 1e6 * seconds / n}


def plan_of(db: Path, sql: str, params: Any) -> str:
    """The plan SQLite picks for the statement the query ran, by a connection of its own."""
    con = sqlite3.connect(db)
    try:
        rows = con.execute(f"EXPLAIN QUERY PLAN {sql}", params).fetchall()
        return "; ".join(r[-1] for r in rows if "dataset" in r[-1])
    finally:
        con.close()


def child(root: Path, visit: int) -> dict[str, object]:
    """One fresh process: open the repository, run the one-visit query (first call, then 30 more)."""
    import sqlalchemy as sa

    from skybutler import Butler

    butler = Butler(root)
    seen: list[tuple[str, Any]] = []

    @sa.event.listens_for(butler.registry.engine, "before_cursor_execute")
    def _capture(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool) -> None:
        if "visit" in statement and "FROM dataset" in statement:
            seen.append((statement, parameters))

    samples = []
    for _ in range(31):
        t0 = time.perf_counter()
        refs = list(butler.query_datasets(DATASET_TYPE, collections=[RUN], where=f"visit = {visit}"))
        samples.append(time.perf_counter() - t0)
    assert len(refs) == DETECTORS, len(refs)
    butler.close()
    return {"first_ms": samples[0] * 1e3, "median_ms": statistics.median(samples[1:]) * 1e3,
            "plan": plan_of(root / "registry.sqlite3", *seen[-1])}


def run_case(root: Path, processes: int, visit: int) -> list[dict[str, object]]:
    out = []
    for _ in range(processes):
        proc = subprocess.run([sys.executable, __file__, "--child", str(root), "--visit", str(visit)],
                              check=True, capture_output=True, text=True)
        out.append(json.loads(proc.stdout))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--processes", type=int, default=5)
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--visit", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.visit)))
        return
    tmp = Path(tempfile.mkdtemp(prefix="skybutler-plans-"))
    try:
        root = tmp / "repo"
        print(f"building {args.n:,} datasets ...", flush=True)
        built = build(root, args.n)
        n_visits = math.ceil(args.n / DETECTORS)
        visit = 903334 + 2 * (n_visits // 2)
        db = root / "registry.sqlite3"
        con = sqlite3.connect(db)
        try:
            stat = con.execute("SELECT stat FROM sqlite_stat1 WHERE tbl = 'dataset' AND idx = 'ix_dataset_run'"
                               ).fetchall()
        except sqlite3.OperationalError:
            stat = []
        con.close()
        print(f"inserted in {built['insert_s']:.1f} s ({built['us_per_dataset']:.0f} µs/dataset); "
              f"ix_dataset_run statistics kept: {stat[0][0] if stat else 'none'}; load {os.getloadavg()[0]:.1f}")
        cases = {"as kept": run_case(root, args.processes, visit)}
        bare = tmp / "bare"
        shutil.copytree(root, bare)
        con = sqlite3.connect(bare / "registry.sqlite3")
        con.execute("DROP TABLE IF EXISTS sqlite_stat1")
        con.commit()
        con.close()
        cases["no statistics"] = run_case(bare, args.processes, visit)
        print(f"\none-visit query (100 refs of {args.n:,}), {args.processes} fresh processes per case")
        print(f"{'case':<14} {'first call ms':>22} {'median of 30 ms':>22}  plans")
        for name, runs in cases.items():
            first = [float(r["first_ms"]) for r in runs]  # type: ignore[arg-type]
            median = [float(r["median_ms"]) for r in runs]  # type: ignore[arg-type]
            plans = sorted({str(r["plan"]) for r in runs})
            print(f"{name:<14} {min(first):>9.2f} best {max(first):>7.2f} worst "
                  f"{min(median):>8.2f} best {max(median):>6.2f} worst  {' | '.join(plans)}")
        print(f"load after: {os.getloadavg()[0]:.1f}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
