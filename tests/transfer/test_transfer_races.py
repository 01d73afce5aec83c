"""Imports racing with other writers of the same target: a committed dataset never ends up with another's file.

An import places its files before its rows (`skybutler.transfer._import_datasets`). Until
its rows commit, another writer sees a file at that path that no row names: a crashed
write's leftover to it, which it may replace or adopt. Each test holds one writer at that
moment and runs the other one through.
"""

from __future__ import annotations

import threading

import pytest

from skybutler import Butler
from skybutler.errors import TransferConflictError, TransferError
from skybutler.transfer import RegistrySource, _import_datasets, import_content
from support.holding import in_thread
from support.services import PG_URL

RUN = "src/run"
DATA_ID = {"instrument": "HSC", "visit": 903334, "detector": 0}


def source_with(root, standard_records, value) -> tuple[Butler, list]:
    source = Butler.create(str(root), run=RUN)
    standard_records.fill(source)
    source.register_dataset_type("calexp", ["instrument", "visit", "detector"], "dict")
    return source, [source.put({"v": value}, "calexp", DATA_ID)]


def test_an_import_never_replaces_the_file_of_an_import_about_to_commit(tmp_path, standard_records, monkeypatch):
    """Import A placed its file and is about to insert its rows; import B of the same dataset (other bytes) runs.

    B found A's file with no row naming it, took it for a leftover and replaced it with
    its own before A committed: A's committed dataset then read B's bytes (B failed, as
    the target held the dataset by then).
    """
    (a_source, a_refs), (b_source, b_refs) = (source_with(tmp_path / "a", standard_records, "A"),
                                              source_with(tmp_path / "b", standard_records, "B"))
    target = Butler.create(str(tmp_path / "target"))
    standard_records.fill(target)
    placed, release = threading.Event(), threading.Event()
    really_insert = _import_datasets.DatasetWriter._insert
    a_thread, outcome = in_thread(
        lambda: import_content(Butler(target.root), RegistrySource(a_source, a_refs), transfer="copy"), "report")

    def insert(writer, todo):  # noqa: ANN001, ANN202
        if threading.current_thread() is a_thread:
            placed.set()  # A's file is in place, its rows not yet inserted
            assert release.wait(timeout=30)
        else:  # B has placed (or replaced) its file: A commits first
            release.set()
            a_thread.join(timeout=30)
        return really_insert(writer, todo)

    monkeypatch.setattr(_import_datasets.DatasetWriter, "_insert", insert)
    try:
        a_thread.start()
        assert placed.wait(timeout=30)
        with pytest.raises(TransferError, match="changed during the transfer"):
            import_content(target, RegistrySource(b_source, b_refs), transfer="copy")
        a_thread.join(timeout=30)
        assert "error" not in outcome and outcome["report"].datasets_added == 1
        assert target.get(a_refs[0])["v"] == "A"
    finally:
        release.set()
        for b in (a_source, b_source, target):
            b.close()


@pytest.mark.parametrize("database", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgresql)])
@pytest.mark.parametrize("value", ["S", "put"], ids=["same-bytes-adopted", "other-bytes-replaced"])
def test_an_import_never_records_the_file_of_a_put_that_then_fails(tmp_path, standard_records, monkeypatch, request,
                                                                    value, database):
    """A put placed its file inside its transaction, then fails; an import of the same dataset ran meanwhile.

    The import found the put's file with no committed row naming it, and adopted it (same
    bytes) or replaced it (other bytes); the put removed its file before its rollback, and
    the import then committed its rows: its dataset had no file.
    """
    source, refs = source_with(tmp_path / "source", standard_records, "S")
    # On SQLite the import's insert waits for the put's write lock; on PostgreSQL for its row (the same key).
    registry = {} if database == "sqlite" else {"registry": PG_URL, "namespace": request.getfixturevalue("pg_namespace")}
    target = Butler.create(str(tmp_path / "target"), run=RUN, **registry)
    standard_records.fill(target)
    target.register_dataset_type("calexp", ["instrument", "visit", "detector"], "dict")
    importer = Butler(target.root)
    reached_insert = threading.Event()
    thread, outcome = in_thread(lambda: import_content(importer, RegistrySource(source, refs), transfer="copy"),
                                "report")
    really_insert = _import_datasets.DatasetWriter._insert

    def insert(writer, todo):  # noqa: ANN001, ANN202
        reached_insert.set()  # the import's file is placed; its insert waits for the put's transaction
        return really_insert(writer, todo)

    def fail_once_the_import_placed(run: str, entries: object) -> str:
        thread.start()
        assert reached_insert.wait(timeout=30)
        raise OSError(28, "No space left on device (injected)", run)

    monkeypatch.setattr(_import_datasets.DatasetWriter, "_insert", insert)
    target.datastore.append_manifest = fail_once_the_import_placed  # type: ignore[method-assign]
    try:
        with pytest.raises(OSError, match="injected"):
            target.put({"v": value}, "calexp", DATA_ID)
        thread.join(timeout=60)
        if "error" in outcome:  # refused: nothing of it stored, and a repeat stores it
            assert isinstance(outcome["error"], TransferError), outcome["error"]
            outcome["report"] = import_content(importer, RegistrySource(source, refs), transfer="copy")
        assert outcome["report"].datasets_added == 1
        assert importer.get(refs[0])["v"] == "S"
    finally:
        for b in (source, target, importer):
            b.close()


