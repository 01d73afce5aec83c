"""Speed and memory of dumps (issue 9): export to a dump and import of one, 1,000 and 10,000 small datasets.

Usage::

    python benchmarks/bench_dump.py                    # 1,000 and 10,000 datasets, 3 repeats
    python benchmarks/bench_dump.py --sizes 10000 --repeat 5
    python benchmarks/bench_dump.py --json out.json    # also write the raw figures

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
10,000 datasets, in separate runs without timing; flat means the two are close.
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


def run_case(case: str, root: Path, measure_memory: bool) -> dict[str, Any]:
    """Run one case once in this process; ``{"seconds", "datasets", "heap_peak_mb"}``."""
    import tracemalloc

    from skybutler import Butler
    from skybutler.transfer.dump import DumpSource, export_dump, import_dump, write_dump
    from skybutler.transfer.source import RegistrySource

    work = Path(tempfile.mkdtemp(dir=root))
    source = Butler(root / "repo", writeable=False)
    prepared: Any = None
    target: Any = None
    if case.startswith("write"):
        prepared = _MemorySource(RegistrySource(source, collections=[RUN]))
    if case.startswith("import"):
        target = Butler.create(work / "target")
    if measure_memory:
        tracemalloc.start()
    start = time.perf_counter()
    if case.startswith("export"):
        files = {"export rows": "none", "export dir": "directory", "export zip": "zip"}[case]
        report = export_dump(source, work / ("d.zip" if files == "zip" else "d"), collections=[RUN], files=files)
        n = report.datasets_added
    elif case.startswith("write"):
        zip_ = case == "write zip"
        report = write_dump(prepared, work / ("d.zip" if zip_ else "d"), files="zip" if zip_ else "none")
        n = report.datasets_added
    elif case == "read":
        with DumpSource(root / "all.zip") as dump:
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
        report = import_dump(target, root / path, transfer=transfer)
        n = report.datasets_added
    seconds = time.perf_counter() - start
    peak = tracemalloc.get_traced_memory()[1] / 1e6 if measure_memory else None
    shutil.rmtree(work, ignore_errors=True)
    return {"seconds": seconds, "datasets": n, "heap_peak_mb": peak}


def _child(case: str, root: Path, memory: bool) -> dict[str, Any]:
    out = subprocess.run([sys.executable, __file__, "--child", case, str(root), "1" if memory else "0"],
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
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        case, root, memory = args.child
        print(json.dumps(run_case(case, Path(root), memory == "1")))
        return
    print(f"# {platform.node()}: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"Python {platform.python_version()}; SQLite + local disk ({tempfile.gettempdir()}); "
          "sync_every_commit off (the default)")
    figures: dict[str, Any] = {}
    for n in args.sizes:
        with tempfile.TemporaryDirectory(prefix="bench-dump-") as tmp:
            root = Path(tmp)
            t0 = time.perf_counter()
            build(root, n)
            print(f"\n## {n:,} datasets (source built in {time.perf_counter() - t0:.1f} s)")
            print(f"{'case':<14}{'median s':>10}{'range s':>18}{'rows/s':>12}{'heap peak MB':>14}")
            for case in args.cases:
                runs = [_child(case, root, False) for _ in range(args.repeat)]
                memory = _child(case, root, True)["heap_peak_mb"]
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
