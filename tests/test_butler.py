"""Butler conformance suite: runs on every registry x datastore backend (see conftest.BACKENDS).

Repositories come with the standard records (`make_butler(records=True)`), copied from a
template built once per test run; `insert_records` is for the tests that compare against it.
"""

from __future__ import annotations

import errno
import os

import numpy as np
import pyarrow as pa
import pytest
import sqlalchemy as sa

from skybutler import (
    Butler,
    CollectionError,
    CollectionType,
    DataIdError,
    DatasetExistsError,
    DatasetNotFoundError,
    DatasetTypeError,
    DimensionError,
    FileAccessError,
    FileDataset,
    Image,
    QueryError,
    StorageClassError,
    TemplateError,
)
from support.records import insert_records

DATA_ID = {"instrument": "HSC", "visit": 903334, "detector": 1}


@pytest.fixture
def backend(conformance_backend):
    """This suite also runs on a repository of the previous release, upgraded (see conftest)."""
    return conformance_backend


@pytest.fixture
def butler(make_butler):
    b = make_butler(run="run1", records=True)
    b.register_dataset_type("calexp", ["visit", "detector"], "image")
    b.register_dataset_type("src", ["visit", "detector"], "table")
    b.register_dataset_type("metadata", ["visit", "detector"], "dict")
    return b


def snapshot(butler: Butler) -> tuple[int, list[str]]:
    """Rows in the dataset table and files in the store: what 'exactly as before' compares."""
    n = sum(1 for _ in butler.registry.all_files())
    return n, sorted(butler.stored_files())


def test_a_repository_made_with_the_standard_records_holds_what_creating_and_inserting_gives(make_butler):
    # The fixture copies a registry (schema and records) built once per run; on every backend
    # the copy must be what Butler.create and insert_records give, overlaps included, and later
    # inserts must join the copied records as usual. (Naming the universe makes the fixture create.)
    from skybutler import DimensionUniverse

    copied = make_butler(records=True)
    inserted = make_butler(universe=DimensionUniverse.default())
    insert_records(inserted)

    def schema(butler: Butler) -> dict:
        inspector = sa.inspect(butler.registry.engine)
        namespace = butler.config.registry.namespace if butler.registry.dialect == "postgresql" else None

        def plain(described: dict) -> str:  # SQL objects as text, without the schema's own name
            text = str(sorted((k, plain(v) if isinstance(v, dict) else str(v)) for k, v in described.items()
                              if k != "referred_schema"))
            return text.replace(namespace, "<schema>") if namespace else text

        return {t: (sorted(map(plain, inspector.get_columns(t, namespace))),
                    sorted(map(plain, inspector.get_indexes(t, namespace))),
                    sorted(map(plain, inspector.get_foreign_keys(t, namespace))))
                for t in inspector.get_table_names(namespace)}

    assert schema(copied) == schema(inserted)
    empty = make_butler()  # copied too, without the records
    assert schema(empty) == schema(inserted)
    assert list(empty.query_dimension_records("instrument")) == []

    def content(butler: Butler) -> dict:
        elements = ["instrument", "band", "physical_filter", "detector", "day_obs", "visit",
                    "visit_detector_region", "skymap", "tract", "patch"]
        records = {e: sorted(map(repr, butler.query_dimension_records(e))) for e in elements}
        pairs = sorted(map(repr, butler.query_data_ids(["visit", "detector", "patch"])))
        return {"records": records, "pairs": pairs}

    assert content(copied) == content(inserted)
    assert len(content(copied)["pairs"]) > 0
    for butler in (copied, inserted):
        butler.insert_dimension_records("visit", [{
            "instrument": "HSC", "visit": 903342, "physical_filter": "HSC-R", "day_obs": 20260315,
            "region": [(150.05, 2.05), (150.35, 2.05), (150.35, 2.35), (150.05, 2.35)]}])
    assert content(copied) == content(inserted)
    assert list(copied.query_data_ids(["visit", "patch"], where="visit = 903342")) == \
        list(inserted.query_data_ids(["visit", "patch"], where="visit = 903342")) != []


