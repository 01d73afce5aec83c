"""Values SQLite would store but PostgreSQL cannot are refused alike on both, naming the value."""

from __future__ import annotations

import pytest

from skybutler import DataIdError


@pytest.fixture(params=["sqlite-memory", "postgresql-local"])
def backend(request):
    return request.param


@pytest.mark.parametrize(("value", "reason"), [
    ("r\0", "NUL character"),
    ("x" * 129, "at most 128"),
])
def test_a_dimension_value_postgresql_cannot_hold_is_refused_on_both(make_butler, value, reason):
    butler = make_butler()
    with pytest.raises(DataIdError, match=reason) as info:
        butler.insert_dimension_records("band", [{"band": value}])
    assert "\n" not in str(info.value)
    assert list(butler.query_dimension_records("band")) == []
    butler.insert_dimension_records("band", [{"band": "x" * 128}])  # the longest that fits
    assert [r["band"] for r in butler.query_dimension_records("band")] == ["x" * 128]
