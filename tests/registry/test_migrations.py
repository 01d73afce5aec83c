"""Schema migrations: a repository written by the previous release is upgraded and keeps all it held.

The repositories under tests/fixtures/release_0_1_0 were written by release 0.1.0's
code (tests/fixtures/make_release_fixture.py); they are always copied, never opened
in place. A new revision must keep every test here passing, and make
`test_an_upgraded_repository_has_the_schema_a_new_one_has` see its change.
"""

from __future__ import annotations

import datetime
import json
import shutil
import sqlite3

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from skybutler import Butler, CollectionType, SkyButlerError
from skybutler.cli import main
from skybutler.dimensions import DimensionUniverse
from skybutler.provenance import provenance_of
from skybutler.registry import Registry, _migrate, upgrade
from skybutler.registry._db import make_engine, normalise_url
from skybutler.registry.schema import SCHEMA_VERSION
from support.services import PG_URL, RELEASE_FIXTURES

HEAD = _migrate.head_revision()


def copy_fixture(name: str, dest) -> str:
    root = dest / name
    shutil.copytree(RELEASE_FIXTURES / name, root)
    return str(root)


def upgrade_repo(root: str, **kwargs):
    return upgrade("sqlite:///registry.sqlite3", root=root, **kwargs)


@pytest.fixture(scope="module")
def upgraded_populated(tmp_path_factory):
    """The populated 0.1.0 repository, upgraded once for the read-only tests of this module."""
    root = copy_fixture("populated", tmp_path_factory.mktemp("upgraded"))
    upgrade_repo(root)
    return root


def schema_of(engine: sa.Engine, namespace: str | None = None) -> dict[str, object]:
    """What two schemas must agree on: per table its columns (type, nullable), primary key,
    foreign keys (with ON DELETE), unique constraints and indexes (columns, uniqueness);
    per view its columns.

    Read with SQLAlchemy's multi-table reflection: one catalogue query per kind of thing,
    not five per table (hundreds of round trips on PostgreSQL).
    """
    inspector = sa.inspect(engine)
    names = inspector.get_table_names(schema=namespace)
    kw = {"schema": namespace, "filter_names": names}
    columns, primary_keys = inspector.get_multi_columns(**kw), inspector.get_multi_pk_constraint(**kw)
    foreign_keys, uniques = inspector.get_multi_foreign_keys(**kw), inspector.get_multi_unique_constraints(**kw)
    indexes = inspector.get_multi_indexes(**kw)

    def table(name: str) -> dict[str, object]:
        key = (namespace, name)
        return {
            "columns": sorted((c["name"], str(c["type"]), c["nullable"]) for c in columns[key]),
            "primary_key": primary_keys[key]["constrained_columns"],
            "foreign_keys": sorted((tuple(f["constrained_columns"]), f["referred_table"], tuple(f["referred_columns"]),
                                    (f.get("options") or {}).get("ondelete"))
                                   for f in foreign_keys[key]),
            "unique": sorted(tuple(u["column_names"]) for u in uniques[key]),
            "indexes": sorted((i["name"], tuple(i["column_names"]), bool(i["unique"])) for i in indexes[key]),
        }

    return {"tables": {name: table(name) for name in names},
            "views": {name: sorted(c["name"] for c in inspector.get_columns(name, schema=namespace))
                      for name in inspector.get_view_names(schema=namespace)}}


def release_universe() -> DimensionUniverse:
    """The universe release 0.1.0 stored (today's default may have grown since)."""
    with sqlite3.connect(f"file:{RELEASE_FIXTURES}/empty/registry.sqlite3?mode=ro", uri=True) as conn:
        text = conn.execute("SELECT value FROM meta WHERE key = 'universe'").fetchone()[0]
    return DimensionUniverse(json.loads(text))


def sqlite_engine(root) -> sa.Engine:
    return sa.create_engine(f"sqlite:///{root}/registry.sqlite3")


# -- opening and upgrading -----------------------------------------------------------------


def test_opening_an_old_repository_without_upgrading_names_both_versions_and_the_command(tmp_path):
    root = copy_fixture("populated", tmp_path)
    with pytest.raises(SkyButlerError) as info:
        Butler(root)
    message = str(info.value)
    assert "\n" not in message
    assert f"schema version 1; this skybutler needs {SCHEMA_VERSION}" in message
    assert f"skybutler migrate {root}" in message


def test_opening_a_newer_repository_names_both_versions(tmp_path):
    root = copy_fixture("empty", tmp_path)
    upgrade_repo(root)
    with sqlite3.connect(f"{root}/registry.sqlite3") as conn:
        conn.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    with pytest.raises(SkyButlerError, match=f"schema version 99; this skybutler reads up to {SCHEMA_VERSION}"):
        Butler(root)


