"""Fixtures of the datastore conformance suite: one per backend."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from skybutler.datastore import Datastore

BACKENDS = ["file", "memory", "s3"]


@pytest.fixture(params=BACKENDS)
def root(request: pytest.FixtureRequest, tmp_path) -> Iterator[str]:
    """A fresh, empty datastore root on each backend."""
    if request.param == "file":
        yield str(tmp_path / "repo")
    elif request.param == "s3":
        bucket, options = request.getfixturevalue("s3_bucket")
        request.node.s3_options = options
        yield f"s3://{bucket}/repo"
    else:
        # The memory filesystem is one per process: a unique root per test keeps them apart.
        name = f"memory://skybutler-test-{uuid.uuid4().hex}"
        yield name
        leftovers = Datastore(name)
        leftovers.remove(list(leftovers.walk()))


@pytest.fixture
def storage_options(request: pytest.FixtureRequest, root: str) -> dict:
    """fsspec options the backend needs (the S3 endpoint and keys)."""
    return dict(getattr(request.node, "s3_options", {}))


@pytest.fixture
def store(root: str, storage_options: dict) -> Datastore:
    """An empty `Datastore` on each backend."""
    return Datastore(root, storage_options=storage_options)
