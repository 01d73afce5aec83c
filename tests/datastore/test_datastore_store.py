"""Conformance suite of `Datastore`: every test runs on every backend (see conftest.BACKENDS)."""

from __future__ import annotations

import errno
import hashlib
import os
from pathlib import Path

import pytest

from skybutler.datastore import Datastore, PendingFile, is_temporary
from skybutler.errors import ConfigError, DatasetExistsError, FileAccessError, ReadOnlyError

MD5_HELLO = "md5:" + hashlib.md5(b"hello").hexdigest()


def put(store: Datastore, path: str, data: bytes) -> PendingFile:
    pending = store.write_temporary(path, lambda f: f.write(data))
    store.commit(pending)
    return pending


def read(store: Datastore, path: str) -> bytes:
    with store.open(path) as f:
        return f.read()


def make_source(tmp_path: Path, data: bytes = b"raw bytes", name: str = "raw.fits") -> Path:
    source = tmp_path / "incoming" / name
    source.parent.mkdir(parents=True, exist_ok=True)
    source.write_bytes(data)
    return source


# -- writing -----------------------------------------------------------------------------


def test_a_committed_write_can_be_read_back_with_its_size_and_checksum(store):
    pending = put(store, "run/calexp/calexp_1.fits", b"hello")

    assert (pending.path, pending.size, pending.checksum, pending.transfer) == (
        "run/calexp/calexp_1.fits", 5, MD5_HELLO, "write"
    )
    assert read(store, "run/calexp/calexp_1.fits") == b"hello"
    assert store.exists("run/calexp/calexp_1.fits")
    assert store.size("run/calexp/calexp_1.fits") == 5
    assert store.checksum("run/calexp/calexp_1.fits") == MD5_HELLO
    assert list(store.walk()) == ["run/calexp/calexp_1.fits"]


def test_writes_are_streamed_in_many_chunks_and_hashed_as_they_go(store):
    chunks = [bytes([i]) * 1000 for i in range(50)]

    def writer(f):
        for chunk in chunks:
            f.write(chunk)

    pending = store.write_temporary("big.bin", writer)
    store.commit(pending)

    assert pending.size == 50_000
    assert pending.checksum == "md5:" + hashlib.md5(b"".join(chunks)).hexdigest()


def test_a_writer_that_seeks_back_and_patches_still_gets_the_right_checksum(store):
    def writer(f):
        f.write(b"HEADER??body")
        if f.seekable():
            f.seek(6)
            f.write(b"OK")
            f.seek(0, os.SEEK_END)
        else:
            pytest.skip("backend files are not seekable")

    pending = store.write_temporary("patched.bin", writer)
    store.commit(pending)

    assert read(store, "patched.bin") == b"HEADEROKbody"
    assert pending.checksum == "md5:" + hashlib.md5(b"HEADEROKbody").hexdigest()
    assert pending.size == 12


def test_a_local_write_goes_to_a_temporary_name_beside_the_final_one_until_commit(tmp_path):
    store = Datastore(str(tmp_path / "repo"))
    pending = store.write_temporary("run/a/file.txt", lambda f: f.write(b"x"))

    assert pending.temp_path != pending.path
    assert is_temporary(pending.temp_path)
    assert Path(pending.temp_path).parent == Path(pending.path).parent
    assert not store.exists("run/a/file.txt")
    assert list(store.walk()) == [pending.temp_path]

    store.commit(pending)
    assert list(store.walk()) == ["run/a/file.txt"]


def test_an_object_store_write_goes_straight_to_the_final_key():
    store = Datastore("memory://skybutler-test-object-store-write")
    pending = store.write_temporary("run/file.txt", lambda f: f.write(b"x"))
    try:
        assert pending.temp_path == pending.path
        store.commit(pending)  # nothing left to do
        assert read(store, "run/file.txt") == b"x"
    finally:
        store.remove(["run/file.txt"])


