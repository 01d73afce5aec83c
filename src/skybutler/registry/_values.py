"""Small value helpers shared by the registry's modules: times, key tuples, chunks."""

from __future__ import annotations

import datetime
import operator
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import sqlalchemy as sa

from ..errors import DimensionError

CHUNK = 500
"""Rows per statement where a list of keys goes into an ``IN``: well under every database's parameter limit."""

ARRAY_CHUNK = 10_000
"""Keys per statement where PostgreSQL takes them as one array parameter (`any_of`)."""


def tuple_getter(keys: Sequence[Any]) -> Callable[[Any], tuple]:
    """A fast ``row -> tuple(row[k] for k in keys)`` for mappings (names) or rows (positions)."""
    if len(keys) > 1:
        return operator.itemgetter(*keys)  # type: ignore[return-value]
    if len(keys) == 1:
        only = keys[0]
        return lambda row: (row[only],)
    return lambda row: ()


def any_of(column: sa.ColumnElement[Any], name: str, dialect: str) -> sa.ColumnElement[bool]:
    """``column`` is one of the list bound as ``name``: ``= ANY(:name)`` on PostgreSQL, an expanding ``IN`` elsewhere.

    An array is one parameter whatever its length, so the statement's text (and psycopg's
    prepared statement) stays the same; an ``IN`` list is re-rendered for each length and
    costs a parameter per key. Bind it in slices of `chunk_size` keys.
    """
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import ARRAY

        return column == sa.any_(sa.bindparam(name, type_=ARRAY(column.type)))
    return column.in_(sa.bindparam(name, expanding=True))


def chunk_size(dialect: str) -> int:
    """Keys per statement for `any_of`."""
    return ARRAY_CHUNK if dialect == "postgresql" else CHUNK


def chunks(seq: Sequence[Any], n: int = CHUNK) -> Iterator[Sequence[Any]]:
    """``seq`` in slices of at most ``n``."""
    for i in range(0, len(seq), n):
        yield seq[i:i + n]


def to_datetime(value: Any) -> Any:
    """A naive UTC `datetime.datetime` from a datetime, an ISO string or an astropy ``Time`` (None stays None)."""
    if value is None or isinstance(value, datetime.datetime):
        return value.replace(tzinfo=None) if isinstance(value, datetime.datetime) and value.tzinfo else value
    if isinstance(value, str):
        return datetime.datetime.fromisoformat(value.replace("Z", "+00:00")).replace(tzinfo=None)
    if hasattr(value, "to_datetime"):  # astropy Time
        return value.utc.to_datetime()
    raise DimensionError(f"Cannot interpret {value!r} as a time")
