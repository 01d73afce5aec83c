"""Transfer between repositories (issue 9): datasets per second by transfer mode, and memory against size.

Usage::

    python benchmarks/bench_transfer.py [--n 10000] [--s3-n 1000] [--repeats 3] [--workers 8]

A source repository (SQLite, local files) gets N small datasets (one JSON file each, one
run) once; each measurement transfers all of them into a new, empty repository in a
child process (so peak RSS is the transfer's own) and reports datasets per second over
the whole `import_content` call (records, types, collections, files, rows, provenance).
Modes: copy, hardlink, direct, none local -> local; copy local -> S3 (moto's server on
loopback). Peak RSS (``ru_maxrss`` of the child) at N/10 and N datasets shows whether
memory stays flat in N. Target: copy local -> local >= 15,000 datasets/s.

Figures vary with the machine's load (printed first): read them as ranges.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RUN = "bench/run"


def make_source(root: Path, n: int) -> None:
    from skybutler import Butler

    butler = Butler.create(root, run=RUN)
    butler.insert_dimension_records("instrument", [{"instrument": "HSC", "class_name": "HSC"}])
    butler.insert_dimension_records("detector", [{"instrument": "HSC", "detector": d} for d in range(100)])
    butler.register_dataset_type("metadata", ["instrument", "detector", "visit"], "dict")
    butler.insert_dimension_records("day_obs", [{"instrument": "HSC", "day_obs": 20260315}])
    butler.insert_dimension_records("band", [{"band": "r"}])
    butler.insert_dimension_records("physical_filter", [{"instrument": "HSC", "physical_filter": "R", "band": "r"}])
    visits = range(n // 100 + 1)
    butler.insert_dimension_records("visit", [{"instrument": "HSC", "visit": v, "physical_filter": "R",
                                               "day_obs": 20260315} for v in visits])
    step = 2000
    for start in range(0, n, step):
        butler.put_many([({"i": i}, "metadata", {"instrument": "HSC", "detector": i % 100, "visit": i // 100})
                         for i in range(start, min(n, start + step))])
    butler.close()


def child(source: str, target_root: str, mode: str, n: int, workers: int, s3: str | None) -> None:
    """Run one transfer of every dataset of the source into a new repository; print figures as JSON."""
    from skybutler import Butler
    from skybutler.transfer import RegistrySource, import_content

    src = Butler(source, writeable=False)
    kwargs: dict = {}
    if s3:
        options = json.loads(s3)
        kwargs = {"datastore": options.pop("datastore"), "config": {"datastore": {"storage_options": options}}}
    target = Butler.create(target_root, **kwargs)
    content = RegistrySource(src, dataset_types=["metadata"], collections=[RUN], include_provenance=False)
    start = time.perf_counter()
    report = import_content(target, content, transfer=mode, workers=workers)
    elapsed = time.perf_counter() - start
    print(json.dumps({"datasets": report.datasets_added, "seconds": elapsed,
                      "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def run_child(source: Path, work: Path, mode: str, n: int, workers: int, s3: dict | None = None) -> dict:
    target = work / f"target-{mode}-{time.monotonic_ns()}"
    argv = [sys.executable, __file__, "--child", str(source), str(target), mode, str(n), str(workers),
            json.dumps(s3) if s3 else ""]
    out = subprocess.run(argv, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise SystemExit(out.stderr)
    shutil.rmtree(target, ignore_errors=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def create_rate(directory: Path, n: int = 2_000) -> float:
    """Files per second Python creates in ``directory`` with nothing else: the floor under a copy."""
    bare = directory / "bare"
    bare.mkdir()
    start = time.perf_counter()
    for i in range(n):
        with open(bare / f"f{i}", "xb") as f:
            f.write(b"x" * 20)
    rate = n / (time.perf_counter() - start)
    shutil.rmtree(bare)
    return rate


def moto_options() -> tuple[object, dict]:
    import logging

    import boto3
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="testing", aws_secret_access_key="testing",
                 region_name="us-east-1").create_bucket(Bucket="bench")
    return server, {"endpoint_url": endpoint, "key": "testing", "secret": "testing",
                    "client_kwargs": {"region_name": "us-east-1"}}


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        source, target, mode, n, workers, s3 = sys.argv[2:8]
        child(source, target, mode, int(n), int(workers), s3 or None)
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--s3-n", type=int, default=1_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--dir", help="Where the repositories go (default: the system's temporary directory); "
                                      "its file creation rate bounds every mode that writes files")
    args = parser.parse_args()
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}; python {sys.version.split()[0]}")
    with tempfile.TemporaryDirectory(prefix="bench-transfer-", dir=args.dir) as directory:
        work = Path(directory)
        print(f"bare file creation in {work} (open 'xb', write 20 bytes, close): {create_rate(work):,.0f}/s")
        sources = {}
        for n in (args.n // 10, args.n, args.s3_n):
            if n not in sources:
                start = time.perf_counter()
                make_source(work / f"source-{n}", n)
                sources[n] = work / f"source-{n}"
                print(f"source of {n:,} datasets made in {time.perf_counter() - start:.1f} s")
        for mode in ("copy", "hardlink", "direct", "none"):
            rates, rss = [], []
            for _ in range(args.repeats):
                fig = run_child(sources[args.n], work, mode, args.n, args.workers)
                rates.append(fig["datasets"] / fig["seconds"])
                rss.append(fig["rss_mb"])
            print(f"local -> local {mode:8s} {args.n:>7,} datasets: {statistics.median(rates):>8,.0f}/s "
                  f"(range {min(rates):,.0f}-{max(rates):,.0f}), peak RSS {max(rss):.0f} MB")
        small = [run_child(sources[args.n // 10], work, "copy", args.n // 10, args.workers)
                 for _ in range(args.repeats)]
        big = [run_child(sources[args.n], work, "copy", args.n, args.workers) for _ in range(args.repeats)]
        print(f"peak RSS, copy: {args.n // 10:,} datasets {min(f['rss_mb'] for f in small):.0f} MB, "
              f"{args.n:,} datasets {min(f['rss_mb'] for f in big):.0f} MB")
        server, options = moto_options()
        try:
            rates = []
            for i in range(args.repeats):
                s3 = {**options, "datastore": f"s3://bench/run{i}"}
                fig = run_child(sources[args.s3_n], work, "copy", args.s3_n, args.workers, s3)
                rates.append(fig["datasets"] / fig["seconds"])
            print(f"local -> S3 (moto) copy {args.s3_n:>7,} datasets: {statistics.median(rates):>8,.0f}/s "
                  f"(range {min(rates):,.0f}-{max(rates):,.0f})")
        finally:
            server.stop()  # type: ignore[attr-defined]


if __name__ == "__main__":
    main()
