"""Transfers between live repositories: RegistrySource read by import_content, Butler.transfer_from, the CLI.

Sources and targets on SQLite and PostgreSQL, local files and S3 (moto); every transfer
mode; partial targets (identical datasets skipped, conflicting ones refused and named,
never overwritten); new ids with provenance following; the provenance chain of ``full``
mode; repeats and killed transfers that, run again, leave everything once.
"""

from __future__ import annotations

import shutil
import signal
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from skybutler import Butler, RepositoryConfig
from skybutler.cli import main
from skybutler.dimensions import DimensionUniverse
from skybutler.errors import DatasetTypeError, TransferConflictError, TransferError
from skybutler.model import CollectionType, new_id
from skybutler.registry import provenance_sql
from skybutler.transfer import RegistrySource, import_content
from support import transfer_kill
from support.forkserver import run_in_process
from support.services import PG_URL

RUN, CALIB_RUN = "src/run", "calib/run"
VISITS, DETECTORS, PATCHES = (903334, 903336), (0, 1, 2, 3), (0, 1, 2, 3)


@pytest.fixture
def repo(request, tmp_path):
    """Factory: ``repo(kind, records=True)`` makes a repository on ``sqlite-local``, ``sqlite-s3``,
    ``postgresql-local`` or ``postgresql-s3``, holding the standard records unless ``records=False``.

    As `make_butler` does, the registry is a copy of the test run's template (the SQLite file,
    or the PostgreSQL schema's DDL and rows), not made by `Butler.create` each time; a repository
    of another universe is created as usual.
    """
    made = []

    def make(kind: str = "sqlite-local", *, records: bool = True, **kwargs):
        registry, _, datastore = kind.partition("-")
        root = tmp_path / f"repo{len(made)}"
        config = RepositoryConfig()
        if datastore == "s3":
            bucket, options = request.getfixturevalue("s3_shared_bucket")
            config.datastore.root = f"s3://{bucket}/{uuid.uuid4().hex}"
            config.datastore.storage_options = dict(options)
        if registry == "postgresql":
            request.getfixturevalue("pg_engine")
            config.registry.db = PG_URL
            config.registry.namespace = f"{request.getfixturevalue('pg_namespace')}_{len(made)}"
        if "universe" in kwargs:
            butler = Butler.create(root, config=config, **kwargs)
            if records:
                request.getfixturevalue("standard_records").fill(butler)
        else:
            root.mkdir()
            if registry == "postgresql":
                with request.getfixturevalue("pg_engine").begin() as conn:
                    request.getfixturevalue("pg_template").copy_into(conn, config.registry.namespace,
                                                                     records=records)
            else:
                template = request.getfixturevalue("standard_records")
                shutil.copyfile(template.sqlite_file if records else template.empty_sqlite_file,
                                root / "registry.sqlite3")
            config.write(root)
            butler = Butler(root, **kwargs)
        made.append(butler)
        return butler

    yield make
    for b in made:  # closed first: an open connection would keep its schema from being dropped
        b.close()
    for b in made:
        if b.registry.dialect == "postgresql":
            with request.getfixturevalue("pg_engine").begin() as conn:
                conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{b.config.registry.namespace}" CASCADE'))


