"""Spatial joins give exactly the pairs whose regions overlap, the same as a brute-force check.

Random visits, detector regions, tracts and patches (hypothesis); every combination of
region-bearing dimensions, and constraints on dimensions that are not requested, are
compared with `Region.overlaps` pair by pair, on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import shutil
import tempfile
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from skybutler import Butler, RepositoryConfig
from skybutler.dimensions import Region
from support.records import square

# A square's centre and half width (degrees): small fields near one spot, so that many
# pairs overlap and many do not.
squares = st.tuples(st.floats(9.0, 11.0), st.floats(-1.0, 1.0), st.floats(0.05, 0.6))


@st.composite
def skies(draw):
    n_visits = draw(st.integers(1, 4))
    n_detectors = draw(st.integers(1, 3))
    visits = {900 + i: draw(squares) for i in range(n_visits)}
    # Some (visit, detector) pairs have no region at all: they must never pair with the sky.
    vdr = {(v, d): draw(squares) for v in visits for d in range(n_detectors) if draw(st.booleans())}
    tracts = {t: draw(squares) for t in range(draw(st.integers(1, 3)))}
    patches = {(t, p): draw(squares) for t in tracts for p in range(draw(st.integers(1, 3)))}
    return {"visits": visits, "detectors": n_detectors, "vdr": vdr, "tracts": tracts, "patches": patches}


def load(butler: Butler, sky: dict) -> None:
    butler.insert_dimension_records("instrument", [{"instrument": "HSC"}])
    butler.insert_dimension_records("band", [{"band": "r"}])
    butler.insert_dimension_records("physical_filter", [{"instrument": "HSC", "physical_filter": "R", "band": "r"}])
    butler.insert_dimension_records("detector", [{"instrument": "HSC", "detector": d}
                                                 for d in range(sky["detectors"])])
    butler.insert_dimension_records("visit", [
        {"instrument": "HSC", "visit": v, "physical_filter": "R", "region": square(*s)}
        for v, s in sky["visits"].items()])
    if sky["vdr"]:
        butler.insert_dimension_records("visit_detector_region", [
            {"instrument": "HSC", "visit": v, "detector": d, "region": square(*s)} for (v, d), s in sky["vdr"].items()])
    butler.insert_dimension_records("skymap", [{"skymap": "sky"}])
    butler.insert_dimension_records("tract", [{"skymap": "sky", "tract": t, "region": square(*s)}
                                              for t, s in sky["tracts"].items()])
    butler.insert_dimension_records("patch", [{"skymap": "sky", "tract": t, "patch": p, "region": square(*s)}
                                              for (t, p), s in sky["patches"].items()])


def overlap(a, b) -> bool:
    return Region.from_vertices(square(*a)).overlaps(Region.from_vertices(square(*b)))


def expected(sky: dict) -> dict[str, set[tuple]]:
    v, vdr, t, p = sky["visits"], sky["vdr"], sky["tracts"], sky["patches"]
    return {
        "visit,tract": {(vi, ti) for vi in v for ti in t if overlap(v[vi], t[ti])},
        "visit,patch": {(vi, ti, pi) for vi in v for (ti, pi) in p if overlap(v[vi], p[ti, pi])},
        "visit,detector,tract": {(vi, di, ti) for (vi, di) in vdr for ti in t if overlap(vdr[vi, di], t[ti])},
        "visit,detector,patch": {(vi, di, ti, pi) for (vi, di) in vdr for (ti, pi) in p
                                 if overlap(vdr[vi, di], p[ti, pi])},
    }


def answers(butler: Butler) -> dict[str, set[tuple]]:
    def q(dims, keys, **kwargs):
        return {tuple(di[k] for k in keys) for di in butler.query_data_ids(dims, **kwargs)}

    return {
        "visit,tract": q(["visit", "tract"], ["visit", "tract"]),
        "visit,patch": q(["visit", "patch"], ["visit", "tract", "patch"]),
        "visit,detector,tract": q(["visit", "detector", "tract"], ["visit", "detector", "tract"]),
        "visit,detector,patch": q(["visit", "detector", "patch"], ["visit", "detector", "tract", "patch"]),
    }


def check(butler: Butler, sky: dict) -> None:
    want = expected(sky)
    assert answers(butler) == want
    # A constraint on a dimension that is not requested joins it (spatially here).
    for vi in sky["visits"]:
        tracts = {di["tract"] for di in butler.query_data_ids(["tract"], where=f"visit = {vi}")}
        assert tracts == {t for v, t in want["visit,tract"] if v == vi}
        patches = {(di["tract"], di["patch"]) for di in butler.query_data_ids(["patch"], data_id={"visit": vi})}
        assert patches == {(t, p) for v, t, p in want["visit,patch"] if v == vi}


def _empty_repository(root: Path, config: RepositoryConfig) -> Butler:
    """Write ``config`` at ``root`` and open it: a new, empty repository whose registry the caller copied.

    The registry is a copy of the test run's empty one (see tests/conftest.py: ``standard_records``
    and ``pg_template``), which is what `Butler.create` makes, without its DDL per example.
    """
    config.write(root)
    return Butler(root)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(sky=skies())
def test_every_spatial_join_matches_brute_force_on_sqlite(sky, standard_records):
    with tempfile.TemporaryDirectory() as root:
        shutil.copyfile(standard_records.empty_sqlite_file, Path(root) / "registry.sqlite3")
        config = RepositoryConfig()
        config.datastore.root = f"memory://spatial-{uuid.uuid4().hex}"
        butler = _empty_repository(Path(root), config)
        try:
            load(butler, sky)
            check(butler, sky)
        finally:
            butler.close()


@pytest.mark.postgresql
@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(sky=skies())
def test_every_spatial_join_matches_brute_force_on_postgresql(sky, pg_engine, pg_template, tmp_path_factory):
    from support.services import PG_URL

    namespace = f"t_{uuid.uuid4().hex[:12]}"
    config = RepositoryConfig()
    config.registry.db, config.registry.namespace = PG_URL, namespace
    try:
        with pg_engine.begin() as conn:
            pg_template.copy_into(conn, namespace, records=False)
        butler = _empty_repository(tmp_path_factory.mktemp("pg"), config)
        try:
            load(butler, sky)
            check(butler, sky)
        finally:
            butler.close()
    finally:
        with pg_engine.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{namespace}" CASCADE'))


def test_region_predicates_match_brute_force(tmp_path):
    sky = {"visits": {900: (10.0, 0.0, 0.3), 901: (10.5, 0.0, 0.3), 902: (9.0, 0.5, 0.1)}, "detectors": 1,
           "vdr": {}, "tracts": {0: (10.0, 0.0, 1.0)}, "patches": {(0, 0): (10.0, 0.0, 0.2)}}
    butler = Butler.create(tmp_path / "repo")
    load(butler, sky)
    found = {di["visit"] for di in butler.query_data_ids(["visit"], where="visit.region OVERLAPS POINT(10.25, 0.0)")}
    assert found == {900, 901}
    found = {di["visit"] for di in butler.query_data_ids(
        ["visit"], where="visit.region OVERLAPS POLYGON(8.95, 0.45, 9.05, 0.45, 9.05, 0.55)")}
    assert found == {902}
    # Through a dimension that is not requested: the tracts that contain a point's visits.
    found = {di["tract"] for di in butler.query_data_ids(["tract"], where="visit.region OVERLAPS POINT(9.0, 0.5)")}
    assert found == {0}


def test_a_task_over_visit_tract_patch_gets_a_quantum_per_overlapping_pair_only(tmp_path):
    from skybutler.registry import pipeline_sql

    sky = {"visits": {900: (10.0, 0.0, 0.3), 901: (11.0, 0.0, 0.3)}, "detectors": 1, "vdr": {},
           "tracts": {0: (10.5, 0.0, 1.0)},
           "patches": {(0, 0): (10.0, 0.0, 0.2), (0, 1): (11.0, 0.0, 0.2), (0, 2): (10.5, 0.8, 0.1)}}
    butler = Butler.create(tmp_path / "repo", run="in")
    load(butler, sky)
    butler.register_dataset_type("visit_summary", ["visit"], "dict")
    for v in sky["visits"]:
        butler.put({"v": v}, "visit_summary", instrument="HSC", visit=v)
    # The rows the graph builder groups into quanta of a (visit, tract, patch) task with a visit input.
    dims, _implied, rows = pipeline_sql.data_id_rows(butler.registry, ["visit", "tract", "patch"],
                                                     datasets=["visit_summary"], collections=["in"])
    pos = {d: i for i, d in enumerate(dims)}
    pairs = {(r[pos["visit"]], r[pos["patch"]]) for r in rows}
    assert pairs == {(900, 0), (901, 1)} == {(v, p) for v in sky["visits"] for (_t, p) in sky["patches"]
                                             if overlap(sky["visits"][v], sky["patches"][0, p])}


def test_a_quantum_graph_over_visit_tract_patch_has_one_quantum_per_overlapping_pair(tmp_path):
    from skybutler.pipeline import Pipeline, build_quantum_graph

    sky = {"visits": {900: (10.0, 0.0, 0.3), 901: (11.0, 0.0, 0.3), 902: (10.5, 0.0, 0.35)}, "detectors": 1,
           "vdr": {}, "tracts": {0: (10.5, 0.0, 1.0), 1: (20.0, 0.0, 1.0)},
           "patches": {(0, 0): (10.0, 0.0, 0.2), (0, 1): (11.0, 0.0, 0.2), (0, 2): (10.5, 0.8, 0.1),
                       (1, 0): (20.0, 0.0, 0.2)}}
    butler = Butler.create(tmp_path / "repo", run="in")
    load(butler, sky)
    butler.register_dataset_type("visit_summary", ["visit"], "dict")
    for v in sky["visits"]:
        butler.put({"v": v}, "visit_summary", instrument="HSC", visit=v)
    pipeline = Pipeline.from_mapping({"tasks": {"patch_summary": "support.toy_tasks:PatchSummary"}})
    graph = build_quantum_graph(butler, pipeline, input_collections=["in"], output_run="out")
    got = {(q.data_id["visit"], q.data_id["tract"], q.data_id["patch"]) for q in graph.quanta.values()}
    want = {(v, t, p) for v in sky["visits"] for (t, p) in sky["patches"]
            if overlap(sky["visits"][v], sky["patches"][t, p])}
    assert got == want and len(graph.quanta) == len(want)
    assert (902, 0, 2) not in got  # same tract, but that patch lies outside the visit