def test_upgrade_stamps_the_baseline_then_applies_every_later_revision(tmp_path):
    root = copy_fixture("empty", tmp_path)
    steps = upgrade_repo(root)
    assert [s.revision for s in steps][0] == _migrate.BASELINE
    assert steps[-1].revision == HEAD
    assert "release 0.1.0" in str(steps[0])
    with sqlite_engine(root).connect() as conn:
        assert _migrate.current_revision(conn) == HEAD
        assert conn.execute(sa.text("SELECT value FROM meta WHERE key = 'schema_version'")).scalar() == \
            str(SCHEMA_VERSION)


def test_upgrade_is_idempotent(tmp_path):
    root = copy_fixture("populated", tmp_path)
    upgrade_repo(root)
    before = schema_of(sqlite_engine(root))
    assert upgrade_repo(root) == []
    assert schema_of(sqlite_engine(root)) == before
    Butler(root).close()


def test_dry_run_lists_the_steps_and_changes_nothing(tmp_path):
    root = copy_fixture("empty", tmp_path)
    before = schema_of(sqlite_engine(root))
    steps = upgrade_repo(root, dry_run=True)
    assert steps[0].revision == _migrate.BASELINE and steps[-1].revision == HEAD
    assert schema_of(sqlite_engine(root)) == before
    with pytest.raises(SkyButlerError, match="skybutler migrate"):
        Butler(root)


def test_an_interrupted_upgrade_changes_nothing_and_can_be_run_again(tmp_path, monkeypatch):
    root = copy_fixture("populated", tmp_path)
    before = schema_of(sqlite_engine(root))

    def broken(*args, **kwargs):
        raise RuntimeError("killed half-way")

    # Revision 0002 builds its view from schema.datasets_view: failing there is failing
    # after the stamp of the baseline, inside the upgrade's transaction.
    monkeypatch.setattr("skybutler.registry.schema.datasets_view", broken)
    with pytest.raises(RuntimeError, match="killed half-way"):
        upgrade_repo(root)
    assert schema_of(sqlite_engine(root)) == before  # no alembic_version, no view
    monkeypatch.undo()
    assert upgrade_repo(root)[-1].revision == HEAD
    Butler(root).close()


def test_an_upgraded_repository_has_the_schema_a_new_one_has(tmp_path):
    # Fails when schema.py or the default universe changed without a revision to match.
    root = copy_fixture("empty", tmp_path)
    upgrade_repo(root)
    Registry.create(f"sqlite:///{tmp_path}/new.sqlite3").close()
    assert schema_of(sqlite_engine(root)) == schema_of(sa.create_engine(f"sqlite:///{tmp_path}/new.sqlite3"))


def test_the_baseline_revision_is_the_schema_of_release_0_1_0(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path}/baseline.sqlite3")
    with engine.connect() as conn, conn.begin():
        _migrate.migrate_connection(conn, _migrate.BASELINE, universe=release_universe())
        conn.execute(sa.text("DROP TABLE alembic_version"))
    engine.dispose()
    fixture = RELEASE_FIXTURES / "empty"
    assert schema_of(sa.create_engine(f"sqlite:///{tmp_path}/baseline.sqlite3")) == schema_of(
        sa.create_engine(f"sqlite:///file:{fixture}/registry.sqlite3?mode=ro&uri=true"))


def test_migrate_command_upgrades_and_reports_the_steps(tmp_path):
    root = copy_fixture("empty", tmp_path)
    dry = CliRunner().invoke(main, ["migrate", "--dry-run", root])
    assert dry.exit_code == 0, dry.output
    assert "Would apply" in dry.output and f"{HEAD}:" in dry.output
    done = CliRunner().invoke(main, ["migrate", root])
    assert done.exit_code == 0, done.output
    assert "Applied" in done.output
    again = CliRunner().invoke(main, ["migrate", root])
    assert again.exit_code == 0 and "up to date" in again.output


def test_migrate_command_on_a_directory_without_a_repository_is_one_line(tmp_path):
    result = CliRunner().invoke(main, ["migrate", str(tmp_path)])
    assert result.exit_code == 1
    assert result.output.strip().count("\n") == 0 and "not a skybutler repository" in result.output


# -- what an upgraded repository holds -----------------------------------------------------


def refs_by_collection(butler: Butler, collection: str,
                       types: tuple[str, ...] = ("calexp", "metadata", "bias")) -> dict[str, int]:
    return {dt: len(list(butler.query_datasets(dt, collections=[collection]))) for dt in types}


