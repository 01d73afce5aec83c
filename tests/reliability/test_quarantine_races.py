"""verify's quarantine never moves away the file of a dataset stored while it ran.

`verify(quarantine=True)` walks the datastore, finds files no row names ("dark") and moves
them to the quarantine. A dark file may be named by the time it is moved:

- a put found it at its path (a crashed write's leftover), replaced it and committed
  after the walk looked it up;
- a put placed its file inside its transaction (rows inserted, COMMIT not yet sent)
  just as the walk looked it up, and committed before the move.

Moved anyway, the dataset's file is gone from its path: a get fails on a stored dataset.
Each race runs on the embedded default and on PostgreSQL; a put's new file is also
younger than the default minimum age, which is set to 0 here to reach the move.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from skybutler import Butler
from skybutler.model import DataId, DatasetRef, new_dataset_id
from skybutler.ops import verify as verify_module
from support.holding import in_thread
from support.services import PG_URL

DATASET_TYPE = "meta"


@pytest.fixture(params=["sqlite", "postgresql"])
def root(request, tmp_path, pg_namespace) -> str:
    """A repository with dataset type ``meta`` (no dimensions) and run ``r``; on PostgreSQL its own schema."""
    if request.param == "postgresql":
        request.getfixturevalue("pg_engine")
        registry = {"registry": PG_URL, "namespace": pg_namespace}
    else:
        registry = {}
    path = str(tmp_path / "repo")
    butler = Butler.create(path, run="r", **registry)
    butler.register_dataset_type(DATASET_TYPE, [], "dict")
    butler.close()
    return path


def leftover_of_a_crashed_put(root: str) -> str:
    """Leave at the path of ``meta`` in run ``r`` a file no row names, as a put killed before its COMMIT does."""
    butler = Butler(root, run="r")
    dataset_type = butler.registry.get_dataset_type(DATASET_TYPE)
    path = butler.file_namer(dataset_type, "r")(DatasetRef(new_dataset_id(), dataset_type, DataId(), "r"))
    target = Path(butler.datastore.url(path))
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(b'{"version": 0}')
    butler.close()
    return path


def test_a_leftover_replaced_and_stored_after_the_walk_is_not_moved(root, monkeypatch):
    path = leftover_of_a_crashed_put(root)
    writer = Butler(root, run="r")
    stored = []
    real_walk = verify_module._walk

    def walk_then_store(butler, report, bars, *, keep):  # noqa: ANN001, ANN202
        dark = real_walk(butler, report, bars, keep=keep)
        stored.append(writer.put({"version": 2}, DATASET_TYPE))  # replaces the leftover, commits
        return dark

    monkeypatch.setattr(verify_module, "_walk", walk_then_store)
    report = verify_module.verify(Butler(root, writeable=True), quarantine=True, quarantine_min_age=0)
    monkeypatch.undo()

    assert path in [p.path for p in report.problems["dark"]]  # dark when the walk looked it up
    assert report.quarantined == 0 and report.named_meanwhile == 1
    (ref,) = stored
    assert writer.registry.get_files([ref.id])[ref.id].path == path
    assert Butler(root).get(ref) == {"version": 2}
    assert verify_module.verify(Butler(root)).ok


def test_a_put_committing_while_verify_moves_dark_files_keeps_its_file(root):
    writer = Butler(root, run="r")
    placed = threading.Event()
    real_append = writer.datastore.append_manifest

    def hold_before_commit(run, entries):  # noqa: ANN001, ANN202 - rows inserted, file in place, not committed
        written = real_append(run, entries)
        placed.set()
        time.sleep(1.0)  # verify walks, finds the file dark and gets to the move meanwhile
        return written

    writer.datastore.append_manifest = hold_before_commit  # type: ignore[method-assign]

    thread, outcome = in_thread(lambda: writer.put({"version": 1}, DATASET_TYPE), "ref")
    thread.start()
    assert placed.wait(30), outcome
    report = verify_module.verify(Butler(root, writeable=True), quarantine=True, quarantine_min_age=0)
    thread.join(60)

    assert "error" not in outcome, outcome
    ref = outcome["ref"]
    path = writer.registry.get_files([ref.id])[ref.id].path
    assert report.quarantined == 0
    assert os.path.exists(writer.datastore.url(path))
    assert Butler(root).get(ref) == {"version": 1}
