"""Registry writers racing each other give what one writer after the other would: a result or a clear error.

Each test holds writer A's transaction at the critical moment (see `support.holding`)
while writer B, another butler on the same repository, does something that conflicts.
What was wrong before each fix:

- a dataset type registered in a transaction that rolled back stayed in its butler's
  memory: registering it again did nothing, and its next put stored the dataset under
  whatever type another writer had registered with that id meanwhile (SQLite), or failed
  with a raw foreign-key error (PostgreSQL);
- tagging or certifying a dataset that another writer was removing failed with a raw
  foreign-key error (a stale ref alone did too);
- a chain given a run that another writer was removing failed with a raw foreign-key
  error (PostgreSQL);
- an ingest whose records clash with a record another writer had just inserted was
  accepted, its files' values silently dropped (PostgreSQL), where one after the other
  it is refused.
"""

from __future__ import annotations

import json

import pytest

from skybutler import (
    Butler,
    CollectionError,
    CollectionType,
    DatasetNotFoundError,
    DimensionError,
    FileDataset,
)
from support.holding import while_a_holds


@pytest.fixture(params=["sqlite-local", "postgresql-local"])
def backend(request):
    return request.param


@pytest.fixture
def butler(make_butler):
    butler = make_butler(run="u/me/run", records=True)
    butler.register_dataset_type("meta", ["detector"], "dict")
    butler.register_dataset_type("bias", ["detector"], "dict", is_calibration=True)
    return butler


def other(butler: Butler) -> Butler:
    return Butler(butler.root, writeable=True, run="u/me/run")


def test_a_dataset_type_registered_in_a_rolled_back_transaction_is_registered_again(butler):
    a, b = other(butler), other(butler)
    with pytest.raises(RuntimeError), a.transaction():
        a.register_dataset_type("calexp", ["visit", "detector"], "dict")
        a.put({"x": 1}, "calexp", instrument="HSC", visit=903334, detector=0)  # A reads the type back
        raise RuntimeError("rolled back")
    b.register_dataset_type("flat", ["detector"], "dict")  # may take the id the rolled-back type had

    a.register_dataset_type("calexp", ["visit", "detector"], "dict")
    ref = a.put({"x": 2}, "calexp", instrument="HSC", visit=903334, detector=0)

    assert "calexp" in [dt.name for dt in b.registry.dataset_types()]
    assert b.get("calexp", instrument="HSC", visit=903334, detector=0) == {"x": 2}
    assert b.find_dataset("calexp", instrument="HSC", visit=903334, detector=0) == ref
    assert list(b.query_datasets("flat", collections=["u/me/run"])) == []


@pytest.mark.parametrize("change", ["tag", "certify"])
def test_tagging_or_certifying_a_dataset_removed_meanwhile_names_it(butler, change):
    dataset_type = "meta" if change == "tag" else "bias"
    ref = butler.put({"m": 1}, dataset_type, instrument="HSC", detector=0)
    a, b = other(butler), other(butler)
    a.collections.register("best", CollectionType.TAGGED)
    a.collections.register("calib", CollectionType.CALIBRATION)
    b_change = (lambda: b.collections.tag("best", [ref])) if change == "tag" else \
        (lambda: b.collections.certify("calib", [ref], "2026-01-01", "2027-01-01"))

    outcome = while_a_holds(a.registry, lambda: a.registry.remove_datasets([ref.id]), b_change)

    assert isinstance(outcome.get("error"), DatasetNotFoundError), outcome
    assert str(ref.id) in str(outcome["error"]) and "removed" in str(outcome["error"])
    assert list(butler.query_datasets(dataset_type, collections=["best" if change == "tag" else "calib"],
                                      time="2026-06-01")) == []
    # A stale ref alone (removed before the call) is the same error.
    with pytest.raises(DatasetNotFoundError, match=str(ref.id)):
        b_change()