def test_put_then_get_returns_equal_objects_for_every_storage_class(butler):
    image = Image(np.random.default_rng(1).normal(size=(64, 48)).astype("f4"), {"EXPTIME": 30.0},
                  planes={"variance": np.ones((64, 48), dtype="f4")})
    table = pa.table({"id": [1, 2, 3], "flux": [1.5, 2.5, 3.5]})
    butler.put(image, "calexp", DATA_ID)
    butler.put(table, "src", DATA_ID)
    butler.put({"seeing": 0.7, "n": 3}, "metadata", DATA_ID)
    got = butler.get("calexp", DATA_ID)
    np.testing.assert_array_equal(got.data, image.data)
    np.testing.assert_array_equal(got.planes["variance"], image.planes["variance"])
    assert got.header["EXPTIME"] == 30.0
    assert butler.get("src", DATA_ID).equals(table)
    assert butler.get("metadata", DATA_ID) == {"seeing": 0.7, "n": 3}


def test_get_by_ref_and_by_data_id_find_the_same_dataset(butler):
    ref = butler.put({"a": 1}, "metadata", DATA_ID)
    assert butler.get(ref) == butler.get("metadata", **DATA_ID) == {"a": 1}
    assert butler.find_dataset("metadata", DATA_ID) == ref


def test_files_carry_their_identity_and_checksum(butler):
    ref = butler.put(pa.table({"x": [1]}), "src", DATA_ID)
    record = butler.registry.get_files([ref.id])[ref.id]
    assert record.checksum_algorithm == "md5"
    assert butler.datastore.checksum(record.path) == f"md5:{record.checksum}"
    assert record.size == butler.datastore.size(record.path)
    from skybutler.formats import get_formatter

    with butler.datastore.open(record.path) as f:
        identity = get_formatter(record.format).read_identity(f)
    assert identity["dataset_id"] == str(ref.id)
    assert identity["run"] == "run1"


def test_put_many_stores_all_in_one_call(butler):
    items = [({"i": d}, "metadata", {**DATA_ID, "detector": d}) for d in range(4)]
    refs = butler.put_many(items)
    assert len({r.id for r in refs}) == 4
    assert [butler.get(r)["i"] for r in refs] == [0, 1, 2, 3]


def test_get_with_parameters_reads_part_of_a_dataset(butler):
    data = np.arange(100 * 80, dtype="f4").reshape(100, 80)
    butler.put(Image(data, {}), "calexp", DATA_ID)
    butler.put(pa.table({"a": list(range(10)), "b": list(range(10, 20))}), "src", DATA_ID)
    box = butler.get("calexp", DATA_ID, parameters={"bbox": (10, 20, 30, 45)})
    np.testing.assert_array_equal(box.data, data[10:20, 30:45])
    assert box.origin == (10, 30)
    part = butler.get("src", DATA_ID, parameters={"columns": ["b"], "rows": (2, 5)})
    assert part.column_names == ["b"] and part.column("b").to_pylist() == [12, 13, 14]


def test_get_cutouts_reads_far_fewer_bytes_than_the_file(butler):
    data = np.random.default_rng(2).normal(size=(1024, 1024)).astype("f4")
    ref = butler.put(Image(data, {"EXPTIME": 1.0}), "calexp", DATA_ID)
    boxes = [(y, y + 15, x, x + 15) for y, x in [(0, 0), (500, 500), (1000, 3), (200, 900)]]
    cut = butler.get_cutouts(ref, boxes)
    for (y0, y1, x0, x1), img in zip(boxes, cut.images, strict=True):
        np.testing.assert_array_equal(img.data, data[y0:min(y1, 1024), x0:x1])
    assert cut.bytes_read < cut.file_size / 10


def test_ingest_registers_files_with_deterministic_ids(butler, tmp_path):
    src = tmp_path / "raw_903334_1.json"
    src.write_text('{"raw": true}')
    files = [FileDataset(str(src), "metadata", DATA_ID)]
    first = butler.ingest(files, run="raw/all", transfer="copy")
    again = butler.ingest(files, run="raw/all", transfer="copy")
    assert first == again
    assert butler.get(first[0]) == {"raw": True}
    assert src.exists()


