"""Dumps: a repository's content exported to a portable directory or zip file, and imported elsewhere whole."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import uuid
import zipfile
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from skybutler import (
    Butler,
    ChecksumMismatchError,
    CollectionType,
    DumpVersionError,
    TransferConflictError,
    TransferError,
)
from skybutler.cli import main
from skybutler.provenance import lineage
from skybutler.transfer.dump import DUMP_FORMAT_VERSION, DumpSource, export_dump, import_dump
from support import dump_kill
from support.forkserver import run_in_process
from support.pipeline_repo import CALIB, INPUTS, PIPELINE_YAML, RAW_RUN, copy_repository

OUT_RUN = "u/test/dump"
TAGGED = "u/test/best"
CHAIN = "HSC/defaults"
REPO_ROOT = Path(__file__).parents[2]


# The tests share module fixtures (the source repository and its dumps): on one xdist worker (--dist loadgroup in
# pyproject.toml) they are built once per run, not once per worker.
pytestmark = pytest.mark.xdist_group("dump")


@pytest.fixture(params=["sqlite-local", "postgresql-s3"])
def backend(request):
    """Import targets: the embedded default and the shared central repository's combination."""
    return request.param


@pytest.fixture(scope="module")
def source(filled_repo_template, tmp_path_factory):
    """Raws, certified biases, the toy pipeline's outputs with provenance, a TAGGED and a CHAINED collection.

    Shared read-only: exporting only reads its source.
    """
    from skybutler.pipeline import Pipeline, build_quantum_graph, execute_graph

    butler = copy_repository(filled_repo_template, tmp_path_factory.mktemp("dump-source") / "repo")
    graph = build_quantum_graph(butler, Pipeline.from_yaml(PIPELINE_YAML), input_collections=INPUTS,
                                output_run=OUT_RUN)
    assert not execute_graph(butler, graph).failed
    butler.registry.register_collection(TAGGED, CollectionType.TAGGED, doc="the best calexps")
    butler.registry.associate(TAGGED, list(butler.query_datasets("calexp", collections=[OUT_RUN],
                                                                 where="detector IN (0, 1)")))
    butler.registry.register_collection(CHAIN, CollectionType.CHAINED)
    butler.registry.set_chain(CHAIN, [OUT_RUN, RAW_RUN, CALIB])
    yield butler
    butler.close()


@pytest.fixture(scope="module")
def dumps(source, tmp_path_factory):
    """Dumps of everything in ``source``: ``{"directory": path, "zip": path, "none": path}`` (none: no files)."""
    root = tmp_path_factory.mktemp("dumps")
    out = {}
    for files, name in (("directory", "all"), ("zip", "all.zip"), ("none", "rows")):
        export_dump(source, root / name, files=files)
        out[files] = root / name
    return out


def content(butler):
    """Everything an import writes, by value (datasets, files and bytes, collections, records, provenance)."""
    reg = butler.registry
    datasets = {}
    for file, ref in reg.all_files():
        datasets[ref.id] = (ref.dataset_type.name, tuple(ref.data_id.items()), ref.run, file.path, file.size,
                            file.checksum, file.checksum_algorithm, file.format)
    collections = {c["name"]: (c["type"], c["doc"], tuple(c["children"])) for c in reg.collections()}
    types = sorted(dt.name for dt in reg.dataset_types())
    members = {name: sorted(str(r.id) for t in types for r in butler.query_datasets(t, collections=[name],
                                                                                      find_first=False))
               for name, (ctype, _, _) in collections.items() if ctype == "TAGGED"}
    certified = {name: sorted((str(c["dataset_id"]), c["begin"], c["end"]) for c in reg.certifications(name))
                 for name, (ctype, _, _) in collections.items() if ctype == "CALIBRATION"}
    t = reg.tables
    with reg.database.read() as conn:
        runs = dict(conn.execute(sa.select(t.collection.c.id, t.collection.c.name)).all())
        executions = {r["id"]: {**{k: v for k, v in r.items() if k != "run_id"}, "run": runs.get(r["run_id"])}
                      for r in conn.execute(sa.select(t.execution)).mappings()}
        edges = {name: {tuple(r) for r in conn.execute(sa.select(table))}
                 for name, table in (("used", t.used), ("generated", t.generated), ("derived", t.derived))}
    return {
        "datasets": datasets, "types": {dt.name: dt for dt in reg.dataset_types()}, "collections": collections,
        "tags": members, "certifications": certified, "executions": executions, **edges,
        "records": {el: sorted(map(repr, reg.fetch_dimension_records(el))) for el in reg.universe.elements},
        "visits_on_patches": sorted(map(repr, butler.query_data_ids(["visit", "detector", "patch"],
                                                                    where="tract = 0"))),
    }