@pytest.mark.parametrize("algorithm", ["sha256", "blake2b", "sha1"])
def test_the_checksum_algorithm_is_configurable_and_named_in_the_checksum(root, storage_options, algorithm):
    store = Datastore(root, checksum=algorithm, storage_options=storage_options)
    pending = put(store, "a.txt", b"hello")

    expected = f"{algorithm}:{hashlib.new(algorithm, b'hello').hexdigest()}"
    assert pending.checksum == expected
    assert store.checksum("a.txt") == expected
    assert store.checksum("a.txt", algorithm="md5") == MD5_HELLO


def test_checksums_can_be_disabled(root, storage_options):
    store = Datastore(root, checksum="none", storage_options=storage_options)
    pending = put(store, "a.txt", b"hello")

    assert pending.checksum is None
    assert pending.size == 5
    with pytest.raises(ConfigError, match="disabled"):
        store.checksum("a.txt")


def test_an_unknown_checksum_algorithm_is_a_config_error(root):
    with pytest.raises(ConfigError, match="crc99"):
        Datastore(root, checksum="crc99")


# -- no overwrite ------------------------------------------------------------------------


def test_no_write_ever_overwrites_a_stored_file(store):
    put(store, "run/a.txt", b"first")

    with pytest.raises(DatasetExistsError, match="no put ever overwrites"):
        store.write_temporary("run/a.txt", lambda f: f.write(b"second"))

    assert read(store, "run/a.txt") == b"first"
    assert list(store.walk()) == ["run/a.txt"]


def test_of_two_racing_writes_to_one_path_exactly_one_is_stored(store):
    first = store.write_temporary("run/a.txt", lambda f: f.write(b"first"))
    try:
        second = store.write_temporary("run/a.txt", lambda f: f.write(b"second"))
    except DatasetExistsError:  # object stores: the exclusive create refuses at once
        second = None
    store.commit(first)
    if second is not None:  # local disk: the rename refuses; the loser aborts
        with pytest.raises(DatasetExistsError):
            store.commit(second)
        store.abort(second)

    assert read(store, "run/a.txt") == b"first"
    assert list(store.walk()) == ["run/a.txt"]


# -- leftovers of crashed writes ---------------------------------------------------------


def _dead_pid() -> int:
    """The id of a process that has exited (reuse within the test is vanishingly unlikely)."""
    import subprocess
    import sys

    return int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                              capture_output=True, text=True, check=True).stdout)


def _abandoned_temporary(store: Datastore, final: str, pid: int) -> str:
    """Write a temporary file for ``final`` as if process ``pid`` on this host had crashed mid-write."""
    import skybutler.datastore.store as store_module

    pending = store.write_temporary(final, lambda f: f.write(b"half"), replace=True)
    head, name = os.path.split(pending.temp_path)
    fake = name.replace(f"-{os.getpid()}-", f"-{pid}-")
    with store.open(pending.temp_path) as src:
        data = src.read()
    store.abort(pending)
    other = Datastore(store.root, storage_options=store._storage_options)
    with other._fs.open(other._full(f"{head}/{fake}"), "wb") as f:
        f.write(data)
    assert store_module.is_temporary(f"{head}/{fake}")
    return f"{head}/{fake}"


def test_temporary_names_carry_host_and_process_and_older_names_are_still_recognised():
    from skybutler.datastore._files import temporary_name

    name = temporary_name("run/a/calexp_1.fits")
    assert f"-{os.getpid()}-" in name and is_temporary(name)
    assert is_temporary("run/.x.fits.tmp-0123456789abcdef0123456789abcdef")  # written by 0.1
    assert len(os.path.basename(temporary_name("r/" + "n" * 300))) <= 255


