"""Ids made many at a time: the layout and order of one-at-a-time ids, from one call."""

from __future__ import annotations

import uuid

from skybutler.model import new_dataset_id, new_dataset_ids, new_id, new_ids


def test_ids_made_at_once_are_uuid7_distinct_and_in_increasing_order():
    ids = new_dataset_ids(500)

    assert len(ids) == 500 and len(set(ids)) == 500
    assert all(isinstance(i, uuid.UUID) and i.version == 7 and i.variant == uuid.RFC_4122 for i in ids)
    assert ids == sorted(ids)
    assert all(uuid.UUID(str(i)) == i for i in ids)  # the same values UUID() would accept


def test_ids_made_at_once_sort_by_time_among_ids_made_one_at_a_time():
    ids = [new_id(), *new_ids(3), new_dataset_id(), *new_dataset_ids(3), new_id()]
    millis = [i.int >> 80 for i in ids]

    assert millis == sorted(millis)


def test_no_ids_asked_none_made():
    assert new_dataset_ids(0) == [] and new_ids(-1) == []
