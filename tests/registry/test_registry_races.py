"""Registry writers racing each other give what one writer after the other would: a result or a clear error.

Each test holds writer A's transaction at the critical moment (see `support.holding`)
while writer B, another butler on the same repository, does something that conflicts.
What was wrong before each fix:

- a dataset type registered in a transaction that rolled back stayed in its butler's
  memory: registering it again did nothing, and its next put stored the dataset under
  whatever type another writer had registered with that id meanwhile (SQLite), or failed
  with a raw foreign-key error (PostgreSQL);
- tagging or certifying a dataset that another writer was removing failed with a raw
  foreign-key error (a stale ref alone did too), and so did marking it lost (PostgreSQL);
- a chain changed to name a run that another writer was removing deadlocked with the
  removal, which failed (PostgreSQL's raw DeadlockDetected) while the chain kept the run;
- an ingest inserting visits and then their detectors' regions deadlocked with a patch
  inserted between the two (PostgreSQL);
- an ingest whose records clash with a record another writer had just inserted was
  accepted, its files' values silently dropped (PostgreSQL), where one after the other
  it is refused;
- two creates of one root at once: the loser deleted the root, the winner's repository
  with it; two of one PostgreSQL namespace failed with a raw catalog unique-key error.
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


@pytest.mark.parametrize("removal", ["datasets", "run"])
@pytest.mark.parametrize("change", ["tag", "certify"])
def test_tagging_or_certifying_a_dataset_removed_meanwhile_names_it(butler, change, removal):
    dataset_type = "meta" if change == "tag" else "bias"
    ref = butler.put({"m": 1}, dataset_type, instrument="HSC", detector=0, run="u/me/old")
    a, b = other(butler), other(butler)
    a.collections.register("best", CollectionType.TAGGED)
    a.collections.register("calib", CollectionType.CALIBRATION)
    b_change = (lambda: b.collections.tag("best", [ref])) if change == "tag" else \
        (lambda: b.collections.certify("calib", [ref], "2026-01-01", "2027-01-01"))

    remove = (lambda: a.registry.remove_datasets([ref.id])) if removal == "datasets" else \
        (lambda: a.registry.remove_run("u/me/old"))

    outcome = while_a_holds(a.registry, remove, b_change)

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


def _creates_at_once(create_a, create_b, hold_a, b_held=lambda: False) -> dict:  # noqa: ANN001
    """Run ``create_a`` and ``create_b`` in two threads; A waits at ``hold_a`` until B is done or ``b_held()``."""
    import threading

    outcome: dict = {}

    def run(name: str, create) -> None:  # noqa: ANN001
        outcome[name] = _outcome(create)

    a = threading.Thread(target=run, args=("a", create_a))
    a.start()
    assert hold_a.inside.wait(30)
    b = threading.Thread(target=run, args=("b", create_b))
    b.start()
    hold_a.until(lambda: not b.is_alive() or b_held())
    a.join(60)
    b.join(60)
    return outcome


class _Hold:
    """Holds the first thread that reaches it until ``until``'s condition (or 30 s)."""

    def __init__(self) -> None:
        import threading

        self.inside, self.go, self.lock = threading.Event(), threading.Event(), threading.Lock()
        self.held = False

    def here(self) -> None:
        with self.lock:
            first, self.held = not self.held, True
        if first:
            self.inside.set()
            self.go.wait(30)

    def until(self, done) -> None:  # noqa: ANN001
        import time

        deadline = time.monotonic() + 30
        while not done() and time.monotonic() < deadline:
            time.sleep(0.02)
        self.go.set()


def test_two_creates_of_one_root_at_once_leave_the_winners_repository(tmp_path, monkeypatch, backend):
    """The loser of two creates must not delete the root it took for its own: the winner's repository is in it."""
    if backend != "sqlite-local":
        pytest.skip("the root's directory, whatever the registry")
    from pathlib import Path

    root = tmp_path / "new" / "repo"
    hold, mkdir = _Hold(), Path.mkdir

    def held(self: Path, *args, **kwargs) -> None:  # noqa: ANN002, ANN003
        if self == root:  # A, about to make the root, waits for B's whole create
            hold.here()
        return mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", held)
    outcome = _creates_at_once(lambda: Butler.create(root, run="r").close(),
                               lambda: Butler.create(root, run="r").close(), hold)
    monkeypatch.undo()

    errors = [o["error"] for o in outcome.values() if "error" in o]
    assert len(errors) == 1 and "already" in str(errors[0]), outcome
    with Butler(root, run="r") as butler:
        butler.register_dataset_type("meta", [], "dict")
        assert butler.get(butler.put({"a": 1}, "meta")) == {"a": 1}


