"""preload_records and write_subset's bulk paths: the same subsets, fewer queries, flushed only when asked."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import sqlalchemy as sa

from skybutler.model import DataId
from skybutler.registry import Registry
from skybutler.transfer.subset import preload_records, write_subset

VISIT_DETECTOR = DataId({"instrument": "HSC", "visit": 903334, "detector": 0})
OTHER_DETECTOR = DataId({"instrument": "HSC", "visit": 903336, "detector": 1})


@pytest.fixture
def central(filled_repo_template):
    """A fresh read-only registry on the filled repository: nothing read or cached yet."""
    registry = Registry.open(f"sqlite:///{Path(filled_repo_template) / 'registry.sqlite3'}", writeable=False)
    yield registry
    registry.close()


def dump(path):
    """Every row of every dimension table of a subset, by table."""
    engine = sa.create_engine(f"sqlite:///{path}")
    try:
        with engine.connect() as conn:
            names = [r[0] for r in conn.execute(sa.text(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name LIKE 'dim_%' ORDER BY name"))]
            return {n: sorted(map(tuple, conn.execute(sa.text(f"SELECT * FROM {n}")))) for n in names}
    finally:
        engine.dispose()


def count_statements(registry):
    seen: list[str] = []
    sa.event.listen(registry.engine, "before_cursor_execute", lambda *args: seen.append(args[2]))
    return seen


def test_after_preload_records_a_subset_of_those_data_ids_reads_no_record_from_the_source(central, tmp_path):
    expected = dump(write_subset(central, tmp_path / "plain.sqlite3", data_ids=[VISIT_DETECTOR]))
    fresh = Registry.open(central.url, writeable=False)
    try:
        assert preload_records(fresh, [VISIT_DETECTOR, OTHER_DETECTOR]) >= 7  # instrument ... visit_detector_region
        statements = count_statements(fresh)
        got = dump(write_subset(fresh, tmp_path / "preloaded.sqlite3", data_ids=[VISIT_DETECTOR]))
    finally:
        fresh.close()
    assert statements == []
    assert got == expected


def test_a_data_id_given_expanded_and_bare_copies_the_same_records_as_given_once(central, tmp_path):
    expanded = VISIT_DETECTOR.with_implied({"band": "r", "physical_filter": "HSC-R", "day_obs": 20260315})
    once = dump(write_subset(central, tmp_path / "once.sqlite3", data_ids=[VISIT_DETECTOR]))
    twice = dump(write_subset(central, tmp_path / "twice.sqlite3", data_ids=[VISIT_DETECTOR, expanded, VISIT_DETECTOR]))
    assert twice == once
    assert once["dim_visit_detector_region"] and once["dim_band"]


@pytest.mark.parametrize("sync", [False, True])
def test_a_subset_is_flushed_to_disk_only_when_asked(central, tmp_path, monkeypatch, sync):
    flushed: list[int] = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (flushed.append(fd), real(fd))[1])
    path = write_subset(central, tmp_path / "s.sqlite3", data_ids=[VISIT_DETECTOR], sync=sync)
    assert len(flushed) == (1 if sync else 0)
    assert dump(path)["dim_visit"]
    assert [p.name for p in tmp_path.iterdir()] == ["s.sqlite3"]  # no temporary file left
