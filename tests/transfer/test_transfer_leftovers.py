"""Files a target holds at a transferred file's path that no row names: leftovers, replaced, never adopted."""

from __future__ import annotations

import os
import threading

import pytest

from skybutler import Butler, _butler_remove
from skybutler.errors import TransferError
from skybutler.transfer import RegistrySource, import_content

RUN = "src/run"


@pytest.fixture
def repos(tmp_path, standard_records):
    """A source and a target with the standard records, the source's dataset type registered; closed after."""
    source, target = Butler.create(tmp_path / "source", run=RUN), Butler.create(tmp_path / "target")
    for b in (source, target):
        standard_records.fill(b)
    source.register_dataset_type("calexp", ["instrument", "visit", "detector"], "dict")
    yield source, target
    source.close()
    target.close()


def put_calexps(source: Butler, n: int) -> list:
    return source.put_many([({"v": d}, "calexp", {"instrument": "HSC", "visit": 903334, "detector": d})
                            for d in range(n)])


def test_a_leftover_file_no_row_names_is_replaced_by_the_transferred_one(repos):
    source, target = repos
    refs = put_calexps(source, 3)
    paths = source.registry.get_files([r.id for r in refs])
    for ref in refs[:2]:  # as a copy killed mid-way by something other than import_content could leave
        leftover = os.path.join(target.root, paths[ref.id].path)
        os.makedirs(os.path.dirname(leftover), exist_ok=True)
        with open(leftover, "w") as f:
            f.write('{"v": "stale"}')

    report = import_content(target, RegistrySource(source, refs), transfer="copy")

    assert report.datasets_added == 3 and report.files_copied == 3 and report.conflicts == []
    assert [target.get(r)["v"] for r in refs] == [0, 1, 2]


def test_a_file_a_removal_still_has_to_delete_is_neither_adopted_nor_replaced(repos, monkeypatch):
    """The target removed the run and is still deleting its files: importing it again meanwhile would lose them.

    The files at the target's paths hold the same bytes as the source's, which an import
    would otherwise adopt; the removal then deletes them after the import committed.
    """
    source, target = repos
    refs = put_calexps(source, 2)
    import_content(target, RegistrySource(source, refs), transfer="copy")
    committed, release = threading.Event(), threading.Event()
    really_delete = _butler_remove.delete_files

    def slow_delete(datastore, paths):  # noqa: ANN001, ANN202 - rows gone, files still there
        committed.set()
        release.wait(timeout=30)
        return really_delete(datastore, paths)

    monkeypatch.setattr(_butler_remove, "delete_files", slow_delete)
    removal = threading.Thread(target=Butler(target.root).remove_runs, args=([RUN],))
    removal.start()
    assert committed.wait(timeout=30)
    with pytest.raises(TransferError, match=f"still to be deleted by the removal of '{RUN}'"):
        import_content(target, RegistrySource(source, refs), transfer="copy")
    release.set()
    removal.join(timeout=30)

    report = import_content(target, RegistrySource(source, refs), transfer="copy")
    assert report.datasets_added == 2 and [target.get(r)["v"] for r in refs] == [0, 1]
