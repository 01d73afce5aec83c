"""Bytes and time of cutouts from a large FITS image on S3 (moto's server on loopback).

Usage::

    python benchmarks/bench_s3_cutouts.py                  # 64 MB image, 25 cutouts of 32 x 32, 5 repeats
    python benchmarks/bench_s3_cutouts.py --size 2048 --cutouts 100 --box 21 --repeats 3
    python benchmarks/bench_s3_cutouts.py --json out.json  # also write the raw figures

A 4096 x 4096 float32 image (64 MiB + headers) is put into a repository whose datastore is
a bucket on moto's S3 server (in this process, on 127.0.0.1), then read in these ways:

- ``cutouts: ranged``: ``Butler.get_cutouts`` as it is now: the file opened for a partial read
  (`RangedFile`), the rows of every box fetched in one batch of concurrent ranged GETs;
- ``cutouts: s3fs default``: what it did before: the file opened with s3fs's defaults
  (read-ahead cache, 50 MiB blocks), the formatter reading the same boxes;
- ``cutouts: cache none`` / ``cutouts: readahead 64k``: the other choices the change weighed:
  s3fs with no cache (one GET per row astropy reads, one after another) and with a small
  read-ahead block;
- ``bbox get``: ``Butler.get(ref, parameters={"bbox": ...})`` of a 256 x 256 box;
- ``whole get`` vs ``whole get, old path``: ``Butler.get(ref)`` now, and the read the butler
  made before this change (``Datastore.open`` without ``partial``, then the formatter), which
  whole reads still take: they must cost the same.

Bytes fetched are counted by botocore, not by skybutler: an ``after-call.s3.GetObject`` hook on
the s3fs client sums each response's ContentLength (``requests`` counts the GETs). Bytes
returned are the cutouts' pixel bytes. Times are medians (and ranges) of ``--repeats`` runs.
Times on moto are not those of a real object store: moto copies the whole object for every
GET, ranged or not (``1 ranged GET`` rows: 128 bytes of this file and of a 1 KiB one), and it
serves requests from this process, under its GIL, so concurrent requests barely overlap. A
real store answers a ranged GET in a roughly constant first-byte latency (tens of ms on S3)
whatever the object's size, and many at once; request counts are printed for that reason.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import socket
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from typing import Any

import numpy as np

from skybutler import Butler, Image
from skybutler.datastore.backends import filesystem
from skybutler.formats import FitsFormatter

DATA_ID = {"instrument": "HSC", "detector": 1}


class TransportCount:
    """GetObject responses the s3fs client received, as botocore saw them."""

    def __init__(self, fs: Any):
        self.bytes = 0
        self.requests = 0
        fs.s3.meta.events.register("after-call.s3.GetObject", self._count)

    def _count(self, parsed: dict[str, Any], **_: Any) -> None:
        self.bytes += int(parsed.get("ContentLength", 0))
        self.requests += 1

    def reset(self) -> None:
        self.bytes = self.requests = 0


def start_moto() -> tuple[Any, dict[str, Any]]:
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    options = {"endpoint_url": f"http://127.0.0.1:{port}", "key": "testing", "secret": "testing",
               "client_kwargs": {"region_name": "us-east-1"}}
    return server, options


def measure(label: str, run: Callable[[], int], count: TransportCount, repeats: int) -> dict[str, Any]:
    times, fetched, requests, returned = [], set(), set(), 0
    for _ in range(repeats):
        count.reset()
        t0 = time.perf_counter()
        returned = run()
        times.append(time.perf_counter() - t0)
        fetched.add(count.bytes)
        requests.add(count.requests)
    row = {"read": label, "fetched": max(fetched), "requests": max(requests), "returned": returned,
           "ratio": max(fetched) / returned if returned else float("nan"),
           "median_s": statistics.median(times), "min_s": min(times), "max_s": max(times)}
    print(f"{label:<26} {row['fetched']:>12,} {row['requests']:>8} {returned:>10,} {row['ratio']:>8.2f}"
          f" {row['median_s'] * 1e3:>9.1f} ms ({row['min_s'] * 1e3:.1f}-{row['max_s'] * 1e3:.1f})", flush=True)
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=4096, help="image side in pixels (float32)")
    parser.add_argument("--cutouts", type=int, default=25)
    parser.add_argument("--box", type=int, default=32, help="cutout side in pixels")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--slow", action="store_true", help="also time s3fs without a cache (one GET per row)")
    parser.add_argument("--json", help="write the figures to this file")
    args = parser.parse_args()

    server, options = start_moto()
    try:
        import boto3

        bucket = f"bench-{uuid.uuid4().hex[:12]}"
        boto3.client("s3", endpoint_url=options["endpoint_url"], aws_access_key_id="testing",
                     aws_secret_access_key="testing", region_name="us-east-1").create_bucket(Bucket=bucket)
        root = f"s3://{bucket}/repo"
        with tempfile.TemporaryDirectory() as tmp:
            butler = Butler.create(tmp, run="bench", datastore=root,
                                   config={"datastore": {"storage_options": options}})
            butler.insert_dimension_records("instrument", [{"instrument": "HSC", "class_name": "HSC"}])
            butler.insert_dimension_records("detector", [{"instrument": "HSC", "detector": 1, "name": "1_54"}])
            butler.register_dataset_type("calexp", ["detector"], "image")
            data = np.random.default_rng(7).random((args.size, args.size), dtype=np.float32)
            ref = butler.put(Image(data, header={"EXPTIME": 30.0}), "calexp", DATA_ID)
            record = next(iter(butler.registry.get_files([ref.id]).values()))
            fs, _ = filesystem(root, options)
            full = fs._strip_protocol(butler.datastore.url(record.path))
            count = TransportCount(fs)

            half = args.box // 2
            centres = np.random.default_rng(3).integers(half, args.size - half, size=(args.cutouts, 2))
            boxes = [(int(y) - half, int(y) - half + args.box, int(x) - half, int(x) - half + args.box)
                     for y, x in centres]
            returned = args.cutouts * args.box * args.box * 4
            bbox = (args.size // 3, args.size // 3 + 256, args.size // 5, args.size // 5 + 256)

            def ranged() -> int:
                cut = butler.get_cutouts(ref, boxes)
                assert all(np.array_equal(i.data, data[y0:y1, x0:x1])
                           for i, (y0, y1, x0, x1) in zip(cut.images, boxes, strict=True))
                assert cut.bytes_read == count.bytes, (cut.bytes_read, count.bytes)
                return returned

            def with_s3fs(**open_options: Any) -> Callable[[], int]:
                def run() -> int:
                    with fs.open(full, "rb", **open_options) as f:
                        FitsFormatter().read_cutouts(f, boxes)
                    return returned
                return run

            small = f"{bucket}/small.bin"
            fs.pipe_file(small, b"x" * 1024)

            def one_get(path: str) -> Callable[[], int]:
                # Moto copies the whole object for every GET, ranged or not: its per-request
                # time grows with the object's size, which a real object store's does not.
                def run() -> int:
                    return len(fs.cat_file(path, start=100, end=228))
                return run

            def bbox_get() -> int:
                image = butler.get(ref, parameters={"bbox": bbox})
                assert np.array_equal(image.data, data[bbox[0]:bbox[1], bbox[2]:bbox[3]])
                return 256 * 256 * 4

            def whole_get() -> int:
                assert np.array_equal(butler.get(ref).data, data)
                return data.nbytes

            def whole_get_old_path() -> int:
                with butler.datastore.open(record.path) as f:
                    image = FitsFormatter().read(f)
                assert np.array_equal(image.data, data)
                return data.nbytes

            print(f"# {platform.node()}, {platform.processor() or platform.machine()}, Python "
                  f"{platform.python_version()}; moto server on loopback; image {args.size}x{args.size} "
                  f"float32, file {record.size:,} bytes; {args.cutouts} cutouts of {args.box}x{args.box}; "
                  f"{args.repeats} repeats")
            print(f"{'read':<26} {'fetched':>12} {'requests':>8} {'returned':>10} {'ratio':>8} {'time':>12}")
            rows = [
                measure("cutouts: ranged", ranged, count, args.repeats),
                measure("cutouts: s3fs default", with_s3fs(), count, args.repeats),
                measure("cutouts: readahead 64k", with_s3fs(block_size=1 << 16), count, args.repeats),
            ]
            if args.slow:
                rows.append(measure("cutouts: cache none", with_s3fs(cache_type="none"), count, args.repeats))
            rows += [
                measure("1 ranged GET, this file", one_get(full), count, args.repeats),
                measure("1 ranged GET, 1 KiB file", one_get(small), count, args.repeats),
                measure("bbox get 256x256", bbox_get, count, args.repeats),
                measure("whole get", whole_get, count, args.repeats),
                measure("whole get, old path", whole_get_old_path, count, args.repeats),
            ]
            butler.close()
        if args.json:
            with open(args.json, "w") as out:
                json.dump({"args": vars(args), "file_size": record.size, "rows": rows}, out, indent=2)
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
