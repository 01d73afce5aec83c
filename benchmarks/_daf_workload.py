"""The daf_butler side of ``compare_daf_butler.py``: run by a Python that has ``lsst-daf-butler``.

Not meant to be run by hand: ``compare_daf_butler.py`` starts it as
``DAF_PYTHON _daf_workload.py --n N --root DIR --out FILE`` and reads the JSON figures
it writes. It imports nothing from skybutler (the two systems never share a process).

Same workload as the skybutler child: HSC-like records (⌈N/100⌉ visits x 100
detectors, visits with regions, visit_detector_region rows), small dicts stored as
JSON (daf_butler's JsonFormatter for ``StructuredDataDict``), every write into its own
run. daf_butler runs with its defaults: SQLite in rollback-journal mode with
``synchronous=FULL`` (the SQLite default; daf_butler sets only ``foreign_keys`` and
``busy_timeout``), files written in place without an fsync.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import math
import sqlite3
import statistics
import sys
import time
from pathlib import Path
from typing import Any

DETECTORS = 100
DATASET_TYPE = "bench_metadata"


def _rate(n: int, seconds: float) -> dict[str, float]:
    return {"n": n, "seconds": seconds, "rate": n / seconds}


def _latency(samples: list[float], cpu: list[float] | None = None) -> dict[str, float]:
    out = {"ms": statistics.median(samples) * 1e3, "min_ms": min(samples) * 1e3, "calls": len(samples)}
    if cpu:
        # CPU time of this process: far less disturbed than wall time on a shared, loaded machine.
        out["cpu_ms"] = statistics.median(cpu) * 1e3
    return out


def _obj(v: int, d: int) -> dict[str, Any]:
    return {"visit": v, "detector": d, "zero_point": 27.0 + d / 1000, "ok": True}


def _records(butler: Any, n_visits: int) -> list[tuple[int, int]]:
    """The same records as benchmarks/_records.py, in daf_butler's universe."""
    from lsst.daf.butler import Timespan
    from lsst.sphgeom import ConvexPolygon, LonLat, UnitVector3d

    def polygon(corners: list[tuple[float, float]]) -> Any:
        return ConvexPolygon([UnitVector3d(LonLat.fromDegrees(ra, dec)) for ra, dec in corners])

    reg = butler.registry
    reg.insertDimensionData("instrument", {"name": "HSC", "class_name": "HSC", "visit_max": 2**30,
                                           "exposure_max": 2**30, "detector_max": 200})
    reg.insertDimensionData("physical_filter", *[
        {"instrument": "HSC", "name": f"HSC-{b.upper()}", "band": b} for b in "grizy"])
    reg.insertDimensionData("day_obs", *[{"instrument": "HSC", "id": 20260315 + i} for i in range(3)])
    reg.insertDimensionData("detector", *[
        {"instrument": "HSC", "id": d, "full_name": f"{d // 10}_{d % 10}", "purpose": "SCIENCE"}
        for d in range(DETECTORS)])
    start = datetime.datetime(2026, 3, 15, 6, 0, 0)
    from astropy.time import Time

    visits, regions = [], []
    for i in range(n_visits):
        begin = start + datetime.timedelta(seconds=40 * i)
        ra, dec = 150.0 + 0.5 * (i % 10), 2.0 + 0.5 * ((i // 10) % 20)
        corners = [(ra - 0.75, dec - 0.75), (ra + 0.75, dec - 0.75), (ra + 0.75, dec + 0.75),
                   (ra - 0.75, dec + 0.75)]
        visit = 903334 + 2 * i
        visits.append({
            "instrument": "HSC", "id": visit, "name": str(visit), "physical_filter": f"HSC-{'GRIZY'[i % 5]}",
            "day_obs": 20260315 + i * 3 // max(n_visits, 1), "exposure_time": 30.0,
            "timespan": Timespan(Time(begin, scale="utc"), Time(begin + datetime.timedelta(seconds=30),
                                                                 scale="utc")),
            "region": polygon(corners),
        })
        regions += [{"instrument": "HSC", "visit": visit, "detector": d, "region": polygon(corners)}
                    for d in range(DETECTORS)]
    reg.insertDimensionData("visit", *visits)
    reg.insertDimensionData("visit_detector_region", *regions)
    return [(v["id"], d) for v in visits for d in range(DETECTORS)]


EXEC_VISITS = 2  # as compare_daf_butler.py


def _pipeline_rows(repo: Path, run_name: str, visits: list[int]) -> dict[str, Any]:
    """The one-task pipeline (``_daf_pipe_tasks``) over ``run_name``: graph of every dataset, then EXEC_VISITS run.

    Skipped (with a note) when ``lsst-pipe-base`` is not installed beside daf_butler.
    """
    try:
        import _daf_pipe_tasks
        from lsst.pipe.base.simple_pipeline_executor import SimplePipelineExecutor
    except ImportError as exc:
        return {"pipeline_note": f"lsst-pipe-base not installed ({exc}): graph rows skipped"}
    out: dict[str, Any] = {}
    task = _daf_pipe_tasks.BenchCopyTask
    butler = SimplePipelineExecutor.prep_butler(str(repo), inputs=[run_name], output="bench/pipe_build_chain",
                                                output_run="bench/pipe_build")
    gc.collect()
    t0 = time.perf_counter()
    executor = SimplePipelineExecutor.from_task_class(task, butler=butler)
    out["graph_build"] = _rate(len(executor.quantum_graph), time.perf_counter() - t0)
    butler = SimplePipelineExecutor.prep_butler(str(repo), inputs=[run_name], output="bench/pipe_exec_chain",
                                                output_run="bench/pipe_exec")
    where = f"instrument = 'HSC' AND visit IN ({', '.join(map(str, visits[:EXEC_VISITS]))})"
    executor = SimplePipelineExecutor.from_task_class(task, butler=butler, where=where)
    gc.collect()
    t0 = time.perf_counter()
    quanta = executor.run(register_dataset_types=True)
    out["quantum_exec"] = _rate(len(quanta), time.perf_counter() - t0)
    out["quantum_exec"]["note"] = "SimplePipelineExecutor (in process); writes task metadata and logs per quantum"
    for chain in ("bench/pipe_build_chain", "bench/pipe_exec_chain"):  # they hold the input run
        butler.registry.removeCollection(chain)
    return out


def run(n: int, root: Path, calls: int, queries_only: bool = False) -> dict[str, Any]:
    """Every operation on a new repository under ``root``; the figures as a dict."""
    from lsst.daf.butler import Butler, Config, DatasetRef, DatasetType, FileDataset
    from lsst.daf.butler import __version__ as daf_version

    out: dict[str, Any] = {"system": "daf_butler", "version": daf_version, "n": n,
                           "python": sys.version.split()[0], "sqlite": sqlite3.sqlite_version}
    repo = root / "daf_repo"
    config = Config({"datastore": {"formatters": {"StructuredDataDict":
                                                  "lsst.daf.butler.formatters.json.JsonFormatter"}}})
    Butler.makeRepo(str(repo), config=config)
    butler = Butler.from_config(str(repo), writeable=True)
    t0 = time.perf_counter()
    data_ids = _records(butler, math.ceil(n / DETECTORS))[:n]
    out["setup_records_s"] = time.perf_counter() - t0
    dims = ["instrument", "visit", "detector"]
    dt = DatasetType(DATASET_TYPE, dims, "StructuredDataDict", universe=butler.dimensions)
    butler.registry.registerDatasetType(dt)
    m = min(n, calls)
    out["calls"] = m

    def did(v: int, d: int) -> dict[str, Any]:
        return {"instrument": "HSC", "visit": v, "detector": d}

    if not queries_only:
        # put, one per call
        bp = Butler.from_config(str(repo), writeable=True, run="bench/put")
        gc.collect()
        t0 = time.perf_counter()
        [bp.put(_obj(v, d), DATASET_TYPE, did(v, d)) for v, d in data_ids[:m]]
        out["put"] = _rate(m, time.perf_counter() - t0)

    # "put_many": daf_butler has no batched put; its batched write is ingest of files
    # (measured below). The reads use a run filled by ingest with transfer=copy.
    src = root / "daf_src"
    src.mkdir()
    files = []
    for v, d in data_ids:
        p = src / f"raw_{v}_{d:03d}.json"
        p.write_text(json.dumps(_obj(v, d)))
        files.append((p, did(v, d)))
    for name, transfer in (("ingest_direct", "direct"), ("ingest_copy", "copy"))[:1 if queries_only else 2]:
        run_name = f"bench/{name}"
        butler.registry.registerRun(run_name)
        datasets = [FileDataset(path=str(p), refs=[DatasetRef(dt, butler.registry.expandDataId(data_id),
                                                               run=run_name)])
                    for p, data_id in files]
        gc.collect()
        t0 = time.perf_counter()
        butler.ingest(*datasets, transfer=transfer)
        out[name] = _rate(n, time.perf_counter() - t0)
        out[name]["note"] = "data ids expanded beforehand (not timed)"
    run_name = "bench/ingest_direct" if queries_only else "bench/ingest_copy"
    b = Butler.from_config(str(repo), writeable=True, run=run_name, collections=[run_name])
    refs = b.query_datasets(DATASET_TYPE, collections=run_name, limit=None)
    refs.sort(key=lambda r: (r.dataId["visit"], r.dataId["detector"]))

    if not queries_only:
        gc.collect()
        t0 = time.perf_counter()
        values = [b.get(r) for r in refs[:m]]
        out["get_ref"] = _rate(m, time.perf_counter() - t0)
        assert values[-1]["detector"] == data_ids[m - 1][1]

        gc.collect()
        t0 = time.perf_counter()
        for v, d in data_ids[:m]:
            b.get(DATASET_TYPE, did(v, d), collections=run_name)
        out["get_data_id"] = _rate(m, time.perf_counter() - t0)

    def query_all() -> int:
        return len(b.query_datasets(DATASET_TYPE, collections=run_name, limit=None))

    assert query_all() == n
    samples, cpu = [], []
    for _ in range(9):
        gc.collect()
        t0, c0 = time.perf_counter(), time.process_time()
        query_all()
        samples.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    out["query_all"] = _latency(samples, cpu)

    visits = sorted({v for v, _ in data_ids})
    samples = []
    for i in range(60):
        v = visits[i % len(visits)]
        t0 = time.perf_counter()
        found = b.query_datasets(DATASET_TYPE, collections=run_name, where="visit = v",
                                 bind={"v": v}, data_id={"instrument": "HSC"}, limit=None)
        samples.append(time.perf_counter() - t0)
    assert len(found) == min(DETECTORS, n)
    out["query_visit"] = _latency(samples[5:])

    samples = []
    for i in range(300):
        v, d = data_ids[(i * 37) % n]
        t0 = time.perf_counter()
        ref = b.find_dataset(DATASET_TYPE, did(v, d), collections=run_name)
        samples.append(time.perf_counter() - t0)
    assert ref is not None
    out["find_one"] = _latency(samples[10:])

    if not queries_only:
        out.update(_pipeline_rows(repo, run_name, visits))

    gc.collect()
    t0 = time.perf_counter()
    butler.removeRuns([run_name])
    out["remove_run"] = _rate(n, time.perf_counter() - t0)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, required=True)
    parser.add_argument("--root", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--queries-only", action="store_true")
    args = parser.parse_args()
    args.out.write_text(json.dumps(run(args.n, args.root, args.calls, args.queries_only)))


if __name__ == "__main__":
    main()
