"""skybutler and daf_butler side by side: the same workloads, one after the other, ratios printed.

Usage::

    python3 -m venv /work/dafbench && /work/dafbench/bin/pip install lsst-daf-butler lsst-pipe-base   # once
    python benchmarks/compare_daf_butler.py --daf-python /work/dafbench/bin/python           # N = 2,000
    python benchmarks/compare_daf_butler.py --daf-python ... --n 10000 --json out.json

This script installs nothing. It is the parent of two child processes run one after
the other (never at once, so they do not compete for the machine): this Python runs
the skybutler workload (``--child``), the Python given by ``--daf-python`` runs
``_daf_workload.py``. Each child makes its own repository in a temporary directory,
SQLite + local files, inserts the same HSC-like records (⌈N/100⌉ visits x 100 detectors,
visits with regions) and writes the same small dicts as JSON; every write goes into
its own run, and the reads use the run filled by ``ingest`` with ``transfer=copy`` (N
datasets of about 5 N in the repository). One-per-call loops cover ``--calls`` datasets.

Durability is printed for every row: skybutler runs SQLite in WAL mode with
``synchronous=NORMAL`` (a commit survives a killed process, not necessarily a power
loss) unless ``registry.sync_every_commit`` (``synchronous=FULL``: every commit synced);
daf_butler runs with its defaults, SQLite's rollback journal with ``synchronous=FULL``
(every commit synced) and files written without an fsync.

Quantum graphs and execution: a one-task pipeline (per visit and detector, read the small
dict, write one number of it: ``_pipe_tasks.py`` / ``_daf_pipe_tasks.py``) over the run
filled by ingest. Rows: the graph of all N quanta built, and the graph of two visits
(200 quanta) executed in one process (skybutler: `execute_graph`; daf_butler:
``SimplePipelineExecutor``, which needs ``lsst-pipe-base`` in the daf_butler environment:
without it those rows are skipped).

The query rows also print floors measured in the same minutes: the bare driver's fetch of
the columns a ref needs (tuples, and Arrow through ADBC), and that fetch plus refs built
column-wise with no planning (what a ref of this object model cannot go below).
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import inspect
import json
import math
import os
import platform
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from _records import DETECTORS, hsc_records

HERE = Path(__file__).resolve().parent
DATASET_TYPE = "bench_metadata"
BATCH = 1000
EXEC_VISITS = 2  # the quanta executed: every detector of this many visits

DEFAULT_DURABILITY = "WAL, synchronous=NORMAL (survives a killed process)"
DAF_DURABILITY = "rollback journal, synchronous=FULL (every commit synced); files not synced"

# (key, label, kind): "rate" per second (higher is better), "ms" a latency (lower is better).
ROWS: list[tuple[str, str, str]] = [
    ("put", "put, one per call", "rate"),
    ("put_sync", "put, one per call, sync_every_commit", "rate"),
    ("put_floor", "floor: file + 2 rows by bare os/sqlite3", "rate"),
    ("put_sync_floor", "floor, synced: the same with fsyncs", "rate"),
    ("put_schema_floor", "floor on this repository's own tables", "rate"),
    ("put_sync_schema_floor", "floor on its own tables, synced", "rate"),
    ("put_many", f"put_many ({BATCH} per call) | daf: no batched put", "rate"),
    ("ingest_direct", "ingest direct", "rate"),
    ("ingest_copy", "ingest copy", "rate"),
    ("get_ref", "get by ref", "rate"),
    ("get_data_id", "get by data id", "rate"),
    ("query_all", "query all N refs (as refs)", "ms"),
    ("query_all_arrow", "query all N refs as Arrow | daf: refs", "ms"),
    ("query_all_arrow_dbapi", "query all as Arrow, DB-API path", "ms"),
    ("query_all_raw", "raw sqlite3 fetch, columns a ref needs", "ms"),
    ("query_all_raw_adbc", "raw ADBC fetch as Arrow, same columns", "ms"),
    ("query_all_raw_refs", "raw sqlite3 fetch + refs built (floor)", "ms"),
    ("query_visit", "query one visit (100 refs)", "ms"),
    ("find_one", "find one dataset", "ms"),
    ("graph_build", "quantum graph build, 1 task x N quanta", "rate"),
    ("quantum_exec", f"execute {EXEC_VISITS * DETECTORS} quanta, one process", "rate"),
    ("remove_run", "remove run (N datasets + files)", "rate"),
]


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


def _timed_calls(fn: Any, count: int) -> list[float]:
    samples = []
    for i in range(count):
        t0 = time.perf_counter()
        fn(i)
        samples.append(time.perf_counter() - t0)
    return samples


def _arrow_in_transaction(butler: Any, run: str) -> int:
    # Inside a write transaction the table is built from the DB-API cursor (ADBC's own
    # connection could not see the transaction's rows): the path used without ADBC.
    with butler.transaction():
        return int(butler.query_datasets(DATASET_TYPE, collections=[run]).to_arrow().num_rows)


def _place_file(tmp: Path, final: Path, data: bytes, directory: int | None) -> None:
    """A floor's file: written to ``tmp``, renamed to ``final``; with ``directory`` (its fd) synced as a durable put's."""
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    os.write(fd, data)
    if directory is not None:
        os.fsync(fd)
    os.close(fd)
    os.rename(tmp, final)
    if directory is not None:
        os.fsync(directory)


def _put_floor(root: Path, data_ids: list[tuple[int, int]], sync: bool) -> dict[str, float]:
    """The least a put can cost here: what any put must do, by the bare ``os`` and ``sqlite3`` modules.

    Per dataset: the dict as JSON into a new temporary file, renamed to its final name,
    a dataset row and a file row inserted, committed (WAL; ``synchronous=NORMAL``, or with
    ``sync`` ``FULL`` plus the file and its directory fsynced before the commit, as a
    durable put must). No checks, no ids worth the name, no data id expansion.
    """
    root.mkdir()
    db = sqlite3.connect(root / "floor.sqlite3", isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute(f"PRAGMA synchronous={'FULL' if sync else 'NORMAL'}")
    db.execute("CREATE TABLE dataset (id TEXT PRIMARY KEY, visit INTEGER, detector INTEGER, UNIQUE (visit, detector))")
    db.execute("CREATE TABLE file (dataset_id TEXT PRIMARY KEY, path TEXT UNIQUE, size INTEGER)")
    directory = os.open(root, os.O_RDONLY)
    gc.collect()
    t0 = time.perf_counter()
    for v, d in data_ids:
        data = json.dumps(_obj(v, d)).encode()
        name = f"{v}_{d:03d}.json"
        _place_file(root / f".{name}.tmp", root / name, data, directory if sync else None)
        key = f"{v:08d}{d:024d}"
        db.execute("BEGIN IMMEDIATE")
        db.execute("INSERT INTO dataset VALUES (?, ?, ?)", (key, v, d))
        db.execute("INSERT INTO file VALUES (?, ?, ?)", (key, name, len(data)))
        db.execute("COMMIT")
    out = _rate(len(data_ids), time.perf_counter() - t0)
    os.close(directory)
    db.close()
    return out


def _put_schema_floor(registry_file: Path, files: Path, run_id: int, type_id: int,
                      data_ids: list[tuple[int, int]], sync: bool) -> dict[str, float]:
    """`_put_floor` on the repository's own registry tables: what a put of this schema costs at least.

    The same bare ``os`` and ``sqlite3`` work, but the two rows go into skybutler's
    ``dataset`` and ``file`` tables (a random UUID key, the unique data id constraint, the
    run and dimension indexes, foreign keys on: about ten pages of the WAL per commit where
    the two-table floor writes five), and the files into one directory per visit as the
    default template does. No checks, no expansion, no naming, no checksum, no manifest.
    """
    files.mkdir()
    db = sqlite3.connect(registry_file, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute(f"PRAGMA synchronous={'FULL' if sync else 'NORMAL'}")
    db.execute("PRAGMA foreign_keys=ON")
    dataset_sql = ("INSERT INTO dataset (id, dataset_type_id, run_id, data_id_key, instrument, visit, detector) "
                   "VALUES (?, ?, ?, ?, ?, ?, ?)")
    file_sql = "INSERT INTO file (dataset_id, path, size, checksum, checksum_algorithm, format) VALUES (?, ?, ?, ?, ?, ?)"
    directories: dict[int, int] = {}
    gc.collect()
    t0 = time.perf_counter()
    for v, d in data_ids:
        data = json.dumps(_obj(v, d)).encode()
        directory = directories.get(v)
        if directory is None:
            (files / str(v)).mkdir()
            directory = directories[v] = os.open(files / str(v), os.O_RDONLY)
        name = f"{v}/{d:03d}.json"
        _place_file(files / f"{v}/.{d:03d}.json.tmp", files / name, data, directory if sync else None)
        key = uuid.uuid4().hex
        db.execute("BEGIN IMMEDIATE")
        db.execute(dataset_sql, (key, type_id, run_id, f"HSC/{v}/{d}", "HSC", v, d))
        db.execute(file_sql, (key, name, len(data), None, None, "json"))
        db.execute("COMMIT")
    out = _rate(len(data_ids), time.perf_counter() - t0)
    for fd in directories.values():
        os.close(fd)
    db.close()
    return out


def _scalar(db: Path, sql: str, *params: Any) -> Any:
    conn = sqlite3.connect(db)
    try:
        return conn.execute(sql, params).fetchone()[0]
    finally:
        conn.close()


def _raw_refs(raw: sqlite3.Connection, sql: str, params: tuple[Any, ...], run: str, sample: Any) -> int:
    """The floor for refs: the raw fetch, then refs built the fastest way this object model allows.

    Ids, data ids and refs made column-wise at C level (as the query result makes them),
    with no query planning, no collection lookup, no type conversion: what is left is the
    fetch plus one UUID, one data id and one ref object per row.
    """
    from skybutler.model import DataId, DatasetRef, uuids_from_hex

    gc.disable()  # as the query result does: a collection per 700 new objects would double the cost
    try:
        rows = raw.execute(sql, params).fetchall()
        ids = uuids_from_hex([r[0] for r in rows])
        data_ids = DataId.from_rows(("instrument", "visit", "detector"), [r[2:] for r in rows])
        return len(DatasetRef.from_columns(sample.dataset_type, ids, data_ids, [run] * len(rows)))
    finally:
        gc.enable()


_ADBC_FLOOR = """
import gc, json, sys, time
import adbc_driver_sqlite.dbapi as driver
db, sql, params, rounds = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), int(sys.argv[4])
wall, cpu, rows = [], [], set()
for _ in range(rounds):
    gc.collect()
    t0, c0 = time.perf_counter(), time.process_time()
    with driver.connect(db) as conn, conn.cursor() as cursor:
        cursor.execute(sql, params)
        rows.add(cursor.fetch_arrow_table().num_rows)
    wall.append(time.perf_counter() - t0)
    cpu.append(time.process_time() - c0)
