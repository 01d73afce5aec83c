"""import-daf-butler: a daf_butler export, or a daf_butler repository, imported answers as daf_butler did.

The fixtures (tests/fixtures/daf_butler, made by its make_export.py with lsst-daf-butler;
none is needed here) hold a daf_butler repository, its export, and what daf_butler
answered to queries on it (expected.json). After an import, skybutler must give the
same datasets for the same questions and the same bytes back.
"""

from __future__ import annotations

import datetime
import json
import shutil
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from skybutler import Butler
from skybutler.cli import main
from skybutler.errors import RepositoryNotFoundError, StorageClassError, TransferError
from skybutler.transfer.daf_butler import (
    UNBOUNDED_END,
    DafButlerExportSource,
    DafButlerRepoSource,
    decode_region,
    import_daf_butler,
)
from support.services import PG_URL

FIXTURES = Path(__file__).parents[1] / "fixtures" / "daf_butler"
EXPORT = FIXTURES / "export" / "export.yaml"
DAF_REPO = FIXTURES / "repo"
EXPECTED = json.loads((FIXTURES / "expected.json").read_text())
CHAIN, CALIB, TAGGED = "HSC/defaults", "HSC/calib", "u/someone/best"
RUN_RAW, RUN_PROC = "HSC/raw/all", "u/someone/proc"
SOURCES = {"export": (EXPORT, False), "repo": (DAF_REPO, True)}


# The tests share module fixtures (the imported daf_butler repositories): on one xdist worker
# (--dist loadgroup in pyproject.toml) they are built once per run, not once per worker.
pytestmark = pytest.mark.xdist_group("daf-butler-import")


@pytest.fixture(params=["sqlite-local", "postgresql-s3"])
def backend(request):
    """Targets: the embedded default, and the shared central repository's combination."""
    return request.param


@pytest.fixture(scope="module")
def imported_repositories(request, tmp_path_factory):
    """``get(source, backend)``: the fixture source imported into a repository on that backend, made once.

    Shared read-only by the tests of this module (an import takes seconds; the tests only read).
    """
    made: dict[tuple[str, str], tuple[Butler, object]] = {}
    schemas = []

    def get(source: str, backend: str):
        if (source, backend) not in made:
            root = tmp_path_factory.mktemp(f"daf-{source}-{backend}") / "repo"
            if backend == "sqlite-local":
                butler = Butler.create(root)
            else:
                request.getfixturevalue("pg_engine")
                bucket, options = request.getfixturevalue("s3_shared_bucket")
                schemas.append(f"t_daf_{uuid.uuid4().hex[:12]}")
                butler = Butler.create(root, registry=PG_URL, namespace=schemas[-1],
                                       datastore=f"s3://{bucket}/daf-{uuid.uuid4().hex}",
                                       config={"datastore": {"storage_options": options}})
            path, repo = SOURCES[source]
            made[source, backend] = butler, import_daf_butler(butler, path, repo=repo, drop_unknown_dimensions=True)
        return made[source, backend]

    yield get
    for butler, _ in made.values():
        butler.close()
    if schemas:
        with request.getfixturevalue("pg_engine").begin() as conn:
            for schema in schemas:
                conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))


@pytest.fixture(params=sorted(SOURCES))
def imported(request, backend, imported_repositories):
    """``(butler, import result)``: each fixture source imported into a repository on each backend."""
    return imported_repositories(request.param, backend)


def ids(refs) -> list[str]:
    return sorted(str(ref.id) for ref in refs)


def tai_to_utc(text: str | None) -> datetime.datetime | None:
    from astropy.time import Time

    return None if text is None else Time(text, scale="tai").utc.to_datetime()