def test_the_next_write_into_a_directory_removes_temporaries_of_dead_writers_only(store):
    dead = _abandoned_temporary(store, "run/a.txt", _dead_pid())
    live = _abandoned_temporary(store, "run/b.txt", os.getppid())  # a process that is alive

    fresh = Datastore(store.root, storage_options=store._storage_options)  # a new process's store
    put(fresh, "run/c.txt", b"c")

    assert sorted(store.walk()) == sorted([live, "run/c.txt"])
    assert dead not in set(store.walk())


def test_clean_temporaries_removes_abandoned_files_everywhere_and_old_ones_from_any_host(store, monkeypatch):
    import skybutler.datastore._files as files_module

    dead = _abandoned_temporary(store, "run/x/a.txt", _dead_pid())
    live = _abandoned_temporary(store, "run/y/b.txt", os.getppid())
    put(store, "run/y/kept.txt", b"k")

    assert store.clean_temporaries() == 1
    assert dead not in set(store.walk()) and live in set(store.walk())

    monkeypatch.setattr(files_module, "TEMPORARY_MAX_AGE", -1)  # everything is "old" now
    assert store.clean_temporaries(["run/y"]) == 1
    assert list(store.walk()) == ["run/y/kept.txt"]


def test_a_write_with_replace_replaces_a_leftover_only_when_committed(store):
    put(store, "run/a.txt", b"leftover of a crashed put")

    pending = store.write_temporary("run/a.txt", lambda f: f.write(b"new"), replace=True)
    assert pending.replaces and pending.temp_path != pending.path
    assert read(store, "run/a.txt") == b"leftover of a crashed put"  # untouched until commit

    store.commit(pending)
    assert read(store, "run/a.txt") == b"new"
    assert list(store.walk()) == ["run/a.txt"]


def test_an_aborted_replace_leaves_the_leftover_and_no_temporary(store):
    put(store, "run/a.txt", b"leftover")
    pending = store.write_temporary("run/a.txt", lambda f: f.write(b"new"), replace=True)
    store.abort(pending)

    assert read(store, "run/a.txt") == b"leftover"
    assert list(store.walk()) == ["run/a.txt"]


def test_an_object_store_abort_leaves_a_file_another_writer_replaced_meanwhile():
    store = Datastore(f"memory://skybutler-test-{os.urandom(8).hex()}")
    mine = store.write_temporary("run/a.txt", lambda f: f.write(b"mine, not committed"))
    theirs = store.write_temporary("run/a.txt", lambda f: f.write(b"theirs"), replace=True)
    store.commit(theirs)

    store.abort(mine)

    assert read(store, "run/a.txt") == b"theirs"


def test_a_removal_list_is_pending_until_forgotten_and_unreadable_lists_are_dropped(store):
    rel = store.record_removal(["run/a.txt", "run/b.txt"], label="run")
    assert [(label, paths) for _, label, paths in store.pending_removals()] == [("run", ["run/a.txt", "run/b.txt"])]

    store.forget_removal(rel)
    assert list(store.pending_removals()) == []
    assert list(store.walk()) == []


# -- abort and failures ------------------------------------------------------------------


def test_abort_leaves_nothing_and_may_be_repeated(store):
    pending = store.write_temporary("run/a.txt", lambda f: f.write(b"x"))

    store.abort(pending)
    store.abort(pending)

    assert list(store.walk()) == []
    assert not store.exists("run/a.txt")


def test_a_full_disk_during_a_write_raises_enospc_and_leaves_nothing(store):
    def writer(f):
        f.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(FileAccessError) as caught:
        store.write_temporary("run/a.txt", writer)

    assert caught.value.errno == errno.ENOSPC
    assert isinstance(caught.value, OSError)
    assert list(store.walk()) == []


def test_disk_full_after_simulates_a_disk_that_fills_mid_file(store):
    store.disk_full_after = 10

    put(store, "small.txt", b"0123456789")  # exactly fits
    with pytest.raises(FileAccessError) as caught:
        store.write_temporary("big.txt", lambda f: [f.write(b"01234") for _ in range(3)])

    assert caught.value.errno == errno.ENOSPC
    assert list(store.walk()) == ["small.txt"]


