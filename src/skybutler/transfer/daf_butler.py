"""A way in for daf_butler users: import a daf_butler export, or read a daf_butler repository directly.

Two `ContentSource` s, written into a repository by the one writer
(`skybutler.transfer.importer.import_content`):

- `DafButlerExportSource`: the file ``butler export`` / ``Butler.export`` writes
  (``export.yaml``, format version 1.x) and the files exported beside it;
- `DafButlerRepoSource`: a daf_butler repository itself (``butler.yaml``, its SQLite
  registry ``gen3.sqlite3`` and its local file datastore), read with SQLAlchemy.

Neither imports daf_butler. What they map, and how:

- dimension records of the elements the target's universe knows (daf_butler's ``id`` /
  ``name`` key becomes the element's value, a detector's ``full_name`` its ``name``,
  timespans ``timespan_begin`` / ``timespan_end`` in UTC from daf_butler's TAI, regions
  decoded from lsst.sphgeom's ConvexPolygon encoding to ``[ra, dec]`` vertices; band
  records are made from the physical filters). Fields the target has no column for are
  dropped and reported; elements and data id keys it lacks are refused, or dropped and
  reported with ``drop_unknown_dimensions``;
- dataset types with their required dimensions and storage classes mapped
  (`STORAGE_CLASS_MAP`; an unknown one is refused by name unless mapped);
- RUN, TAGGED, CHAINED and CALIBRATION collections with their chains, tags and
  certifications (an open end of a validity range becomes `UNBOUNDED_BEGIN` /
  `UNBOUNDED_END`);
- datasets with their UUIDs kept, data ids, runs and files, the format taken from the
  file name's extension (`FORMATS_BY_EXTENSION`).

Everything refused is refused when the source is made, before anything is written.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ._daf_export import DafButlerExportSource
from ._daf_mapping import (
    FORMATS_BY_EXTENSION,
    STORAGE_CLASS_MAP,
    UNBOUNDED_BEGIN,
    UNBOUNDED_END,
    decode_region,
)
from ._daf_repo import DafButlerRepoSource
from .content import TransferReport

if TYPE_CHECKING:
    from ..butler import Butler
    from ..dimensions import DimensionUniverse

__all__ = [
    "FORMATS_BY_EXTENSION",
    "STORAGE_CLASS_MAP",
    "UNBOUNDED_BEGIN",
    "UNBOUNDED_END",
    "DafButlerExportSource",
    "DafButlerImport",
    "DafButlerRepoSource",
    "daf_butler_source",
    "decode_region",
    "import_daf_butler",
]


@dataclass
class DafButlerImport:
    """What `import_daf_butler` did: the writer's report, what the source held, and what was left out."""

    report: TransferReport
    dataset_types: int = 0
    collections: int = 0
    dropped: list[str] = field(default_factory=list)


def daf_butler_source(path: str | Path, *, repo: bool = False, universe: DimensionUniverse | None = None,
                      drop_unknown_dimensions: bool = False, storage_class_map: Mapping[str, str] | None = None,
                      ) -> DafButlerExportSource | DafButlerRepoSource:
    """The source for an export file, or with ``repo=True`` for a daf_butler repository's root.

    Everything the import would refuse (unknown dimensions, storage classes, file formats,
    a file that is not an export) is refused here, before any repository is touched.
    """
    kind = DafButlerRepoSource if repo else DafButlerExportSource
    return kind(path, universe=universe, storage_class_map=storage_class_map,
                drop_unknown_dimensions=drop_unknown_dimensions)


def import_daf_butler(target: Butler, source: str | Path | DafButlerExportSource | DafButlerRepoSource, *,
                      repo: bool = False, transfer: str = "copy", drop_unknown_dimensions: bool = False,
                      storage_class_map: Mapping[str, str] | None = None, on_conflict: str = "raise",
                      progress: bool = False) -> DafButlerImport:
    """Import a daf_butler export file (or, with ``repo=True``, a daf_butler repository) into ``target``.

    Parameters
    ----------
    target
        The repository written (its universe is the one mapped into).
    source
        The export file (``export.yaml``), or with ``repo=True`` the daf_butler repository's
        root; or a source made by `daf_butler_source` (the options below then unused).
    transfer, on_conflict, progress
        As for `skybutler.transfer.importer.import_content`.
    drop_unknown_dimensions
        Leave out elements and data id keys ``target``'s universe lacks instead of refusing.
    storage_class_map
        daf_butler -> skybutler storage class names beyond `STORAGE_CLASS_MAP`.

    Examples
    --------
    >>> done = import_daf_butler(butler, "export/export.yaml", drop_unknown_dimensions=True)  # doctest: +SKIP
    >>> done.report.datasets_added, done.dropped                                              # doctest: +SKIP
    (42, ['element group: 3 record(s)', ...])
    """
    from .importer import import_content

    if isinstance(source, str | Path):
        source = daf_butler_source(source, repo=repo, universe=target.universe, storage_class_map=storage_class_map,
                                   drop_unknown_dimensions=drop_unknown_dimensions)
    try:
        report = import_content(target, source, transfer=transfer, on_conflict=on_conflict, progress=progress)
    finally:
        if isinstance(source, DafButlerRepoSource):
            source.close()
    return DafButlerImport(report, len(source.dataset_types()), len(source.collections()), source.dropped)
