"""Per-file cost of `Butler.ingest` (direct and copy) beside the floor: making the same files.

Usage::

    python benchmarks/bench_ingest.py                       # N = 10,000 on SQLite
    python benchmarks/bench_ingest.py --n 2000 --repeats 5
    python benchmarks/bench_ingest.py --postgresql postgresql://postgres@127.0.0.1:5432/test

N small JSON files (about 60 bytes, HSC-like data ids: ``ceil(N / 100)`` visits x 100
detectors) are written outside the repository, then ingested, each repeat into a fresh
run of the same repository (ids are per run, so the same files serve every repeat; a
``copy`` repeat gets new names under its run). The cases are interleaved, each repeat in
another order. Each row gives the best of ``--repeats`` runs: wall time, user and system
CPU per file (``getrusage``), files per second. The
floor row is the creation of the same N files by ``Path.write_text`` (an ingest with
checksums must at least open and read each file, which costs about as much as making
it). PostgreSQL uses a throwaway schema, dropped afterwards, and adds the floor of a
server commit (one ``INSERT`` + ``COMMIT`` on a raw psycopg connection).

The 1-minute load average is printed with every row: the machine is shared, take figures
measured in the same minutes only.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import resource
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _records import DETECTORS, commit_samples, hsc_records

DATASET_TYPE = "bench_raw"
FLOOR = ("floor: create the files", "", False)
CASES = [  # (label, transfer, checksum)
    ("ingest direct (md5)", "direct", True),
    ("ingest direct (checksum=False)", "direct", False),
    ("ingest copy (md5)", "copy", True),
]


def _usage() -> tuple[float, float, float]:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return time.perf_counter(), r.ru_utime, r.ru_stime


def _measure(fn: Callable[[], Any]) -> tuple[float, float, float]:
    """Wall, user and system seconds of one call of ``fn``."""
    gc.collect()
    w0, u0, s0 = _usage()
    fn()
    w1, u1, s1 = _usage()
    return w1 - w0, u1 - u0, s1 - s0


def _row(label: str, n: int, samples: list[tuple[float, float, float]]) -> None:
    wall = min(s[0] for s in samples)
    cpu = min(s[1] + s[2] for s in samples)
    best = min(samples, key=lambda s: s[1] + s[2])
    print(f"{label:34s} {n / wall:9,.0f}/s  wall {1e6 * wall / n:6.1f} us  cpu {1e6 * cpu / n:6.1f} us "
          f"(user {1e6 * best[1] / n:5.1f}, sys {1e6 * best[2] / n:5.1f})  load {os.getloadavg()[0]:.2f}",
          flush=True)


def run(n: int, repeats: int, pg_url: str | None) -> None:
    from skybutler import Butler
    from skybutler.butler import FileDataset

    tmp = Path(tempfile.mkdtemp(prefix="skybutler-bench-ingest-"))
    namespace = f"bench_{uuid.uuid4().hex[:12]}" if pg_url else None
    butler = None
    try:
        butler = Butler.create(tmp / "repo", registry=pg_url, namespace=namespace)
        data_ids = hsc_records(butler, math.ceil(n / DETECTORS))[:n]
        butler.register_dataset_type(DATASET_TYPE, ["instrument", "visit", "detector"], "dict")
        texts = [json.dumps({"visit": v, "detector": d, "zero_point": 27.0 + d / 1000, "ok": True})
                 for v, d in data_ids]
        print(f"{'sqlite' if pg_url is None else 'postgresql'}, N = {n:,}, best of {repeats}, "
              f"python {sys.version.split()[0]}", flush=True)

        files = [FileDataset(str(tmp / "src0" / f"raw_{v}_{d:03d}.json"), DATASET_TYPE,
                             {"instrument": "HSC", "visit": v, "detector": d}) for v, d in data_ids]
        samples: dict[str, list[tuple[float, float, float]]] = {label: [] for label, _, _ in [FLOOR, *CASES]}
        for i in range(repeats):
            # Interleaved, each repeat in another order: a case is not always the one that
            # finds the repository fuller, or the SQLite WAL checkpoint of the one before.
            order = [FLOOR, *CASES]
            for label, transfer, checksum in order[i % len(order):] + order[:i % len(order)]:
                if label == FLOOR[0]:
                    src = tmp / f"src{i}"
                    src.mkdir()
                    paths = [src / f"raw_{v}_{d:03d}.json" for v, d in data_ids]
                    samples[label].append(_measure(
                        lambda paths=paths: [p.write_text(t) for p, t in zip(paths, texts, strict=True)]))
                    if i:
                        shutil.rmtree(src)  # the files of the first repeat are the ones ingested
                    continue
                run_name = f"bench/{transfer}{'' if checksum else '_nock'}/{i}"
                samples[label].append(_measure(lambda run_name=run_name, transfer=transfer, checksum=checksum:
                                               butler.ingest(files, run=run_name, transfer=transfer,
                                                             checksum=checksum)))
        for label, values in samples.items():
            _row(label, n, values)
        if pg_url is not None and namespace is not None:
            print(f"{'floor: one server commit':34s} {1e3 * min(commit_samples(pg_url, namespace)):.3f} ms "
                  f"(INSERT + COMMIT, raw psycopg)", flush=True)
    finally:
        if butler is not None:
            butler.close()
        if pg_url is not None and namespace is not None:
            import psycopg

            with psycopg.connect(pg_url, autocommit=True) as raw:
                raw.execute(f'DROP SCHEMA IF EXISTS "{namespace}" CASCADE')
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=10_000, help="files per ingest (default 10,000)")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each case; the best is shown")
    parser.add_argument("--postgresql", metavar="URL", help="measure on this PostgreSQL server instead of SQLite")
    args = parser.parse_args()
    run(args.n, args.repeats, args.postgresql)


if __name__ == "__main__":
    main()
