"""The planner statistics a PostgreSQL registry keeps after bulk inserts (`skybutler.registry._db.keep_postgresql_statistics`)."""

from __future__ import annotations

import logging

import pytest
import sqlalchemy as sa

pytestmark = pytest.mark.parametrize("backend", ["postgresql-local"])

DATASET_TYPE = "metrics"


def test_a_table_another_analyze_holds_is_skipped_and_the_other_is_analyzed(make_butler, monkeypatch, caplog):
    import skybutler.registry._db as db

    monkeypatch.setattr(db, "ANALYZE_AFTER_ROWS", 20)
    butler = make_butler(records=True, run="r")
    butler.insert_dimension_records("detector", [{"instrument": "HSC", "detector": d, "name": f"d{d}", "purpose": "SCIENCE"}
                                                 for d in range(4, 30)])
    butler.register_dataset_type(DATASET_TYPE, ["instrument", "visit", "detector"], "dict")
    namespace = butler.config.registry.namespace
    visit = next(iter(butler.registry.fetch_dimension_records("visit")))["visit"]
    detectors = [r["detector"] for r in butler.registry.fetch_dimension_records("detector")]
    items = [({"n": d}, DATASET_TYPE, {"instrument": "HSC", "visit": visit, "detector": d}) for d in detectors]
    assert len(items) >= 20

    def estimated_rows(table: str) -> float:
        with butler.registry.engine.connect() as conn:
            return conn.execute(sa.text("SELECT reltuples FROM pg_class WHERE oid = to_regclass(:t)"),
                                {"t": f'"{namespace}".{table}'}).scalar_one()

    # The lock an ANALYZE (autovacuum's) holds on the dataset table, held by another connection.
    holder = sa.create_engine(butler.registry.engine.url)
    try:
        with holder.connect() as other, other.begin(), caplog.at_level(logging.WARNING):
            other.execute(sa.text(f'LOCK TABLE "{namespace}".dataset IN SHARE UPDATE EXCLUSIVE MODE'))
            butler.put_many(items)

            assert estimated_rows("dataset") < 0  # skipped
            assert estimated_rows("file") == len(items)
        assert "statistics" not in caplog.text
    finally:
        holder.dispose()
    assert len(list(butler.query_datasets(DATASET_TYPE, collections=["r"]))) == len(items)
