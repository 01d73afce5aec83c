"""Fixtures of the datastore conformance suite: one per backend."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from skybutler.datastore import Datastore

# "s3" joins here once the moto server fixture exists; every store test then runs on it.
BACKENDS = ["file", "memory"]


@pytest.fixture(params=BACKENDS)
def root(request: pytest.FixtureRequest, tmp_path) -> Iterator[str]:
    """A fresh, empty datastore root on each backend."""
    if request.param == "file":
        yield str(tmp_path / "repo")
    else:
        # The memory filesystem is one per process: a unique root per test keeps them apart.
        name = f"memory://skybutler-test-{uuid.uuid4().hex}"
        yield name
        leftovers = Datastore(name)
        leftovers.remove(list(leftovers.walk()))


@pytest.fixture
def store(root: str) -> Datastore:
    """An empty `Datastore` on each backend."""
    return Datastore(root)
