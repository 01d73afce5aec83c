"""The syncs of a commit of one file: in the calling thread, the file before the directories holding its name.

The file's ``fsync`` commits the journal transaction that holds its rename too, so the
directory's that follows finds nothing left to commit; a thread per put cost CPU and saved
nothing (see `skybutler.datastore._durability`). Several files are still synced together.
"""

from __future__ import annotations

import _thread
import errno
import os
import threading

import pytest

from skybutler.datastore import Datastore, _durability
from skybutler.errors import FileAccessError


@pytest.fixture
def synced(monkeypatch) -> list[tuple[str, int]]:
    """Every path the datastore syncs, in order, with the thread that synced it."""
    events: list[tuple[str, int]] = []
    real = _durability._sync

    def record(path: str) -> None:
        real(path)
        events.append((path, threading.get_ident()))

    monkeypatch.setattr(_durability, "_sync", record)
    return events


@pytest.fixture
def started(monkeypatch) -> list[object]:
    """The functions of the threads the syncs started."""
    functions: list[object] = []
    real = _thread.start_new_thread

    def record(function, args):
        functions.append(function)
        return real(function, args)

    monkeypatch.setattr(_durability._thread, "start_new_thread", record)
    return functions


def test_one_file_is_synced_before_its_directory_and_each_new_directory_in_the_calling_thread(tmp_path, synced, started):
    root = str(tmp_path / "repo")
    store = Datastore(root, sync=True)

    store.commit(store.write_temporary("run/calexp/a.fits", lambda f: f.write(b"a")))

    assert synced == [(f"{root}/run/calexp/a.fits", threading.get_ident()),
                      (f"{root}/run/calexp", threading.get_ident()),
                      (f"{root}/run", threading.get_ident()),
                      (root, threading.get_ident())]
    assert started == []


def test_a_failed_sync_of_the_file_fails_the_commit_before_its_directory_is_synced(tmp_path, monkeypatch):
    root = tmp_path / "repo"
    store = Datastore(str(root), sync=True)
    store.commit(store.write_temporary("run/a.json", lambda f: f.write(b"{}")))  # the directory is known now
    pending = store.write_temporary("run/b.json", lambda f: f.write(b"{}"))
    asked: list[str] = []

    def failing(path: str) -> None:
        asked.append(path)
        raise OSError(errno.EIO, "Input/output error", path)

    monkeypatch.setattr(_durability, "_sync", failing)
    with pytest.raises(FileAccessError, match="run/b.json") as caught:
        store.commit(pending)
    store.abort(pending)

    assert caught.value.errno == errno.EIO
    assert asked == [str(root / "run" / "b.json")]
    assert not os.path.exists(root / "run" / "b.json")


def test_several_files_are_synced_together(tmp_path, synced, started):
    root = str(tmp_path / "repo")
    store = Datastore(root, sync=True)
    store.commit(store.write_temporary("run/first.json", lambda f: f.write(b"{}")))  # the directories are known now
    synced.clear()
    started.clear()

    store.commit_many([store.write_temporary(f"run/{i}.json", lambda f: f.write(b"{}")) for i in range(3)])

    assert sorted(path for path, _ in synced) == sorted([f"{root}/run"] + [f"{root}/run/{i}.json" for i in range(3)])
    assert len(started) == 3  # a thread each beside the calling one, up to MAX_SYNC_THREADS