def test_finishing_an_interrupted_removal_never_deletes_the_file_of_an_import_meanwhile(tmp_path, standard_records,
                                                                                         monkeypatch):
    """The target's removal of the run deleted its file and was cut short; the run is imported again.

    The import placed the file anew (nothing at the path to meet the removal's list), and
    another process finished the removal meanwhile: it found no row naming the path and,
    once the import had committed, deleted its file.
    """
    from skybutler import _butler_remove
    from support.removals import remove_crashing_after_the_files

    source, refs = source_with(tmp_path / "source", standard_records, "S")
    target = Butler.create(str(tmp_path / "target"))
    standard_records.fill(target)
    import_content(target, RegistrySource(source, refs), transfer="copy")
    remove_crashing_after_the_files(lambda: target.remove_runs([RUN]), monkeypatch)
    really_delete = _butler_remove.delete_files
    thread, outcome = in_thread(lambda: import_content(target, RegistrySource(source, refs), transfer="copy"), "report")

    def import_then_delete(datastore, paths):  # noqa: ANN001, ANN202 - checked: no row names these paths
        thread.start()
        thread.join(timeout=3)  # imported meanwhile, unless the finishing keeps writers out until it is over
        return really_delete(datastore, paths)

    monkeypatch.setattr(_butler_remove, "delete_files", import_then_delete)
    finisher = Butler(target.root)
    try:
        assert finisher.finish_removals() == {RUN: 1}
        monkeypatch.undo()
        thread.join(timeout=60)
        if "error" in outcome:  # its file went while it waited: refused, and a repeat stores it
            assert isinstance(outcome["error"], TransferError), outcome["error"]
            outcome["report"] = import_content(target, RegistrySource(source, refs), transfer="copy")
        assert outcome["report"].datasets_added == 1
        assert target.get(refs[0])["v"] == "S"
    finally:
        for b in (source, target, finisher):
            b.close()


@pytest.mark.parametrize("way", ["transfer", "dump"])
def test_a_dataset_removed_while_it_is_transferred_is_left_out_not_copied_without_its_file(
        tmp_path, standard_records, monkeypatch, way):
    """The selection is read, then the datasets' file rows: a dataset removed in between had none.

    It was written as a dataset without a file, and the target got a row with no file.
    """
    source = Butler.create(str(tmp_path / "source"), run=RUN)
    standard_records.fill(source)
    source.register_dataset_type("calexp", ["instrument", "visit", "detector"], "dict")
    kept = source.put({"v": 1}, "calexp", DATA_ID)
    removed = source.put({"v": 2}, "calexp", {**DATA_ID, "detector": 1})
    remover = Butler(source.root, writeable=True)
    really_get_files = source.registry.get_files

    def get_files(ids):  # noqa: ANN001, ANN202
        if removed.id in ids and remover.find_dataset("calexp", removed.data_id, collections=[RUN]) is not None:
            remover.remove_datasets([removed])  # after the selection was read, before its file rows
        return really_get_files(ids)

    monkeypatch.setattr(source.registry, "get_files", get_files)
    target = Butler.create(str(tmp_path / "target"))
    if way == "transfer":
        report = import_content(target, RegistrySource(source, dataset_types=["calexp"], collections=[RUN]),
                                transfer="copy")
    else:
        from skybutler.transfer.dump import export_dump, import_dump

        export_dump(source, tmp_path / "dump", ["calexp"], collections=[RUN], files=True)
        report = import_dump(target, tmp_path / "dump")

    assert report.datasets_added == 1
    assert list(target.query_datasets("calexp", collections=[RUN])) == [kept]
    assert target.get(kept) == {"v": 1}