def test_an_upgraded_repository_keeps_collections_and_datasets(upgraded_populated):
    with Butler(upgraded_populated) as butler:
        types = {c["name"]: c["type"] for c in butler.registry.collections()}
        assert types == {"raw/hsc": "RUN", "u/someone/out": "RUN", "calib/old": "RUN", "calib/new": "RUN",
                         "calib": "CALIBRATION", "best": "TAGGED", "all": "CHAINED"}
        assert butler.registry.collection_type("all") is CollectionType.CHAINED
        assert butler.registry.resolve_collections(["all"]) == ["u/someone/out", "raw/hsc", "calib"]
        assert refs_by_collection(butler, "raw/hsc") == {"calexp": 4, "metadata": 4, "bias": 0}
        assert refs_by_collection(butler, "u/someone/out") == {"calexp": 0, "metadata": 1, "bias": 0}
        assert refs_by_collection(butler, "best") == {"calexp": 2, "metadata": 0, "bias": 0}
        assert refs_by_collection(butler, "calib/old") == {"calexp": 0, "metadata": 0, "bias": 2}
        # The chain finds the newer run's metadata first for the one data id both runs have
        # (biases are certified twice per detector: without a time that is ambiguous).
        assert refs_by_collection(butler, "all", ("calexp", "metadata")) == {"calexp": 4, "metadata": 4}
        assert butler.get("metadata", instrument="HSC", visit=903334, detector=0,
                          collections=["all"]) == {"n_sources": 42}
        assert butler.registry.get_dataset_type("bias").is_calibration


def test_an_upgraded_repository_reads_its_files(upgraded_populated):
    with Butler(upgraded_populated, collections=["raw/hsc"]) as butler:
        image = butler.get("calexp", instrument="HSC", visit=903338, detector=1)
        assert image.data.shape == (8, 6) and image.header["VISIT"] == 903338
        assert butler.get("metadata", instrument="HSC", visit=903338, detector=1) == \
            {"visit": 903338, "detector": 1, "seeing": 0.6}


def test_an_upgraded_repository_finds_certified_calibrations_by_time(upgraded_populated):
    with Butler(upgraded_populated, collections=["calib"]) as butler:
        assert butler.get("bias", instrument="HSC", detector=1, time="2026-02-10T00:00:00") == \
            {"bias": "old", "detector": 1}
        assert butler.get("bias", instrument="HSC", detector=1, time="2026-03-15T06:00:00") == \
            {"bias": "new", "detector": 1}


def test_an_upgraded_repository_keeps_records_overlaps_and_provenance(upgraded_populated):
    with Butler(upgraded_populated, collections=["u/someone/out"]) as butler:
        visits = {r["visit"]: r["band"] for r in butler.query_dimension_records("visit")}
        assert visits == {903334: "r", 903338: "i"}
        # Answered from the stored visit_detector_region x patch overlaps.
        pairs = {(d["visit"], d["patch"])
                 for d in butler.query_data_ids(["visit", "detector", "patch"], where="detector = 0")}
        assert pairs and all(v in visits for v, _ in pairs)
        ref = butler.find_dataset("metadata", instrument="HSC", visit=903334, detector=0)
        prov = provenance_of(butler, ref)
        assert prov.execution is not None and prov.execution["task_label"] == "summarise"
        assert [u.ref.dataset_type.name for u in prov.used if u.ref] == ["calexp"]
        assert [d.path for d in prov.derived_from] == ["raw_hsc/calexp/calexp_HSC_0_903334.fits"]


def test_an_upgraded_repository_takes_new_datasets(tmp_path):
    root = copy_fixture("populated", tmp_path)
    upgrade_repo(root)
    with Butler(root, run="u/someone/more") as butler:
        ref = butler.put({"new": True}, "metadata", instrument="HSC", visit=903338, detector=0)
        assert butler.get(ref) == {"new": True}


# -- PostgreSQL --------------------------------------------------------------------------


@pytest.mark.postgresql
def test_the_migration_chain_runs_on_postgresql_in_a_namespace(pg_engine, pg_namespace, pg_template):
    url = normalise_url(PG_URL)
    engine = make_engine(url, namespace=pg_namespace)
    # A repository as release 0.1.0 made it: the baseline tables and meta, no version table.
    with engine.connect() as conn, conn.begin():
        conn.execute(sa.text(f'CREATE SCHEMA "{pg_namespace}"'))
        _migrate.migrate_connection(conn, _migrate.BASELINE, namespace=pg_namespace, universe=release_universe())
        conn.execute(sa.text(f'DROP TABLE "{pg_namespace}".alembic_version'))
    engine.dispose()
    with pytest.raises(SkyButlerError, match="schema version 1"):
        Registry.open(PG_URL, namespace=pg_namespace)

    steps = upgrade(PG_URL, namespace=pg_namespace)
    assert [s.revision for s in steps][0] == _migrate.BASELINE and steps[-1].revision == HEAD
    assert upgrade(PG_URL, namespace=pg_namespace) == []
    Registry.open(PG_URL, namespace=pg_namespace).close()
    with pg_engine.connect() as conn:
        where = sa.text("SELECT table_schema FROM information_schema.tables WHERE table_name = :t "
                        "AND table_schema IN (:ns, 'public')")
        for name in ("alembic_version", "datasets_view"):
            assert conn.execute(where, {"t": name, "ns": pg_namespace}).scalars().all() == [pg_namespace]
    # ... and the result is the schema a new repository has: the test run's template replays
    # the DDL `Butler.create` sent (tests/support/pg_schema.py), without sending it again.
    other = f"{pg_namespace}_new"
    try:
        with pg_engine.begin() as conn:
            pg_template.copy_into(conn, other, records=False)
        assert schema_of(pg_engine, pg_namespace) == schema_of(pg_engine, other)
    finally:
        with pg_engine.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{other}" CASCADE'))


