"""Raw ingest with a plugin: each file's header gives its data id, the records it needs and its metadata.

`ingest_raws` is what ``skybutler ingest --plugin NAME`` runs. The plugin
(`skybutler.ops.plugins`) reads every file's header first; the records of all files are
merged (a visit's region is the convex hull of its detectors' footprints, so overlaps
with tracts and patches are computed at ingest, once) and checked against the
repository's; then `Butler.ingest` stores the files, inserts the records that are new,
and keeps each file's origin (its path, the plugin, the plugin's metadata) in one
transaction. A fresh repository needs nothing beforehand: the plugin gives the
instrument, filters, detectors and observations, and registers its dataset type.

`origin_of` reads where an ingested dataset came from.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .._butler_ingest import FileDataset, check_records
from ..errors import DatasetTypeError, DimensionError, FormatError
from ..model import DatasetRef
from ..registry.origin_sql import DatasetOrigin, get_origins
from .plugins import IngestPlugin, convex_hull, get_plugin

if TYPE_CHECKING:
    import uuid

    from ..butler import Butler

__all__ = ["IngestPlan", "ingest_raws", "origin_of", "origins_of", "plan_ingest"]


@dataclass
class IngestPlan:
    """What a plugin read from a set of files: the datasets to ingest and the records they need.

    Attributes
    ----------
    plugin
        The plugin that read them.
    datasets
        One per file, with its data id, plugin name and metadata.
    records
        Dimension records by element, merged over all files.
    """

    plugin: IngestPlugin
    datasets: list[FileDataset]
    records: dict[str, list[dict[str, Any]]]


def _merge(element: str, key: tuple, into: dict[str, Any], record: Mapping[str, Any], first: str, path: str,
           corners: dict[tuple[str, tuple], list[tuple[float, float]]]) -> None:
    for column, value in record.items():
        if column == "region":
            if value:
                corners.setdefault((element, key), []).extend((float(ra), float(dec)) for ra, dec in value)
        elif into.get(column) is None:
            into[column] = value
        elif value is not None and into[column] != value:
            raise DimensionError(
                f"Files {first} and {path} disagree on the {element} record {key}: {column}={into[column]!r} "
                f"and {column}={value!r}; nothing was ingested")


def plan_ingest(butler: Butler, plugin: str | IngestPlugin, files: Sequence[str], dataset_type: str | None = None,
                *, on_read: Callable[[], None] | None = None) -> IngestPlan:
    """Read every file's header with the plugin: data ids, merged records and metadata (nothing is written).

    Parameters
    ----------
    plugin
        A plugin's short name or dotted path (`get_plugin`), or a plugin.
    dataset_type
        Ingest as this registered dataset type (default: the plugin's, registered by
        `ingest_raws` when absent).
    on_read
        Called after each file's header is read (progress).

    Raises
    ------
    FormatError
        If the plugin cannot read a file (the message names it).
    DimensionError
        If two files give one record different values (both are named).
    """
    reader = plugin if isinstance(plugin, IngestPlugin) else get_plugin(plugin)
    plugin_name = plugin if isinstance(plugin, str) else reader.name
    name = dataset_type or reader.dataset_type.name
    try:
        dims = butler.registry.get_dataset_type(name).dimensions
    except DatasetTypeError:
        if name != reader.dataset_type.name:
            raise
        dims = butler.universe.closure(reader.dataset_type.dimensions)
    keys = [*dims, *butler.universe.implied_by(dims)]
    universe = butler.universe
    records: dict[str, dict[tuple, dict[str, Any]]] = {}
    first_file: dict[tuple[str, tuple], str] = {}
    corners: dict[tuple[str, tuple], list[tuple[float, float]]] = {}
    datasets = []
    for path in files:
        try:
            header = reader.read_header(path)
            values = reader.data_id(header, path)
            implied = reader.records(header, path)
            metadata = reader.metadata(header, path)
        except (ValueError, KeyError, OSError) as exc:
            if isinstance(exc, FormatError) and path in str(exc):
                raise
            raise FormatError(f"Ingest plugin {plugin_name!r} cannot read {path}: {exc}") from None
        missing = [k for k in dims if k not in values]
        if missing:
            raise FormatError(f"Ingest plugin {plugin_name!r} gives {path} no {', '.join(missing)} "
                              f"(dataset type {name!r} needs {', '.join(dims)})")
        for element, recs in implied.items():
            if element not in universe.elements:
                raise DimensionError(f"Ingest plugin {plugin_name!r} gives {path} a record of unknown element "
                                     f"{element!r}; known: {', '.join(universe.elements)}")
            pk = universe.elements[element].primary_key
            for rec in recs:
                key = tuple(rec[k] for k in pk)
                into = records.setdefault(element, {}).setdefault(key, {})
                _merge(element, key, into, rec, first_file.setdefault((element, key), path), path, corners)
        datasets.append(FileDataset(path, name, {k: values[k] for k in keys if k in values}, plugin=plugin_name,
                                    metadata=metadata))
        if on_read is not None:
            on_read()
    for (element, key), points in corners.items():
        records[element][key]["region"] = convex_hull(points)
    return IngestPlan(reader, datasets, {element: list(by_key.values()) for element, by_key in records.items()})


def ingest_raws(butler: Butler, plugin: str | IngestPlugin, files: Sequence[str], *, run: str | None = None,
                dataset_type: str | None = None, transfer: str = "auto", rename: str | None = None,
                checksum: bool = True, progress: Callable[[], None] | None = None,
                on_read: Callable[[], None] | None = None) -> list[DatasetRef]:
    """Ingest files with a plugin, records and all: what ``skybutler ingest --plugin`` runs.

    Every header is read and the records checked before anything is written; the
    datasets, the new records and the origins then go in one transaction, so a failed
    ingest leaves nothing behind. The plugin's dataset type is registered first when
    the repository has none of its name (that definition stays if the ingest then
    fails: it holds no data).

    Parameters
    ----------
    plugin
        Short name (``hsc-raw``), dotted path ``package.module:Class``, or a plugin.
    files
        Local paths or URLs.
    run
        Run to ingest into (default: the butler's).
    dataset_type
        A registered dataset type to ingest as, instead of the plugin's.
    transfer, rename, checksum, progress
        As for `Butler.ingest` (``progress`` is called per file stored).
    on_read
        Called after each header is read.

    Returns
    -------
    list[DatasetRef]
        One per file, already ingested ones included (re-ingest changes nothing).

    Examples
    --------
    >>> ingest_raws(butler, "hsc-raw", ["HSC-0903334-016.fits"], run="HSC/raw/all",
    ...             transfer="copy", rename="{run}/raw/{band}/{visit:08d}/raw_{visit:08d}_{detector:03d}")
    ... # doctest: +SKIP
    """
    plan = plan_ingest(butler, plugin, files, dataset_type, on_read=on_read)
    reader = plan.plugin
    check_records(butler.registry, plan.records)  # refused before the dataset type is registered
    if dataset_type is None or dataset_type == reader.dataset_type.name:
        try:
            butler.registry.get_dataset_type(reader.dataset_type.name)
        except DatasetTypeError:
            butler.register_dataset_type(reader.dataset_type)
    return butler.ingest(plan.datasets, run=run, transfer=transfer, checksum=checksum, progress=progress,
                         rename=rename, records=plan.records)


def origins_of(butler: Butler, refs: Sequence[DatasetRef | uuid.UUID]) -> dict[uuid.UUID, DatasetOrigin]:
    """Where the ingested ones of these datasets came from, by dataset id (put datasets have no origin)."""
    ids = [r.id if isinstance(r, DatasetRef) else r for r in refs]
    return get_origins(butler.registry, ids)


def origin_of(butler: Butler, ref: DatasetRef | uuid.UUID) -> DatasetOrigin | None:
    """Where an ingested dataset came from: original path or URL, plugin and metadata (None if it was put).

    Examples
    --------
    >>> origin_of(butler, ref).metadata["airmass"]  # doctest: +SKIP
    1.21
    """
    ref_id = ref.id if isinstance(ref, DatasetRef) else ref
    return origins_of(butler, [ref_id]).get(ref_id)
