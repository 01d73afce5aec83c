"""What the ``where`` compiler makes of a value, and the checks of a value against a column.

A name or literal compiles to a constant (`Const`), a column expression (`Column`), a
timespan (`Span`), a region (`RegionOf`) or a time range (`Interval`); this module also
normalises bound values and refuses those that cannot match a column's type.
"""

from __future__ import annotations

import datetime
import numbers
import uuid
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from ..dimensions.regions import Shape
from ..errors import QueryError
from ._expr_tree import INT64_MAX, INT64_MIN, LiteralValue, Node

if TYPE_CHECKING:
    from ._expr_sql import Compiler

__all__ = ["Column", "Compiled", "Const", "Interval", "RegionOf", "Span", "check_type", "checked_quickly",
           "describe_node", "is_collection", "is_integer", "is_numeric", "scalar", "show_value", "shown_of"]


class Const:
    """A value known when compiling: a literal, a bind, or arithmetic of those."""

    __match_args__ = ("value", "shown")
    __slots__ = ("_shown", "value")

    def __init__(self, value: Any, shown: str | None = None):
        """``value``, shown in messages as ``shown`` (by default, as it would be written)."""
        self.value = value
        self._shown = shown

    @property
    def shown(self) -> str:
        """The value as written in messages (worked out only for a message: lists can be long)."""
        return self._shown if self._shown is not None else show_value(self.value)


@dataclass
class Column:
    """A SQL expression over columns, and how to name it in messages."""

    expr: sa.ColumnElement[Any]
    name: str


@dataclass
class Span:
    """``X.timespan``: two columns, the end exclusive."""

    begin: sa.ColumnElement[Any]
    end: sa.ColumnElement[Any]
    name: str


@dataclass
class RegionOf:
    """``X.region``: the region column of element X, matched only through the resolver."""

    element: str
    name: str


@dataclass
class Interval:
    """A time range ``(begin, end)`` whose bounds are constants or columns."""

    begin: Const | Column
    end: Const | Column
    shown: str


Compiled = Const | Column | Span | RegionOf | Interval


def describe_node(node: Node) -> str:
    """The kind of a node, for messages ("Compare")."""
    return type(node).__name__ if node is not None else "nothing"


def shown_of(value: Compiled | None) -> str:
    """A compiled value as messages show it: its text for constants, its name for columns."""
    match value:
        case Const(_, shown) | Interval(_, _, shown):
            return shown
        case Column(_, name) | Span(_, _, name) | RegionOf(_, name):
            return name
    return "nothing"


def is_numeric(expr: sa.ColumnElement[Any]) -> bool:
    """Whether an expression holds numbers (or its type is unknown)."""
    return isinstance(expr.type, sa.Integer | sa.Numeric | sa.Float | sa.types.NullType)


def is_integer(expr: sa.ColumnElement[Any]) -> bool:
    """Whether an expression holds integers (or its type is unknown)."""
    return isinstance(expr.type, sa.Integer | sa.types.NullType)


def checked_quickly(column: sa.ColumnElement[Any], given: Any) -> list[Any] | None:
    """A bound list of plain ints or strs that plainly fits the column, checked in one pass; else None.

    The common long lists (visit ids, names) skip the per-value path, which costs
    microseconds a value; anything unusual returns None and is checked value by value.
    """
    values = given.tolist() if hasattr(given, "tolist") else list(given)
    if not values:
        return values
    column_type = column.type
    if isinstance(column_type, sa.Integer) and all(type(v) is int for v in values):
        return values if min(values) >= INT64_MIN and max(values) <= INT64_MAX else None
    if isinstance(column_type, sa.String) and all(type(v) is str for v in values):
        length = getattr(column_type, "length", None)
        if "\x00" in "".join(values) or length is not None and max(map(len, values)) > length:
            return None
        return values
    return None


def is_collection(value: Any) -> bool:
    """Whether a bound value holds several values (a list, set, array; not a string)."""
    # A scalar astropy Time is iterable in name only.
    return isinstance(value, Iterable) and not isinstance(value, str | bytes) and not getattr(value, "isscalar", False)


