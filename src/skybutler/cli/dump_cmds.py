"""Dump commands: ``skybutler export`` (a repository's content to a portable dump) and ``skybutler import``."""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING

import click
from rich.console import Console
from rich.table import Table

from .repo_cmds import REPO, LazyChoice, collection_names, exit_on_conflicts, open_butler, parse_bind

if TYPE_CHECKING:
    from ..transfer.content import TransferReport

console = Console()


def _summary(title: str, report: TransferReport, seconds: float, *, imported: bool) -> Table:
    table = Table(title=title, show_header=False)
    table.add_column("what")
    table.add_column("count", justify="right")
    rate = f" ({report.datasets_added / seconds:,.0f}/s)" if seconds > 0 and report.datasets_added else ""
    table.add_row("datasets added" if imported else "datasets written", f"{report.datasets_added:,}{rate}")
    if imported:
        table.add_row("datasets skipped (already there, identical)", f"{report.datasets_skipped:,}")
        table.add_row("conflicts (refused, nothing overwritten)", f"{len(report.conflicts):,}")
    table.add_row("files copied", f"{report.files_copied:,}")
    if imported:
        table.add_row("files skipped (already there, identical)", f"{report.files_skipped:,}")
    table.add_row("bytes copied", f"{report.bytes_copied:,} ({report.bytes_copied / 1e6:,.1f} MB)")
    table.add_row("dimension records", f"{report.dimension_records_added:,}")
    table.add_row("collections", f"{report.collections_added:,}")
    table.add_row("executions", f"{report.executions_added:,}" +
                  (f" (+{report.executions_skipped:,} skipped)" if report.executions_skipped else ""))
    table.add_row("time", f"{seconds:,.1f} s")
    return table


@click.command("export")
@REPO
@click.argument("dest", type=click.Path())
@click.argument("dataset_types", nargs=-1)
@click.option("-c", "--collections", multiple=True,
              help="Collections to export datasets from (repeat or comma-separate). TAGGED, CALIBRATION and "
                   "CHAINED ones named here travel with their memberships. Default: every collection.")
@click.option("--where", help="Query expression selecting datasets, e.g. \"visit = 903334 AND band = 'r'\".")
@click.option("--bind", multiple=True, help="NAME=VALUE for an identifier in --where (repeatable).")
@click.option("--files", type=click.Choice(["none", "directory", "zip"]), default="none", show_default=True,
              help="Also copy the datasets' file bytes into the dump: 'directory' for a directory DEST, "
                   "'zip' for a DEST ending in .zip. 'none' writes registry content only.")
@click.option("--mode", type=click.Choice(["limited", "full"]), default="limited", show_default=True,
              help="'full' also exports the provenance ancestors of the datasets (what they were made from).")
def export(repo: str, dest: str, dataset_types: tuple[str, ...], collections: tuple[str, ...], where: str | None,
           bind: tuple[str, ...], files: str, mode: str) -> None:
    """Export datasets of REPO to a portable dump at DEST (a new directory, or a path ending in .zip).

    Exports the datasets of DATASET_TYPE... (default: every type) found in the collections,
    with the dimension records, dataset types, collections, memberships, certifications
    and provenance they need, as versioned JSON Lines files (docs/dump_format.md). The
    dump is written under a hidden temporary name and renamed when complete, so an
    interrupted export never leaves a dump that looks whole; DEST must not exist.

    \b
    Examples:
      skybutler export /repo /backup/w01.zip calexp -c HSC/runs/w01 --files zip
      skybutler export /repo /backup/all --files directory
    Load it elsewhere with `skybutler import OTHER_REPO DEST`.
    """
    from ..transfer.dump import export_dump

    butler = open_butler(repo, writeable=False)
    start = time.perf_counter()
    report = export_dump(butler, dest, list(dataset_types) or None, collections=collection_names(collections),
                         where=where, bind=parse_bind(bind), files=files, mode=mode, progress=sys.stderr.isatty())
    console.print(_summary(f"Exported {repo} to {dest}" + ("" if files != "none" else " (no files)"), report,
                           time.perf_counter() - start, imported=False))


@click.command("import")
@REPO
@click.argument("dump", type=click.Path(exists=True))
@click.option("--transfer", type=LazyChoice("skybutler._modes", "TRANSFER_CHOICES"), default="copy",
              show_default=True,
              help="How files come in: copy/move/hardlink/symlink into REPO's datastore at their recorded "
                   "paths; 'direct' uses them where they are (directory dumps); 'none' registers rows only "
                   "(the only choice for a dump exported without files).")
@click.option("--new-ids", is_flag=True, help="Give every dataset and execution a fresh id (edges, tags and "
                                               "certifications follow); default keeps the dump's ids.")
@click.option("--workers", type=click.IntRange(1, 64), default=8, show_default=True,
              help="Files placed in parallel.")
def import_(repo: str, dump: str, transfer: str, new_ids: bool, workers: int) -> None:
    """Import a dump (directory or .zip made by `skybutler export`) into REPO.

    The dump is checked whole first (format version, every stream's size and hash, its
    files): a damaged dump or one written by a newer skybutler is refused before
    anything is written. Then files are placed and rows inserted in bounded
    transactions. Datasets REPO already holds identically are skipped; a dataset REPO
    holds otherwise (same type, data id and run, another id or content) is a conflict:
    it is listed, nothing is overwritten, and the command exits with status 1 after
    importing everything else. Interrupted? Run the same command again: it completes
    the import and adds nothing twice.

    \b
    Example:
      skybutler import /other/repo /backup/w01.zip
    """
    from ..transfer.dump import import_dump

    butler = open_butler(repo)
    start = time.perf_counter()
    report = import_dump(butler, dump, transfer=transfer, new_ids=new_ids, on_conflict="report", workers=workers,
                         progress=sys.stderr.isatty())
    console.print(_summary(f"Imported {dump} into {repo}", report, time.perf_counter() - start, imported=True))
    exit_on_conflicts(report, repo)
