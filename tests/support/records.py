"""Small, realistic dimension records for tests: one HSC-like instrument, a few visits, one skymap."""

from __future__ import annotations

import contextlib
import datetime
import sqlite3
from pathlib import Path
from typing import Any

import sqlalchemy as sa


def square(ra: float, dec: float, half: float) -> list[tuple[float, float]]:
    return [(ra - half, dec - half), (ra + half, dec - half), (ra + half, dec + half), (ra - half, dec + half)]


VISITS = {903334: "HSC-R", 903336: "HSC-R", 903338: "HSC-I", 903340: "HSC-I"}
DETECTORS = (0, 1, 2, 3)


def insert_records(butler, *, visits=VISITS, detectors=DETECTORS, skymap=True) -> None:
    """Insert instrument, filters, detectors, day_obs, visits (with regions) and a 2x2-patch tract."""
    butler.insert_dimension_records("instrument", [{"instrument": "HSC", "class_name": "HSC"}])
    butler.insert_dimension_records("band", [{"band": "r"}, {"band": "i"}])
    butler.insert_dimension_records("physical_filter", [
        {"instrument": "HSC", "physical_filter": "HSC-R", "band": "r"},
        {"instrument": "HSC", "physical_filter": "HSC-I", "band": "i"},
    ])
    butler.insert_dimension_records("detector", [
        {"instrument": "HSC", "detector": d, "name": f"1_{53 + d}"} for d in detectors])
    butler.insert_dimension_records("day_obs", [{"instrument": "HSC", "day_obs": 20260315}])
    start = datetime.datetime(2026, 3, 15, 6, 0, 0)
    recs = []
    for i, (visit, pf) in enumerate(visits.items()):
        begin = start + datetime.timedelta(minutes=5 * i)
        recs.append({"instrument": "HSC", "visit": visit, "physical_filter": pf, "day_obs": 20260315,
                     "exposure_time": 30.0 * (1 + i % 2), "timespan_begin": begin,
                     "timespan_end": begin + datetime.timedelta(seconds=30),
                     "region": square(150.0, 2.0, 0.2)})
    butler.insert_dimension_records("visit", recs)
    butler.insert_dimension_records("visit_detector_region", [
        {"instrument": "HSC", "visit": v, "detector": d,
         "region": square(149.9 + 0.2 * (d % 2), 1.9 + 0.2 * (d // 2), 0.1)}
        for v in visits for d in detectors])
    if skymap:
        butler.insert_dimension_records("skymap", [{"skymap": "rings", "tract_max": 1}])
        butler.insert_dimension_records("tract", [{"skymap": "rings", "tract": 0, "region": square(150.0, 2.0, 0.3)}])
        butler.insert_dimension_records("patch", [
            {"skymap": "rings", "tract": 0, "patch": p, "cell_x": p % 2, "cell_y": p // 2,
             "region": square(149.85 + 0.3 * (p % 2), 1.85 + 0.3 * (p // 2), 0.15)}
            for p in range(4)])


class RecordsTemplate:
    """The records of `insert_records`, inserted once per test run and copied into each test's repository.

    Inserting them computes sky overlaps and runs dozens of statements; copying is a file copy
    (a SQLite registry in the repository root) or one bulk insert per table (any other registry).
    Built by the session fixture ``standard_records`` in tests/conftest.py.

    Attributes
    ----------
    sqlite_file
        A closed SQLite registry of the default universe holding only these records (no
        collections, no dataset types), its WAL checkpointed into the file.
    empty_sqlite_file
        The same registry before the records went in: what `Butler.create` makes.
    rows
        Table name -> rows, for the tables `insert_records` writes, in dependency order.
    """

    def __init__(self, sqlite_file: Path, empty_sqlite_file: Path, rows: dict[str, list[dict[str, Any]]]):
        self.sqlite_file = sqlite_file
        self.empty_sqlite_file = empty_sqlite_file
        self.rows = rows

    @classmethod
    def build(cls, butler) -> RecordsTemplate:
        """Insert the records into ``butler``, a new repository with its registry in a SQLite file; close it.

        Keeps its registry file and the rows the records added.
        """
        try:
            tables = butler.registry.tables.metadata.sorted_tables
            engine = butler.registry.engine
            with engine.connect() as conn:
                filled_by_create = {t.name for t in tables if conn.execute(sa.select(t).limit(1)).first()}
            sqlite_file = Path(engine.url.database)
            empty_sqlite_file = sqlite_file.with_name("empty.sqlite3")
            # A consistent copy of the database with its WAL, as one file.
            with contextlib.closing(sqlite3.connect(sqlite_file)) as source, \
                    contextlib.closing(sqlite3.connect(empty_sqlite_file)) as target:
                source.backup(target)
            insert_records(butler)
            with engine.connect() as conn:
                rows = {t.name: [dict(r._mapping) for r in conn.execute(sa.select(t))]
                        for t in tables if t.name not in filled_by_create}
        finally:
            butler.close()
        # Everything into the file itself, so that a copy of the file alone is the whole registry.
        with contextlib.closing(sqlite3.connect(sqlite_file, isolation_level=None)) as conn:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return cls(sqlite_file, empty_sqlite_file, {name: table_rows for name, table_rows in rows.items() if table_rows})

    def fill(self, butler) -> None:
        """Copy the records into ``butler``'s registry, which must be new (default universe, no records)."""
        tables = butler.registry.tables.metadata.sorted_tables
        with butler.registry.engine.connect().execution_options(write=True) as conn, conn.begin():
            for table in tables:
                if table.name in self.rows:
                    conn.execute(sa.insert(table), self.rows[table.name])
