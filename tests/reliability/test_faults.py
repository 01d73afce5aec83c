"""Fault suite: an unreachable S3 endpoint, a dropped PostgreSQL connection, a full disk.

Every fault gives one clear line (`FileAccessError` naming the endpoint and the path,
`DatabaseConnectionError` naming the database) and leaves nothing half-done: the
repository dump is unchanged, or, where the fault struck after the commit, repeating the
command finishes it. Each test prints how many faults it injected.
"""

from __future__ import annotations

import errno
import socket
import uuid
from collections import Counter

import numpy as np
import pytest
import sqlalchemy as sa

from skybutler import Butler, DatabaseConnectionError, FileAccessError, FileDataset, Image
from skybutler.datastore import is_temporary
from support.records import insert_records

FAULTS: Counter[str] = Counter()  # what the suite injected, printed at the end


@pytest.fixture(scope="module", autouse=True)
def summary():
    yield
    total = sum(FAULTS.values())
    kinds = ", ".join(f"{kind} {n}" for kind, n in sorted(FAULTS.items()))
    print(f"\nfault suite: {total} faults injected ({kinds}); each gave one line and left nothing half-done")


DATA_IDS = [{"instrument": "HSC", "visit": v, "detector": d} for v in (903334, 903336) for d in range(4)]


def dump(butler: Butler) -> tuple[list[tuple[str, str, str]], list[str], list[str]]:
    """Registry rows (dataset, run, file) + collections + every file under the root: 'nothing changed' compares these."""
    rows = sorted((str(ref.id), ref.run, record.path) for record, ref in butler.registry.all_files())
    collections = sorted(c["name"] for c in butler.registry.collections())
    return rows, collections, sorted(butler.datastore.walk())


def check_whole(butler: Butler) -> None:
    """Every row has its readable file, every file has its row, no temporaries."""
    recorded = set()
    for record, ref in butler.registry.all_files():
        butler.get(ref)
        recorded.add(record.path)
    stored = set(butler.stored_files())
    assert not [p for p in stored if is_temporary(p)]
    assert stored == recorded


def one_line(exc: BaseException) -> str:
    text = str(exc)
    assert "\n" not in text and "Traceback" not in text, text
    return text


def items(tag: str) -> list[tuple[object, str, dict]]:
    return [({"tag": tag, "i": i}, "meta", d) for i, d in enumerate(DATA_IDS)]


# -- S3 ------------------------------------------------------------------------------------


class PrivateS3:
    """A moto S3 server of this test alone, which the test can stop and start again (state is kept)."""

    def __init__(self) -> None:
        from moto.server import ThreadedMotoServer

        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self._server_class = ThreadedMotoServer
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.server = None
        self.start()
        # One attempt and a short connect timeout: a down endpoint fails in well under a second.
        self.options = {"endpoint_url": self.endpoint, "key": "testing", "secret": "testing",
                        "client_kwargs": {"region_name": "us-east-1"},
                        "config_kwargs": {"retries": {"max_attempts": 1}, "connect_timeout": 1}}

    def start(self) -> None:
        self.server = self._server_class(ip_address="127.0.0.1", port=self.port, verbose=False)
        self.server.start()

    def stop(self, *, fault: bool = True) -> None:
        FAULTS["S3 endpoint down"] += fault
        self.server.stop()


@pytest.fixture
def s3():
    pytest.importorskip("moto.server")
    server = PrivateS3()
    yield server
    server.stop(fault=False)


@pytest.fixture
def s3_butler(s3, tmp_path):
    import boto3

    bucket = f"sb-{uuid.uuid4().hex[:16]}"
    boto3.client("s3", endpoint_url=s3.endpoint, aws_access_key_id="testing", aws_secret_access_key="testing",
                 region_name="us-east-1").create_bucket(Bucket=bucket)
    butler = Butler.create(tmp_path / "repo", datastore=f"s3://{bucket}/repo",
                           config={"datastore": {"storage_options": s3.options}})
    insert_records(butler)
    butler.register_dataset_type("meta", ("visit", "detector"), "dict")
    butler.put_many(items("before"), run="kept")
    yield butler
    butler.close()


