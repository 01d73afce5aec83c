"""One-statement reads on PostgreSQL (a get's file record, a find) run on a few kept autocommit connections.

`Database.read_one` keeps at most `_IDLE_READERS` connections between calls instead of
checking one out of the pool each time. These tests say what that must keep: the same
answers, reads inside a write transaction seeing its rows, a dropped connection replaced,
threads and forked processes each on a connection of their own, nothing left open by close.
"""

from __future__ import annotations

import os
import threading
import time

import pytest
import sqlalchemy as sa

from skybutler.registry import _database as database_module
from skybutler.registry import integrity_sql

pytestmark = pytest.mark.parametrize("backend", ["postgresql-local"])

DATA_IDS = [{"instrument": "HSC", "visit": v, "detector": d} for v in (903334, 903336) for d in range(4)]


@pytest.fixture
def butler(make_butler):
    b = make_butler(records=True, run="r")
    b.register_dataset_type("metrics", ["instrument", "visit", "detector"], "dict")
    return b


@pytest.fixture
def refs(butler):
    return butler.put_many([({"n": i}, "metrics", di) for i, di in enumerate(DATA_IDS)])


def checkouts(engine: sa.Engine) -> list[int]:
    seen: list[int] = []
    sa.event.listen(engine, "checkout", lambda dbapi, record, proxy: seen.append(id(dbapi)))
    return seen


def test_gets_and_finds_in_a_row_take_one_connection_from_the_pool(butler, refs):
    time.sleep(0.03)  # files placed within 20 ms of a get's query make it ask once more (`_butler_read`)
    seen = checkouts(butler.registry.engine)
    for _ in range(3):
        assert [butler.get(r) for r in refs] == [{"n": i} for i in range(len(refs))]
        assert [butler.find_dataset("metrics", di) for di in DATA_IDS] == refs

    assert len(seen) == 1
    assert len(butler.registry.database._idle_readers) == 1


def test_a_read_inside_a_write_transaction_sees_that_transactions_rows(butler, refs):
    from skybutler.model import DatasetRef, new_dataset_id
    from skybutler.registry import FileRecord

    registry = butler.registry
    ref = DatasetRef(new_dataset_id(), refs[0].dataset_type, refs[0].data_id, "later")
    with registry.transaction():
        registry.insert_datasets([ref], [FileRecord(ref.id, "later/a.json", 9, None, None, "json")], register_runs=True)
        inside = integrity_sql.files_for_read(registry, [ref.id])
        assert butler.find_dataset("metrics", refs[0].data_id, collections=["later"]) == ref
        assert integrity_sql.files_for_read(registry, [refs[0].id])  # and what was there before
    assert inside[ref.id][0].path == "later/a.json" and inside[ref.id][1] is None


def test_a_kept_connection_the_server_dropped_is_replaced(butler, refs, pg_engine):
    assert butler.get(refs[0]) == {"n": 0}
    (_, _, kept), = butler.registry.database._idle_readers
    pid = kept.connection.dbapi_connection.info.backend_pid
    with pg_engine.connect() as other:
        other.execute(sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})

    with pytest.raises(sa.exc.OperationalError, match="terminating connection"):  # as a pooled one fails: once
        butler.get(refs[1])
    assert butler.get(refs[1]) == {"n": 1}
    assert [b for _, _, b in butler.registry.database._idle_readers] != [kept]


def test_a_connection_idle_too_long_is_closed_not_used(butler, refs, monkeypatch):
    assert butler.get(refs[0]) == {"n": 0}
    (_, _, old), = butler.registry.database._idle_readers
    monkeypatch.setattr(database_module, "_READER_IDLE_SECONDS", 0.0)

    assert butler.get(refs[1]) == {"n": 1}
    assert old.closed
    (_, _, new), = butler.registry.database._idle_readers
    assert new is not old


def test_threads_read_at_once_each_on_its_own_connection_and_few_are_kept(butler, refs):
    errors: list[BaseException] = []
    start = threading.Barrier(6)

    def reads() -> None:
        try:
            start.wait()
            for _ in range(20):
                assert [butler.get(r) for r in refs] == [{"n": i} for i in range(len(refs))]
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=reads) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert errors == []
    kept = [conn for _, _, conn in butler.registry.database._idle_readers]
    assert 1 <= len(kept) <= database_module._IDLE_READERS
    butler.close()
    assert all(conn.closed for conn in kept)


def test_a_forked_process_reads_on_its_own_connection_and_leaves_its_parents_alone(butler, refs):
    assert butler.get(refs[0]) == {"n": 0}
    (_, _, parents), = butler.registry.database._idle_readers
    parent_backend = parents.connection.dbapi_connection.info.backend_pid

    child = os.fork()
    if child == 0:  # pragma: no cover (the child's outcome is its exit code)
        ok = False
        try:
            got = butler.get(refs[1])
            (_, _, own), = butler.registry.database._idle_readers
            ok = got == {"n": 1} and own.connection.dbapi_connection.info.backend_pid != parent_backend
            ok = ok and butler.registry.database._inherited == [parents]  # held: never back in the pool
        finally:
            os._exit(0 if ok else 1)
    _, status = os.waitpid(child, 0)

    assert os.waitstatus_to_exitcode(status) == 0
    assert butler.get(refs[2]) == {"n": 2}  # the parent's session was not ended by the child
    (_, _, still), = butler.registry.database._idle_readers
    assert still is parents


def test_a_read_that_failed_keeps_its_connection_unless_it_left_it_busy(butler, refs):
    from skybutler import CollectionError

    database = butler.registry.database
    assert butler.get(refs[0]) == {"n": 0}
    (_, _, kept), = database._idle_readers
    with pytest.raises(CollectionError):
        butler.find_dataset("metrics", DATA_IDS[0], collections=["nowhere"])
    assert [c for _, _, c in database._idle_readers] == [kept]  # the error came after its statements

    with pytest.raises(KeyboardInterrupt), database.read_one() as conn:
        conn.connection.dbapi_connection.pgconn.send_query(b"SELECT pg_sleep(0.01)")  # a result never read
        raise KeyboardInterrupt
    assert conn is kept and kept.closed and database._idle_readers == []
    assert butler.get(refs[1]) == {"n": 1}
