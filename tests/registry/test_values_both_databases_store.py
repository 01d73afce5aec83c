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


@pytest.mark.parametrize(("value", "reason"), [("t\0x", "NUL character"), ("t" * 129, "at most 128")])
def test_a_metadata_text_postgresql_cannot_hold_is_refused_on_both(make_butler, value, reason):
    from skybutler import DimensionError

    butler = make_butler()
    butler.insert_dimension_records("instrument", [{"instrument": "HSC"}])
    with pytest.raises(DimensionError, match=reason) as info:
        butler.insert_dimension_records("visit", [{"instrument": "HSC", "visit": 1, "target_name": value}])
    assert "target_name" in str(info.value) and "\n" not in str(info.value)
    assert list(butler.query_dimension_records("visit")) == []


def test_names_longer_than_their_columns_are_refused_on_both(make_butler):
    from skybutler import CollectionError, DatasetTypeError

    butler = make_butler()
    with pytest.raises(CollectionError, match="at most 256"):
        butler.collections.register("r" * 257)
    butler.collections.register("r" * 256)
    with pytest.raises(DatasetTypeError, match="at most 128"):
        butler.register_dataset_type("t" * 129, ["instrument"], "dict")
    butler.register_dataset_type("t" * 128, ["instrument"], "dict")
    assert [c["name"] for c in butler.collections.query()] == ["r" * 256]


def test_a_record_time_with_a_time_zone_is_stored_as_that_instant_in_utc(make_butler):
    """An exposure's start given in Hawaii time (or as a string with its offset) is that instant, in UTC."""
    import datetime

    hst = datetime.timezone(datetime.timedelta(hours=-10))
    butler = make_butler()
    butler.insert_dimension_records("instrument", [{"instrument": "HSC"}])
    begin = datetime.datetime(2026, 3, 14, 20, 5, tzinfo=hst)
    butler.insert_dimension_records("visit", [
        {"instrument": "HSC", "visit": 1, "timespan_begin": begin, "timespan_end": "2026-03-14T20:05:30-10:00"}])
    (record,) = butler.query_dimension_records("visit")
    assert (record["timespan_begin"], record["timespan_end"]) == (
        datetime.datetime(2026, 3, 15, 6, 5), datetime.datetime(2026, 3, 15, 6, 5, 30))
