"""Where the test services and fixtures are (importable from any test module, unlike conftest)."""

from __future__ import annotations

import os
from pathlib import Path

PG_URL = os.environ.get("SKYBUTLER_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
RELEASE_FIXTURES = Path(__file__).parent.parent / "fixtures" / "release_0_1_0"
"""Repositories written by release 0.1.0 (schema 1): the migration tests upgrade them through every revision."""
PREVIOUS_RELEASE = Path(__file__).parent.parent / "fixtures" / "release_0_2_0"
"""Repositories written by the previous release, 0.2.0 (schema 4): the conformance suite runs on one upgraded."""
