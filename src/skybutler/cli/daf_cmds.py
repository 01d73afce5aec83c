"""``skybutler import-daf-butler``: a daf_butler export, or a daf_butler repository, into a repository."""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING

import click
from rich.console import Console
from rich.table import Table

from ..errors import ConfigError, RepositoryNotFoundError
from .repo_cmds import REPO, LazyChoice, exit_on_conflicts

if TYPE_CHECKING:
    from ..butler import Butler

console = Console()
err_console = Console(stderr=True)


def _storage_class_map(values: tuple[str, ...]) -> dict[str, str]:
    out = {}
    for item in values:
        daf_name, sep, ours = item.partition("=")
        if not sep or not daf_name or not ours:
            raise ConfigError(f"--storage-class-map takes DAF_BUTLER_NAME=SKYBUTLER_NAME (e.g. "
                              f"MyCatalog=table), got {item!r}")
        out[daf_name.strip()] = ours.strip()
    return out


@click.command("import-daf-butler")
@REPO
@click.argument("export_yaml", required=False, type=click.Path(exists=True, dir_okay=False))
@click.option("--repo", "daf_repo", type=click.Path(exists=True, file_okay=False),
              help="Read this daf_butler repository (its butler.yaml, SQLite gen3.sqlite3 and files) directly "
                   "instead of an export file.")
@click.option("--transfer", type=LazyChoice("skybutler._modes", "TRANSFER_CHOICES"), default="copy", show_default=True,
              help="How files come in: copy/move/hardlink/symlink into REPO's datastore at the paths they had; "
                   "'direct' uses them where they are; 'none' registers rows only. 'move' takes the files away "
                   "from the export or daf_butler repository (which then names missing files).")
@click.option("--create", is_flag=True, help="Create REPO (default universe, SQLite) if it does not exist.")
@click.option("--drop-unknown-dimensions", is_flag=True,
              help="Import without the dimension elements and data id keys REPO's universe lacks (e.g. daf_butler's "
                   "'group'); they are listed in the summary. Without it they are refused, nothing written.")
@click.option("--storage-class-map", multiple=True, metavar="DAF=OURS",
              help="Map a daf_butler storage class to a skybutler one, e.g. MyCatalog=table (repeatable).")
def import_daf_butler(repo: str, export_yaml: str | None, daf_repo: str | None, transfer: str, create: bool,
                      drop_unknown_dimensions: bool, storage_class_map: tuple[str, ...]) -> None:
    """Import daf_butler content into REPO: an export file EXPORT_YAML, or a repository with --repo.

    EXPORT_YAML is what `butler export` / `Butler.export(...)` wrote (export.yaml), with the
    dataset files exported beside it (export with a transfer mode, e.g. transfer="copy").
    Dimension records, dataset types, RUN/TAGGED/CHAINED/CALIBRATION collections,
    certifications and datasets come in with their UUIDs kept; times are converted from
    TAI to UTC, regions from lsst.sphgeom's encoding. Everything refused (unknown
    dimensions, storage classes or file formats) is refused before anything is written.
    Datasets REPO already holds identically are skipped, so the same command can be run
    again after an interruption; a dataset REPO holds otherwise is a conflict, listed,
    never overwritten, and the command exits with status 1.

    daf_butler's default universe has elements skybutler's lacks (e.g. 'group', which
    every exposure implies), so its exports are refused, with the list, unless
    --drop-unknown-dimensions is given or REPO's universe has them.

    \b
    Examples:
      skybutler import-daf-butler /repo /exports/w01/export.yaml --drop-unknown-dimensions
      skybutler import-daf-butler /repo --repo /daf/repo --create --drop-unknown-dimensions
    """
    from ..butler import Butler
    from ..transfer.daf_butler import daf_butler_source
    from ..transfer.daf_butler import import_daf_butler as run_import

    if (export_yaml is None) == (daf_repo is None):
        raise click.UsageError("Give either EXPORT_YAML or --repo DAF_REPO (one of them)")
    try:
        butler: Butler | None = Butler(repo)
    except RepositoryNotFoundError:
        if not create:
            raise
        butler = None
    path = daf_repo if daf_repo is not None else export_yaml
    assert path is not None
    # The source refuses what it cannot import now, before --create makes anything.
    source = daf_butler_source(path, repo=daf_repo is not None, universe=butler.universe if butler else None,
                               drop_unknown_dimensions=drop_unknown_dimensions,
                               storage_class_map=_storage_class_map(storage_class_map))
    if butler is None:
        butler = Butler.create(repo)
        err_console.print(f"Created repository {repo}")
    start = time.perf_counter()
    done = run_import(butler, source, transfer=transfer, on_conflict="report", progress=sys.stderr.isatty())
    seconds = time.perf_counter() - start
    report = done.report
    table = Table(title=f"Imported {path} into {repo}", show_header=False)
    table.add_column("what")
    table.add_column("count", justify="right")
    table.add_row("dimension records added", f"{report.dimension_records_added:,}")
    table.add_row("dataset types", f"{done.dataset_types:,}")
    table.add_row("collections (added / in source)", f"{report.collections_added:,} / {done.collections:,}")
    table.add_row("datasets added", f"{report.datasets_added:,}")
    table.add_row("datasets skipped (already there, identical)", f"{report.datasets_skipped:,}")
    table.add_row("files copied", f"{report.files_copied:,} ({report.bytes_copied:,} bytes)")
    table.add_row("files skipped (already there, identical)", f"{report.files_skipped:,}")
    table.add_row("conflicts (refused, nothing overwritten)", f"{len(report.conflicts):,}")
    table.add_row("time", f"{seconds:,.1f} s")
    console.print(table)
    if done.dropped:
        dropped = Table(title="Left out (no place for them in this repository's universe)", show_header=False)
        dropped.add_column("what")
        for line in done.dropped:
            dropped.add_row(line)
        console.print(dropped)
    exit_on_conflicts(report, repo)
