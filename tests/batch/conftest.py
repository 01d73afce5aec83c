"""Fixtures for the batch service: the toy repository and campaign files written next to it."""

from __future__ import annotations

import pytest

from support.batch_campaign import make_campaign
from support.pipeline_repo import filled_repo_template, repo  # noqa: F401, F811


@pytest.fixture
def write_campaign(tmp_path):
    """`make_campaign` in the test's directory."""
    return lambda name="campaign.yaml", **kwargs: make_campaign(tmp_path, name, **kwargs)


@pytest.fixture(scope="module")
def finished(filled_repo_template, tmp_path_factory, local_engine):  # noqa: F811
    """(butler, SubmitResult) of the default toy campaign run to success, shared by a module's read-only tests."""
    from skybutler.batch import api
    from support.pipeline_repo import copy_repository

    directory = tmp_path_factory.mktemp("finished")
    butler = copy_repository(filled_repo_template, directory / "repo")
    result = api.submit(butler, make_campaign(directory), engine=local_engine)
    yield butler, result
    butler.close()


@pytest.fixture(scope="module")
def local_engine():
    """One local engine for a module's submissions (its fork server starts once)."""
    from skybutler.batch.engines import make_engine

    engine = make_engine("local", {"max_workers": 2})
    yield engine
    engine.close()
