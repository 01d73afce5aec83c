"""Where ingested files came from travels with them: a transfer, and a dump exported and imported,
keep each ingested dataset's origin (original path, plugin, header metadata); put datasets have none."""

from __future__ import annotations

import json

import pytest

from skybutler.butler import FileDataset
from skybutler.ops.ingest import origins_of
from skybutler.transfer import RegistrySource, import_content
from skybutler.transfer.dump import export_dump, import_dump

RUN = "src/raw"


@pytest.fixture
def source(make_butler, tmp_path):
    """A repository with 3 ingested datasets (with plugin and metadata) and 1 put dataset, all in RUN."""
    butler = make_butler(records=True)
    butler.register_dataset_type("calexp", ["instrument", "visit", "detector"], "dict")
    files = []
    for d in range(3):
        path = tmp_path / f"incoming/calexp_{d}.json"
        path.parent.mkdir(exist_ok=True)
        path.write_text(json.dumps({"detector": d}))
        files.append(FileDataset(str(path), "calexp", {"instrument": "HSC", "visit": 903334, "detector": d},
                                 plugin="test-plugin", metadata={"airmass": 1.2 + d / 10, "object": f"field {d}"}))
    butler.ingest(files, run=RUN, transfer="copy")
    butler.put({"detector": 3}, "calexp", {"instrument": "HSC", "visit": 903334, "detector": 3}, run=RUN)
    return butler


def origins_by_data_id(butler) -> dict[int, tuple]:
    """Each dataset of RUN's origin as (original path, plugin, metadata), by detector (None: no origin)."""
    refs = list(butler.query_datasets("calexp", collections=[RUN]))
    origins = origins_of(butler, refs)
    out = {}
    for ref in refs:
        o = origins.get(ref.id)
        out[ref.data_id["detector"]] = None if o is None else (o.original_path, o.plugin, dict(o.metadata))
    return out


def test_the_source_has_an_origin_for_each_ingested_dataset(source, tmp_path):
    got = origins_by_data_id(source)
    assert got[3] is None
    assert got[1] == (str(tmp_path / "incoming/calexp_1.json"), "test-plugin", {"airmass": 1.3, "object": "field 1"})


@pytest.mark.parametrize("new_ids", [False, True])
def test_a_transfer_keeps_where_ingested_files_came_from(source, make_butler, new_ids):
    target = make_butler(records=True)
    refs = list(source.query_datasets("calexp", collections=[RUN]))
    import_content(target, RegistrySource(source, refs), transfer="copy", new_ids=new_ids)
    assert origins_by_data_id(target) == origins_by_data_id(source)
    target_ids = {r.id for r in target.query_datasets("calexp", collections=[RUN])}
    assert (target_ids == {r.id for r in refs}) is not new_ids


def test_a_dump_keeps_where_ingested_files_came_from(source, make_butler, tmp_path):
    export_dump(source, tmp_path / "dump", ["calexp"], collections=[RUN], files=True)
    lines = [json.loads(line) for line in (tmp_path / "dump/datasets.jsonl").read_text().splitlines()]
    assert sorted("origin" in line for line in lines) == [False, True, True, True]
    target = make_butler(records=True)
    import_dump(target, tmp_path / "dump")
    assert origins_by_data_id(target) == origins_by_data_id(source)


def test_a_repeated_transfer_adds_no_second_origin(source, make_butler):
    target = make_butler(records=True)
    refs = list(source.query_datasets("calexp", collections=[RUN]))
    import_content(target, RegistrySource(source, refs), transfer="copy")
    report = import_content(target, RegistrySource(source, refs), transfer="copy")
    assert report.datasets_skipped == 4
    assert origins_by_data_id(target) == origins_by_data_id(source)
