"""Speed of job subsets (write_subset) and of merging job outcomes back (merge_run).

Usage::

    python benchmarks/bench_merge.py                       # N = 20,000 into SQLite and PostgreSQL, subsets
    python benchmarks/bench_merge.py --n 100000 --postgresql none
    python benchmarks/bench_merge.py --json out.json       # also write the raw figures

Merge: a scratch registry (SQLite file) holds N output datasets of one run, each with a
file row and the execution that generated it (one execution per dataset, with one
``used`` edge to an input that is not in the scratch registry and one ``derived`` edge),
as a job's outcome does. It is merged into a fresh SQLite registry file and into a fresh
PostgreSQL schema: first merge (datasets/s, the issue's target: >= 20,000/s into
SQLite, >= 10,000/s into PostgreSQL), the same merge again (everything skipped), and a
merge with ``new_ids=True`` into another fresh target. ``small`` is the latency of
merging a one-quantum outcome (2 datasets), the common case of a batch job; it is
bounded by opening the source and the per-statement costs, not by rows.

Subsets: a central SQLite registry with HSC-like records (visits x 100 detectors, a
3 x 3-patch tract overlapping them); a subset for k quanta of one visit (k single-frame
quanta: the raw inputs with their file records, the calexp and log outputs) is written
for k = 1, 10, 100, each repetition on a new visit (its records are not cached yet).
Figures: milliseconds per subset (median and range) and the file size.

SQLite runs with the registry's defaults (WAL, synchronous=NORMAL: a commit survives a
killed process, not a power loss).
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from _records import DETECTORS, drop_schemas, hsc_records, new_schema_name

from skybutler.model import DataId, DatasetRef, DatasetType, new_id
from skybutler.registry import FileRecord, Registry, provenance_sql
from skybutler.transfer import merge_run, write_subset

DEFAULT_PG = "postgresql://postgres@127.0.0.1:5432/test"
RUN = "bench/run"


def make_source(path: Path, n: int, run: str = RUN) -> Registry:
    """A scratch registry with ``n`` generated datasets, one execution each (+1 used, +1 derived edge)."""
    registry = Registry.create(f"sqlite:///{path}")
    dims = registry.universe.closure(["visit", "detector"])
    calexp = DatasetType("calexp", dims, "array")
    registry.register_dataset_type(calexp)
    registry.register_collection(run)
    refs, files, executions, used, generated, derived = [], [], [], [], [], []
    start = datetime.datetime(2026, 3, 15, 6, 0, 0)
    software = json.dumps({"python": "3.11.7", "skybutler": "0.2.0", "numpy": "2.1.0", "astropy": "6.1"})
    for i in range(n):
        data_id = DataId({"instrument": "HSC", "detector": i % DETECTORS, "visit": 903334 + 2 * (i // DETECTORS)})
        ref = DatasetRef(new_id(), calexp, data_id, run)
        path_i = f"{run}/calexp/calexp_{data_id['visit']:08d}_{data_id['detector']:03d}.npy"
        refs.append(ref)
        files.append(FileRecord(ref.id, path_i, 1024 + i, uuid.uuid4().hex, "md5", "npy"))
        eid, raw = new_id(), new_id()
        t0 = start + datetime.timedelta(seconds=i)
        executions.append({
            "id": eid, "run": run, "task_label": "make_calexp", "quantum_id": new_id(),
            "data_id_key": data_id.key(), "status": "succeeded", "host": "worker-01",
            "start_time": t0, "end_time": t0 + datetime.timedelta(seconds=2), "cpu_time": 1.9,
            "peak_memory": 300_000_000, "software": software, "config_hash": "ab" * 32,
            "details": json.dumps({"task_class": "pkg.tasks:MakeCalexp", "data_id": dict(data_id)}),
        })
        used.append((eid, raw, f"HSC/raw/all/raw/raw_{i}.fits"))
        generated.append((eid, ref.id, path_i))
        derived.append((ref.id, raw))
    with registry.transaction():
        registry.insert_datasets(refs, files)
        provenance_sql.insert_executions(registry, executions, used=used, generated=generated, derived=derived)
    return registry


def target(kind: str, directory: Path, pg_url: str, schemas: list[str]) -> Registry:
    if kind == "sqlite":
        return Registry.create(f"sqlite:///{directory / f'target-{uuid.uuid4().hex[:8]}.sqlite3'}")
    namespace = new_schema_name("bench_merge")
    schemas.append(namespace)
    return Registry.create(pg_url, namespace=namespace)


def bench_merge(n: int, directory: Path, pg_url: str | None) -> dict[str, Any]:
    source_path = directory / "source.sqlite3"
    t0 = time.perf_counter()
    make_source(source_path, n).close()
    for i in range(10):
        make_source(directory / f"small-{i}.sqlite3", 1, run=f"{RUN}/small{i}").close()
    print(f"source: {n:,} datasets made in {time.perf_counter() - t0:.1f} s", flush=True)
    results: dict[str, Any] = {}
    schemas: list[str] = []
    kinds = ["sqlite"] + (["postgresql"] if pg_url else [])
    try:
        for kind in kinds:
            out = results[kind] = {}
            reg = target(kind, directory, pg_url or "", schemas)
            t0 = time.perf_counter()
            report = merge_run(reg, source_path, run=RUN)
            first = time.perf_counter() - t0
            assert report.datasets_added == n, report
            t0 = time.perf_counter()
            again = merge_run(reg, source_path, run=RUN)
            repeat = time.perf_counter() - t0
            assert again.datasets_skipped == n and again.datasets_added == 0, again
            smalls = []
            for i in range(10):
                t0 = time.perf_counter()
                merge_run(reg, directory / f"small-{i}.sqlite3", run=f"{RUN}/small{i}")
                smalls.append(time.perf_counter() - t0)
            reg.close()
            reg = target(kind, directory, pg_url or "", schemas)
            t0 = time.perf_counter()
            renamed = merge_run(reg, source_path, run=RUN, new_ids=True)
            fresh = time.perf_counter() - t0
            assert renamed.datasets_added == n
            reg.close()
            out.update(first_s=first, first_rate=n / first, repeat_s=repeat, repeat_rate=n / repeat,
                       new_ids_s=fresh, new_ids_rate=n / fresh, small_ms=[s * 1e3 for s in smalls])
            print(f"{kind:10s} merge {n:,}: {n / first:9,.0f} datasets/s ({first:.2f} s); again (all skipped) "
                  f"{n / repeat:9,.0f}/s; new_ids {n / fresh:9,.0f}/s; one-quantum outcome "
                  f"{statistics.median(smalls) * 1e3:.0f} ms (median of 10, {min(smalls) * 1e3:.0f}-"
                  f"{max(smalls) * 1e3:.0f})", flush=True)
    finally:
        if schemas and pg_url:
            drop_schemas(pg_url, schemas)
    return results


def bench_subsets(directory: Path, quanta: list[int], reps: int) -> dict[str, Any]:
    central = Registry.create(f"sqlite:///{directory / 'central.sqlite3'}")
    n_visits = reps * len(quanta) + 1
    hsc_records(central, n_visits)
    central.insert_dimension_records("skymap", [{"skymap": "rings"}])
    central.insert_dimension_records("tract", [{"skymap": "rings", "tract": 0, "region": [
        (145.0, -3.0), (160.0, -3.0), (160.0, 13.0), (145.0, 13.0)]}])
    central.insert_dimension_records("patch", [
        {"skymap": "rings", "tract": 0, "patch": p, "region": [
            (145.0 + 5 * (p % 3), -3.0 + 5 * (p // 3)), (150.0 + 5 * (p % 3), -3.0 + 5 * (p // 3)),
            (150.0 + 5 * (p % 3), 2.0 + 5 * (p // 3)), (145.0 + 5 * (p % 3), 2.0 + 5 * (p // 3))]}
        for p in range(9)])
    dims = central.universe.closure(["visit", "detector"])
    raw_t, calexp_t, log_t = (DatasetType(name, dims, sc) for name, sc in
                              (("raw", "dict"), ("calexp", "array"), ("make_calexp_log", "text")))
    write_subset(central, directory / "warm.sqlite3", data_ids=[])  # the per-process template
    results: dict[str, Any] = {}
    visit_index = 0
    for k in quanta:
        times, size = [], 0
        for rep in range(reps):
            visit = 903334 + 2 * visit_index
            visit_index += 1
            data_ids = [DataId({"instrument": "HSC", "detector": d, "visit": visit}) for d in range(k)]
            raws = [DatasetRef(new_id(), raw_t, di, "HSC/raw/all") for di in data_ids]
            outs = [DatasetRef(new_id(), t, di, RUN) for di in data_ids for t in (calexp_t, log_t)]
            files = {r.id: FileRecord(r.id, f"HSC/raw/all/raw/{r.id}.fits", 1000, "0" * 32, "md5", "fits")
                     for r in raws}
            t0 = time.perf_counter()
            path = write_subset(central, directory / f"subset-{k}-{rep}.sqlite3", data_ids=data_ids,
                                refs=[*raws, *outs], files=files)
            times.append(time.perf_counter() - t0)
            size = path.stat().st_size
        results[str(k)] = {"ms": [t * 1e3 for t in times], "bytes": size}
        print(f"subset of {k:3d} quanta: {statistics.median(times) * 1e3:6.2f} ms (median of {reps}, "
              f"{min(times) * 1e3:.2f}-{max(times) * 1e3:.2f}), {size / 1024:.0f} KiB", flush=True)
    central.close()
    return results


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=20_000, help="datasets in the merged outcome")
    p.add_argument("--postgresql", default=DEFAULT_PG, help="PostgreSQL URL, or 'none'")
    p.add_argument("--reps", type=int, default=30, help="subsets written per size")
    p.add_argument("--json", default=None, help="also write the figures to this file")
    args = p.parse_args()
    pg = None if args.postgresql == "none" else args.postgresql
    with tempfile.TemporaryDirectory(prefix="bench-merge-") as tmp:
        figures = {"merge": bench_merge(args.n, Path(tmp), pg),
                   "subset": bench_subsets(Path(tmp), [1, 10, 100], args.reps)}
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1))


if __name__ == "__main__":
    sys.exit(main())