def test_any_error_from_the_writer_propagates_unchanged_and_leaves_nothing(store):
    class FormatterBugError(Exception):
        pass

    def writer(f):
        f.write(b"half a file")
        raise FormatterBugError("boom")

    with pytest.raises(FormatterBugError):
        store.write_temporary("run/a.txt", writer)

    assert list(store.walk()) == []


# -- paths that would escape the root ----------------------------------------------------

ESCAPES = ["../x", "a/../../x", "a/..", "/etc/passwd", "a\0b", "a\\..\\b", "", ".", "file:///etc/passwd"]


@pytest.mark.parametrize("path", ESCAPES)
def test_no_path_may_lie_outside_the_root(store, tmp_path, path):
    with pytest.raises(FileAccessError, match="outside the datastore root"):
        store.write_temporary(path, lambda f: f.write(b"x"))
    with pytest.raises(FileAccessError, match="outside the datastore root"):
        store.remove([path])
    with pytest.raises(FileAccessError, match="outside the datastore root"):
        store.ingest(str(make_source(tmp_path)), path, "copy")
    if not path.startswith("file://"):  # a full URL reads a direct-ingested file
        for read_op in (store.open, store.exists, store.size, store.checksum):
            with pytest.raises(FileAccessError, match="outside the datastore root"):
                read_op(path)
    assert list(store.walk()) == []


def test_redundant_separators_in_a_relative_path_are_normalised(store):
    pending = put(store, "run//a/./b.txt", b"x")

    assert pending.path == "run/a/b.txt"
    assert store.exists("run/a/b.txt")


# -- reading -----------------------------------------------------------------------------


def test_opening_a_missing_file_names_the_path_and_the_root(store):
    with pytest.raises(FileAccessError, match="run/missing.txt") as caught:
        store.open("run/missing.txt")

    assert store.root in str(caught.value)
    assert caught.value.errno == errno.ENOENT
    for op in (store.size, store.checksum):
        with pytest.raises(FileAccessError, match="run/missing.txt"):
            op("run/missing.txt")
    assert not store.exists("run/missing.txt")


def test_files_open_in_text_mode_and_for_reading_only(store):
    put(store, "log.txt", "héllo\n".encode())

    with store.open("log.txt", "r") as f:
        assert f.read() == "héllo\n"
    with pytest.raises(ReadOnlyError, match="'log.txt' is opened for reading only"):
        store.open("log.txt", "wb")


def test_two_readers_of_one_file_do_not_disturb_each_other(store):
    put(store, "a.txt", b"abcdef")

    with store.open("a.txt") as one, store.open("a.txt") as two:
        assert one.read(3) == b"abc"
        assert two.read() == b"abcdef"
        assert one.read() == b"def"


def test_url_is_the_full_location_of_a_file(store):
    put(store, "run/a.txt", b"x")

    url = store.url("run/a.txt")
    if store.is_local:
        assert os.path.isabs(url) and Path(url).read_bytes() == b"x"
    else:
        scheme = store.root.split("://", 1)[0]
        assert url.startswith(f"{scheme}://") and url.endswith("/run/a.txt")


# -- walk and remove ---------------------------------------------------------------------


def test_walk_lists_every_file_temporary_ones_included(store):
    put(store, "r/b/2.txt", b"2")
    put(store, "r/a/1.txt", b"1")
    put(store, "top.txt", b"t")
    left_over = store.write_temporary("r/a/crashed.txt", lambda f: f.write(b"?"))

    files = sorted(store.walk())

    assert set(files) >= {"r/a/1.txt", "r/b/2.txt", "top.txt", left_over.temp_path}
    assert [f for f in files if not is_temporary(f)] == sorted(
        ["r/a/1.txt", "r/b/2.txt", "top.txt"] + ([] if store.is_local else ["r/a/crashed.txt"])
    )


