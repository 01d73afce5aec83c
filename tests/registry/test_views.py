"""``datasets_view``: what an operator at a SQL prompt sees, with implied dimensions filled in."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from skybutler import DimensionUniverse


@pytest.fixture(params=["sqlite-local", "postgresql-local"])
def backend(request):
    """Plain SQL against both databases (PostgreSQL in the repository's own schema)."""
    return request.param


def sql(butler, text: str, **params) -> list[sa.Row]:
    """Run plain SQL as an operator would: in the repository's schema, no skybutler in between."""
    namespace = butler.config.registry.namespace if butler.registry.dialect == "postgresql" else None
    with butler.registry.engine.connect() as conn:
        if namespace:
            conn.exec_driver_sql(f'SET search_path TO "{namespace}"')
        return list(conn.execute(sa.text(text), params))


def test_datasets_view_fills_band_filter_and_day_from_the_visit(make_butler):
    butler = make_butler(run="run1", records=True)
    butler.register_dataset_type("metadata", ["visit", "detector"], "dict")
    butler.register_dataset_type("bias", ["detector"], "dict")
    refs = {(v, d): butler.put({}, "metadata", instrument="HSC", visit=v, detector=d)
            for v in (903334, 903338) for d in (0, 1)}
    butler.put({}, "bias", instrument="HSC", detector=0)
    # The dataset rows themselves leave implied dimensions NULL ...
    assert sql(butler, "SELECT count(*) FROM dataset WHERE band = 'r'") == [(0,)]
    # ... the view has them.
    rows = sql(butler, "SELECT dataset_id, dataset_type, run, instrument, visit, detector, physical_filter, "
                       "day_obs, path, size, checksum, ingest_date FROM datasets_view WHERE band = 'r' "
                       "ORDER BY detector")
    assert [(r.dataset_type, r.run, r.instrument, r.visit, r.detector, r.physical_filter, r.day_obs)
            for r in rows] == [("metadata", "run1", "HSC", 903334, 0, "HSC-R", 20260315),
                               ("metadata", "run1", "HSC", 903334, 1, "HSC-R", 20260315)]
    files = butler.registry.get_files([refs[(903334, 0)].id])
    record = files[refs[(903334, 0)].id]
    assert str(rows[0].dataset_id).replace("-", "") == refs[(903334, 0)].id.hex
    assert (rows[0].path, rows[0].size, rows[0].checksum) == (record.path, record.size, record.checksum)
    assert rows[0].ingest_date is not None
    # A dataset without a visit has no band to imply, and is still in the view.
    assert sql(butler, "SELECT band, visit, detector FROM datasets_view WHERE dataset_type = 'bias'") == \
        [(None, None, 0)]
    assert sql(butler, "SELECT count(*) FROM datasets_view") == [(5,)]


def test_datasets_view_follows_a_custom_universe(make_butler):
    doc = DimensionUniverse.default().document
    doc["elements"] = {**doc["elements"], "field": {"key_type": "str", "requires": ["instrument"]}}
    doc["elements"]["visit"] = {**doc["elements"]["visit"], "implies": ["physical_filter", "day_obs", "field"]}
    butler = make_butler(universe=DimensionUniverse(doc), run="run1")
    butler.insert_dimension_records("instrument", [{"instrument": "HSC"}])
    butler.insert_dimension_records("band", [{"band": "g"}])
    butler.insert_dimension_records("physical_filter", [{"instrument": "HSC", "physical_filter": "HSC-G",
                                                         "band": "g"}])
    butler.insert_dimension_records("day_obs", [{"instrument": "HSC", "day_obs": 20260401}])
    butler.insert_dimension_records("field", [{"instrument": "HSC", "field": "COSMOS"}])
    butler.insert_dimension_records("visit", [{"instrument": "HSC", "visit": 1, "physical_filter": "HSC-G",
                                               "day_obs": 20260401, "field": "COSMOS"}])
    butler.register_dataset_type("summary", ["visit"], "dict")
    butler.put({}, "summary", instrument="HSC", visit=1)
    assert sql(butler, "SELECT band, field FROM datasets_view WHERE field = 'COSMOS'") == [("g", "COSMOS")]
