"""How long finishing an interrupted removal keeps other writers out, per part, for N local files.

Usage::

    TMPDIR=/some/new/dir python benchmarks/bench_finish_removals.py --n 8000 [--repeat 3] [--s3]

Builds a SQLite repository with N datasets stored by ``put_many`` (real JSON files, md5)
in one run, removes the run with its file deletion cut short (rows gone, every file and
the removal list left, as after a kill), then times `Butler.finish_removals`: the whole
call, and each part's time inside `_butler_remove.writers_kept_out` (SQLite's write lock
held: every other writer waits). Prints the figures and the 1-minute load. ``--s3`` puts
the files in a bucket of a moto server started here (a round trip per file, on loopback).
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import logging
import math
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from _records import DETECTORS, hsc_records

DATASET_TYPE = "bench_metadata"
RUN = "bench/finish"


def build(root: str, n: int, datastore: dict[str, Any]) -> None:
    from skybutler import Butler

    butler = Butler.create(root, **datastore)
    pairs = hsc_records(butler, math.ceil(n / DETECTORS))[:n]
    butler.register_dataset_type(DATASET_TYPE, ["instrument", "visit", "detector"], "dict")
    run = butler.with_run(RUN)
    for i in range(0, len(pairs), 2_000):
        run.put_many([({"visit": v, "detector": d}, DATASET_TYPE, {"instrument": "HSC", "visit": v, "detector": d})
                      for v, d in pairs[i:i + 2_000]])
    butler.close()


def interrupted_removal(root: str) -> None:
    """Remove the run, stopping before any file is deleted (its list left)."""
    from skybutler import Butler, _butler_remove
    from skybutler.errors import FileAccessError

    def stop(datastore: Any, paths: Any) -> None:
        raise FileAccessError(errno.EIO, "interrupted (benchmark)")

    real = _butler_remove.delete_files
    _butler_remove.delete_files = stop
    butler = Butler(root)
    try:
        with contextlib.suppress(FileAccessError):
            butler.remove_runs([RUN])
    finally:
        _butler_remove.delete_files = real
        butler.close()


def finish(root: str) -> tuple[float, list[float], dict[str, int]]:
    from skybutler import Butler, _butler_remove

    held: list[float] = []
    real = _butler_remove.writers_kept_out

    @contextlib.contextmanager
    def timed(registry: Any) -> Iterator[None]:
        with real(registry):
            t0 = time.perf_counter()
            yield
            held.append(time.perf_counter() - t0)

    _butler_remove.writers_kept_out = timed
    butler = Butler(root)
    try:
        t0 = time.perf_counter()
        done = butler.finish_removals()
        total = time.perf_counter() - t0
    finally:
        _butler_remove.writers_kept_out = real
        butler.close()
    return total, held, done


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=8_000)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--s3", action="store_true", help="files in a bucket of a local moto server")
    args = parser.parse_args(argv)
    datastore: dict[str, Any] = {}
    if args.s3:
        import socket
        import uuid

        import boto3
        from moto.server import ThreadedMotoServer

        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # a line per request otherwise
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        server.start()
        options = {"endpoint_url": f"http://127.0.0.1:{port}", "key": "testing", "secret": "testing",
                   "client_kwargs": {"region_name": "us-east-1"}}
        bucket = f"bench-{uuid.uuid4().hex[:12]}"
        boto3.client("s3", endpoint_url=options["endpoint_url"], aws_access_key_id="testing",
                     aws_secret_access_key="testing", region_name="us-east-1").create_bucket(Bucket=bucket)
    for trial in range(args.repeat):
        if args.s3:
            datastore = {"datastore": f"s3://{bucket}/repo{trial}",
                         "config": {"datastore": {"storage_options": options}}}
        base = Path(tempfile.mkdtemp(prefix="bench-finish-"))
        try:
            root = str(base / "repo")
            t0 = time.perf_counter()
            build(root, args.n, datastore)
            built = time.perf_counter() - t0
            interrupted_removal(root)
            total, held, done = finish(root)
            assert done == {RUN: args.n}, done
            print(f"trial {trial + 1}: {args.n} {'S3' if args.s3 else 'local'} files (built in {built:.1f} s): finish_removals {total:.3f} s, "
                  f"{len(held)} part(s), writers kept out per part: max {max(held):.3f} s, "
                  f"sum {sum(held):.3f} s; load {os.getloadavg()[0]:.2f}", flush=True)
        finally:
            shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