def test_a_put_with_the_s3_endpoint_down_is_one_line_naming_endpoint_and_path_and_changes_nothing(s3, s3_butler):
    before = dump(s3_butler)
    s3.stop()
    try:
        with pytest.raises(FileAccessError) as caught:
            s3_butler.put({"a": 1}, "meta", DATA_IDS[0], run="new")
        with pytest.raises(FileAccessError) as read:
            s3_butler.get("meta", DATA_IDS[0], collections=["kept"])
    finally:
        s3.start()

    message = one_line(caught.value)
    assert s3.endpoint in message and "meta" in message and "Cannot write" in message
    assert s3.endpoint in one_line(read.value)
    assert dump(s3_butler) == before
    s3_butler.put({"a": 1}, "meta", DATA_IDS[0], run="new")  # the retry completes
    check_whole(s3_butler)


def test_s3_going_down_inside_the_put_transaction_rolls_back_and_the_retry_replaces_the_leftovers(s3, s3_butler):
    rows_before = dump(s3_butler)[:2]

    def endpoint_goes_down(refs, records):
        s3.stop()  # rows inserted, files already at their keys, manifest still to write

    try:
        with pytest.raises(FileAccessError) as caught:
            s3_butler.put_many(items("new"), run="new", before_commit=endpoint_goes_down)
    finally:
        s3.start()

    assert s3.endpoint in one_line(caught.value)
    assert dump(s3_butler)[:2] == rows_before  # no row; the objects it could not delete have no row
    s3_butler.put_many(items("new"), run="new")
    check_whole(s3_butler)
    assert len(list(s3_butler.query_datasets("meta", collections=["new"]))) == len(DATA_IDS)


def test_remove_runs_with_s3_down_changes_nothing(s3, s3_butler):
    before = dump(s3_butler)
    s3.stop()
    try:
        with pytest.raises(FileAccessError) as caught:
            s3_butler.remove_runs(["kept"])
    finally:
        s3.start()

    assert s3.endpoint in one_line(caught.value)
    assert dump(s3_butler) == before


def test_remove_runs_interrupted_by_s3_after_its_commit_is_finished_by_the_retry(s3, s3_butler):
    s3_butler.put_many(items("doomed"), run="doomed")
    kept = [row for row in dump(s3_butler)[0] if row[1] == "kept"]

    def endpoint_goes_down(conn):
        s3.stop()

    sa.event.listen(s3_butler.registry.engine, "commit", endpoint_goes_down, once=True)
    try:
        with pytest.raises(FileAccessError) as caught:
            s3_butler.remove_runs(["doomed"])
    finally:
        s3.start()
    assert s3.endpoint in one_line(caught.value)
    assert "doomed" not in dump(s3_butler)[1]  # committed: rows gone, files still there

    assert s3_butler.remove_runs(["doomed"]) == {"doomed": len(DATA_IDS)}

    assert dump(s3_butler)[0] == kept
    check_whole(s3_butler)
    assert list(s3_butler.datastore.pending_removals()) == []


def test_an_ingest_with_s3_down_leaves_no_run_and_no_file(s3, s3_butler, tmp_path):
    source = tmp_path / "in.json"
    source.write_text('{"x": 1}')
    before = dump(s3_butler)
    s3.stop()
    try:
        with pytest.raises(FileAccessError) as caught:
            s3_butler.ingest([FileDataset(str(source), "meta", DATA_IDS[0])], run="ingested", transfer="copy")
    finally:
        s3.start()

    assert s3.endpoint in one_line(caught.value)
    assert dump(s3_butler) == before


# -- PostgreSQL ------------------------------------------------------------------------------


@pytest.fixture
def pg_butler(pg_engine, pg_namespace, tmp_path):
    url = pg_engine.url.render_as_string(hide_password=False)
    butler = Butler.create(tmp_path / "repo", registry=url, namespace=pg_namespace)
    insert_records(butler)
    butler.register_dataset_type("meta", ("visit", "detector"), "dict")
    butler.put_many(items("before"), run="kept")
    yield butler
    butler.close()