def fill(butler) -> dict:
    """Calexps (a run), coadds, biases certified in a CALIBRATION collection, a TAGGED and a CHAINED
    collection, and the provenance bias -> calexp -> coadd. Returns the refs by name."""
    butler.register_dataset_type("calexp", ["instrument", "visit", "detector"], "dict")
    butler.register_dataset_type("coadd", ["skymap", "tract", "patch"], "dict")
    butler.register_dataset_type("bias", ["instrument", "detector"], "dict", is_calibration=True)
    run = butler.with_run(RUN)
    calexps = run.put_many([({"visit": v, "detector": d}, "calexp", {"instrument": "HSC", "visit": v, "detector": d})
                            for v in VISITS for d in DETECTORS])
    coadds = run.put_many([({"patch": p}, "coadd", {"skymap": "rings", "tract": 0, "patch": p}) for p in PATCHES])
    biases = butler.with_run(CALIB_RUN).put_many([({"bias": d}, "bias", {"instrument": "HSC", "detector": d})
                                                  for d in DETECTORS])
    butler.collections.register("best", CollectionType.TAGGED)
    butler.collections.tag("best", calexps[:4])
    butler.collections.register("calib", CollectionType.CALIBRATION)
    butler.collections.certify("calib", biases, "2026-01-01", "2027-01-01")
    butler.collections.set_chain("chain", ["best", RUN])
    make_calexp, make_coadd = new_id(), new_id()
    provenance_sql.insert_executions(butler.registry, [
        {"id": make_calexp, "run": RUN, "task_label": "make_calexp", "data_id_key": "calexp0", "status": "succeeded"},
        {"id": make_coadd, "run": RUN, "task_label": "make_coadd", "data_id_key": "coadd0", "status": "succeeded"},
    ], used=[(make_calexp, biases[0].id, None), (make_coadd, calexps[0].id, None), (make_coadd, calexps[1].id, None)],
        generated=[(make_calexp, calexps[0].id, "a"), (make_coadd, coadds[0].id, "b")],
        derived=[(coadds[0].id, calexps[0].id), (coadds[0].id, calexps[1].id), (calexps[0].id, biases[0].id)])
    return {"calexp": calexps, "coadd": coadds, "bias": biases, "executions": (make_calexp, make_coadd)}


def datasets(butler) -> dict:
    """Every dataset by id: (type, data id, run, file size, checksum)."""
    out = {}
    for run in butler.collections.runs():
        for dt in butler.registry.dataset_types():
            refs = list(butler.query_datasets(dt.name, collections=[run]))
            files = butler.registry.get_files([r.id for r in refs])
            for r in refs:
                f = files.get(r.id)
                out[r.id] = (dt.name, dict(r.data_id), r.run, f and f.size, f and f.checksum)
    return out


def edges(butler) -> dict:
    t = butler.registry.tables
    with butler.registry.database.read() as conn:
        return {name: set(conn.execute(sa.select(table.c.execution_id if name != "derived" else table.c.source_id,
                                                 table.c.dataset_id)).all())
                for name, table in (("used", t.used), ("generated", t.generated), ("derived", t.derived))}


def check_same(source, target, ids) -> None:
    """``target`` holds the datasets ``ids`` of ``source`` as ``source`` does, bytes included."""
    held, want = datasets(target), datasets(source)
    assert {i: held.get(i) for i in ids} == {i: want[i] for i in ids}
    refs = source.registry.get_datasets(list(ids))
    assert target.get_many(list(refs.values())) == source.get_many(list(refs.values()))


# -- between backends ----------------------------------------------------------------------------


# Reading a source and writing a target go through the registry (SQLite or PostgreSQL) and
# the datastore (local or S3) independently: these two pairs read and write each database and
# each store at least once, and each crosses database and store. sqlite-s3 -> postgresql-local
# and postgresql-local -> sqlite-s3 ran the same readers and writers again.
@pytest.mark.parametrize(("source_kind", "target_kind"), [
    ("sqlite-local", "postgresql-s3"), ("postgresql-s3", "sqlite-local"),
])
def test_a_transfer_carries_datasets_files_records_collections_and_provenance_between_backends(
        repo, source_kind, target_kind):
    source, target = repo(source_kind), repo(target_kind, records=False)
    refs = fill(source)
    report = import_content(target, RegistrySource(source, collections=["chain", "calib"]))
    every = [r.id for name in ("calexp", "coadd", "bias") for r in refs[name]]
    check_same(source, target, every)
    assert (report.datasets_added, report.datasets_skipped, report.files_copied) == (len(every), 0, len(every))
    assert report.conflicts == [] and report.executions_added == 2
    assert {c["name"]: (c["type"], c["children"]) for c in target.collections.query()} == \
        {c["name"]: (c["type"], c["children"]) for c in source.collections.query()}
    assert {r.id for r in target.query_datasets("calexp", collections=["best"])} == {r.id for r in refs["calexp"][:4]}
    assert target.collections.certifications("calib") == source.collections.certifications("calib")
    assert edges(target) == edges(source)
    # Regions travel as stored, and the target's overlaps answer a spatial query as the source's do.
    query = {"where": "visit IN (903334, 903336) AND skymap = 'rings'"}
    def spatial(butler):
        return sorted(tuple(sorted(di.items())) for di in butler.query_data_ids(["visit", "detector", "patch"], **query))

    assert spatial(target) == spatial(source) != []
    # Run again: everything is there already.
    again = import_content(target, RegistrySource(source, collections=["chain", "calib"]))
    assert (again.datasets_added, again.datasets_skipped, again.files_copied) == (0, len(every), 0)
    assert (again.executions_added, again.dimension_records_added, again.collections_added) == (0, 0, 0)
    check_same(source, target, every)


