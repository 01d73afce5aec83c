"""Speed of the core repository: put, ingest, get, query and remove of small datasets.

Usage::

    python benchmarks/bench_butler.py                      # N = 1,000 and 10,000 on SQLite, 10,000 on PostgreSQL
    python benchmarks/bench_butler.py --n 1000 10000 --postgresql postgresql://postgres@127.0.0.1:5432/test
    python benchmarks/bench_butler.py --postgresql none    # SQLite only
    python benchmarks/bench_butler.py --n 10000 --postgresql-only
    python benchmarks/bench_butler.py --json out.json      # also write the raw figures

Each (backend, N) case runs in its own subprocess so its peak RSS (``ru_maxrss``) is
its own. Datasets are small dicts written as JSON, with HSC-like data ids:
``ceil(N / 100)`` visits x 100 detectors. SQLite cases use a repository in a temporary
directory; the PostgreSQL case uses a throwaway schema that is dropped afterwards.
Every write test writes its own run (so reads see about 5 N datasets); reads use the
``put_many`` run. The query/find reads are repeated after ``ANALYZE`` (fresh tables have
no planner statistics). ``registry.sync_every_commit: true`` (fsync on every commit) is
always measured as one extra row for SQLite (put one per call, on the same repository);
``--sync`` measures it over N puts instead of at most 2,000. On PostgreSQL the
one-per-call loops (put, get) cover ``--pg-calls`` datasets (default 2,000), not N.
The PostgreSQL case ends with the floors of its writes (`pg_floors`): the same rows
on raw psycopg into the repository's own tables, the same number of files made, and
each ingested file read, so that a write's rate shows what is skybutler's beyond them.

See benchmarks/RESULTS.md for figures on the project machine.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import resource
import statistics
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _records import (
    DETECTORS,
    FreshProcessError,
    commit_samples,
    drop_schemas,
    hsc_records,
    new_schema_name,
    print_result,
    run_fresh,
)

DEFAULT_PG = "postgresql://postgres@127.0.0.1:5432/test"
BATCH = 1000
SYNC_COUNT = 2000
DATASET_TYPE = "bench_metadata"

# (name, label, kind, target at N=10,000); kind "rate" is per second (higher is better), "ms" a latency.
OPS: list[tuple[str, str, str, float | None]] = [
    ("put", "put (one per call)", "rate", 2500),
    ("put_sync", "put, sync_every_commit: true", "rate", None),
    ("put_many", f"put_many ({BATCH} per call)", "rate", 20000),
    ("insert_rows", "registry rows only (datasets + file records, 1 call)", "rate", None),
    ("ingest_direct", "ingest direct (md5)", "rate", 40000),
    ("ingest_direct_nock", "ingest direct (checksum=False)", "rate", None),
    ("ingest_copy", "ingest copy (md5)", "rate", 10000),
    ("get_ref", "get by ref", "rate", 8000),
    ("get_data_id", "get by data id (find + read)", "rate", 2000),
    ("query_all", "query all N refs", "ms", 20),
    ("query_visit", "query one visit (100 refs)", "ms", 1.0),
    ("find_one", "find_dataset (one)", "ms", 0.5),
    ("query_all_analyzed", "query all N refs, after ANALYZE", "ms", 20),
    ("query_visit_analyzed", "query one visit, after ANALYZE", "ms", 1.0),
    ("find_one_analyzed", "find_dataset, after ANALYZE", "ms", 0.5),
    ("remove_run", "remove run (N datasets + files)", "rate", None),
    ("pg_round_trip", "round trip: psycopg SELECT 1 (the floor)", "ms", None),
    ("pg_commit", "INSERT + COMMIT, raw psycopg (a put's floor: WAL flush)", "ms", None),
    ("pg_floor_put", "floor of put: bare psycopg, dataset + file row, 1 transaction", "rate", None),
    ("pg_floor_put_many", "floor of put_many: rows by COPY + files made, 1000 per commit", "rate", None),
    ("pg_floor_put_many_rows", "  its rows: datasets + file records by COPY", "rate", None),
    ("pg_floor_put_many_files", "  its files: written + renamed, one directory", "rate", None),
    ("pg_floor_ingest", "floor of ingest direct (md5): rows by COPY + each file read", "rate", None),
    ("pg_floor_ingest_rows", "  its rows: datasets, file records, origins by COPY", "rate", None),
    ("pg_floor_ingest_read", "  its files: open, fstat, read, md5, close", "rate", None),
]

# PostgreSQL's own targets (issue 11, loopback server), where they differ from SQLite's.
PG_TARGETS: dict[str, float | None] = {
    "put": 2000, "get_ref": 5000, "query_visit": 1.5, "query_visit_analyzed": 1.5,
    "find_one": 0.4, "find_one_analyzed": 0.4,
}


# --------------------------------------------------------------------------- worker




def _rate(n: int, seconds: float) -> dict[str, float]:
    return {"n": n, "seconds": seconds, "rate": n / seconds, "us_per_item": 1e6 * seconds / n}


def _latency(samples: list[float], items: int) -> dict[str, float]:
    ms = statistics.median(samples) * 1e3
    return {"ms": ms, "min_ms": min(samples) * 1e3, "calls": len(samples), "items": items,
            "us_per_item": 1e3 * ms / max(items, 1)}


def _timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def _round_trips(pg_url: str, count: int = 1000) -> list[float]:
    """Seconds per ``SELECT 1`` on a raw psycopg connection: one round trip to the server."""
    import psycopg

    with psycopg.connect(pg_url, autocommit=True) as raw:
        return [_timed(lambda: raw.execute("SELECT 1").fetchall())[0] for _ in range(count)]


def _floor_rows(raw: Any, run: str, data_ids: list[tuple[int, int]], dataset_type: str,
                ) -> list[tuple[tuple[Any, ...], tuple[Any, ...]]]:
    """``(dataset row, file row)`` of each data id, as skybutler stores them, in a new run ``run``."""
    import uuid

    type_id = raw.execute("SELECT id FROM dataset_type WHERE name = %s", (dataset_type,)).fetchone()[0]
    run_id = raw.execute("INSERT INTO collection (name, type) VALUES (%s, 'RUN') RETURNING id", (run,)).fetchone()[0]
    rows = []
    for v, d in data_ids:
        i = uuid.uuid4()
        rows.append(((i, type_id, run_id, f"detector={d}|instrument=HSC|visit={v}", "HSC", v, d),
                     (i, f"{run}/{v}/{dataset_type}_{v}_{d:03d}.json", 80, "0" * 32, "md5", "json")))
    return rows


_DATASET_COLUMNS = "id, dataset_type_id, run_id, data_id_key, instrument, visit, detector"
_FILE_COLUMNS = "dataset_id, path, size, checksum, checksum_algorithm, format"


def _copy_rows(raw: Any, rows: list[tuple[tuple[Any, ...], tuple[Any, ...]]], origins: list[str] | None = None) -> None:
    """The rows by COPY (datasets, file records and, when given, origins), in the transaction open on ``raw``."""
    with raw.cursor() as cursor:
        with cursor.copy(f"COPY dataset ({_DATASET_COLUMNS}) FROM STDIN") as copy:
            for row, _ in rows:
                copy.write_row(row)
        with cursor.copy(f"COPY file ({_FILE_COLUMNS}) FROM STDIN") as copy:
            for _, row in rows:
                copy.write_row(row)
        if origins is not None:
            with cursor.copy("COPY dataset_origin (dataset_id, original_path) FROM STDIN") as copy:
                for (row, _), path in zip(rows, origins, strict=True):
                    copy.write_row((row[0], path))


def pg_floors(pg_url: str, namespace: str, data_ids: list[tuple[int, int]], calls: int, work: Path,
              sources: list[Path]) -> dict[str, Any]:
    """What the server and the disk alone take for the rows and files of put, put_many and ingest direct.

    On raw psycopg, into the repository's own tables (their indexes, foreign keys and
    WAL), each in a run of its own: (a) put: one dataset and its file row per
    transaction, BEGIN and both INSERTs sent together (a pipeline) and COMMIT, two
    round trips as skybutler's put; (b) put_many: per 1,000, the rows by COPY and as
    many files written under a temporary name and renamed into one directory, one
    commit; (c) ingest direct: the rows (datasets, file records, origins) by COPY in
    one transaction, and each source file opened, sized (fstat), read and checksummed
    (md5), which is all a direct ingest does with a file.
    """
    import hashlib

    import psycopg

    out: dict[str, Any] = {}
    with psycopg.connect(pg_url, autocommit=True) as raw:
        raw.execute(f'SET search_path TO "{namespace}"')
        rows = _floor_rows(raw, "floor/put", data_ids[:calls], DATASET_TYPE)
        insert_dataset = f"INSERT INTO dataset ({_DATASET_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s)"
        insert_file = f"INSERT INTO file ({_FILE_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s)"
        gc.collect()
        t0 = time.perf_counter()
        for dataset_row, file_row in rows:
            with raw.pipeline():
                raw.execute("BEGIN")
                raw.execute(insert_dataset, dataset_row)
                raw.execute(insert_file, file_row)
            raw.execute("COMMIT")
        out["pg_floor_put"] = _rate(len(rows), time.perf_counter() - t0)

        payload = b'{"visit": 903334, "detector": 0, "zero_point": 27.0, "ok": true}' + b" " * 16
        took: dict[str, float] = {}
        for part in ("rows", "files", "both"):
            rows = _floor_rows(raw, f"floor/put_many_{part}", data_ids, DATASET_TYPE)
            gc.collect()
            t0 = time.perf_counter()
            for start in range(0, len(rows), BATCH):
                batch = rows[start:start + BATCH]
                with raw.transaction():
                    if part != "files":
                        _copy_rows(raw, batch)
                    if part != "rows":
                        folder = work / part / str(start)
                        folder.mkdir(parents=True)
                        for i in range(len(batch)):
                            temporary = folder / f".tmp_{i}"
                            with open(temporary, "xb") as f:
                                f.write(payload)
                            os.rename(temporary, folder / f"{i}.json")
            took[part] = time.perf_counter() - t0
        out["pg_floor_put_many"] = _rate(len(rows), took["both"])
        out["pg_floor_put_many_rows"] = _rate(len(rows), took["rows"])
        out["pg_floor_put_many_files"] = _rate(len(rows), took["files"])

        rows = _floor_rows(raw, "floor/ingest", data_ids[:len(sources)], DATASET_TYPE)
        gc.collect()
        t0 = time.perf_counter()
        for path in sources:
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fstat(fd)
                hashlib.md5(os.read(fd, 1 << 20)).hexdigest()
            finally:
                os.close(fd)
        read_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        with raw.transaction():
            _copy_rows(raw, rows, [str(p) for p in sources])
        rows_s = time.perf_counter() - t0
        out["pg_floor_ingest"] = _rate(len(rows), read_s + rows_s)
        out["pg_floor_ingest_rows"] = _rate(len(rows), rows_s)
        out["pg_floor_ingest_read"] = _rate(len(rows), read_s)
    return out


def run_case(backend: str, n: int, *, pg_url: str, sync_count: int, calls: int) -> dict[str, Any]:
    """Run every operation for one backend and N; return the figures.

    The repository holds the N datasets of every write test (about 5 N in all) when
    the reads run. One-per-call loops (put, get) run over ``min(N, calls)`` datasets.
    """
    from skybutler import Butler
    from skybutler.butler import FileDataset

    tmp = Path(tempfile.mkdtemp(prefix=f"skybutler-bench-{backend}-{n}-"))
    namespace = None
    registry = None
    if backend == "postgresql":
        namespace = new_schema_name()
        registry = pg_url
    results: dict[str, Any] = {"backend": backend, "n": n, "load_before": os.getloadavg()[0]}
    butler = None
    try:
        butler = Butler.create(tmp / "repo", registry=registry, namespace=namespace)
        n_visits = math.ceil(n / DETECTORS)
        data_ids = hsc_records(butler, n_visits)[:n]
        butler.register_dataset_type(DATASET_TYPE, ["instrument", "visit", "detector"], "dict")

        def obj(v: int, d: int) -> dict[str, Any]:
            return {"visit": v, "detector": d, "zero_point": 27.0 + d / 1000, "ok": True}

        m_calls = min(n, calls)
        results["calls"] = m_calls
        if backend == "postgresql":
            assert namespace is not None
            round_trips = _round_trips(pg_url)  # the floor of every statement, measured again at the end
            commits = commit_samples(pg_url, namespace)  # the floor of every put (one commit each)

        # put, one per call
        bp = butler.with_run("bench/put")
        gc.collect()
        dt, _ = _timed(lambda: [bp.put(obj(v, d), DATASET_TYPE, instrument="HSC", visit=v, detector=d)
                                for v, d in data_ids[:m_calls]])
        results["put"] = _rate(m_calls, dt)

        # put with an fsync on every commit (SQLite only: PostgreSQL keeps its own durable defaults)
        if backend == "sqlite":
            cfg = butler.config.model_copy(deep=True)
            cfg.registry.sync_every_commit = True
            sb = Butler(butler.root, run="bench/put_sync", _config=cfg)
            m = min(n, sync_count)
            dt, _ = _timed(lambda: [sb.put(obj(v, d), DATASET_TYPE, instrument="HSC", visit=v, detector=d)
                                    for v, d in data_ids[:m]])
            results["put_sync"] = _rate(m, dt)
            sb.close()

        # put_many, in batches; the reads below use this run
        run = "bench/put_many"
        b = butler.with_run(run)
        items = [(obj(v, d), DATASET_TYPE, {"instrument": "HSC", "visit": v, "detector": d}) for v, d in data_ids]
        refs: list[Any] = []
        gc.collect()
        dt, _ = _timed(lambda: [refs.extend(b.put_many(items[i:i + BATCH])) for i in range(0, n, BATCH)])
        results["put_many"] = _rate(n, dt)

        # The registry's share of put_many and ingest: the same rows (datasets and file
        # records, refs already made) inserted with no file written or read, one call.
        from skybutler.model import DatasetRef, new_dataset_id
        from skybutler.registry import FileRecord

        rows_only = [DatasetRef(new_dataset_id(), r.dataset_type, r.data_id, "bench/rows_only") for r in refs]
        records = [FileRecord(r.id, f"rows_only/{i}.json", 80, None, None, "json") for i, r in enumerate(rows_only)]
        gc.collect()
        dt, _ = _timed(lambda: butler.registry.insert_datasets(rows_only, records, register_runs=True))
        results["insert_rows"] = _rate(n, dt)

        # ingest: N small JSON files made beforehand, outside the repository
        for name, transfer, checksum in (("ingest_direct", "direct", True),
                                         ("ingest_direct_nock", "direct", False),
                                         ("ingest_copy", "copy", True)):
            src = tmp / "src" / name
            src.mkdir(parents=True)
            files = []
            for v, d in data_ids:
                p = src / f"raw_{v}_{d:03d}.json"
                p.write_text(json.dumps(obj(v, d)))
                files.append(FileDataset(str(p), DATASET_TYPE, {"instrument": "HSC", "visit": v, "detector": d}))
            gc.collect()
            dt, _ = _timed(lambda files=files, transfer=transfer, checksum=checksum, name=name: butler.ingest(
                files, run=f"bench/{name}", transfer=transfer, checksum=checksum))
            results[name] = _rate(n, dt)

        # get by ref
        gc.collect()
        dt, values = _timed(lambda: [b.get(r) for r in refs[:m_calls]])
        assert values[-1]["detector"] == data_ids[m_calls - 1][1]
        results["get_ref"] = _rate(m_calls, dt)

        # get by data id: find through the registry, then read
        gc.collect()
        dt, _ = _timed(lambda: [b.get(DATASET_TYPE, instrument="HSC", visit=v, detector=d, collections=[run])
                                for v, d in data_ids[:m_calls]])
        results["get_data_id"] = _rate(m_calls, dt)

        # queries
        def query_all() -> int:
            return len(list(b.query_datasets(DATASET_TYPE, collections=[run])))

        visits = sorted({v for v, _ in data_ids})

        def queries(suffix: str = "") -> None:
            assert query_all() == n  # warm
            samples = []
            for _ in range(7):
                gc.collect()
                t, count = _timed(query_all)
                samples.append(t)
            results["query_all" + suffix] = _latency(samples, n)

            samples = []
            for i in range(200):
                v = visits[i % len(visits)]
                t, refs_v = _timed(lambda v=v: list(b.query_datasets(DATASET_TYPE, collections=[run],
                                                                       where=f"visit = {v}")))
                samples.append(t)
            assert len(refs_v) == DETECTORS
            results["query_visit" + suffix] = _latency(samples[10:], DETECTORS)

            samples = []
            for i in range(1000):
                v, d = data_ids[(i * 7919) % n]
                t, ref = _timed(lambda v=v, d=d: b.find_dataset(DATASET_TYPE, instrument="HSC", visit=v,
                                                              detector=d, collections=[run]))
                samples.append(t)
            assert ref is not None
            results["find_one" + suffix] = _latency(samples[10:], 1)

        queries()
        # Right after bulk writes the tables have no planner statistics: PostgreSQL's autovacuum
        # adds them within about a minute, SQLite only on an explicit ANALYZE. Measure again
        # with statistics, and time the ANALYZE.
        with butler.registry.engine.begin() as conn:
            t0 = time.perf_counter()
            if backend == "postgresql":
                conn.exec_driver_sql(f'ANALYZE "{namespace}".dataset')
                conn.exec_driver_sql(f'ANALYZE "{namespace}".file')
            else:
                conn.exec_driver_sql("PRAGMA analysis_limit=1000")
                conn.exec_driver_sql("ANALYZE")
            results["analyze_ms"] = (time.perf_counter() - t0) * 1e3
        queries("_analyzed")
        if backend == "postgresql":
            round_trips += _round_trips(pg_url)
            results["pg_round_trip"] = _latency(round_trips, 1)
            results["pg_commit"] = _latency(commits + commit_samples(pg_url, namespace), 1)
            results["pg_round_trip_us"] = results["pg_round_trip"]["ms"] * 1e3

        # memory of streaming all N refs (tracemalloc: Python allocations only)
        gc.collect()
        tracemalloc.start()
        query_all()
        results["query_all_tracemalloc_mb"] = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
        del values

        # remove the put_many run: N rows and N files
        gc.collect()
        dt, counts = _timed(lambda: butler.remove_runs([run]))
        assert counts[run] == n
        results["remove_run"] = _rate(n, dt)
        if backend == "postgresql":
            assert namespace is not None
            results.update(pg_floors(pg_url, namespace, data_ids, m_calls, tmp / "floor",
                                     sorted((tmp / "src" / "ingest_direct").iterdir())))
        results["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        results["load_after"] = os.getloadavg()[0]
        return results
    finally:
        if butler is not None:
            butler.close()
        if namespace is not None:
            drop_schemas(pg_url, [namespace])
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)


# --------------------------------------------------------------------------- driver


def _figure(op: str, kind: str, res: dict[str, Any] | None) -> str:
    if res is None or op not in res:
        return "-"
    r = res[op]
    if kind == "rate":
        return f"{r['rate']:,.0f}/s"
    return f"{r['ms']:,.3f} ms" if r["ms"] < 0.1 else f"{r['ms']:,.2f} ms"


def _met(kind: str, target: float | None, r: dict[str, Any] | None) -> str | None:
    if target is None or r is None:
        return None
    ok = r["rate"] >= target if kind == "rate" else r["ms"] <= target
    return "met" if ok else "MISSED"


def report(cases: list[dict[str, Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=160)
    for backend in ("sqlite", "postgresql"):
        mine = sorted((c for c in cases if c["backend"] == backend), key=lambda c: c["n"])
        if not mine:
            continue
        title = "SQLite + local files" if backend == "sqlite" else "PostgreSQL + local files"
        table = Table(title=title)
        table.add_column("operation")
        for c in mine:
            table.add_column(f"N={c['n']:,}", justify="right")
            table.add_column("µs/item", justify="right")
        table.add_column("target (N=10,000)", justify="right")
        table.add_column("at N=10,000")
        if len(mine) > 1:
            table.add_column("µs/item ratio", justify="right")
        for op, label, kind, target in OPS:
            if not any(op in c for c in mine):
                continue
            sized = op in ("query_all", "query_all_analyzed", "remove_run")
            row = [label.replace("N ", f"{mine[-1]['n']:,} ") if sized else label]
            for c in mine:
                row += [_figure(op, kind, c), f"{c[op]['us_per_item']:,.1f}" if op in c else "-"]
            big = next((c for c in mine if c["n"] == 10000), None)
            target = PG_TARGETS.get(op, target) if backend == "postgresql" else target
            tgt = "" if target is None else (f"≥ {target:,.0f}/s" if kind == "rate" else f"≤ {target:g} ms")
            met = _met(kind, target, big.get(op) if big else None)
            row += [tgt, "" if met is None else (f"[green]{met}" if met == "met" else f"[red]{met}")]
            if len(mine) > 1:
                a, z = mine[0].get(op), mine[-1].get(op)
                row.append(f"{z['us_per_item'] / a['us_per_item']:.2f}" if a and z else "-")
            table.add_row(*row)
        mem = ["peak RSS"] + sum(([f"{c['peak_rss_mb']:.0f} MB", ""] for c in mine), []) + ["", ""]
        tm = ["query all: tracemalloc peak"] + sum(
            ([f"{c['query_all_tracemalloc_mb']:.1f} MB", ""] for c in mine), []) + ["", ""]
        if len(mine) > 1:
            mem.append("")
            tm.append("")
        table.add_row(*mem)
        table.add_row(*tm)
        console.print(table)
    notes = []
    if any(c["backend"] == "sqlite" for c in cases):
        notes.append(f"put with sync_every_commit: over min(N, {SYNC_COUNT}) puts on the same repository; "
                     "µs/item ratio: per-item cost at the largest N over that at the smallest (≤ 1: it does not grow).")
    for c in cases:
        if c["calls"] < c["n"]:
            notes.append(f"{c['backend']} N={c['n']:,}: put one per call and get loops over {c['calls']:,} datasets "
                         "(of a repository holding the others).")
    notes.append("ANALYZE took " + ", ".join(
        f"{c['analyze_ms']:.0f} ms ({c['backend']} N={c['n']:,})" for c in cases if "analyze_ms" in c) + ".")
    for c in cases:
        if "pg_round_trip_us" in c:
            notes.append(f"PostgreSQL round trip (psycopg SELECT 1, median): {c['pg_round_trip_us']:.0f} µs.")
    notes.append("1-minute load average before/after each case: " + ", ".join(
        f"{c['backend']} N={c['n']:,}: {c['load_before']:.1f}/{c['load_after']:.1f}" for c in cases))
    for note in notes:
        console.print(note)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, nargs="+", default=[1000, 10000], help="dataset counts (SQLite)")
    parser.add_argument("--postgresql", default=DEFAULT_PG,
                        help="PostgreSQL URL for one run at the largest N ('none' to skip)")
    parser.add_argument("--pg-n", type=int, default=None, help="N for PostgreSQL (default: largest --n)")
    parser.add_argument("--sync", action="store_true", help="measure sync_every_commit over N puts, not ≤ 2,000")
    parser.add_argument("--pg-calls", type=int, default=2000,
                        help="PostgreSQL: one-per-call loops (put, get) over this many datasets, not N")
    parser.add_argument("--postgresql-only", action="store_true", help="skip the SQLite cases")
    parser.add_argument("--json", help="also write the raw figures to this file")
    parser.add_argument("--worker", nargs=2, metavar=("BACKEND", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    sync_count = 10**9 if args.sync else SYNC_COUNT

    if args.worker:
        backend, n = args.worker[0], int(args.worker[1])
        calls = args.pg_calls if backend == "postgresql" else n
        out = run_case(backend, n, pg_url=args.postgresql, sync_count=sync_count, calls=calls)
        print_result(out)
        return 0

    plan = [] if args.postgresql_only else [("sqlite", n) for n in args.n]
    if args.postgresql.lower() != "none":
        plan.append(("postgresql", args.pg_n or max(args.n)))
    cases = []
    t_start = time.perf_counter()
    for backend, n in plan:
        worker_args = ["--worker", backend, str(n), "--postgresql", args.postgresql, "--pg-calls", str(args.pg_calls)]
        if args.sync:
            worker_args.append("--sync")
        print(f"running {backend} N={n:,} ...", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        try:
            cases.append(run_fresh(__file__, *worker_args, env={**os.environ, "PYTHONHASHSEED": "0"}))
        except FreshProcessError as failed:
            print(failed.stdout, failed.stderr, file=sys.stderr)
            if backend == "postgresql":
                print(f"PostgreSQL case failed (is the server at {args.postgresql} up?); skipped", file=sys.stderr)
                continue
            return 1
        print(f"  done in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    report(cases)
    print(f"total {time.perf_counter() - t_start:.0f} s", file=sys.stderr)
    if args.json:
        Path(args.json).write_text(json.dumps(cases, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
