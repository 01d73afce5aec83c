"""Ingest plugins: found by short name, entry point or dotted path; a fresh repository ingests raws with nothing
set up beforehand; records, renamed files and origins go in with the datasets or not at all."""

from __future__ import annotations

import os

import pytest
from click.testing import CliRunner

from skybutler import Butler, ConfigError, DimensionError, FormatError, TemplateError
from skybutler.cli import main
from skybutler.demo import synthetic as syn
from skybutler.formats import get_formatter
from skybutler.ops.ingest import ingest_raws, origin_of, plan_ingest
from skybutler.ops.plugins import ENTRY_POINT_GROUP, available_plugins, get_plugin
from support.fake_cam_plugin import FakeCamPlugin, write_fake_raw

FAKE = "support.fake_cam_plugin:FakeCamPlugin"


@pytest.fixture(scope="module")
def raw_dir(tmp_path_factory):
    """The demo's synthetic raws of two visits (one per band), both detectors: four FITS files."""
    root = tmp_path_factory.mktemp("raws")
    sky = syn.make_sky(0)
    visits = syn.make_visits()
    chosen = [next(v for v in visits if v.band == "r"), next(v for v in visits if v.band == "i")]
    fits = get_formatter("fits")
    for v in chosen:
        for det in v.detectors:
            with open(root / f"HSC-{v.id:07d}-{det:03d}.fits", "wb") as f:
                fits.write(syn.make_raw(v, det, sky), f, identity={})
    return root, chosen


@pytest.fixture
def raws(raw_dir, tmp_path):
    """Fresh copies of the raws for one test (a move ingest removes its sources)."""
    import shutil

    src, visits = raw_dir
    dst = tmp_path / "incoming"
    shutil.copytree(src, dst)
    return sorted(str(p) for p in dst.iterdir()), visits


def snapshot(butler: Butler) -> dict:
    """Everything an ingest could add: datasets, records of every element, dataset types, stored files."""
    return {
        "files": sorted(butler.stored_files()),
        "datasets": sorted(str(ref.id) for _, ref in butler.registry.all_files()),
        "types": [dt.name for dt in butler.registry.dataset_types()],
        "records": {e: len(list(butler.query_dimension_records(e))) for e in butler.universe.elements},
    }


# -- a fresh repository --------------------------------------------------------------------


def test_a_fresh_repository_ingests_the_synthetic_raws_with_every_record_it_needs(make_butler, raws):
    paths, visits = raws
    butler = make_butler()
    assert butler.registry.dataset_types() == []

    refs = ingest_raws(butler, "hsc-raw", paths, run="HSC/raw/all", transfer="copy")

    assert sorted((r.data_id["visit"], r.data_id["detector"]) for r in refs) == sorted(
        (v.id, d) for v in visits for d in v.detectors)
    assert {r.data_id["band"] for r in refs} == {"r", "i"}  # expanded: implied values attached
    assert butler.registry.get_dataset_type("raw").dimensions == ("instrument", "detector", "visit")
    (instrument,) = butler.query_dimension_records("instrument")
    assert instrument["instrument"] == "HSC" and instrument["detector_max"] == 112
    assert {(r["physical_filter"], r["band"]) for r in butler.query_dimension_records("physical_filter")} == {
        ("HSC-R", "r"), ("HSC-I", "i")}
    assert {(r["detector"], r["name"], r["purpose"]) for r in butler.query_dimension_records("detector")} == {
        (0, "1_53", "SCIENCE"), (1, "1_54", "SCIENCE")}
    visit_records = {r["visit"]: r for r in butler.query_dimension_records("visit")}
    assert set(visit_records) == {v.id for v in visits}
    for v in visits:
        assert visit_records[v.id]["physical_filter"] == v.physical_filter
        assert visit_records[v.id]["exposure_time"] == pytest.approx(v.exposure_time)
        # The visit's region is the hull of both detectors' footprints: wider than either one.
        ras = [ra for ra, _ in visit_records[v.id]["region"]]
        detector_ras = [[ra for ra, _ in r["region"]] for r in butler.query_dimension_records("visit_detector_region")
                        if r["visit"] == v.id]
        assert len(detector_ras) == 2
        assert max(ras) - min(ras) > 1.5 * max(max(d) - min(d) for d in detector_ras)
    # The datasets read back as the raws that were written.
    image = butler.get(refs[0])
    assert image.data.shape == (512, 256)

    # Origins are kept: the path each file came from, the plugin and the header metadata.
    origin = origin_of(butler, refs[0])
    assert origin.original_path == os.path.abspath(paths[0]) and origin.plugin == "hsc-raw"
    assert origin.metadata["object"] == "COSMOS" and origin.metadata["gain"] == pytest.approx(3.0)
    butler.register_dataset_type("notes", ["instrument"], "dict")
    assert origin_of(butler, butler.put({"a": 1}, "notes", instrument="HSC", run="other")) is None

    # Ingesting the same files again changes nothing: deterministic ids, records kept as they are.
    before = snapshot(butler)
    again = ingest_raws(butler, "hsc-raw", paths, run="HSC/raw/all", transfer="copy")
    assert [r.id for r in again] == [r.id for r in refs]
    assert snapshot(butler) == before