def test_a_dataset_stored_while_a_transfer_runs_never_arrives_without_its_records(tmp_path, standard_records,
                                                                                 monkeypatch):
    """A transfer by query reads its selection once for the records, again for the datasets.

    A dataset stored in between, of a visit inserted with it, came without that visit's
    record: the target held a dataset whose data id has no record.
    """
    from skybutler.transfer import importer
    from support.records import square

    source = Butler.create(str(tmp_path / "source"), run=RUN)
    standard_records.fill(source)
    source.register_dataset_type("calexp", ["instrument", "visit", "detector"], "dict")
    kept = source.put({"v": 1}, "calexp", DATA_ID)
    writer = Butler(source.root, writeable=True, run=RUN)
    really_import_collections = importer._import_collections

    def import_collections(*args):  # noqa: ANN002, ANN202  (between the records and the datasets)
        writer.insert_dimension_records("visit", [{"instrument": "HSC", "visit": 1, "physical_filter": "HSC-R",
                                                   "day_obs": 20260315, "region": square(150.0, 2.0, 0.2)}])
        writer.put({"v": 2}, "calexp", {**DATA_ID, "visit": 1})
        return really_import_collections(*args)

    monkeypatch.setattr(importer, "_import_collections", import_collections)
    target = Butler.create(str(tmp_path / "target"))
    import_content(target, RegistrySource(source, dataset_types=["calexp"], collections=[RUN]), transfer="copy")

    visits = {r["visit"] for r in target.registry.fetch_dimension_records("visit")}
    stored = list(target.query_datasets("calexp", collections=[RUN]))
    assert {ref.data_id["visit"] for ref in stored} <= visits
    assert kept in stored


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_a_record_inserted_otherwise_while_a_transfer_brings_it_is_reported_as_a_conflict(
        tmp_path, standard_records, request, database):
    """The transfer looked the visit up, found none, then inserted it as new: the record another writer
    inserted with other values meanwhile was kept, silently, where one after the other it is a conflict."""
    from support.holding import while_a_holds
    from support.records import square

    visit = {"instrument": "HSC", "visit": 903342, "physical_filter": "HSC-R", "day_obs": 20260315,
             "region": square(150.0, 2.0, 0.2)}
    source = Butler.create(str(tmp_path / "source"), run=RUN)
    standard_records.fill(source)
    source.insert_dimension_records("visit", [{**visit, "exposure_time": 30.0}])
    source.register_dataset_type("calexp", ["instrument", "visit", "detector"], "dict")
    refs = [source.put({"v": 1}, "calexp", {**DATA_ID, "visit": 903342})]
    if database == "postgresql":
        request.getfixturevalue("pg_engine")
        namespace = request.getfixturevalue("pg_namespace")
        target = Butler.create(str(tmp_path / "target"), registry=PG_URL, namespace=namespace)
    else:
        target = Butler.create(str(tmp_path / "target"))
    standard_records.fill(target)
    other = Butler(target.root, writeable=True)

    outcome = while_a_holds(other, lambda: other.insert_dimension_records("visit", [{**visit, "exposure_time": 15.0}]),
                            lambda: import_content(Butler(target.root), RegistrySource(source, refs), transfer="copy"))

    assert isinstance(outcome.get("error"), TransferConflictError), outcome
    assert "visit record {'instrument': 'HSC', 'visit': 903342}" in str(outcome["error"])
    record, = target.registry.fetch_dimension_records("visit", where="visit = 903342")
    assert record["exposure_time"] == 15.0


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_a_tag_of_the_same_data_id_made_while_a_transfer_brings_its_own_is_reported_as_a_conflict(
        tmp_path, standard_records, request, database):
    """The source tags its calexp in ``best``; meanwhile a writer of the target tags another calexp of the same
    data id there. One after the other, the transfer reports a conflict and leaves the tag as it is; at the
    same moment on PostgreSQL it failed with a raw unique-key error."""
    from skybutler import CollectionType
    from support.holding import while_a_holds

    source, refs = source_with(tmp_path / "source", standard_records, 1)
    source.collections.tag("best", refs)
    if database == "postgresql":
        request.getfixturevalue("pg_engine")
        target = Butler.create(str(tmp_path / "target"), registry=PG_URL,
                               namespace=request.getfixturevalue("pg_namespace"))
    else:
        target = Butler.create(str(tmp_path / "target"))
    standard_records.fill(target)
    target.register_dataset_type("calexp", ["instrument", "visit", "detector"], "dict")
    theirs = target.put({"v": 2}, "calexp", DATA_ID, run="target/run")
    target.collections.register("best", CollectionType.TAGGED)
    other = Butler(target.root, writeable=True)

    outcome = while_a_holds(other, lambda: other.collections.tag("best", [theirs]), lambda: import_content(
        Butler(target.root), RegistrySource(source, refs, collections=["best"]), transfer="copy"))

    assert isinstance(outcome.get("error"), TransferConflictError), outcome
    assert f"TAGGED 'best' holds dataset {theirs.id}" in str(outcome["error"])
    assert list(target.query_datasets("calexp", collections=["best"])) == [theirs]