def file_bytes(butler):
    return {ref.id: hashlib.sha256(butler.datastore.open(file.path).read()).hexdigest()
            for file, ref in butler.registry.all_files()}


def lineages(butler):
    coadds = butler.query_datasets("coadd", collections=[OUT_RUN])
    return {ref.id: [(e.dataset.id, e.depth, e.task_label) for e in lineage(butler, ref)] for ref in coadds}


# -- round trips -------------------------------------------------------------------------


def _same_as_source(target, source, report=None) -> None:
    expected = content(source)
    assert content(target) == expected
    assert file_bytes(target) == file_bytes(source)
    assert lineages(target) == lineages(source) and all(lineages(source).values())
    assert expected["tags"][TAGGED] and expected["certifications"][CALIB] and expected["executions"]
    assert expected["visits_on_patches"]  # the spatial join answers from the imported regions
    if report is not None:
        assert (report.datasets_added, report.datasets_skipped, report.conflicts) == \
            (len(expected["datasets"]), 0, [])
        assert report.files_copied == len(expected["datasets"])


@pytest.mark.parametrize("backend", ["sqlite-local"])
@pytest.mark.parametrize("files", ["directory", "zip"])
def test_an_imported_dump_holds_the_same_datasets_files_collections_records_and_provenance(
        source, dumps, make_butler, files):
    target = make_butler()
    _same_as_source(target, source, import_dump(target, dumps[files]))


@pytest.mark.parametrize("backend", ["postgresql-s3"])
def test_a_dump_round_trips_through_a_repository_on_postgresql_and_s3(source, dumps, make_butler, tmp_path):
    central = make_butler()
    _same_as_source(central, source, import_dump(central, dumps["zip"]))
    export_dump(central, tmp_path / "again", files="directory")
    copy = Butler.create(tmp_path / "copy")
    import_dump(copy, tmp_path / "again")
    assert content(copy) == content(source)


@pytest.mark.parametrize("backend", ["sqlite-local"])
def test_a_dump_without_files_is_imported_as_rows_only_and_refuses_to_copy(source, dumps, make_butler):
    target = make_butler()
    with pytest.raises(TransferError, match="holds no files.*--transfer none"):
        import_dump(target, dumps["none"], transfer="copy")
    assert list(target.registry.all_files()) == [] and target.registry.dataset_types() == []
    report = import_dump(target, dumps["none"], transfer="none")
    assert content(target) == content(source)  # same rows, the files at the same relative paths
    assert report.files_copied == 0
    assert not any(target.datastore.exists(f.path) for f, _ in target.registry.all_files())


@pytest.mark.parametrize("backend", ["sqlite-local"])
def test_new_ids_give_every_dataset_a_fresh_id_and_the_edges_follow(source, dumps, make_butler):
    target = make_butler()
    report = import_dump(target, dumps["directory"], new_ids=True)
    before, after = content(source), content(target)
    assert set(report.id_map) >= set(before["datasets"]) and not set(after["datasets"]) & set(before["datasets"])
    assert {report.id_map[i]: v[:3] for i, v in before["datasets"].items()} == \
        {i: v[:3] for i, v in after["datasets"].items()}
    assert after["tags"][TAGGED] == sorted(str(report.id_map[uuid.UUID(i)])
                                           for i in before["tags"][TAGGED])
    assert {report.id_map[a]: {(report.id_map[d], depth, task) for d, depth, task in chain}
            for a, chain in lineages(source).items()} == {a: set(chain) for a, chain in lineages(target).items()}


# -- what a dump looks like --------------------------------------------------------------


def test_a_dump_is_described_by_its_header_and_holds_files_only_under_files(dumps, source):
    header = json.loads((dumps["directory"] / "dump.json").read_text())
    assert header["format"] == "skybutler-dump" and header["format_version"] == DUMP_FORMAT_VERSION
    assert header["counts"]["datasets"] == len(content(source)["datasets"]) == header["counts"]["files"]
    assert header["universe"] == source.universe.document
    line = json.loads((dumps["directory"] / "datasets.jsonl").read_text().splitlines()[0])
    assert line["dump_path"] == f"files/{line['file']['path']}"
    assert (dumps["directory"] / line["dump_path"]).stat().st_size == line["file"]["size"]
    names = zipfile.ZipFile(dumps["zip"]).namelist()
    assert {n for n in names if not n.startswith("files/")} == {"dump.json", *header["streams"]}
    assert not (dumps["none"] / "files").exists()