@pytest.mark.parametrize("transfer", ["copy", "move", "symlink", "hardlink", "direct"])
def test_ingest_transfer_modes(make_butler, backend, tmp_path, transfer):
    butler = make_butler(run="r", records=True)
    butler.register_dataset_type("metadata", ["visit", "detector"], "dict")
    src = tmp_path / "in.json"
    src.write_text('{"k": 1}')
    files = [FileDataset(str(src), "metadata", DATA_ID)]
    if not butler.datastore.is_local and transfer in ("symlink", "hardlink"):
        before = snapshot(butler)
        with pytest.raises(FileAccessError, match=f"Cannot {transfer}.*local disk"):
            butler.ingest(files, transfer=transfer)
        assert snapshot(butler) == before and src.exists()
        return
    (ref,) = butler.ingest(files, transfer=transfer)
    assert butler.get(ref) == {"k": 1}
    assert src.exists() == (transfer != "move")


def test_query_datasets_filters_by_dimensions_and_metadata(butler):
    for visit in (903334, 903336, 903338):
        for det in (0, 1):
            butler.put({"v": visit}, "metadata", instrument="HSC", visit=visit, detector=det)
    r_refs = list(butler.query_datasets("metadata", where="band = 'r'"))
    assert {r.data_id["visit"] for r in r_refs} == {903334, 903336}
    refs = list(butler.query_datasets("metadata", where="visit.exposure_time > 40 AND detector = :d", bind={"d": 1}))
    assert [(r.data_id["visit"], r.data_id["detector"]) for r in refs] == [(903336, 1)]


def test_collections_are_searched_in_order_first_match_wins(butler):
    butler.put({"which": "old"}, "metadata", DATA_ID, run="old")
    butler.put({"which": "new"}, "metadata", DATA_ID, run="new")
    butler.registry.set_chain("chain", ["new", "old"])
    assert butler.get("metadata", DATA_ID, collections=["chain"]) == {"which": "new"}
    assert butler.get("metadata", DATA_ID, collections=["old", "new"]) == {"which": "old"}
    both = list(butler.query_datasets("metadata", collections=["chain"], find_first=False))
    assert {r.run for r in both} == {"old", "new"}
    first = list(butler.query_datasets("metadata", collections=["chain"]))
    assert [r.run for r in first] == ["new"]


def test_tagged_collection_holds_chosen_datasets(butler):
    a = butler.put({"a": 1}, "metadata", DATA_ID)
    butler.put({"b": 2}, "metadata", {**DATA_ID, "detector": 2})
    butler.registry.register_collection("best", CollectionType.TAGGED)
    butler.registry.associate("best", [a])
    assert list(butler.query_datasets("metadata", collections=["best"])) == [a]


def test_calibration_lookup_by_time_picks_the_valid_dataset(butler):
    butler.register_dataset_type("bias", ["detector"], "dict", is_calibration=True)
    old = butler.put({"v": "old"}, "bias", instrument="HSC", detector=1, run="calib/old")
    new = butler.put({"v": "new"}, "bias", instrument="HSC", detector=1, run="calib/new")
    butler.registry.register_collection("calib", CollectionType.CALIBRATION)
    butler.registry.certify("calib", [old], "2026-01-01T00:00:00", "2026-03-01T00:00:00")
    butler.registry.certify("calib", [new], "2026-03-01T00:00:00", "2027-01-01T00:00:00")
    assert butler.get("bias", instrument="HSC", detector=1, collections=["calib"], time="2026-02-10T00:00:00") == {"v": "old"}
    assert butler.get("bias", instrument="HSC", detector=1, collections=["calib"], time="2026-03-15T06:00:00") == {"v": "new"}
    with pytest.raises(CollectionError, match="already certified"):
        butler.registry.certify("calib", [new], "2026-02-01T00:00:00", "2026-04-01T00:00:00")


