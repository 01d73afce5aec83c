"""Integrity commands: verify a repository's files against its registry, rebuild a lost registry."""

from __future__ import annotations

import json
import sys

import click
from rich.console import Console
from rich.table import Table

console = Console()

REPO = click.argument("repo", type=click.Path(file_okay=False))

_SHOWN = 5  # paths shown per kind of problem in the table (--json lists up to MAX_LISTED)


@click.command()
@REPO
@click.option("--no-checksums", is_flag=True,
              help="Compare sizes only: much faster, but blind to bit-rot (same size, different bytes).")
@click.option("--run", "runs", multiple=True, metavar="RUN",
              help="Check only the files of this run (repeat for more); skips the search for dark files.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document (for scripts) instead of tables.")
@click.option("--quarantine", is_flag=True,
              help="Move dark files (no dataset names them) to .skybutler/quarantine/<time>/; never deletes. "
                   "Files placed less than --min-age ago stay (a write or a batch job may be about to name them).")
@click.option("--min-age", "min_age", type=click.FloatRange(min=0), default=None, metavar="SECONDS",
              help="With --quarantine: move only dark files placed at least this long ago (default: 3600, an hour).")
@click.option("--mark-lost", is_flag=True,
              help="Record lost and corrupted files in the registry (get then refuses them, naming the file); "
                   "clears the record of files found back and correct.")
@click.option("--workers", type=click.IntRange(min=1), default=8, show_default=True,
              help="Files checked in parallel.")
def verify(repo: str, no_checksums: bool, runs: tuple[str, ...], as_json: bool, quarantine: bool, min_age: float | None,
           mark_lost: bool, workers: int) -> None:
    """Check that every registered file of REPO is there, whole and unchanged, and nothing else is.

    Reports, per kind: lost (registered, no file), size and checksum (the file changed:
    truncated, bit-rot), unreadable, dark (a file no dataset names), temporary (left by
    a write that died) and removal (left by an interrupted removal). Nothing is ever
    repaired by overwriting a file.

    Exit code 0: no problems; 1: problems found (or an error). What to do next:
    restore lost or corrupted files from a copy and run again with --mark-lost to
    clear their marks; look at quarantined dark files, then delete or ingest them;
    temporaries and removals are cleaned by a later write into their directory.
    """
    from ..butler import Butler
    from ..ops.verify import PROBLEM_KINDS, QUARANTINE_MIN_AGE
    from ..ops.verify import verify as run_verify

    min_age = QUARANTINE_MIN_AGE if min_age is None else min_age
    butler = Butler(repo, writeable=quarantine or mark_lost)
    report = run_verify(butler, checksums=not no_checksums, workers=workers, progress=not as_json,
                        quarantine=quarantine, mark_lost=mark_lost, runs=list(runs) or None,
                        quarantine_min_age=min_age)
    if as_json:
        click.echo(json.dumps(report.to_dict()))
        sys.exit(0 if report.ok else 1)
    what = "sizes and checksums" if report.checksums else "sizes only"
    console.print(f"Checked {report.files_checked} registered file(s) ({what}, "
                  f"{report.bytes_read / 1e6:.1f} MB read) and {report.files_walked} file(s) under "
                  f"{report.root} in {report.seconds:.1f} s")
    if report.ok:
        console.print("[green]verify: no problems[/]")
        sys.exit(0)
    table = Table(title="Problems found")
    for column in ("kind", "count", "meaning", "first paths"):
        table.add_column(column)
    for kind, meaning in PROBLEM_KINDS.items():
        count = report.counts[kind]
        if count:
            shown = [p.path + (f"  ({p.dataset})" if p.dataset else "") for p in report.problems[kind][:_SHOWN]]
            more = [f"... and {count - len(shown)} more"] if count > len(shown) else []
            table.add_row(kind, str(count), meaning, "\n".join(shown + more))
    console.print(table)
    if report.quarantine:
        console.print(f"{report.quarantined} dark file(s) moved to {report.quarantine} under {report.root}")
    if report.too_recent:
        console.print(f"{report.too_recent} dark file(s) placed less than {min_age:g} s ago left in place "
                      "(a write or a batch job may be about to name them; --min-age 0 moves them too)")
    if report.named_meanwhile:
        console.print(f"{report.named_meanwhile} file(s) found dark were stored by a dataset meanwhile: left in place")
    if mark_lost:
        console.print(f"Marked lost: {report.marked_lost}; marks cleared: {report.cleared}")
    sys.exit(1)


@click.command()
@REPO
def rebuild(repo: str) -> None:
    """Recreate the lost registry of REPO from its files and run manifests.

    For a repository whose registry database is gone (the SQLite file deleted, or a
    PostgreSQL schema dropped): dataset types, runs, datasets with their ids, data ids
    and files (sizes and checksums recomputed) come back; dimension records come back
    with their keys only, other collections and provenance do not. Refuses a
    repository whose registry still holds datasets: move it aside first (rename
    registry.sqlite3, or ALTER SCHEMA ... RENAME on PostgreSQL).
    """
    from ..ops.rebuild import rebuild as run_rebuild

    report = run_rebuild(repo, progress=True)
    console.print(f"Rebuilt the registry of {repo}: {report.datasets} dataset(s) of {len(report.dataset_types)} "
                  f"type(s) in {len(report.runs)} run(s) from {report.files} file(s) in {report.seconds:.1f} s")
    for note in report.notes:
        console.print(f"[yellow]note:[/] {note}")
