"""Rows of a merge in the target: lookups by id and by natural key, and bulk inserts, on SQLite or PostgreSQL.

Values travel in one raw form, as a SQLite registry stores them: ids as 32-digit hex
text, times as ``YYYY-MM-DD HH:MM:SS.ffffff`` text. A merge from a job's SQLite outcome
into a SQLite target then converts nothing; PostgreSQL takes the same text for its
``uuid`` and ``timestamp`` columns.
"""

from __future__ import annotations

import datetime
import uuid
from collections.abc import Iterator, Sequence
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
    name = qualified(conn, table)
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


def qualified(conn: sa.Connection, table: sa.Table) -> str:
    """The table's quoted name, in the PostgreSQL schema the registry's engine maps it to."""
    quote = conn.dialect.identifier_preparer.quote
    namespace = (conn.get_execution_options().get("schema_translate_map") or {}).get(None)
    return (f"{quote(namespace)}." if namespace else "") + quote(table.name)


def select_raw(conn: sa.Connection, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
    """A SELECT through the DB-API (no SQLAlchemy parameter or result processing)."""
    cursor = conn.connection.cursor()
    try:
        cursor.execute(sql, list(params))
        return list(cursor.fetchall())
    finally:
        cursor.close()


def _keyed(conn: sa.Connection, sql: str, column: str, keys: Sequence[Any], cast: str = "",
           params: Sequence[Any] = ()) -> Iterator[tuple[Any, ...]]:
    """Rows of ``sql`` (with ``{where}`` standing for "``column`` is one of ``keys``"), first column as hex.

    SQLite: ``IN (?, ...)`` by 500 keys. PostgreSQL: ``= ANY(%s)`` with one array
    parameter by 10,000 keys (an ``IN`` list of 500 parameters costs more to send and
    plan than the lookup itself).
    """
    if conn.dialect.name == "postgresql":
        for i in range(0, len(keys), 10_000):
            where = f"{column} = ANY(%s{cast})"
            for row in select_raw(conn, sql.format(where=where), [*params, list(keys[i:i + 10_000])]):
                yield (raw(row[0]), *row[1:])
    else:
        for i in range(0, len(keys), _IN_CHUNK):
            chunk = keys[i:i + _IN_CHUNK]
            where = f"{column} IN ({', '.join('?' * len(chunk))})"
            yield from select_raw(conn, sql.replace("%s", "?").format(where=where), [*params, *chunk])


def existing_ids(conn: sa.Connection, table: sa.Table, ids: Sequence[str]) -> set[str]:
    """Those of ``ids`` (hex) that ``table`` holds."""
    return {row[0] for row in _keyed(conn, f"SELECT id FROM {qualified(conn, table)} WHERE {{where}}", "id", ids,
                                     "::uuid[]")}


def datasets_by_id(target: Registry, conn: sa.Connection, ids: Sequence[str],
                   ) -> dict[str, tuple[int, int, str, str | None, int | None]]:
    """``id -> (type id, run id, data id key, checksum, size)`` of the target's datasets among ``ids`` (hex)."""
    d, f = qualified(conn, target.tables.dataset), qualified(conn, target.tables.file)
    sql = (f"SELECT d.id, d.dataset_type_id, d.run_id, d.data_id_key, f.checksum, f.size FROM {d} AS d "
           f"LEFT JOIN {f} AS f ON f.dataset_id = d.id WHERE {{where}}")
    return {row[0]: tuple(row[1:]) for row in _keyed(conn, sql, "d.id", ids, "::uuid[]")}  # type: ignore[misc]


def datasets_by_key(target: Registry, conn: sa.Connection, keys: Sequence[tuple[int, int, str]],
                    ) -> dict[tuple[int, int, str], tuple[str, str | None, int | None]]:
    """``(type id, run id, data id key) -> (hex id, checksum, size)`` of the target's datasets with those keys."""
    d, f = qualified(conn, target.tables.dataset), qualified(conn, target.tables.file)
    sql = (f"SELECT d.id, d.data_id_key, f.checksum, f.size FROM {d} AS d LEFT JOIN {f} AS f "
           f"ON f.dataset_id = d.id WHERE d.dataset_type_id = %s AND d.run_id = %s AND {{where}}")
    groups: dict[tuple[int, int], list[str]] = {}
    for type_id, run_id, key in keys:
        groups.setdefault((type_id, run_id), []).append(key)
    out = {}
    for (type_id, run_id), data_id_keys in groups.items():
        for row in _keyed(conn, sql, "d.data_id_key", data_id_keys, params=[type_id, run_id]):
            out[(type_id, run_id, row[1])] = (row[0], row[2], row[3])
    return out


def taken_paths(target: Registry, conn: sa.Connection, paths: Sequence[str]) -> set[str]:
    """Those of ``paths`` that a file row of the target names."""
    f = qualified(conn, target.tables.file)
    return {row[1] for row in _keyed(conn, f"SELECT dataset_id, path FROM {f} WHERE {{where}}", "path", paths)}


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