# -- transfer modes ------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["copy", "move", "hardlink", "symlink", "direct", "none"])
def test_each_transfer_mode_places_the_files_as_it_says(repo, mode):
    source, target = repo(), repo(records=False)
    refs = fill(source)["calexp"]
    source_files = source.registry.get_files([r.id for r in refs])
    report = target.transfer_from(source, refs, transfer=mode)
    assert report.datasets_added == len(refs)
    target_files = target.registry.get_files([r.id for r in refs])
    for ref in refs:
        src, dst = source_files[ref.id], target_files[ref.id]
        src_path, dst_path = Path(source.datastore.url(src.path)), Path(target.datastore.url(dst.path))
        assert (dst.size, dst.checksum, dst.format) == (src.size, src.checksum, src.format)
        if mode == "direct":
            assert dst.path == f"file://{src_path}"  # shared in place
        else:
            assert dst.path == src.path
        if mode == "none":
            assert not dst_path.exists()  # rows only: another system brings the files
            continue
        assert target.get(ref) == {"visit": ref.data_id["visit"], "detector": ref.data_id["detector"]}
        if mode == "copy":
            assert src_path.exists() and not dst_path.samefile(src_path)
        elif mode == "hardlink":
            assert dst_path.stat().st_ino == src_path.stat().st_ino
        elif mode == "symlink":
            assert dst_path.is_symlink() and dst_path.resolve() == src_path.resolve()
        elif mode == "move":
            # The files moved; the source's rows stay and name files that are gone.
            assert not src_path.exists() and not dst_path.is_symlink()
            assert source.registry.get_datasets([ref.id]) and not source.datastore.exists(src.path)


def test_move_repeated_after_it_completed_changes_nothing(repo):
    source, target = repo(), repo(records=False)
    refs = fill(source)["calexp"]
    target.transfer_from(source, refs, transfer="move")
    again = target.transfer_from(source, refs, transfer="move")  # the source files are gone: all skipped
    assert (again.datasets_added, again.datasets_skipped) == (0, len(refs))
    assert target.get_many(refs) == [{"visit": r.data_id["visit"], "detector": r.data_id["detector"]} for r in refs]


# -- partial targets and conflicts -----------------------------------------------------------------


def test_a_partial_target_keeps_what_it_holds_and_refuses_a_conflicting_dataset_by_name(repo):
    source, target = repo(), repo()
    refs = fill(source)["calexp"]
    target.transfer_from(source, refs[:3])  # the target holds three already
    # ... and its own calexp for the data id of refs[5], under another id, with other content.
    clash = refs[5]
    own = target.with_run(RUN).put({"mine": True}, "calexp", dict(clash.data_id))
    with pytest.raises(TransferConflictError) as info:
        target.transfer_from(source, refs)
    [line] = info.value.conflicts
    assert "calexp" in line and "visit=903336" in line and "detector=1" in line and RUN in line
    assert str(own.id) in line and str(clash.id) in line
    assert target.get(own) == {"mine": True}  # never overwritten
    others = [r for r in refs if r != clash]
    check_same(source, target, [r.id for r in others])  # everything else was written
    report = import_content(target, RegistrySource(source, refs), on_conflict="report")
    assert (report.datasets_added, report.datasets_skipped, len(report.conflicts)) == (0, len(others), 1)