def test_is_temporary_recognises_only_temporary_names():
    assert is_temporary("r/.calexp_1.fits.tmp-" + "0" * 32)
    assert not is_temporary("r/calexp_1.fits")
    assert not is_temporary("r/.calexp_1.fits.tmp-notahexuuid")
    assert not is_temporary(".tmp-" + "0" * 32 + "/calexp_1.fits")


def test_remove_deletes_files_ignores_missing_ones_and_prunes_empty_directories(store):
    put(store, "r/a/1.txt", b"1")
    put(store, "r/b/2.txt", b"2")

    store.remove(["r/a/1.txt", "r/a/never-was.txt"])
    store.remove(["r/a/1.txt"])  # repeated: harmless

    assert list(store.walk()) == ["r/b/2.txt"]
    if store.is_local:
        assert not (Path(store.url("r/b/2.txt")).parents[1] / "a").exists()


# -- ingest ------------------------------------------------------------------------------


def test_ingest_copy_keeps_the_source(store, tmp_path):
    source = make_source(tmp_path, b"hello")

    pending = store.ingest(str(source), "raw/a.fits", "copy")
    store.commit(pending)

    assert (pending.path, pending.size, pending.checksum, pending.transfer) == (
        "raw/a.fits", 5, MD5_HELLO, "copy"
    )
    assert read(store, "raw/a.fits") == b"hello"
    assert source.read_bytes() == b"hello"


def test_ingest_move_removes_the_source_only_on_commit(store, tmp_path):
    source = make_source(tmp_path, b"hello")

    pending = store.ingest(str(source), "raw/a.fits", "move")
    assert source.exists()
    store.commit(pending)

    assert pending.transfer == "move"
    assert read(store, "raw/a.fits") == b"hello"
    assert not source.exists()


def test_an_aborted_move_keeps_the_source(store, tmp_path):
    source = make_source(tmp_path, b"hello")

    store.abort(store.ingest(str(source), "raw/a.fits", "move"))

    assert source.read_bytes() == b"hello"
    assert list(store.walk()) == []


@pytest.mark.parametrize("transfer", ["hardlink", "symlink"])
def test_ingest_by_link_works_on_local_disk_only(store, tmp_path, transfer):
    source = make_source(tmp_path, b"hello")

    if not store.is_local:
        with pytest.raises(FileAccessError, match="local disk"):
            store.ingest(str(source), "raw/a.fits", transfer)
        return
    pending = store.ingest(str(source), "raw/a.fits", transfer)
    store.commit(pending)

    stored = Path(store.url("raw/a.fits"))
    assert pending.transfer == transfer
    assert (pending.size, pending.checksum) == (5, MD5_HELLO)
    assert read(store, "raw/a.fits") == b"hello"
    assert source.exists()
    if transfer == "symlink":
        assert stored.is_symlink() and stored.resolve() == source.resolve()
    else:
        assert stored.stat().st_ino == source.stat().st_ino
    assert list(store.walk()) == ["raw/a.fits"]


def test_ingest_direct_leaves_the_file_where_it_is_and_records_its_url(store, tmp_path):
    source = make_source(tmp_path, b"hello")

    pending = store.ingest(str(source), "ignored", "direct")
    store.commit(pending)
    store.abort(pending)  # never deletes a file the datastore does not own

    assert pending.path.startswith("file://") and pending.path.endswith("/incoming/raw.fits")
    assert (pending.size, pending.checksum, pending.transfer) == (5, MD5_HELLO, "direct")
    assert source.read_bytes() == b"hello"
    assert list(store.walk()) == []
    assert read(store, pending.path) == b"hello"
    assert store.size(pending.path) == 5
    assert store.checksum(pending.path) == MD5_HELLO
    with pytest.raises(FileAccessError, match="outside the datastore root"):
        store.remove([pending.path])