def test_import_brings_every_dataset_file_and_collection(imported):
    butler, done = imported
    assert (done.report.datasets_added, done.report.files_copied, done.report.conflicts) == (30, 30, [])
    assert (done.dataset_types, done.collections) == (6, 7)
    assert {c["name"]: str(c["type"]) for c in butler.collections.query()} == {
        "HSC/calib": "CALIBRATION", "HSC/calib/gen": "RUN", "HSC/calib/gen/v2": "RUN", RUN_RAW: "RUN",
        TAGGED: "TAGGED", RUN_PROC: "RUN", CHAIN: "CHAINED"}
    assert set(EXPECTED["runs"]) == {str(r.id) for t in ("exposure_meta", "src_table", "visit_summary",
                                                          "coadd_summary", "object_df", "detector_calib")
                                     for r in butler.query_datasets(t, collections=butler.collections.runs(),
                                                                    find_first=False)}


def test_dataset_ids_runs_and_storage_classes_are_kept(imported):
    butler, _ = imported
    types = {dt.name: dt for dt in butler.registry.dataset_types()}
    assert {n: (dt.dimensions, dt.storage_class, dt.is_calibration) for n, dt in types.items()} == {
        "exposure_meta": (("instrument", "detector", "exposure"), "dict", False),
        "visit_summary": (("instrument", "visit"), "table", False),
        "src_table": (("instrument", "detector", "visit"), "table", False),
        "coadd_summary": (("band", "skymap", "tract", "patch"), "dict", False),
        "object_df": (("band", "skymap", "tract", "patch"), "table", False),
        "detector_calib": (("instrument", "detector"), "dict", True),
    }
    for dataset_id, run in EXPECTED["runs"].items():
        (ref,) = butler.registry.get_datasets([uuid.UUID(dataset_id)]).values()
        assert ref.run == run


def test_collection_searches_find_what_daf_butler_found(imported):
    butler, _ = imported
    for key, expected in EXPECTED["find_first"].items():
        name, collection = key.split("@")
        assert ids(butler.query_datasets(name, collections=[collection])) == expected, key
    for key, expected in EXPECTED["per_collection"].items():
        name, collection = key.split("@")
        assert ids(butler.query_datasets(name, collections=[collection], find_first=False)) == expected, key


def test_where_on_visit_band_and_exposure_finds_what_daf_butler_found(imported):
    butler, _ = imported
    where = EXPECTED["where"]
    assert ids(butler.query_datasets("src_table", collections=[RUN_PROC], where="visit = 903334 AND band = 'r'")) \
        == where["src_table@visit = 903334 AND band = 'r'"]
    assert ids(butler.query_datasets("src_table", collections=[RUN_PROC], where="band = 'i'")) \
        == where["src_table@band = 'i'"]
    assert ids(butler.query_datasets("exposure_meta", collections=[RUN_RAW],
                                     where="exposure > 903334 AND detector = 0")) \
        == where["exposure_meta@exposure > 903334 AND detector = 0"]


def test_calibration_lookup_by_time_finds_what_daf_butler_found(imported):
    butler, _ = imported
    for key, expected in EXPECTED["calibration"].items():
        detector, when = key.split("@")
        ref = butler.find_dataset("detector_calib", instrument="HSC", detector=int(detector), collections=[CALIB],
                                  time=tai_to_utc(when) + datetime.timedelta(microseconds=500_000))
        assert (None if ref is None else str(ref.id)) == expected, key


def test_validity_ranges_are_daf_butlers_in_utc(imported):
    butler, _ = imported
    held = sorted([str(c["dataset_id"]), c["begin"], c["end"]] for c in butler.collections.certifications(CALIB))
    assert held == sorted([i, tai_to_utc(b), tai_to_utc(e) or UNBOUNDED_END]
                          for i, b, e in EXPECTED["calibration_ranges"])


def test_spatial_joins_give_daf_butlers_overlaps(imported):
    butler, _ = imported
    assert sorted([d["visit"], d["patch"]] for d in butler.query_data_ids(["visit", "patch"])) \
        == EXPECTED["visit_patch"]
    assert sorted([d["visit"], d["detector"], d["patch"]]
                  for d in butler.query_data_ids(["visit", "detector", "patch"])) == EXPECTED["detector_patch"]


