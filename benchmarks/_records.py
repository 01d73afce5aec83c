"""What the benchmarks share: HSC-like dimension records (⌈N/100⌉ visits x 100 detectors),
throwaway PostgreSQL schemas, measurements run in a fresh process, the server's commit
floor and a timer of one method.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

DETECTORS = 100

RESULT_PREFIX = "RESULT "
"""Starts the line a fresh process prints its figures on (`print_result`, `run_fresh`)."""


def hsc_records(butler: Any, n_visits: int) -> list[tuple[int, int]]:
    """Insert instrument, bands, filters, day_obs, detectors and visits (with regions).

    Returns the ``(visit, detector)`` pairs that have records.
    """
    butler.insert_dimension_records("instrument", [{"instrument": "HSC", "class_name": "HSC"}])
    butler.insert_dimension_records("band", [{"band": b} for b in "grizy"])
    butler.insert_dimension_records("physical_filter", [
        {"instrument": "HSC", "physical_filter": f"HSC-{b.upper()}", "band": b} for b in "grizy"])
    butler.insert_dimension_records("day_obs", [{"instrument": "HSC", "day_obs": 20260315 + i} for i in range(3)])
    butler.insert_dimension_records("detector", [
        {"instrument": "HSC", "detector": d, "name": f"{d // 10}_{d % 10}", "purpose": "SCIENCE"}
        for d in range(DETECTORS)])
    start = datetime.datetime(2026, 3, 15, 6, 0, 0)
    visits = []
    for i in range(n_visits):
        begin = start + datetime.timedelta(seconds=40 * i)
        # Pointings on a 10 x 20 grid, repeated: regions stay valid for any number of visits.
        ra, dec = 150.0 + 0.5 * (i % 10), 2.0 + 0.5 * ((i // 10) % 20)
        visits.append({
            "instrument": "HSC", "visit": 903334 + 2 * i, "physical_filter": f"HSC-{'GRIZY'[i % 5]}",
            "day_obs": 20260315 + i * 3 // max(n_visits, 1), "exposure_time": 30.0,
            "timespan_begin": begin, "timespan_end": begin + datetime.timedelta(seconds=30),
            "region": [(ra - 0.75, dec - 0.75), (ra + 0.75, dec - 0.75), (ra + 0.75, dec + 0.75),
                       (ra - 0.75, dec + 0.75)],
        })
    butler.insert_dimension_records("visit", visits)
    return [(v["visit"], d) for v in visits for d in range(DETECTORS)]


# --------------------------------------------------------------------------- PostgreSQL schemas


def new_schema_name(prefix: str = "bench") -> str:
    """A schema name no other run uses: ``prefix`` and 10 random hex digits."""
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


def drop_schemas(url: str, names: Iterable[str]) -> None:
    """Drop the schemas ``names`` (with everything in them, if they exist) on the server at ``url``."""
    import sqlalchemy as sa

    names = list(names)
    if not names:
        return
    engine = sa.create_engine(sa.make_url(url).set(drivername="postgresql+psycopg"))
    try:
        with engine.begin() as conn:
            for name in names:
                conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{name}" CASCADE'))
    finally:
        engine.dispose()


@contextlib.contextmanager
def throwaway_schema(url: str | None, prefix: str = "bench") -> Iterator[str | None]:
    """A new schema name for a repository on the server at ``url``, dropped on leaving.

    Gives None when ``url`` is None (SQLite: nothing to drop).
    """
    if url is None:
        yield None
        return
    name = new_schema_name(prefix)
    try:
        yield name
    finally:
        drop_schemas(url, [name])


# --------------------------------------------------------------------------- fresh processes


class FreshProcessError(RuntimeError):
    """A measurement's process failed or printed no result; holds its output."""

    def __init__(self, returncode: int, stdout: str, stderr: str):
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr
        self.last_line = (stderr.strip().splitlines() or [f"exit {returncode}"])[-1]
        super().__init__(self.last_line)


def print_result(figures: Any) -> None:
    """Print ``figures`` (JSON-able) as the result line `run_fresh` reads."""
    print(RESULT_PREFIX + json.dumps(figures), flush=True)


def run_fresh(script: str, *args: str, env: Mapping[str, str] | None = None) -> Any:
    """Run ``python script *args`` in a fresh process; return what it gave `print_result`.

    A fresh process has its own imports, caches and peak RSS. Raises `FreshProcessError`
    if it exits non-zero or prints no result line.
    """
    proc = subprocess.run([sys.executable, script, *args], capture_output=True, text=True, env=env)
    line = next((ln for ln in reversed(proc.stdout.splitlines()) if ln.startswith(RESULT_PREFIX)), None)
    if proc.returncode != 0 or line is None:
        raise FreshProcessError(proc.returncode, proc.stdout, proc.stderr)
    return json.loads(line[len(RESULT_PREFIX):])


def commit_samples(pg_url: str, namespace: str, count: int = 200) -> list[float]:
    """Seconds per one-row INSERT + COMMIT on a raw psycopg connection: two round trips and a WAL flush.

    The floor of any durable write on the server (``synchronous_commit=on``): the flush
    waits for the disk, shared with everything else the machine writes. The table goes
    into ``namespace`` (a throwaway schema).
    """
    import psycopg

    with psycopg.connect(pg_url) as raw:
        raw.execute(f'CREATE TABLE IF NOT EXISTS "{namespace}".commit_floor (n integer)')
        raw.commit()
        samples = []
        for i in range(count):
            t0 = time.perf_counter()
            raw.execute(f'INSERT INTO "{namespace}".commit_floor VALUES (%s)', (i,))
            raw.commit()
            samples.append(time.perf_counter() - t0)
        return samples


class MethodTimer:
    """Wraps a bound method of one object and adds up the wall time spent in it (`restore` unwraps it)."""

    def __init__(self, owner: Any, name: str) -> None:
        self.owner, self.name, self.seconds = owner, name, 0.0
        self.inner: Callable[..., Any] = getattr(owner, name)
        setattr(owner, name, self)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return self.inner(*args, **kwargs)
        finally:
            self.seconds += time.perf_counter() - t0

    def restore(self) -> None:
        setattr(self.owner, self.name, self.inner)
