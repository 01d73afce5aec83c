"""Where ingested files came from: rows of the ``dataset_origin`` table, written and read in bulk.

`skybutler.Butler.ingest` writes one row per ingested dataset in the transaction that
adds the dataset (the path or URL the file was ingested from, the ingest plugin that
read it, the extra metadata the plugin mapped from its header); the row goes with the
dataset when it is removed (``ON DELETE CASCADE``). The table is defined in
`skybutler.registry.schema.integrity_tables`.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from ._pg_insert import insert_new_rows_pg
from ._sqlite_raw import raw_statement, run_statement
from ._values import ARRAY_CHUNK, chunks

if TYPE_CHECKING:
    from ._registry import Registry

__all__ = ["DatasetOrigin", "get_origins", "insert_origins"]

_COLUMNS = ("dataset_id", "original_path", "plugin", "metadata")


@dataclass(frozen=True)
class DatasetOrigin:
    """Where an ingested dataset's file came from.

    Parameters
    ----------
    dataset_id
        The dataset.
    original_path
        The absolute path or URL the file was ingested from (it may have been moved or
        renamed since: the datastore keeps its own copy).
    plugin
        The ingest plugin that read the file (a short name or a dotted path), or None.
    metadata
        The extra columns the plugin mapped from the file's header (``{"airmass": 1.2}``).
    """

    dataset_id: uuid.UUID
    original_path: str
    plugin: str | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)


def _to_json(metadata: Mapping[str, Any]) -> str | None:
    # Header values are str, int, float or bool; anything else (an astropy Undefined) is kept as text.
    return json.dumps(dict(metadata), sort_keys=True, default=str) if metadata else None


def insert_origins(registry: Registry, origins: Iterable[DatasetOrigin]) -> int:
    """Insert origin rows (joins an open transaction); a dataset that has one keeps it. Returns how many were new."""
    table = registry.tables.dataset_origin
    db = registry.database
    if db.dialect == "sqlite":
        # On the DB-API cursor (`_sqlite_raw`): through ``Connection.execute`` with RETURNING
        # this was ~10 µs per ingested file. ``changes()`` after the executemany counts the new rows.
        values = [(o.dataset_id, o.original_path, o.plugin, _to_json(o.metadata)) for o in origins]
        if not values:
            return 0
        with registry.transaction() as conn:
            statement = raw_statement(conn, db.raw_statements(), "sqlite|insert_origin", lambda: db.insert_new(
                table).values({c: sa.bindparam(c) for c in _COLUMNS}))
            before = conn.connection.driver_connection.total_changes  # type: ignore[union-attr]
            run_statement(conn, statement, values)
            return int(conn.connection.driver_connection.total_changes - before)  # type: ignore[union-attr]
    rows = [{"dataset_id": o.dataset_id, "original_path": o.original_path, "plugin": o.plugin,
             "metadata": _to_json(o.metadata)} for o in origins]
    if not rows:
        return 0
    done = 0
    with registry.transaction() as conn:
        for chunk in chunks(rows, ARRAY_CHUNK):
            done += len(insert_new_rows_pg(conn, table, chunk, "dataset_id", db.raw_statements()))
    return done


def get_origins(registry: Registry, dataset_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, DatasetOrigin]:
    """The origins of those datasets that have one (datasets put, not ingested, have none)."""
    table = registry.tables.dataset_origin
    out: dict[uuid.UUID, DatasetOrigin] = {}
    with registry.database.read() as conn:
        for chunk in chunks(list(dict.fromkeys(dataset_ids))):
            for row in conn.execute(sa.select(table).where(table.c.dataset_id.in_(list(chunk)))).mappings():
                out[row["dataset_id"]] = DatasetOrigin(row["dataset_id"], row["original_path"], row["plugin"],
                                                       json.loads(row["metadata"]) if row["metadata"] else {})
    return out
