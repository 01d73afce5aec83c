"""A daf_butler repository (its SQLite registry and file datastore) read directly, as a `ContentSource`.

The registry's tables are reflected, not declared: daf_butler names its per-dimension
dataset tables (``dataset_tags_00000001``, ``dataset_calibs_00000005``) as its
``dataset_type`` table says, and its dimension tables after the elements. The
repository is opened read-only; nothing of daf_butler is imported.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import sqlalchemy as sa
import yaml

from ..dimensions import DimensionUniverse
from ..errors import RepositoryNotFoundError, TransferError
from ._daf_export import order_collections
from ._daf_mapping import DAF_COLLECTION_TYPES, DafMapping, as_uuid
from .content import Certification, CollectionContent, DatasetContent, ProvenanceBatch

__all__ = ["DafButlerRepoSource"]

# Tables of a daf_butler registry that are not dimension elements.
_NOT_ELEMENTS = ("butler_attributes", "collection", "collection_chain", "run", "dataset", "dataset_type",
                 "dataset_location", "dataset_location_trash", "dimension_graph_definition", "dimension_graph_key",
                 "file_datastore_records", "opaque_meta")
_NOT_ELEMENT_PARTS = ("_overlap", "collection_summary_", "dataset_tags_", "dataset_calibs_")
_NULL_COMPONENT = "__NULL_STRING__"  # daf_butler's "no component" in file_datastore_records


class DafButlerRepoSource:
    """The whole content of a daf_butler repository, read from its SQLite registry, as a `ContentSource`.

    Parameters
    ----------
    repo_root
        The repository's directory (holding ``butler.yaml`` and ``gen3.sqlite3``).
    universe, storage_class_map, drop_unknown_dimensions, batch_size
        As for `DafButlerExportSource`.

    Examples
    --------
    >>> report = import_content(butler, DafButlerRepoSource("/data/daf_repo", universe=butler.universe))  # doctest: +SKIP
    """

    def __init__(self, repo_root: str | Path, *, universe: DimensionUniverse | None = None,
                 storage_class_map: Mapping[str, str] | None = None, drop_unknown_dimensions: bool = False,
                 batch_size: int = 2_000):
        self.root = Path(repo_root).resolve()
        self.mapping = DafMapping(universe or DimensionUniverse.default(), storage_class_map=storage_class_map,
                                  drop_unknown_dimensions=drop_unknown_dimensions)
        self.batch_size = batch_size
        db_path, self.datastore_root, self.records_table = _read_butler_yaml(self.root)
        self.engine = sa.create_engine(f"sqlite:///file:{db_path}?mode=ro&uri=true")
        self.meta = sa.MetaData()
        try:
            self.meta.reflect(self.engine)
        except sa.exc.DatabaseError as exc:
            raise TransferError(f"Cannot read the daf_butler registry {db_path}: {exc.orig}") from None
        missing = [t for t in ("dataset", "dataset_type", "collection", "run", self.records_table)
                   if t not in self.meta.tables]
        if missing:
            raise TransferError(f"{db_path} is not a daf_butler registry (no table(s) {', '.join(missing)})")
        self._collections = self._read_collections()
        self._types = self._read_dataset_types()
        counts = {name: self._count(name) for name in self._element_tables()}
        self.mapping.check_elements(counts, ((t["name"], t["dimensions"]) for t in self._types.values()))
        for t in self._types.values():
            self.mapping.dataset_type(t["name"], t["dimensions"], t["storage_class"],
                                      bool(t["calibration_association_table"]))
        self._check_files()

    # -- reading -------------------------------------------------------------------------

    def _table(self, name: str) -> sa.Table:
        return self.meta.tables[name]

    def _rows(self, query: sa.Select) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(query).mappings()]

    def _count(self, name: str) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(self._table(name))).scalar() or 0)

    def _element_tables(self) -> list[str]:
        return [name for name in self.meta.tables
                if name not in _NOT_ELEMENTS and name != self.records_table
                and not any(part in name for part in _NOT_ELEMENT_PARTS)]

    def _read_collections(self) -> dict[int, dict[str, Any]]:
        rows = {r["collection_id"]: dict(r) for r in self._rows(sa.select(self._table("collection")))}
        for r in rows.values():
            if r["type"] not in DAF_COLLECTION_TYPES:
                raise TransferError(f"Collection {r['name']!r} has daf_butler collection type {r['type']}, "
                                    "which skybutler does not know")
            r["type"] = DAF_COLLECTION_TYPES[r["type"]]
            r["children"] = []
        chain = self._table("collection_chain")
        for r in self._rows(sa.select(chain).order_by(chain.c.parent, chain.c.position)):
            rows[r["parent"]]["children"].append(rows[r["child"]]["name"])
        return rows

    def _read_dataset_types(self) -> dict[int, dict[str, Any]]:
        dims: dict[int, list[str]] = {}
        graph = self._table("dimension_graph_definition")
        for r in self._rows(sa.select(graph)):
            dims.setdefault(r["dimension_graph_id"], []).append(r["dimension_name"])
        out = {}
        for r in self._rows(sa.select(self._table("dataset_type"))):
            out[r["id"]] = {**r, "dimensions": dims.get(r["dimensions_key"], [])}
        return out

    def _check_files(self) -> None:
        """Refuse, before anything is written, missing files and datasets stored in pieces (composites)."""
        files = self._table(self.records_table)
        with self.engine.connect() as conn:
            result = conn.execute(sa.select(files.c.dataset_id, files.c.path))
            while rows := result.fetchmany(10_000):
                for dataset_id, path in rows:
                    if "://" not in path and not (self.datastore_root / path).is_file():
                        raise TransferError(f"The file of dataset {as_uuid(dataset_id)} is missing from the "
                                            f"daf_butler repository: {self.datastore_root / path}")
        row = self._rows(sa.select(files.c.dataset_id, files.c.component, files.c.path)
                         .where(files.c.component != _NULL_COMPONENT).limit(1))
        if row:
            raise TransferError(f"Dataset {as_uuid(row[0]['dataset_id'])} is stored as separate component files "
                                f"(component {row[0]['component']!r}, {row[0]['path']}); skybutler cannot import "
                                "disassembled composites")

    # -- ContentSource -------------------------------------------------------------------

    @property
    def universe(self) -> DimensionUniverse:
        return self.mapping.universe

    @property
    def dropped(self) -> list[str]:
        """What was left out, one line each (after the streams were read)."""
        return self.mapping.dropped.lines()

    def dimension_records(self) -> Iterator[tuple[str, list[dict[str, Any]]]]:
        present = set(self._element_tables())
        for element in self.mapping.element_order():
            if element == "band" and "band" not in present and "physical_filter" in present:
                rows = self._rows(sa.select(self._table("physical_filter").c.band).distinct())
                if rows:
                    yield "band", self.mapping.band_records(rows)
                continue
            if element not in present:
                continue
            table = self._table(element)
            with self.engine.connect() as conn:
                result = conn.execute(sa.select(table)).mappings()
                while batch := result.fetchmany(self.batch_size):
                    yield element, self.mapping.records(element, [_decoded(element, r) for r in batch])

    def dataset_types(self) -> list[Any]:
        return list(self.mapping.dataset_types.values())

    def collections(self) -> list[CollectionContent]:
        found = {r["name"]: CollectionContent(r["name"], r["type"], r["doc"] or None, tuple(r["children"]))
                 for r in self._collections.values()}
        return order_collections(found)

    def datasets(self) -> Iterator[list[DatasetContent]]:
        dataset, files = self._table("dataset"), self._table(self.records_table)
        for type_id, t in sorted(self._types.items()):
            tags = self._table(t["tag_association_table"])
            dims = [d for d in t["dimensions"] if d in tags.c]
            query = (sa.select(dataset.c.id, dataset.c.run_id, files.c.path, files.c.file_size,
                               *(tags.c[d] for d in dims))
                     .join(tags, sa.and_(tags.c.dataset_id == dataset.c.id, tags.c.collection_id == dataset.c.run_id))
                     .outerjoin(files, files.c.dataset_id == dataset.c.id)
                     .where(dataset.c.dataset_type_id == type_id).order_by(dataset.c.id))
            with self.engine.connect() as conn:
                result = conn.execute(query).mappings()
                while rows := result.fetchmany(self.batch_size):
                    yield [self._dataset(t["name"], r, dims) for r in rows]

    def _dataset(self, type_name: str, row: Any, dims: list[str]) -> DatasetContent:
        run = self._collections[row["run_id"]]["name"]
        path = row["path"]
        url = None
        if path is not None:
            if "://" in path:
                url = path
            elif path.startswith("/"):
                url = path = Path(path).as_uri()
            else:
                url = (self.datastore_root / path).as_uri()
        return self.mapping.dataset(row["id"], type_name, {d: row[d] for d in dims}, run, path, row["file_size"],
                                    url)

    def tags(self) -> Iterator[list[tuple[str, uuid.UUID]]]:
        tagged = {cid: r["name"] for cid, r in self._collections.items() if r["type"].value == "TAGGED"}
        if not tagged:
            return
        for table_name in sorted({t["tag_association_table"] for t in self._types.values()}):
            table = self._table(table_name)
            query = sa.select(table.c.collection_id, table.c.dataset_id).where(table.c.collection_id.in_(tagged))
            with self.engine.connect() as conn:
                result = conn.execute(query.order_by(table.c.collection_id, table.c.dataset_id))
                while rows := result.fetchmany(self.batch_size):
                    yield [(tagged[cid], as_uuid(did)) for cid, did in rows]

    def certifications(self) -> Iterator[list[Certification]]:
        for table_name in sorted({t["calibration_association_table"] for t in self._types.values()} - {None, ""}):
            table = self._table(table_name)
            query = sa.select(table.c.collection_id, table.c.dataset_id, table.c.timespan_begin,
                              table.c.timespan_end).order_by(table.c.collection_id, table.c.dataset_id)
            with self.engine.connect() as conn:
                result = conn.execute(query)
                while rows := result.fetchmany(self.batch_size):
                    yield [self.mapping.certification(self._collections[cid]["name"], did, begin, end)
                           for cid, did, begin, end in rows]

    def provenance(self) -> Iterator[ProvenanceBatch]:
        return iter(())  # a daf_butler registry holds no provenance skybutler can read

    def close(self) -> None:
        """Let go of the registry database."""
        self.engine.dispose()


def _decoded(element: str, row: Any) -> dict[str, Any]:
    """A stored row with daf_butler's base64 columns (regions, a skymap's hash) as bytes."""
    out = dict(row)
    for key in ("region", "hash"):
        value = out.get(key)
        if isinstance(value, str) and (key == "region" or element == "skymap"):
            out[key] = base64.b64decode(value)
    return out


def _read_butler_yaml(root: Path) -> tuple[Path, Path, str]:
    """``(registry database file, datastore root, file records table)`` from a repository's ``butler.yaml``."""
    config_path = root / "butler.yaml"
    if not config_path.is_file():
        raise RepositoryNotFoundError(f"No daf_butler repository at {root} (no butler.yaml)")
    try:
        config = yaml.safe_load(config_path.read_text(encoding="utf-8")) or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise TransferError(f"Cannot read {config_path} ({exc}); export the repository with `butler export` "
                            "and import the export instead") from None
    registry = config.get("registry", {}) if isinstance(config, dict) else {}
    datastore = config.get("datastore", {}) if isinstance(config, dict) else {}
    if not str(datastore.get("cls", "FileDatastore")).endswith("FileDatastore"):
        raise TransferError(f"The daf_butler repository {root} has a {datastore.get('cls')}; only a single "
                            "FileDatastore can be read directly (export it with `butler export` instead)")
    db = str(registry.get("db", "sqlite:///<butlerRoot>/gen3.sqlite3")).replace("<butlerRoot>", str(root))
    if not db.startswith("sqlite:///"):
        raise TransferError(f"The daf_butler repository {root} keeps its registry in {db}; only SQLite "
                            "registries can be read directly (export it with `butler export` instead)")
    store = str(datastore.get("root", "<butlerRoot>")).replace("<butlerRoot>", str(root))
    if "://" in store and not store.startswith("file://"):
        raise TransferError(f"The daf_butler repository {root} keeps its files at {store}; only local datastores "
                            "can be read directly (export it with `butler export` instead)")
    db_path = Path(db.removeprefix("sqlite:///"))
    if not db_path.is_file():
        raise RepositoryNotFoundError(f"The daf_butler registry {db_path} named by {config_path} does not exist")
    records = datastore.get("records", {})
    table = str(records.get("table", "file_datastore_records")) if isinstance(records, dict) else \
        "file_datastore_records"
    return db_path, Path(store.removeprefix("file://")), table
