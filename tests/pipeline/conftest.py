"""Fixtures: a filled repository and the toy pipeline (see `support.pipeline_repo`)."""

from support.pipeline_repo import filled_repo_template, pipeline, repo  # noqa: F401