def drop_connection_after(butler: Butler, pg_engine, prefix: str | tuple[str, ...]) -> list[int]:
    """Terminate the butler's server backend right after its next statement starting with ``prefix`` (or one of them)."""
    killed: list[int] = []

    def after(conn, cursor, statement, parameters, context, executemany):
        if killed or not statement.lstrip().upper().startswith(prefix):
            return
        pid = cursor.connection.info.backend_pid
        with pg_engine.connect() as other:
            other.execute(sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        killed.append(pid)
        FAULTS["PostgreSQL connection terminated"] += 1

    sa.event.listen(butler.registry.engine, "after_cursor_execute", after)
    return killed


def test_a_put_whose_postgresql_connection_drops_mid_transaction_stores_nothing_and_the_retry_does(
        pg_butler, pg_engine):
    before = dump(pg_butler)
    # A put's rows are one statement, ``WITH ... INSERT`` (`skybutler.registry._pg_insert`).
    killed = drop_connection_after(pg_butler, pg_engine, ("INSERT INTO", "WITH"))

    with pytest.raises(DatabaseConnectionError) as caught:
        pg_butler.put_many(items("new"), run="new")

    assert killed, "the fault was not injected"
    message = one_line(caught.value)
    assert "127.0.0.1" in message and "nothing of it was stored" in message
    # The drop lands just before COMMIT, after the run manifest was appended (it is written
    # before the commit so that it never misses a stored file): apart from that, nothing
    # changed, and what the manifest names is not stored.
    rows, collections, files = dump(pg_butler)
    assert (rows, collections) == before[:2]
    assert [f for f in files if not f.startswith(".skybutler/manifests/")] == \
        [f for f in before[2] if not f.startswith(".skybutler/manifests/")]
    named = [e["path"] for e in pg_butler.datastore.manifest_entries() if e["run"] == "new"]
    assert not any(pg_butler.datastore.exists(path) for path in named)
    pg_butler.put_many(items("new"), run="new")  # a fresh connection
    check_whole(pg_butler)


def test_a_removal_whose_postgresql_connection_drops_changes_nothing_and_the_retry_finishes(pg_butler, pg_engine):
    before, files_before = dump(pg_butler), sorted(pg_butler.stored_files())
    killed = drop_connection_after(pg_butler, pg_engine, "DELETE")

    with pytest.raises(DatabaseConnectionError) as caught:
        pg_butler.remove_runs(["kept"])

    assert killed
    assert "repeat the removal" in one_line(caught.value)
    assert dump(pg_butler)[:2] == before[:2]
    assert sorted(pg_butler.stored_files()) == files_before  # (its list of files to delete waits for the retry)
    assert pg_butler.remove_runs(["kept"]) == {"kept": len(DATA_IDS)}
    assert list(pg_butler.stored_files()) == []


# -- disk full -----------------------------------------------------------------------------


@pytest.fixture
def local_butler(tmp_path):
    butler = Butler.create(tmp_path / "repo")
    insert_records(butler)
    butler.register_dataset_type("img", ("visit", "detector"), "image")
    butler.register_dataset_type("meta", ("visit", "detector"), "dict")
    butler.put_many(items("before"), run="kept")
    yield butler
    butler.close()


def test_a_disk_that_fills_mid_put_many_leaves_nothing_and_the_retry_completes(local_butler):
    image = Image(np.zeros((64, 64), dtype="f4"), {})
    batch = [(image, "img", d) for d in DATA_IDS]
    before = dump(local_butler)
    local_butler.datastore.disk_full_after = 20_000  # one 64x64 float image fits, the FITS header pushes past
    FAULTS["disk full"] += 1

    with pytest.raises(FileAccessError) as caught:
        local_butler.put_many(batch, run="images")

    assert caught.value.errno == errno.ENOSPC
    assert "img" in one_line(caught.value)
    assert dump(local_butler) == before
    local_butler.datastore.disk_full_after = None
    local_butler.put_many(batch, run="images")
    check_whole(local_butler)


def test_a_disk_that_fills_mid_ingest_leaves_no_run_and_no_file(local_butler, tmp_path):
    sources = []
    for i, d in enumerate(DATA_IDS):
        source = tmp_path / f"in_{i}.json"
        source.write_text('{"payload": "%s"}' % ("x" * 1000))
        sources.append(FileDataset(str(source), "meta", d))
    before = dump(local_butler)
    local_butler.datastore.disk_full_after = 500
    FAULTS["disk full"] += 1

    with pytest.raises(FileAccessError) as caught:
        local_butler.ingest(sources, run="ingested", transfer="copy")

    assert caught.value.errno == errno.ENOSPC
    one_line(caught.value)
    assert dump(local_butler) == before
