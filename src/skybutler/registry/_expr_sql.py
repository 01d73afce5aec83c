"""The compiler of ``where`` expressions: syntax trees (`skybutler.registry.expr`) to SQLAlchemy.

Names become columns through the caller's ``resolve``; every value is checked
against the type of the column it meets (so PostgreSQL and SQLite agree, and
neither sees a value it would reject with a driver traceback) and becomes a
bound parameter.  Two constructs differ by database: value lists (one array
parameter on PostgreSQL, inline literals past SQLite's parameter limit) and
glob matches (SQLite's GLOB, LIKE elsewhere; both case-sensitive).
"""

from __future__ import annotations

import datetime
import math
import numbers
import operator
import re
import uuid
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.compiler import compiles

from ..dimensions.regions import Circle, Point, Region, Shape
from ..errors import DimensionError, QueryError
from ._expr_lexer import with_caret
from ._expr_tree import (
    INT64_MAX,
    INT64_MIN,
    And,
    Arithmetic,
    Between,
    BindParam,
    Compare,
    Glob,
    Identifier,
    In,
    Literal,
    LiteralValue,
    Negate,
    Node,
    Not,
    Or,
    Overlaps,
    Range,
    ShapeCall,
    TimeRange,
    Value,
)
from .expr import parse

# --- SQL constructs that differ by database ---------------------------------------------------------

# SQLite refuses statements with more parameters than its limit (32766 by default, less on
# older builds); above this many values a list is rendered inline by SQLAlchemy's literal
# processors.  PostgreSQL gets one array parameter however long the list.
_SQLITE_MAX_BOUND_VALUES = 1000


class _ValueList(sa.sql.expression.ColumnElement[bool]):
    """``column IN (values)``, as one array parameter on PostgreSQL."""

    inherit_cache = False  # the values are data; a list of 100,000 must not become a cache key
    type = sa.Boolean()

    def __init__(self, column: sa.ColumnElement[Any], values: list[Any]):
        self.column = column
        self.values = values


@compiles(_ValueList)
def _compile_value_list(element: _ValueList, compiler: Any, **kw: Any) -> str:
    values = element.values
    param = sa.bindparam(
        None,
        values,
        expanding=True,
        literal_execute=len(values) > _SQLITE_MAX_BOUND_VALUES,
        type_=element.column.type,
    )
    return str(compiler.process(element.column.in_(param), **kw))


@compiles(_ValueList, "postgresql")
def _compile_value_list_postgresql(element: _ValueList, compiler: Any, **kw: Any) -> str:
    array = sa.bindparam(None, list(element.values), type_=postgresql.ARRAY(element.column.type))
    return str(compiler.process(element.column == sa.any_(array), **kw))


class _GlobMatch(sa.sql.expression.ColumnElement[bool]):
    """A case-sensitive wildcard match: SQLite's GLOB, LIKE elsewhere (case-sensitive on PostgreSQL)."""

    inherit_cache = False
    type = sa.Boolean()

    def __init__(self, column: sa.ColumnElement[Any], pattern: str):
        self.column = column
        self.pattern = pattern


@compiles(_GlobMatch)
def _compile_glob_like(element: _GlobMatch, compiler: Any, **kw: Any) -> str:
    escaped = re.sub(r"([\\%_])", r"\\\1", element.pattern).replace("*", "%").replace("?", "_")
    return str(compiler.process(element.column.like(escaped, escape="\\"), **kw))


@compiles(_GlobMatch, "sqlite")
def _compile_glob_sqlite(element: _GlobMatch, compiler: Any, **kw: Any) -> str:
    # SQLite's LIKE ignores case; its GLOB does not, and only "[" needs escaping ("[[]").
    pattern = element.pattern.replace("[", "[[]")
    return f"{compiler.process(element.column, **kw)} GLOB {compiler.process(sa.bindparam(None, pattern), **kw)}"


# --- Compiler -------------------------------------------------------------------------------------

_OPERATORS: dict[str, Callable[[Any, Any], Any]] = {
    "=": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}
_MIRRORED = {"=": "=", "!=": "!=", "<": ">", "<=": ">=", ">": "<", ">=": "<="}


