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
def demo(directory: str, jobs: int, visits: int | None) -> None:
    """Make synthetic HSC-like data and run the 8-step DMTN-059 pipeline on it.

    Creates DIRECTORY (which must not hold a demo already) with the raw files
    and a repository (SQLite + local files), ingests the raws with the hsc-raw
    header plugin, builds the quantum graph (processCcd 16, makeCoaddTempExp 32,
    assembleCoadd 8, ... forcedPhotCoadd 8), runs it, and prints the DMTN-059
    style report: executions per step, the deepCoadd_calexp files, wall time and
    how well forced photometry recovers the injected fluxes.
    """
    from ..demo.run import format_report, median_ratio_ok, run_demo

    if (Path(directory) / "repo").exists():
        raise RepositoryExistsError(f"{directory} already holds a demo; remove it or pick another directory")
    console = Console()
    with console.status("demo") as status:
        report = run_demo(directory, jobs=jobs, visits=visits, progress=lambda msg: status.update(f"demo: {msg}"))
    console.print(format_report(report))
    failed = sum(n for per in report.executions.values() for s, n in per.items() if s != "succeeded")
    if failed or not median_ratio_ok(report):
        raise ExecutionError(f"The demo did not succeed: {failed} execution(s) failed or fluxes were not recovered")
