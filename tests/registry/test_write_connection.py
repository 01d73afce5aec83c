"""Write transactions on SQLite: each thread keeps its connection, which outlives failures, forks and threads."""

from __future__ import annotations

import os
import sqlite3
import threading

import pytest

from skybutler import Butler, CollectionError, CollectionType, DatasetExistsError


@pytest.fixture
def butler(tmp_path):
    with Butler.create(tmp_path / "repo", run="r") as butler:
        butler.register_dataset_type("metadata", [], "dict")
        yield butler


def write_connection(butler):
    """The DB-API connection a write transaction of this thread runs on."""
    with butler.registry.transaction() as conn:
        return conn.connection.dbapi_connection


def in_thread(fn):
    out = []
    thread = threading.Thread(target=lambda: out.append(fn()))
    thread.start()
    thread.join()
    return out[0]


def test_a_thread_writes_on_one_connection_and_another_thread_on_its_own(butler):
    first = write_connection(butler)
    assert write_connection(butler) is first
    assert in_thread(lambda: write_connection(butler)) is not first


def test_the_connection_of_an_ended_thread_goes_back_to_the_pool_when_another_thread_writes(butler):
    pool = butler.registry.engine.pool
    write_connection(butler)
    in_thread(lambda: write_connection(butler))
    assert pool.checkedout() == 2  # this thread's and the ended thread's
    in_thread(lambda: write_connection(butler))
    assert pool.checkedout() == 2  # the ended one was given back before the new thread kept its own


def test_close_closes_every_kept_connection(tmp_path):
    butler = Butler.create(tmp_path / "repo", run="r")
    mine = write_connection(butler)
    theirs = in_thread(lambda: write_connection(butler))
    butler.close()
    for conn in (mine, theirs):
        with pytest.raises(sqlite3.ProgrammingError, match="closed"):
            conn.execute("SELECT 1")
    assert not (tmp_path / "repo" / "registry.sqlite3-wal").exists()  # the last connection checkpointed it


def test_a_failed_transaction_is_rolled_back_and_the_next_one_works(butler):
    with pytest.raises(RuntimeError, match="boom"), butler.registry.transaction():
        butler.registry.register_collection("lost")
        raise RuntimeError("boom")
    with pytest.raises(DatasetExistsError):
        butler.put({"a": 1}, "metadata")
        butler.put({"a": 2}, "metadata")  # the same (empty) data id in the same run
    butler.registry.register_collection("kept")
    names = {c["name"] for c in butler.registry.collections()}
    assert "kept" in names and "lost" not in names
    assert butler.get("metadata", {}) == {"a": 1}


def test_a_put_creates_its_run_and_refuses_a_collection_of_another_type(butler):
    ref = butler.put({"a": 1}, "metadata", run="new/run")
    assert butler.registry.collection_type("new/run") is CollectionType.RUN
    assert butler.get(ref) == {"a": 1}
    butler.registry.register_collection("tags", CollectionType.TAGGED)
    with pytest.raises(CollectionError, match="TAGGED"):
        butler.put({"a": 2}, "metadata", run="tags")
    assert butler.registry.collection_type("tags") is CollectionType.TAGGED


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_process_writes_on_its_own_connection_and_leaves_its_parents_alone(butler):
    parent = write_connection(butler)
    pid = os.fork()
    if pid == 0:  # the child: exit code 0 when its write committed on a connection of its own
        code = 1
        try:
            code = 0 if write_connection(butler) is not parent else 2
            butler.registry.register_collection("from_child")
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert write_connection(butler) is parent
    butler.registry.register_collection("from_parent")
    names = {c["name"] for c in butler.registry.collections()}
    assert {"from_child", "from_parent"} <= names


def test_every_commit_and_rollback_is_seen_by_the_engines_listeners(butler):
    import sqlalchemy as sa

    butler.registry.register_collection("other")
    writer = write_connection(butler)
    seen = []
    for event in ("begin", "commit", "rollback"):
        sa.event.listen(butler.registry.engine, event, lambda conn, event=event: seen.append(
            event) if conn.connection.dbapi_connection is writer else None)  # reads begin and roll back too

    def refuse(refs, records):
        raise RuntimeError("refused before the commit")

    butler.put({"a": 1}, "metadata")  # statements on the DB-API cursor only
    assert seen == ["begin", "commit"]
    seen.clear()
    with pytest.raises(RuntimeError, match="refused"):
        butler.put_many([({"a": 2}, "metadata", {})], run="other", before_commit=refuse)
    assert seen == ["begin", "rollback"]
    seen.clear()
    butler.registry.register_collection("c")  # through SQLAlchemy's execute
    assert seen == ["begin", "begin", "commit"]  # ours, then SQLAlchemy's record of the same transaction
    assert butler.get("metadata", {}) == {"a": 1}
    assert list(butler.query_datasets("metadata", collections=["other"])) == []


def test_threads_putting_at_once_each_commit_their_own_and_one_wins_a_race_for_the_same_dataset(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    with Butler.create(tmp_path / "repo", run="r") as butler:
        butler.register_dataset_type("numbered", ["instrument"], "dict")
        butler.insert_dimension_records("instrument", [{"instrument": f"I{i}"} for i in range(41)])
        barrier = threading.Barrier(4)

        def work(t):
            barrier.wait()
            for i in range(10):
                butler.put({"t": t, "i": i}, "numbered", instrument=f"I{t * 10 + i}")
            barrier.wait()
            try:  # all four at the same dataset
                butler.put({"t": t}, "numbered", instrument="I40")
                return "stored"
            except DatasetExistsError as exc:
                assert "already exists in run 'r'" in str(exc)
                return "refused"

        with ThreadPoolExecutor(4) as pool:
            outcomes = sorted(pool.map(work, range(4)))
        assert outcomes == ["refused", "refused", "refused", "stored"]
        stored = {ref.data_id["instrument"]: butler.get(ref) for ref in butler.query_datasets("numbered", collections=["r"])}
        assert len(stored) == 41
        assert all(stored[f"I{t * 10 + i}"] == {"t": t, "i": i} for t in range(4) for i in range(10))
