"""Speed of rebuilding a lost registry from the files (target: 10,000 datasets a second).

Usage::

    python benchmarks/bench_rebuild.py                 # 10,000 datasets of each kind, 3 repeats
    python benchmarks/bench_rebuild.py --n 2000 --repeats 2

SQLite + local files. One repository per kind of file, each of ``--n`` datasets with
HSC-like data ids (``ceil(N/100)`` visits x 100 detectors), then, per repeat, its
registry deleted and rebuilt (warm page cache):

- ``json (manifest)``: small dicts, whose identity is in the run manifest;
- ``fits (header cards)``: 16 x 16 float32 images, identity in primary header cards;
- ``parquet (metadata)``: 3-row tables, identity in the Parquet key-value metadata;
- ``mixed``: a quarter of each of the above plus npy arrays.

Each file is read once (size, checksum, and the identity from its first blocks); what
bounds a kind is its identity read (Parquet: pyarrow's footer parse, ~0.5 ms) and, for
all, the registry inserts (dimension records, datasets and file rows in bulk).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile

import numpy as np
import pyarrow as pa

sys.path.insert(0, os.path.dirname(__file__))

from _records import DETECTORS, hsc_records  # noqa: E402

from skybutler import Butler, Image  # noqa: E402
from skybutler.ops.rebuild import rebuild  # noqa: E402

KINDS = {
    "json (manifest)": lambda i: ({"i": i, "seeing": 0.7}, "meta"),
    "fits (header cards)": lambda i: (Image(np.full((16, 16), i, "f4")), "calexp"),
    "parquet (metadata)": lambda i: (pa.table({"flux": [1.0, 2.0, float(i)]}), "src"),
}


def mixed(i: int) -> tuple[object, str]:
    if i % 4 == 3:
        return np.arange(4.0) + i, "psf"
    return list(KINDS.values())[i % 4](i)


def fill(root: str, n: int, make) -> Butler:
    butler = Butler.create(root, run="bench/run1")
    pairs = hsc_records(butler, (n + DETECTORS - 1) // DETECTORS)
    for name, storage_class in (("meta", "dict"), ("calexp", "image"), ("src", "table"), ("psf", "array")):
        butler.register_dataset_type(name, ["instrument", "visit", "detector"], storage_class)
    items = []
    for i, (visit, detector) in enumerate(pairs[:n]):
        obj, dataset_type = make(i)
        items.append((obj, dataset_type, {"instrument": "HSC", "visit": visit, "detector": detector}))
    for start in range(0, n, 2000):
        butler.put_many(items[start:start + 2000], run="bench/run1" if start % 4000 == 0 else "bench/run2")
    return butler


def lose_registry(root: str) -> None:
    for suffix in ("", "-wal", "-shm"):
        path = os.path.join(root, "registry.sqlite3" + suffix)
        if os.path.exists(path):
            os.remove(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dir", default=None)
    args = parser.parse_args()
    print(f"bench_rebuild: N={args.n}, {args.repeats} repeats, SQLite + local files; machine: {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.1f}")
    print(f"{'files':<22}{'datasets/s':>12}{'range':>20}{'s':>8}")
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        for label, make in (*KINDS.items(), ("mixed", mixed)):
            root = os.path.join(tmp, label.split()[0])
            fill(root, args.n, make).close()
            rates, seconds = [], []
            for _ in range(args.repeats):
                lose_registry(root)
                report = rebuild(root)
                assert report.datasets == args.n and not report.skipped, report.skipped[:3]
                rates.append(args.n / report.seconds)
                seconds.append(report.seconds)
            print(f"{label:<22}{statistics.median(rates):>12.0f}{f'{min(rates):.0f}-{max(rates):.0f}':>20}"
                  f"{statistics.median(seconds):>8.2f}")


if __name__ == "__main__":
    main()
