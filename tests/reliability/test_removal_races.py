"""A dataset stored again while its run's removal is still deleting files keeps its file.

`remove_runs` deletes the rows, commits, then deletes the files (a run of 1,000,000 takes
tens of seconds). A put of the same dataset into the same run in between finds the old
file at its path with no row naming it, as a crashed write's leftover looks: replacing it
would put the new file where the removal deletes next, and the new dataset would have no
file. Such a put is refused with a clear error instead, and succeeds once the removal is
over; an interrupted removal's list blocks the same way until the removal is finished.
"""

from __future__ import annotations

import errno
import threading

import pytest

from skybutler import Butler, _butler_remove
from skybutler.errors import FileAccessError

DATASET_TYPE = "meta"


@pytest.fixture
def repo(tmp_path):
    root = str(tmp_path / "repo")
    butler = Butler.create(root, run="r")
    butler.register_dataset_type(DATASET_TYPE, [], "dict")
    butler.put({"version": 1}, DATASET_TYPE)
    butler.close()
    return root


def test_a_put_during_a_removal_is_refused_and_succeeds_after_it(repo, monkeypatch):
    committed, release = threading.Event(), threading.Event()
    really_delete = _butler_remove.delete_files

    def slow_delete(datastore, paths):  # noqa: ANN001, ANN202 - the removal's rows are gone, its files not yet
        committed.set()
        release.wait(timeout=30)
        return really_delete(datastore, paths)

    monkeypatch.setattr(_butler_remove, "delete_files", slow_delete)
    remover = Butler(repo, run="r")
    removal = threading.Thread(target=remover.remove_runs, args=(["r"],))
    removal.start()
    assert committed.wait(timeout=30)

    writer = Butler(repo, run="r")
    with pytest.raises(FileAccessError, match=r"still to be deleted by the removal of 'r'") as caught:
        writer.put({"version": 2}, DATASET_TYPE)
    assert caught.value.errno == errno.EBUSY
    assert "remove-runs r" in str(caught.value)  # how to finish one that was interrupted

    release.set()
    removal.join(timeout=30)
    ref = writer.put({"version": 2}, DATASET_TYPE)
    assert writer.get(ref) == {"version": 2}


def test_an_interrupted_removal_blocks_the_put_until_it_is_finished(repo, monkeypatch):
    def unreachable(datastore, paths):  # noqa: ANN001, ANN202
        raise FileAccessError(errno.EIO, "the store went away (injected)")

    monkeypatch.setattr(_butler_remove, "delete_files", unreachable)
    with pytest.raises(FileAccessError, match="went away"):
        Butler(repo, run="r").remove_runs(["r"])
    monkeypatch.undo()

    writer = Butler(repo, run="r")
    with pytest.raises(FileAccessError, match="still to be deleted"):
        writer.put({"version": 2}, DATASET_TYPE)
    assert writer.finish_removals() == {"r": 1}
    ref = writer.put({"version": 2}, DATASET_TYPE)
    assert writer.get(ref) == {"version": 2}
