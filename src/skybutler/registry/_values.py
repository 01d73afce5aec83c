"""Small value helpers shared by the registry's modules: times, key tuples, chunks."""

from __future__ import annotations

import datetime
import operator
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from ..errors import DimensionError

CHUNK = 500
"""Rows per statement where a list of keys goes into an ``IN``: well under every database's parameter limit."""


def tuple_getter(keys: Sequence[Any]) -> Callable[[Any], tuple]:
    """A fast ``row -> tuple(row[k] for k in keys)`` for mappings (names) or rows (positions)."""
    if len(keys) > 1:
        return operator.itemgetter(*keys)  # type: ignore[return-value]
    if len(keys) == 1:
        only = keys[0]
        return lambda row: (row[only],)
    return lambda row: ()


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