def test_files_read_back_as_daf_butler_wrote_them(imported):
    butler, _ = imported
    refs = butler.registry.get_datasets([uuid.UUID(i) for i in EXPECTED["contents"]])
    for dataset_id, expected in EXPECTED["contents"].items():
        ref = refs[uuid.UUID(dataset_id)]
        obj = butler.get(ref)
        if ref.dataset_type.storage_class == "table":
            obj = {k: v for k, v in obj.to_pydict().items() if not k.startswith("__index_level")}
        assert obj == expected, ref


def test_records_keep_times_in_utc_regions_and_bands(imported):
    butler, _ = imported
    (exposure,) = butler.query_dimension_records("exposure", where="exposure = 903334")
    # daf_butler's 2026-03-02T01:00:00 TAI is 37 s earlier in UTC.
    assert exposure["timespan_begin"] == datetime.datetime(2026, 3, 2, 0, 59, 23)
    assert (exposure["physical_filter"], exposure["day_obs"]) == ("HSC-R", 20260301)
    (visit,) = butler.query_dimension_records("visit", where="visit = 903334")
    assert [[round(ra, 9), round(dec, 9)] for ra, dec in visit["region"]] == \
        [[149.2, 1.2], [149.8, 1.2], [149.8, 1.8], [149.2, 1.8]]
    assert sorted(r["band"] for r in butler.query_dimension_records("band")) == ["i", "r"]
    (detector,) = butler.query_dimension_records("detector", where="detector = 1")
    assert (detector["name"], detector["purpose"]) == ("1_41", "SCIENCE")


# Each test imports both sources, in one order or the other; on postgresql-s3 one order
# (the writing into PostgreSQL and S3 is the same for both).
@pytest.mark.parametrize(("source", "backend"), [("export", "sqlite-local"), ("repo", "sqlite-local"),
                                                 ("repo", "postgresql-s3")])
def test_repeat_import_adds_nothing_and_counts_skips(make_butler, source):
    butler = make_butler()
    path, repo = SOURCES[source]
    import_daf_butler(butler, path, repo=repo, drop_unknown_dimensions=True)
    again = import_daf_butler(butler, path, repo=repo, drop_unknown_dimensions=True).report
    assert (again.datasets_added, again.datasets_skipped, again.files_copied) == (0, 30, 0)
    assert (again.dimension_records_added, again.collections_added, again.conflicts) == (0, 0, [])
    other_path, other_repo = SOURCES["repo" if source == "export" else "export"]
    other = import_daf_butler(butler, other_path, repo=other_repo, drop_unknown_dimensions=True).report
    assert (other.datasets_added, other.datasets_skipped, other.conflicts) == (0, 30, [])


def test_export_and_repository_sources_give_the_same_content():
    def content(source):
        records = {}
        for element, rows in source.dimension_records():
            records.setdefault(element, []).extend(sorted(rows, key=repr))
        datasets = sorted((str(d.ref), d.file.path, d.file.size, d.file.format) for b in source.datasets() for d in b)
        return (records, sorted(map(str, source.dataset_types())), source.collections(), datasets,
                sorted(t for b in source.tags() for t in b), sorted((c for b in source.certifications() for c in b),
                                                                    key=repr))

    repo = DafButlerRepoSource(DAF_REPO, drop_unknown_dimensions=True)
    assert content(DafButlerExportSource(EXPORT, drop_unknown_dimensions=True)) == content(repo)
    repo.close()


def test_unknown_dimension_elements_are_refused_before_anything_is_written(make_butler):
    butler = make_butler()
    for path, repo in SOURCES.values():
        with pytest.raises(TransferError, match=r"element group \(3 record\(s\)\).*--drop-unknown-dimensions"):
            import_daf_butler(butler, path, repo=repo)
    assert butler.registry.dataset_types() == []
    assert list(butler.query_dimension_records("instrument")) == []


