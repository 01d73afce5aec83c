"""Cost of surviving a power loss: put and put_many with ``registry.sync_every_commit`` on and off.

Usage::

    python benchmarks/bench_durability.py              # 1,000 small datasets per case, 3 repeats
    python benchmarks/bench_durability.py --n 2000 --repeats 5
    python benchmarks/bench_durability.py --placement --n 5000   # file placement against its floor

SQLite + local files. With sync on, every file and its directory (and each directory a
put creates, once) are ``fsync``ed before the registry commits, and SQLite commits with
``PRAGMA synchronous=FULL``; with it off, a killed process still loses nothing (WAL), only
a power loss or kernel crash can. Datasets are small dicts (JSON, ~40 bytes) with HSC-like
data ids; put writes one dataset per call (one transaction each), put_many all N in one
call. Each case gets a fresh repository; the figure is the median of the repeats, with the
range. What bounds sync-on put is the device's flush latency: per put, the file and its
directory are synced together after the rename (one journal commit on ext4/XFS), then
SQLite's WAL; so the figure depends on the disk far more than on skybutler.

``--placement`` measures what placing files costs without sync: put_many of N datasets in
one call, a transfer (``copy``) of those N into a new repository, and, in the same minute,
the floors under both: bare file creation (open "xb", write, close) and creation under a
temporary name plus a rename, which is what every placed file needs at the least.
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


def bare_floors(directory: str, n: int) -> tuple[float, float]:
    """Files per second: created bare, and created under a temporary name then renamed."""
    bare = os.path.join(directory, "bare")
    os.mkdir(bare)
    start = time.perf_counter()
    for i in range(n):
        with open(f"{bare}/f{i}", "xb") as f:
            f.write(b"x" * 40)
    created = n / (time.perf_counter() - start)
    renamed_dir = os.path.join(directory, "renamed")
    os.mkdir(renamed_dir)
    start = time.perf_counter()
    for i in range(n):
        with open(f"{renamed_dir}/.f{i}.tmp", "xb") as f:
            f.write(b"x" * 40)
        os.rename(f"{renamed_dir}/.f{i}.tmp", f"{renamed_dir}/f{i}")
    renamed = n / (time.perf_counter() - start)
    return created, renamed


def placement(n: int, repeats: int, directory: str | None) -> None:
    """put_many and transfer copy of ``n`` datasets, beside the bare floors, ``repeats`` times each."""
    from skybutler.transfer import RegistrySource, import_content

    rates: dict[str, list[float]] = {}
    for _ in range(repeats):
        with tempfile.TemporaryDirectory(dir=directory) as tmp:
            created, renamed = bare_floors(tmp, n)
            rates.setdefault("bare file creation", []).append(created)
            rates.setdefault("bare creation + rename", []).append(renamed)
            butler, data_ids = repository(os.path.join(tmp, "source"), False, n)
            try:
                rates.setdefault("put_many (N per call)", []).append(n / put_many(butler, data_ids))
            finally:
                butler.close()
            source = Butler(os.path.join(tmp, "source"), writeable=False)
            target = Butler.create(os.path.join(tmp, "target"))
            try:
                content = RegistrySource(source, dataset_types=["bench_metadata"], collections=["bench"],
                                         include_provenance=False)
                start = time.perf_counter()
                report = import_content(target, content, transfer="copy")
                assert report.datasets_added == n, report
                rates.setdefault("transfer copy", []).append(n / (time.perf_counter() - start))
            finally:
                source.close()
                target.close()
    print(f"{'placement, sync off':<28}{'files/s (median)':>18}{'range':>22}")
    for name, values in rates.items():
        print(f"{name:<28}{statistics.median(values):>18,.0f}{f'{min(values):,.0f}-{max(values):,.0f}':>22}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dir", default=None, help="Where the repositories go (the disk measured).")
    parser.add_argument("--placement", action="store_true", help="put_many and transfer copy against their floors")
    parser.add_argument("--only", choices=["put", "put_many"], help="Only this operation (sync on and off).")
    args = parser.parse_args()
    print(f"load average {os.getloadavg()[0]:.1f} (2 CPUs shared with other work: rates vary with it)")
    if args.placement:
        placement(args.n, args.repeats, args.dir)
        return
    print(f"bench_durability: N={args.n}, {args.repeats} repeats, SQLite + local files under "
          f"{args.dir or tempfile.gettempdir()}")
    print(f"{'operation':<28}{'sync':>6}{'per item (ms)':>16}{'range':>20}{'items/s':>10}")
    results: dict[tuple[str, bool], float] = {}
    operations = [(name, op) for key, name, op in (("put", "put (one per call)", put_one_per_call),
                                                   ("put_many", "put_many (N per call)", put_many))
                  if args.only in (None, key)]
    for name, op in operations:
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
    for name, _ in operations:
        print(f"sync costs {name}: x{results[(name, True)] / results[(name, False)]:.1f} "
              f"(+{results[(name, True)] - results[(name, False)]:.3f} ms per item)")


if __name__ == "__main__":
    main()