@pytest.mark.parametrize("backend", ["sqlite-local"])
def test_a_file_ingested_in_place_is_dumped_under_files_external(source, tmp_path, make_butler):
    outside = tmp_path / "outside" / "raw_extra.json"
    outside.parent.mkdir()
    outside.write_text('{"level": 99.0}')
    repo = copy_repository(Path(source.root), tmp_path / "repo")
    from skybutler import FileDataset

    ref, = repo.ingest([FileDataset(str(outside), "bias", {"instrument": "HSC", "detector": 3})],
                       run="u/direct", transfer="direct")
    export_dump(repo, tmp_path / "d", ["bias"], collections=["u/direct"], files="directory")
    line = json.loads((tmp_path / "d" / "datasets.jsonl").read_text())
    assert line["dump_path"].startswith("files/external/") and line["dump_path"].endswith("/raw_extra.json")
    assert (tmp_path / "d" / line["dump_path"]).read_bytes() == outside.read_bytes()
    target = make_butler()
    import_dump(target, tmp_path / "d")
    assert target.get(target.find_dataset("bias", {"instrument": "HSC", "detector": 3}, collections=["u/direct"])) \
        == {"level": 99.0}


def test_the_format_document_names_every_stream_and_the_version():
    from skybutler.transfer._dump_format import STREAMS

    doc = (REPO_ROOT / "docs" / "dump_format.md").read_text()
    assert all(name in doc for name in STREAMS)
    assert f"format_version`: {DUMP_FORMAT_VERSION}" in doc or f'"format_version": {DUMP_FORMAT_VERSION}' in doc


# -- refusals ----------------------------------------------------------------------------


def _rewrite(dump: Path, stream: str, text: str, header_changes: dict | None = None) -> None:
    """Replace a stream of a directory dump and make its header agree (a well-formed but hostile dump)."""
    (dump / stream).write_text(text)
    header = json.loads((dump / "dump.json").read_text())
    data = text.encode()
    header["streams"][stream] = {"lines": text.count("\n"), "bytes": len(data),
                                 "sha256": hashlib.sha256(data).hexdigest()}
    header.update(header_changes or {})
    (dump / "dump.json").write_text(json.dumps(header))


def _copy_dump(dumps, files, tmp_path) -> Path:
    import shutil

    dest = tmp_path / Path(dumps[files]).name
    (shutil.copytree if Path(dumps[files]).is_dir() else shutil.copyfile)(dumps[files], dest)
    return dest


@pytest.mark.parametrize("backend", ["sqlite-local"])
def test_a_dump_of_a_newer_format_is_refused_naming_both_versions(dumps, tmp_path, make_butler):
    dump = _copy_dump(dumps, "none", tmp_path)
    header = json.loads((dump / "dump.json").read_text())
    header.update(format_version=DUMP_FORMAT_VERSION + 1, skybutler_version="9.1.0")
    (dump / "dump.json").write_text(json.dumps(header))
    target = make_butler()
    with pytest.raises(DumpVersionError, match=rf"format version {DUMP_FORMAT_VERSION + 1}, written by skybutler "
                                               rf"9\.1\.0.*up to {DUMP_FORMAT_VERSION}"):
        import_dump(target, dump, transfer="none")
    assert target.registry.dataset_types() == []


@pytest.mark.parametrize("make", ["text file", "empty directory", "other zip", "other json"])
def test_something_that_is_not_a_dump_is_refused_in_one_line(tmp_path, make):
    path = tmp_path / "thing"
    if make == "text file":
        path.write_text("hello")
    elif make == "empty directory":
        path.mkdir()
    elif make == "other zip":
        with zipfile.ZipFile(path, "w") as zf:
            zf.writestr("readme.txt", "hello")
    else:
        path.mkdir()
        (path / "dump.json").write_text('{"format": "something-else"}')
    with pytest.raises(DumpVersionError, match="is not a skybutler dump") as err:
        DumpSource(path)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("damage", ["truncated stream", "altered line", "missing file", "truncated zip"])