# The refusal and the dropping are the reader's (the export source), before any backend:
# sqlite-local only (`imported` writes the sources into postgresql-s3).
@pytest.mark.parametrize("backend", ["sqlite-local"])
def test_a_data_id_key_the_universe_lacks_is_refused_or_dropped(tmp_path, make_butler):
    # coadd_summary made to carry daf_butler's subfilter in its data ids (skybutler has no subfilter).
    export = _edited_export(tmp_path, "  - skymap\n  - tract\n  - patch\n  storage_class: StructuredDataDict",
                            "  - skymap\n  - subfilter\n  - tract\n  - patch\n  storage_class: StructuredDataDict")
    text = export.read_text().replace("      skymap: demo\n      tract: 0\n", "      skymap: demo\n      subfilter: 7\n"
                                      "      tract: 0\n")
    export.write_text(text)
    with pytest.raises(TransferError, match=r"dataset type coadd_summary \(data id key\(s\) subfilter\)"):
        DafButlerExportSource(export)
    butler = make_butler()
    done = import_daf_butler(butler, export, drop_unknown_dimensions=True)
    assert "dataset type coadd_summary: dimension(s) subfilter" in done.dropped
    assert butler.registry.get_dataset_type("coadd_summary").dimensions == ("band", "skymap", "tract", "patch")
    assert done.report.datasets_added == 30


def test_a_universe_with_daf_butlers_group_takes_it_without_dropping(make_butler):
    import copy

    from skybutler.dimensions import DimensionUniverse

    doc = copy.deepcopy(DimensionUniverse.default().document)
    doc["elements"]["group"] = {"key_type": "str", "requires": ["instrument"]}
    doc["elements"]["exposure"]["implies"] = [*doc["elements"]["exposure"]["implies"], "group"]
    butler = make_butler(universe=DimensionUniverse(doc))
    done = import_daf_butler(butler, EXPORT)
    assert done.report.datasets_added == 30
    assert not any(line.startswith("element group") for line in done.dropped)
    (exposure,) = butler.query_dimension_records("exposure", where="exposure = 903336")
    assert exposure["group"] == "group903336"


def test_what_was_dropped_is_reported(imported):
    _, done = imported
    assert "element group: 3 record(s)" in done.dropped
    exposure_fields = next(line for line in done.dropped if line.startswith("element exposure: field(s)"))
    assert "obs_id" in exposure_fields and "group" in exposure_fields


def _edited_export(tmp_path: Path, old: str, new: str) -> Path:
    """A copy of the fixture export (files and all) with ``old`` replaced by ``new`` in export.yaml."""
    directory = tmp_path / "export"
    shutil.copytree(EXPORT.parent, directory)
    text = (directory / "export.yaml").read_text()
    assert old in text
    (directory / "export.yaml").write_text(text.replace(old, new))
    return directory / "export.yaml"


# The refusal and the mapping are the reader's (the export source), before any backend:
# sqlite-local only (`imported` writes the sources into postgresql-s3).
@pytest.mark.parametrize("backend", ["sqlite-local"])
def test_unknown_storage_class_is_refused_by_name_unless_mapped(tmp_path, make_butler):
    export = _edited_export(tmp_path, "storage_class: ArrowAstropy", "storage_class: MyCatalog")
    with pytest.raises(StorageClassError, match=r"visit_summary.*'MyCatalog'.*--storage-class-map MyCatalog="):
        DafButlerExportSource(export, drop_unknown_dimensions=True)
    butler = make_butler()
    done = import_daf_butler(butler, export, drop_unknown_dimensions=True, storage_class_map={"MyCatalog": "table"})
    assert done.report.datasets_added == 30
    assert butler.registry.get_dataset_type("visit_summary").storage_class == "table"


def test_a_file_of_no_known_format_is_refused_naming_it(tmp_path):
    export = _edited_export(tmp_path, "coadd_summary_0_0_i_demo_u_someone_proc.json",
                            "coadd_summary_0_0_i_demo_u_someone_proc.ecsv")
    with pytest.raises(TransferError, match=r"coadd_summary_0_0_i_demo_u_someone_proc\.ecsv.*'\.ecsv'"):
        DafButlerExportSource(export, drop_unknown_dimensions=True)


