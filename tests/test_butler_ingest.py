"""`Butler.ingest` of many local files: each read once, checked, and recorded as it was checked."""

from __future__ import annotations

import hashlib

import pytest

from skybutler import FileDataset, FormatError

DATA_ID = {"instrument": "HSC", "visit": 903334, "detector": 1}


@pytest.fixture
def butler(make_butler):
    b = make_butler(run="run1", records=True)
    b.register_dataset_type("metadata", ["visit", "detector"], "dict")
    return b


def _files(tmp_path, texts: dict[str, str]) -> list[FileDataset]:
    out = []
    for detector, (name, text) in enumerate(texts.items()):
        path = tmp_path / name
        path.write_text(text)
        out.append(FileDataset(str(path), "metadata", {**DATA_ID, "detector": detector}))
    return out


@pytest.mark.parametrize("transfer", ["direct", "copy"])
def test_files_of_two_formats_in_one_ingest_each_keep_their_own(butler, tmp_path, transfer):
    files = _files(tmp_path, {"a.json": '{"a": 1}', "b.yaml": "b: 2\n", "c.JSON": '{"c": 3}'})

    refs = butler.ingest(files, transfer=transfer)

    records = butler.registry.get_files([r.id for r in refs])
    assert [records[r.id].format for r in refs] == ["json", "yaml", "json"]
    assert [butler.get(r) for r in refs] == [{"a": 1}, {"b": 2}, {"c": 3}]


def test_a_direct_ingest_records_the_size_and_checksum_of_the_bytes_it_checked(butler, tmp_path):
    files = _files(tmp_path, {f"f{d}.json": f'{{"d": {d}}}' for d in range(3)})
    calls = []

    refs = butler.ingest(files, transfer="direct", progress=lambda: calls.append(1))

    records = butler.registry.get_files([r.id for r in refs])
    for f, ref in zip(files, refs, strict=True):
        data = open(f.path, "rb").read()  # noqa: SIM115 - a test's one-line read
        record = records[ref.id]
        assert record.path == "file://" + f.path
        assert (record.size, record.checksum_algorithm) == (len(data), "md5")
        assert record.checksum == hashlib.md5(data, usedforsecurity=False).hexdigest()
    assert len(calls) == 3


@pytest.mark.parametrize("transfer", ["direct", "copy"])
def test_one_file_of_the_wrong_content_refuses_the_whole_ingest_and_names_it(butler, tmp_path, transfer):
    files = _files(tmp_path, {"good.json": '{"a": 1}', "list.json": "[1, 2]", "late.json": '{"b": 2}'})
    before = (sorted(butler.stored_files()), sum(1 for _ in butler.registry.all_files()))

    with pytest.raises(FormatError, match=r"Cannot ingest .*list\.json as metadata"):
        butler.ingest(files, transfer=transfer)

    assert (sorted(butler.stored_files()), sum(1 for _ in butler.registry.all_files())) == before


def test_checksums_off_records_the_size_only_and_still_checks_the_content(butler, tmp_path):
    (good,) = _files(tmp_path, {"good.json": '{"a": 1}'})
    (ref,) = butler.ingest([good], transfer="direct", checksum=False)
    record = butler.registry.get_files([ref.id])[ref.id]
    assert (record.size, record.checksum, record.checksum_algorithm) == (8, None, None)

    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(FormatError, match="bad.json"):
        butler.ingest([FileDataset(str(bad), "metadata", {**DATA_ID, "detector": 2})], transfer="direct",
                      checksum=False)


def test_an_ingest_and_a_put_many_leave_the_garbage_collector_running_whether_they_succeed_or_fail(butler, tmp_path):
    import gc

    from skybutler import DatasetExistsError

    files = _files(tmp_path, {"a.json": '{"a": 1}', "b.json": '{"b": 2}'})
    running = []
    butler.ingest(files, transfer="copy")  # pauses the collector for its bulk bookkeeping
    running.append(gc.isenabled())
    items = [({"n": d}, "metadata", {**DATA_ID, "detector": d}) for d in range(2)]
    butler.put_many(items, run="run2")
    running.append(gc.isenabled())
    with pytest.raises(DatasetExistsError):
        butler.put_many(items, run="run2")  # fails inside its insert
    running.append(gc.isenabled())

    assert running == [True, True, True]
