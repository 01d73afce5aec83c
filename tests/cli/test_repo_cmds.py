"""The repository commands drive the library and report user mistakes in one line, without a traceback."""

from __future__ import annotations

import json

from click.testing import CliRunner

from skybutler.cli import main

RECORDS = """
instrument: [{instrument: HSC}]
band: [{band: r}]
physical_filter: [{instrument: HSC, physical_filter: HSC-R, band: r}]
detector: [{instrument: HSC, detector: 0}, {instrument: HSC, detector: 1}]
day_obs: [{instrument: HSC, day_obs: 20260101}]
visit: [{instrument: HSC, visit: 1, physical_filter: HSC-R, day_obs: 20260101, exposure_time: 30}]
"""


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def test_create_insert_ingest_query_get_remove(tmp_path):
    repo = tmp_path / "repo"
    assert run("create", repo).exit_code == 0
    (tmp_path / "records.yaml").write_text(RECORDS)
    assert run("insert-dimensions", repo, tmp_path / "records.yaml").exit_code == 0
    assert run("register-dataset-type", repo, "raw", "visit", "detector", "-s", "dict").exit_code == 0
    for det in (0, 1):
        (tmp_path / f"raw{det}.json").write_text(json.dumps({"det": det}))
    (tmp_path / "files.csv").write_text("file,dataset_type,instrument,visit,detector\n"
                                        "raw0.json,raw,HSC,1,0\nraw1.json,raw,HSC,1,1\n")
    result = run("ingest", repo, "--run", "raw/all", "--table", tmp_path / "files.csv")
    assert result.exit_code == 0, result.output
    result = run("query", "datasets", repo, "raw", "-c", "raw/all", "--where", "detector = 1", "--format", "json")
    rows = [json.loads(line) for line in result.output.splitlines() if line.startswith("{")]
    assert [(r["visit"], r["detector"]) for r in rows] == [(1, 1)]
    result = run("query", "data-ids", repo, "visit", "detector", "--where", "band = 'r'", "--format", "csv")
    assert result.output.splitlines()[1:] == ["HSC,0,1", "HSC,1,1"]
    out = tmp_path / "copy.json"
    assert run("get", repo, "raw", out, "-d", "instrument=HSC,visit=1,detector=0", "-c", "raw/all").exit_code == 0
    assert json.loads(out.read_text()) == {"det": 0}
    assert run("remove-runs", repo, "raw/all", "--yes").exit_code == 0
    result = run("collection", "list", repo, "--format", "json")
    assert "raw/all" not in result.output


def test_user_mistakes_are_one_line_errors(tmp_path):
    repo = tmp_path / "repo"
    run("create", repo)
    result = CliRunner().invoke(main, ["query", "datasets", str(repo), "nope"])
    assert result.exit_code == 1
    assert "Unknown dataset type 'nope'" in result.output
    assert "Traceback" not in result.output
    result = CliRunner().invoke(main, ["query", "data-ids", str(repo), "visit", "--where", "visit = AND"])
    assert result.exit_code == 1 and "column 9" in result.output
    result = CliRunner().invoke(main, ["config", "show", str(tmp_path / "missing")])
    assert result.exit_code == 1 and "not a skybutler repository" in result.output


def test_config_show_prints_the_configuration_in_force(tmp_path, monkeypatch):
    repo = tmp_path / "repo"
    run("create", repo)
    monkeypatch.setenv("SKYBUTLER_DATASTORE_CHECKSUM", "sha256")
    result = run("config", "show", repo)
    assert "checksum: sha256" in result.output
