"""What a transfer keeps of datasets' identity beyond the rows: run manifests and ids inside execution details.

A file whose format has no room for its identity (JSON, YAML, npy) gets a run-manifest
entry in the target as a put writes one, so the target's registry can be rebuilt from
its files; with new ids, the ids an execution's ``details`` names follow the datasets.
"""

from __future__ import annotations

import json
import os

import pytest
import sqlalchemy as sa

from skybutler import Butler
from skybutler.model import new_id
from skybutler.ops.rebuild import rebuild
from skybutler.registry import provenance_sql
from skybutler.transfer import RegistrySource, import_content

RUN = "src/run"


@pytest.fixture
def source(tmp_path, standard_records):
    butler = Butler.create(tmp_path / "source", run=RUN)
    standard_records.fill(butler)
    butler.register_dataset_type("calexp", ["instrument", "visit", "detector"], "dict")
    yield butler
    butler.close()


@pytest.fixture
def target(tmp_path, standard_records):
    butler = Butler.create(tmp_path / "target")
    standard_records.fill(butler)
    yield butler
    butler.close()


def identities(butler: Butler) -> set[tuple]:
    """Every dataset as (id, type, data id, run, path, checksum)."""
    return {(str(ref.id), ref.dataset_type.name, json.dumps(dict(ref.data_id.required_items), sort_keys=True),
             ref.run, rec.path, rec.checksum) for rec, ref in butler.registry.all_files()}


def lose_registry(butler: Butler) -> None:
    butler.close()
    for suffix in ("", "-wal", "-shm"):
        path = os.path.join(butler.root, "registry.sqlite3" + suffix)
        if os.path.exists(path):
            os.remove(path)


@pytest.mark.parametrize("new_ids", [False, True])
def test_a_target_registry_lost_after_a_transfer_is_rebuilt_with_the_same_datasets(source, target, new_ids):
    refs = source.put_many([({"v": d}, "calexp", {"instrument": "HSC", "visit": 903334, "detector": d})
                            for d in range(4)])
    report = import_content(target, RegistrySource(source, refs), transfer="copy", new_ids=new_ids)
    assert report.datasets_added == 4
    before = identities(target)
    assert {i[0] for i in before} == {str(report.id_map.get(r.id, r.id)) for r in refs}
    lose_registry(target)

    rebuilt = rebuild(target.root)

    assert rebuilt.datasets == 4 and rebuilt.skipped == []
    again = Butler(target.root, collections=[RUN])
    try:
        assert identities(again) == before
        assert sorted(again.get(ref)["v"] for _, ref in again.registry.all_files()) == [0, 1, 2, 3]
    finally:
        again.close()


def test_new_ids_remap_the_dataset_ids_named_in_an_execution_details(source, target):
    made, other = source.put_many([({"v": d}, "calexp", {"instrument": "HSC", "visit": 903334, "detector": d})
                                   for d in range(2)])
    execution, foreign = new_id(), new_id()
    provenance_sql.insert_executions(source.registry, [
        {"id": execution, "run": RUN, "task_label": "make_calexp", "data_id_key": "calexp0", "status": "succeeded",
         "details": json.dumps({"output": str(made.id), "elsewhere": str(foreign), "note": "kept"})}],
        generated=[(execution, made.id, "a")])

    report = import_content(target, RegistrySource(source, [made, other]), new_ids=True)

    new_made, new_execution = report.id_map[made.id], report.id_map[execution]
    assert new_made != made.id and new_execution != execution
    ex = target.registry.tables.execution
    with target.registry.database.read() as conn:
        details = conn.execute(sa.select(ex.c.details).where(ex.c.id == new_execution)).scalar_one()
    assert json.loads(details) == {"output": str(new_made), "elsewhere": str(foreign), "note": "kept"}