def test_revision_0003_fills_the_overlaps_it_adds_as_inserting_the_records_would(upgraded_populated):
    # visit x patch and visit_detector_region x tract did not exist in 0.1.0: the upgrade
    # computes them from the stored regions, so spatial queries answer as on a new repository.
    from skybutler.dimensions import Region

    with Butler(upgraded_populated) as butler:
        def regions(element):
            keys = butler.universe.elements[element].primary_key
            return {tuple(r[k] for k in keys): Region.from_vertices(r["region"])
                    for r in butler.query_dimension_records(element) if r.get("region")}

        visits, vdr = regions("visit"), regions("visit_detector_region")
        tracts, patches = regions("tract"), regions("patch")
        want_patches = {(v[1], p[1], p[2]) for v, vr in visits.items() for p, pr in patches.items() if vr.overlaps(pr)}
        want_tracts = {(k[1], k[2], t[1]) for k, kr in vdr.items() for t, tr in tracts.items() if kr.overlaps(tr)}
        assert want_patches and want_tracts  # the fixture has overlapping pairs of both kinds
        assert {(d["visit"], d["tract"], d["patch"]) for d in butler.query_data_ids(["visit", "patch"])} == want_patches
        assert {(d["visit"], d["detector"], d["tract"])
                for d in butler.query_data_ids(["visit", "detector", "tract"])} == want_tracts


def test_revision_0004_gives_an_upgraded_repository_the_batch_tables_and_executions_view(tmp_path):
    # The batch service can record a submission of a run the old release wrote, and the
    # old executions get their wall time in executions_view.
    from skybutler.registry import batch_sql

    root = copy_fixture("populated", tmp_path)
    upgrade_repo(root)
    with Butler(root) as butler:
        registry = butler.registry
        sid = batch_sql.create_submission(registry, name="redo", campaign="c", run="u/someone/out", engine="local",
                                          directory=str(tmp_path / "sub"), config="", n_jobs=1, n_quanta=1)
        job = batch_sql.insert_jobs(registry, sid, [{"name": "summarise-903334", "tasks": ["summarise"]}])
        batch_sql.record_states(registry, [batch_sql.StateChange(
            "job", job["summarise-903334"], "failed", datetime.datetime(2026, 11, 30), sid,
            fields={"failure_class": "task", "reason": "boom"})])
        assert [f["reason"] for f in batch_sql.failures(registry, sid)] == ["boom"]
        assert batch_sql.get_submission(registry, "redo")["run"] == "u/someone/out"
        [summarise] = batch_sql.time_per_task(registry, "u/someone/out")
        assert (summarise["task_label"], summarise["executions"]) == ("summarise", 1)
        assert summarise["wall_seconds_sum"] == pytest.approx(3.0, abs=1e-3)
    with sqlite_engine(root).connect() as conn:
        assert conn.execute(sa.text("SELECT task_label, run, wall_seconds FROM executions_view")).all() == \
            [("summarise", "u/someone/out", pytest.approx(3.0, abs=1e-3))]


def test_a_release_0_2_0_repository_upgrades_to_schema_5_and_keeps_all_it_held(tmp_path):
    # The previous release (schema 4, with the batch tables): revision 0005 adds the
    # lost-file marks and the ingest origins, empty; everything stored stays readable.
    from support.services import PREVIOUS_RELEASE

    root = tmp_path / "populated"
    shutil.copytree(PREVIOUS_RELEASE / "populated", root)
    steps = upgrade_repo(str(root))
    assert [s.revision for s in steps] == ["0005"]
    with Butler(root) as butler:
        calexps = list(butler.query_datasets("calexp", collections=["raw/hsc"]))
        assert len(calexps) == 4
        assert butler.get(calexps[0]).shape == (8, 6)
        assert len(butler.registry.certifications("calib", "bias")) == 4
    with sqlite_engine(str(root)).connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM file_lost")).scalar() == 0
        assert conn.execute(sa.text("SELECT count(*) FROM dataset_origin")).scalar() == 0
