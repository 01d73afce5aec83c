"""SQLite's WAL is checkpointed by a background thread, not inside the writers' commits.

The writers' own (inline) checkpoint starts only past `INLINE_PAGES`; a few hundred puts
stay far below it. That their rows reach the database file at all shows that the
background thread checkpointed them: the file is read with ``immutable=1``, which makes
SQLite ignore the WAL.
"""

from __future__ import annotations

import multiprocessing
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from skybutler import Butler
from skybutler.registry._checkpoint import INLINE_PAGES

THREAD = "skybutler-wal-checkpoint"


def rows_in_database_file(root: Path) -> int:
    """Datasets in the registry's database file itself, ignoring its WAL."""
    conn = sqlite3.connect(f"file:{root / 'registry.sqlite3'}?immutable=1", uri=True)
    try:
        return int(conn.execute("SELECT count(*) FROM dataset").fetchone()[0])
    finally:
        conn.close()


def put_many_times(root: Path, n: int) -> None:
    butler = Butler(root, run="r")
    for i in range(n):
        butler.put({"i": i}, "meta", detector=i, instrument="HSC")
    butler.close()


def wait_for(condition, seconds: float = 20.0) -> bool:  # noqa: ANN001
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


@pytest.fixture
def root(tmp_path) -> Path:
    butler = Butler.create(tmp_path / "repo", run="r")
    butler.insert_dimension_records("instrument", [{"instrument": "HSC"}])
    butler.insert_dimension_records("detector", [{"instrument": "HSC", "detector": d} for d in range(400)])
    butler.register_dataset_type("meta", ["instrument", "detector"], "dict")
    butler.close()
    return tmp_path / "repo"


def test_puts_reach_the_database_file_through_the_background_checkpoints(root):
    assert INLINE_PAGES > 400 * 12  # no inline checkpoint would have copied them
    butler = Butler(root, run="r")
    for i in range(400):
        butler.put({"i": i}, "meta", detector=i, instrument="HSC")
    assert wait_for(lambda: rows_in_database_file(root) >= 300), rows_in_database_file(root)
    assert any(t.name == THREAD for t in threading.enumerate())
    butler.close()
    assert not any(t.name == THREAD and t.is_alive() for t in threading.enumerate())
    with Butler(root) as reader:
        assert len(list(reader.query_datasets("meta", collections=["r"]))) == 400


def test_a_forked_process_checkpoints_its_own_commits(root):
    butler = Butler(root, run="r")
    butler.put({"i": -1}, "meta", detector=399, instrument="HSC")  # the parent's engine is in use
    child = multiprocessing.get_context("fork").Process(target=put_many_times, args=(root, 300))
    child.start()
    child.join(120)
    assert child.exitcode == 0
    assert wait_for(lambda: rows_in_database_file(root) >= 200), rows_in_database_file(root)
    butler.close()


def test_a_fork_waits_for_a_checkpoint_under_way():
    """A process forked while the checkpointer is inside SQLite would copy SQLite's mutexes held: the fork waits."""
    import os

    from skybutler.registry import _checkpoint

    forked = threading.Event()

    def fork() -> None:
        pid = os.fork()
        if pid == 0:
            os._exit(0)
        os.waitpid(pid, 0)
        forked.set()

    with _checkpoint._IN_SQLITE:  # a checkpoint under way
        thread = threading.Thread(target=fork)
        thread.start()
        assert not forked.wait(0.5)  # the fork waits for it
    assert forked.wait(30)
    thread.join(30)