def test_ingest_auto_links_or_copies_files_from_outside_the_root(store, tmp_path):
    source = make_source(tmp_path, b"hello")

    pending = store.ingest(str(source), "raw/a.fits", "auto")
    store.commit(pending)

    assert pending.transfer in ("hardlink", "copy")
    assert read(store, "raw/a.fits") == b"hello"
    assert source.exists()


def test_ingest_auto_keeps_a_file_already_under_the_root_in_place(store):
    put(store, "dropbox/a.fits", b"hello")

    pending = store.ingest(store.url("dropbox/a.fits"), "raw/a.fits", "auto")
    store.commit(pending)
    store.abort(pending)

    assert (pending.path, pending.transfer, pending.checksum) == ("dropbox/a.fits", "in_place", MD5_HELLO)
    assert list(store.walk()) == ["dropbox/a.fits"]


@pytest.mark.parametrize("transfer", ["copy", "move", "direct", "auto"])
def test_ingest_can_skip_the_checksum(store, tmp_path, transfer):
    pending = store.ingest(str(make_source(tmp_path, b"hello")), "raw/a.fits", transfer, checksum=False)

    assert pending.checksum is None
    assert pending.size == 5
    store.abort(pending)


@pytest.mark.parametrize("transfer", ["copy", "move", "hardlink", "symlink", "direct", "auto"])
def test_ingesting_a_missing_file_names_it(store, tmp_path, transfer):
    with pytest.raises(FileAccessError, match="nothing-here.fits"):
        store.ingest(str(tmp_path / "nothing-here.fits"), "raw/a.fits", transfer)


def test_ingesting_a_directory_is_refused(store, tmp_path):
    (tmp_path / "a_directory").mkdir()

    with pytest.raises(FileAccessError, match="a_directory"):
        store.ingest(str(tmp_path / "a_directory"), "raw/a.fits", "copy")


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_ingesting_an_unreadable_file_names_it(store, tmp_path):
    source = make_source(tmp_path)
    source.chmod(0)

    with pytest.raises(FileAccessError, match="raw.fits"):
        store.ingest(str(source), "raw/a.fits", "copy")


@pytest.mark.parametrize("transfer", ["copy", "move", "hardlink", "symlink", "auto"])
def test_ingest_never_overwrites_a_stored_file(store, tmp_path, transfer):
    put(store, "raw/a.fits", b"first")
    source = make_source(tmp_path, b"second")

    with pytest.raises((DatasetExistsError, FileAccessError)) as caught:
        store.ingest(str(source), "raw/a.fits", transfer)

    if store.is_local or transfer not in ("hardlink", "symlink"):
        assert isinstance(caught.value, DatasetExistsError)
    assert read(store, "raw/a.fits") == b"first"
    assert source.exists()


def test_an_unknown_transfer_mode_is_a_config_error(store, tmp_path):
    with pytest.raises(ConfigError, match="teleport"):
        store.ingest(str(make_source(tmp_path)), "raw/a.fits", "teleport")


def test_a_copy_that_hits_a_full_disk_leaves_nothing_and_keeps_the_source(store, tmp_path):
    source = make_source(tmp_path, b"x" * 100)
    store.disk_full_after = 10

    with pytest.raises(FileAccessError) as caught:
        store.ingest(str(source), "raw/a.fits", "copy")

    assert caught.value.errno == errno.ENOSPC
    assert list(store.walk()) == []
    assert source.exists()


def test_with_sync_a_written_file_and_its_directory_reach_the_device_before_commit_returns(tmp_path, monkeypatch):
    synced: list[int] = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd))[1])

    put(Datastore(str(tmp_path / "plain")), "run/a.txt", b"x")
    assert synced == []  # off by default: a killed process loses nothing the kernel accepted

    store = Datastore(str(tmp_path / "synced"), sync=True)
    put(store, "run/a.txt", b"x")
    assert len(synced) == 3  # the file's bytes, the directory holding its new name, the root holding new "run"
    put(store, "run/b.txt", b"x")
    assert len(synced) == 5  # "run" is on the device already: the file and its directory only


