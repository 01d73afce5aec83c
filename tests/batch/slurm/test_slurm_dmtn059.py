"""The DMTN-059 campaign of `skybutler demo` through the slurm engine: one Slurm job per batch job.

One run is checked by one test, so that pytest-xdist never makes two. The campaign is the
demo's, with resources that each job's ``scontrol show job`` must show, on the demo's data
cut to one visit per band (``visits=1``): every step and every cluster of the campaign
still runs, as 14 Slurm jobs instead of 20 (each a fresh interpreter: seconds apiece on a
busy machine). What this test checks is the engine's wiring (one Slurm job per batch job,
the campaign's resources in each, every job accounted as completed), which six more visit
jobs would only repeat; the DMTN-059 counts on all 8 visits are checked by
tests/demo/test_demo.py, whose graph and jobs are the same whatever the engine.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from skybutler.batch.engines.slurm import JOB_ID_FILE
from skybutler.demo.run import STEPS, campaign_text, run_demo
from skybutler.registry import batch_sql
from support.slurm_cluster import accounting_works, require

pytestmark = pytest.mark.slurm

EXPECTED = {"processCcd": 4, "makeCoaddTempExp": 8, "assembleCoadd": 8, "detectCoaddSources": 8,
            "mergeCoaddDetections": 4, "measureCoaddSources": 8, "mergeCoaddMeasurements": 4,
            "forcedPhotCoadd": 8}
"""Executions per step, as DMTN-059 counts them, for one visit per band: 2 visits of 2 CCDs, 4 patches, 2 bands."""

JOBS = 14
"""One per visit (2), one per patch and band (8), one per patch (4)."""

RESOURCES = {"default": {"memory_mb": 1500, "wall_time_s": 1200},
             "tasks": {"assembleCoadd": {"memory_mb": 2500, "wall_time_s": 1500}}}


@pytest.fixture(scope="module")
def slurm_demo(slurm_cluster, tmp_path_factory):
    """(report, butler, {job name: Slurm job id}) of the demo run through Slurm."""
    from skybutler import Butler

    root = tmp_path_factory.mktemp("slurm-demo")
    campaign = yaml.safe_load(campaign_text(engine="slurm"))
    campaign["resources"] = RESOURCES
    campaign["engine"]["settings"]["status_interval_s"] = 0.25
    (root / "dmtn059_campaign.yaml").write_text(yaml.safe_dump(campaign, sort_keys=False))  # the demo keeps it
    report = run_demo(root, engine="slurm", visits=1)
    butler = Butler(root / "repo")
    row = batch_sql.get_submission(butler.registry, report.jobs["submission"])
    jobs = {p.parent.parent.name: p.read_text().strip()
            for p in Path(row["directory"]).glob(f"jobs/*/attempt_*/{JOB_ID_FILE}")}
    yield report, butler, jobs
    butler.close()


def test_dmtn059_through_slurm_gives_the_executions_per_step_as_slurm_jobs_with_the_campaign_resources(
        slurm_demo):
    report, _, jobs = slurm_demo
    assert report.graph_counts == EXPECTED
    assert {step: report.executions[step] for step in STEPS} == {s: {"succeeded": n} for s, n in EXPECTED.items()}
    assert report.jobs["per_cluster"] == {"visit": 2, "coadd": 8, "multiband": 4}
    assert report.jobs["states"] == {"succeeded": JOBS} and len(jobs) == JOBS  # one Slurm job per batch job
    campaign_resources_reach_sbatch(jobs)
    if not accounting_works():
        # Last: what comes before holds without accounting (a cluster started where MariaDB is missing).
        require("Slurm accounting (sacct; slurmdbd with MariaDB)")
    sacct_shows_every_job_completed(jobs)


def sacct_shows_every_job_completed(jobs: dict[str, str]) -> None:
    out = subprocess.run(["sacct", "-X", "-n", "-P", "-o", "JobID,JobName%60,State,ExitCode", "-j",
                          ",".join(jobs.values())], capture_output=True, text=True, check=True).stdout
    rows = {line.split("|")[0]: line.split("|")[1:] for line in out.splitlines()}
    assert set(rows) == set(jobs.values())
    for name, slurm_id in jobs.items():
        job_name, state, exit_code = rows[slurm_id]
        assert job_name.startswith(f"skybutler.{name}.") and (state, exit_code) == ("COMPLETED", "0:0")


def campaign_resources_reach_sbatch(jobs: dict[str, str]) -> None:
    for name, slurm_id in jobs.items():
        out = subprocess.run(["scontrol", "-o", "show", "job", slurm_id], capture_output=True, text=True,
                             check=True).stdout
        shown = dict(item.partition("=")[::2] for item in out.split())
        # The coadd cluster runs assembleCoadd: its job asks for what that task asks.
        memory, minutes = (2500, 25) if name.startswith("coadd") else (1500, 20)
        assert (shown["MinMemoryNode"], shown["TimeLimit"], shown["NumCPUs"]) == (
            f"{memory}M", f"00:{minutes}:00", "1"), name
