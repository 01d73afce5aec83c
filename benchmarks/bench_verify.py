"""Speed of integrity checks: verify against md5sum over the same files, and the cost of verify_on_read.

Usage::

    python benchmarks/bench_verify.py                       # everything, in a temporary directory
    python benchmarks/bench_verify.py --only verify --large 64 --small 10000
    python benchmarks/bench_verify.py --only read

verify (SQLite + local files, md5): two repositories, one of ``--large`` files of 16 MB
(64: 1 GB) and one of ``--small`` files of 4 KB (10,000), stored as raw bytes. Each is
checked alternately by ``verify(butler, workers=W)`` and by ``md5sum`` over the same file
list (``xargs md5sum``, one process, what an operator would run), after one untimed pass
of each so both read from the page cache: the figure compares hashing and per-file work,
not the disk. Target: verify at least 0.8x md5sum's throughput. verify also walks the
datastore and looks every file up in the registry (dark files), which md5sum does not do.

verify_on_read: ``get`` of 1,000 small FITS images (32 x 32 float32, 4 KB each... 8.6 KB
on disk) and of 20 FITS images of 8 MB (1448 x 1448 float32), with the check on and off,
alternating, warm cache; the cost is the md5 of every byte read (and of the bytes the
reader skipped).

Figures are medians of ``--repeats`` runs with their range; the machine's load is printed
first (other processes on a shared machine change every figure).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

from skybutler import Butler, Image
from skybutler.ops.verify import verify


def fill_bytes(root: str, count: int, size: int) -> Butler:
    """A repository of ``count`` raw-bytes datasets of ``size`` bytes (random, so nothing compresses)."""
    butler = Butler.create(root, run="bench")
    butler.insert_dimension_records("instrument", [{"instrument": "HSC"}])
    butler.insert_dimension_records("detector", [{"instrument": "HSC", "detector": d} for d in range(count)])
    butler.register_dataset_type("blob", ["instrument", "detector"], "bytes")
    rng = np.random.default_rng(1)
    batch = max(1, min(1000, (256 << 20) // size))
    for start in range(0, count, batch):
        butler.put_many([(rng.bytes(size), "blob", {"instrument": "HSC", "detector": d})
                         for d in range(start, min(count, start + batch))])
    return butler


def md5sum_seconds(paths_file: str) -> float:
    start = time.perf_counter()
    subprocess.run(f"xargs -0 md5sum < {paths_file} > /dev/null", shell=True, check=True)
    return time.perf_counter() - start


def compare(label: str, butler: Butler, repeats: int, workers: int) -> None:
    paths = [butler.datastore.url(record.path) for record, _ in butler.registry.all_files()]
    total = sum(os.path.getsize(p) for p in paths)
    listing = os.path.join(os.path.dirname(butler.root), "files.paths")
    with open(listing, "wb") as f:
        f.write(b"\0".join(p.encode() for p in paths))
    md5sum_seconds(listing)  # warm the page cache, both ways
    assert verify(butler, workers=workers).ok
    ours, theirs = [], []
    for _ in range(repeats):
        theirs.append(md5sum_seconds(listing))
        report = verify(butler, workers=workers)
        assert report.ok and report.files_checked == len(paths)
        ours.append(report.seconds)
    sizes_only = statistics.median(verify(butler, checksums=False, workers=workers).seconds for _ in range(repeats))
    v, m = statistics.median(ours), statistics.median(theirs)
    mb = total / 1e6
    print(f"{label:<22}{len(paths):>7} files {mb:>8.0f} MB | verify {mb / v:>7.0f} MB/s {len(paths) / v:>8.0f} files/s "
          f"({min(ours):.2f}-{max(ours):.2f} s) | md5sum {mb / m:>7.0f} MB/s {len(paths) / m:>8.0f} files/s "
          f"({min(theirs):.2f}-{max(theirs):.2f} s) | ratio {m / v:.2f}x | sizes only {len(paths) / sizes_only:.0f} files/s")


def bench_verify(tmp: str, large: int, small: int, repeats: int, workers: int) -> None:
    print(f"verify vs md5sum (workers={workers}, md5, warm page cache, median of {repeats})")
    for label, count, size in ((f"{large} x 16 MB", large, 16 << 20), (f"{small} x 4 KB", small, 4096)):
        root = os.path.join(tmp, f"verify-{count}")
        butler = fill_bytes(root, count, size)
        try:
            compare(label, butler, repeats, workers)
        finally:
            butler.close()
            shutil.rmtree(root, ignore_errors=True)


def timed_gets(butler: Butler, refs: list, verify_on_read: bool) -> float:
    butler.config.datastore.verify_on_read = verify_on_read
    start = time.perf_counter()
    for ref in refs:
        butler.get(ref)
    return time.perf_counter() - start


def bench_read(tmp: str, repeats: int) -> None:
    print(f"get with datastore.verify_on_read off / on (median of {repeats}, alternating, warm cache)")
    butler = Butler.create(os.path.join(tmp, "read"), run="bench")
    try:
        butler.insert_dimension_records("instrument", [{"instrument": "HSC"}])
        butler.insert_dimension_records("detector", [{"instrument": "HSC", "detector": d} for d in range(1000)])
        butler.register_dataset_type("small", ["instrument", "detector"], "image")
        butler.register_dataset_type("large", ["instrument", "detector"], "image")
        rng = np.random.default_rng(2)
        small = butler.put_many([(Image(rng.random((32, 32), "f4")), "small", {"instrument": "HSC", "detector": d})
                                 for d in range(1000)])
        large = [butler.put(Image(rng.random((1448, 1448), "f4")), "large", instrument="HSC", detector=d)
                 for d in range(20)]
        for label, refs in (("1000 x 4 KB FITS", small), ("20 x 8 MB FITS", large)):
            timed_gets(butler, refs, False)
            timed_gets(butler, refs, True)
            off, on = [], []
            for _ in range(repeats):
                off.append(timed_gets(butler, refs, False) / len(refs) * 1e3)
                on.append(timed_gets(butler, refs, True) / len(refs) * 1e3)
            a, b = statistics.median(off), statistics.median(on)
            print(f"{label:<20} off {a:8.3f} ms/get ({min(off):.3f}-{max(off):.3f}) | on {b:8.3f} ms/get "
                  f"({min(on):.3f}-{max(on):.3f}) | cost +{b - a:.3f} ms (x{b / a:.2f})")
    finally:
        butler.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=["verify", "read"], default=None)
    parser.add_argument("--large", type=int, default=64, help="16 MB files (64: 1 GB)")
    parser.add_argument("--small", type=int, default=10000, help="4 KB files")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--dir", default=None, help="Where the repositories go.")
    args = parser.parse_args()
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; python {sys.version.split()[0]}")
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        if args.only in (None, "verify"):
            bench_verify(tmp, args.large, args.small, args.repeats, args.workers)
        if args.only in (None, "read"):
            bench_read(tmp, args.repeats)


if __name__ == "__main__":
    main()
