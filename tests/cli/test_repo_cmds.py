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


def test_certify_decertify_tag_and_untag_from_the_command_line(tmp_path):
    repo = tmp_path / "repo"
    assert run("create", repo).exit_code == 0
    (tmp_path / "records.yaml").write_text(RECORDS)
    assert run("insert-dimensions", repo, tmp_path / "records.yaml").exit_code == 0
    assert run("register-dataset-type", repo, "bias", "detector", "-s", "dict", "--calibration").exit_code == 0
    for det in (0, 1):
        (tmp_path / f"bias{det}.json").write_text(json.dumps({"det": det}))
    (tmp_path / "files.csv").write_text("file,dataset_type,instrument,detector\n"
                                        "bias0.json,bias,HSC,0\nbias1.json,bias,HSC,1\n")
    assert run("ingest", repo, "--run", "calib/run1", "--table", tmp_path / "files.csv").exit_code == 0
    result = run("collection", "certify", repo, "calib", "bias", "-c", "calib/run1",
                 "--begin", "2026-01-01T00:00:00", "--end", "2026-03-01T00:00:00")
    assert result.exit_code == 0, result.output
    result = run("collection", "decertify", repo, "calib", "bias", "--where", "detector = 0",
                 "--begin", "2026-01-10T00:00:00", "--end", "2026-01-20T00:00:00")
    assert result.exit_code == 0 and "Changed 1 certification" in result.output, result.output

    from skybutler import Butler

    butler = Butler(repo, writeable=False)
    (bias0,) = butler.query_datasets("bias", collections=["calib/run1"], where="detector = 0")
    ranges = sorted((c["begin"].isoformat(), c["end"].isoformat()) for c in butler.registry.certifications("calib")
                    if c["dataset_id"] == bias0.id)
    assert ranges == [("2026-01-01T00:00:00", "2026-01-10T00:00:00"), ("2026-01-20T00:00:00", "2026-03-01T00:00:00")]
    assert butler.find_dataset("bias", instrument="HSC", detector=0, collections=["calib"], time="2026-01-15") is None

    assert run("collection", "tag", repo, "best", "bias", "-c", "calib/run1").exit_code == 0
    result = run("collection", "untag", repo, "best", "bias", "--where", "detector = 1")
    assert result.exit_code == 0 and "Untagged 1" in result.output, result.output
    assert [r.data_id["detector"] for r in butler.query_datasets("bias", collections=["best"])] == [0]
    result = CliRunner().invoke(main, ["collection", "decertify", str(repo), "best", "bias"])
    assert result.exit_code == 1 and "is TAGGED, not CALIBRATION" in result.output