def test_a_missing_file_is_refused_naming_it_before_anything_is_written(tmp_path):
    export = _edited_export(tmp_path, "version: 1.0.2", "version: 1.0.2")
    (export.parent / "u/someone/proc/coadd_summary/0/0/i/coadd_summary_0_0_i_demo_u_someone_proc.json").unlink()
    with pytest.raises(TransferError, match=r"missing from the export: .*coadd_summary_0_0_i_demo_u_someone_proc"):
        DafButlerExportSource(export, drop_unknown_dimensions=True)
    repo = tmp_path / "daf_repo"
    shutil.copytree(DAF_REPO, repo)
    (repo / "u/someone/proc/coadd_summary/0/0/i/coadd_summary_0_0_i_demo_u_someone_proc.json").unlink()
    with pytest.raises(TransferError, match=r"missing from the daf_butler repository: .*coadd_summary_0_0_i_demo"):
        DafButlerRepoSource(repo, drop_unknown_dimensions=True)


def test_a_chain_naming_a_collection_the_export_lacks_is_refused(tmp_path):
    export = _edited_export(tmp_path, "  - HSC/calib\n", "  - HSC/calib\n  - u/someone/elsewhere\n")
    with pytest.raises(TransferError, match="'HSC/defaults' names u/someone/elsewhere, which the export does not"):
        DafButlerExportSource(export, drop_unknown_dimensions=True)


def test_not_an_export_or_not_a_repository_is_a_clear_error(tmp_path):
    (tmp_path / "other.yaml").write_text("description: something else\ndata: []\n")
    with pytest.raises(TransferError, match="not a daf_butler export"):
        DafButlerExportSource(tmp_path / "other.yaml")
    with pytest.raises(TransferError, match="No daf_butler export file"):
        DafButlerExportSource(tmp_path / "absent.yaml")
    with pytest.raises(RepositoryNotFoundError, match="no butler.yaml"):
        DafButlerRepoSource(tmp_path)
    config = (DAF_REPO / "butler.yaml").read_text()
    (tmp_path / "butler.yaml").write_text(config.replace("sqlite:///<butlerRoot>/gen3.sqlite3",
                                                         "postgresql://daf@db.example.org/butler"))
    with pytest.raises(TransferError, match="only SQLite registries can be read directly.*butler export"):
        DafButlerRepoSource(tmp_path)


def test_regions_decode_from_sphgeom_hex_and_base64():
    # A ConvexPolygon's encoding: type byte 0x70, then x, y, z doubles of each vertex.
    import base64
    import struct

    raw = bytes([0x70]) + b"".join(struct.pack("<3d", *v) for v in ((1, 0, 0), (0, 1, 0), (0, 0, 1)))
    expected = [[0.0, 0.0], [90.0, 0.0], [0.0, 90.0]]
    for encoded in (raw, raw.hex(), base64.b64encode(raw).decode()):
        assert [[round(a, 12), round(b, 12)] for a, b in decode_region(encoded)] == expected
    with pytest.raises(Exception, match="not a convex polygon"):
        decode_region(bytes([0x63]) + raw[1:])


def test_cli_imports_an_export_and_a_repository(tmp_path):
    runner = CliRunner()
    target = tmp_path / "repo"
    refused = runner.invoke(main, ["import-daf-butler", str(target), str(EXPORT), "--create"])
    assert refused.exit_code == 1 and "--drop-unknown-dimensions" in refused.output
    assert not target.exists()  # refused before --create made anything
    result = runner.invoke(main, ["import-daf-butler", str(target), str(EXPORT), "--create",
                                  "--drop-unknown-dimensions"])
    assert result.exit_code == 0, result.output
    assert "datasets added" in result.output and "element group: 3 record(s)" in result.output
    again = runner.invoke(main, ["import-daf-butler", str(target), "--repo", str(DAF_REPO),
                                 "--drop-unknown-dimensions"])
    assert again.exit_code == 0, again.output
    assert "│ datasets skipped (already there, identical) │          30 │" in again.output
    assert len(list(Butler(target).query_datasets("src_table", collections=[RUN_PROC]))) == 6
    both = runner.invoke(main, ["import-daf-butler", str(target), str(EXPORT), "--repo", str(DAF_REPO)])
    assert both.exit_code == 2 and "either EXPORT_YAML or --repo" in both.output