def test_the_cli_ingests_into_a_fresh_repository_and_shows_the_origin(tmp_path, raws):
    paths, visits = raws
    repo = tmp_path / "repo"
    runner = CliRunner()
    assert runner.invoke(main, ["create", str(repo)]).exit_code == 0
    result = runner.invoke(main, ["ingest", str(repo), "--run", "HSC/raw/all", "--plugin", "hsc-raw",
                                  "--transfer", "copy", *paths])
    assert result.exit_code == 0, result.output
    assert "Ingested 4 file(s) into HSC/raw/all" in result.output
    butler = Butler(repo)
    refs = sorted(butler.query_datasets("raw", collections=["HSC/raw/all"]), key=lambda r: str(r.data_id))
    assert len(refs) == 4

    shown = runner.invoke(main, ["ingest-origin", str(repo), str(refs[0].id), "--format", "json"])
    assert shown.exit_code == 0, shown.output
    import json

    row = json.loads(shown.output.strip().splitlines()[-1])
    assert row["dataset_id"] == str(refs[0].id) and row["plugin"] == "hsc-raw"
    assert row["original_path"] in paths and row["metadata"]["object"] == "COSMOS"
    unknown = runner.invoke(main, ["ingest-origin", str(repo), "0b5f0c1e-2f5a-5c61-9a4e-3d4a1e5d8c11"])
    assert unknown.exit_code == 1
    assert "Dataset 0b5f0c1e-2f5a-5c61-9a4e-3d4a1e5d8c11 is not in this repository: no origin" in unknown.output


def test_a_file_the_plugin_cannot_read_is_named_and_nothing_is_stored(make_butler, raws, tmp_path):
    paths, _ = raws
    butler = make_butler()
    bad = tmp_path / "notes.fits"
    bad.write_text("not a FITS file")
    before = snapshot(butler)
    with pytest.raises(FormatError, match="notes.fits"):
        ingest_raws(butler, "hsc-raw", [*paths, str(bad)], run="raw")
    assert snapshot(butler) == before


# -- finding plugins -------------------------------------------------------------------------


def test_an_unknown_plugin_is_one_line_listing_the_known_ones_and_how_to_register():
    with pytest.raises(ConfigError) as caught:
        get_plugin("nope")
    message = str(caught.value)
    assert message.startswith("Unknown ingest plugin 'nope'; known: ") and "hsc-raw" in message
    assert ENTRY_POINT_GROUP in message and "package.module:Class" in message and "\n" not in message
    with pytest.raises(ConfigError, match="Cannot load ingest plugin 'support.no_such_module:X'"):
        get_plugin("support.no_such_module:X")
    with pytest.raises(ConfigError, match="is not a subclass of skybutler.ops.plugins.IngestPlugin"):
        get_plugin("support.fake_cam_plugin:write_fake_raw")


def test_a_plugin_by_dotted_path_fills_a_fresh_repository(make_butler, tmp_path):
    butler = make_butler()
    paths = [str(write_fake_raw(tmp_path / f"f{e}-{d}.fits", e, d, airmass=1.0 + e / 10)) for e in (7, 8) for d in (0, 1)]
    refs = ingest_raws(butler, FAKE, paths, run="fake/raw", transfer="copy")
    assert sorted((r.data_id["exposure"], r.data_id["detector"]) for r in refs) == [(7, 0), (7, 1), (8, 0), (8, 1)]
    assert {r["physical_filter"] for r in butler.query_dimension_records("physical_filter")} == {"FAKE-g"}
    assert len(list(butler.query_dimension_records("visit_detector_region"))) == 4
    origin = origin_of(butler, refs[-1])
    assert origin.plugin == FAKE and origin.metadata == {"airmass": 1.8, "object": "field1"}


