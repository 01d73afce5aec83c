"""Write transactions on PostgreSQL run on a few connections kept between them, begun and committed on psycopg's.

`Database.transaction` keeps at most `_IDLE_WRITERS` connections between transactions
instead of checking one out of the pool each time, and commits on the DB-API connection
instead of through SQLAlchemy's transaction object. These tests say what that must keep:
puts committed and atomic (a failed COMMIT leaves no file and no row), a connection the
server ended or that idled too long replaced before it fails a put, a lost connection
during the COMMIT still seen as lost, threads and forked processes each on a connection
of their own, nothing left open by close.
"""

from __future__ import annotations

import os
import threading

import pytest
import sqlalchemy as sa

from skybutler.errors import DatabaseConnectionError
from skybutler.registry import _database as database_module

pytestmark = pytest.mark.parametrize("backend", ["postgresql-local"])

DATASET_TYPE = "metrics"


@pytest.fixture
def butler(make_butler):
    b = make_butler(records=True, run="r")
    b.register_dataset_type(DATASET_TYPE, ["instrument", "visit", "detector"], "dict")
    return b


@pytest.fixture
def data_ids(butler) -> list[dict]:
    visits = sorted(r["visit"] for r in butler.registry.fetch_dimension_records("visit"))
    detectors = sorted(r["detector"] for r in butler.registry.fetch_dimension_records("detector"))
    return [{"instrument": "HSC", "visit": v, "detector": d} for v in visits for d in detectors]


def kept_writers(butler) -> list[sa.Connection]:
    return [conn for _, _, conn in butler.registry.database._idle_writers]


def backend_pid(conn: sa.Connection) -> int:
    return conn.connection.dbapi_connection.info.backend_pid


def stored(butler, run: str = "r") -> tuple[list, list[str]]:
    """The run's datasets and every file of the datastore but the run manifests."""
    refs = sorted(str(r.id) for r in butler.query_datasets(DATASET_TYPE, collections=[run]))
    files = sorted(f for f in butler.datastore.walk() if not f.startswith(".skybutler/manifests/"))
    return refs, files


def terminate(pg_engine, pid: int) -> None:
    """End the server session ``pid``, and wait until its process has gone (its last words sent)."""
    with pg_engine.connect() as other:
        assert other.execute(sa.text("SELECT pg_terminate_backend(:pid, 10000)"), {"pid": pid}).scalar_one()


def test_puts_in_a_row_take_one_connection_from_the_pool_and_each_is_committed(butler, data_ids, pg_engine):
    butler.put_many([({"n": i}, DATASET_TYPE, di) for i, di in enumerate(data_ids)], run="warm")  # caches the records
    checkouts: list[int] = []
    sa.event.listen(butler.registry.engine, "checkout", lambda dbapi, record, proxy: checkouts.append(id(dbapi)))

    refs = [butler.put({"n": i}, DATASET_TYPE, di) for i, di in enumerate(data_ids[:5])]

    assert checkouts == []  # all on the connection the first put kept
    (writer,) = kept_writers(butler)
    assert writer.connection.dbapi_connection.pgconn.transaction_status == 0  # idle: nothing left open
    namespace = butler.config.registry.namespace
    with pg_engine.connect() as other:  # committed: seen by another session
        seen = other.execute(sa.text(f'SELECT count(*) FROM "{namespace}".dataset WHERE id = ANY(:ids)'),
                             {"ids": [r.id for r in refs]}).scalar_one()
    assert seen == 5


def test_a_kept_connection_the_server_ended_is_replaced_before_a_put_uses_it(butler, data_ids, pg_engine):
    butler.put({"n": 0}, DATASET_TYPE, data_ids[0])
    (old,) = kept_writers(butler)
    terminate(pg_engine, backend_pid(old))

    ref = butler.put({"n": 1}, DATASET_TYPE, data_ids[1])  # no error: the server's notice was read first

    assert butler.get(ref) == {"n": 1}
    assert old.closed
    (new,) = kept_writers(butler)
    assert new is not old