print(json.dumps({"wall": wall, "cpu": cpu, "rows": sorted(rows)}))
"""


def _adbc_floor(db: Path, sql: str, params: list[Any], rounds: int) -> tuple[list[float], list[float], list[int]]:
    """ADBC's fetch of ``sql`` as Arrow, timed ``rounds`` times in a process of its own.

    Never in this one: ``adbc-driver-sqlite`` carries its own copy of SQLite, which deletes
    the WAL under this process's connections when its own closes (see
    `skybutler.registry._arrow_adbc`); the rest of the workload would then write into a
    deleted WAL (or die of SIGBUS).
    """
    proc = subprocess.run([sys.executable, "-c", _ADBC_FLOOR, str(db), sql, json.dumps(params), str(rounds)],
                          capture_output=True, text=True, check=True)
    got = json.loads(proc.stdout)
    return got["wall"], got["cpu"], got["rows"]


def _pipeline_rows(butler: Any, run: str, visits: list[int]) -> dict[str, Any]:
    """Build the one-task graph over every dataset of ``run``, then build and run it for EXEC_VISITS visits."""
    import _pipe_tasks

    from skybutler.pipeline import build_quantum_graph, execute_graph

    pipeline = _pipe_tasks.pipeline()
    out: dict[str, Any] = {}
    gc.collect()
    t0 = time.perf_counter()
    graph = build_quantum_graph(butler, pipeline, input_collections=[run], output_run="bench/pipe_build")
    out["graph_build"] = _rate(len(graph), time.perf_counter() - t0)
    where = f"visit IN ({', '.join(map(str, visits[:EXEC_VISITS]))})"
    graph = build_quantum_graph(butler, pipeline, input_collections=[run], output_run="bench/pipe_exec", where=where)
    gc.collect()
    t0 = time.perf_counter()
    report = execute_graph(butler, graph, processes=1)
    out["quantum_exec"] = _rate(len(graph), time.perf_counter() - t0)
    counts = report.counts()
    assert counts == {"bench_copy": {"succeeded": len(graph)}}, counts
    out["quantum_exec"]["note"] = "in-process executor; provenance of every quantum recorded"
    return out


def skybutler_workload(n: int, root: Path, calls: int, queries_only: bool = False) -> dict[str, Any]:
    """The skybutler child: every operation (or only the reads) on a new repository under ``root``."""
    import skybutler
    from skybutler import Butler
    from skybutler.butler import FileDataset

    out: dict[str, Any] = {"system": "skybutler", "version": skybutler.__version__, "n": n,
                           "python": sys.version.split()[0], "sqlite": sqlite3.sqlite_version,
                           "adbc": importlib.util.find_spec("adbc_driver_sqlite") is not None}
    butler = Butler.create(root / "sky_repo")
    t0 = time.perf_counter()
    data_ids = hsc_records(butler, math.ceil(n / DETECTORS))[:n]
    out["setup_records_s"] = time.perf_counter() - t0
    butler.register_dataset_type(DATASET_TYPE, ["instrument", "visit", "detector"], "dict")
    m = min(n, calls)
    out["calls"] = m

    def did(v: int, d: int) -> dict[str, Any]:
        return {"instrument": "HSC", "visit": v, "detector": d}

    if not queries_only:
        bp = butler.with_run("bench/put")
        gc.collect()
        t0 = time.perf_counter()
        for v, d in data_ids[:m]:
            bp.put(_obj(v, d), DATASET_TYPE, did(v, d))
        out["put"] = _rate(m, time.perf_counter() - t0)

        cfg = butler.config.model_copy(deep=True)
        cfg.registry.sync_every_commit = True
        sb = Butler(butler.root, run="bench/put_sync", _config=cfg)
        gc.collect()
        t0 = time.perf_counter()
        for v, d in data_ids[:m]:
            sb.put(_obj(v, d), DATASET_TYPE, did(v, d))
        out["put_sync"] = _rate(m, time.perf_counter() - t0)
        sb.close()
        for key, sync in (("put_floor", False), ("put_sync_floor", True)):
            out[key] = _put_floor(root / key, data_ids[:m], sync)
        registry_file = Path(butler.root) / "registry.sqlite3"
        type_id = _scalar(registry_file, "SELECT id FROM dataset_type WHERE name = ?", DATASET_TYPE)
        for key, sync in (("put_schema_floor", False), ("put_sync_schema_floor", True)):
            butler.registry.register_collection(f"bench/{key}")
            run_id = _scalar(registry_file, "SELECT id FROM collection WHERE name = ?", f"bench/{key}")
            out[key] = _put_schema_floor(registry_file, root / key, run_id, type_id, data_ids[:m], sync)

        items = [(_obj(v, d), DATASET_TYPE, did(v, d)) for v, d in data_ids]
        b = butler.with_run("bench/put_many")
        gc.collect()
        t0 = time.perf_counter()
        for i in range(0, n, BATCH):
            b.put_many(items[i:i + BATCH])
        out["put_many"] = _rate(n, time.perf_counter() - t0)

    src = root / "sky_src"
    src.mkdir()
    paths = []
    for v, d in data_ids:
        p = src / f"raw_{v}_{d:03d}.json"
        p.write_text(json.dumps(_obj(v, d)))
        paths.append(p)
    for name, transfer in (("ingest_direct", "direct"), ("ingest_copy", "copy"))[:1 if queries_only else 2]:
        files = [FileDataset(str(p), DATASET_TYPE, did(v, d)) for p, (v, d) in zip(paths, data_ids, strict=True)]
        gc.collect()
        t0 = time.perf_counter()
        butler.ingest(files, run=f"bench/{name}", transfer=transfer)
        out[name] = _rate(n, time.perf_counter() - t0)

    run = "bench/ingest_direct" if queries_only else "bench/ingest_copy"
    b = butler.with_run(run)
    if not queries_only:
        refs = sorted(b.query_datasets(DATASET_TYPE, collections=[run]),
                      key=lambda r: (r.data_id["visit"], r.data_id["detector"]))
        gc.collect()
        t0 = time.perf_counter()
        values = [b.get(r) for r in refs[:m]]
        out["get_ref"] = _rate(m, time.perf_counter() - t0)
        assert values[-1]["detector"] == data_ids[m - 1][1]

        gc.collect()
        t0 = time.perf_counter()
        for v, d in data_ids[:m]:
            b.get(DATASET_TYPE, did(v, d), collections=[run])
        out["get_data_id"] = _rate(m, time.perf_counter() - t0)

    # The same query three ways, alternated so that each sees the same minutes of the machine.
    db = root / "sky_repo" / "registry.sqlite3"
    raw = sqlite3.connect(db)
    run_id = raw.execute("SELECT id FROM collection WHERE name = ?", (run,)).fetchone()[0]
    type_id = raw.execute("SELECT id FROM dataset_type WHERE name = ?", (DATASET_TYPE,)).fetchone()[0]
    # The floor: the columns a ref (or a table row) is made of, by the bare driver.
    raw_sql = "SELECT id, run_id, instrument, visit, detector FROM dataset WHERE dataset_type_id = ? AND run_id = ?"
    ways = {
        "query_all": lambda: len(list(b.query_datasets(DATASET_TYPE, collections=[run]))),
        "query_all_arrow": lambda: b.query_datasets(DATASET_TYPE, collections=[run]).to_arrow().num_rows,
        "query_all_arrow_dbapi": lambda: _arrow_in_transaction(b, run),
        "query_all_raw": lambda: len(raw.execute(raw_sql, (type_id, run_id)).fetchall()),
    }
    sample = next(iter(b.query_datasets(DATASET_TYPE, collections=[run])))
    ways["query_all_raw_refs"] = lambda: _raw_refs(raw, raw_sql, (type_id, run_id), run, sample)
    samples: dict[str, list[float]] = {k: [] for k in ways}
    cpu: dict[str, list[float]] = {k: [] for k in ways}
    for _ in range(9):
        for key, fn in ways.items():
            gc.collect()
            t0, c0 = time.perf_counter(), time.process_time()
            count = fn()
            samples[key].append(time.perf_counter() - t0)
            cpu[key].append(time.process_time() - c0)
            assert count == n, (key, count)
    raw.close()
    if out["adbc"]:  # the database is idle meanwhile: nothing in this process reads or writes it
        samples["query_all_raw_adbc"], cpu["query_all_raw_adbc"], counts = _adbc_floor(
            db, raw_sql, [type_id, run_id], 9)
        assert counts == [n], counts
    for key, s in samples.items():
        out[key] = _latency(s[1:], cpu[key][1:])

    visits = sorted({v for v, _ in data_ids})
    s = _timed_calls(lambda i: list(b.query_datasets(DATASET_TYPE, collections=[run],
                                                     where=f"visit = {visits[i % len(visits)]}")), 60)
    out["query_visit"] = _latency(s[5:])
    s = _timed_calls(lambda i: b.find_dataset(DATASET_TYPE, did(*data_ids[(i * 37) % n]), collections=[run]), 300)
    out["find_one"] = _latency(s[10:])

    if not queries_only:
        out.update(_pipeline_rows(butler, run, visits))

    gc.collect()
    t0 = time.perf_counter()
    butler.remove_runs([run])
    out["remove_run"] = _rate(n, time.perf_counter() - t0)
    butler.close()
    return out


def _durability(key: str, system: str) -> str:
    """How durable a write row's commits (and files) are; reads say "read"."""
    if key.startswith(("query", "get")) or key == "find_one":
        return "read"
    if key == "put_floor":
        return DEFAULT_DURABILITY + "; files not synced"
    if key in ("put_sync_floor", "put_sync_schema_floor"):
        return "WAL, synchronous=FULL (every commit synced); file and directory synced"
    if key == "put_schema_floor":
        return DEFAULT_DURABILITY + "; files not synced"
    if system == "daf_butler":
        return DAF_DURABILITY
    from skybutler.datastore import Datastore

    files = "files synced" if "sync" in inspect.signature(Datastore).parameters else "files not synced"
    if key == "put_sync":
        return f"WAL, synchronous=FULL (every commit synced); {files}"
    return DEFAULT_DURABILITY + "; files not synced"