def test_a_different_record_under_the_same_key_and_a_chain_with_other_children_are_reported_not_overwritten(repo):
    source, target = repo(), repo(records=False)
    fill(source)
    target.insert_dimension_records("instrument", [{"instrument": "HSC", "class_name": "NotHSC"}])
    target.collections.register("elsewhere", CollectionType.RUN)
    target.collections.set_chain("chain", ["elsewhere"])
    report = import_content(target, RegistrySource(source, collections=["chain"]), on_conflict="report")
    assert len(report.conflicts) == 2
    assert any("instrument record {'instrument': 'HSC'}" in line and "NotHSC" in line for line in report.conflicts)
    assert any("Chain 'chain'" in line for line in report.conflicts)
    assert [r["class_name"] for r in target.query_dimension_records("instrument")] == ["NotHSC"]
    assert target.collections.query("chain")[0]["children"] == ["elsewhere"]
    assert report.datasets_added == 12  # the rest is written
    with pytest.raises(TransferConflictError, match="2 conflict"):
        import_content(target, RegistrySource(source, collections=["chain"]))


def test_a_dataset_type_defined_otherwise_in_the_target_is_refused_naming_both(repo):
    source, target = repo(), repo(records=False)
    refs = fill(source)["calexp"]
    target.register_dataset_type("calexp", ["instrument", "visit", "detector"], "image")
    with pytest.raises(DatasetTypeError, match=r"calexp.*\[image\].*\[dict\]|calexp.*\[dict\].*\[image\]"):
        target.transfer_from(source, refs)
    assert target.registry.get_datasets([r.id for r in refs]) == {}


def test_a_target_whose_universe_lacks_an_element_is_refused_before_anything_is_written(repo, tmp_path):
    source = repo()
    refs = fill(source)["calexp"]
    document = source.universe.document
    smaller = {**document, "elements": {k: v for k, v in document["elements"].items() if k != "visit_definition"}}
    target = repo(records=False, universe=DimensionUniverse(smaller))
    with pytest.raises(TransferError, match="visit_definition"):
        target.transfer_from(source, refs)
    assert target.registry.dataset_types() == []


# -- ids and provenance ----------------------------------------------------------------------------


def test_new_ids_give_fresh_ids_that_tags_certifications_and_provenance_edges_follow(repo):
    source, target = repo(), repo(records=False)
    refs = fill(source)
    report = import_content(target, RegistrySource(source, collections=["chain", "calib"]), new_ids=True)
    ids = report.id_map
    every = [r for name in ("calexp", "coadd", "bias") for r in refs[name]]
    assert set(ids) >= {r.id for r in every} | set(refs["executions"])
    assert not set(ids) & set(ids.values())  # all fresh
    assert set(target.registry.get_datasets([ids[r.id] for r in every])) == {ids[r.id] for r in every}
    assert {r.id for r in target.query_datasets("calexp", collections=["best"])} == \
        {ids[r.id] for r in refs["calexp"][:4]}
    assert {c["dataset_id"] for c in target.collections.certifications("calib")} == {ids[r.id] for r in refs["bias"]}
    mapped = {name: {(ids.get(a, a), ids.get(b, b)) for a, b in pairs} for name, pairs in edges(source).items()}
    assert edges(target) == mapped
    again = import_content(target, RegistrySource(source, collections=["chain", "calib"]), new_ids=True)
    assert (again.datasets_added, again.executions_added) == (0, 0)
    assert {k: v for k, v in again.id_map.items() if k in ids} == ids  # the same target ids


def test_full_mode_brings_the_provenance_chain_as_datasets(repo):
    source, target = repo(), repo(records=False)
    refs = fill(source)
    coadd = refs["coadd"][0]
    limited = repo(records=False)
    limited.transfer_from(source, [coadd])
    assert set(datasets(limited)) == {coadd.id}
    report = target.transfer_from(source, [coadd], mode="full")
    # coadd <- calexps 0, 1 <- bias 0, with the executions that made them.
    chain = {coadd.id, refs["calexp"][0].id, refs["calexp"][1].id, refs["bias"][0].id}
    assert set(datasets(target)) == chain
    check_same(source, target, chain)
    assert report.executions_added == 2
    assert {e["id"] for e in provenance_sql.executions(target.registry)} == set(refs["executions"])