@pytest.fixture
def fake_distribution(tmp_path, monkeypatch):
    """A distribution installed on a path of its own, declaring FakeCamPlugin as entry point ``fake-cam-ep``.

    importlib.metadata finds it as it finds any installed package: by its .dist-info on sys.path.
    """
    site = tmp_path / "site"
    info = site / "fake_cam_dist-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: fake-cam-dist\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[{ENTRY_POINT_GROUP}]\nfake-cam-ep = {FAKE}\nbroken = nowhere.at_all:X\n")
    monkeypatch.syspath_prepend(str(site))
    return "fake-cam-ep"


def test_a_plugin_by_entry_point_is_found_listed_in_help_and_used_by_the_cli(fake_distribution, tmp_path):
    assert isinstance(get_plugin(fake_distribution), FakeCamPlugin)
    listed = available_plugins()
    assert listed[fake_distribution] == FakeCamPlugin.description
    assert listed["hsc-raw"].startswith("Hyper Suprime-Cam raw frames")
    assert listed["broken"].startswith("(cannot load: ")

    runner = CliRunner()
    help_text = runner.invoke(main, ["ingest", "--help"]).output
    assert "Ingest plugins (--plugin)" in help_text
    assert "hsc-raw" in help_text and fake_distribution in help_text and ENTRY_POINT_GROUP in help_text

    repo = tmp_path / "repo"
    assert runner.invoke(main, ["create", str(repo)]).exit_code == 0
    path = write_fake_raw(tmp_path / "one.fits", 3, 2)
    result = runner.invoke(main, ["ingest", str(repo), "--run", "fake/raw", "--plugin", fake_distribution, str(path)])
    assert result.exit_code == 0, result.output
    (ref,) = Butler(repo).query_datasets("fake_raw", collections=["fake/raw"])
    assert origin_of(Butler(repo), ref).plugin == fake_distribution


# -- records ---------------------------------------------------------------------------------


def test_a_record_that_exists_with_other_values_is_refused_and_nothing_is_ingested(make_butler, raws):
    paths, _ = raws
    butler = make_butler()
    butler.insert_dimension_records("instrument", [{"instrument": "HSC", "class_name": "HSC"}])
    butler.insert_dimension_records("band", [{"band": "r"}, {"band": "r2"}])
    butler.insert_dimension_records("physical_filter", [{"instrument": "HSC", "physical_filter": "HSC-R",
                                                         "band": "r2"}])
    before = snapshot(butler)
    with pytest.raises(DimensionError) as caught:
        ingest_raws(butler, "hsc-raw", paths, run="HSC/raw/all", transfer="copy")
    assert str(caught.value).startswith(
        "The physical_filter record {'instrument': 'HSC', 'physical_filter': 'HSC-R'} exists with band='r2', "
        "but the files to ingest give band='r'")
    assert snapshot(butler) == before  # no dataset, record, dataset type or file


def test_files_that_disagree_on_a_record_are_both_named(make_butler, tmp_path):
    butler = make_butler()
    a = write_fake_raw(tmp_path / "a.fits", 5, 0, exptime=30.0)
    b = write_fake_raw(tmp_path / "b.fits", 5, 1, exptime=45.0)
    with pytest.raises(DimensionError, match=r"Files .*a.fits and .*b.fits disagree on the exposure record "
                                             r"\('FAKECAM', 5\): exposure_time=30.0 and exposure_time=45.0"):
        plan_ingest(butler, FAKE, [str(a), str(b)])


class _InconsistentPlugin(FakeCamPlugin):
    """A buggy plugin: its data ids say band 'x' while its physical_filter record says 'g'."""

    def data_id(self, header, path):
        return {**super().data_id(header, path), "band": "x"}

    def records(self, header, path):
        return {**super().records(header, path), "band": [{"band": "g"}],
                "physical_filter": [{"instrument": "FAKECAM", "physical_filter": "FAKE-g", "band": "g"}]}


def test_records_go_in_with_the_datasets_or_not_at_all(make_butler, tmp_path):
    butler = make_butler()
    paths = [str(write_fake_raw(tmp_path / f"f{d}.fits", 9, d)) for d in (0, 1)]
    before = snapshot(butler)
    with pytest.raises(DimensionError, match="band='x'"):
        ingest_raws(butler, _InconsistentPlugin(), paths, run="fake/raw", transfer="copy")
    after = snapshot(butler)
    assert after["records"] == before["records"] and after["datasets"] == [] and after["files"] == []
    # The same butler, with a correct plugin: nothing of the rolled-back records is taken to exist.
    refs = ingest_raws(butler, FakeCamPlugin(), paths, run="fake/raw", transfer="copy")
    assert len(refs) == 2 and len(list(butler.query_dimension_records("instrument"))) == 1


