"""Removing one run of N datasets: where the time goes (rows, file list, files), SQLite or PostgreSQL.

Usage::

    python benchmarks/bench_remove_run.py --n 1000000 --keep /tmp/rr       # build, then remove (SQLite)
    python benchmarks/bench_remove_run.py --n 1000000 --postgresql postgresql://postgres@127.0.0.1:5432/test
    python benchmarks/bench_remove_run.py --repo /tmp/rr/repo --rollback 3  # registry part only, 3 times
    python benchmarks/bench_remove_run.py --copy-of /tmp/rr/repo            # remove from a copy of it

Building: ``⌈N/100⌉`` HSC-like visits x 100 detectors (`_records.hsc_records`); ``--files K``
datasets are stored by ``put_many`` (real JSON files, md5), the other N - K as rows only,
through the registry's bulk insert (`Registry.insert_datasets`: the dataset and file rows
put_many would write, without the files), in batches of ``--batch``. All in one run.

Measuring (in this process, after a ``gc.collect()``):

- default: ``Butler.remove_runs([run])``, split into rows (`Registry.remove_run`), file list
  (`Datastore.record_removal`, inside the transaction), files (`_butler_remove.delete_files`,
  after the commit) and the rest (finishing earlier removals, the commit, forgetting the
  list). The run is gone afterwards: to measure again, build again or remove from a copy
  (``--copy-of`` a kept repository: its files by ``cp -a``, on PostgreSQL its schema by
  ``pg_dump -n`` into a new one; the copy is deleted afterwards).
- ``--rollback R``: the registry part only, R times, each in a transaction that is rolled
  back (the run is still there afterwards, so before/after code can be timed on the same
  rows in the same minutes: run the script with ``PYTHONPATH`` pointing at the other tree).
  Each statement's time is summed by its first words (``DELETE FROM file``...).

Wall and CPU seconds (this process; the database server's CPU is not in it) and the
1-minute load are printed for every figure; ``--json`` writes them too. ``--repo`` reuses
a repository built with ``--keep`` (SQLite) or ``--keep`` + ``--namespace`` (PostgreSQL).
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from _records import DETECTORS, MethodTimer, hsc_records

DATASET_TYPE = "bench_metadata"
RUN = "bench/remove"
TEMPLATE = "{run}/{dataset_type}/{instrument}/{visit:08d}/{dataset_type}_{visit:08d}_{detector:03d}"


def _load() -> float:
    return os.getloadavg()[0]


def _cpu() -> float:
    return time.process_time()


@contextmanager
def statement_times(engine: Any) -> Iterator[dict[str, float]]:
    """Wall seconds per statement kind (its first words) executed on ``engine`` inside the block."""
    import sqlalchemy as sa

    out: dict[str, float] = {}
    started: list[float] = []

    def before(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        started.append(time.perf_counter())

    def after(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        words = " ".join(statement.split()[:3])[:48]
        out[words] = out.get(words, 0.0) + time.perf_counter() - started.pop()

    sa.event.listen(engine, "before_cursor_execute", before)
    sa.event.listen(engine, "after_cursor_execute", after)
    try:
        yield out
    finally:
        sa.event.remove(engine, "before_cursor_execute", before)
        sa.event.remove(engine, "after_cursor_execute", after)


def build(butler: Any, n: int, files: int, batch: int) -> dict[str, float]:
    """Fill RUN with ``n`` datasets, ``files`` of them with real files; seconds per phase."""
    from skybutler import DataId, DatasetRef
    from skybutler.model import new_dataset_id
    from skybutler.registry import FileRecord

    t0 = time.perf_counter()
    pairs = hsc_records(butler, math.ceil(n / DETECTORS))[:n]
    records_s = time.perf_counter() - t0
    butler.register_dataset_type(DATASET_TYPE, ["instrument", "visit", "detector"], "dict")
    run = butler.with_run(RUN)
    t0 = time.perf_counter()
    real = pairs[:files]
    for i in range(0, len(real), 2_000):
        run.put_many([({"visit": v, "detector": d}, DATASET_TYPE, {"instrument": "HSC", "visit": v, "detector": d})
                      for v, d in real[i:i + 2_000]])
    files_s = time.perf_counter() - t0
    dt = butler.registry.get_dataset_type(DATASET_TYPE)
    t0 = time.perf_counter()
    rest = pairs[files:]
    for i in range(0, len(rest), batch):
        part = rest[i:i + batch]
        refs = [DatasetRef(new_dataset_id(), dt, DataId({"instrument": "HSC", "visit": v, "detector": d}), RUN)
                for v, d in part]
        records = [FileRecord(r.id, f"bench%2Fremove/{DATASET_TYPE}/HSC/{v:08d}/{DATASET_TYPE}_{v:08d}_{d:03d}.json",
                              66, "0" * 32, "md5", "json") for r, (v, d) in zip(refs, part, strict=True)]
        butler.registry.insert_datasets(refs, records)
        if (i // batch) % 20 == 0:
            print(f"  rows {i + len(part):,} / {len(rest):,} ({time.perf_counter() - t0:.0f} s)",
                  file=sys.stderr, flush=True)
    return {"records_s": records_s, "files_s": files_s, "rows_s": time.perf_counter() - t0}


class _RollbackError(Exception):
    """Raised to roll back a timed removal."""


def registry_part(butler: Any, repeat: int) -> list[dict[str, Any]]:
    """`Registry.remove_run` ``repeat`` times, each rolled back; wall, CPU and per-statement seconds."""
    out = []
    for _ in range(repeat):
        gc.collect()
        load = _load()
        with statement_times(butler.registry.database.engine) as per_statement:
            w0, c0 = time.perf_counter(), _cpu()
            try:
                with butler.registry.transaction():
                    records = butler.registry.remove_run(RUN)
                    wall, cpu = time.perf_counter() - w0, _cpu() - c0
                    raise _RollbackError
            except _RollbackError:
                pass
        out.append({"wall_s": wall, "cpu_s": cpu, "files": len(records), "load": load,
                    "statements": dict(sorted(per_statement.items(), key=lambda kv: -kv[1]))})
        print(f"registry remove_run: {wall:.2f} s wall, {cpu:.2f} s CPU, {len(records):,} file records, "
              f"load {load:.1f}", file=sys.stderr, flush=True)
        for words, s in out[-1]["statements"].items():
            if s >= 0.01:
                print(f"    {s:7.2f} s  {words}", file=sys.stderr)
    return out


def full_removal(butler: Any) -> dict[str, Any]:
    """``Butler.remove_runs([RUN])`` split into rows, file list and files (after the commit)."""
    from skybutler import _butler_remove

    timers = [MethodTimer(butler.registry, "remove_run"), MethodTimer(butler.datastore, "record_removal"),
              MethodTimer(_butler_remove, "delete_files")]
    gc.collect()
    load = _load()
    try:
        w0, c0 = time.perf_counter(), _cpu()
        counts = butler.remove_runs([RUN])
        wall, cpu = time.perf_counter() - w0, _cpu() - c0
    finally:
        for t in timers:
            t.restore()
    rows, listed, deleted = (t.seconds for t in timers)
    other = wall - rows - listed - deleted
    out = {"n": counts[RUN], "wall_s": wall, "cpu_s": cpu, "rows_s": rows, "list_s": listed,
           "files_s": deleted, "other_s": other, "load_before": load, "load_after": _load()}
    print(f"remove_runs: {wall:.1f} s wall ({cpu:.1f} s CPU): rows {rows:.1f}, list {listed:.1f}, files {deleted:.1f}, "
          f"other (commit...) {other:.1f}; {counts[RUN]:,} datasets; load {load:.1f} -> {out['load_after']:.1f}",
          file=sys.stderr, flush=True)
    return out


def copy_repository(source: Path, target: Path) -> tuple[str | None, str | None]:
    """Copy the kept repository ``source`` to ``target`` and, on PostgreSQL, its schema to a new one.

    Returns the database URL and the new schema's name (None, None for SQLite). The files
    go by ``cp -a`` (1,000,000 take minutes), then ``sync``, so that their writeback does
    not compete with the removal measured next.
    """
    import subprocess

    import yaml

    target.mkdir(parents=True)
    subprocess.run(["cp", "-a", f"{source}/.", str(target)], check=True)
    config_path = target / "skybutler.yaml"
    config = yaml.safe_load(config_path.read_text())
    url, old = config["registry"]["db"], config["registry"].get("namespace")
    if not str(url).startswith("postgresql") or not old:
        subprocess.run(["sync"], check=True)
        return None, None
    new = f"remove_{uuid.uuid4().hex[:12]}"
    libpq_url = "postgresql://" + url.split("://", 1)[1]
    dump = subprocess.Popen(["pg_dump", "-n", old, "-d", libpq_url], stdout=subprocess.PIPE)
    renamed = subprocess.Popen(["sed", f"s/\\b{old}\\b/{new}/g"], stdin=dump.stdout, stdout=subprocess.PIPE)
    assert dump.stdout is not None
    dump.stdout.close()
    subprocess.run(["psql", "-q", "-v", "ON_ERROR_STOP=1", "-d", libpq_url], stdin=renamed.stdout,
                   stdout=subprocess.DEVNULL, check=True)
    if dump.wait() or renamed.wait():
        raise RuntimeError(f"copying schema {old} failed")
    subprocess.run(["psql", "-q", "-d", libpq_url, "-c", f'ANALYZE "{new}".dataset; ANALYZE "{new}".file'], check=True)
    config["registry"]["namespace"] = new
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    subprocess.run(["sync"], check=True)
    return url, new


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=100_000, help="datasets in the run")
    parser.add_argument("--files", type=int, default=10_000, help="of which stored with real files")
    parser.add_argument("--batch", type=int, default=10_000, help="rows per bulk insert")
    parser.add_argument("--postgresql", metavar="URL", help="registry on this PostgreSQL database (else SQLite)")
    parser.add_argument("--namespace", help="PostgreSQL schema (with --repo: the kept one)")
    parser.add_argument("--repo", help="reuse this repository (built with --keep) instead of building one")
    parser.add_argument("--copy-of", metavar="REPO",
                        help="remove from a copy of this kept repository (and its schema), deleted afterwards")
    parser.add_argument("--keep", metavar="DIR", help="build in DIR and keep it (and the PostgreSQL schema)")
    parser.add_argument("--build-only", action="store_true", help="build, measure nothing")
    parser.add_argument("--rollback", type=int, default=0, metavar="R",
                        help="time only the registry part, R times, each rolled back")
    parser.add_argument("--threads", type=int, metavar="T",
                        help="threads deleting the files (default: _butler_remove.DELETE_THREADS)")
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args(argv)

    from skybutler import Butler, _butler_remove

    if args.threads:
        _butler_remove.DELETE_THREADS = args.threads

    result: dict[str, Any] = {"n": args.n, "files": args.files, "backend": "postgresql" if args.postgresql else "sqlite",
                              "threads": _butler_remove.DELETE_THREADS,
                              "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())}
    namespace = args.namespace
    workdir = None
    if args.repo:
        butler = Butler(args.repo)
    elif args.copy_of:
        workdir = Path(tempfile.mkdtemp(prefix="skybutler-remove-"))
        t0 = time.perf_counter()
        args.postgresql, namespace = copy_repository(Path(args.copy_of), workdir / "repo")
        print(f"copied {args.copy_of} in {time.perf_counter() - t0:.0f} s"
              + (f", schema {namespace}" if namespace else ""), file=sys.stderr, flush=True)
        butler = Butler(workdir / "repo")
    else:
        workdir = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="skybutler-remove-"))
        workdir.mkdir(parents=True, exist_ok=True)
        if args.postgresql and not namespace:
            namespace = f"remove_{uuid.uuid4().hex[:12]}"
        butler = Butler.create(workdir / "repo", registry=args.postgresql, namespace=namespace if args.postgresql else None,
                               config={"templates": {"dataset_types": {DATASET_TYPE: TEMPLATE}}})
        print(f"building {args.n:,} datasets ({args.files:,} with files) in {workdir / 'repo'}"
              + (f", schema {namespace}" if args.postgresql else ""), file=sys.stderr, flush=True)
        result["build"] = build(butler, args.n, args.files, args.batch)
        print(f"built: {result['build']}", file=sys.stderr, flush=True)
    if args.repo or args.copy_of:  # what the kept repository holds, not the build options' defaults
        result.update(n=None, files=None, backend=butler.registry.database.dialect)
    try:
        if args.rollback:
            result["registry"] = registry_part(butler, args.rollback)
        elif not args.build_only:
            result["remove"] = full_removal(butler)
    finally:
        butler.close() if hasattr(butler, "close") else None
        if args.json:
            Path(args.json).write_text(json.dumps(result, indent=1, default=str))
        if workdir is not None and not args.keep:
            import shutil

            shutil.rmtree(workdir, ignore_errors=True)
            if args.postgresql and namespace:
                import sqlalchemy as sa

                engine = sa.create_engine(args.postgresql.replace("postgresql://", "postgresql+psycopg://", 1))
                with engine.begin() as conn:
                    conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{namespace}" CASCADE'))
                engine.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main())
