"""Durable and exclusive placement of files on local disk.

With ``sync`` (the repository's ``registry.sync_every_commit``), a committed put survives a
power loss: the file, the directory holding its name and every directory the put made are
synced before the registry commits. Checked structurally, by recording what the datastore's
own sync helper is asked to sync and when, never by timing. And a commit never replaces a
file: of two writers racing for one path, exactly one wins, on every way of renaming.
"""

from __future__ import annotations

import errno
import multiprocessing
import os
import posixpath
import re

import pytest
import sqlalchemy as sa

from skybutler import Butler
from skybutler.datastore import Datastore, _durability, is_temporary
from skybutler.errors import DatasetExistsError, FileAccessError


def put(store: Datastore, path: str, data: bytes) -> None:
    store.commit(store.write_temporary(path, lambda f: f.write(data)))


@pytest.fixture
def synced(monkeypatch) -> list[tuple[str, str]]:
    """Every path the datastore syncs, in order, as ``("sync", path)`` (other tests append their own events)."""
    events: list[tuple[str, str]] = []
    real = _durability._sync

    def record(path: str) -> None:
        # The file must already be at its final name: a sync of the temporary would not cover the rename.
        assert os.path.lexists(path), path
        real(path)
        events.append(("sync", path))

    monkeypatch.setattr(_durability, "_sync", record)
    return events


# -- what is synced ----------------------------------------------------------------------------


def test_without_sync_nothing_is_synced(tmp_path, synced):
    store = Datastore(str(tmp_path / "repo"))
    put(store, "run/a/x.json", b"{}")
    store.ingest(str(tmp_path / "repo" / "run" / "a" / "x.json"), "run/b/y.json", "copy")
    assert synced == []


def test_a_commit_syncs_the_file_its_directory_and_each_new_directory_in_its_parent(tmp_path, synced):
    root = str(tmp_path / "repo")
    store = Datastore(root, sync=True)

    put(store, "run/calexp/a.fits", b"a")
    assert sorted(p for _, p in synced) == sorted([
        f"{root}/run/calexp/a.fits",  # the bytes
        f"{root}/run/calexp",  # the file's name
        f"{root}/run",  # the name of the new directory calexp
        root,  # the name of the new directory run
    ])

    synced.clear()
    put(store, "run/calexp/b.fits", b"b")
    assert sorted(p for _, p in synced) == [f"{root}/run/calexp", f"{root}/run/calexp/b.fits"]

    synced.clear()
    put(store, "run/src/c.parq", b"c")  # a new directory under a known one: only its parent again
    assert sorted(p for _, p in synced) == [f"{root}/run", f"{root}/run/src", f"{root}/run/src/c.parq"]


def test_a_directory_removed_and_made_again_is_synced_in_its_parent_again(tmp_path, synced):
    root = str(tmp_path / "repo")
    store = Datastore(root, sync=True)
    put(store, "run/a.json", b"{}")
    store.remove(["run/a.json"])  # removes the empty directory "run" too
    synced.clear()

    put(store, "run/b.json", b"{}")

    assert sorted(p for _, p in synced) == [root, f"{root}/run", f"{root}/run/b.json"]


@pytest.mark.parametrize("transfer", ["copy", "hardlink", "symlink", "move"])
def test_an_ingested_file_is_synced_under_its_final_name(tmp_path, synced, transfer):
    source = tmp_path / "raw.fits"
    source.write_bytes(b"raw bytes written moments ago by someone else")
    root = str(tmp_path / "repo")
    store = Datastore(root, sync=True)
    put(store, "raw/other.fits", b"x")  # the directory is known: only the file and its name remain
    synced.clear()

    store.commit(store.ingest(str(source), "raw/a.fits", transfer))

    assert sorted(p for _, p in synced) == [f"{root}/raw", f"{root}/raw/a.fits"]