def test_one_url_test_for_every_layer():
    from skybutler.datastore import is_in_memory, is_url
    from skybutler.datastore.backends import scheme_of

    assert [scheme_of(u) for u in ("S3://b/k", "memory://x", "file:///d", "/data/a.fits", "raw/a.fits", "C:/x")] == [
        "s3", "memory", "file", None, None, None]
    assert is_url("s3://b/k") and not is_url("raw/a://b") and not is_url("/abs/path")
    assert is_in_memory("memory://repo") and not is_in_memory("s3://memory/x") and not is_in_memory("memory")


def test_a_store_knows_whether_it_is_in_memory(tmp_path):
    assert Datastore("memory://in-memory-check").in_memory
    assert not Datastore(str(tmp_path)).in_memory


def test_a_missing_extra_is_a_missing_dependency_error_with_the_install_line(monkeypatch):
    import sys

    from skybutler.datastore.backends import filesystem
    from skybutler.errors import MissingDependencyError

    monkeypatch.setitem(sys.modules, "s3fs", None)  # as if s3fs were not installed
    with pytest.raises(MissingDependencyError, match=r"pip install 'skybutler\[s3\]'") as info:
        filesystem("s3://bucket/repo")
    assert isinstance(info.value, ImportError) and isinstance(info.value, ConfigError)


def test_a_failed_write_of_known_bytes_names_the_file_and_leaves_nothing(tmp_path, monkeypatch):
    """A put of a small object hands its file's bytes to the store (`Formatter.to_bytes`): one ``os.write``."""
    from skybutler.datastore import _transactions

    store = Datastore(str(tmp_path / "repo"))
    store.commit(store.write_temporary("run/a/first.json", b'{"a": 1}\n'))  # the directory exists

    def full(fd, data):  # noqa: ANN001, ANN202
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(_transactions.os, "write", full)
    with pytest.raises(FileAccessError, match=r"Cannot write 'run/a/x.json' under .*No space left") as caught:
        store.write_temporary("run/a/x.json", b'{"x": 1}\n')
    monkeypatch.undo()

    assert caught.value.errno == errno.ENOSPC
    assert sorted(os.listdir(tmp_path / "repo" / "run" / "a")) == ["first.json"]  # no temporary left


def test_known_bytes_are_stored_with_their_size_and_checksum(tmp_path):
    store = Datastore(str(tmp_path / "repo"))
    data = b'{"x": 1}\n'
    pending = store.write_temporary("run/a/x.json", data)
    store.commit(pending)

    assert pending.size == len(data) and pending.checksum == f"md5:{hashlib.md5(data).hexdigest()}"
    with open(store.url("run/a/x.json"), "rb") as f:
        assert f.read() == data


def test_a_write_into_a_directory_a_removal_takes_away_meanwhile_makes_it_again(tmp_path, monkeypatch):
    """A removal deletes the directories it empties: one can go between a write's makedirs and its open."""
    from skybutler.datastore import _transactions

    store = Datastore(str(tmp_path / "repo"))
    really_makedirs = _transactions.os.makedirs
    taken: list[str] = []

    def makedirs_then_lose_it(path, exist_ok=False):  # noqa: ANN001, ANN202
        really_makedirs(path, exist_ok=exist_ok)  # (os.makedirs calls the patched name for the parents)
        if not taken and os.path.basename(path) in ("a", "b"):  # once: the removal's rmdir of the emptied directory
            taken.append(path)
            os.rmdir(path)

    monkeypatch.setattr(_transactions.os, "makedirs", makedirs_then_lose_it)
    for name, writer in (("a/x.json", b'{"x": 1}\n'), ("b/y.json", lambda f: f.write(b'{"y": 1}\n'))):
        taken.clear()
        store.commit(store.write_temporary(f"run/{name}", writer))
        assert taken and os.path.exists(store.url(f"run/{name}"))
