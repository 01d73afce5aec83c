"""Transfer commands: datasets from one repository to another, and files out of a repository."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click
from rich.console import Console
from rich.table import Table

from .repo_cmds import LazyChoice, collection_names, exit_on_conflicts, open_butler, parse_bind

if TYPE_CHECKING:
    from ..transfer import TransferReport

console = Console()


def _print_report(report: TransferReport) -> None:
    table = Table(title="Transfer")
    table.add_column("what")
    table.add_column("added", justify="right")
    table.add_column("skipped", justify="right")
    table.add_row("datasets", str(report.datasets_added), str(report.datasets_skipped))
    table.add_row("files", str(report.files_copied), str(report.files_skipped))
    table.add_row("executions", str(report.executions_added), str(report.executions_skipped))
    table.add_row("dimension records", str(report.dimension_records_added), "")
    table.add_row("collections", str(report.collections_added), "")
    table.add_row("conflicts", str(len(report.conflicts)), "")
    console.print(table)
    console.print(f"{report.bytes_copied:,} bytes copied")


@click.command("transfer")
@click.argument("source_repo", type=click.Path(file_okay=False))
@click.argument("dest_repo", type=click.Path(file_okay=False))
@click.argument("dataset_types", nargs=-1)
@click.option("--collections", "-c", multiple=True, required=True,
              help="Collections of SOURCE_REPO to take datasets from (repeat or comma-separate). TAGGED, "
                   "CALIBRATION and CHAINED collections named here are carried with their memberships.")
@click.option("--where", help="Query expression selecting the datasets, e.g. \"visit = 903334 AND band = 'r'\".")
@click.option("--bind", multiple=True, help="NAME=VALUE for identifiers in --where (repeatable).")
@click.option("--transfer", "transfer", type=LazyChoice("skybutler._modes", "TRANSFER_CHOICES"), default="copy", show_default=True,
              help="How files travel: copy; move (the source's files are deleted, its rows then name missing "
                   "files); hardlink/symlink (same disk); direct (share the source's files in place); none "
                   "(rows only).")
@click.option("--mode", type=LazyChoice("skybutler._modes", "TRANSFER_SCOPES"), default="limited", show_default=True,
              help="full also brings the provenance ancestors of the datasets, with their executions.")
@click.option("--new-ids", is_flag=True, help="Give the datasets and executions new ids in DEST_REPO.")
@click.option("--no-provenance", is_flag=True, help="Do not carry executions and their edges.")
@click.option("--create-dest", is_flag=True,
              help="Create DEST_REPO (SQLite registry, files in it) with SOURCE_REPO's dimension universe if absent.")
@click.option("--workers", type=click.IntRange(1, 256), default=8, show_default=True,
              help="Files copied at once.")
def transfer(source_repo: str, dest_repo: str, dataset_types: tuple[str, ...], collections: tuple[str, ...],
             where: str | None, bind: tuple[str, ...], transfer: str, mode: str, new_ids: bool,
             no_provenance: bool, create_dest: bool, workers: int) -> None:
    """Copy datasets (all types, or DATASET_TYPE...) from SOURCE_REPO into DEST_REPO, with what they need.

    Dimension records, dataset types, runs, the named collections' memberships and
    provenance come along. What DEST_REPO already holds identically is skipped, so an
    interrupted transfer is finished by running it again. A dataset DEST_REPO holds
    otherwise (same type, data id and run, another id) is a conflict: listed, never
    overwritten, and the command exits with status 1 after writing everything else.

    Example: skybutler transfer /repo/main /repo/mine calexp -c HSC/runs/w01 --where "visit = 903334"
    """
    from ..butler import Butler
    from ..config import CONFIG_FILE
    from ..transfer import RegistrySource, import_content

    source = Butler(source_repo, writeable=False)
    if create_dest and not (Path(dest_repo) / CONFIG_FILE).exists():
        target = Butler.create(dest_repo, universe=source.universe)
    else:
        target = Butler(dest_repo)
    content = RegistrySource(source, dataset_types=list(dataset_types) or None, collections=collection_names(collections),
                             where=where, bind=parse_bind(bind), mode=mode, include_provenance=not no_provenance)
    report = import_content(target, content, transfer=transfer, new_ids=new_ids, on_conflict="report",
                            workers=workers, progress=True)
    _print_report(report)
    exit_on_conflicts(report, dest_repo)


@click.command("retrieve")
@click.argument("repo", type=click.Path(file_okay=False))
@click.argument("dest", type=click.Path(file_okay=False))
@click.argument("dataset_types", nargs=-1)
@click.option("--collections", "-c", multiple=True, required=True,
              help="Collections to search (repeat or comma-separate; first match wins).")
@click.option("--where", help="Query expression selecting the datasets.")
@click.option("--bind", multiple=True, help="NAME=VALUE for identifiers in --where (repeatable).")
@click.option("--overwrite", is_flag=True, help="Replace files in DEST that differ from the datasets' files.")
@click.option("--workers", type=click.IntRange(1, 256), default=8, show_default=True, help="Files copied at once.")
def retrieve(repo: str, dest: str, dataset_types: tuple[str, ...], collections: tuple[str, ...], where: str | None,
             bind: tuple[str, ...], overwrite: bool, workers: int) -> None:
    """Copy the files of datasets (all types, or DATASET_TYPE...) out of REPO into the directory DEST.

    Each file keeps its path relative to the datastore root. Files already in DEST with
    the same size and checksum are skipped, so an interrupted retrieve is finished by
    running it again; a different file there is an error unless --overwrite.

    Example: skybutler retrieve /repo/main ./out calexp -c HSC/runs/w01 --where "visit = 903334"
    """
    from ..transfer.retrieve import retrieve_files

    butler = open_butler(repo, writeable=False)
    names = list(dataset_types) or [dt.name for dt in butler.registry.dataset_types()]
    colls, bound = collection_names(collections), parse_bind(bind)

    def refs():
        for name in names:
            yield from butler.query_datasets(name, collections=colls, where=where, bind=bound)

    report = retrieve_files(butler, refs(), dest, overwrite=overwrite, workers=workers, progress=True)
    console.print(f"{report.copied} file(s) copied ({report.bytes_copied:,} bytes), {report.skipped} already there, "
                  f"into {dest}")
