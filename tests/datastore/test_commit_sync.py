"""Committing files with ``sync`` (``Datastore.commit_many`` of a durable put).

A durable put places its files after its registry rows are inserted and syncs them
before the registry commits: when ``commit_many`` returns they are on the device, and a
failed sync removes what was placed and says so.
"""

from __future__ import annotations

import errno
import os

import pytest

from skybutler import Butler
from skybutler.datastore import Datastore, _durability
from skybutler.errors import FileAccessError


def pending(store: Datastore, paths: list[str]) -> list:
    return [store.write_temporary(p, lambda f, p=p: f.write(p.encode())) for p in paths]


def test_files_are_in_place_and_synced_when_commit_many_returns(tmp_path, monkeypatch):
    synced: list[str] = []
    monkeypatch.setattr(_durability, "_sync", lambda path: synced.append(path))
    store = Datastore(str(tmp_path / "repo"), sync=True)
    files = pending(store, ["run/a/x.json", "run/a/y.json"])

    store.commit_many(files)

    assert all(os.path.exists(store.url(f.path)) for f in files)
    assert {store.url(f.path) for f in files} <= set(synced)
    assert store.url("run/a") in synced  # the directory holding their names


def test_a_failed_sync_removes_the_placed_files_and_raises(tmp_path, monkeypatch):
    def fail(path: str) -> None:
        raise OSError(errno.EIO, "Input/output error", path)

    monkeypatch.setattr(_durability, "_sync", fail)
    store = Datastore(str(tmp_path / "repo"), sync=True)
    files = pending(store, ["run/a/x.json", "run/b/y.json"])

    with pytest.raises(FileAccessError, match="syncing to the device failed") as caught:
        store.commit_many(files)

    assert caught.value.errno == errno.EIO
    assert not any(os.path.exists(store.url(f.path)) for f in files)


def test_without_sync_commit_many_places_the_files_and_syncs_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(_durability, "_sync", lambda path: pytest.fail(f"synced {path} without sync"))
    store = Datastore(str(tmp_path / "repo"))
    files = pending(store, ["run/a/x.json"])

    store.commit_many(files)

    assert os.path.exists(store.url("run/a/x.json"))


def test_a_durable_put_whose_sync_fails_stores_nothing(tmp_path, monkeypatch):
    butler = Butler.create(str(tmp_path / "repo"), config={"registry": {"sync_every_commit": True}}, run="r")
    butler.register_dataset_type("meta", [], "dict")

    def fail(path: str) -> None:
        raise OSError(errno.EIO, "Input/output error", path)

    monkeypatch.setattr(_durability, "_sync", fail)
    with pytest.raises(FileAccessError):
        butler.put_many([({"i": 1}, "meta", {})])
    monkeypatch.undo()

    assert list(butler.query_datasets("meta", collections=["r"])) == []
    assert list(butler.stored_files()) == []
    ref = butler.put({"i": 2}, "meta")  # the retry stores it
    assert butler.get(ref) == {"i": 2}
