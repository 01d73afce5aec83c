"""Repository commands: create, config, dataset types, dimensions, collections, ingest, query, get, remove."""

from __future__ import annotations

import csv
import functools
import importlib
import json
import sys
from collections.abc import Iterable, Iterator, Mapping
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
import yaml
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from ..errors import ConfigError
from ..model import STORAGE_CLASSES, CollectionType

if TYPE_CHECKING:
    from ..butler import Butler, FileDataset

console = Console()
err_console = Console(stderr=True)

REPO = click.argument("repo", type=click.Path(file_okay=False))


def open_butler(repo: str, *, writeable: bool = True) -> Butler:
    """The repository at ``repo``, the library imported here: a command's --help imports none of it."""
    from ..butler import Butler

    return Butler(repo, writeable=writeable)


class LazyChoice(click.Choice):
    """A `click.Choice` of a constant defined in a heavy module, imported when first needed.

    That is when a value is checked or the command's own help is shown, not when the
    command line loads: ``click.Choice(TRANSFER_MODES)`` would import the datastore for
    every command of the module, ``--help`` included.
    """

    def __init__(self, module: str, name: str) -> None:
        # No super().__init__(): it would read the choices now.
        self.case_sensitive = True
        self._source = (module, name)

    @functools.cached_property
    def choices(self) -> tuple[str, ...]:  # type: ignore[override]
        module, name = self._source
        return tuple(getattr(importlib.import_module(module), name))


def parse_bind(values: Iterable[str]) -> dict[str, Any]:
    out = {}
    for item in values:
        if "=" not in item:
            raise ConfigError(f"--bind takes NAME=VALUE, got {item!r}")
        k, v = item.split("=", 1)
        out[k] = yaml.safe_load(v)
    return out


def _parse_data_id(values: Iterable[str]) -> dict[str, Any]:
    out = {}
    for item in values:
        for part in item.split(","):
            if not part.strip():
                continue
            if "=" not in part:
                raise ConfigError(f"Data id items are KEY=VALUE, got {part!r}")
            k, v = part.split("=", 1)
            out[k.strip()] = v.strip()
    return out


def collection_names(values: tuple[str, ...]) -> list[str] | None:
    """Collections given as repeated and/or comma-separated options, in order, or None when none."""
    out = [c for v in values for c in v.split(",") if c]
    return out or None


def exit_on_conflicts(report: Any, repo: str) -> None:
    """After an import or transfer into ``repo``: list its conflicts and exit with status 1, if any.

    One soft-wrapped line per conflict, so a dataset id is never cut by a table border and
    can be copied whole.
    """
    if not report.conflicts:
        return
    console.print("[bold]Conflicts: refused, nothing overwritten[/]")
    for line in report.conflicts:
        console.print(f"[red]conflict[/red] {line}", highlight=False, soft_wrap=True)
    err_console.print(f"[red]Error: {len(report.conflicts)} item(s) conflict with what {repo} holds (listed "
                      "above; refused, nothing overwritten); everything else was written[/]")
    sys.exit(1)


def _print_rows(rows: Iterable[Mapping[str, Any]], columns: list[str], fmt: str, *, title: str = "",
                limit: int | None = None) -> int:
    """Print rows as a rich table, JSON lines or CSV; streams for json/csv."""
    rows = islice(rows, limit) if limit else rows
    n = 0
    if fmt == "json":
        for row in rows:
            click.echo(json.dumps({c: row.get(c) for c in columns}, default=str))
            n += 1
        return n
    if fmt == "csv":
        writer = csv.DictWriter(sys.stdout, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({c: row.get(c) for c in columns})
            n += 1
        return n
    table = Table(title=title or None)
    for c in columns:
        table.add_column(c)
    for row in rows:
        table.add_row(*["" if row.get(c) is None else str(row.get(c)) for c in columns])
        n += 1
    console.print(table)
    err_console.print(f"{n} row(s)")
    return n


FORMAT = click.option("--format", "fmt", type=click.Choice(["table", "json", "csv"]), default="table",
                      show_default=True, help="Output format (json: one object per line).")


def _progress() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=err_console, transient=True)


