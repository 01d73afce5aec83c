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
    """A naive UTC `datetime.datetime` from a datetime, an ISO string or an astropy ``Time`` (None stays None).

    A datetime or string with a time zone (``+05:00``, ``Z``) is converted to UTC; one
    without is taken as UTC already. A ``Time`` in any scale (TAI, TT, ...) is converted
    to UTC. Anything else, or a string that is not an ISO time, is a `DimensionError`.

    Examples
    --------
    >>> to_datetime("2026-03-15T06:00:00-10:00")
    datetime.datetime(2026, 3, 15, 16, 0)
    """
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = datetime.datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            raise DimensionError(f"Cannot interpret {value!r} as a time: not an ISO 8601 date or time "
                                 "(e.g. 2026-03-15 or 2026-03-15T06:00:00Z)") from None
    if isinstance(value, datetime.datetime):
        return value.astimezone(datetime.UTC).replace(tzinfo=None) if value.tzinfo is not None else value
    if isinstance(value, datetime.date):
        return datetime.datetime(value.year, value.month, value.day)
    if hasattr(value, "utc") and hasattr(value.utc, "to_datetime"):  # astropy Time
        return value.utc.to_datetime()
    raise DimensionError(f"Cannot interpret {value!r} as a time")
