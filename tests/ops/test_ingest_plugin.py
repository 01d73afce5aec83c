"""Raw ingest with a header plugin: data ids and observation records come from the files themselves."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from skybutler import Butler, ConfigError, FormatError
from skybutler.cli import main
from skybutler.demo import synthetic as syn
from skybutler.formats import get_formatter

RECORDS = """
instrument: [{instrument: HSC}]
band: [{band: r}, {band: i}]
physical_filter: [{instrument: HSC, physical_filter: HSC-R, band: r}, {instrument: HSC, physical_filter: HSC-I, band: i}]
detector: [{instrument: HSC, detector: 0, name: "1_53"}, {instrument: HSC, detector: 1, name: "1_54"}]
"""


@pytest.fixture
def raw_files(tmp_path):
    sky = syn.make_sky(0)
    visit = syn.make_visits()[0]
    fits = get_formatter("fits")
    paths = []
    for det in visit.detectors:
        path = tmp_path / f"raw-{visit.id}-{det}.fits"
        with open(path, "wb") as f:
            fits.write(syn.make_raw(visit, det, sky), f, identity={})
        paths.append(path)
    return visit, paths


def test_cli_ingest_with_the_hsc_plugin_reads_data_ids_and_regions(tmp_path, raw_files):
    visit, paths = raw_files
    repo = tmp_path / "repo"
    runner = CliRunner()
    assert runner.invoke(main, ["create", str(repo)]).exit_code == 0
    (tmp_path / "records.yaml").write_text(RECORDS)
    assert runner.invoke(main, ["insert-dimensions", str(repo), str(tmp_path / "records.yaml")]).exit_code == 0
    assert runner.invoke(main, ["register-dataset-type", str(repo), "raw", "visit", "detector", "-s", "image"]).exit_code == 0
    result = runner.invoke(main, ["ingest", str(repo), "--run", "HSC/raw/all", "-t", "raw", "--plugin", "hsc-raw",
                                  *map(str, paths)])
    assert result.exit_code == 0, result.output

    butler = Butler(repo)
    refs = list(butler.query_datasets("raw", collections=["HSC/raw/all"]))
    assert sorted((r.data_id["visit"], r.data_id["detector"]) for r in refs) == [(visit.id, 0), (visit.id, 1)]
    (record,) = butler.query_dimension_records("visit")
    assert record["physical_filter"] == visit.physical_filter and record["band"] == visit.band
    assert record["exposure_time"] == pytest.approx(visit.exposure_time)
    assert len(record["region"]) >= 4
    # The footprints from the header WCS are real: each detector covers its half of the visit.
    assert {r["detector"] for r in butler.query_dimension_records("visit_detector_region")} == {0, 1}
    # Ingesting the same files again changes nothing (deterministic ids, records synced if absent).
    again = runner.invoke(main, ["ingest", str(repo), "--run", "HSC/raw/all", "-t", "raw", "--plugin", "hsc-raw",
                                 *map(str, paths)])
    assert again.exit_code == 0, again.output
    assert len(list(butler.query_datasets("raw", collections=["HSC/raw/all"]))) == 2


def test_a_file_the_plugin_cannot_read_is_named(tmp_path, raw_files):
    butler = Butler.create(tmp_path / "repo", run="HSC/raw/all")
    butler.register_dataset_type("raw", ["visit", "detector"], "image")
    bad = tmp_path / "notes.fits"
    bad.write_text("not a FITS file")
    from skybutler.ops.ingest import plugin_datasets

    with pytest.raises(FormatError, match="notes.fits"):
        plugin_datasets(butler, "hsc-raw", [str(bad)], "raw")
    with pytest.raises(ConfigError, match="Unknown ingest plugin 'nope'.*hsc-raw"):
        plugin_datasets(butler, "nope", [str(bad)], "raw")