def test_a_kept_connection_idle_too_long_is_closed_not_used(butler, data_ids, monkeypatch):
    butler.put({"n": 0}, DATASET_TYPE, data_ids[0])
    (old,) = kept_writers(butler)
    monkeypatch.setattr(database_module, "_READER_IDLE_SECONDS", 0.0)

    ref = butler.put({"n": 1}, DATASET_TYPE, data_ids[1])

    assert butler.get(ref) == {"n": 1}
    assert old.closed
    (new,) = kept_writers(butler)
    assert new is not old


def test_a_failed_commit_leaves_no_file_and_no_row_and_the_next_put_works(butler, data_ids, pg_engine):
    namespace = butler.config.registry.namespace
    before = stored(butler)
    # A deferred constraint trigger: the server refuses the transaction at its COMMIT, after the file was placed.
    with pg_engine.begin() as conn:
        conn.execute(sa.text(f'CREATE FUNCTION "{namespace}".refuse() RETURNS trigger LANGUAGE plpgsql '
                             "AS $$ BEGIN RAISE EXCEPTION 'refused at commit'; END $$"))
        conn.execute(sa.text(f'CREATE CONSTRAINT TRIGGER refuse AFTER INSERT ON "{namespace}".file '
                             f'DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION "{namespace}".refuse()'))

    with pytest.raises(sa.exc.DBAPIError, match="refused at commit") as caught:
        butler.put({"n": 0}, DATASET_TYPE, data_ids[0])

    assert not caught.value.connection_invalidated
    assert stored(butler) == before
    with pg_engine.begin() as conn:
        conn.execute(sa.text(f'DROP TRIGGER refuse ON "{namespace}".file'))
    ref = butler.put({"n": 0}, DATASET_TYPE, data_ids[0])
    assert butler.get(ref) == {"n": 0}


def test_a_connection_lost_at_the_commit_is_seen_as_lost_and_stores_nothing(butler, data_ids, pg_engine):
    butler.put({"n": -1}, DATASET_TYPE, data_ids[-1])
    before = stored(butler)
    killed: list[int] = []

    def before_commit(conn) -> None:  # the engine's commit event: just before the COMMIT is sent
        if not killed:
            killed.append(backend_pid(conn))
            terminate(pg_engine, killed[0])

    sa.event.listen(butler.registry.engine, "commit", before_commit)
    with pytest.raises(DatabaseConnectionError, match="nothing of it was stored"):
        butler.put({"n": 0}, DATASET_TYPE, data_ids[0])
    sa.event.remove(butler.registry.engine, "commit", before_commit)

    assert killed
    assert stored(butler) == before
    ref = butler.put({"n": 0}, DATASET_TYPE, data_ids[0])
    assert butler.get(ref) == {"n": 0}
    assert backend_pid(kept_writers(butler)[0]) != killed[0]


def test_a_put_interrupted_while_waiting_for_the_server_stores_nothing_and_its_connection_is_not_kept(
        butler, data_ids, monkeypatch):
    import psycopg.generators

    butler.put({"n": -1}, DATASET_TYPE, data_ids[-1])
    (writer,) = kept_writers(butler)
    before = stored(butler)

    def interrupted(pgconn):
        raise KeyboardInterrupt
        yield  # a generator, as psycopg's

    with monkeypatch.context() as patch:
        patch.setattr(psycopg.generators, "fetch_many", interrupted)
        with pytest.raises(KeyboardInterrupt):
            butler.put({"n": 0}, DATASET_TYPE, data_ids[0])

    assert writer.closed and kept_writers(butler) == []  # its state unknown: closed, the server rolls back
    assert stored(butler) == before
    ref = butler.put({"n": 0}, DATASET_TYPE, data_ids[0])
    assert butler.get(ref) == {"n": 0}