# -- renaming ----------------------------------------------------------------------------------

RENAME = "{run}/{dataset_type}/{band}/{visit:08d}/{dataset_type}_{visit:08d}_{detector:03d}"


def test_rename_places_the_files_under_the_template_and_keeps_where_they_came_from(make_butler, raws):
    paths, visits = raws
    butler = make_butler()
    refs = ingest_raws(butler, "hsc-raw", paths, run="HSC/raw/all", transfer="copy", rename=RENAME)
    stored = {r.id: rec.path for r in refs for rec in [butler.registry.get_files([r.id])[r.id]]}
    assert sorted(stored.values()) == sorted(
        f"HSC%2Fraw%2Fall/raw/{v.band}/{v.id:08d}/raw_{v.id:08d}_{d:03d}.fits" for v in visits for d in v.detectors)
    assert {origin_of(butler, r).original_path for r in refs} == {os.path.abspath(p) for p in paths}


def test_rename_may_use_the_plugins_metadata(make_butler, tmp_path):
    butler = make_butler()
    path = write_fake_raw(tmp_path / "x.fits", 4, 1)
    (ref,) = ingest_raws(butler, FAKE, [str(path)], run="fake", transfer="copy",
                         rename="{object}/{exposure}/{detector}")
    assert butler.registry.get_files([ref.id])[ref.id].path == "field1/4/1.fits"


def test_rename_giving_two_files_one_name_is_refused_before_any_copy(make_butler, raws):
    paths, _ = raws
    butler = make_butler()
    before = snapshot(butler)
    with pytest.raises(TemplateError) as caught:
        ingest_raws(butler, "hsc-raw", paths, run="HSC/raw/all", transfer="move", rename="{run}/raw_{visit}")
    message = str(caught.value)
    assert message.startswith(f"Files {paths[0]} and {paths[1]} would both be stored as ")
    assert snapshot(butler)["files"] == before["files"] and snapshot(butler)["datasets"] == []
    assert all(os.path.exists(p) for p in paths)  # a move that was refused moved nothing


def test_rename_onto_a_stored_file_is_refused(make_butler, tmp_path):
    butler = make_butler()
    first, second = (str(write_fake_raw(tmp_path / f"d{d}.fits", 4, d)) for d in (0, 1))
    ingest_raws(butler, FAKE, [first], run="fake", transfer="copy", rename="{run}/{exposure}")
    with pytest.raises(TemplateError, match=r"d1.fits would be stored as fake/4.fits, which holds another dataset"):
        ingest_raws(butler, FAKE, [second], run="fake", transfer="copy", rename="{run}/{exposure}")


def test_rename_with_a_direct_transfer_is_refused(make_butler, tmp_path):
    butler = make_butler()
    path = str(write_fake_raw(tmp_path / "d.fits", 4, 0))
    with pytest.raises(ConfigError, match="transfer 'direct' keeps each file where it is"):
        ingest_raws(butler, FAKE, [path], run="fake", transfer="direct", rename="{run}/{exposure}/{detector}")


def test_without_rename_the_repositorys_template_for_the_dataset_type_names_ingested_files(make_butler, tmp_path):
    butler = make_butler(config={"templates": {"dataset_types": {
        "fake_raw": "{run}/{dataset_type}/{band}/{exposure:06d}_{detector:02d}_{instrument}"}}})
    path = str(write_fake_raw(tmp_path / "d.fits", 4, 3))
    (ref,) = ingest_raws(butler, FAKE, [path], run="fake", transfer="copy")
    assert butler.registry.get_files([ref.id])[ref.id].path == "fake/fake_raw/g/000004_03_FAKECAM.fits"


# -- the documentation -------------------------------------------------------------------------


def test_the_example_plugin_of_the_documentation_ingests_files(make_butler, tmp_path):
    import re
    from pathlib import Path

    doc = (Path(__file__).parents[2] / "docs" / "ingest_plugins.md").read_text()
    code = re.search(r"```python\n(.*?)```", doc, re.DOTALL).group(1)
    namespace: dict = {}
    exec(compile(code, "docs/ingest_plugins.md", "exec"), namespace)
    plugin = namespace["LambdaCamPlugin"]()
    butler = make_butler()
    paths = [str(write_fake_raw(tmp_path / f"l{d}.fits", 12, d, band="z")) for d in (0, 1)]
    refs = ingest_raws(butler, plugin, paths, run="LAMBDA/raw/all", transfer="copy",
                       rename="{run}/{dataset_type}/{band}/{exposure:08d}/{dataset_type}_{exposure:08d}_{detector:03d}")
    assert sorted(butler.registry.get_files([r.id])[r.id].path for r in refs) == [
        f"LAMBDA%2Fraw%2Fall/raw/z/00000012/raw_00000012_{d:03d}.fits" for d in (0, 1)]
    assert origin_of(butler, refs[0]).plugin == "lambda-raw"
    assert origin_of(butler, refs[0]).metadata["airmass"] == 1.2


