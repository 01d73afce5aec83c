"""The syncs of a commit of one file: the file in the process's syncer thread, its directories meanwhile.

The two waits overlap; the syncer lives as long as its process, so no thread is started per
put (see `skybutler.datastore._durability`). Several files are still synced together.
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


def test_one_file_is_synced_in_the_syncer_thread_and_its_directories_in_the_calling_one(tmp_path, synced, started):
    root = str(tmp_path / "repo")
    store = Datastore(root, sync=True)
    store.commit(store.write_temporary("run/calexp/a.fits", lambda f: f.write(b"a")))  # starts the syncer if need be
    me = threading.get_ident()

    (file_sync,) = [(path, thread) for path, thread in synced if path.endswith("a.fits")]
    assert file_sync[1] != me
    assert [e for e in synced if e != file_sync] == [(f"{root}/run/calexp", me), (f"{root}/run", me), (root, me)]

    synced.clear()
    started.clear()
    store.commit(store.write_temporary("run/calexp/b.fits", lambda f: f.write(b"b")))

    assert sorted(synced) == sorted([(f"{root}/run/calexp/b.fits", file_sync[1]), (f"{root}/run/calexp", me)])
    assert started == []  # the same syncer: no thread per put


def test_a_failed_sync_of_the_file_fails_the_commit_and_removes_the_file(tmp_path, monkeypatch):
    root = tmp_path / "repo"
    store = Datastore(str(root), sync=True)
    store.commit(store.write_temporary("run/a.json", lambda f: f.write(b"{}")))  # the directory is known now
    pending = store.write_temporary("run/b.json", lambda f: f.write(b"{}"))
    real = _durability._sync

    def failing(path: str) -> None:
        if path.endswith("b.json"):
            raise OSError(errno.EIO, "Input/output error", path)
        real(path)

    monkeypatch.setattr(_durability, "_sync", failing)
    with pytest.raises(FileAccessError, match="run/b.json") as caught:
        store.commit(pending)
    store.abort(pending)

    assert caught.value.errno == errno.EIO
    assert not os.path.exists(root / "run" / "b.json")


def test_a_forked_process_syncs_with_a_syncer_of_its_own(tmp_path):
    root = str(tmp_path / "repo")
    store = Datastore(root, sync=True)
    store.commit(store.write_temporary("run/a.json", lambda f: f.write(b"{}")))  # the parent's syncer runs
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child: the parent's thread is not here
        code = 1
        try:
            store.commit(store.write_temporary("run/child.json", lambda f: f.write(b"{}")))
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert os.path.exists(f"{root}/run/child.json")
    store.commit(store.write_temporary("run/b.json", lambda f: f.write(b"{}")))  # and the parent's still works


def test_several_files_are_synced_together(tmp_path, synced, started):
    root = str(tmp_path / "repo")
    store = Datastore(root, sync=True)
    store.commit(store.write_temporary("run/first.json", lambda f: f.write(b"{}")))  # the directories are known now
    synced.clear()
    started.clear()

    store.commit_many([store.write_temporary(f"run/{i}.json", lambda f: f.write(b"{}")) for i in range(3)])

    assert sorted(path for path, _ in synced) == sorted([f"{root}/run"] + [f"{root}/run/{i}.json" for i in range(3)])
    assert len(started) == 3  # a thread each beside the calling one, up to MAX_SYNC_THREADS