class _Const:
    """A value known when compiling: a literal, a bind, or arithmetic of those."""

    __match_args__ = ("value", "shown")
    __slots__ = ("_shown", "value")

    def __init__(self, value: Any, shown: str | None = None):
        self.value = value
        self._shown = shown

    @property
    def shown(self) -> str:
        """The value as written in messages (worked out only for a message: lists can be long)."""
        return self._shown if self._shown is not None else _show(self.value)


@dataclass
class _Column:
    """A SQL expression over columns, and how to name it in messages."""

    expr: sa.ColumnElement[Any]
    name: str


@dataclass
class _Span:
    """``X.timespan``: two columns, the end exclusive."""

    begin: sa.ColumnElement[Any]
    end: sa.ColumnElement[Any]
    name: str


@dataclass
class _RegionOf:
    """``X.region``: the region column of element X, matched only through the resolver."""

    element: str
    name: str


@dataclass
class _Interval:
    """A time range ``(begin, end)`` whose bounds are constants or columns."""

    begin: _Const | _Column
    end: _Const | _Column
    shown: str


_Compiled = _Const | _Column | _Span | _RegionOf | _Interval

# Conditions known when compiling (both sides constants), dropped from or deciding a conjunction.
_TRUE: sa.ColumnElement[bool] = sa.true()
_FALSE: sa.ColumnElement[bool] = sa.false()