def test_two_creates_in_one_postgresql_namespace_at_once_refuse_the_second(tmp_path, monkeypatch, backend,
                                                                          pg_engine, pg_namespace):
    if backend != "postgresql-local":
        pytest.skip("PostgreSQL's namespaces")
    import sqlalchemy as sa

    from skybutler import RepositoryExistsError
    from skybutler.registry import schema
    from support.services import PG_URL

    hold, create_views, pids = _Hold(), schema.create_views, []

    def held(conn, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003
        pids.append(conn.execute(sa.text("SELECT pg_backend_pid()")).scalar())
        hold.here()
        return create_views(conn, *args, **kwargs)

    monkeypatch.setattr(schema, "create_views", held)
    waiting = sa.text("SELECT count(*) FROM pg_stat_activity WHERE :pid = ANY(pg_blocking_pids(pid))")

    def b_waits_for_a() -> bool:
        with pg_engine.connect() as conn:
            return bool(conn.execute(waiting, {"pid": pids[0]}).scalar())

    outcome = _creates_at_once(lambda: Butler.create(tmp_path / "a", registry=PG_URL, namespace=pg_namespace).close(),
                               lambda: Butler.create(tmp_path / "b", registry=PG_URL, namespace=pg_namespace).close(),
                               hold, b_waits_for_a)

    assert outcome["a"] == {"done": True}, outcome
    assert isinstance(outcome["b"].get("error"), RepositoryExistsError), outcome
    assert not (tmp_path / "b").exists()
    with Butler(tmp_path / "a", run="r") as butler:
        butler.register_dataset_type("meta", [], "dict")
        assert butler.get(butler.put({"a": 1}, "meta")) == {"a": 1}


def test_visits_and_patches_inserted_at_once_both_get_their_overlaps(butler, backend):
    """PostgreSQL: an ingest inserts visits, then their detectors' regions, in one transaction;
    a patch inserted meanwhile locks its overlap tables, from visit_detector_region's on."""
    if backend != "postgresql-local":
        pytest.skip("SQLite's writers take turns")
    import threading

    import sqlalchemy as sa

    from support.records import square

    a, b = other(butler), other(butler)
    visit = {"instrument": "HSC", "visit": 903342, "physical_filter": "HSC-R", "day_obs": 20260315,
             "region": square(150.0, 2.0, 0.2)}
    patch = {"skymap": "rings", "tract": 0, "patch": 4, "cell_x": 0, "cell_y": 2, "region": square(150.0, 2.0, 0.1)}
    outcome: dict = {}
    changer = threading.Thread(target=lambda: outcome.update(
        patch=_outcome(lambda: b.insert_dimension_records("patch", [patch]))))
    waiting = sa.text("SELECT count(*) FROM pg_stat_activity WHERE :pid = ANY(pg_blocking_pids(pid))")

    def ingest() -> None:
        with a.registry.transaction() as conn:
            a.insert_dimension_records("visit", [visit])
            pid = conn.execute(sa.text("SELECT pg_backend_pid()")).scalar()
            changer.start()
            with butler.registry.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as watch:
                for _ in range(3000):  # until the patch's writer waits for this transaction (at most a minute)
                    if watch.execute(waiting, {"pid": pid}).scalar() or not changer.is_alive():
                        break
                    threading.Event().wait(0.02)
            a.insert_dimension_records("visit_detector_region", [
                {"instrument": "HSC", "visit": 903342, "detector": 0, "region": square(150.0, 2.0, 0.1)}])

    outcome["ingest"] = _outcome(ingest)
    changer.join(60)

    assert outcome == {"ingest": {"done": True}, "patch": {"done": True}}, outcome
    records = butler.registry.dimension_records
    assert len(records.overlap_rows("visit", "patch", [("HSC", 903342)], [("rings", 0, 4)])) == 1
    assert len(records.overlap_rows("visit_detector_region", "patch", [("HSC", 903342, 0)], [("rings", 0, 4)])) == 1


def test_marking_lost_a_dataset_removed_meanwhile_skips_it(butler):
    """``verify --mark-lost`` marks datasets whose files are missing; one removed meanwhile is skipped
    (PostgreSQL: its removal was not committed when the mark looked for it, a raw foreign-key error)."""
    from skybutler.registry import integrity_sql

    gone = butler.put({"m": 1}, "meta", instrument="HSC", detector=0)
    kept = butler.put({"m": 2}, "meta", instrument="HSC", detector=1)
    a, b = other(butler), other(butler)

    outcome = while_a_holds(a.registry, lambda: a.registry.remove_datasets([gone.id]),
                            lambda: integrity_sql.mark_lost(b.registry, [(gone.id, "missing"), (kept.id, "missing")]))

    assert outcome == {"done": True}, outcome
    assert set(integrity_sql.lost_marks(butler.registry)) == {kept.id}
