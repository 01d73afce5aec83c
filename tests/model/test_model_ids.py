"""Ids: one time-ordered UUIDv7 maker for output datasets, quanta and executions."""

from __future__ import annotations

import uuid

from skybutler.model import new_dataset_id, new_id


def test_new_ids_are_uuid7_and_sort_by_creation_time():
    ids = [new_id() for _ in range(50)] + [new_dataset_id() for _ in range(50)]
    assert all(isinstance(i, uuid.UUID) and i.version == 7 and i.variant == uuid.RFC_4122 for i in ids)
    assert len(set(ids)) == len(ids)
    millis = [i.int >> 80 for i in ids]
    assert millis == sorted(millis)


def test_ingest_ids_made_in_bulk_equal_those_made_one_at_a_time():
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from skybutler.model import DataId, dataset_id_for_ingest, dataset_ids_for_ingest

    @settings(max_examples=200, deadline=None)
    @given(st.lists(st.tuples(st.text(min_size=1, max_size=12), st.integers(-2**40, 2**40), st.text(max_size=8)),
                    max_size=20), st.text(max_size=10))
    def check(rows, run):
        types = [t for t, _, _ in rows]
        data_ids = [DataId({"instrument": band or "HSC", "detector": d}) for _, d, band in rows]
        bulk = dataset_ids_for_ingest(types, data_ids, run)
        single = [dataset_id_for_ingest(t, di, run) for t, di in zip(types, data_ids, strict=True)]
        assert bulk == single
        assert all(u.version == 5 and u.variant == uuid.RFC_4122 for u in bulk)
        assert [hash(u) for u in bulk] == [hash(u) for u in single] and [str(u) for u in bulk] == [str(u) for u in single]

    check()