class Compiler:
    """Compiles one expression: names through ``resolve``, values from ``bind``."""

    def __init__(
        self, resolve: Callable[[str], sa.ColumnElement[Any]], bind: Mapping[str, Any], text: str | None
    ):
        self.resolve = resolve
        self.bind = bind
        self.text = text
        self.example = "x"

    # -- errors ----------------------------------------------------------------------------------

    def fail(self, node: Node | None, message: str) -> QueryError:
        message = f"Invalid query expression: {message}"
        if self.text is not None and node is not None and node.pos >= 0:
            return QueryError(with_caret(self.text, node.pos, message))
        return QueryError(message)

    def resolve_name(self, node: Identifier, name: str) -> sa.ColumnElement[Any]:
        try:
            return self.resolve(name)
        except QueryError as error:
            message = str(error)
            if self.text is None or node.pos < 0 or "\n" in message:
                raise
            raise QueryError(with_caret(self.text, node.pos, message)) from None

    # -- conditions ------------------------------------------------------------------------------

    def compile(self, node: Node) -> sa.ColumnElement[bool]:
        match node:
            case Compare(op, left, right):
                names = [side.name for side in (left, right) if isinstance(side, Identifier)]
                self.example = names[0] if names else "x"  # for "use it with IN, e.g. visit IN (:v)"
                return self.compare(node, op, self.value(left), self.value(right))
            case In(operand, items, negated):
                clause = self.in_(node, operand, items)
                return sa.not_(clause) if negated else clause
            case Between(operand, low, high, negated):
                clause = sa.and_(
                    self.compare(node, ">=", self.value(operand), self.value(low)),
                    self.compare(node, "<=", self.value(operand), self.value(high)),
                )
                return sa.not_(clause) if negated else clause
            case Overlaps(left, right):
                return self.overlaps(node, self.overlap_side(left), self.overlap_side(right))
            case Glob(operand, pattern):
                return self.glob(node, operand, pattern)
            case Not(operand):
                return sa.not_(self.compile(operand))
            case And(operands):
                return sa.and_(*(self.compile(operand) for operand in operands))
            case Or(operands):
                return sa.or_(*(self.compile(operand) for operand in operands))
        raise self.fail(node, f"{_describe(node)} is a value, not a condition")

    def compare(self, node: Node, op: str, left: _Compiled, right: _Compiled) -> sa.ColumnElement[bool]:
        for side in (left, right):
            if isinstance(side, _Span):
                raise self.fail(
                    node,
                    f"{side.name} is a time range: compare {side.name}.begin or {side.name}.end, "
                    f"or use {side.name} OVERLAPS ...",
                )
            if isinstance(side, _RegionOf):
                raise self.fail(node, f"{side.name} can only be used with OVERLAPS and a shape such as POINT(ra, dec)")
            if isinstance(side, _Interval):
                raise self.fail(node, f"the time range {side.shown} can only be used with OVERLAPS")
        if isinstance(left, _Const) and isinstance(right, _Const):
            raise self.fail(
                node,
                "a comparison needs a dimension or metadata name on one side, but both sides are values"
                + self.clash_hint(),
            )
        if isinstance(left, _Const):  # put the column on the left: 903000 < visit -> visit > 903000
            left, right, op = right, left, _MIRRORED[op]
        assert isinstance(left, _Column) and isinstance(right, _Column | _Const)
        other = right.expr if isinstance(right, _Column) else self.check(node, left, right)
        result: sa.ColumnElement[bool] = _OPERATORS[op](left.expr, other)
        return result

    def clash_hint(self) -> str:
        if not self.bind:
            return ""
        return " (a bare name in bind is a bind value; write :name for binds and a column's name for columns)"

    def check(self, node: Node, column: _Column, const: _Const) -> Any:
        """The constant as a value of the column's type, or the error saying why it cannot be."""
        try:
            return _check_type(column.expr, column.name, const.value, const.shown)
        except QueryError as error:
            raise self.fail(node, str(error).removeprefix("Invalid query expression: ")) from None

    def in_(self, node: In, operand: Value, items: Iterable[Value | Range]) -> sa.ColumnElement[bool]:
        left = self.value(operand)
        if isinstance(left, _Span | _RegionOf | _Interval):
            raise self.fail(node, f"IN needs a single value on its left, not {_shown(left)}; use OVERLAPS")
        values: list[Any] = []
        clauses: list[sa.ColumnElement[bool]] = []
        for item in items:
            if isinstance(item, Range):
                clauses.append(self.in_range(node, left, item))
                continue
            if isinstance(item, BindParam) or isinstance(item, Identifier) and self.is_bind(item.name):
                given = self.lookup(item, item.name)
                if _is_collection(given):
                    if isinstance(left, _Column) and (checked := _checked_quickly(left.expr, given)) is not None:
                        values.extend(checked)
                        continue
                    consts = [_Const(_scalar(v, item.name, self, item), f":{item.name}") for v in given]
                    if isinstance(left, _Const):
                        clauses.extend(self.const_equal(node, left, c) for c in consts)
                    else:
                        values.extend(self.check(item, left, c) for c in consts)
                    continue
            right = self.value(item)
            if isinstance(right, _Span | _RegionOf | _Interval):
                raise self.fail(item, f"an IN list holds single values, not {_shown(right)}")
            if isinstance(left, _Column) and isinstance(right, _Const):
                values.append(self.check(item, left, right))
            elif isinstance(left, _Const) and isinstance(right, _Const):
                clauses.append(self.const_equal(node, left, right))
            else:
                clauses.append(self.compare(item, "=", left, right))
        if isinstance(left, _Column) and (values or not clauses):
            clauses.insert(0, _ValueList(left.expr, values) if values else left.expr.in_([]))
        if not clauses:
            return sa.false()
        return clauses[0] if len(clauses) == 1 else sa.or_(*clauses)

    def const_equal(self, node: Node, left: _Const, right: _Const) -> sa.ColumnElement[bool]:
        try:
            equal = bool(left.value == right.value)
        except Exception:  # values of unrelated types are simply unequal
            equal = False
        return sa.true() if equal else sa.false()

    def in_range(self, node: In, left: _Const | _Column, item: Range) -> sa.ColumnElement[bool]:
        if isinstance(left, _Const):
            value = left.value
            inside = type(value) is int and item.start <= value <= item.stop and (value - item.start) % item.stride == 0
            return sa.true() if inside else sa.false()
        column = left.expr
        if not isinstance(column.type, sa.Integer | sa.types.NullType):
            raise self.fail(
                item,
                f"the range {item.start}..{item.stop} needs an integer column, but {left.name} holds {column.type}",
            )
        clause: sa.ColumnElement[bool] = column.between(item.start, item.stop)
        if item.stride > 1:
            # Within the range, (column - start) >= 0, so % behaves the same on every database.
            clause = sa.and_(clause, (column - item.start) % item.stride == 0)
        return clause

    def glob(self, node: Glob, operand: Identifier, pattern: Literal | BindParam | Identifier) -> sa.ColumnElement[bool]:
        column = self.value(operand)
        if not isinstance(column, _Column) or not isinstance(column.expr.type, sa.String | sa.types.NullType):
            raise self.fail(node, f"glob() needs a column of strings, but {operand.name} is not one")
        text = self.value(pattern)
        if not isinstance(text, _Const) or not isinstance(text.value, str):
            raise self.fail(node, "glob() needs a string pattern such as 'HSC-*'")
        self.check(node, column, text)
        return _GlobMatch(column.expr, text.value)

    # -- OVERLAPS --------------------------------------------------------------------------------

    def overlap_side(self, node: Value) -> _Compiled:
        """A side of OVERLAPS; there a bind may also hold a time range, as (begin, end)."""
        name = node.name if isinstance(node, BindParam | Identifier) else None
        if name is not None and (isinstance(node, BindParam) or self.is_bind(name)):
            given = self.lookup(node, name)
            if _is_collection(given) and not isinstance(given, Shape):
                times = [_scalar(v, name, self, node) for v in given]
                if len(times) != 2 or not all(isinstance(t, datetime.datetime) for t in times):
                    raise self.fail(node, f"bind parameter ':{name}' holds several values; after OVERLAPS "
                                          "a bound time range is (begin, end)")
                return _Interval(_Const(times[0], f":{name}[0]"), _Const(times[1], f":{name}[1]"), f":{name}")
        return self.value(node)

    def overlaps(self, node: Overlaps, left: _Compiled, right: _Compiled) -> sa.ColumnElement[bool]:
        if isinstance(right, _RegionOf | _Span) and not isinstance(left, _RegionOf | _Span):
            left, right = right, left
        if isinstance(left, _RegionOf):
            return self.region_overlaps(node, left, right)
        if isinstance(left, _Const) and isinstance(left.value, Shape):
            return self.region_overlaps(node, None, right, left.value)
        return self.time_overlaps(node, left, right)

    def region_overlaps(
        self, node: Overlaps, region: _RegionOf | None, other: _Compiled, shape: Shape | None = None
    ) -> sa.ColumnElement[bool]:
        if not (isinstance(other, _Const) and isinstance(other.value, Shape)):
            if isinstance(other, _RegionOf):
                raise self.fail(
                    node,
                    f"{_shown(region) if region else 'a shape'} OVERLAPS {other.name}: a query joins regions "
                    "of the dimensions it spans by itself; compare a region with a shape such as "
                    "POINT(ra, dec), CIRCLE(ra, dec, r), BOX(...), POLYGON(...) or a bound region",
                )
            raise self.fail(
                node,
                f"OVERLAPS with a region needs a shape such as POINT(ra, dec), CIRCLE(ra, dec, r), BOX(...), "
                f"POLYGON(...) or a bound region, not {_shown(other)}",
            )
        if region is None:  # two shapes: known now
            assert shape is not None
            return sa.true() if shape.overlaps(other.value) else sa.false()
        method = getattr(self.resolve, "region_overlaps", None)
        if method is None:
            raise self.fail(node, "region predicates are not supported here")
        try:
            result: sa.ColumnElement[bool] = method(region.element, other.value)
        except QueryError as error:  # the resolver's own reason (no such region here), pointed at
            message = str(error)
            if self.text is None or node.pos < 0 or "\n" in message:
                raise
            raise QueryError(with_caret(self.text, node.pos, message)) from None
        return result

    def time_overlaps(self, node: Overlaps, left: _Compiled, right: _Compiled) -> sa.ColumnElement[bool]:
        # Timespans are half-open, [begin, end): a time t overlaps when begin <= t < end, two
        # ranges when each begins before the other ends, and an empty range overlaps nothing.
        a, b = self.as_time(node, left), self.as_time(node, right)
        if len(a) == 1 and len(b) == 1:
            raise self.fail(node, "OVERLAPS needs a time range on one side; compare two times with =, < or >")
        if len(a) == 1:
            a, b = b, a
        clauses = [self.time_less(node, a[0], a[1])]
        if len(b) == 1:
            clauses += [self.time_less(node, a[0], b[0], or_equal=True), self.time_less(node, b[0], a[1])]
        else:
            clauses += [
                self.time_less(node, b[0], b[1]),
                self.time_less(node, a[0], b[1]),
                self.time_less(node, b[0], a[1]),
            ]
        if any(c is _FALSE for c in clauses):
            return sa.false()
        kept = [c for c in clauses if c is not _TRUE]
        return sa.and_(*kept) if kept else sa.true()

    def time_less(
        self, node: Node, a: _Const | _Column, b: _Const | _Column, or_equal: bool = False
    ) -> sa.ColumnElement[bool]:
        compare = operator.le if or_equal else operator.lt
        if isinstance(a, _Const) and isinstance(b, _Const):
            return _TRUE if compare(a.value, b.value) else _FALSE
        if isinstance(a, _Column) and isinstance(b, _Column):
            return compare(a.expr, b.expr)  # type: ignore[no-any-return]
        if isinstance(a, _Column):
            return compare(a.expr, self.check(node, a, b))  # type: ignore[arg-type,no-any-return]
        return compare(a.value, b.expr)  # type: ignore[union-attr,no-any-return]  # reflected by SQLAlchemy

    def as_time(self, node: Overlaps, side: _Compiled) -> tuple[_Const | _Column, ...]:
        """A side of a time OVERLAPS: ``(begin, end)`` of a range, or ``(t,)`` for a time."""
        if isinstance(side, _Span):
            return _Column(side.begin, f"{side.name}.begin"), _Column(side.end, f"{side.name}.end")
        if isinstance(side, _Interval):
            return side.begin, side.end
        if isinstance(side, _Const) and isinstance(side.value, datetime.datetime):
            return (side,)
        if isinstance(side, _Column) and isinstance(side.expr.type, sa.DateTime):
            return (side,)
        raise self.fail(
            node,
            f"OVERLAPS compares a timespan (e.g. visit.timespan) with a time, a time range (begin, end) "
            f"or another timespan, or a region with a shape; {_shown(side)} is none of these",
        )

    # -- values ----------------------------------------------------------------------------------

    def is_bind(self, name: str) -> bool:
        """A bare name is a bind when it is a key of ``bind`` and no column answers to it."""
        if name not in self.bind:
            return False
        try:
            self.resolve(name)
        except QueryError:
            return True
        return False

    def lookup(self, node: Node, name: str) -> Any:
        try:
            return self.bind[name]
        except KeyError:
            given = ", ".join(f":{key}" for key in sorted(self.bind)) or "none"
            raise self.fail(node, f"no value given for bind parameter ':{name}' (binds given: {given})") from None

    def bound(self, node: Node, name: str) -> _Const:
        given = self.lookup(node, name)
        if isinstance(given, Shape):
            return _Const(given, f":{name}")
        if _is_collection(given):
            raise self.fail(
                node, f"bind parameter ':{name}' holds several values; use it with IN, e.g. {self.example} IN (:{name})"
            )
        return _Const(_scalar(given, name, self, node), f":{name}")

    def value(self, node: Node) -> _Compiled:
        match node:
            case Literal(value):
                return _Const(value)
            case BindParam(name):
                return self.bound(node, name)
            case Identifier(name):
                return self.identifier(node, name)
            case Arithmetic(op, left, right):
                return self.arithmetic(node, op, self.value(left), self.value(right))
            case Negate(operand):
                inner = self.value(operand)
                if isinstance(inner, _Const) and type(inner.value) in (int, float):
                    return _Const(-inner.value, f"-{inner.shown}")
                if isinstance(inner, _Column) and _is_numeric(inner.expr):
                    return _Column(-inner.expr, f"-{inner.name}")
                raise self.fail(node, f"unary minus needs a number, not {_shown(inner)}")
            case ShapeCall(kind, args):
                return _Const(self.shape(node, kind, args), f"{kind}(...)")
            case TimeRange(begin, end):
                bounds = []
                for bound in (begin, end):
                    time = self.value(bound)
                    is_time = isinstance(time, _Const) and isinstance(time.value, datetime.datetime) or (
                        isinstance(time, _Column) and isinstance(time.expr.type, sa.DateTime)
                    )
                    if not is_time:
                        raise self.fail(
                            bound, f"a time range holds times such as T'2026-01-01T00:00:00', not {_shown(time)}"
                        )
                    bounds.append(time)
                return _Interval(bounds[0], bounds[1], "(begin, end)")  # type: ignore[arg-type]
        raise self.fail(node, f"{_describe(node)} is a condition, not a value")

    def identifier(self, node: Identifier, name: str) -> _Compiled:
        parts = name.split(".")
        if len(parts) >= 2 and parts[-2] == "timespan" and parts[-1] in ("begin", "end"):
            column = ".".join(parts[:-2] + [f"timespan_{parts[-1]}"])
            return _Column(self.resolve_name(node, column), name)
        if parts[-1] == "timespan" and len(parts) <= 2:
            prefix = ".".join(parts[:-1] + ["timespan_"])
            return _Span(self.resolve_name(node, prefix + "begin"), self.resolve_name(node, prefix + "end"), name)
        if parts[-1] == "region" and len(parts) == 2:
            return _RegionOf(parts[0], name)
        if len(parts) == 3:
            raise self.fail(node, f"{name!r} is not a name: only X.timespan.begin and X.timespan.end have two dots")
        if self.is_bind(name):
            return self.bound(node, name)
        return _Column(self.resolve_name(node, name), name)

    def arithmetic(self, node: Arithmetic, op: str, left: _Compiled, right: _Compiled) -> _Compiled:
        for side in (left, right):
            numeric = (
                isinstance(side, _Const) and type(side.value) in (int, float)
                or isinstance(side, _Column) and _is_numeric(side.expr)
            )
            if not numeric:
                raise self.fail(node, f"'{op}' needs numbers on both sides, but {_shown(side)} is not a number")
        if op == "%":
            for side in (left, right):
                integral = type(side.value) is int if isinstance(side, _Const) else _is_integer(side.expr)  # type: ignore[union-attr]
                if not integral:
                    raise self.fail(node, f"'%' needs integers on both sides, but {_shown(side)} is not an integer")
        if isinstance(left, _Const) and isinstance(right, _Const):
            if op in "/%" and right.value == 0:
                raise self.fail(node, f"division by zero in {left.shown} {op} {right.shown}")
            if op == "%":  # SQL's remainder takes the sign of the dividend, as here
                value: Any = int(math.fmod(left.value, right.value))
            else:
                value = {"+": operator.add, "-": operator.sub, "*": operator.mul, "/": operator.truediv}[op](
                    left.value, right.value
                )
            if type(value) is int and not INT64_MIN <= value <= INT64_MAX:
                raise self.fail(node, f"{left.shown} {op} {right.shown} does not fit a 64-bit integer")
            return _Const(value, f"({left.shown} {op} {right.shown})")
        a = left.expr if isinstance(left, _Column) else sa.literal(left.value)  # type: ignore[union-attr]
        b = right.expr if isinstance(right, _Column) else sa.literal(right.value)  # type: ignore[union-attr]
        if op == "/":
            # Division by zero is NULL on SQLite and an error on PostgreSQL: make it NULL on both.
            b = sa.func.nullif(b, 0, type_=b.type)
        expr = {"+": operator.add, "-": operator.sub, "*": operator.mul, "/": operator.truediv, "%": operator.mod}[op](a, b)
        return _Column(expr, f"({_shown(left)} {op} {_shown(right)})")

    def shape(self, node: ShapeCall, kind: str, args: tuple[Value, ...]) -> Shape:
        numbers_: list[float] = []
        for arg in args:
            if isinstance(arg, Identifier) and arg.name not in self.bind:
                given = ", ".join(f":{key}" for key in sorted(self.bind)) or "none"
                raise self.fail(
                    arg, f"{kind}() takes numbers or bind values; {arg.name!r} is not in bind (binds given: {given})"
                )
            value = self.bound(arg, arg.name) if isinstance(arg, Identifier) else self.value(arg)
            if not (isinstance(value, _Const) and type(value.value) in (int, float)):
                raise self.fail(arg, f"{kind}() takes numbers (degrees), not {_shown(value)}")
            numbers_.append(float(value.value))
        try:
            if kind == "POINT":
                return Point.from_degrees(*numbers_)
            if kind == "CIRCLE":
                return Circle.from_degrees(*numbers_)
            if kind == "BOX":
                return Region.from_box(*numbers_)
            region = Region.from_vertices(list(zip(numbers_[::2], numbers_[1::2], strict=True)))
        except DimensionError as error:
            raise self.fail(node, f"{kind}(): {error}") from None
        if not region.is_convex():
            raise self.fail(
                node, "POLYGON() needs the vertices of a convex polygon, in order around it (either direction)"
            )
        return region


