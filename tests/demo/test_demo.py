"""The demo end to end: DMTN-059 counts, provenance of every output, fluxes recovered."""

from __future__ import annotations

import pytest

from skybutler.demo.run import OUTPUT_RUN, STEPS, run_demo

# Every test reads the one demo run of the module fixture: on one xdist worker, it runs once.
pytestmark = pytest.mark.xdist_group("demo")

EXPECTED = {"processCcd": 16, "makeCoaddTempExp": 32, "assembleCoadd": 8, "detectCoaddSources": 8,
            "mergeCoaddDetections": 4, "measureCoaddSources": 8, "mergeCoaddMeasurements": 4,
            "forcedPhotCoadd": 8}


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    report = run_demo(root, jobs=2)
    from skybutler import Butler

    return report, Butler(root / "repo")


def test_executions_per_step_match_dmtn_059(demo):
    report, _ = demo
    assert report.graph_counts == EXPECTED
    assert {step: report.executions[step] for step in STEPS} == {s: {"succeeded": n} for s, n in EXPECTED.items()}
    assert len(report.coadd_files) == 8


def test_every_output_has_a_generating_execution(demo):
    _, butler = demo
    from skybutler.registry.provenance_sql import generating_executions

    for dataset_type in ("calexp", "src", "deepCoadd_directWarp", "deepCoadd", "deepCoadd_calexp",
                         "deepCoadd_mergeDet", "deepCoadd_ref", "deepCoadd_forced_src"):
        ids = [r.id for r in butler.query_datasets(dataset_type, collections=[OUTPUT_RUN])]
        assert ids, dataset_type
        generated = generating_executions(butler.registry, ids)
        assert set(generated) == set(ids), f"{dataset_type}: outputs without a generating execution"


def test_every_coadd_names_the_warps_it_used_and_drops_the_bad_seeing_visit(demo):
    _, butler = demo
    from skybutler.demo.synthetic import BAD_SEEING_VISIT
    from skybutler.registry.provenance_sql import derived_edges

    warps = {r.id: r for r in butler.query_datasets("deepCoadd_directWarp", collections=[OUTPUT_RUN])}
    for coadd in butler.query_datasets("deepCoadd", collections=[OUTPUT_RUN]):
        sources = [warps[src] for dst, src in derived_edges(butler.registry, [coadd.id]) if dst == coadd.id]
        visits = {w.data_id["visit"] for w in sources}
        assert visits, f"{coadd} names no warps"
        assert all(w.data_id["patch"] == coadd.data_id["patch"] for w in sources)
        if coadd.data_id["band"] == "r":
            # The r band has one visit with 3x worse seeing; the coadd must leave it out.
            assert BAD_SEEING_VISIT not in visits and len(visits) == 3
        else:
            assert len(visits) == 4


def test_forced_photometry_recovers_the_injected_fluxes(demo):
    report, _ = demo
    # Isolated stars with S/N >= 20 have <= 5% flux errors each; ~90 of them per band give a
    # median good to ~0.5%, and the per-visit zero points add ~0.3%: 3% is a generous bound
    # that still catches any calibration or unit mistake (those are 10% or more).
    for band in ("r", "i"):
        f = report.flux[band]
        assert f["n_matched"] >= 50
        assert abs(f["median_ratio"] - 1.0) < 0.03, f
        assert f["scatter"] < 0.05, f


def test_the_demo_runs_as_shared_nothing_batch_jobs(demo):
    report, butler = demo
    from skybutler.registry import batch_sql

    assert report.jobs["states"] == {"succeeded": report.jobs["jobs"]}
    # one job per visit (its CCDs and warps), one per patch and band (coadd), one per patch (multi-band)
    visits = {r.data_id["visit"] for r in butler.query_datasets("calexp", collections=[OUTPUT_RUN])}
    assert report.jobs["per_cluster"] == {"visit": len(visits), "coadd": 8, "multiband": 4}
    row = batch_sql.get_submission(butler.registry, report.jobs["submission"])
    assert row["state"] == "succeeded" and row["run"] == OUTPUT_RUN


def test_running_the_demo_again_reports_without_running_anything(demo):
    report, butler = demo
    from skybutler.registry.provenance_sql import executions

    before = len(executions(butler.registry, run=OUTPUT_RUN))
    again = run_demo(report.root, jobs=2)
    assert len(executions(butler.registry, run=OUTPUT_RUN)) == before
    assert again.executions == report.executions
    assert again.coadd_files == report.coadd_files
