"""Start-up cost: what every fresh interpreter pays before doing anything.

Usage::

    python benchmarks/bench_startup.py                  # every probe, 5 fresh processes each
    python benchmarks/bench_startup.py --repeats 9 --only cli
    git archive OLD src | tar -x -C /tmp/old && python benchmarks/bench_startup.py --src /tmp/old/src

Each CLI call, batch job, Slurm job and fresh-process benchmark starts a new interpreter and
imports skybutler. Each probe below runs in ``--repeats`` fresh processes, interleaved (probe
A, B, C, A, B, C, ...) so a change of load hits all of them alike, and prints:

- wall: min and median of the elapsed time, in ms;
- cpu: min of the child's user + system time (``RUSAGE_CHILDREN``), in ms: less sensitive
  than wall to other processes on a shared machine;
- imports: min of the time ``python -X importtime`` attributes to the top-level imports
  (run once more per repeat, not timed otherwise);
- heavy: which of numpy, SQLAlchemy, pydantic, fsspec, astropy, pyarrow, rich, yaml the
  probe left imported.

The floors are a bare interpreter (``pass``) and ``import sqlalchemy, numpy, pydantic``
(what the library needs to open a repository). The 1-minute load is printed before and
after: on a machine other processes share, every figure moves with it.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

HEAVY = ("numpy", "sqlalchemy", "pydantic", "fsspec", "astropy", "pyarrow", "rich", "yaml")

_SCRIPT = Path(sys.executable).parent / "skybutler"
CLI = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-c", "import sys; from skybutler.cli import main; "
                                                                     "sys.exit(main())"]

# name -> (kind, argv or code)
PROBES: dict[str, tuple[str, list[str]]] = {
    "python -c pass": ("floor", [sys.executable, "-c", "pass"]),
    "import sqlalchemy, numpy, pydantic": ("floor", [sys.executable, "-c", "import sqlalchemy, numpy, pydantic"]),
    "import skybutler": ("import", [sys.executable, "-c", "import skybutler"]),
    "from skybutler import Butler": ("import", [sys.executable, "-c", "from skybutler import Butler"]),
    "skybutler --help": ("cli", [*CLI, "--help"]),
    "skybutler --version": ("cli", [*CLI, "--version"]),
    "skybutler create --help": ("cli", [*CLI, "create", "--help"]),
    "skybutler query datasets --help": ("cli", [*CLI, "query", "datasets", "--help"]),
    "skybutler ingest --help": ("cli", [*CLI, "ingest", "--help"]),
    "skybutler export --help": ("cli", [*CLI, "export", "--help"]),
    "skybutler transfer --help": ("cli", [*CLI, "transfer", "--help"]),
    "skybutler batch --help": ("cli", [*CLI, "batch", "--help"]),
    "skybutler demo --help": ("cli", [*CLI, "demo", "--help"]),
    "skybutler serve --help": ("cli", [*CLI, "serve", "--help"]),
}

_IMPORT_LINE = re.compile(r"^import time:\s+\d+ \|\s+(\d+) \| ( *)(\S+)")


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


ENV = dict(os.environ)


def run_once(argv: list[str]) -> tuple[float, float]:
    """Wall and CPU (user + system of the child) seconds of one run of ``argv``."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, env=ENV)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {proc.returncode}: {proc.stderr.strip()[-500:]}")
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def import_profile(argv: list[str]) -> tuple[float, list[str]]:
    """Seconds ``-X importtime`` gives the top-level imports, and the heavy libraries imported."""
    env = {**ENV, "PYTHONPROFILEIMPORTTIME": "1"}
    proc = subprocess.run(argv, capture_output=True, text=True, env=env)
    total, seen = 0, set()
    for line in proc.stderr.splitlines():
        match = _IMPORT_LINE.match(line)
        if not match:
            continue
        cumulative, indent, name = int(match.group(1)), match.group(2), match.group(3)
        if not indent:  # a top-level import: its cumulative time holds its children's
            total += cumulative
        seen.add(name.partition(".")[0])
    return total / 1e6, sorted(seen & set(HEAVY))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="fresh processes per probe (default 5)")
    parser.add_argument("--only", choices=["floor", "import", "cli"], action="append",
                        help="only these kinds of probe (repeatable)")
    parser.add_argument("--src", type=Path, help="measure the skybutler under this directory (put first on "
                        "PYTHONPATH), e.g. an older commit's src/, with this interpreter")
    args = parser.parse_args()
    if args.src:
        ENV["PYTHONPATH"] = os.pathsep.join([str(args.src.resolve()), *filter(None, [ENV.get("PYTHONPATH")])])
    probes = {name: argv for name, (kind, argv) in PROBES.items() if not args.only or kind in args.only}

    print(f"load before: {load()}  (python {sys.version.split()[0]}, {args.repeats} fresh processes per probe"
          f"{', skybutler from ' + str(args.src) if args.src else ''})")
    walls: dict[str, list[float]] = {name: [] for name in probes}
    cpus: dict[str, list[float]] = {name: [] for name in probes}
    imports: dict[str, list[float]] = {name: [] for name in probes}
    heavy: dict[str, list[str]] = {}
    for argv in probes.values():  # one untimed run each: the page cache and .pyc files warm
        run_once(argv)
    for _ in range(args.repeats):
        for name, argv in probes.items():
            wall, cpu = run_once(argv)
            walls[name].append(wall)
            cpus[name].append(cpu)
            seconds, heavy[name] = import_profile(argv)
            imports[name].append(seconds)

    width = max(len(name) for name in probes)
    print(f"{'probe':<{width}}  {'wall min':>8}  {'median':>7}  {'cpu min':>7}  {'imports':>7}  heavy libraries imported")
    for name in probes:
        print(f"{name:<{width}}  {min(walls[name]) * 1e3:8.0f}  {statistics.median(walls[name]) * 1e3:7.0f}  "
              f"{min(cpus[name]) * 1e3:7.0f}  {min(imports[name]) * 1e3:7.0f}  {', '.join(heavy[name]) or '-'}")
    print(f"load after: {load()}  (ms; imports: min of the top-level cumulative -X importtime)")


if __name__ == "__main__":
    main()
