"""The syntax tree of ``where`` expressions: one frozen dataclass per construct.

`skybutler.registry.expr` reads text into these nodes (and re-exports them); the compiler
in `skybutler.registry._expr_sql` turns them into SQL. A node's ``pos`` is its offset in
the text, for error carets, and is not part of its identity.
"""

from __future__ import annotations

import datetime
import uuid
from dataclasses import dataclass, field, fields
from typing import Any

__all__ = [
    "CONDITIONS",
    "INT64_MAX",
    "INT64_MIN",
    "And",
    "Arithmetic",
    "Between",
    "BindParam",
    "Compare",
    "Condition",
    "Glob",
    "Identifier",
    "In",
    "Literal",
    "LiteralValue",
    "Negate",
    "Node",
    "Not",
    "Or",
    "Overlaps",
    "Range",
    "ShapeCall",
    "TimeRange",
    "Value",
    "identifiers",
]

LiteralValue = int | float | str | bool | datetime.datetime | uuid.UUID

INT64_MAX = 2**63 - 1
"""The largest value of a 64-bit integer column (every integer column is one)."""
INT64_MIN = -(2**63)
"""The smallest value of a 64-bit integer column."""


def _pos() -> Any:
    """Offset of a node in the expression text, for carets; not part of a node's identity."""
    return field(default=-1, compare=False, repr=False)


@dataclass(frozen=True)
class Literal:
    """A literal value: number, string, time (naive UTC `datetime`), boolean or `uuid.UUID`."""

    value: LiteralValue
    pos: int = _pos()


@dataclass(frozen=True)
class Identifier:
    """A name: ``visit``, ``visit.exposure_time``, ``visit.timespan.begin``, or a bare bind."""

    name: str
    pos: int = _pos()


@dataclass(frozen=True)
class BindParam:
    """A value supplied by the caller, written ``:name`` in the expression."""

    name: str
    pos: int = _pos()


@dataclass(frozen=True)
class Range:
    """An inclusive integer range ``start..stop:stride``, allowed only inside ``IN``."""

    start: int
    stop: int
    stride: int = 1
    pos: int = _pos()


@dataclass(frozen=True)
class Arithmetic:
    """``left op right`` with ``op`` one of ``+ - * / %``."""

    op: str
    left: Value
    right: Value
    pos: int = _pos()


@dataclass(frozen=True)
class Negate:
    """Unary minus of anything but a number literal (``-5`` is the literal -5)."""

    operand: Value
    pos: int = _pos()


@dataclass(frozen=True)
class ShapeCall:
    """``POINT(ra, dec)``, ``CIRCLE(ra, dec, r)``, ``BOX(ra, dec, w, h)`` or ``POLYGON(ra1, dec1, ...)``."""

    kind: str
    args: tuple[Value, ...]
    pos: int = _pos()


@dataclass(frozen=True)
class TimeRange:
    """``(begin, end)``: the half-open time range [begin, end)."""

    begin: Value
    end: Value
    pos: int = _pos()


@dataclass(frozen=True)
class Compare:
    """A binary comparison; ``op`` is one of ``=, !=, <, <=, >, >=`` (``<>`` is read as ``!=``)."""

    op: str
    left: Value
    right: Value
    pos: int = _pos()


@dataclass(frozen=True)
class Overlaps:
    """``left OVERLAPS right``: timespans with times or time ranges, regions with shapes."""

    left: Value
    right: Value
    pos: int = _pos()


@dataclass(frozen=True)
class In:
    """``operand [NOT] IN (items)``; an item is a value, a name, a bind parameter or a `Range`."""

    operand: Value
    items: tuple[Value | Range, ...]
    negated: bool = False
    pos: int = _pos()


@dataclass(frozen=True)
class Between:
    """``operand [NOT] BETWEEN low AND high``, both bounds inclusive."""

    operand: Value
    low: Value
    high: Value
    negated: bool = False
    pos: int = _pos()


@dataclass(frozen=True)
class Glob:
    """``glob(name, pattern)``: ``*`` matches any run of characters, ``?`` any one character."""

    operand: Identifier
    pattern: Literal | BindParam | Identifier
    pos: int = _pos()


@dataclass(frozen=True)
class Not:
    """Logical negation."""

    operand: Node
    pos: int = _pos()


@dataclass(frozen=True)
class And:
    """Logical conjunction of two or more operands."""

    operands: tuple[Node, ...]
    pos: int = _pos()


@dataclass(frozen=True)
class Or:
    """Logical disjunction of two or more operands."""

    operands: tuple[Node, ...]
    pos: int = _pos()


Value = Literal | Identifier | BindParam | Arithmetic | Negate | ShapeCall | TimeRange
"""A node that stands for a value."""
Condition = Compare | Overlaps | In | Between | Glob | Not | And | Or
"""A node that is true or false; `parse` returns one."""
Node = Value | Condition | Range
"""Any node of the syntax tree."""

CONDITIONS = (Compare, Overlaps, In, Between, Glob, Not, And, Or)
"""The node classes that are conditions (for `isinstance`)."""


def _children(node: Node) -> list[Node]:
    out: list[Node] = []
    for f in fields(node):  # type: ignore[arg-type]
        value = getattr(node, f.name)
        if isinstance(value, tuple):
            out.extend(v for v in value if hasattr(v, "__dataclass_fields__"))
        elif hasattr(value, "__dataclass_fields__"):
            out.append(value)
    return out


def identifiers(node: Node | None) -> set[str]:
    """Return every name an expression uses (columns, and bare names that may be binds).

    Parameters
    ----------
    node : `Node` or `None`
        A tree from `parse`.

    Returns
    -------
    names : `set` [`str`]
        Names as written, e.g. ``{"visit", "band", "visit.exposure_time"}``.
    """
    if node is None:
        return set()
    if isinstance(node, Identifier):
        return {node.name}
    if isinstance(node, ShapeCall):
        return set()  # shape arguments are numbers or binds, never columns
    return set().union(*(identifiers(child) for child in _children(node)))
