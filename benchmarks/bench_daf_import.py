"""import-daf-butler at scale: a synthetic daf_butler export of N datasets, read and imported.

Usage::

    python benchmarks/bench_daf_import.py                 # 10,000 datasets
    python benchmarks/bench_daf_import.py --datasets 50000 --repeat 3

The export is written in daf_butler's format 1.0.2 (as tests/fixtures/daf_butler's,
made by daf_butler 30.2026.4300) without daf_butler: instrument HSC, 100 detectors, one
exposure per 100 datasets with a timespan, one StructuredDataDict dataset type
(instrument, exposure, detector) whose files are small YAML files, one RUN. Phases,
each timed (wall and CPU) per repeat: making the source (parsing export.yaml, checking
every file), reading every stream (records with TAI -> UTC, datasets), the import into a
fresh SQLite + local repository (``transfer="copy"``), and the same import again (all
skipped). Figures go with the machine's load: printed beside them.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
import uuid
from pathlib import Path

DETECTORS = 100


def write_export(directory: Path, n: int) -> Path:
    """A daf_butler export of ``n`` exposure_meta datasets (and their files) in ``directory``."""
    exposures = (n + DETECTORS - 1) // DETECTORS
    lines = ["description: Butler Data Repository Export", "version: 1.0.2", "universe_version: 8",
             "universe_namespace: daf_butler", "data:",
             "- type: dimension", "  element: instrument", "  records:", "  - name: HSC", "    detector_max: 200",
             "- type: dimension", "  element: physical_filter", "  records:",
             "  - {instrument: HSC, name: HSC-R, band: r}",
             "- type: dimension", "  element: day_obs", "  records:", "  - {instrument: HSC, id: 20260301}",
             "- type: dimension", "  element: detector", "  records:"]
    lines += [f"  - {{instrument: HSC, id: {d}, full_name: '{d}', purpose: SCIENCE}}" for d in range(DETECTORS)]
    lines += ["- type: dimension", "  element: exposure", "  records:"]
    for e in range(exposures):
        minute = e % 60
        lines += [f"  - {{instrument: HSC, id: {e}, physical_filter: HSC-R, day_obs: 20260301, "
                  f"exposure_time: 30.0, datetime_begin: !butler_time/tai/iso '2026-03-02 {e // 60 % 24:02d}:"
                  f"{minute:02d}:00.000000000', datetime_end: !butler_time/tai/iso '2026-03-02 "
                  f"{e // 60 % 24:02d}:{minute:02d}:30.000000000'}}"]
    lines += ["- type: collection", "  collection_type: RUN", "  name: HSC/raw/all",
              "- type: dataset_type", "  name: exposure_meta", "  dimensions: [band, instrument, day_obs, detector, "
              "physical_filter, exposure]", "  storage_class: StructuredDataDict", "  is_calibration: false",
              "- type: dataset", "  dataset_type: exposure_meta", "  run: HSC/raw/all", "  records:"]
    for i in range(n):
        e, d = divmod(i, DETECTORS)
        path = f"HSC/raw/all/exposure_meta/{e}/exposure_meta_{e}_{d}.yaml"
        file = directory / path
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_text(f"exposure: {e}\ndetector: {d}\nseeing: 0.6\n")
        lines += ["  - dataset_id:", f"    - !uuid '{uuid.uuid4()}'", "    data_id:",
                  f"    - {{instrument: HSC, exposure: {e}, detector: {d}}}", f"    path: {path}",
                  "    formatter: lsst.daf.butler.formatters.yaml.YamlFormatter"]
    export = directory / "export.yaml"
    export.write_text("\n".join(lines) + "\n")
    return export


def timed(fn):
    w, c = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - w, time.process_time() - c


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    from skybutler import Butler
    from skybutler.transfer.daf_butler import DafButlerExportSource, import_daf_butler

    phases: dict[str, list[tuple[float, float]]] = {}
    with tempfile.TemporaryDirectory(prefix="skybutler-bench-daf-") as tmp:
        export, wall, _ = timed(lambda: write_export(Path(tmp) / "export", args.datasets))
        print(f"synthetic export: {args.datasets:,} datasets, {export.stat().st_size / 1e6:.1f} MB of YAML "
              f"({wall:.1f} s to write)")
        for r in range(args.repeat):
            source, w, c = timed(lambda: DafButlerExportSource(export, drop_unknown_dimensions=True))
            phases.setdefault("make the source (parse, check files)", []).append((w, c))

            def read_all(source=source):
                for _ in source.dimension_records():
                    pass
                return sum(len(b) for b in source.datasets())

            _, w, c = timed(read_all)
            phases.setdefault("read every stream", []).append((w, c))
            butler = Butler.create(Path(tmp) / f"repo{r}")
            done, w, c = timed(lambda butler=butler: import_daf_butler(butler, export, drop_unknown_dimensions=True))
            assert done.report.datasets_added == args.datasets
            phases.setdefault("import (SQLite + local, copy)", []).append((w, c))
            again, w, c = timed(lambda butler=butler: import_daf_butler(butler, export, drop_unknown_dimensions=True))
            assert again.report.datasets_skipped == args.datasets
            phases.setdefault("import again (all skipped)", []).append((w, c))
            butler.close()
    print(f"load average before/after: {os.getloadavg()[0]:.1f}; {os.cpu_count()} CPUs; {args.repeat} repeat(s)")
    for phase, runs in phases.items():
        walls = [w for w, _ in runs]
        cpus = [c for _, c in runs]
        rate = args.datasets / statistics.median(walls)
        print(f"{phase:40s} wall {min(walls):7.2f} .. {max(walls):7.2f} s (median {statistics.median(walls):.2f}, "
              f"{rate:,.0f} datasets/s)  CPU median {statistics.median(cpus):.2f} s")


if __name__ == "__main__":
    main()
