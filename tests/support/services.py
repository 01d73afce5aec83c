"""Where the test services and fixtures are (importable from any test module, unlike conftest)."""

from __future__ import annotations

import os
from pathlib import Path

PG_URL = os.environ.get("SKYBUTLER_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
RELEASE_FIXTURES = Path(__file__).parent.parent / "fixtures" / "release_0_1_0"