@click.command()
@REPO
@click.option("--registry", help="Database URL (default: SQLite in REPO; e.g. postgresql://user@host:5432/db).")
@click.option("--namespace", help="PostgreSQL schema for this repository's tables.")
@click.option("--datastore", help="Where files go (default: REPO; or a path, s3://bucket/prefix).")
@click.option("--config", "config_file", type=click.Path(exists=True, dir_okay=False),
              help="YAML with any sections of the repository configuration (templates, formats, ...).")
@click.option("--universe", type=click.Path(exists=True, dir_okay=False),
              help="Dimension universe YAML (default: the shipped one).")
def create(repo: str, registry: str | None, namespace: str | None, datastore: str | None,
           config_file: str | None, universe: str | None) -> None:
    """Create a new repository in REPO."""
    from ..butler import Butler

    butler = Butler.create(repo, registry=registry, namespace=namespace, datastore=datastore,
                           config=config_file, universe=universe)
    console.print(f"Created repository [bold]{repo}[/] (registry {butler.registry.dialect}, "
                  f"datastore {butler.datastore.root})")


@click.group()
def config() -> None:
    """Show the configuration in force."""


@config.command("show")
@REPO
def config_show(repo: str) -> None:
    """Print the whole configuration of REPO (environment overrides applied) and its dimension universe.

    The output is a configuration file: `skybutler create NEW --config FILE` makes a
    repository configured alike (secrets print as ***). The dimension universe follows
    as YAML comments (without the leading "# " it is a file for `create --universe`).
    """
    butler = open_butler(repo, writeable=False)
    universe = "".join(f"# {line}\n" for line in butler.universe.to_yaml().splitlines())
    click.echo(f"{butler.config.to_yaml()}# dimension universe:\n{universe}", nl=False)


@click.command("register-dataset-type")
@REPO
@click.argument("name")
@click.argument("dimensions", nargs=-1)
@click.option("--storage-class", "-s", type=click.Choice(sorted(STORAGE_CLASSES)), required=True,
              help="How datasets are held in memory (decides the file format).")
@click.option("--calibration", is_flag=True, help="Datasets may be certified in CALIBRATION collections.")
def register_dataset_type(repo: str, name: str, dimensions: tuple[str, ...], storage_class: str,
                          calibration: bool) -> None:
    """Register dataset type NAME with DIMENSIONS (e.g. `calexp visit detector -s image`)."""
    dt = open_butler(repo).register_dataset_type(name, dimensions, storage_class, is_calibration=calibration)
    click.echo(f"Registered {dt}")


def _read_records(path: str) -> dict[str, list[dict[str, Any]]]:
    p = Path(path)
    text = p.read_text()
    if p.suffix.lower() == ".csv":
        raise ConfigError("A CSV file holds one element: use `insert-dimensions REPO FILE --element NAME`")
    data = yaml.safe_load(text)
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of element name -> list of records")
    return data


@click.command("insert-dimensions")
@REPO
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option("--element", help="For a CSV file: the element its rows are records of.")
@click.option("--skip-existing", is_flag=True, help="Insert only records that do not exist yet.")
def insert_dimensions(repo: str, file: str, element: str | None, skip_existing: bool) -> None:
    """Insert dimension records from FILE.

    YAML: a mapping of element name to a list of records, inserted in file order
    (parents first). CSV: one element (--element), a header row of column names.
    """
    butler = open_butler(repo)
    if file.lower().endswith(".csv"):
        if not element:
            raise ConfigError("A CSV file needs --element NAME")
        with open(file, newline="") as f:
            batches = {element: [{k: (v if v != "" else None) for k, v in row.items()} for row in csv.DictReader(f)]}
    else:
        batches = _read_records(file)
    with butler.transaction():
        for name, records in batches.items():
            n = butler.insert_dimension_records(name, records, skip_existing=skip_existing)
            console.print(f"{name}: {n} new record(s)")


@click.group()
def collection() -> None:
    """List and define collections (RUN, TAGGED, CHAINED, CALIBRATION)."""


