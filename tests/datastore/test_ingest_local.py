"""Local files brought in by ingest: read once (`scan_local`), copied in reads of their own size."""

from __future__ import annotations

import errno
import hashlib
import io
import os

import pytest

from skybutler.datastore import Datastore, _ingest, scan_local
from skybutler.errors import FileAccessError, FormatError


def _md5(data: bytes) -> str:
    return "md5:" + hashlib.md5(data, usedforsecurity=False).hexdigest()


def test_a_direct_file_is_read_once_for_its_check_and_its_checksum(tmp_path):
    path = tmp_path / "raw.json"
    path.write_bytes(b'{"a": 1}')
    seen = []

    pending = scan_local(str(path), "md5", lambda f: seen.append(f.read()))

    assert seen == [b'{"a": 1}']
    assert (pending.path, pending.temp_path) == ("file://" + str(path), "file://" + str(path))
    assert (pending.size, pending.checksum, pending.transfer) == (8, _md5(b'{"a": 1}'), "direct")


def test_a_file_larger_than_a_small_one_is_checked_open_and_hashed_in_chunks(tmp_path, monkeypatch):
    monkeypatch.setattr(_ingest, "SMALL_FILE", 10)
    data = os.urandom(5000)
    path = tmp_path / "big.bin"
    path.write_bytes(data)
    heads = []

    def check(f: io.BufferedReader) -> None:
        heads.append(f.read(4))
        f.seek(100)  # a check may move around: the checksum still covers the whole file

    pending = scan_local(str(path), "md5", check)

    assert heads == [data[:4]]
    assert (pending.size, pending.checksum) == (5000, _md5(data))


def test_without_checksum_or_check_only_the_size_is_taken(tmp_path):
    path = tmp_path / "raw.json"
    path.write_bytes(b"12345")

    assert (scan_local(str(path), None).size, scan_local(str(path), None).checksum) == (5, None)


def test_what_the_check_raises_passes_through_and_closes_the_file(tmp_path):
    path = tmp_path / "raw.json"
    path.write_bytes(b"[]")

    def refuse(_f: io.BytesIO) -> None:
        raise FormatError("not a dict")

    before = len(os.listdir("/proc/self/fd")) if os.path.isdir("/proc/self/fd") else None
    with pytest.raises(FormatError, match="not a dict"):
        scan_local(str(path), "md5", refuse)
    if before is not None:
        assert len(os.listdir("/proc/self/fd")) == before


def test_a_missing_file_a_directory_and_a_fifo_are_refused_without_blocking(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)  # opening it for reading would wait for a writer without O_NONBLOCK
    for path in (tmp_path / "nope.json", tmp_path, fifo):
        with pytest.raises(FileAccessError, match="no such file") as info:
            scan_local(str(path), "md5", lambda f: None)
        assert info.value.errno == errno.ENOENT


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root can read anything")
def test_an_unreadable_file_is_named(tmp_path):
    path = tmp_path / "secret.json"
    path.write_bytes(b"{}")
    path.chmod(0)
    with pytest.raises(FileAccessError, match="secret.json.*not readable") as info:
        scan_local(str(path), "md5")
    assert info.value.errno == errno.EACCES


@pytest.mark.parametrize("size", [0, 1, 4096, (1 << 20) + 3])
def test_a_local_copy_holds_the_same_bytes_and_checksum(tmp_path, size):
    data = os.urandom(size)
    source = tmp_path / "src.bin"
    source.write_bytes(data)
    store = Datastore(str(tmp_path / "root"))

    pending = store.ingest(str(source), "raw/a.bin", "copy")
    store.commit(pending)

    assert (tmp_path / "root" / "raw" / "a.bin").read_bytes() == data
    assert (pending.size, pending.checksum, pending.transfer) == (size, _md5(data), "copy")


def test_a_checksum_of_a_guaranteed_algorithm_matches_hashlib(tmp_path):
    path = tmp_path / "raw.bin"
    path.write_bytes(b"hello")
    for algorithm in ("md5", "sha256", "blake2b"):
        expected = hashlib.new(algorithm, b"hello").hexdigest()
        assert scan_local(str(path), algorithm).checksum == f"{algorithm}:{expected}"