@pytest.mark.parametrize("backend", ["sqlite-local"])
def test_a_damaged_dump_is_refused_before_anything_is_written(dumps, tmp_path, make_butler, damage):
    dump = _copy_dump(dumps, "zip" if damage == "truncated zip" else "directory", tmp_path)
    if damage == "truncated stream":
        data = (dump / "datasets.jsonl").read_bytes()
        (dump / "datasets.jsonl").write_bytes(data[:len(data) // 2])
        expected = "damaged: datasets.jsonl has"
    elif damage == "altered line":
        text = (dump / "tags.jsonl").read_text()
        (dump / "tags.jsonl").write_text(text.replace('"dataset_id":"0', '"dataset_id":"1', 1))
        expected = "damaged: tags.jsonl has"
    elif damage == "missing file":
        next(p for p in (dump / "files").rglob("*") if p.is_file()).unlink()
        expected = "damaged: files/ holds"
    else:
        data = dump.read_bytes()
        dump.write_bytes(data[:-100])
        expected = "not a complete zip file"
    target = make_butler()
    with pytest.raises(TransferError, match=expected):
        import_dump(target, dump)
    assert list(target.registry.all_files()) == [] and target.registry.dataset_types() == []
    assert list(target.registry.fetch_dimension_records("instrument")) == []


@pytest.mark.parametrize("backend", ["sqlite-local"])
def test_a_dump_naming_a_file_outside_its_files_directory_is_refused(dumps, tmp_path, make_butler):
    dump = _copy_dump(dumps, "directory", tmp_path)
    lines = (dump / "datasets.jsonl").read_text().splitlines()
    first = json.loads(lines[0])
    first["dump_path"] = "files/../../../etc/passwd"
    _rewrite(dump, "datasets.jsonl", "\n".join([json.dumps(first), *lines[1:]]) + "\n")
    with pytest.raises(TransferError, match=rf"dataset {first['id']} names 'files/\.\./.*not under files/"):
        import_dump(make_butler(), dump)


def test_export_refuses_a_destination_that_exists_or_a_files_choice_that_does_not_fit_it(source, tmp_path):
    (tmp_path / "taken").mkdir()
    with pytest.raises(TransferError, match="it exists"):
        export_dump(source, tmp_path / "taken")
    with pytest.raises(TransferError, match="files='zip' does not fit"):
        export_dump(source, tmp_path / "dir", files="zip")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"]


def test_an_export_refuses_a_file_whose_bytes_no_longer_match_its_checksum_and_leaves_no_dump(source, tmp_path):
    repo = copy_repository(Path(source.root), tmp_path / "repo")
    file, ref = next((f, r) for f, r in repo.registry.all_files() if r.dataset_type.name == "raw")
    damaged = Path(repo.datastore.url(file.path))
    data = bytearray(damaged.read_bytes())
    data[-2] ^= 0x01  # same size, other bytes: bit-rot
    damaged.write_bytes(bytes(data))
    with pytest.raises(ChecksumMismatchError, match=rf"{ref.id}.*no longer matches its md5 checksum"):
        export_dump(repo, tmp_path / "out.zip", files="zip")
    assert [p.name for p in tmp_path.iterdir()] == ["repo"]
    export_dump(repo, tmp_path / "rows")  # without files the bytes are not read


# -- a target that holds part of it ------------------------------------------------------


@pytest.mark.parametrize("backend", ["sqlite-local"])
def test_an_import_into_a_repository_holding_part_of_the_dump_skips_it(source, dumps, make_butler, tmp_path):
    target = make_butler()
    export_dump(source, tmp_path / "raws.zip", ["raw"], collections=[RAW_RUN], files="zip")
    first = import_dump(target, tmp_path / "raws.zip")
    report = import_dump(target, dumps["zip"])
    total = len(content(source)["datasets"])
    assert first.datasets_added == 16 and (report.datasets_added, report.datasets_skipped) == (total - 16, 16)
    assert content(target) == content(source)
    again = import_dump(target, dumps["zip"])
    assert (again.datasets_added, again.datasets_skipped, again.files_copied) == (0, total, 0)


def test_a_conflicting_dataset_is_refused_by_name_and_not_overwritten(source, dumps, make_butler):
    target = make_butler(records=True)
    target.register_dataset_type("raw", ("visit", "detector"), "dict")
    mine = target.put({"level": -1.0}, "raw", {"instrument": "HSC", "visit": 903334, "detector": 2}, run=RAW_RUN)
    with pytest.raises(TransferConflictError, match=r"raw.*903334.*HSC/raw/all") as err:
        import_dump(target, dumps["directory"])
    assert len(err.value.conflicts) == 1 and str(mine.id) in err.value.conflicts[0]
    assert target.get(mine) == {"level": -1.0}
    held = content(target)["datasets"]
    assert len(held) == len(content(source)["datasets"])  # everything else came in


# -- kills -------------------------------------------------------------------------------

def _killed(function, *args: str) -> int | None:
    """Run ``function(*args)`` of `support.dump_kill` in a process of its own; return its exit code."""
    return run_in_process(function, *args, preload=("skybutler.transfer.dump", "support.dump_kill"))


def test_an_import_killed_midway_and_repeated_is_complete_with_nothing_twice(source, dumps, tmp_path):
    target_root = tmp_path / "target"
    Butler.create(target_root).close()
    assert _killed(dump_kill.killed_import, str(target_root), str(dumps["zip"])) == -signal.SIGKILL
    target = Butler(target_root)
    partial = len(content(target)["datasets"])
    total = len(content(source)["datasets"])
    assert 0 < partial < total
    report = import_dump(target, dumps["zip"])
    assert (report.datasets_added, report.datasets_skipped) == (total - partial, partial)
    assert content(target) == content(source)
    assert file_bytes(target) == file_bytes(source)
    stray = {str(p.relative_to(target_root)) for p in target_root.rglob("*") if p.is_file()} - \
        {f.path for f, _ in target.registry.all_files()}
    assert not [p for p in stray if not p.startswith((".skybutler", "registry.sqlite3", "skybutler.yaml"))]


@pytest.mark.parametrize("files", ["directory", "zip"])
def test_an_export_killed_midway_leaves_nothing_that_looks_like_a_dump(source, tmp_path, files):
    dest = tmp_path / ("out.zip" if files == "zip" else "out")
    assert _killed(dump_kill.killed_export, str(source.root), str(dest), files) == -signal.SIGKILL
    assert not dest.exists()
    leftover, = tmp_path.glob(".out*.partial-*")
    with pytest.raises(DumpVersionError, match="not a skybutler dump"):
        DumpSource(leftover)
    export_dump(source, dest, files=files)  # the leftover is in nobody's way
    assert DumpSource(dest).counts["datasets"] == len(content(source)["datasets"])


# -- command line ------------------------------------------------------------------------


def test_export_and_import_from_the_command_line_print_what_they_did(source, tmp_path):
    target = tmp_path / "target"
    Butler.create(target).close()
    runner = CliRunner()
    out = runner.invoke(main, ["export", str(source.root), str(tmp_path / "d.zip"), "raw", "-c", RAW_RUN,
                               "--files", "zip"])
    assert out.exit_code == 0, out.output
    assert "datasets written" in out.output and "16" in out.output
    out = runner.invoke(main, ["import", str(target), str(tmp_path / "d.zip")])
    assert out.exit_code == 0, out.output
    assert "datasets added" in out.output and "16" in out.output
    out = runner.invoke(main, ["import", str(target), str(tmp_path / "d.zip")])
    assert out.exit_code == 0 and "skipped" in out.output


def test_import_from_the_command_line_lists_conflicts_and_exits_non_zero(source, tmp_path):
    target = Butler.create(tmp_path / "target")
    runner = CliRunner()
    assert runner.invoke(main, ["export", str(source.root), str(tmp_path / "d"), "raw", "-c", RAW_RUN,
                                "--files", "directory"]).exit_code == 0
    import_dump(target, tmp_path / "d", transfer="copy")
    ref = target.find_dataset("raw", {"instrument": "HSC", "visit": 903334, "detector": 0}, collections=[RAW_RUN])
    target.remove_datasets([ref])
    target.put({"level": -1.0}, "raw", {"instrument": "HSC", "visit": 903334, "detector": 0}, run=RAW_RUN)
    out = runner.invoke(main, ["import", str(target.root), str(tmp_path / "d")])
    assert out.exit_code == 1
    assert "Conflicts" in out.output and "903334" in out.output


def test_import_of_a_newer_dump_from_the_command_line_is_one_line(dumps, tmp_path):
    dump = _copy_dump(dumps, "none", tmp_path)
    header = json.loads((dump / "dump.json").read_text())
    (dump / "dump.json").write_text(json.dumps({**header, "format_version": 99}))
    Butler.create(tmp_path / "target").close()
    out = CliRunner().invoke(main, ["import", str(tmp_path / "target"), str(dump), "--transfer", "none"])
    assert out.exit_code == 1 and "format version 99" in out.output and "Traceback" not in out.output
    assert os.path.exists(dump)
