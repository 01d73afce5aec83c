"""A put that fails after placing its file never deletes the file of a writer that stored the same dataset.

Writer A places its file once its rows are inserted, then fails before its COMMIT (here
its run manifest cannot be written). Writer B, putting the same dataset meanwhile,
finds A's file at the final path with no committed row naming it: to B that is a
crashed write's leftover, which it replaces once its own insert has succeeded. B's
insert waits for A's transaction. A must remove its file while its transaction still
keeps B out: removed after A's rollback, the removal can hit the file B put in its
place and B commits a dataset whose file is gone.

The removal is held up (`hold_removal`) until B has finished or has waited a while, so a
removal made after the rollback always comes too late for B's file, as it can by chance.
"""

from __future__ import annotations

import errno
import os
import threading
import time
from pathlib import Path

import pytest

from skybutler import Butler
from support.holding import in_thread
from support.services import PG_URL

DATASET_TYPE = "meta"


def make_repository(root: Path, namespace: str | None) -> None:
    registry = {"registry": PG_URL, "namespace": namespace} if namespace else {}
    butler = Butler.create(str(root), run="r", **registry)
    butler.register_dataset_type(DATASET_TYPE, [], "dict")
    butler.close()


def temporaries(directory: Path) -> list[str]:
    return [n for n in os.listdir(directory) if n.startswith(".") and ".tmp-" in n] if directory.exists() else []


def writer_b(b: Butler) -> tuple[threading.Thread, dict]:
    """The thread that puts B's dataset (not started), and the dict it leaves B's ref or error in."""
    return in_thread(lambda: b.put({"writer": "B"}, DATASET_TYPE), "ref")


def race(root: Path) -> tuple[Butler, dict, BaseException | None]:
    """A's failing put with B's put of the same dataset in between; returns (B's butler, B's outcome, A's error)."""
    a, b = Butler(str(root), run="r"), Butler(str(root), run="r")
    thread, outcome = writer_b(b)

    def fail_after_b_started(run: str, entries: object) -> str:
        (entry,) = list(entries)  # type: ignore[call-overload]
        directory = root / os.path.dirname(entry["path"])
        thread.start()
        deadline = time.monotonic() + 10
        while not temporaries(directory) and thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.01)  # B found A's file, took it for a leftover and wrote its own beside it
        time.sleep(0.3)  # B goes on to its insert, which waits for A's transaction
        raise OSError(errno.ENOSPC, "No space left on device (injected)", run)

    really_remove = a.datastore.remove

    def hold_removal(paths):  # noqa: ANN001, ANN202
        thread.join(timeout=1.5)
        return really_remove(paths)

    a.datastore.append_manifest = fail_after_b_started  # type: ignore[method-assign]
    a.datastore.remove = hold_removal  # type: ignore[method-assign]
    error = None
    try:
        a.put({"writer": "A"}, DATASET_TYPE)
    except BaseException as err:
        error = err
    thread.join(timeout=30)
    a.close()
    return b, outcome, error


def check(b: Butler, outcome: dict) -> None:
    """B stored its dataset, and its file is there."""
    assert "error" not in outcome, outcome.get("error")
    (stored,) = b.query_datasets(DATASET_TYPE, collections=["r"])
    assert stored.id == outcome["ref"].id
    assert b.get(stored) == {"writer": "B"}  # B's file is there
    b.close()


def test_on_sqlite(tmp_path):
    root = tmp_path / "repo"
    make_repository(root, None)
    b, outcome, error = race(root)
    assert "No space left" in str(error)
    check(b, outcome)


@pytest.mark.postgresql
def test_on_postgresql(tmp_path, pg_namespace):
    root = tmp_path / "repo"
    make_repository(root, pg_namespace)
    b, outcome, error = race(root)
    assert "No space left" in str(error)
    check(b, outcome)


