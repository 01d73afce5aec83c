"""Datasets into PostgreSQL in one statement (`skybutler.registry._pg_insert`): what a put and a bulk insert store.

A put's one dataset travels as scalar parameters, a bulk insert's as one array per
column; both are one statement (the run, the datasets and their file rows) after the
BEGIN. Checked against what the registry then reads back, on PostgreSQL only (SQLite
has its own inserts, checked by the conformance suite).
"""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from skybutler import DataId, DatasetRef
from skybutler.errors import CollectionError, DatasetExistsError
from skybutler.model import CollectionType, new_dataset_id
from skybutler.registry import FileRecord

pytestmark = pytest.mark.parametrize("backend", ["postgresql-local"])

DATASET_TYPE = "metrics"


@pytest.fixture
def butler(make_butler):
    b = make_butler(records=True, run="r")
    b.register_dataset_type(DATASET_TYPE, ["instrument", "visit", "detector"], "dict")
    return b


def refs_in(butler, run: str, count: int) -> list[DatasetRef]:
    dt = butler.registry.get_dataset_type(DATASET_TYPE)
    visit = next(iter(butler.registry.fetch_dimension_records("visit")))["visit"]
    return [DatasetRef(new_dataset_id(), dt, DataId({"instrument": "HSC", "visit": visit, "detector": d}), run)
            for d in range(count)]


def record_of(ref: DatasetRef, checksum: str | None = "0123abcd") -> FileRecord:
    return FileRecord(ref.id, f"{ref.run}/{ref.data_id['detector']}.json", 17, checksum,
                      "md5" if checksum else None, "json")


class Statements:
    """The statements SQLAlchemy's ``before_cursor_execute`` listeners see on the registry's engine."""

    def __init__(self, engine):
        self.seen: list[str] = []
        sa.event.listen(engine, "before_cursor_execute", self._before)

    def _before(self, _conn, _cursor, statement, _params, _context, _many) -> None:
        self.seen.append(statement)


@pytest.mark.parametrize("count", [1, 3])
def test_datasets_and_their_file_records_read_back_as_inserted(butler, count):
    refs = refs_in(butler, "new/run", count)
    records = [record_of(ref, checksum=None if i == 1 else "0123abcd") for i, ref in enumerate(refs)]

    butler.registry.insert_datasets(refs, records, register_runs=True)

    assert butler.registry.collection_type("new/run").value == "RUN"
    assert set(butler.registry.get_datasets([r.id for r in refs]).values()) == set(refs)
    assert butler.registry.get_files([r.id for r in refs]) == {r.id: rec for r, rec in zip(refs, records, strict=True)}


@pytest.mark.parametrize("count", [1, 3])
def test_datasets_without_files_are_inserted_without_file_records(butler, count):
    refs = refs_in(butler, "r", count)

    butler.registry.insert_datasets(refs, register_runs=True)

    assert set(butler.registry.get_datasets([r.id for r in refs]).values()) == set(refs)
    assert butler.registry.get_files([r.id for r in refs]) == {}


def test_a_put_is_one_statement_after_its_begin(butler):
    ref, = refs_in(butler, "other/run", 1)
    statements = Statements(butler.registry.engine)

    butler.registry.insert_datasets([ref], [record_of(ref)], register_runs=True)

    assert len(statements.seen) == 1 and statements.seen[0].startswith("WITH ")


@pytest.mark.parametrize("count", [1, 3])
def test_a_clash_stores_nothing_and_leaves_no_new_run(butler, count):
    stored, = refs_in(butler, "r", 1)
    butler.registry.insert_datasets([stored], [record_of(stored)], register_runs=True)
    again = refs_in(butler, "r", count)

    with pytest.raises(DatasetExistsError, match=str(stored.id)):
        butler.registry.insert_datasets(again, [record_of(r) for r in again], register_runs=True)
    # The same dataset ids again, into a run that does not exist yet: refused, and the run is not left behind.
    moved = [DatasetRef(stored.id, stored.dataset_type, stored.data_id, "never/made")]
    with pytest.raises(DatasetExistsError):
        butler.registry.insert_datasets(moved, [record_of(moved[0])], register_runs=True)

    assert butler.registry.get_datasets([r.id for r in again[1:]]) == {}
    assert butler.registry.get_files([r.id for r in again[1:]]) == {}
    with pytest.raises(CollectionError):
        butler.registry.collection_type("never/made")


@pytest.mark.parametrize("count", [1, 3])
def test_datasets_into_a_collection_that_is_not_a_run_are_refused(butler, count):
    butler.registry.register_collection("tagged/one", CollectionType.TAGGED)
    refs = refs_in(butler, "tagged/one", count)

    with pytest.raises(CollectionError):
        butler.registry.insert_datasets(refs, [record_of(r) for r in refs], register_runs=True)

    assert butler.registry.get_datasets([r.id for r in refs]) == {}