def test_a_transaction_after_a_put_on_the_same_connection_is_still_one_transaction(butler, data_ids):
    butler.put({"n": 0}, DATASET_TYPE, data_ids[0])  # its BEGIN was sent with its statement
    (writer,) = kept_writers(butler)

    with pytest.raises(RuntimeError), butler.registry.transaction() as conn:
        assert conn is writer
        butler.registry.register_collection("half-done")
        butler.put({"n": 1}, DATASET_TYPE, data_ids[1], run="half-done-run")
        raise RuntimeError("fails before the commit")

    names = {c["name"] for c in butler.registry.collections()}
    assert "half-done" not in names and "half-done-run" not in names
    assert kept_writers(butler) == [writer]


def test_threads_put_at_once_each_on_its_own_connection_and_few_are_kept(butler, data_ids):
    errors: list[BaseException] = []
    start = threading.Barrier(6)

    def puts(k: int) -> None:
        try:
            start.wait()
            for i, di in enumerate(data_ids[:10]):
                butler.put({"n": i}, DATASET_TYPE, di, run=f"thread/{k}")
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=puts, args=(k,)) for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert errors == []
    assert all(len(stored(butler, f"thread/{k}")[0]) == 10 for k in range(6))
    kept = kept_writers(butler)
    assert 1 <= len(kept) <= database_module._IDLE_WRITERS
    butler.close()
    assert all(conn.closed for conn in kept)


def test_a_forked_process_puts_on_its_own_connection_and_leaves_its_parents_alone(butler, data_ids):
    butler.put({"n": 0}, DATASET_TYPE, data_ids[0])
    (parents,) = kept_writers(butler)
    parent_backend = backend_pid(parents)

    child = os.fork()
    if child == 0:  # pragma: no cover (the child's outcome is its exit code)
        ok = False
        try:
            ref = butler.put({"n": 1}, DATASET_TYPE, data_ids[1])
            (own,) = kept_writers(butler)
            ok = butler.get(ref) == {"n": 1} and backend_pid(own) != parent_backend
            ok = ok and parents in butler.registry.database._inherited  # held: never back in the pool
        finally:
            os._exit(0 if ok else 1)
    _, status = os.waitpid(child, 0)

    assert os.waitstatus_to_exitcode(status) == 0
    ref = butler.put({"n": 2}, DATASET_TYPE, data_ids[2])  # the parent's session was not ended by the child
    assert butler.get(ref) == {"n": 2}
    assert kept_writers(butler) == [parents]
    assert len(stored(butler)[0]) == 3


def test_a_connection_given_other_execution_options_in_a_transaction_is_not_kept(butler, data_ids):
    butler.put({"n": 0}, DATASET_TYPE, data_ids[0])
    (writer,) = kept_writers(butler)

    with butler.registry.transaction() as conn:
        assert conn is writer
        conn.execution_options(yield_per=10)  # as a streamed read inside a transaction does: the connection's own

    assert writer.closed and kept_writers(butler) == []
    ref = butler.put({"n": 1}, DATASET_TYPE, data_ids[1])
    assert butler.get(ref) == {"n": 1}
    assert "yield_per" not in kept_writers(butler)[0].get_execution_options()


def test_puts_after_the_sessions_prepared_statements_were_deallocated_work(butler, data_ids):
    butler.put({"n": 0}, DATASET_TYPE, data_ids[0])  # prepares its statement on the kept connection
    (writer,) = kept_writers(butler)
    # As psycopg does when it forgets its own prepared statements (after a ROLLBACK on a
    # connection where it prepared some): every statement of the session, ours too.
    dbapi = writer.connection.dbapi_connection
    dbapi.execute("DEALLOCATE ALL")
    dbapi.commit()

    ref = butler.put({"n": 1}, DATASET_TYPE, data_ids[1])
    dbapi.execute("DEALLOCATE ALL")
    dbapi.commit()
    with butler.registry.transaction():  # inside a caller's transaction: nothing of it is rolled back
        butler.registry.register_collection("tagged", __import__("skybutler").CollectionType.TAGGED)
        inner = butler.put({"n": 2}, DATASET_TYPE, data_ids[2])

    assert [butler.get(r) for r in (ref, inner)] == [{"n": 1}, {"n": 2}]
    assert "tagged" in {c["name"] for c in butler.registry.collections()}
    assert kept_writers(butler) == [writer]