@collection.command("list")
@REPO
@FORMAT
def collection_list(repo: str, fmt: str) -> None:
    """List every collection with its type (and the members of chains)."""
    rows = [{**c, "children": ", ".join(c["children"])} for c in open_butler(repo, writeable=False).collections.query()]
    _print_rows(rows, ["name", "type", "children", "doc"], fmt, title="Collections")


@collection.command("create")
@REPO
@click.argument("name")
@click.option("--type", "ctype", type=click.Choice([t.value for t in CollectionType]), required=True)
@click.option("--child", "children", multiple=True, help="For CHAINED: member collections in search order.")
@click.option("--doc", help="A description.")
def collection_create(repo: str, name: str, ctype: str, children: tuple[str, ...], doc: str | None) -> None:
    """Create a collection (for CHAINED, give its members in search order with --child)."""
    butler = open_butler(repo)
    kind = CollectionType(ctype)
    if kind is CollectionType.CHAINED:
        butler.collections.set_chain(name, list(children))
    else:
        if children:
            raise ConfigError("--child is only for CHAINED collections")
        butler.collections.register(name, kind, doc=doc)
    console.print(f"Collection {name} ({kind.value}) ready")


@collection.command("certify")
@REPO
@click.argument("calibration_collection")
@click.argument("dataset_type")
@click.option("--collections", "-c", multiple=True, required=True, help="Where to find the datasets.")
@click.option("--where", help="Query expression selecting the datasets.")
@click.option("--begin", required=True, help="Validity start (ISO time, UTC).")
@click.option("--end", required=True, help="Validity end (ISO time, UTC, exclusive).")
def collection_certify(repo: str, calibration_collection: str, dataset_type: str, collections: tuple[str, ...],
                       where: str | None, begin: str, end: str) -> None:
    """Certify DATASET_TYPE datasets into CALIBRATION_COLLECTION over [begin, end)."""
    butler = open_butler(repo)
    refs = list(butler.query_datasets(dataset_type, collections=collection_names(collections), where=where))
    butler.collections.certify(calibration_collection, refs, begin, end)
    console.print(f"Certified {len(refs)} {dataset_type} dataset(s) in {calibration_collection}")


@collection.command("tag")
@REPO
@click.argument("tagged_collection")
@click.argument("dataset_type")
@click.option("--collections", "-c", multiple=True, required=True)
@click.option("--where")
def collection_tag(repo: str, tagged_collection: str, dataset_type: str, collections: tuple[str, ...],
                   where: str | None) -> None:
    """Add datasets to a TAGGED collection (created if missing)."""
    butler = open_butler(repo)
    refs = list(butler.query_datasets(dataset_type, collections=collection_names(collections), where=where))
    butler.collections.tag(tagged_collection, refs)
    console.print(f"Tagged {len(refs)} dataset(s) in {tagged_collection}")


@collection.command("untag")
@REPO
@click.argument("tagged_collection")
@click.argument("dataset_type")
@click.option("--where", help="Query expression selecting the datasets (default: every one of the type).")
def collection_untag(repo: str, tagged_collection: str, dataset_type: str, where: str | None) -> None:
    """Remove DATASET_TYPE datasets from a TAGGED collection (the datasets themselves stay)."""
    butler = open_butler(repo)
    refs = list(butler.query_datasets(dataset_type, collections=[tagged_collection], where=where))
    n = butler.collections.untag(tagged_collection, refs)
    console.print(f"Untagged {n} dataset(s) from {tagged_collection}")


@collection.command("decertify")
@REPO
@click.argument("calibration_collection")
@click.argument("dataset_type")
@click.option("--begin", help="Start of the range to remove (ISO time, UTC); default: unbounded.")
@click.option("--end", help="End of the range to remove (ISO time, UTC, exclusive); default: unbounded.")
@click.option("--where", help="Query expression selecting the datasets whose certifications to change.")
def collection_decertify(repo: str, calibration_collection: str, dataset_type: str, begin: str | None,
                         end: str | None, where: str | None) -> None:
    """Remove certifications of DATASET_TYPE over [begin, end) from CALIBRATION_COLLECTION.

    A certification reaching outside the range keeps the parts outside it (one range may
    become two). Without --begin/--end every certification of the type is removed.
    """
    butler = open_butler(repo)
    refs = (list(butler.query_datasets(dataset_type, collections=[calibration_collection], where=where,
                                       find_first=False)) if where else None)
    n = butler.collections.decertify(calibration_collection, dataset_type, begin, end, refs=refs)
    console.print(f"Changed {n} certification(s) of {dataset_type} in {calibration_collection}")


