"""``skybutler pipeline``: show a pipeline, build a quantum graph, run it."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from ..errors import ConfigError
from .repo_cmds import parse_bind

console = Console()
err_console = Console(stderr=True)

__all__ = ["pipeline_group"]

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]i?b?|b)?\s*$", re.IGNORECASE)


def parse_size(text: str | None) -> int | None:
    """``"2GB"``, ``"500MiB"``, ``"1.5g"`` or a plain number of bytes -> bytes (powers of 1024)."""
    if text is None:
        return None
    m = _SIZE.match(text)
    if not m:
        raise ConfigError(f"Cannot read {text!r} as a size; use e.g. 2GB, 500MB or a number of bytes")
    unit = (m.group(2) or "b")[0].lower()
    return int(float(m.group(1)) * 1024 ** "bkmgt".index(unit))


def _split(values: tuple[str, ...]) -> list[str]:
    return [c for v in values for c in v.split(",") if c]


@click.group("pipeline")
def pipeline_group() -> None:
    """Pipelines: show a pipeline file, build its quantum graph, run the graph.

    A PIPELINE is a YAML file; FILE#subset or FILE#label1,label2 selects tasks.
    """


@pipeline_group.command("show")
@click.argument("pipeline_file", metavar="PIPELINE")
@click.option("--format", "fmt", type=click.Choice(["table", "yaml", "json"]), default="table", show_default=True,
              help="table: tasks and dataset types; yaml: the full pipeline with every config value.")
def show(pipeline_file: str, fmt: str) -> None:
    """Show the tasks of a pipeline and the dataset types that flow between them.

    The pipeline is validated on the way (imports, configs, dimensions, cycles).
    """
    from ..pipeline import Pipeline

    pipeline = Pipeline.from_file(pipeline_file)
    if fmt == "yaml":
        click.echo(pipeline.to_yaml(), nl=False)
        return
    described = pipeline.describe()
    if fmt == "json":
        click.echo(json.dumps(described, indent=2, default=str))
        return
    if pipeline.description:
        console.print(pipeline.description)
    tasks = Table(title="Tasks (in dependency order)")
    for col in ("label", "class", "per", "inputs", "outputs"):
        tasks.add_column(col, overflow="fold")
    for t in described["tasks"]:
        def conns(items: list[dict[str, Any]]) -> str:
            return "\n".join(f"{c['connection']}: {c['dataset_type']}"
                             + ("*" if c["multiple"] else "") + (" (prerequisite)" if c["kind"] == "prerequisite"
                                                                  else "") for c in items)
        tasks.add_row(t["label"], t["class"], ", ".join(t["dimensions"]), conns(t["inputs"]), conns(t["outputs"]))
    console.print(tasks)
    flows = Table(title="Dataset types (* = many per quantum)")
    for col in ("dataset type", "dimensions", "storage class", "produced by", "consumed by"):
        flows.add_column(col, overflow="fold")
    for f in described["dataset_types"]:
        flows.add_row(f["name"], ", ".join(f["dimensions"]), f["storage_class"],
                      f["produced_by"] or "(input)", "\n".join(f["consumed_by"]) or "(output)")
    console.print(flows)
    if described["subsets"]:
        console.print("Subsets: " + "; ".join(f"{k}: {', '.join(v['tasks'])}" for k, v in described["subsets"].items()))


@pipeline_group.command("graph")
@click.argument("repo", type=click.Path(file_okay=False))
@click.argument("pipeline_file", metavar="PIPELINE")
@click.option("--input", "-i", "inputs", multiple=True, required=True,
              help="Input collection(s), searched in order (repeat, or comma-separated).")
@click.option("--output-run", "-o", required=True, help="The run outputs will be written to.")
@click.option("--where", "-w", help="Query expression, e.g. \"visit IN (903334, 903336) AND band = 'r'\".")
@click.option("--bind", multiple=True, help="NAME=VALUE for :NAME in --where.")
@click.option("--skip-existing-in", multiple=True, help="Leave out quanta whose outputs exist in these collections.")
@click.option("--save", "save", type=click.Path(dir_okay=False), help="Write the graph file here.")
@click.option("--dot", "dot", type=click.Path(dir_okay=False), help="Write the graph as Graphviz dot here.")
@click.option("--mermaid", "mermaid", type=click.Path(dir_okay=False), help="Write a Mermaid flowchart here.")
@click.option("--max-quanta", type=int, default=None, help="Refuse a graph larger than this (default: pipelines.max_quanta of the repository configuration, 1,000,000).")
@click.option("--force", is_flag=True, help="Build even over --max-quanta.")
def graph_cmd(repo: str, pipeline_file: str, inputs: tuple[str, ...], output_run: str, where: str | None,
              bind: tuple[str, ...], skip_existing_in: tuple[str, ...], save: str | None, dot: str | None,
              mermaid: str | None, max_quanta: int | None, force: bool) -> None:
    """Build the quantum graph of a pipeline over the data a query selects.

    Prints how many data ids the query matches before building, then the quanta
    per task. Without --save nothing is written (a dry run).
    """
    from ..butler import Butler
    from ..pipeline import Pipeline, QuantumGraphBuilder

    butler = Butler(repo, writeable=False)
    pipeline = Pipeline.from_file(pipeline_file, universe=butler.universe)
    builder = QuantumGraphBuilder(butler, pipeline, input_collections=_split(inputs), output_run=output_run,
                                  where=where, bind=parse_bind(bind), skip_existing_in=_split(skip_existing_in),
                                  max_quanta=max_quanta)
    counts = builder.count()
    err_console.print(f"The query matches {sum(counts.values())} data ids: "
                      + ", ".join(f"{k} {v}" for k, v in counts.items()))
    graph = builder.build(force=force)
    table = Table(title=f"Quantum graph for run {output_run}")
    table.add_column("task")
    table.add_column("quanta", justify="right")
    table.add_column("skipped (exist)", justify="right")
    skipped = graph.header.get("skipped") or {}
    for label, n in graph.counts().items():
        table.add_row(label, str(n), str(skipped.get(label, 0)))
    table.add_row("total", str(len(graph)), str(sum(skipped.values())), style="bold")
    console.print(table)
    err_console.print(f"Built in {builder.timings.get('build', 0):.2f} s")
    if save:
        graph.write(save)
        err_console.print(f"Saved {save}")
    if dot:
        Path(dot).write_text(graph.to_dot())
    if mermaid:
        Path(mermaid).write_text(graph.to_mermaid())


@pipeline_group.command("run")
@click.argument("repo", type=click.Path(file_okay=False))
@click.argument("graph_file", type=click.Path(exists=True, dir_okay=False))
@click.option("--processes", "-j", type=click.IntRange(min=1), default=1, show_default=True,
              help="Worker processes (1 runs in this process).")
@click.option("--memory-limit", help="Per-quantum memory limit, e.g. 2GB (over it: MemoryError, failed).")
def run_cmd(repo: str, graph_file: str, processes: int, memory_limit: str | None) -> None:
    """Run a quantum graph against a repository, in dependency order, recording provenance.

    A failed quantum stops only its descendants; running the same graph again
    resumes (quanta whose outputs exist are skipped). Exits with status 1 when a
    quantum failed or was not run.
    """
    from ..pipeline import GraphExecutor, QuantumGraph
    from ..provenance import ExecutionStatus

    graph = QuantumGraph.read(graph_file)
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=err_console, transient=False) as progress:
        bar = progress.add_task(f"run {graph.run}", total=len(graph))
        executor = GraphExecutor(repo, graph, processes=processes, memory_limit=parse_size(memory_limit),
                                 progress=lambda _outcome: progress.advance(bar))
        report = executor.run()
    table = Table(title=f"Run {report.run} ({report.wall_time:.1f} s)")
    statuses = [s.value for s in ExecutionStatus]
    table.add_column("task")
    for s in statuses:
        table.add_column(s.replace("_", " "), justify="right")
    for label, per in report.counts().items():
        table.add_row(label, *[str(per.get(s, 0)) for s in statuses])
    console.print(table)
    for o in report.failed[:20]:
        err_console.print(f"[red]FAILED[/red] {o.task_label} {{{o.data_id}}}: {o.reason}")
    if len(report.failed) > 20:
        err_console.print(f"... and {len(report.failed) - 20} more failures (see `skybutler provenance`)")
    if not report.ok:
        raise click.exceptions.Exit(1)
