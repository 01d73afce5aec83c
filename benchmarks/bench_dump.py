"""Speed and memory of dumps (issue 9): export to a dump and import of one, 1,000 and 10,000 small datasets.

Usage::

    python benchmarks/bench_dump.py                    # 1,000 and 10,000 datasets, 3 repeats
    python benchmarks/bench_dump.py --sizes 10000 --repeat 5
    python benchmarks/bench_dump.py --json out.json    # also write the raw figures
    python benchmarks/bench_dump.py --memory-only --keep /tmp/bd   # heap peaks only, sources kept

The source is a SQLite + local repository in a temporary directory holding ``N`` small
``dict`` datasets (JSON files of ~40 bytes) of one run, with HSC-like records
(benchmarks/_records.py: ``N / 100`` visits x 100 detectors, regions). Each case runs in
a fresh process (so one case's caches never help another) on a fresh destination:

- ``export rows`` / ``export dir`` / ``export zip``: `export_dump` (RegistrySource +
  `write_dump`) without files, with files into a directory, with files into a zip;
- ``write rows`` / ``write zip``: `write_dump` of a source whose content is already in
  memory: the dump writer alone, without the repository reads of RegistrySource;
- ``read``: every stream of the zip dump read through `DumpSource` (with its integrity
  check), nothing written: the reader alone;
- ``import rows`` / ``import dir`` / ``import zip``: `import_dump` into a new empty
  repository: rows only (``transfer="none"``) from the dump without files, and copying
  the files from the directory and the zip dumps.

Rates are registry rows (datasets) per second. Targets: export and import >= 20,000/s.
Memory: the Python heap's peak (tracemalloc) during the operation alone, at 1,000 and
10,000 datasets, in separate runs without timing, with sources reading batches of
``--memory-batch`` datasets (default 500, so that both sizes are several batches: memory
grows with the batch, by design, and must not grow with the number of batches); flat
means the two are close. ``--memory-only`` skips the timed runs.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

RUN = "bench/raw"
TARGET_RATE = 20_000
CASES = ("export rows", "export dir", "export zip", "write rows", "write zip", "read", "import rows",
         "import dir", "import zip")


def build(root: Path, n: int) -> None:
    """A repository of ``n`` small datasets with their records, and the three dumps the import cases read."""
    from _records import hsc_records

    from skybutler import Butler
    from skybutler.transfer.dump import export_dump

    butler = Butler.create(root / "repo")
    pairs = hsc_records(butler, math.ceil(n / 100))[:n]
    butler.register_dataset_type("raw", ("visit", "detector"), "dict")
    for i in range(0, n, 2000):
        butler.put_many([({"v": v, "d": d}, "raw", {"instrument": "HSC", "visit": v, "detector": d})
                         for v, d in pairs[i:i + 2000]], run=RUN)
    export_dump(butler, root / "rows", collections=[RUN])
    export_dump(butler, root / "dir", collections=[RUN], files="directory")
    export_dump(butler, root / "all.zip", collections=[RUN], files="zip")
    butler.close()


class _MemorySource:
    """A content source holding everything in memory already (to time the dump writer alone)."""

    def __init__(self, source: Any):
        self.universe = source.universe
        self._records = list(source.dimension_records())
        self._types = source.dataset_types()
        self._collections = source.collections()
        self._datasets = list(source.datasets())

    def dimension_records(self) -> Any:
        return iter(self._records)

    def dataset_types(self) -> Any:
        return self._types

    def collections(self) -> Any:
        return self._collections

    def datasets(self) -> Any:
        return iter(self._datasets)

    def tags(self) -> Any:
        return iter(())

    def certifications(self) -> Any:
        return iter(())

    def provenance(self) -> Any:
        return iter(())


def run_case(case: str, root: Path, measure_memory: bool, batch: int = 0) -> dict[str, Any]:
    """Run one case once in this process; ``{"seconds", "datasets", "heap_peak_mb"}``.

    ``batch``: datasets per batch the sources read (0: their defaults).
    """
    import tracemalloc

    from skybutler import Butler
    from skybutler.transfer.dump import DumpSource, write_dump
    from skybutler.transfer.importer import import_content
    from skybutler.transfer.source import RegistrySource

    sized = {"batch_size": batch} if batch else {}

    work = Path(tempfile.mkdtemp(dir=root))
    source = Butler(root / "repo", writeable=False)
    prepared: Any = None
    target: Any = None
    if case.startswith("write"):
        prepared = _MemorySource(RegistrySource(source, collections=[RUN], **sized))
    if case.startswith("import"):
        target = Butler.create(work / "target")
    if measure_memory:
        tracemalloc.start()
    start = time.perf_counter()
    if case.startswith("export"):
        files = {"export rows": "none", "export dir": "directory", "export zip": "zip"}[case]
        # export_dump's two calls, with the batch size given
        report = write_dump(RegistrySource(source, collections=[RUN], **sized),
                            work / ("d.zip" if files == "zip" else "d"), files=files)
        n = report.datasets_added
    elif case.startswith("write"):
        zip_ = case == "write zip"
        report = write_dump(prepared, work / ("d.zip" if zip_ else "d"), files="zip" if zip_ else "none")
        n = report.datasets_added
    elif case == "read":
        with DumpSource(root / "all.zip", **sized) as dump:
            list(dump.dimension_records())
            dump.dataset_types()
            dump.collections()
            n = sum(len(b) for b in dump.datasets())
            list(dump.tags())
            list(dump.certifications())
            list(dump.provenance())
    else:
        path, transfer = {"import rows": ("rows", "none"), "import dir": ("dir", "copy"),
                          "import zip": ("all.zip", "copy")}[case]
        with DumpSource(root / path, **sized) as dump:  # import_dump's two calls, with the batch size given
            report = import_content(target, dump, transfer=transfer)
        n = report.datasets_added
    seconds = time.perf_counter() - start
    peak = tracemalloc.get_traced_memory()[1] / 1e6 if measure_memory else None
    shutil.rmtree(work, ignore_errors=True)
    return {"seconds": seconds, "datasets": n, "heap_peak_mb": peak}


def _child(case: str, root: Path, memory: bool, batch: int = 0) -> dict[str, Any]:
    out = subprocess.run([sys.executable, __file__, "--child", case, str(root), "1" if memory else "0", str(batch)],
                         capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise SystemExit(f"case {case!r} failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10_000])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--cases", nargs="+", default=list(CASES))
    parser.add_argument("--json", help="also write the raw figures here")
    parser.add_argument("--memory-batch", type=int, default=500)
    parser.add_argument("--memory-only", action="store_true")
    parser.add_argument("--keep", help="build the sources under this directory once and reuse them")
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        case, root, memory, batch = args.child
        print(json.dumps(run_case(case, Path(root), memory == "1", int(batch))))
        return
    print(f"# {platform.node()}: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"Python {platform.python_version()}; SQLite + local disk ({tempfile.gettempdir()}); "
          f"sync_every_commit off (the default); load average {os.getloadavg()[0]:.1f} at start; "
          f"heap peaks with batches of {args.memory_batch}")
    figures: dict[str, Any] = {}
    for n in args.sizes:
        with tempfile.TemporaryDirectory(prefix="bench-dump-") as tmp:
            root = Path(args.keep) / f"n{n}" if args.keep else Path(tmp)
            t0 = time.perf_counter()
            if not (root / "all.zip").exists():
                root.mkdir(parents=True, exist_ok=True)
                build(root, n)
            print(f"\n## {n:,} datasets (source built in {time.perf_counter() - t0:.1f} s)")
            print(f"{'case':<14}{'median s':>10}{'range s':>18}{'rows/s':>12}{'heap peak MB':>14}")
            for case in args.cases:
                runs = [_child(case, root, False) for _ in range(0 if args.memory_only else args.repeat)] or \
                    [{"seconds": 0.0, "datasets": n}]
                memory = _child(case, root, True, args.memory_batch)["heap_peak_mb"]
                secs = [r["seconds"] for r in runs]
                med = statistics.median(secs)
                rate = runs[0]["datasets"] / med if med else float("inf")
                flag = "" if case.startswith(("write", "read")) or rate >= TARGET_RATE else "  (below target)"
                print(f"{case:<14}{med:>10.3f}{f'{min(secs):.3f}-{max(secs):.3f}':>18}{rate:>12,.0f}"
                      f"{memory:>14.1f}{flag}")
                figures[f"{n}:{case}"] = {"seconds": secs, "datasets": runs[0]["datasets"], "heap_peak_mb": memory}
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
