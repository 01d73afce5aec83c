"""A daf_butler export file (``butler export`` / ``Butler.export``) as a `ContentSource`."""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml

from ..dimensions import DimensionUniverse
from ..errors import DimensionError, TransferError
from ..model import CollectionType
from ._daf_mapping import DafMapping, as_uuid
from .content import Certification, CollectionContent, DatasetContent, ProvenanceBatch

__all__ = ["DafButlerExportSource"]

_DESCRIPTION = "Butler Data Repository Export"
_MAJOR_VERSION = "1"


# libyaml's parser when PyYAML was built with it: several times faster on large exports.
_SafeLoader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _ExportLoader(_SafeLoader):  # type: ignore[valid-type, misc]
    """PyYAML's safe loader plus the few tags daf_butler writes (no code is run to read them)."""


def _uuid(loader: yaml.SafeLoader, node: yaml.Node) -> uuid.UUID:
    return uuid.UUID(loader.construct_scalar(node))  # type: ignore[arg-type]


def _butler_time(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> str:
    if suffix != "tai/iso":
        raise TransferError(f"A time in the export is written as !butler_time/{suffix}; only tai/iso is read")
    return str(loader.construct_scalar(node))  # type: ignore[arg-type]


def _sphgeom(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> bytes:
    if suffix != "ConvexPolygon":
        raise DimensionError(f"A region in the export is an lsst.sphgeom.{suffix}; only ConvexPolygon regions "
                             "can be imported")
    value = loader.construct_mapping(node)  # type: ignore[arg-type]
    return bytes.fromhex(str(value["encoded"]))


def _timespan(loader: yaml.SafeLoader, node: yaml.Node) -> dict[str, Any]:
    return loader.construct_mapping(node)  # type: ignore[arg-type, return-value]


_ExportLoader.add_constructor("!uuid", _uuid)
_ExportLoader.add_multi_constructor("!butler_time/", _butler_time)
_ExportLoader.add_multi_constructor("lsst.sphgeom.", _sphgeom)
_ExportLoader.add_constructor("!lsst.daf.butler.Timespan", _timespan)


def read_export(path: Path) -> dict[str, Any]:
    """The export document, checked to be one this reader knows."""
    try:
        with open(path, encoding="utf-8") as f:
            doc = yaml.load(f, Loader=_ExportLoader)  # noqa: S506  (a safe loader with data-only tags)
    except FileNotFoundError:
        raise TransferError(f"No daf_butler export file at {path}") from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise TransferError(f"Cannot read the daf_butler export {path}: {exc}") from None
    if not isinstance(doc, dict) or doc.get("description") != _DESCRIPTION:
        raise TransferError(f"{path} is not a daf_butler export (no 'description: {_DESCRIPTION}')")
    version = str(doc.get("version", ""))
    if version.split(".")[0] != _MAJOR_VERSION:
        raise TransferError(f"{path} is a daf_butler export of format version {version}; this reader knows "
                            f"version {_MAJOR_VERSION}.x")
    if not isinstance(doc.get("data"), list):
        raise TransferError(f"{path} holds no 'data' list")
    return doc


class DafButlerExportSource:
    """The content of a daf_butler export (``export.yaml`` and the files beside it) as a `ContentSource`.

    Parameters
    ----------
    export_yaml
        The export file; dataset paths in it are relative to its directory.
    universe
        The universe of the repository the content goes to (default: skybutler's default).
    storage_class_map
        daf_butler -> skybutler storage class names beyond `STORAGE_CLASS_MAP`.
    drop_unknown_dimensions
        Leave out elements and data id keys ``universe`` lacks (see `dropped`) instead of
        refusing; refusal happens here, before anything is written.
    batch_size
        Datasets per batch.

    Examples
    --------
    >>> source = DafButlerExportSource("export/export.yaml", universe=butler.universe)  # doctest: +SKIP
    >>> report = import_content(butler, source)                                           # doctest: +SKIP
    """

    def __init__(self, export_yaml: str | Path, *, universe: DimensionUniverse | None = None,
                 storage_class_map: Mapping[str, str] | None = None, drop_unknown_dimensions: bool = False,
                 batch_size: int = 2_000):
        self.path = Path(export_yaml)
        self.directory = self.path.parent.resolve()
        self.mapping = DafMapping(universe or DimensionUniverse.default(), storage_class_map=storage_class_map,
                                  drop_unknown_dimensions=drop_unknown_dimensions)
        self.batch_size = batch_size
        doc = read_export(self.path)
        self.universe_version = doc.get("universe_version")
        self.universe_namespace = doc.get("universe_namespace")
        self._items: list[dict[str, Any]] = [item for item in doc["data"] if isinstance(item, dict)]
        self._sizes: dict[str, int | None] = {}  # every file is looked at before anything is written
        counts: dict[str, int] = {}
        types: dict[str, tuple[str, ...]] = {}
        for item in self._items:
            if item.get("type") == "dimension":
                counts[item["element"]] = counts.get(item["element"], 0) + len(item.get("records") or [])
            elif item.get("type") == "dataset_type":
                types[item["name"]] = tuple(item.get("dimensions") or ())
        # An export lists a type's implied dimensions too; its data ids hold exactly the required ones.
        for item in self._of_type("dataset"):
            records = item.get("records") or []
            data_ids = _as_list(records[0].get("data_id")) if records else []
            if data_ids and item["dataset_type"] in types:
                keys = set(data_ids[0])
                types[item["dataset_type"]] = tuple(d for d in types[item["dataset_type"]] if d in keys)
        self.mapping.check_elements(counts, types.items())
        held = {c.name for c in self.collections()}
        for chain in self.collections():
            absent = [child for child in chain.children if child not in held]
            if absent:
                raise TransferError(f"The export's CHAINED collection {chain.name!r} names {', '.join(absent)}, "
                                    "which the export does not hold (export those collections too)")
        for item in self._items:  # every storage class and dimension refused now, not half-way
            if item.get("type") == "dataset_type":
                self.mapping.dataset_type(item["name"], types[item["name"]], item["storage_class"],
                                          item.get("is_calibration", False))
        for item in self._of_type("dataset"):
            dataset_type = self.mapping.dataset_types.get(item["dataset_type"])
            if dataset_type is None:
                raise TransferError(f"The export lists datasets of type {item['dataset_type']!r} (run "
                                    f"{item['run']}) but not the type itself")
            for rec in item.get("records") or []:
                if rec.get("path"):
                    ids = _as_list(rec.get("dataset_id"))
                    self.mapping.file_format(dataset_type, rec["path"], f"{dataset_type.name} dataset {ids[:1]}")
                    self._sizes[rec["path"]] = self._size(dataset_type.name, ids, rec["path"])

    @property
    def universe(self) -> DimensionUniverse:
        return self.mapping.universe

    @property
    def dropped(self) -> list[str]:
        """What was left out, one line each (after the streams were read)."""
        return self.mapping.dropped.lines()

    def _of_type(self, kind: str) -> Iterator[dict[str, Any]]:
        return (item for item in self._items if item.get("type") == kind)

    def dimension_records(self) -> Iterator[tuple[str, list[dict[str, Any]]]]:
        by_element: dict[str, list[dict[str, Any]]] = {}
        for item in self._of_type("dimension"):
            by_element.setdefault(item["element"], []).extend(item.get("records") or [])
        if "physical_filter" in by_element and "band" not in by_element:
            by_element["band"] = self.mapping.band_records(by_element["physical_filter"])
        for element in self.mapping.element_order():
            rows = by_element.get(element)
            if rows:
                mapped = rows if element == "band" else self.mapping.records(element, rows)
                for i in range(0, len(mapped), self.batch_size):
                    yield element, mapped[i:i + self.batch_size]

    def dataset_types(self) -> list[Any]:
        return list(self.mapping.dataset_types.values())

    def collections(self) -> list[CollectionContent]:
        found: dict[str, CollectionContent] = {}
        for item in self._items:
            if item.get("type") == "run":  # older exports list runs on their own
                found.setdefault(item["name"], CollectionContent(item["name"], CollectionType.RUN, item.get("doc")))
            elif item.get("type") == "collection":
                ctype = CollectionType(item["collection_type"])
                found[item["name"]] = CollectionContent(item["name"], ctype, item.get("doc"),
                                                        tuple(item.get("children") or ()))
        for item in self._of_type("dataset"):  # a run only named by its datasets
            found.setdefault(item["run"], CollectionContent(item["run"], CollectionType.RUN))
        return order_collections(found)

    def datasets(self) -> Iterator[list[DatasetContent]]:
        batch: list[DatasetContent] = []
        for item in self._of_type("dataset"):
            type_name, run = item["dataset_type"], item["run"]
            for rec in item.get("records") or []:
                ids, data_ids = _as_list(rec.get("dataset_id")), _as_list(rec.get("data_id"))
                if len(ids) != len(data_ids):
                    raise TransferError(f"A {type_name} record in run {run} lists {len(ids)} id(s) and "
                                        f"{len(data_ids)} data id(s) ({rec.get('path')})")
                path, size, url = self._file(type_name, ids, rec.get("path"))
                for dataset_id, data_id in zip(ids, data_ids, strict=True):
                    batch.append(self.mapping.dataset(dataset_id, type_name, data_id, run, path, size, url))
                if len(batch) >= self.batch_size:
                    yield batch
                    batch = []
        if batch:
            yield batch

    def _size(self, type_name: str, ids: list[Any], path: str) -> int | None:
        if "://" in path:
            return None  # a file held elsewhere (ingested in place): the writer reads it there
        local = Path(path) if Path(path).is_absolute() else self.directory / path
        try:
            return local.stat().st_size
        except OSError:
            raise TransferError(f"The file of {type_name} dataset {ids[0]} is missing from the export: {local} "
                                "(was it exported with a transfer mode, e.g. transfer='copy'?)") from None

    def _file(self, type_name: str, ids: list[Any], path: str | None) -> tuple[str | None, int | None, str | None]:
        if path is None:
            return None, None, None
        if "://" in path:
            return path, None, path
        local = Path(path) if Path(path).is_absolute() else self.directory / path
        return (path if not Path(path).is_absolute() else local.as_uri()), self._sizes[path], local.as_uri()

    def tags(self) -> Iterator[list[tuple[str, uuid.UUID]]]:
        for item in self._of_type("associations"):
            if item.get("collection_type") == "TAGGED":
                ids = item.get("dataset_ids") or []
                for i in range(0, len(ids), self.batch_size):
                    yield [(item["collection"], as_uuid(x)) for x in ids[i:i + self.batch_size]]

    def certifications(self) -> Iterator[list[Certification]]:
        for item in self._of_type("associations"):
            if item.get("collection_type") != "CALIBRATION":
                continue
            batch = []
            for validity in item.get("validity_ranges") or []:
                span = validity.get("timespan") or {}
                for dataset_id in validity.get("dataset_ids") or []:
                    batch.append(self.mapping.certification(item["collection"], dataset_id, span.get("begin"),
                                                            span.get("end")))
            for i in range(0, len(batch), self.batch_size):
                yield batch[i:i + self.batch_size]

    def provenance(self) -> Iterator[ProvenanceBatch]:
        return iter(())  # daf_butler exports carry no provenance skybutler can read


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, list | tuple) else [value]


def order_collections(found: Mapping[str, CollectionContent]) -> list[CollectionContent]:
    """Collections with every CHAINED one after the children it names (that are among them)."""
    out: list[CollectionContent] = []
    placed: set[str] = set()

    def place(name: str, path: tuple[str, ...]) -> None:
        if name in placed or name not in found:
            return
        if name in path:
            raise TransferError(f"Collection chain cycle: {' -> '.join((*path, name))}")
        for child in found[name].children:
            place(child, (*path, name))
        placed.add(name)
        out.append(found[name])

    for name in sorted(found, key=lambda n: (found[n].type == CollectionType.CHAINED, n)):
        place(name, ())
    return out