@pytest.mark.postgresql
@pytest.mark.s3
def test_on_an_object_store_a_clashing_put_leaves_the_object_the_winner_stored(tmp_path, pg_namespace, s3_bucket):
    """On S3 a put's bytes go to the final key before its insert; B replaces them and commits first.

    A's insert then clashes. Its clean-up must leave the object B stored, though its bytes
    are exactly A's (the same dataset, put twice with the same content: a retry).
    """
    bucket, options = s3_bucket
    root = tmp_path / "repo"
    Butler.create(str(root), run="r", registry=PG_URL, namespace=pg_namespace, datastore=f"s3://{bucket}/repo",
                  config={"datastore": {"storage_options": options}}).close()
    a, b = Butler(str(root), run="r"), Butler(str(root), run="r")
    a.register_dataset_type(DATASET_TYPE, [], "dict")
    really_insert = a.registry.insert_datasets

    def b_first(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        b.put({"writer": "same"}, DATASET_TYPE)  # finds A's object, no row naming it: replaces it
        return really_insert(*args, **kwargs)

    a.registry.insert_datasets = b_first  # type: ignore[method-assign]
    with pytest.raises(Exception, match="already exists"):
        a.put({"writer": "same"}, DATASET_TYPE)

    (stored,) = b.query_datasets(DATASET_TYPE, collections=["r"])
    assert b.get(stored) == {"writer": "same"}  # the object is still there
    a.close()
    b.close()


def test_a_failed_commit_leaves_the_file_another_writer_put_in_place_of_its_own(tmp_path):
    """A's COMMIT fails after its file is placed: the rollback lets B's insert through, B replaces the file.

    The removal that follows a failed COMMIT comes after the rollback by force: it deletes
    the path only while it still holds the file A wrote. Here it is held up until B has
    committed, as the scheduler can do by chance.
    """
    import sqlalchemy as sa

    root = tmp_path / "repo"
    make_repository(root, None)
    a, b = Butler(str(root), run="r"), Butler(str(root), run="r")
    thread, outcome = writer_b(b)
    engine = a.registry.database.engine

    def fail_commit(conn) -> None:  # noqa: ANN001
        sa.event.remove(engine, "commit", fail_commit)
        thread.start()
        time.sleep(0.3)  # B finds A's file, takes it for a leftover, and waits for A's write lock
        raise OSError(errno.EIO, "COMMIT failed (injected)")

    sa.event.listen(engine, "commit", fail_commit)
    really_remove = a.datastore.remove_placed

    def after_b(placed):  # noqa: ANN001, ANN202
        thread.join(timeout=10)
        return really_remove(placed)

    a.datastore.remove_placed = after_b  # type: ignore[method-assign]
    with pytest.raises(Exception, match="COMMIT failed"):
        a.put({"writer": "A"}, DATASET_TYPE)
    thread.join(timeout=30)
    a.close()
    check(b, outcome)


@pytest.mark.postgresql
def test_an_interrupt_after_the_commit_keeps_the_files_of_what_was_stored(tmp_path, pg_namespace, monkeypatch):
    """Ctrl-C while PostgreSQL's statistics are refreshed, after the COMMIT: the put is stored, its file stays.

    The put's clean-up took the interrupt for a failed transaction and removed the file
    of a committed dataset. Now a failure that comes with or after the COMMIT asks the
    registry first; the interrupt still reaches the caller.
    """
    from skybutler.registry import _database

    root = tmp_path / "repo"
    make_repository(root, pg_namespace)
    butler = Butler(str(root), run="r")

    def interrupted(conn) -> None:  # noqa: ANN001
        raise KeyboardInterrupt

    monkeypatch.setattr(_database, "keep_postgresql_statistics", interrupted)
    with pytest.raises(KeyboardInterrupt):
        butler.put({"writer": "A"}, DATASET_TYPE)
    monkeypatch.undo()

    (stored,) = butler.query_datasets(DATASET_TYPE, collections=["r"])
    assert butler.get(stored) == {"writer": "A"}
    butler.close()