def _ingest_table(path: str) -> list[FileDataset]:
    """Rows of ``file, dataset_type, <data id keys...>`` from CSV, or a YAML list of mappings."""
    from ..butler import FileDataset
    from ..datastore import is_url

    p = Path(path)
    if p.suffix.lower() == ".csv":
        with open(p, newline="") as f:
            rows = list(csv.DictReader(f))
    else:
        rows = yaml.safe_load(p.read_text()) or []
    out = []
    for i, row in enumerate(rows, start=1):
        row = {k: v for k, v in dict(row).items() if v not in (None, "")}
        try:
            file, dataset_type = row.pop("file"), row.pop("dataset_type")
        except KeyError as exc:
            raise ConfigError(f"{path} row {i}: missing column {exc.args[0]!r} (need file, dataset_type, data id keys)") from None
        fmt = row.pop("format", None)
        if not Path(file).is_absolute() and not is_url(file):
            file = str((p.parent / file).resolve())
        out.append(FileDataset(file, dataset_type, row, fmt))
    return out


class _IngestCommand(click.Command):
    """``skybutler ingest``: its help ends with the ingest plugins this installation finds."""

    def format_epilog(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        from ..ops.plugins import ENTRY_POINT_GROUP, available_plugins

        with formatter.section("Ingest plugins (--plugin)"):
            formatter.write_dl(list(available_plugins().items()))
            formatter.write_paragraph()
            formatter.write_text(f"Others: entry points of group {ENTRY_POINT_GROUP}, or a dotted path "
                                 "package.module:Class (see docs/ingest_plugins.md).")


@click.command(cls=_IngestCommand)
@REPO
@click.argument("files", nargs=-1, type=click.Path())
@click.option("--run", required=True, help="Run to ingest into.")
@click.option("--table", "table_file", type=click.Path(exists=True, dir_okay=False),
              help="CSV/YAML of files: columns file, dataset_type and data id keys.")
@click.option("--dataset-type", "-t", help="Dataset type of FILES (with --data-id; with --plugin, instead of the "
              "plugin's own).")
@click.option("--data-id", "-d", multiple=True, help="KEY=VALUE,... for a single file.")
@click.option("--plugin", help="Ingest plugin reading data ids, records and metadata from the files' headers "
              "(listed below); creates the instrument, filter, detector and visit records they need.")
@click.option("--transfer", type=LazyChoice("skybutler._modes", "INGEST_TRANSFER_MODES"), default="auto", show_default=True)
@click.option("--rename", metavar="TEMPLATE", help="Store the files under names from this file template instead "
              "of the repository's, e.g. '{run}/{dataset_type}/{band}/{visit:08d}/{dataset_type}_{visit:08d}_"
              "{detector:03d}' (fields: data id keys, run, dataset_type, id, and a plugin's metadata). Names are "
              "checked unique before any file is copied. Use with --transfer copy, move, hardlink or symlink.")
@click.option("--no-checksum", is_flag=True, help="Record sizes only (faster; verify cannot find bit-rot).")
def ingest(repo: str, files: tuple[str, ...], run: str, table_file: str | None, dataset_type: str | None,
           data_id: tuple[str, ...], plugin: str | None, transfer: str, rename: str | None, no_checksum: bool) -> None:
    """Register existing FILES (or a --table of files) as datasets in RUN.

    With --plugin the files' headers give everything (a fresh repository needs no
    records beforehand); every header is read and checked before anything is stored,
    and a failed ingest stores nothing. Re-ingesting the same file is a no-op (dataset
    ids are deterministic). Each file's original path is kept: see `skybutler
    ingest-origin`.
    """
    from ..butler import FileDataset

    # No run= here: that would register the run now, and a failed ingest would leave it
    # behind empty. The ingest registers it in the transaction that adds the datasets.
    butler = open_butler(repo)
    if plugin:
        if table_file or data_id:
            raise ConfigError("--plugin reads data ids from the files: give FILES only (no --table or --data-id)")
        if not files:
            raise ConfigError("Nothing to ingest: give FILES with --plugin")
        from ..ops.ingest import ingest_raws

        with _progress() as progress:
            reading = progress.add_task("read headers", total=len(files))
            storing = progress.add_task("ingest", total=len(files))
            refs = ingest_raws(butler, plugin, list(files), run=run, dataset_type=dataset_type, transfer=transfer,
                               rename=rename, checksum=not no_checksum, on_read=lambda: progress.advance(reading),
                               progress=lambda: progress.advance(storing))
        console.print(f"Ingested {len(refs)} file(s) into {run} with plugin {plugin}")
        return
    datasets: list[FileDataset] = []
    if table_file:
        datasets += _ingest_table(table_file)
    if files:
        if not dataset_type:
            raise ConfigError("Give --dataset-type with --data-id (or use --table or --plugin)")
        if len(files) != 1:
            raise ConfigError("--data-id describes one file; use --table for many")
        datasets.append(FileDataset(files[0], dataset_type, _parse_data_id(data_id)))
    if not datasets:
        raise ConfigError("Nothing to ingest: give FILES or --table")
    with _progress() as progress:
        task = progress.add_task("ingest", total=len(datasets))
        refs = butler.ingest(datasets, run=run, transfer=transfer, checksum=not no_checksum, rename=rename,
                             progress=lambda: progress.advance(task))
    console.print(f"Ingested {len(refs)} file(s) into {run}")


@click.command("ingest-origin")
@REPO
@click.argument("dataset_ids", nargs=-1, required=True)
@FORMAT
def ingest_origin(repo: str, dataset_ids: tuple[str, ...], fmt: str) -> None:
    """Where ingested datasets came from: original path or URL, plugin and header metadata.

    DATASET_IDS are dataset ids (UUIDs, as `skybutler query datasets` prints them).
    A dataset that was put rather than ingested has no origin and is reported so.
    """
    import uuid

    from ..ops.ingest import origins_of

    ids = []
    for text in dataset_ids:
        try:
            ids.append(uuid.UUID(text))
        except ValueError:
            raise ConfigError(f"Not a dataset id (a UUID): {text!r}") from None
    butler = open_butler(repo, writeable=False)
    origins = origins_of(butler, ids)
    missing = [i for i in ids if i not in origins]
    rows = [{"dataset_id": str(o.dataset_id), "original_path": o.original_path, "plugin": o.plugin,
             "metadata": json.dumps(dict(o.metadata), sort_keys=True) if fmt != "json" else dict(o.metadata)}
            for o in origins.values()]
    if rows:
        _print_rows(rows, ["dataset_id", "original_path", "plugin", "metadata"], fmt, title="Ingest origins")
    if missing:
        known = butler.registry.get_datasets(missing)
        for m in missing:
            what = "was not ingested (it was put)" if m in known else "is not in this repository"
            click.echo(f"Dataset {m} {what}: no origin", err=True)
        sys.exit(1)


@click.group()
def query() -> None:
    """Query datasets, data ids and dimension records."""


WHERE = click.option("--where", "-w", help="Expression, e.g. \"visit > 903000 AND band IN ('r', 'i')\".")
BIND = click.option("--bind", multiple=True, help="NAME=VALUE for :NAME in --where.")
COLLECTIONS = click.option("--collections", "-c", multiple=True, help="Collections to search, in order.")
LIMIT = click.option("--limit", type=int, default=None, help="Show at most this many rows.")


@query.command("datasets")
@REPO
@click.argument("dataset_type")
@COLLECTIONS
@WHERE
@BIND
@click.option("--all", "find_all", is_flag=True, help="Every match in every collection, not only the first.")
@FORMAT
@LIMIT
def query_datasets_cmd(repo: str, dataset_type: str, collections: tuple[str, ...], where: str | None,
                       bind: tuple[str, ...], find_all: bool, fmt: str, limit: int | None) -> None:
    """List datasets of DATASET_TYPE in --collections (searched in order)."""
    butler = open_butler(repo, writeable=False)
    colls = collection_names(collections) or butler.collections.runs()
    refs = butler.query_datasets(dataset_type, collections=colls, where=where, bind=parse_bind(bind),
                                 find_first=not find_all)
    dt = butler.registry.get_dataset_type(dataset_type)

    def rows() -> Iterator[dict[str, Any]]:
        for ref in refs:
            yield {"type": ref.dataset_type.name, "run": ref.run, "id": str(ref.id), **ref.data_id}

    _print_rows(rows(), ["type", "run", *dt.dimensions, "id"], fmt, title=dataset_type, limit=limit)


@query.command("data-ids")
@REPO
@click.argument("dimensions", nargs=-1, required=True)
@click.option("--datasets", "-d", multiple=True, help="Only data ids that have these dataset types.")
@COLLECTIONS
@WHERE
@BIND
@FORMAT
@LIMIT
def query_data_ids_cmd(repo: str, dimensions: tuple[str, ...], datasets: tuple[str, ...],
                       collections: tuple[str, ...], where: str | None, bind: tuple[str, ...], fmt: str,
                       limit: int | None) -> None:
    """List data ids over DIMENSIONS (joined by sky overlap where needed)."""
    butler = open_butler(repo, writeable=False)
    dims = list(butler.universe.closure(dimensions))
    ids = butler.query_data_ids(dims, where=where, bind=parse_bind(bind), datasets=datasets,
                                collections=collection_names(collections) or [])
    _print_rows((dict(d) for d in ids), dims, fmt, title="data ids", limit=limit)


@query.command("dimension-records")
@REPO
@click.argument("element")
@WHERE
@BIND
@FORMAT
@LIMIT
def query_records_cmd(repo: str, element: str, where: str | None, bind: tuple[str, ...], fmt: str,
                      limit: int | None) -> None:
    """List records of one dimension ELEMENT (e.g. visit, detector, patch)."""
    butler = open_butler(repo, writeable=False)
    records = butler.query_dimension_records(element, where=where, bind=parse_bind(bind))
    first = next(records, None)
    if first is None:
        err_console.print("0 row(s)")
        return
    columns = [c for c in first if c != "region"]

    def rows() -> Iterator[dict[str, Any]]:
        yield first
        yield from records

    _print_rows(rows(), columns, fmt, title=element, limit=limit)


@click.command()
@REPO
@click.argument("dataset_type")
@click.argument("output", type=click.Path(dir_okay=False))
@click.option("--data-id", "-d", multiple=True, required=True, help="KEY=VALUE,...")
@COLLECTIONS
def get(repo: str, dataset_type: str, output: str, data_id: tuple[str, ...], collections: tuple[str, ...]) -> None:
    """Copy one dataset's file to OUTPUT."""
    butler = open_butler(repo, writeable=False)
    colls = collection_names(collections) or butler.collections.runs()
    written = butler.retrieve_file(dataset_type, output, _parse_data_id(data_id), collections=colls, overwrite=True)
    click.echo(f"Wrote {dataset_type} {{{', '.join(data_id)}}} to {written}")


@click.command("remove-runs")
@REPO
@click.argument("runs", nargs=-1, required=True)
@click.option("--no-purge", is_flag=True, help="Remove registry entries only; leave files on disk.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def remove_runs(repo: str, runs: tuple[str, ...], no_purge: bool, yes: bool) -> None:
    """Delete RUNS with all their datasets, files and execution records."""
    butler = open_butler(repo)
    if not yes:
        click.confirm(f"Delete run(s) {', '.join(runs)} and all their datasets?", abort=True)
    counts = butler.remove_runs(runs, purge=not no_purge)
    for run, n in counts.items():
        console.print(f"Removed run {run} ({n} file(s){' left on disk' if no_purge else ''})")