def test_an_hsc_raw_header_as_the_camera_writes_it_gives_the_exposure_times_of_ut_str_and_ut_end():
    """A real HSC raw has the UT date alone in DATE-OBS and the times in UT-STR / UT-END.

    Before: DATE-OBS alone was read, as midnight: visits started hours early, and a
    calibration lookup at the exposure's time found the wrong calibration.
    """
    import datetime

    from skybutler.ops.hsc import header_to_data_id

    header = {"INSTRUME": "Hyper Suprime-Cam", "EXP-ID": "HSCE00095104", "FILTER01": "HSC-I", "DET-ID": 16,
              "EXPTIME": 150.0, "DATE-OBS": "2016-03-07", "UT-STR": "08:16:40.567", "UT-END": "08:19:10.600"}
    utc = datetime.UTC
    values = header_to_data_id(header)
    assert values["timespan_begin"] == datetime.datetime(2016, 3, 7, 8, 16, 40, 567000, tzinfo=utc)
    assert values["timespan_end"] == datetime.datetime(2016, 3, 7, 8, 19, 10, 600000, tzinfo=utc)
    assert values["day_obs"] == 20160306
    across_midnight = header_to_data_id({**header, "UT-STR": "23:59:00.000", "UT-END": "00:01:30.000"})
    assert across_midnight["timespan_end"] == datetime.datetime(2016, 3, 8, 0, 1, 30, tzinfo=utc)
    without_end = header_to_data_id({k: v for k, v in header.items() if k != "UT-END"})
    assert without_end["timespan_end"] == values["timespan_begin"] + datetime.timedelta(seconds=150)
    with pytest.raises(ValueError, match="DATE-OBS='2016-03-07' has no time of day"):
        header_to_data_id({k: v for k, v in header.items() if k not in ("UT-STR", "UT-END")})


@pytest.mark.parametrize(("physical_filter", "band"), [("HSC-G", "g"), ("HSC-R2", "r"), ("HSC-I2", "i"),
                                                       ("HSC-Y", "y"), ("NB0921", "N921"), ("NB1010", "N1010")])
def test_every_hsc_filter_has_its_band(physical_filter, band):
    """Real HSC data is taken in g, z, y and narrow bands too; before, only HSC-R and HSC-I were read."""
    from skybutler.ops.hsc import header_to_data_id

    header = {"INSTRUME": "HSC", "EXP-ID": "HSCE00095104", "FILTER01": physical_filter, "DET-ID": 16,
              "EXPTIME": 30.0, "DATE-OBS": "2016-03-07T08:16:40"}
    assert header_to_data_id(header)["band"] == band
    with pytest.raises(ValueError, match="unknown HSC filter FILTER01='HSC-Q'; known: HSC-G, HSC-R"):
        header_to_data_id({**header, "FILTER01": "HSC-Q"})


def test_a_tile_compressed_raw_is_read_from_its_image_header(make_butler, raw_dir, tmp_path):
    """A ``.fits.fz`` raw (fpack) has an empty primary HDU and the image, with its header, in a compressed one.

    Before: the primary header alone was read: "raw header lacks 'INSTRUME'".
    """
    from astropy.io import fits

    src, visits = raw_dir
    plain = sorted(src.iterdir())[0]
    with fits.open(plain) as hdus:
        header, data = hdus[0].header.copy(), hdus[0].data.copy()
    compressed = tmp_path / (plain.stem + ".fits.fz")
    fits.HDUList([fits.PrimaryHDU(), fits.CompImageHDU(data=data, header=header)]).writeto(compressed)

    butler = make_butler()
    (ref,) = ingest_raws(butler, "hsc-raw", [str(compressed)], run="HSC/raw/fz", transfer="copy")
    (expected,) = ingest_raws(make_butler(), "hsc-raw", [str(plain)], run="HSC/raw/all", transfer="copy")
    assert ref.data_id == expected.data_id
    (visit,) = butler.query_dimension_records("visit", where=f"visit = {ref.data_id['visit']}")
    assert visit["region"] is not None  # the WCS and the image's size come from the image's header