def _child(cmd: list[str], out: Path) -> dict[str, Any] | None:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        print(f"child {cmd[0]} failed:\n{proc.stderr[-3000:]}", file=sys.stderr)
        return None
    figures = json.loads(out.read_text())
    figures["wall_s"] = time.perf_counter() - t0
    return figures


def _value(figures: dict[str, Any] | None, key: str, kind: str) -> float | None:
    if figures is None or key not in figures:
        return None
    return float(figures[key]["rate" if kind == "rate" else "ms"])


def report(sky: dict[str, Any] | None, daf: dict[str, Any] | None) -> None:
    """Print one row per operation: both figures, the ratio (>1: skybutler faster) and each durability."""
    def fmt(v: float | None, kind: str) -> str:
        if v is None:
            return "—"
        return f"{v:,.0f}/s" if kind == "rate" else f"{v:.2f} ms"

    print(f"\n{'operation':<44} {'skybutler':>12} {'daf_butler':>12} {'ratio':>7}  durability (skybutler | daf_butler)")
    daf_keys = {"put_sync": "put", "query_all_arrow": "query_all", "query_all_arrow_dbapi": "query_all",
                "query_all_raw": "query_all", "query_all_raw_adbc": "query_all", "query_all_raw_refs": "query_all",
                "put_floor": "put", "put_sync_floor": "put", "put_schema_floor": "put",
                "put_sync_schema_floor": "put"}
    for key, label, kind in ROWS:
        s = _value(sky, key, kind)
        d = _value(daf, daf_keys.get(key, key), kind)
        ratio = "—"
        if s and d:
            ratio = f"{s / d:.1f}×" if kind == "rate" else f"{d / s:.1f}×"
        dur = _durability(key, "skybutler")
        if dur != "read":
            dur += f" | {_durability(key, 'daf_butler') if d else '—'}"
        print(f"{label:<44} {fmt(s, kind):>12} {fmt(d, kind):>12} {ratio:>7}  {dur}")
    if sky and "query_all_arrow" in sky and "query_all_raw" in sky:
        print(f"\nquery all as Arrow / raw sqlite3 fetch of the same rows: "
              f"{sky['query_all_arrow']['ms'] / sky['query_all_raw']['ms']:.2f}× (goal ≤ 2×; "
              f"ADBC {'installed' if sky.get('adbc') else 'not installed: DB-API path'})")
        if daf and "query_all" in daf:
            for unit, key in (("wall", "ms"), ("CPU", "cpu_ms")):
                if key not in daf["query_all"] or key not in sky["query_all"]:
                    continue
                d = daf["query_all"][key]
                low = min(sky[k][key] for k in ("query_all_raw", "query_all_raw_adbc") if key in sky.get(k, {}))
                print(f"query all, daf_butler / skybutler by {unit} time: refs {d / sky['query_all'][key]:.1f}× "
                      f"(goal ≥ 10×), Arrow {d / sky['query_all_arrow'][key]:.1f}× (goal ≥ 20×); at the raw "
                      f"fetch's floor ({low:.1f} ms) the most either could be is {d / low:.1f}×")
                if key in sky.get("query_all_raw_refs", {}):
                    floor = sky["query_all_raw_refs"][key]
                    print(f"  refs at their floor (raw fetch + one id, data id and ref object per row, "
                          f"{floor:.1f} ms): at most {d / floor:.1f}×")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--daf-python", type=Path, default=None,
                        help="a Python with lsst-daf-butler installed (without it, only skybutler runs)")
    parser.add_argument("--n", type=int, default=2000, help="datasets per write test (default 2,000)")
    parser.add_argument("--calls", type=int, default=2000, help="datasets in one-per-call loops (default 2,000)")
    parser.add_argument("--json", type=Path, default=None, help="also write both children's figures here")
    parser.add_argument("--queries-only", action="store_true",
                        help="fill one run by direct ingest and measure only the queries (quick at N = 10,000)")
    parser.add_argument("--child", choices=["skybutler"], help=argparse.SUPPRESS)
    parser.add_argument("--root", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        args.out.write_text(json.dumps(skybutler_workload(args.n, args.root, args.calls, args.queries_only)))
        return
    tmp = Path(tempfile.mkdtemp(prefix="skybutler-vs-daf-"))
    print(f"N = {args.n:,}, one-per-call loops over {min(args.n, args.calls):,}; {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}; work in {tmp}", flush=True)
    try:
        (tmp / "sky").mkdir()
        sky = _child([sys.executable, str(HERE / "compare_daf_butler.py"), "--child", "skybutler", "--n", str(args.n),
                      "--calls", str(args.calls), "--root", str(tmp / "sky"), "--out", str(tmp / "sky.json"),
                      *(["--queries-only"] if args.queries_only else [])],
                     tmp / "sky.json")
        print(f"skybutler done ({sky['wall_s']:.0f} s), load {os.getloadavg()[0]:.1f}" if sky else "skybutler failed",
              flush=True)
        daf = None
        if args.daf_python:
            (tmp / "daf").mkdir()
            daf = _child([str(args.daf_python), str(HERE / "_daf_workload.py"), "--n", str(args.n),
                          "--calls", str(args.calls), "--root", str(tmp / "daf"), "--out", str(tmp / "daf.json"),
                           *(["--queries-only"] if args.queries_only else [])],
                         tmp / "daf.json")
            print(f"daf_butler {daf['version']} done ({daf['wall_s']:.0f} s), load {os.getloadavg()[0]:.1f}"
                  if daf else "daf_butler failed", flush=True)
        else:
            print("no --daf-python: skybutler only (see benchmarks/README.md for the one-line setup)")
        report(sky, daf)
        if args.json:
            args.json.write_text(json.dumps({"skybutler": sky, "daf_butler": daf}, indent=1))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
