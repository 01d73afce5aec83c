"""Fixtures: a filled repository (SQLite on disk by default) and the toy pipeline."""

from __future__ import annotations

import pytest

from skybutler.pipeline import Pipeline
from support.pipeline_repo import PIPELINE_YAML, fill_repository


@pytest.fixture
def repo(tmp_path):
    from skybutler import Butler

    butler = Butler.create(tmp_path / "repo")
    fill_repository(butler)
    yield butler
    butler.close()


@pytest.fixture
def pipeline():
    return Pipeline.from_yaml(PIPELINE_YAML, source="toy.yaml")