def test_a_failed_sync_fails_the_commit_and_takes_the_file_back(tmp_path, monkeypatch):
    root = tmp_path / "repo"
    store = Datastore(str(root), sync=True)
    pending = store.write_temporary("run/a.json", lambda f: f.write(b"{}"))

    def failing(path: str) -> None:
        if os.path.isdir(path):
            raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(_durability, "_sync", failing)
    with pytest.raises(FileAccessError, match="run/a.json") as caught:
        store.commit(pending)
    assert caught.value.errno == errno.EIO
    store.abort(pending)
    assert [p for p in store.walk()] == []  # neither the file nor its temporary


def test_commit_many_syncs_each_file_and_each_directory_once(tmp_path, synced):
    root = str(tmp_path / "repo")
    store = Datastore(root, sync=True)
    paths = [f"run/{kind}/{i}.json" for kind in ("calexp", "src") for i in range(5)]
    pendings = [store.write_temporary(p, lambda f: f.write(b"{}")) for p in paths]

    store.commit_many(pendings)

    assert sorted(p for _, p in synced) == sorted(
        [f"{root}/{p}" for p in paths] + [f"{root}/run/calexp", f"{root}/run/src", f"{root}/run", root])
    assert sorted(store.walk()) == sorted(paths)


def test_commit_many_places_all_files_or_none(tmp_path):
    store = Datastore(str(tmp_path / "repo"))
    pendings = [store.write_temporary(f"run/{i}.json", lambda f: f.write(b"mine")) for i in range(3)]
    (tmp_path / "repo" / "run" / "1.json").write_bytes(b"theirs")

    with pytest.raises(DatasetExistsError, match="run/1.json"):
        store.commit_many(pendings)
    for pending in pendings:
        store.abort(pending)

    assert list(store.walk()) == ["run/1.json"]
    assert store.open("run/1.json").read() == b"theirs"


def make_butler(root, *, sync: bool) -> Butler:
    butler = Butler.create(root, config={"registry": {"sync_every_commit": sync}}, run="r")
    butler.insert_dimension_records("instrument", [{"instrument": "HSC", "class_name": "HSC"}])
    butler.insert_dimension_records("detector", [{"instrument": "HSC", "detector": d, "name": str(d)} for d in (1, 2)])
    butler.register_dataset_type("metadata", ["detector"], "dict")
    butler.register_dataset_type("summary", ["detector"], "dict")
    return butler


def test_with_sync_every_commit_every_file_and_new_directory_is_synced_before_the_registry_commits(
        tmp_path, synced):
    butler = make_butler(tmp_path / "repo", sync=True)
    engine = butler.registry.engine
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL: the commit itself is synced
    sa.event.listen(engine, "commit", lambda conn: synced.append(("commit", "")))
    sa.event.listen(engine, "before_cursor_execute", lambda conn, cursor, statement, *args: synced.append(
        ("insert", "") if re.match(r'\s*INSERT\s+INTO\s+"?file\b', statement, re.IGNORECASE) else ("sql", "")))
    try:
        refs = butler.put_many([({"i": d}, t, {"instrument": "HSC", "detector": d})
                                for t in ("metadata", "summary") for d in (1, 2)])
        inserted = [what for what, _ in synced].index("insert")  # the file rows of the put
        commit = [what for what, _ in synced].index("commit", inserted)  # ... and the commit that made them last
        before_commit = {p for what, p in synced[:commit] if what == "sync"}
        files = {butler.uri(ref) for ref in refs}
        directories = {posixpath.dirname(f) for f in files}
        root = butler.datastore.root
        made = set()  # each directory's parent, up to the root: every directory here is new
        for d in directories:
            while d != root:
                d = posixpath.dirname(d)
                made.add(d)
        assert files <= before_commit
        assert directories <= before_commit
        assert made <= before_commit
        assert not any(is_temporary(p) for p in before_commit)
    finally:
        butler.close()


def test_without_sync_every_commit_a_put_syncs_no_file(tmp_path, synced):
    butler = make_butler(tmp_path / "repo", sync=False)
    try:
        butler.put({"i": 1}, "metadata", {"instrument": "HSC", "detector": 1})
    finally:
        butler.close()
    assert synced == []