def test_a_chain_given_a_run_removed_meanwhile_names_it(butler):
    butler.put({"m": 1}, "meta", instrument="HSC", detector=0, run="u/me/old")
    a, b = other(butler), other(butler)
    a.collections.set_chain("defaults", ["u/me/run"])

    outcome = while_a_holds(a.registry, lambda: a.registry.remove_run("u/me/old"),
                            lambda: b.collections.set_chain("defaults", ["u/me/run", "u/me/old"]))

    assert isinstance(outcome.get("error"), CollectionError), outcome
    assert "u/me/old" in str(outcome["error"])
    assert butler.collections.resolve(["defaults"]) == ["u/me/run"]
    assert "u/me/old" not in [c["name"] for c in butler.registry.collections()]


def test_an_ingest_whose_records_clash_with_a_record_inserted_meanwhile_is_refused(butler, tmp_path):
    butler.register_dataset_type("raw", ["exposure", "detector"], "dict")
    exposure = {"instrument": "HSC", "exposure": 7, "physical_filter": "HSC-R", "day_obs": 20260315}
    path = tmp_path / "raw_7_0.json"
    path.write_text(json.dumps({"pixels": [1, 2]}))
    a, b = other(butler), other(butler)

    outcome = while_a_holds(
        a, lambda: a.insert_dimension_records("exposure", [{**exposure, "exposure_time": 30.0}]),
        lambda: b.ingest([FileDataset(str(path), "raw", {"instrument": "HSC", "exposure": 7, "detector": 0})],
                         records={"exposure": [{**exposure, "exposure_time": 15.0}]}))

    assert isinstance(outcome.get("error"), DimensionError), outcome
    assert "exposure_time" in str(outcome["error"])
    assert list(butler.query_datasets("raw", collections=["u/me/run"])) == []
    record, = butler.registry.fetch_dimension_records("exposure")
    assert record["exposure_time"] == 30.0


def test_a_chain_changed_while_a_run_it_names_is_being_removed_waits_for_the_removal(butler, backend, monkeypatch):
    """PostgreSQL: the chain's writer locks the chain table, then waits for the run's row; the
    removal, holding that row, deletes the run, whose foreign keys reach the chain table."""
    if backend != "postgresql-local":
        pytest.skip("SQLite's writers take turns: the chain's waits for the removal's whole transaction")
    import threading

    import sqlalchemy as sa

    from skybutler.registry import _remove_run

    butler.put({"m": 1}, "meta", instrument="HSC", detector=0, run="u/me/old")
    a, b = other(butler), other(butler)
    a.collections.set_chain("defaults", ["u/me/run"])
    inside, go, outcome = threading.Event(), threading.Event(), {}
    delete_provenance = _remove_run.provenance_sql.delete_run_provenance

    def held(*args, **kwargs):  # noqa: ANN002, ANN003
        inside.set()
        go.wait(30)
        return delete_provenance(*args, **kwargs)

    monkeypatch.setattr(_remove_run.provenance_sql, "delete_run_provenance", held)

    def remove() -> None:
        try:
            a.registry.remove_run("u/me/old")
            outcome["removed"] = True
        except Exception as exc:  # reported by the test
            outcome["removal_error"] = exc

    remover = threading.Thread(target=remove)
    remover.start()
    assert inside.wait(30)
    changer = threading.Thread(target=lambda: outcome.update(
        chain=_outcome(lambda: b.collections.set_chain("defaults", ["u/me/run", "u/me/old"]))))
    changer.start()
    namespace = butler.config.registry.namespace
    waiting = sa.text("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                      "AND query LIKE '%collection_chain%' AND query LIKE :namespace")
    with butler.registry.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        for _ in range(3000):  # until the chain's writer waits for a lock (at most a minute)
            if conn.execute(waiting, {"namespace": f"%{namespace}%"}).scalar():
                break
            threading.Event().wait(0.02)
    go.set()
    remover.join(60)
    changer.join(60)

    assert outcome.get("removed") is True, outcome
    assert isinstance(outcome["chain"].get("error"), CollectionError), outcome
    assert "u/me/old" in str(outcome["chain"]["error"])
    assert butler.collections.resolve(["defaults"]) == ["u/me/run"]


def _outcome(change) -> dict:  # noqa: ANN001
    try:
        change()
        return {"done": True}
    except Exception as exc:  # reported by the test
        return {"error": exc}
