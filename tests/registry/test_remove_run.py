"""Removing a run takes everything that names its datasets with it, and nothing of other runs, on both databases."""

from __future__ import annotations

import datetime
import uuid

import pytest
import sqlalchemy as sa

from skybutler import CollectionType
from skybutler.errors import CollectionError
from skybutler.registry import _remove_run, integrity_sql, origin_sql, provenance_sql

TABLES = ("dataset", "file", "tagged", "calibration", "file_lost", "dataset_origin",
          "execution", "used", "generated", "derived")


@pytest.fixture(params=["sqlite-local", "postgresql-local"])
def backend(request):
    return request.param


def _counts(butler):
    t = butler.registry.tables
    with butler.registry.database.engine.connect() as conn:
        return {name: conn.execute(sa.select(sa.func.count()).select_from(getattr(t, name))).scalar_one()
                for name in TABLES}


def _two_runs(butler):
    butler.insert_dimension_records("instrument", [{"instrument": "HSC", "class_name": "HSC"}])
    butler.insert_dimension_records("detector", [
        {"instrument": "HSC", "detector": d, "name": str(d), "purpose": "SCIENCE"} for d in range(10)])
    butler.register_dataset_type("flat", ["instrument", "detector"], "dict", is_calibration=True)
    return {run: butler.with_run(run).put_many(
        [({"detector": d}, "flat", {"instrument": "HSC", "detector": d}) for d in range(10)])
        for run in ("keep", "gone")}


def test_every_reference_to_a_dataset_is_indexed(make_butler):
    # Deleting a dataset looks each referencing table up by that column (foreign key checks).
    assert _remove_run.unindexed_references(make_butler().registry.tables) == []


def test_removing_a_run_takes_its_tags_certifications_marks_origins_and_provenance(make_butler):
    butler = make_butler()
    refs = _two_runs(butler)
    butler.collections.register("tag", CollectionType.TAGGED)
    butler.collections.register("calib", CollectionType.CALIBRATION)
    for run, when in (("keep", 2021), ("gone", 2020)):
        # One dataset per data id in a TAGGED collection: the runs' tags name different detectors.
        butler.collections.tag("tag", refs[run][:4] if run == "keep" else refs[run][4:8])
        butler.collections.certify("calib", refs[run][:3], datetime.datetime(when, 1, 1),
                                   datetime.datetime(when + 1, 1, 1))
        integrity_sql.mark_lost(butler.registry, [(refs[run][9].id, "missing")])
        origin_sql.insert_origins(butler.registry, [origin_sql.DatasetOrigin(refs[run][8].id, f"/in/{run}.fits",
                                                                             None, None)])
    execs = {run: uuid.uuid4() for run in refs}
    provenance_sql.insert_executions(
        butler.registry, [{"id": e, "run": run, "task_label": "t", "data_id_key": "k", "status": "ok"}
                          for run, e in execs.items()],
        used=[(e, refs["keep"][0].id, None) for e in execs.values()],
        generated=[(e, refs[run][1].id, None) for run, e in execs.items()],
        derived=[(refs[run][1].id, refs["keep"][0].id) for run in refs])
    before = _counts(butler)

    assert butler.remove_runs(["gone"]) == {"gone": 10}

    assert _counts(butler) == {name: n // 2 for name, n in before.items()}
    assert butler.get(refs["keep"][5]) == {"detector": 5}
    assert butler.collections.runs() == ["keep"]
    with pytest.raises(CollectionError):
        butler.registry.remove_run("gone")


def test_a_run_in_a_chain_is_not_removed(make_butler):
    butler = make_butler()
    _two_runs(butler)
    butler.collections.set_chain("chain", ["gone"])
    with pytest.raises(CollectionError, match="chain"):
        butler.remove_runs(["gone"])
    assert _counts(butler)["dataset"] == 20


def test_two_runs_removed_in_one_transaction(make_butler):
    # Each removal's table of ids is its own (a second one in the same transaction must not clash).
    butler = make_butler()
    _two_runs(butler)
    with butler.registry.transaction():
        assert len(butler.registry.remove_run("gone")) == 10
        assert len(butler.registry.remove_run("keep")) == 10
    assert _counts(butler)["dataset"] == 0


@pytest.mark.parametrize("backend", ["postgresql-local"])
def test_a_large_run_is_removed_with_more_memory_for_its_ids_and_the_transaction_keeps_its_own_setting(
        make_butler, monkeypatch):
    # As if each id needed 1 MB of hash: this run of 10 then needs more than the default work_mem.
    monkeypatch.setattr(_remove_run, "_HASHED_ID_BYTES", 1 << 20)
    butler = make_butler()
    refs = _two_runs(butler)
    statements = []
    engine = butler.registry.database.engine

    def note(conn, cursor, statement, parameters, context, executemany):
        if "set_config('work_mem'" in statement:
            statements.append(parameters)

    sa.event.listen(engine, "before_cursor_execute", note)
    try:
        with butler.registry.transaction():
            with butler.registry.database.transaction() as conn:
                conn.execute(sa.text("SET LOCAL work_mem = '5MB'"))
            files = butler.registry.remove_run("gone")
            with butler.registry.database.transaction() as conn:
                after = conn.execute(sa.text("SHOW work_mem")).scalar_one()
    finally:
        sa.event.remove(engine, "before_cursor_execute", note)

    assert sorted(f.dataset_id for f in files) == sorted(r.id for r in refs["gone"])
    assert [p["value"] for p in statements] == [f"{10 * 1024}kB", "5MB"]  # raised, then put back
    assert after == "5MB"
    assert _counts(butler)["dataset"] == 10


@pytest.mark.parametrize("backend", ["postgresql-local"])
def test_the_memory_raised_for_a_large_run_is_capped(make_butler, monkeypatch):
    # As if each id needed 1 MB of hash (10 MB for this run), with a cap of 6 MB: 6 MB is asked for.
    monkeypatch.setattr(_remove_run, "_HASHED_ID_BYTES", 1 << 20)
    monkeypatch.setattr(_remove_run, "_MAX_ID_MEMORY_KB", 6 * 1024)
    butler = make_butler()
    refs = _two_runs(butler)
    asked = []

    def note(conn, cursor, statement, parameters, context, executemany):
        if "set_config('work_mem'" in statement:
            asked.append(parameters["value"])

    engine = butler.registry.database.engine
    sa.event.listen(engine, "before_cursor_execute", note)
    try:
        files = butler.registry.remove_run("gone")
    finally:
        sa.event.remove(engine, "before_cursor_execute", note)

    assert sorted(f.dataset_id for f in files) == sorted(r.id for r in refs["gone"])
    assert asked[0] == f"{6 * 1024}kB"