def test_query_data_ids_joins_visits_to_patches_by_overlap(butler):
    ids = list(butler.query_data_ids(["visit", "detector", "patch"], where="visit = 903334"))
    pairs = {(d["detector"], d["patch"]) for d in ids}
    # insert_records lays detectors and patches out on the same 2x2 grid: each detector overlaps its patch.
    assert {(d, d) for d in range(4)} <= pairs
    assert (0, 3) not in pairs


def test_query_data_ids_constrained_by_dataset_existence(butler):
    butler.put({"x": 1}, "metadata", DATA_ID)
    ids = list(butler.query_data_ids(["visit", "detector"], datasets=["metadata"], collections=["run1"]))
    assert [dict(d) for d in ids] == [DATA_ID]


def test_remove_runs_deletes_rows_and_files(butler):
    butler.put({"x": 1}, "metadata", DATA_ID, run="bad")
    keep = butler.put({"x": 2}, "metadata", DATA_ID, run="good")
    butler.remove_runs(["bad"])
    assert not any(p.startswith("bad/") for p in butler.stored_files())
    assert butler.get(keep) == {"x": 2}
    with pytest.raises(CollectionError):
        butler.registry.collection_type("bad")


def test_remove_datasets(butler):
    ref = butler.put({"x": 1}, "metadata", DATA_ID)
    butler.remove_datasets([ref])
    with pytest.raises(DatasetNotFoundError):
        butler.get("metadata", DATA_ID)
    assert list(butler.stored_files()) == []


# -- bad input: a clear error and the repository exactly as before -----------------------


def test_unknown_dataset_type_is_named(butler):
    before = snapshot(butler)
    with pytest.raises(DatasetTypeError, match="Unknown dataset type 'calexpp'.*calexp"):
        butler.put({"a": 1}, "calexpp", DATA_ID)
    assert snapshot(butler) == before


@pytest.mark.parametrize("data_id, match", [
    ({"instrument": "HSC", "visit": 903334}, "missing detector"),
    ({**DATA_ID, "tract": 0}, "unexpected key"),
    ({**DATA_ID, "visit": "nine"}, "must be an integer"),
    ({**DATA_ID, "visit": 1}, "No visit record"),
    ({**DATA_ID, "band": "i"}, "band"),
])
def test_bad_data_ids_are_rejected_with_the_reason(butler, data_id, match):
    before = snapshot(butler)
    with pytest.raises((DataIdError, DimensionError), match=match):
        butler.put({"a": 1}, "metadata", data_id)
    assert snapshot(butler) == before


def test_put_never_overwrites(butler):
    butler.put({"a": 1}, "metadata", DATA_ID)
    before = snapshot(butler)
    with pytest.raises(DatasetExistsError, match="metadata .*already exists in run 'run1'"):
        butler.put({"a": 2}, "metadata", DATA_ID)
    assert snapshot(butler) == before
    assert butler.get("metadata", DATA_ID) == {"a": 1}


def test_put_many_with_one_bad_item_writes_nothing(butler):
    before = snapshot(butler)
    items = [({"i": 0}, "metadata", DATA_ID), ("not a dict", "metadata", {**DATA_ID, "detector": 2})]
    with pytest.raises(StorageClassError, match="metadata"):
        butler.put_many(items)
    assert snapshot(butler) == before


def test_wrong_object_type_names_storage_class(butler):
    with pytest.raises(StorageClassError, match="image"):
        butler.put({"a": 1}, "calexp", DATA_ID)


def test_a_database_failure_during_put_leaves_no_file_and_no_row(butler, monkeypatch):
    before = snapshot(butler)
    original = butler.registry.insert_datasets

    def insert_then_fail(*args, **kwargs):
        original(*args, **kwargs)
        raise RuntimeError("injected database failure after the insert")

    monkeypatch.setattr(butler.registry, "insert_datasets", insert_then_fail)
    with pytest.raises(RuntimeError, match="injected"):
        butler.put({"a": 1}, "metadata", DATA_ID)
    monkeypatch.undo()
    assert snapshot(butler) == before
    assert butler.find_dataset("metadata", DATA_ID) is None


