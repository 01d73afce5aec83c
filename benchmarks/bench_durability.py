"""Cost of surviving a power loss: put and put_many with ``registry.sync_every_commit`` on and off.

Usage::

    python benchmarks/bench_durability.py              # 1,000 small datasets per case, 3 repeats
    python benchmarks/bench_durability.py --n 2000 --repeats 5
    python benchmarks/bench_durability.py --placement --n 5000   # file placement against its floor
    python benchmarks/bench_durability.py --daf-python /work/dafbench/bin/python   # durable put vs daf_butler

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

``--daf-python`` compares one-per-call puts with ``sync_every_commit`` (files, directories and
commit synced) against daf_butler's default put (commit synced, files not) like for like on a
loaded machine: both run as long-lived processes that take turns, a short burst each, many
rounds, so both see the same minutes; the ratio is taken per round. ``--skybutler-src
label=DIR`` (repeatable) runs a skybutler worker importing skybutler from ``DIR`` instead of
the installed one (a before/after pair in the same rounds).
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

sys.path.insert(0, os.path.dirname(__file__))

from _records import DETECTORS, hsc_records  # noqa: E402

if TYPE_CHECKING:
    from skybutler import Butler


def repository(root: str, sync: bool, n: int) -> tuple[Butler, list[dict]]:
    from skybutler import Butler

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
    from skybutler import Butler
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


def put_worker(kind: str, root: str, n: int) -> None:
    """A long-lived process for ``--daf-python``: a new repository, then ``put K`` on stdin -> seconds on stdout."""
    put: Any
    if kind == "skybutler":
        butler, data_ids = repository(root, True, n)
        assert butler.datastore.sync
        pairs = [(d["visit"], d["detector"]) for d in data_ids]

        def put(obj: dict, v: int, d: int) -> None:
            butler.put(obj, "bench_metadata", {"instrument": "HSC", "visit": v, "detector": d})
    else:  # daf_butler, with its defaults (see _daf_workload.py)
        from _daf_workload import DATASET_TYPE, _records
        from lsst.daf.butler import Butler as DafButler
        from lsst.daf.butler import Config, DatasetType

        config = Config({"datastore": {"formatters": {"StructuredDataDict":
                                                      "lsst.daf.butler.formatters.json.JsonFormatter"}}})
        DafButler.makeRepo(root, config=config)
        setup = DafButler.from_config(root, writeable=True)
        pairs = _records(setup, math.ceil(n / DETECTORS))[:n]
        setup.registry.registerDatasetType(DatasetType(DATASET_TYPE, ["instrument", "visit", "detector"],
                                                       "StructuredDataDict", universe=setup.dimensions))
        daf = DafButler.from_config(root, writeable=True, run="bench/put")

        def put(obj: dict, v: int, d: int) -> None:
            daf.put(obj, DATASET_TYPE, {"instrument": "HSC", "visit": v, "detector": d})
    todo = iter(pairs)
    print("ready", flush=True)
    for line in sys.stdin:
        k = int(line.split()[1])
        batch = [next(todo) for _ in range(k)]
        start = time.perf_counter()
        for v, d in batch:
            put({"visit": v, "detector": d, "seeing": 0.7}, v, d)
        print(time.perf_counter() - start, flush=True)


def versus_daf(daf_python: str, sources: list[str], rounds: int, directory: str | None) -> None:
    """Durable one-per-call puts, skybutler vs daf_butler, in alternating bursts (see the module docstring)."""
    bursts = {"skybutler": 30, "daf": 12}
    workers: dict[str, tuple[str, subprocess.Popen[str]]] = {}
    with tempfile.TemporaryDirectory(dir=directory) as tmp:
        named = [tuple(s.split("=", 1)) for s in sources] or [("skybutler", None)]
        for label, src in named + [("daf_butler", "daf")]:
            kind = "daf" if src == "daf" else "skybutler"
            env = dict(os.environ)
            if kind == "skybutler" and src:
                env["PYTHONPATH"] = os.pathsep.join(filter(None, [src, env.get("PYTHONPATH")]))
            python = daf_python if kind == "daf" else sys.executable
            n = bursts[kind] * rounds
            proc = subprocess.Popen([python, __file__, "--worker", kind, "--dir", str(Path(tmp) / label.replace("/", "_")),
                                     "--n", str(n)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
            workers[label] = (kind, proc)
        for label, (_, proc) in workers.items():
            assert proc.stdout is not None
            if proc.stdout.readline().strip() != "ready":
                raise SystemExit(f"worker {label} failed")
        rates: dict[str, list[float]] = {label: [] for label in workers}
        loads = []
        labels = list(workers)
        for r in range(rounds):
            loads.append(os.getloadavg()[0])
            for label in labels[r % len(labels):] + labels[:r % len(labels)]:
                kind, proc = workers[label]
                assert proc.stdin is not None and proc.stdout is not None
                proc.stdin.write(f"put {bursts[kind]}\n")
                proc.stdin.flush()
                rates[label].append(bursts[kind] / float(proc.stdout.readline()))
        for _, proc in workers.values():
            assert proc.stdin is not None
            proc.stdin.close()
            proc.wait()
    print(f"one-per-call put, {rounds} rounds of alternating bursts, load {min(loads):.1f}-{max(loads):.1f}")
    print("skybutler: sync_every_commit (WAL synchronous=FULL; file, its directory and new directories synced); "
          "daf_butler: defaults (rollback journal synchronous=FULL; files not synced)")
    daf = rates["daf_butler"]
    for label, values in rates.items():
        ratio = "" if label == "daf_butler" else \
            f"  x{statistics.median(v / d for v, d in zip(values, daf, strict=True)):.1f} daf_butler (median of per-round ratios)"
        print(f"{label:<24}{statistics.median(values):>8.0f}/s  range {min(values):.0f}-{max(values):.0f}{ratio}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dir", default=None, help="Where the repositories go (the disk measured).")
    parser.add_argument("--placement", action="store_true", help="put_many and transfer copy against their floors")
    parser.add_argument("--only", choices=["put", "put_many"], help="Only this operation (sync on and off).")
    parser.add_argument("--daf-python", help="A Python with lsst-daf-butler: durable puts side by side.")
    parser.add_argument("--rounds", type=int, default=15, help="Rounds of bursts for --daf-python.")
    parser.add_argument("--skybutler-src", action="append", default=[], metavar="LABEL=DIR",
                        help="Another skybutler worker, importing skybutler from DIR (with --daf-python).")
    parser.add_argument("--worker", choices=["skybutler", "daf"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        put_worker(args.worker, args.dir, args.n)
        return
    print(f"load average {os.getloadavg()[0]:.1f} (2 CPUs shared with other work: rates vary with it)")
    if args.placement:
        placement(args.n, args.repeats, args.dir)
        return
    if args.daf_python:
        versus_daf(args.daf_python, args.skybutler_src, args.rounds, args.dir)
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