def _describe(node: Node) -> str:
    return type(node).__name__ if node is not None else "nothing"


def _shown(value: _Compiled | None) -> str:
    match value:
        case _Const(_, shown) | _Interval(_, _, shown):
            return shown
        case _Column(_, name) | _Span(_, _, name) | _RegionOf(_, name):
            return name
    return "nothing"


def _is_numeric(expr: sa.ColumnElement[Any]) -> bool:
    return isinstance(expr.type, sa.Integer | sa.Numeric | sa.Float | sa.types.NullType)


def _is_integer(expr: sa.ColumnElement[Any]) -> bool:
    return isinstance(expr.type, sa.Integer | sa.types.NullType)


def _checked_quickly(column: sa.ColumnElement[Any], given: Any) -> list[Any] | None:
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


def _is_collection(value: Any) -> bool:
    # A scalar astropy Time is iterable in name only.
    return isinstance(value, Iterable) and not isinstance(value, str | bytes) and not getattr(value, "isscalar", False)


def _scalar(value: Any, name: str, compiler: Compiler | None = None, node: Node | None = None) -> LiteralValue:
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


def _show(value: LiteralValue) -> str:
    if isinstance(value, datetime.datetime):
        return f"T'{value.isoformat()}'"
    if isinstance(value, uuid.UUID):
        return f"UUID('{value}')"
    return repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "..."