def test_a_full_disk_during_put_leaves_no_file_and_no_row(butler, monkeypatch):
    before = snapshot(butler)
    monkeypatch.setattr(butler.datastore, "disk_full_after", 10)
    with pytest.raises(OSError) as info:
        butler.put(pa.table({"x": list(range(1000))}), "src", DATA_ID)
    assert info.value.errno == errno.ENOSPC
    monkeypatch.undo()
    assert snapshot(butler) == before


def test_a_failure_during_ingest_leaves_no_file_and_no_row(butler, tmp_path, monkeypatch):
    files = []
    for d in range(3):
        p = tmp_path / f"f{d}.json"
        p.write_text("{}")
        files.append(FileDataset(str(p), "metadata", {**DATA_ID, "detector": d}))
    before = snapshot(butler)
    calls = {"n": 0}
    original = butler.datastore.ingest

    def fail_on_third(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError(errno.ENOSPC, "No space left on device (injected)")
        return original(*args, **kwargs)

    monkeypatch.setattr(butler.datastore, "ingest", fail_on_third)
    with pytest.raises(OSError, match="injected"):
        butler.ingest(files, run="raw", transfer="copy")
    monkeypatch.undo()
    assert snapshot(butler) == before
    assert all(os.path.exists(f.path) for f in files)


def test_ingest_of_a_missing_file_names_it(butler, tmp_path):
    before = snapshot(butler)
    with pytest.raises(FileAccessError, match="nope.fits"):
        butler.ingest([FileDataset(str(tmp_path / "nope.fits"), "calexp", DATA_ID)], run="raw")
    assert snapshot(butler) == before


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root can read anything")
def test_ingest_of_an_unreadable_file_names_it(butler, tmp_path):
    p = tmp_path / "secret.json"
    p.write_text("{}")
    p.chmod(0)
    with pytest.raises(FileAccessError, match="secret.json"):
        butler.ingest([FileDataset(str(p), "metadata", DATA_ID)], run="raw")


@pytest.mark.parametrize("expression", [
    "visit = 1; DROP TABLE dataset",
    "band = 'r' OR 1=1 --",
    "visit = ",
    "nonsense_name = 3",
])
def test_invalid_or_injected_queries_are_rejected_and_change_nothing(butler, expression):
    butler.put({"a": 1}, "metadata", DATA_ID)
    with pytest.raises(QueryError):
        list(butler.query_datasets("metadata", where=expression))
    assert len(list(butler.query_datasets("metadata"))) == 1


def test_a_literal_that_looks_like_sql_is_just_a_value(butler):
    butler.put({"a": 1}, "metadata", DATA_ID)
    assert list(butler.query_datasets("metadata", where="band = :b", bind={"b": "r'; DROP TABLE dataset; --"})) == []
    assert len(list(butler.query_datasets("metadata"))) == 1


def test_templates_that_cannot_be_unique_are_rejected_when_configured(make_butler):
    butler = make_butler(config={"templates": {"dataset_types": {"calexp": "{run}/{instrument}/calexp/{visit}"}}},
                         records=True)
    with pytest.raises(TemplateError, match="detector"):
        butler.register_dataset_type("calexp", ["visit", "detector"], "image")
    with pytest.raises(DatasetTypeError):
        butler.registry.get_dataset_type("calexp")


def test_operator_templates_and_variables_name_the_files(make_butler):
    template = "{run}/r{reqnum}/a{attnum:02d}/{band}/{dataset_type}_{instrument}_{visit:08d}_{detector:03d}"
    butler = make_butler(config={"templates": {"dataset_types": {"metadata": template}}}, records=True)
    butler = butler.with_run("prod", template_variables={"reqnum": 11, "attnum": 95})
    butler.register_dataset_type("metadata", ["visit", "detector"], "dict")
    ref = butler.put({}, "metadata", DATA_ID)
    record = butler.registry.get_files([ref.id])[ref.id]
    assert record.path == "prod/r11/a95/r/metadata_HSC_00903334_001.json"


def test_patch_values_with_punctuation_are_legal_and_data_ids_cannot_escape_the_root(make_butler, tmp_path):
    from skybutler import DimensionUniverse

    doc = DimensionUniverse.default().document
    doc["elements"]["patch"] = {**doc["elements"]["patch"], "key_type": "str"}
    butler = make_butler(universe=DimensionUniverse(doc), run="r")
    butler.insert_dimension_records("skymap", [{"skymap": "../../etc"}])
    butler.insert_dimension_records("tract", [{"skymap": "../../etc", "tract": 0}])
    butler.insert_dimension_records("patch", [{"skymap": "../../etc", "tract": 0, "patch": "8,6"}])
    butler.register_dataset_type("deepCoadd", ["patch"], "dict")
    ref = butler.put({}, "deepCoadd", skymap="../../etc", tract=0, patch="8,6")
    path = butler.registry.get_files([ref.id])[ref.id].path
    assert "8,6" in path and ".." not in path.split("/") and not path.startswith("/")


def test_not_a_repository_is_a_clear_error(tmp_path):
    from skybutler import RepositoryNotFoundError

    with pytest.raises(RepositoryNotFoundError, match="not a skybutler repository"):
        Butler(tmp_path)


def test_unreachable_postgresql_names_url_without_password(tmp_path):
    from skybutler import DatabaseConnectionError

    with pytest.raises(DatabaseConnectionError) as info:
        Butler.create(tmp_path / "repo", registry="postgresql://bob:hunter2@127.0.0.1:1/db")
    assert "127.0.0.1:1" in str(info.value) and "hunter2" not in str(info.value)
    assert not (tmp_path / "repo").exists()


def test_read_only_butler_refuses_writes(butler):
    from skybutler import ReadOnlyError

    ro = Butler(butler.root, writeable=False, _config=butler.config, _registry=butler.registry)
    with pytest.raises(ReadOnlyError):
        ro.put({}, "metadata", DATA_ID, run="x")


def test_dataset_type_reregistration(butler):
    butler.register_dataset_type("metadata", ["visit", "detector"], "dict")  # identical: no-op
    with pytest.raises(DatasetTypeError, match="already registered"):
        butler.register_dataset_type("metadata", ["visit"], "dict")


def test_config_dump_reproduces_the_configuration(butler):
    import yaml

    from skybutler import RepositoryConfig

    dumped = yaml.safe_load(butler.dump_config())
    sections = {k: dumped[k] for k in ("registry", "datastore", "templates", "formats")}
    assert RepositoryConfig.from_mapping(sections) == butler.config.redacted()  # secrets print as ***
    assert "visit" in dumped["universe"]["elements"]


def test_files_without_room_for_metadata_are_named_in_the_run_manifest(butler, tmp_path):
    ref = butler.put({"a": 1}, "metadata", DATA_ID)
    fits_ref = butler.put(Image(np.zeros((4, 4), dtype="f4"), {}), "calexp", DATA_ID)
    src = tmp_path / "external.json"
    src.write_text("{}")
    (ingested,) = butler.ingest([FileDataset(str(src), "metadata", {**DATA_ID, "detector": 2})], run="ext",
                                transfer="direct")
    entries = {e["dataset_id"]: e for e in butler.datastore.manifest_entries()}
    record = butler.registry.get_files([ref.id])[ref.id]
    assert entries[str(ref.id)] == {"dataset_id": str(ref.id), "dataset_type": "metadata",
                                    "data_id": '{"detector": 1, "instrument": "HSC", "visit": 903334}',
                                    "run": "run1", "path": record.path, "format": "json"}
    assert entries[str(ingested.id)]["path"].endswith("external.json")
    assert str(fits_ref.id) not in entries  # FITS files carry their identity in the header


# -- recovery from interrupted writes (a crash leaves files without rows, never rows without files) --


def repository_dump(butler: Butler) -> tuple[tuple[int, list[str]], list[tuple[str, str]]]:
    """`snapshot` plus the collections: what a failed command must leave exactly as it was."""
    collections = sorted((c["name"], str(c["type"])) for c in butler.registry.collections())
    return snapshot(butler), collections


def test_a_put_replaces_a_file_that_no_row_names_left_by_a_crashed_put(butler):
    ref = butler.put({"attempt": 1}, "metadata", DATA_ID)
    path = butler.registry.get_files([ref.id])[ref.id].path
    butler.registry.remove_datasets([ref.id])  # what a kill between file and commit leaves: a file, no row
    assert path in set(butler.stored_files())

    again = butler.put({"attempt": 2}, "metadata", DATA_ID)

    assert butler.get(again) == {"attempt": 2}
    assert butler.registry.get_files([again.id])[again.id].path == path
    assert sorted(butler.stored_files()) == [path]


def test_a_retried_put_into_a_run_the_crash_rolled_back_neither_says_unknown_collection_nor_exists(butler):
    butler.put({"attempt": 1}, "metadata", DATA_ID, run="crashed")
    butler.registry.remove_run("crashed")  # the killed transaction had registered the run: gone with it
    assert "crashed" not in {c["name"] for c in butler.registry.collections()}

    ref = butler.put({"attempt": 2}, "metadata", DATA_ID, run="crashed")

    assert butler.get(ref) == {"attempt": 2}
    assert len(list(butler.stored_files())) == 1


def test_a_file_that_a_row_names_is_never_replaced_even_under_another_dataset(butler):
    butler.templates = type(butler.templates)("fixed/{dataset_type}_{visit}_{detector}", {}, {})
    butler.put({"first": True}, "metadata", DATA_ID)  # run1
    before = repository_dump(butler)

    with pytest.raises(DatasetExistsError, match="no put ever overwrites"):
        butler.put({"second": True}, "metadata", DATA_ID, run="other")  # same path, other run

    assert repository_dump(butler) == before
    assert butler.get("metadata", DATA_ID) == {"first": True}


def test_a_failed_ingest_leaves_nothing_behind_not_even_its_run(butler, tmp_path):
    good = tmp_path / "good.json"
    good.write_text('{"a": 1}')
    files = [FileDataset(str(good), "metadata", DATA_ID),
             FileDataset(str(good), "metadata", {**DATA_ID, "detector": 99999})]  # no such detector
    before = repository_dump(butler)

    with pytest.raises(DimensionError):
        butler.ingest(files, run="new/run", transfer="copy")

    assert repository_dump(butler) == before


def test_a_removal_interrupted_after_its_commit_is_finished_by_the_retry(butler):
    refs = butler.put_many([({"d": d}, "metadata", {**DATA_ID, "detector": d}) for d in range(3)], run="doomed")
    paths = [butler.registry.get_files([r.id])[r.id].path for r in refs]
    keep = butler.put({"keep": 1}, "metadata", DATA_ID)
    # The state a kill after the commit leaves: rows gone, the list of files written, files still there.
    butler.datastore.record_removal(paths, label="doomed")
    butler.registry.remove_run("doomed")

    assert butler.remove_runs(["doomed"]) == {"doomed": 3}

    assert sorted(butler.stored_files()) == [butler.registry.get_files([keep.id])[keep.id].path]
    assert list(butler.datastore.pending_removals()) == []
    with pytest.raises(CollectionError, match="doomed"):
        butler.remove_runs(["doomed"])


def test_a_removal_list_whose_transaction_never_committed_deletes_nothing(butler):
    ref = butler.put({"a": 1}, "metadata", DATA_ID)
    path = butler.registry.get_files([ref.id])[ref.id].path
    butler.datastore.record_removal([path], label="run1")  # written, then the transaction rolled back

    assert butler.clean_temporaries() == 0

    assert butler.get(ref) == {"a": 1}
    assert list(butler.datastore.pending_removals()) == []


def test_a_failed_ingest_command_leaves_no_empty_run(tmp_path):
    from click.testing import CliRunner

    from skybutler.cli import main

    butler = Butler.create(tmp_path / "repo")
    insert_records(butler)
    butler.register_dataset_type("metadata", ["visit", "detector"], "dict")
    source = tmp_path / "in.json"
    source.write_text("{}")
    before = repository_dump(butler)

    result = CliRunner().invoke(main, ["ingest", str(tmp_path / "repo"), str(source), "--run", "new/run",
                                       "-t", "metadata", "-d", "instrument=HSC,visit=903334,detector=99999"])

    assert result.exit_code != 0
    assert repository_dump(butler) == before
