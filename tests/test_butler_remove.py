"""Removing runs: files deleted by several threads after the commit, every file tried, the rest finished later."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from skybutler import Butler, _butler_remove
from skybutler.errors import DatasetExistsError, FileAccessError
from support.records import DETECTORS, VISITS, insert_records

TEMPLATE = "{run}/{dataset_type}/{instrument}/{visit:08d}/{dataset_type}_{visit:08d}_{detector:03d}"


@pytest.fixture
def butler(tmp_path, monkeypatch):
    # A few paths per thread task, so the 16 files of a run make several tasks.
    monkeypatch.setattr(_butler_remove, "_PER_TASK", 3)
    butler = Butler.create(tmp_path / "repo", config={"templates": {"dataset_types": {"meta": TEMPLATE}}})
    insert_records(butler, skymap=False)
    butler.register_dataset_type("meta", ["instrument", "visit", "detector"], "dict")
    for run in ("doomed", "kept"):
        butler.put_many([({"v": v, "d": d}, "meta", {"instrument": "HSC", "visit": v, "detector": d})
                         for v in VISITS for d in DETECTORS], run=run)
    yield butler
    butler.close()


def files_under(root, top):
    return sorted(os.path.relpath(os.path.join(d, f), root) for d, _, fs in os.walk(root / top) for f in fs)


def test_removing_a_run_deletes_every_file_and_emptied_directory_from_several_threads(butler, monkeypatch):
    threads = set()
    remove = butler.datastore.remove

    def remove_and_note(paths):
        threads.add(threading.current_thread().name)
        return remove(paths)

    monkeypatch.setattr(butler.datastore, "remove", remove_and_note)

    assert butler.remove_runs(["doomed"]) == {"doomed": len(VISITS) * len(DETECTORS)}

    assert not (Path(butler.root) / "doomed").exists()  # files, then visit, type and run directories
    assert len(files_under(Path(butler.root), "kept")) == len(VISITS) * len(DETECTORS)
    assert len(threads) > 1
    assert list(butler.datastore.pending_removals()) == []


def test_a_file_that_cannot_be_deleted_stops_no_other_thread_and_the_next_removal_finishes(butler):
    paths = sorted(r.path for r in butler.registry.get_files(
        [ref.id for ref in butler.query_datasets("meta", collections=["doomed"])]).values())
    blocked = paths[0]
    # A directory where a file should be: unlink fails even for root.
    (Path(butler.root) / blocked).unlink()
    (Path(butler.root) / blocked).mkdir()
    (Path(butler.root) / blocked / "inside").write_text("x")

    with pytest.raises(FileAccessError) as caught:
        butler.remove_runs(["doomed"])

    assert blocked in str(caught.value)
    assert list(butler.query_datasets("meta", collections=["kept"]))  # committed: only the run's rows went
    assert "doomed" not in [c["name"] for c in butler.registry.collections()]
    left = files_under(Path(butler.root), "doomed")
    # The task holding the blocked path stops there; every other task deleted all of its files.
    first_task = set(paths[:_butler_remove._PER_TASK])
    assert set(left) <= first_task | {f"{blocked}/inside"}
    assert [label for _, label, _ in butler.datastore.pending_removals()] == ["doomed"]

    (Path(butler.root) / blocked / "inside").unlink()
    (Path(butler.root) / blocked).rmdir()
    assert butler.remove_runs(["doomed"]) == {"doomed": len(VISITS) * len(DETECTORS)}

    assert not (Path(butler.root) / "doomed").exists()
    assert list(butler.datastore.pending_removals()) == []
    assert len(files_under(Path(butler.root), "kept")) == len(VISITS) * len(DETECTORS)


def test_a_put_that_finds_its_leftover_taken_by_another_writer_is_refused_as_an_existing_dataset(
        tmp_path, monkeypatch):
    """A leftover file at a put's path (no row names it) is replaced only if nobody stores the dataset meanwhile.

    Here another writer stores the same dataset between the put's leftover check and its
    transaction: the put is refused like any put of an existing dataset, and the other
    writer's file stays.
    """
    from skybutler import _butler_put
    from skybutler.datastore import is_temporary

    butler = Butler.create(tmp_path / "repo", run="r")
    butler.register_dataset_type("thing", [], "dict")
    butler.put({"who": "crashed writer"}, "thing", {})
    butler.remove_runs(["r"], purge=False)  # its file stays: a leftover no row names
    other = Butler(butler.root, run="r")
    check = _butler_put.check_leftover
    raced: list = []

    def check_then_lose_the_race(registry, datastore, ref, path, exc):
        check(registry, datastore, ref, path, exc)
        if not raced:  # the first put to get here; the other writer's own check passes straight through
            raced.append(None)
            raced[0] = other.put({"who": "other"}, "thing", {})

    monkeypatch.setattr(_butler_put, "check_leftover", check_then_lose_the_race)
    with pytest.raises(DatasetExistsError, match="already exists in run 'r'.*another writer meanwhile"):
        butler.put({"who": "me"}, "thing", {})
    (stored,) = butler.query_datasets("thing", collections=["r"])
    assert stored.id == raced[0].id and butler.get(stored) == {"who": "other"}
    assert not [p for p in butler.datastore.walk() if is_temporary(p)]