def _check_type(column: sa.ColumnElement[Any], name: str, value: Any, shown: str) -> Any:
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


def compile_expression(
    node: Node,
    resolve: Callable[[str], sa.ColumnElement[Any]],
    bind: Mapping[str, Any] | None = None,
    *,
    text: str | None = None,
) -> sa.ColumnElement[bool]:
    """Turn a parsed expression into a SQLAlchemy boolean expression.

    Parameters
    ----------
    node : `Node`
        A tree from `parse`.
    resolve : `~collections.abc.Callable` [[`str`], `sqlalchemy.ColumnElement`]
        Returns the column for a name; raises `QueryError` itself for an unknown name.
        ``X.timespan`` is asked for as ``X.timespan_begin`` and ``X.timespan_end``.
        For ``X.region OVERLAPS <shape>`` the callable must also have a method
        ``region_overlaps(element, shape)`` returning the condition (``shape`` a
        `~skybutler.dimensions.regions.Region`, ``Circle`` or ``Point``).
    bind : `~collections.abc.Mapping` [`str`, `~typing.Any`], optional
        Values of bind parameters, by name without the colon.  After ``IN`` a
        value may be a collection (list, tuple, set, range, array), which is expanded.
    text : `str`, optional
        The text ``node`` was parsed from, so errors can point at the problem.

    Returns
    -------
    clause : `sqlalchemy.ColumnElement` [`bool`]
        An expression in which every value is a bound parameter.

    Raises
    ------
    QueryError
        A bind parameter is missing or of the wrong kind, or a value cannot
        match the type of the column it is compared with.

    Examples
    --------
    >>> table = sa.table("visit", sa.column("visit", sa.Integer))
    >>> print(compile_expression(parse("visit IN (1..5)"), lambda name: table.c[name]))
    visit.visit BETWEEN :visit_1 AND :visit_2
    """
    return Compiler(resolve, bind or {}, text).compile(node)


