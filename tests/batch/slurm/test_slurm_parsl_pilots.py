"""The ``parsl`` engine's pilot jobs on the real cluster: HighThroughputExecutor blocks through SlurmProvider.

A toy campaign (a job per visit, two visits) runs on one block, a Slurm job holding a Parsl worker
pool, and every job's outputs are merged; the block is a job Slurm shows, and it is
gone (cancelled by Parsl) once the submission ends.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from skybutler.batch import api
from skybutler.pipeline import QuantumGraph
from skybutler.registry import batch_sql
from support.batch_campaign import make_campaign
from support.batch_checks import assert_run_complete_and_whole

pytestmark = pytest.mark.slurm

TESTS_DIR = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def test_a_toy_campaign_runs_on_parsl_pilot_blocks_submitted_to_slurm(slurm_cluster, repo, tmp_path):
    campaign = make_campaign(
        tmp_path, tasks=["make_calexp", "gather_visit"], where="visit IN (903334, 903338)",
        clustering={"clusters": [{"name": "visit", "tasks": ["make_calexp", "gather_visit"], "dimensions": ["visit"]}]},
        engine={"name": "parsl", "settings": {
            "provider": {"name": "slurm", "partition": "debug", "nodes_per_block": 1, "init_blocks": 1,
                         "min_blocks": 0, "max_blocks": 1, "walltime": "00:10:00", "exclusive": False,
                         # One core: the block leaves the other to the other tests' Slurm jobs.
                         "cores_per_node": 1, "mem_per_node": 2,
                         # What a site's worker_init does: the project's environment, activated.
                         "worker_init": f"export PATH={BIN}:$PATH PYTHONPATH={TESTS_DIR}"},
            "executor": {"max_workers_per_node": 1}}})
    result = api.submit(repo, campaign)
    assert result.summary is not None and result.summary.state.value == "succeeded", result.summary
    row = batch_sql.get_submission(repo.registry, result.name)
    assert_run_complete_and_whole(repo, QuantumGraph.read(Path(row["directory"]) / "graph.qgraph"))
    # The block was a Slurm job of Parsl's, with the provider's resources, cancelled by Parsl at the end.
    (script,) = [p for p in (Path(row["directory"]) / "engine" / "parsl").glob("*/submit_scripts/parsl.skybutler.*")
                 if p.suffix not in (".stdout", ".stderr")]
    text = script.read_text()
    assert "#SBATCH --mem=2g" in text and "#SBATCH --cpus-per-task=1" in text and "#SBATCH --partition=debug" in text
    assert _final_state(script.name).startswith("CANCELLED")


def _final_state(job_name: str) -> str:
    """The block's state in sacct once it is final (accounting is written a moment after the job ends)."""
    deadline = time.monotonic() + 30
    while True:
        out = subprocess.run(["sacct", "-X", "-n", "-P", "-o", "State", "--name", job_name],
                             capture_output=True, text=True, check=True).stdout.strip()
        if out and out.split()[0] not in ("PENDING", "RUNNING", "COMPLETING") or time.monotonic() > deadline:
            return out
        time.sleep(0.2)
