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