def compile_where(
    text: str | None,
    resolve: Callable[[str], sa.ColumnElement[Any]],
    bind: Mapping[str, Any] | None = None,
) -> sa.ColumnElement[bool] | None:
    """Parse and compile a ``where`` expression in one step.

    Parameters
    ----------
    text : `str` or `None`
        The expression.
    resolve : `~collections.abc.Callable` [[`str`], `sqlalchemy.ColumnElement`]
        Returns the column for a name, as for `compile_expression`.
    bind : `~collections.abc.Mapping` [`str`, `~typing.Any`], optional
        Values of bind parameters.

    Returns
    -------
    clause : `sqlalchemy.ColumnElement` [`bool`] or `None`
        The expression, or `None` when ``text`` is empty (no constraint).

    Raises
    ------
    QueryError
        The expression is invalid; see `parse` and `compile_expression`.

    Examples
    --------
    >>> table = sa.table("visit", sa.column("visit", sa.Integer), sa.column("band", sa.String))
    >>> clause = compile_where("visit > :v AND band = 'r'", lambda name: table.c[name], {"v": 903000})
    >>> query = sa.select(table).where(clause) if clause is not None else sa.select(table)
    """
    node = parse(text)
    return None if node is None else compile_expression(node, resolve, bind, text=text)