def scalar(value: Any, name: str, compiler: Compiler | None = None, node: Node | None = None) -> LiteralValue:
    """Normalise a bound value (numpy numbers and astropy times included) to the types literals have."""

    def fail(message: str) -> QueryError:
        if compiler is not None:
            return compiler.fail(node, message)
        return QueryError(f"Invalid query expression: {message}")

    if isinstance(value, bool | str | uuid.UUID):
        return value
    if isinstance(value, datetime.datetime):
        if value.tzinfo is not None:
            value = value.astimezone(datetime.UTC).replace(tzinfo=None)
        return value
    if isinstance(value, numbers.Integral):
        number = int(value)
        if not INT64_MIN <= number <= INT64_MAX:
            raise fail(f"bind parameter ':{name}' is {number}, which does not fit a 64-bit column")
        return number
    if isinstance(value, numbers.Real):
        return float(value)
    if type(value).__module__.startswith("astropy.time"):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return value.utc.to_datetime().replace(tzinfo=None)  # type: ignore[no-any-return]
        except Exception:
            raise fail(f"bind parameter ':{name}' is a time that has no UTC datetime") from None
    raise fail(
        f"bind parameter ':{name}' is {value!r:.80} of type {type(value).__name__}; "
        "expected a number, string, boolean, datetime or UUID"
    )


def show_value(value: LiteralValue) -> str:
    """A literal as an expression would write it, cut short past 60 characters."""
    if isinstance(value, datetime.datetime):
        return f"T'{value.isoformat()}'"
    if isinstance(value, uuid.UUID):
        return f"UUID('{value}')"
    return repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "..."


def check_type(column: sa.ColumnElement[Any], name: str, value: Any, shown: str) -> Any:
    """Reject a value that cannot match the column's type, before the database does so cryptically.

    An integer compared with a string column is turned into a string, as SQLite would
    do, so ``patch = 3`` behaves the same on PostgreSQL.  Strings PostgreSQL could not
    hold (a NUL character, more characters than the column has) are refused on every
    database, so an expression means the same on both.  Columns of a type not
    recognised here are passed through unchecked.
    """
    column_type = column.type
    if isinstance(value, Shape):
        raise QueryError(
            f"Invalid query expression: {shown} is a sky shape; compare it with a region using OVERLAPS"
        )
    if isinstance(column_type, sa.Boolean):
        expected = "booleans"
        fits = isinstance(value, bool | int)
    elif isinstance(column_type, sa.Integer | sa.Numeric | sa.Float):
        expected = "numbers"
        fits = isinstance(value, int | float) and not isinstance(value, bool)
    elif isinstance(column_type, sa.Uuid):
        if isinstance(value, str):
            raise QueryError(
                f"Invalid query expression: {name} holds UUIDs, but {shown} is a string; write UUID({shown})"
            )
        expected = "UUIDs"
        fits = isinstance(value, uuid.UUID)
    elif isinstance(column_type, sa.String):
        expected = "strings"
        if type(value) is int:
            value = str(value)
        fits = isinstance(value, str)
        if fits and "\x00" in value:
            raise QueryError(
                f"Invalid query expression: {shown} holds a NUL character, which no {name} can hold"
            )
        length = getattr(column_type, "length", None)
        if fits and length is not None and len(value) > length:
            raise QueryError(
                f"Invalid query expression: {name} holds strings of at most {length} characters, "
                f"but {shown} has {len(value)}"
            )
    elif isinstance(column_type, sa.DateTime | sa.Date):
        if isinstance(value, str):
            raise QueryError(
                f"Invalid query expression: {name} holds times, but {shown} is a string; "
                f"write a time literal such as T'2026-01-01T00:00:00'"
            )
        expected = "times"
        fits = isinstance(value, datetime.date)
    else:
        return value
    if not fits:
        raise QueryError(f"Invalid query expression: {name} holds {expected}, but it is compared with {shown}")
    return value
