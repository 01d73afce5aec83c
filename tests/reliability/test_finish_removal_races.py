"""Finishing an interrupted removal never deletes the file of a dataset stored again meanwhile.

A removal that deleted some of its files and was then cut short leaves its list; the
datasets' rows are gone, and so are the files it got to. Storing such a dataset again
writes a new file at a path the list names (no old file is there to refuse it). Another
process finishing the removal meanwhile (`finish_removals`, run by every removal and by
`clean_temporaries`) checks that no row names the path and deletes the file: if that
writer committed between the check and the deletion, its dataset had no file.

The finishing process is held between its check and its deletion while the writer runs.
"""

from __future__ import annotations

import pytest

from skybutler import Butler, _butler_remove
from support.holding import in_thread
from support.removals import remove_crashing_after_the_files
from support.services import PG_URL

DATASET_TYPE = "meta"


def interrupted_removal(root: str, namespace: str | None, monkeypatch) -> None:
    """A repository whose run ``r`` was removed, its file deleted, and its removal list left behind."""
    registry = {"registry": PG_URL, "namespace": namespace} if namespace else {}
    butler = Butler.create(root, run="r", **registry)
    butler.register_dataset_type(DATASET_TYPE, [], "dict")
    butler.put({"version": 1}, DATASET_TYPE)
    remove_crashing_after_the_files(lambda: butler.remove_runs(["r"]), monkeypatch)
    butler.close()


def race(root: str, monkeypatch) -> tuple[Butler, dict]:
    """Finish the removal with a put of the same dataset run between its check and its deletion."""
    writer = Butler(root, run="r")
    thread, outcome = in_thread(lambda: writer.put({"version": 2}, DATASET_TYPE), "ref")
    really_delete = _butler_remove.delete_files

    def put_then_delete(datastore, paths):  # noqa: ANN001, ANN202 - checked: no row names these paths
        thread.start()
        thread.join(timeout=3)  # stored meanwhile, unless the finishing keeps writers out until it is over
        return really_delete(datastore, paths)

    monkeypatch.setattr(_butler_remove, "delete_files", put_then_delete)
    finisher = Butler(root, run="r")
    finisher.finish_removals()
    monkeypatch.undo()
    thread.join(timeout=60)
    finisher.close()
    return writer, outcome


def check(writer: Butler, outcome: dict) -> None:
    assert "error" not in outcome, outcome.get("error")
    assert writer.get(outcome["ref"]) == {"version": 2}  # its file is there
    writer.close()


def test_on_sqlite(tmp_path, monkeypatch):
    root = str(tmp_path / "repo")
    interrupted_removal(root, None, monkeypatch)
    check(*race(root, monkeypatch))


@pytest.mark.postgresql
def test_on_postgresql(tmp_path, pg_namespace, monkeypatch):
    root = str(tmp_path / "repo")
    interrupted_removal(root, pg_namespace, monkeypatch)
    check(*race(root, monkeypatch))


def test_two_processes_finishing_the_same_removal_both_succeed(tmp_path, monkeypatch):
    """One lists the pending removals, the other finishes and drops the list before the first reads it.

    The first then failed with "No file '.skybutler/removals/...json'": every removal and
    clean_temporaries finishes pending removals first, so a remove_runs of another run failed.
    """
    root = str(tmp_path / "repo")
    interrupted_removal(root, None, monkeypatch)
    first = Butler(root)
    really_open = first.datastore.open

    def open_after_the_other_finished(path, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        if ".skybutler/removals/" in path:
            with Butler(root) as other:
                assert other.finish_removals() == {"r": 1}
        return really_open(path, *args, **kwargs)

    first.datastore.open = open_after_the_other_finished  # type: ignore[method-assign]
    try:
        assert first.finish_removals() == {}
    finally:
        first.close()


def test_on_a_slow_store_each_part_keeps_writers_out_for_a_bounded_time(tmp_path, monkeypatch):
    """Each part is checked and deleted while every other writer waits: its size follows its deletion time.

    Before, a part was 8,000 files whatever they cost: on an object store (a round trip
    each) writers waited tens of seconds, near SQLite's 60 s busy timeout. Here each
    deletion takes at least 5 ms, so a part of more than `PART_SECONDS` / 5 ms files would
    keep writers out longer than `PART_SECONDS`.
    """
    import time

    root = str(tmp_path / "repo")
    butler = Butler.create(root)
    paths = [f"r/meta/{i // 100:02d}/meta_{i:04d}.json" for i in range(300)]
    for path in paths:
        full = tmp_path / "repo" / path
        full.parent.mkdir(parents=True, exist_ok=True)
        full.write_bytes(b"{}\n")
    butler.datastore.record_removal(paths, label="r")  # a removal that stopped before its files
    parts: list[int] = []
    really_delete = _butler_remove.delete_files

    def slow_delete(datastore, part):  # noqa: ANN001, ANN202 - a store with a round trip per file
        parts.append(len(part))
        time.sleep(0.005 * len(part))
        return really_delete(datastore, part)

    monkeypatch.setattr(_butler_remove, "delete_files", slow_delete)
    assert butler.finish_removals() == {"r": 300}
    butler.close()
    assert sum(parts) == 300 and not any((tmp_path / "repo" / p).exists() for p in paths)
    assert max(parts) <= _butler_remove.PART_SECONDS / 0.005, parts
