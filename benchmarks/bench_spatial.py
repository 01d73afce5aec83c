"""Speed of spatial queries: 10,000 visits x 1,000 patches on SQLite (issue: correct answers).

A skymap of one tract cut into 1,000 patches (a 40 x 25 grid of 0.2-degree cells) and
10,000 visits (0.6-degree squares placed at random over it, about 16 patches each), with
overlaps computed at insert. Timed, each repeated and reported as median (min-max):

- the patches one visit overlaps (``query_data_ids(["patch"], where="visit = V")``);
- the visits that overlap one patch;
- the tracts of one visit through a region predicate (``visit.region OVERLAPS POINT``);
- every overlapping (visit, patch) pair, counted in SQL.

Run: ``python benchmarks/bench_spatial.py [--visits 10000] [--repeat 30]``.
"""

from __future__ import annotations

import argparse
import platform
import random
import statistics
import tempfile
import time

from skybutler import Butler
from skybutler.registry import pipeline_sql


def square(ra: float, dec: float, half: float) -> list[tuple[float, float]]:
    return [(ra - half, dec - half), (ra + half, dec - half), (ra + half, dec + half), (ra - half, dec + half)]


def build(root: str, n_visits: int) -> Butler:
    butler = Butler.create(root)
    butler.insert_dimension_records("instrument", [{"instrument": "HSC"}])
    butler.insert_dimension_records("band", [{"band": "r"}])
    butler.insert_dimension_records("physical_filter", [{"instrument": "HSC", "physical_filter": "R", "band": "r"}])
    butler.insert_dimension_records("skymap", [{"skymap": "grid"}])
    butler.insert_dimension_records("tract", [{"skymap": "grid", "tract": 0, "region": square(14.0, 2.5, 4.2)}])
    butler.insert_dimension_records("patch", [
        {"skymap": "grid", "tract": 0, "patch": 40 * y + x, "region": square(10.1 + 0.2 * x, 0.1 + 0.2 * y, 0.1)}
        for y in range(25) for x in range(40)])
    rng = random.Random(59)
    for start in range(0, n_visits, 2000):
        butler.insert_dimension_records("visit", [
            {"instrument": "HSC", "visit": v, "physical_filter": "R",
             "region": square(rng.uniform(10.3, 17.7), rng.uniform(0.3, 4.7), 0.3)}
            for v in range(start, min(start + 2000, n_visits))])
    return butler


def timed(fn, repeat: int) -> tuple[float, float, float, object]:
    result = fn()  # warm
    samples = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = fn()
        samples.append((time.perf_counter() - t0) * 1000)
    return statistics.median(samples), min(samples), max(samples), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--visits", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=30)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        butler = build(tmp + "/repo", args.visits)
        setup = time.perf_counter() - t0
        rng = random.Random(1)
        visits = [rng.randrange(args.visits) for _ in range(args.repeat + 1)]
        patches = [rng.randrange(1000) for _ in range(args.repeat + 1)]
        it_v, it_p = iter(visits * 2), iter(patches * 2)
        rows = [
            ("patches of one visit", lambda: len(list(butler.query_data_ids(["patch"], where=f"visit = {next(it_v)}")))),
            ("visits of one patch", lambda: len(list(butler.query_data_ids(
                ["visit"], where=f"skymap = 'grid' AND tract = 0 AND patch = {next(it_p)}")))),
            ("visits overlapping a point", lambda: len(list(butler.query_data_ids(
                ["visit"], where="visit.region OVERLAPS POINT(14.0, 2.5)")))),
            ("all (visit, patch) pairs, counted", lambda: pipeline_sql.count_distinct(
                butler.registry, ["visit", "patch"], ["visit", "patch"])),
        ]
        print(f"# bench_spatial: {args.visits} visits x 1000 patches, SQLite + local files, "
              f"{platform.node()} {platform.python_version()}; setup {setup:.1f} s")
        print(f"{'query':40s} {'median ms':>10s} {'min-max ms':>16s} {'rows':>8s}")
        for name, fn in rows:
            med, lo, hi, result = timed(fn, args.repeat)
            print(f"{name:40s} {med:10.2f} {lo:8.2f}-{hi:<8.2f} {result!s:>8s}")
        butler.close()


if __name__ == "__main__":
    main()