# -- never replacing a file --------------------------------------------------------------------


@pytest.fixture(params=["renameat2", "link", "check"])
def rename_way(request, monkeypatch) -> str:
    """How the filesystem lets a file be renamed without replacing: each way a commit may take."""
    if request.param == "renameat2" and _durability._RENAMEAT2 is None:
        pytest.skip("no renameat2 in this C library")
    if request.param in ("link", "check"):  # a filesystem without RENAME_NOREPLACE
        monkeypatch.setattr(_durability, "renameat2_noreplace", lambda source, target: errno.EINVAL)
    if request.param == "check":  # ... and without hard links
        def no_link(*args, **kwargs):
            raise OSError(errno.EPERM, "Operation not permitted")
        monkeypatch.setattr(_durability.os, "link", no_link)
    return request.param


def test_a_commit_never_replaces_a_file_that_appeared_after_the_write(tmp_path, rename_way):
    store = Datastore(str(tmp_path / "repo"))
    pending = store.write_temporary("run/a.json", lambda f: f.write(b"mine"))
    (tmp_path / "repo" / "run" / "a.json").write_bytes(b"theirs")

    with pytest.raises(DatasetExistsError, match="run/a.json"):
        store.commit(pending)
    store.abort(pending)

    assert (tmp_path / "repo" / "run" / "a.json").read_bytes() == b"theirs"
    assert list(store.walk()) == ["run/a.json"]


def test_a_second_put_of_a_path_fails(tmp_path, rename_way):
    store = Datastore(str(tmp_path / "repo"))
    put(store, "run/a.json", b"first")
    with pytest.raises(DatasetExistsError, match="run/a.json"):
        put(store, "run/a.json", b"second")
    assert store.open("run/a.json").read() == b"first"


def test_a_filesystem_without_renameat2_is_asked_once(tmp_path, monkeypatch):
    asked = []
    monkeypatch.setattr(_durability, "renameat2_noreplace", lambda source, target: asked.append(target) or errno.EINVAL)
    store = Datastore(str(tmp_path / "repo"))
    put(store, "run/a.json", b"a")
    put(store, "run/b.json", b"b")
    assert len(asked) == 1
    assert store.open("run/b.json").read() == b"b"


def _racer(root: str, paths: list[str], data: bytes, barrier, results) -> None:
    """One of two writers: for each path, write, wait for the other, commit; reports what became of each."""
    store = Datastore(root)
    outcomes = []
    for path in paths:
        pending = store.write_temporary(path, lambda f: f.write(data))
        barrier.wait()
        try:
            store.commit(pending)
        except DatasetExistsError:
            store.abort(pending)
            outcomes.append("lost")
        else:
            outcomes.append("won")
    results.put((data, outcomes))


@pytest.mark.parametrize("way", ["renameat2", "link"])
def test_of_two_processes_committing_one_path_at_once_exactly_one_wins(tmp_path, monkeypatch, way):
    if way == "link":  # a filesystem without RENAME_NOREPLACE
        monkeypatch.setattr(_durability, "renameat2_noreplace", lambda source, target: errno.EINVAL)
    # Forked (the children keep the monkeypatch, and start in milliseconds); they only touch files.
    context = multiprocessing.get_context("fork")
    root = str(tmp_path / "repo")
    paths = [f"run/{i}.json" for i in range(5)]
    barrier, results = context.Barrier(2), context.Queue()
    writers = [context.Process(target=_racer, args=(root, paths, data, barrier, results))
               for data in (b"first writer", b"second writer")]
    for writer in writers:
        writer.start()
    outcomes = dict(results.get(timeout=60) for _ in writers)
    for writer in writers:
        writer.join(60)

    store = Datastore(root)
    for i, path in enumerate(paths):
        assert sorted(o[i] for o in outcomes.values()) == ["lost", "won"], path
        (winner,) = [data for data, o in outcomes.items() if o[i] == "won"]
        assert store.open(path).read() == winner
    assert sorted(store.walk()) == sorted(paths)  # the losers' temporaries are gone