# -- interrupted transfers -------------------------------------------------------------------------


def test_a_transfer_killed_midway_and_run_again_is_complete_with_nothing_twice(repo):
    source, target = repo(), repo(records=False)
    refs = fill(source)

    def transfer(point: str, n: int) -> int | None:  # each killed run is a process of its own
        return run_in_process(transfer_kill.main, [point, str(n), source.root, target.root, RUN],
                              preload=("skybutler.transfer", "support.transfer_kill"),
                              what=f"the transfer killed at {point} {n}")

    # Killed after placing its 6th file (batches of 4): the second batch's files are placed, not its rows.
    assert transfer("file", 6) == -signal.SIGKILL
    assert len(datasets(target)) == 4
    # Run again, killed inside the transaction of its 2nd batch of new datasets, before it commits.
    assert transfer("rows", 2) == -signal.SIGKILL
    assert len(datasets(target)) == 8
    # The run that completes need not be killed: it runs here (the same transfer, no kill point).
    done = transfer_kill.transfer(source.root, target.root, RUN)
    assert done.files_skipped > 0  # the files placed by the killed runs are adopted, not copied again
    wanted = [r.id for name in ("calexp", "coadd") for r in refs[name]]
    check_same(source, target, wanted)
    # Nothing twice: one row per dataset, one file per row, no stray file or temporary.
    assert set(datasets(target)) == set(wanted)
    files = sorted(target.stored_files())
    assert files == sorted(f.path for f in target.registry.get_files(wanted).values())
    assert len(provenance_sql.executions(target.registry)) == 2


# -- command line ----------------------------------------------------------------------------------


def test_cli_transfer_creates_the_destination_and_prints_the_report(repo, tmp_path):
    source = repo()
    refs = fill(source)
    dest = tmp_path / "dest"
    args = ["transfer", source.root, str(dest), "calexp", "-c", RUN, "--where", "visit = :v AND detector < 2",
            "--bind", "v=903334", "--create-dest"]
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "datasets" in result.output and "conflicts" in result.output
    target = Butler(dest)
    assert set(datasets(target)) == {r.id for r in refs["calexp"][:2]}
    again = CliRunner().invoke(main, args, catch_exceptions=False)
    assert again.exit_code == 0 and "│ datasets          │     0 │       2 │" in again.output
    # A conflict: listed, exit status 1, nothing overwritten, the rest written.
    target.insert_dimension_records("detector", [{"instrument": "HSC", "detector": 3, "name": "1_56"}])  # as the source's
    own = target.with_run(RUN).put({"x": 1}, "calexp", instrument="HSC", visit=903334, detector=3)
    clash = CliRunner().invoke(main, [*args[:6], "--where", "visit = 903334"], catch_exceptions=False)
    assert clash.exit_code == 1 and str(own.id) in clash.output.replace("\n", "")
    assert "│ datasets          │     1 │       2 │" in clash.output
    assert target.get(own) == {"x": 1}


def test_cli_retrieve_copies_a_querys_files_and_skips_identical_ones(repo, tmp_path):
    source = repo()
    refs = fill(source)["calexp"]
    out = tmp_path / "out"
    args = ["retrieve", source.root, str(out), "calexp", "-c", RUN, "--where", "detector = 0"]
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    assert result.exit_code == 0 and "2 file(s) copied" in result.output
    files = source.registry.get_files([r.id for r in refs if r.data_id["detector"] == 0])
    for f in files.values():
        assert (out / f.path).read_bytes() == Path(source.datastore.url(f.path)).read_bytes()
    again = CliRunner().invoke(main, args, catch_exceptions=False)
    assert "0 file(s) copied" in again.output and "2 already there" in again.output
    changed = out / next(iter(files.values())).path
    changed.write_bytes(b"other")
    refused = CliRunner().invoke(main, args)
    assert refused.exit_code == 1 and "another file is there" in refused.output
    assert changed.read_bytes() == b"other"
    forced = CliRunner().invoke(main, [*args, "--overwrite"], catch_exceptions=False)
    assert forced.exit_code == 0 and "1 file(s) copied" in forced.output
