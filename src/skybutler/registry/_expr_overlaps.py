"""``OVERLAPS`` in ``where`` expressions: regions with shapes, timespans with times and ranges.

Split from `skybutler.registry._expr_sql`: its `Compiler` hands both sides of an
``OVERLAPS`` here. Timespans are half-open, ``[begin, end)``; a region is matched through
the resolver's ``region_overlaps(element, shape)``.
"""

from __future__ import annotations

import datetime
import operator
from typing import TYPE_CHECKING

import sqlalchemy as sa

from ..dimensions.regions import Shape
from ..errors import QueryError
from ._expr_lexer import with_caret
from ._expr_tree import BindParam, Identifier, Node, Overlaps, Value
from ._expr_values import Column, Compiled, Const, Interval, RegionOf, Span, is_collection, scalar, shown_of

if TYPE_CHECKING:
    from ._expr_sql import Compiler

__all__ = ["compile_overlaps", "overlap_side"]

# Conditions known when compiling (both sides constants), dropped from or deciding a conjunction.
_TRUE: sa.ColumnElement[bool] = sa.true()
_FALSE: sa.ColumnElement[bool] = sa.false()


def overlap_side(compiler: Compiler, node: Value) -> Compiled:
    """A side of OVERLAPS; there a bind may also hold a time range, as (begin, end)."""
    name = node.name if isinstance(node, BindParam | Identifier) else None
    if name is not None and (isinstance(node, BindParam) or compiler.is_bind(name)):
        given = compiler.lookup(node, name)
        if is_collection(given) and not isinstance(given, Shape):
            times = [scalar(v, name, compiler, node) for v in given]
            if len(times) != 2 or not all(isinstance(t, datetime.datetime) for t in times):
                raise compiler.fail(node, f"bind parameter ':{name}' holds several values; after OVERLAPS "
                                          "a bound time range is (begin, end)")
            return Interval(Const(times[0], f":{name}[0]"), Const(times[1], f":{name}[1]"), f":{name}")
    return compiler.value(node)


def compile_overlaps(compiler: Compiler, node: Overlaps, left: Compiled, right: Compiled) -> sa.ColumnElement[bool]:
    """``left OVERLAPS right``, each side from `overlap_side`: a region test or a time-range test."""
    if isinstance(right, RegionOf | Span) and not isinstance(left, RegionOf | Span):
        left, right = right, left
    if isinstance(left, RegionOf):
        return _region_overlaps(compiler, node, left, right)
    if isinstance(left, Const) and isinstance(left.value, Shape):
        return _region_overlaps(compiler, node, None, right, left.value)
    return _time_overlaps(compiler, node, left, right)


def _region_overlaps(
    compiler: Compiler, node: Overlaps, region: RegionOf | None, other: Compiled, shape: Shape | None = None
) -> sa.ColumnElement[bool]:
    if not (isinstance(other, Const) and isinstance(other.value, Shape)):
        if isinstance(other, RegionOf):
            raise compiler.fail(
                node,
                f"{shown_of(region) if region else 'a shape'} OVERLAPS {other.name}: a query joins regions "
                "of the dimensions it spans by itself; compare a region with a shape such as "
                "POINT(ra, dec), CIRCLE(ra, dec, r), BOX(...), POLYGON(...) or a bound region",
            )
        raise compiler.fail(
            node,
            f"OVERLAPS with a region needs a shape such as POINT(ra, dec), CIRCLE(ra, dec, r), BOX(...), "
            f"POLYGON(...) or a bound region, not {shown_of(other)}",
        )
    if region is None:  # two shapes: known now
        assert shape is not None
        return sa.true() if shape.overlaps(other.value) else sa.false()
    method = getattr(compiler.resolve, "region_overlaps", None)
    if method is None:
        raise compiler.fail(node, "region predicates are not supported here")
    try:
        result: sa.ColumnElement[bool] = method(region.element, other.value)
    except QueryError as error:  # the resolver's own reason (no such region here), pointed at
        message = str(error)
        if compiler.text is None or node.pos < 0 or "\n" in message:
            raise
        raise QueryError(with_caret(compiler.text, node.pos, message)) from None
    return result


def _time_overlaps(compiler: Compiler, node: Overlaps, left: Compiled, right: Compiled) -> sa.ColumnElement[bool]:
    # Timespans are half-open, [begin, end): a time t overlaps when begin <= t < end, two
    # ranges when each begins before the other ends, and an empty range overlaps nothing.
    a, b = _as_time(compiler, node, left), _as_time(compiler, node, right)
    if len(a) == 1 and len(b) == 1:
        raise compiler.fail(node, "OVERLAPS needs a time range on one side; compare two times with =, < or >")
    if len(a) == 1:
        a, b = b, a
    clauses = [_time_less(compiler, node, a[0], a[1])]
    if len(b) == 1:
        clauses += [_time_less(compiler, node, a[0], b[0], or_equal=True), _time_less(compiler, node, b[0], a[1])]
    else:
        clauses += [
            _time_less(compiler, node, b[0], b[1]),
            _time_less(compiler, node, a[0], b[1]),
            _time_less(compiler, node, b[0], a[1]),
        ]
    if any(c is _FALSE for c in clauses):
        return sa.false()
    kept = [c for c in clauses if c is not _TRUE]
    return sa.and_(*kept) if kept else sa.true()


def _time_less(
    compiler: Compiler, node: Node, a: Const | Column, b: Const | Column, or_equal: bool = False
) -> sa.ColumnElement[bool]:
    compare = operator.le if or_equal else operator.lt
    if isinstance(a, Const) and isinstance(b, Const):
        return _TRUE if compare(a.value, b.value) else _FALSE
    if isinstance(a, Column) and isinstance(b, Column):
        return compare(a.expr, b.expr)  # type: ignore[no-any-return]
    if isinstance(a, Column):
        return compare(a.expr, compiler.check(node, a, b))  # type: ignore[arg-type,no-any-return]
    return compare(a.value, b.expr)  # type: ignore[union-attr,no-any-return]  # reflected by SQLAlchemy


def _as_time(compiler: Compiler, node: Overlaps, side: Compiled) -> tuple[Const | Column, ...]:
    """A side of a time OVERLAPS: ``(begin, end)`` of a range, or ``(t,)`` for a time."""
    if isinstance(side, Span):
        return Column(side.begin, f"{side.name}.begin"), Column(side.end, f"{side.name}.end")
    if isinstance(side, Interval):
        return side.begin, side.end
    if isinstance(side, Const) and isinstance(side.value, datetime.datetime):
        return (side,)
    if isinstance(side, Column) and isinstance(side.expr.type, sa.DateTime):
        return (side,)
    raise compiler.fail(
        node,
        f"OVERLAPS compares a timespan (e.g. visit.timespan) with a time, a time range (begin, end) "
        f"or another timespan, or a region with a shape; {shown_of(side)} is none of these",
    )
