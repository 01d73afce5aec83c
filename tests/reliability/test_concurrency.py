"""Eight processes writing to one repository at once (SQLite and PostgreSQL).

They open the same new runs, register the same dataset types and dimension records,
put datasets of their own, and all race to put one data id: no process crashes,
nothing is lost, and exactly one wins the race.
"""

from __future__ import annotations

import uuid

import pytest
import sqlalchemy as sa

from skybutler import Butler
from support.forkserver import forkserver_context
from support.racing_writers import write
from support.services import PG_URL

WORKERS = 8
PUTS = 12


def race(root: str) -> list[dict]:
    # Forked from a server that imported skybutler once, not eight interpreters importing it
    # each (seconds apiece on a busy machine): still eight processes with their own connections.
    context = forkserver_context("support.racing_writers")
    manager = context.Manager()
    barrier = manager.Barrier(WORKERS)
    with context.Pool(WORKERS) as pool:
        results = pool.starmap(write, [(root, w, PUTS, barrier) for w in range(WORKERS)])
    manager.shutdown()
    return results


def check(root: str, results: list[dict]) -> None:
    errors = [r["error"] for r in results if r["error"]]
    assert not errors, errors[0]
    butler = Butler(root, writeable=False)
    stored = {str(ref.id) for name in ("thing0", "thing1")
              for ref in butler.query_datasets(name, collections=[f"shared/run{i}" for i in range(3)])}
    put = {ref_id for r in results for ref_id in r["put"]}
    assert len(put) == WORKERS * PUTS and stored == put  # nothing lost, nothing extra
    for ref in butler.query_datasets("thing0", collections=["shared/run0", "shared/run2"]):
        assert butler.get(ref)["worker"] % 2 == 0
    winners = [r for r in results if not r["race"].startswith("lost")]
    assert len(winners) == 1
    (prize,) = butler.query_datasets("prize", collections=["race"])
    assert str(prize.id) == winners[0]["race"]
    assert butler.get(prize) == {"winner": winners[0]["worker"]}
    assert all("already exists" in r["race"] for r in results if r is not winners[0])
    assert sorted(c["name"] for c in butler.registry.collections()) == ["race", "shared/run0", "shared/run1",
                                                                         "shared/run2"]


def test_eight_writers_on_sqlite(tmp_path):
    root = str(tmp_path / "repo")
    Butler.create(root).close()
    check(root, race(root))


@pytest.mark.postgresql
def test_eight_writers_on_postgresql(tmp_path, pg_engine):
    namespace = f"t_{uuid.uuid4().hex[:12]}"
    root = str(tmp_path / "repo")
    try:
        Butler.create(root, registry=PG_URL, namespace=namespace).close()
        check(root, race(root))
    finally:
        with pg_engine.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{namespace}" CASCADE'))
