"""``skybutler provenance``: how a dataset was made, its lineage, W3C PROV export."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

console = Console()

__all__ = ["provenance_group"]


@click.group("provenance")
def provenance_group() -> None:
    """Provenance: the execution that made a dataset, its ancestors and descendants, PROV export."""


def _butler(repo: str) -> Any:
    """A read-only butler on REPO."""
    from ..butler import Butler

    return Butler(repo, writeable=False)


@provenance_group.command("show")
@click.argument("repo", type=click.Path(file_okay=False))
@click.argument("dataset_id")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
def show(repo: str, dataset_id: str, fmt: str) -> None:
    """Show the execution that made a dataset, the inputs it used and what it derives from.

    DATASET_ID is the dataset's UUID (see `skybutler query datasets`).
    """
    from ..provenance import provenance_of

    prov = provenance_of(_butler(repo), dataset_id)
    if fmt == "json":
        click.echo(json.dumps(prov.to_dict(), indent=2, default=str))
        return
    d = prov.dataset
    console.print(f"[bold]{d.ref or d.id}[/bold]" + (f"\n  file: {d.path}" if d.path else ""))
    ex = prov.execution
    if ex is None:
        console.print("No execution made it (ingested, or made elsewhere without provenance).")
    else:
        info = Table(show_header=False, title="Execution")
        for key in ("id", "task_label", "status", "reason", "run", "host", "start_time", "end_time", "cpu_time",
                    "peak_memory", "config_hash"):
            if ex.get(key) is not None:
                info.add_row(key, str(ex[key]))
        info.add_row("software", ", ".join(f"{k} {v}" for k, v in (ex.get("software") or {}).items()))
        console.print(info)
    derived = {e.id for e in prov.derived_from}
    used = Table(title="Inputs used (derived from = the task used it for this output)")
    for col in ("dataset", "file", "derived from"):
        used.add_column(col, overflow="fold")
    for u in prov.used:
        used.add_row(str(u.ref or u.id), u.path or "", "yes" if u.id in derived else "no (contributing only)")
    if prov.used:
        console.print(used)
    if prov.config is not None:
        console.print(f"Configuration: {prov.config.ref or prov.config.id} ({prov.config.path})")


@provenance_group.command("lineage")
@click.argument("repo", type=click.Path(file_okay=False))
@click.argument("dataset_id")
@click.option("--up/--down", default=True, show_default=True,
              help="Ancestors (what it derives from) or descendants (what derives from it).")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
def lineage_cmd(repo: str, dataset_id: str, up: bool, fmt: str) -> None:
    """List the ancestors (--up) or descendants (--down) of a dataset, nearest first."""
    from ..provenance import lineage

    entries = lineage(_butler(repo), dataset_id, direction="up" if up else "down")
    if fmt == "json":
        click.echo(json.dumps([e.to_dict() for e in entries], indent=2, default=str))
        return
    table = Table(title=f"{'Ancestors' if up else 'Descendants'} of {dataset_id}")
    for col in ("depth", "dataset", "made by", "file"):
        table.add_column(col, overflow="fold")
    for e in entries:
        table.add_row(str(e.depth), str(e.dataset.ref or e.dataset.id), e.task_label or "", e.dataset.path or "")
    console.print(table)


@provenance_group.command("export")
@click.argument("repo", type=click.Path(file_okay=False))
@click.argument("dataset_id")
@click.option("--format", "fmt", type=click.Choice(["json", "provn"]), default="json", show_default=True,
              help="PROV-JSON or PROV-N.")
@click.option("--direction", type=click.Choice(["up", "down", "both", "none"]), default="up", show_default=True,
              help="Which lineage to include besides the dataset.")
@click.option("--output", "-o", type=click.Path(dir_okay=False), help="Write here instead of standard output.")
def export(repo: str, dataset_id: str, fmt: str, direction: str, output: str | None) -> None:
    """Export a dataset's provenance and lineage as a W3C PROV document."""
    from ..provenance import export_provenance

    text = export_provenance(_butler(repo), dataset_id, format=fmt, direction=direction)
    if output:
        Path(output).write_text(text)
    else:
        click.echo(text)
