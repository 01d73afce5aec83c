"""Cost of surviving a power loss: put and put_many with ``registry.sync_every_commit`` on and off.

Usage::

    python benchmarks/bench_durability.py              # 1,000 small datasets per case, 3 repeats
    python benchmarks/bench_durability.py --n 2000 --repeats 5

SQLite + local files. With sync on, every file and its directory (and each directory a
put creates, once) are ``fsync``ed before the registry commits, and SQLite commits with
``PRAGMA synchronous=FULL``; with it off, a killed process still loses nothing (WAL), only
a power loss or kernel crash can. Datasets are small dicts (JSON, ~40 bytes) with HSC-like
data ids; put writes one dataset per call (one transaction each), put_many all N in one
call. Each case gets a fresh repository; the figure is the median of the repeats, with the
range. What bounds sync-on put is the device's flush latency (three fsyncs per put: file,
directory, SQLite's WAL), so the figure depends on the disk far more than on skybutler.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(__file__))

from _records import DETECTORS, hsc_records  # noqa: E402

from skybutler import Butler  # noqa: E402


def repository(root: str, sync: bool, n: int) -> tuple[Butler, list[dict]]:
    butler = Butler.create(root, config={"registry": {"sync_every_commit": sync}}, run="bench")
    pairs = hsc_records(butler, (n + DETECTORS - 1) // DETECTORS)
    butler.register_dataset_type("bench_metadata", ["instrument", "visit", "detector"], "dict")
    data_ids = [{"instrument": "HSC", "visit": v, "detector": d} for v, d in pairs[:n]]
    return butler, data_ids


def put_one_per_call(butler: Butler, data_ids: list[dict]) -> float:
    start = time.perf_counter()
    for i, data_id in enumerate(data_ids):
        butler.put({"i": i, "seeing": 0.7}, "bench_metadata", data_id)
    return time.perf_counter() - start


def put_many(butler: Butler, data_ids: list[dict]) -> float:
    start = time.perf_counter()
    butler.put_many([({"i": i, "seeing": 0.7}, "bench_metadata", d) for i, d in enumerate(data_ids)])
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dir", default=None, help="Where the repositories go (the disk measured).")
    args = parser.parse_args()
    print(f"bench_durability: N={args.n}, {args.repeats} repeats, SQLite + local files under "
          f"{args.dir or tempfile.gettempdir()}")
    print(f"{'operation':<28}{'sync':>6}{'per item (ms)':>16}{'range':>20}{'items/s':>10}")
    results: dict[tuple[str, bool], float] = {}
    for name, op in (("put (one per call)", put_one_per_call), ("put_many (N per call)", put_many)):
        for sync in (False, True):
            times = []
            for _ in range(args.repeats):
                with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
                    butler, data_ids = repository(os.path.join(tmp, "repo"), sync, args.n)
                    try:
                        times.append(op(butler, data_ids) / args.n * 1e3)
                    finally:
                        butler.close()
            median = statistics.median(times)
            results[(name, sync)] = median
            print(f"{name:<28}{'on' if sync else 'off':>6}{median:>16.3f}{f'{min(times):.3f}-{max(times):.3f}':>20}"
                  f"{1e3 / median:>10.0f}")
    for name in ("put (one per call)", "put_many (N per call)"):
        print(f"sync costs {name}: x{results[(name, True)] / results[(name, False)]:.1f} "
              f"(+{results[(name, True)] - results[(name, False)]:.3f} ms per item)")


if __name__ == "__main__":
    main()
