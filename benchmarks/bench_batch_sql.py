"""Speed of the batch tables' bulk writes and reads (skybutler.registry.batch_sql, issue 8).

Usage::

    python benchmarks/bench_batch_sql.py                       # 100,000 quanta in 10,000 jobs, SQLite
    python benchmarks/bench_batch_sql.py --quanta 10000        # another size
    python benchmarks/bench_batch_sql.py --postgresql postgresql://postgres@127.0.0.1:5432/test

One submission: N/10 jobs (`insert_jobs`), N quanta (`insert_quanta`), then one
`record_states` call moving every quantum to ``running`` (N events, N updates), one
moving every job to ``succeeded`` with four fields, then `progress` and `events` of the
last 100 events. Each step is timed wall and CPU (``process_time``: the client's share;
on SQLite that is nearly all the work). Runs ``--repeat`` times on a new repository
each; prints the minimum and the maximum of each figure: a loaded machine shows up as
a wide range, and as wall far above CPU.

The brief's target: 100,000 quanta inserted in about a second on SQLite.
"""

from __future__ import annotations

import argparse
import datetime
import tempfile
import time
from collections.abc import Callable
from typing import Any

from _records import throwaway_schema

from skybutler.model import new_id
from skybutler.registry import Registry, batch_sql
from skybutler.registry.batch_sql import StateChange


def one_run(n: int, url: str | None) -> dict[str, tuple[float, float]]:
    with throwaway_schema(url) as namespace:
        return _one_run(n, url, namespace)


def _one_run(n: int, url: str | None, namespace: str | None) -> dict[str, tuple[float, float]]:
    if url is None:
        registry = Registry.create(f"sqlite:///{tempfile.mkdtemp()}/registry.sqlite3")
    else:
        registry = Registry.create(url, namespace=namespace)
    figures: dict[str, tuple[float, float]] = {}

    def timed(label: str, call: Callable[[], Any]) -> Any:
        wall, cpu = time.perf_counter(), time.process_time()
        result = call()
        figures[label] = (time.perf_counter() - wall, time.process_time() - cpu)
        return result

    try:
        sid = batch_sql.create_submission(registry, name="bench", campaign="bench", run="bench/run",
                                          engine="local", directory="/bench", config="", n_jobs=n // 10,
                                          n_quanta=n)
        jobs = timed(f"insert_jobs ({n // 10:,})", lambda: batch_sql.insert_jobs(
            registry, sid, [{"name": f"job{i:07d}", "tasks": ["isr"], "n_quanta": 10} for i in range(n // 10)]))
        job_ids = list(jobs.values())
        quanta = [{"quantum_id": new_id(), "job_id": job_ids[i // 10], "task_label": "isr",
                   "data_id_key": f"detector={i % 100}|instrument=HSC|visit={i // 100}"} for i in range(n)]
        timed(f"insert_quanta ({n:,})", lambda: batch_sql.insert_quanta(registry, sid, quanta))
        now = datetime.datetime.now(datetime.UTC)
        changes = [StateChange("quantum", q["quantum_id"], "running", now, sid, attempt=1) for q in quanta]
        timed(f"record_states, quanta ({n:,})", lambda: batch_sql.record_states(registry, changes))
        changes = [StateChange("job", j, "succeeded", now, sid, attempt=1,
                               fields={"host": "node1", "end_time": now, "wall_time": 1.0, "exit_code": 0})
                   for j in job_ids]
        timed(f"record_states, jobs with 4 fields ({n // 10:,})", lambda: batch_sql.record_states(registry, changes))
        timed("progress", lambda: batch_sql.progress(registry, sid))
        last = n + n // 10
        timed("events (last 100)", lambda: batch_sql.events(registry, sid, since_id=last - 100))
    finally:
        registry.close()
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quanta", type=int, default=100_000)
    parser.add_argument("--postgresql", metavar="URL", help="run on this PostgreSQL server instead of SQLite")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    runs = [one_run(args.quanta, args.postgresql) for _ in range(args.repeat)]
    print(f"{'PostgreSQL' if args.postgresql else 'SQLite'}, {args.quanta:,} quanta, {args.repeat} runs "
          "(min-max; wall, then CPU of this process)")
    for label in runs[0]:
        walls = [r[label][0] for r in runs]
        cpus = [r[label][1] for r in runs]
        print(f"  {label:44s} wall {min(walls):7.3f}-{max(walls):7.3f} s   cpu {min(cpus):7.3f}-{max(cpus):7.3f} s")


if __name__ == "__main__":
    main()
