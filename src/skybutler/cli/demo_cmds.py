"""`skybutler demo`: the project's proof, end to end on the embedded default."""

from __future__ import annotations

from pathlib import Path

import click
from rich.console import Console

from ..errors import ExecutionError, RepositoryExistsError


@click.command()
@click.argument("directory", type=click.Path(file_okay=False), default="demo_output")
@click.option("-j", "--jobs", type=int, default=2, show_default=True, help="Worker processes.")
@click.option("--visits", type=int, default=None, help="Visits per band (default: all 4).")
@click.option("--engine", type=click.Choice(["local", "parsl", "slurm", "direct"]), default="local",
              show_default=True,
              help="local: the batch service with a process per job; parsl: the batch service on Parsl "
                   "workers; slurm: one Slurm job per job on the cluster sinfo answers for; direct: the "
                   "single-machine executor (skybutler pipeline run), for comparison.")
def demo(directory: str, jobs: int, visits: int | None, engine: str) -> None:
    """Make synthetic HSC-like data and run the 8-step DMTN-059 pipeline on it.

    Creates DIRECTORY with the raw files and a repository (SQLite + local files),
    ingests the raws with the hsc-raw header plugin, and submits the DMTN-059
    campaign (DIRECTORY/dmtn059_campaign.yaml) to the batch service: the quantum
    graph (processCcd 16, makeCoaddTempExp 32, assembleCoadd 8, ... forcedPhotCoadd
    8) is cut into shared-nothing jobs that stage their inputs, run in scratch and
    are merged back. Prints the DMTN-059 style report: executions per step, the
    deepCoadd_calexp files, the jobs, wall time and how well forced photometry
    recovers the injected fluxes. Run again on a DIRECTORY whose demo was
    interrupted, it resumes (a `batch restart`); on a finished one it reports.
    """
    from ..demo.run import format_report, median_ratio_ok, run_demo

    repo = Path(directory) / "repo"
    if repo.exists() and not (repo / "skybutler.yaml").exists():
        raise RepositoryExistsError(f"{repo} exists but is not a repository; remove it or pick another directory")
    console = Console()
    with console.status("demo") as status:
        report = run_demo(directory, jobs=jobs, visits=visits, engine=engine, progress=lambda msg: status.update(f"demo: {msg}"))
    console.print(format_report(report))
    failed = sum(n for per in report.executions.values() for s, n in per.items() if s != "succeeded")
    if failed or not median_ratio_ok(report):
        raise ExecutionError(f"The demo did not succeed: {failed} execution(s) failed or fluxes were not recovered")
