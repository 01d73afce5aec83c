"""Rows of a merge in the target: lookups by id and by natural key, and bulk inserts, on SQLite or PostgreSQL.

Values travel in one raw form, as a SQLite registry stores them: ids as 32-digit hex
text, times as ``YYYY-MM-DD HH:MM:SS.ffffff`` text. A merge from a job's SQLite outcome
into a SQLite target then converts nothing; PostgreSQL takes the same text for its
``uuid`` and ``timestamp`` columns.
"""

from __future__ import annotations

import datetime
import uuid
from collections.abc import Iterable, Sequence
from typing import Any

import sqlalchemy as sa

from ..registry import Registry

_IN_CHUNK = 500  # keys per IN list: well under every database's parameter limit


def raw(value: Any) -> Any:
    """A value as SQLite holds it in a registry: ids as 32-digit hex, times as text (the merge's one form)."""
    if isinstance(value, uuid.UUID):
        return value.hex
    if isinstance(value, datetime.datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S.%f")
    return value


def uuid_of(value: str) -> uuid.UUID:
    """The UUID of a 32-digit hex id."""
    return uuid.UUID(hex=value)


def insert(conn: sa.Connection, table: sa.Table, columns: Sequence[str], rows: list[tuple[Any, ...]]) -> None:
    """Insert rows known to be new (checked in this transaction) straight through the DB-API.

    SQLite: ``executemany`` of ``INSERT ... ON CONFLICT DO NOTHING``, values as stored.
    PostgreSQL: ``COPY``, several times faster than any ``INSERT`` (it has no ``ON
    CONFLICT``: a row another writer inserted since the checks fails the transaction,
    which `merge_run` reports as a `MergeError` asking to merge again).
    """
    if not rows:
        return
    quote = conn.dialect.identifier_preparer.quote
    namespace = (conn.get_execution_options().get("schema_translate_map") or {}).get(None)
    name = (f"{quote(namespace)}." if namespace else "") + quote(table.name)
    column_list = ", ".join(quote(c) for c in columns)
    cursor = conn.connection.cursor()
    try:
        if conn.dialect.name == "postgresql":
            with cursor.copy(f"COPY {name} ({column_list}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
        else:
            marks = ", ".join("?" * len(columns))
            cursor.executemany(f"INSERT INTO {name} ({column_list}) VALUES ({marks}) ON CONFLICT DO NOTHING", rows)
    finally:
        cursor.close()


def files_differ(held_checksum: str | None, held_size: int | None,
                  checksum: str | None, size: int | None) -> bool:
    """Whether two file descriptions disagree (checksums when both have one, else sizes when both have one)."""
    if held_checksum is not None and checksum is not None:
        return held_checksum != checksum
    return held_size is not None and size is not None and held_size != size


def select_raw(conn: sa.Connection, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
    """A SELECT on SQLite through the DB-API: ids stay 32-digit hex text, as stored (no conversion both ways)."""
    cursor = conn.connection.cursor()
    try:
        return list(cursor.execute(sql, list(params)))
    finally:
        cursor.close()


def existing_ids(conn: sa.Connection, table: sa.Table, ids: Sequence[str]) -> set[str]:
    """Those of ``ids`` (hex) that ``table`` holds."""
    out: set[str] = set()
    for i in range(0, len(ids), _IN_CHUNK):
        chunk = ids[i:i + _IN_CHUNK]
        if conn.dialect.name == "sqlite":
            marks = ", ".join("?" * len(chunk))
            out.update(r[0] for r in select_raw(conn, f"SELECT id FROM {table.name} WHERE id IN ({marks})", chunk))
        else:
            stmt = sa.select(table.c.id).where(table.c.id.in_([uuid_of(x) for x in chunk]))
            out.update(x.hex for x in conn.execute(stmt).scalars())
    return out


def datasets_by_id(target: Registry, conn: sa.Connection, ids: Sequence[str],
                    ) -> dict[str, tuple[int, int, str, str | None, int | None]]:
    """``id -> (type id, run id, data id key, checksum, size)`` of the target's datasets among ``ids`` (hex)."""
    d, f = target.tables.dataset, target.tables.file
    out = {}
    for i in range(0, len(ids), _IN_CHUNK):
        chunk = ids[i:i + _IN_CHUNK]
        if conn.dialect.name == "sqlite":
            marks = ", ".join("?" * len(chunk))
            rows: Iterable[Any] = select_raw(
                conn, f"SELECT d.id, d.dataset_type_id, d.run_id, d.data_id_key, f.checksum, f.size "
                      f"FROM {d.name} AS d LEFT JOIN {f.name} AS f ON f.dataset_id = d.id WHERE d.id IN ({marks})",
                chunk)
        else:
            stmt = (sa.select(d.c.id, d.c.dataset_type_id, d.c.run_id, d.c.data_id_key, f.c.checksum, f.c.size)
                    .select_from(d.outerjoin(f, f.c.dataset_id == d.c.id))
                    .where(d.c.id.in_([uuid_of(x) for x in chunk])))
            rows = ((r[0].hex, *r[1:]) for r in conn.execute(stmt))
        for row in rows:
            out[row[0]] = tuple(row[1:])
    return out  # type: ignore[return-value]


def datasets_by_key(target: Registry, conn: sa.Connection, keys: Sequence[tuple[int, int, str]],
                     ) -> dict[tuple[int, int, str], tuple[str, str | None, int | None]]:
    """``(type id, run id, data id key) -> (hex id, checksum, size)`` of the target's datasets with those keys."""
    d, f = target.tables.dataset, target.tables.file
    groups: dict[tuple[int, int], list[str]] = {}
    for type_id, run_id, key in keys:
        groups.setdefault((type_id, run_id), []).append(key)
    out = {}
    for (type_id, run_id), data_id_keys in groups.items():
        for i in range(0, len(data_id_keys), _IN_CHUNK):
            chunk = data_id_keys[i:i + _IN_CHUNK]
            if conn.dialect.name == "sqlite":
                marks = ", ".join("?" * len(chunk))
                rows: Iterable[Any] = select_raw(
                    conn, f"SELECT d.data_id_key, d.id, f.checksum, f.size FROM {d.name} AS d LEFT JOIN {f.name} "
                          f"AS f ON f.dataset_id = d.id WHERE d.dataset_type_id = ? AND d.run_id = ? "
                          f"AND d.data_id_key IN ({marks})", [type_id, run_id, *chunk])
            else:
                stmt = (sa.select(d.c.data_id_key, d.c.id, f.c.checksum, f.c.size)
                        .select_from(d.outerjoin(f, f.c.dataset_id == d.c.id))
                        .where(d.c.dataset_type_id == type_id, d.c.run_id == run_id, d.c.data_id_key.in_(chunk)))
                rows = ((r[0], r[1].hex, *r[2:]) for r in conn.execute(stmt))
            for row in rows:
                out[(type_id, run_id, row[0])] = (row[1], row[2], row[3])
    return out


def execution_key(row: Any) -> tuple[Any, ...]:
    """What identifies one attempt of one quantum within a run, whatever its id (raw values)."""
    return row["task_label"], row["quantum_id"], row["data_id_key"], row["start_time"]


def executions_by_key(target: Registry, conn: sa.Connection, run_id: int, rows: Sequence[Any],
                       ) -> dict[tuple[Any, ...], str]:
    """Target executions of the run that match source execution rows by `execution_key` (hex ids)."""
    ex = target.tables.execution
    cols = (ex.c.id, ex.c.task_label, ex.c.quantum_id, ex.c.data_id_key, ex.c.start_time)
    quanta = sorted({r["quantum_id"] for r in rows if r["quantum_id"] is not None})
    keys = sorted({r["data_id_key"] for r in rows if r["quantum_id"] is None})
    out: dict[tuple[Any, ...], str] = {}
    conditions: list[sa.ColumnElement[bool]] = [
        ex.c.quantum_id.in_([uuid_of(q) for q in quanta[i:i + _IN_CHUNK]]) for i in range(0, len(quanta), _IN_CHUNK)]
    conditions += [sa.and_(ex.c.quantum_id.is_(None), ex.c.data_id_key.in_(keys[i:i + _IN_CHUNK]))
                   for i in range(0, len(keys), _IN_CHUNK)]
    for cond in conditions:
        for row in conn.execute(sa.select(*cols).where(ex.c.run_id == run_id, cond)):
            values = {k: raw(v) for k, v in row._mapping.items()}
            out[execution_key(values)] = values["id"]
    return out
