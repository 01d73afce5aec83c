"""The compiler of ``where`` expressions: syntax trees (`skybutler.registry.expr`) to SQLAlchemy.

Names become columns through the caller's ``resolve``; every value is checked
against the type of the column it meets (so PostgreSQL and SQLite agree, and
neither sees a value it would reject with a driver traceback) and becomes a
bound parameter.  Two constructs differ by database: value lists (one array
parameter on PostgreSQL, inline literals past SQLite's parameter limit) and
glob matches (SQLite's GLOB, LIKE elsewhere; both case-sensitive).

The `Compiler` here compiles conditions and values; its parts live beside it:
``_expr_values`` (what a value compiles to, and the checks of a value against a
column), ``_expr_overlaps`` (``OVERLAPS`` of regions and of timespans) and
``_expr_dialects`` (the constructs that differ by database).
"""

from __future__ import annotations

import datetime
import math
import operator
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import sqlalchemy as sa

from ..dimensions.regions import Circle, Point, Region, Shape
from ..errors import DimensionError, QueryError
from ._expr_dialects import GlobMatch, ValueList
from ._expr_lexer import with_caret
from ._expr_overlaps import compile_overlaps, overlap_side
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
from ._expr_values import (
    Column,
    Compiled,
    Const,
    Interval,
    RegionOf,
    Span,
    check_type,
    checked_quickly,
    describe_node,
    is_collection,
    is_integer,
    is_numeric,
    scalar,
    shown_of,
)
from .expr import parse

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
                return compile_overlaps(self, node, overlap_side(self, left), overlap_side(self, right))
            case Glob(operand, pattern):
                return self.glob(node, operand, pattern)
            case Not(operand):
                return sa.not_(self.compile(operand))
            case And(operands):
                return sa.and_(*(self.compile(operand) for operand in operands))
            case Or(operands):
                return sa.or_(*(self.compile(operand) for operand in operands))
        raise self.fail(node, f"{describe_node(node)} is a value, not a condition")

    def compare(self, node: Node, op: str, left: Compiled, right: Compiled) -> sa.ColumnElement[bool]:
        for side in (left, right):
            if isinstance(side, Span):
                raise self.fail(
                    node,
                    f"{side.name} is a time range: compare {side.name}.begin or {side.name}.end, "
                    f"or use {side.name} OVERLAPS ...",
                )
            if isinstance(side, RegionOf):
                raise self.fail(node, f"{side.name} can only be used with OVERLAPS and a shape such as POINT(ra, dec)")
            if isinstance(side, Interval):
                raise self.fail(node, f"the time range {side.shown} can only be used with OVERLAPS")
        if isinstance(left, Const) and isinstance(right, Const):
            raise self.fail(
                node,
                "a comparison needs a dimension or metadata name on one side, but both sides are values"
                + self.clash_hint(),
            )
        if isinstance(left, Const):  # put the column on the left: 903000 < visit -> visit > 903000
            left, right, op = right, left, _MIRRORED[op]
        assert isinstance(left, Column) and isinstance(right, Column | Const)
        other = right.expr if isinstance(right, Column) else self.check(node, left, right)
        result: sa.ColumnElement[bool] = _OPERATORS[op](left.expr, other)
        return result

    def clash_hint(self) -> str:
        if not self.bind:
            return ""
        return " (a bare name in bind is a bind value; write :name for binds and a column's name for columns)"

    def check(self, node: Node, column: Column, const: Const) -> Any:
        """The constant as a value of the column's type, or the error saying why it cannot be."""
        try:
            return check_type(column.expr, column.name, const.value, const.shown)
        except QueryError as error:
            raise self.fail(node, str(error).removeprefix("Invalid query expression: ")) from None

    def in_(self, node: In, operand: Value, items: Iterable[Value | Range]) -> sa.ColumnElement[bool]:
        left = self.value(operand)
        if isinstance(left, Span | RegionOf | Interval):
            raise self.fail(node, f"IN needs a single value on its left, not {shown_of(left)}; use OVERLAPS")
        values: list[Any] = []
        clauses: list[sa.ColumnElement[bool]] = []
        for item in items:
            if isinstance(item, Range):
                clauses.append(self.in_range(node, left, item))
                continue
            if isinstance(item, BindParam) or isinstance(item, Identifier) and self.is_bind(item.name):
                given = self.lookup(item, item.name)
                if is_collection(given):
                    if isinstance(left, Column) and (checked := checked_quickly(left.expr, given)) is not None:
                        values.extend(checked)
                        continue
                    consts = [Const(scalar(v, item.name, self, item), f":{item.name}") for v in given]
                    if isinstance(left, Const):
                        clauses.extend(self.const_equal(node, left, c) for c in consts)
                    else:
                        values.extend(self.check(item, left, c) for c in consts)
                    continue
            right = self.value(item)
            if isinstance(right, Span | RegionOf | Interval):
                raise self.fail(item, f"an IN list holds single values, not {shown_of(right)}")
            if isinstance(left, Column) and isinstance(right, Const):
                values.append(self.check(item, left, right))
            elif isinstance(left, Const) and isinstance(right, Const):
                clauses.append(self.const_equal(node, left, right))
            else:
                clauses.append(self.compare(item, "=", left, right))
        if isinstance(left, Column) and (values or not clauses):
            clauses.insert(0, ValueList(left.expr, values) if values else left.expr.in_([]))
        if not clauses:
            return sa.false()
        return clauses[0] if len(clauses) == 1 else sa.or_(*clauses)

    def const_equal(self, node: Node, left: Const, right: Const) -> sa.ColumnElement[bool]:
        try:
            equal = bool(left.value == right.value)
        except Exception:  # values of unrelated types are simply unequal
            equal = False
        return sa.true() if equal else sa.false()

    def in_range(self, node: In, left: Const | Column, item: Range) -> sa.ColumnElement[bool]:
        if isinstance(left, Const):
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
        if not isinstance(column, Column) or not isinstance(column.expr.type, sa.String | sa.types.NullType):
            raise self.fail(node, f"glob() needs a column of strings, but {operand.name} is not one")
        text = self.value(pattern)
        if not isinstance(text, Const) or not isinstance(text.value, str):
            raise self.fail(node, "glob() needs a string pattern such as 'HSC-*'")
        self.check(node, column, text)
        return GlobMatch(column.expr, text.value)

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

    def bound(self, node: Node, name: str) -> Const:
        given = self.lookup(node, name)
        if isinstance(given, Shape):
            return Const(given, f":{name}")
        if is_collection(given):
            raise self.fail(
                node, f"bind parameter ':{name}' holds several values; use it with IN, e.g. {self.example} IN (:{name})"
            )
        return Const(scalar(given, name, self, node), f":{name}")

    def value(self, node: Node) -> Compiled:
        match node:
            case Literal(value):
                return Const(value)
            case BindParam(name):
                return self.bound(node, name)
            case Identifier(name):
                return self.identifier(node, name)
            case Arithmetic(op, left, right):
                return self.arithmetic(node, op, self.value(left), self.value(right))
            case Negate(operand):
                inner = self.value(operand)
                if isinstance(inner, Const) and type(inner.value) in (int, float):
                    return Const(-inner.value, f"-{inner.shown}")
                if isinstance(inner, Column) and is_numeric(inner.expr):
                    return Column(-inner.expr, f"-{inner.name}")
                raise self.fail(node, f"unary minus needs a number, not {shown_of(inner)}")
            case ShapeCall(kind, args):
                return Const(self.shape(node, kind, args), f"{kind}(...)")
            case TimeRange(begin, end):
                bounds = []
                for bound in (begin, end):
                    time = self.value(bound)
                    is_time = isinstance(time, Const) and isinstance(time.value, datetime.datetime) or (
                        isinstance(time, Column) and isinstance(time.expr.type, sa.DateTime)
                    )
                    if not is_time:
                        raise self.fail(
                            bound, f"a time range holds times such as T'2026-01-01T00:00:00', not {shown_of(time)}"
                        )
                    bounds.append(time)
                return Interval(bounds[0], bounds[1], "(begin, end)")  # type: ignore[arg-type]
        raise self.fail(node, f"{describe_node(node)} is a condition, not a value")

    def identifier(self, node: Identifier, name: str) -> Compiled:
        parts = name.split(".")
        if len(parts) >= 2 and parts[-2] == "timespan" and parts[-1] in ("begin", "end"):
            column = ".".join(parts[:-2] + [f"timespan_{parts[-1]}"])
            return Column(self.resolve_name(node, column), name)
        if parts[-1] == "timespan" and len(parts) <= 2:
            prefix = ".".join(parts[:-1] + ["timespan_"])
            return Span(self.resolve_name(node, prefix + "begin"), self.resolve_name(node, prefix + "end"), name)
        if parts[-1] == "region" and len(parts) == 2:
            return RegionOf(parts[0], name)
        if len(parts) == 3:
            raise self.fail(node, f"{name!r} is not a name: only X.timespan.begin and X.timespan.end have two dots")
        if self.is_bind(name):
            return self.bound(node, name)
        return Column(self.resolve_name(node, name), name)

    def arithmetic(self, node: Arithmetic, op: str, left: Compiled, right: Compiled) -> Compiled:
        for side in (left, right):
            numeric = (
                isinstance(side, Const) and type(side.value) in (int, float)
                or isinstance(side, Column) and is_numeric(side.expr)
            )
            if not numeric:
                raise self.fail(node, f"'{op}' needs numbers on both sides, but {shown_of(side)} is not a number")
        if op == "%":
            for side in (left, right):
                integral = type(side.value) is int if isinstance(side, Const) else is_integer(side.expr)  # type: ignore[union-attr]
                if not integral:
                    raise self.fail(node, f"'%' needs integers on both sides, but {shown_of(side)} is not an integer")
        if isinstance(left, Const) and isinstance(right, Const):
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
            return Const(value, f"({left.shown} {op} {right.shown})")
        a = left.expr if isinstance(left, Column) else sa.literal(left.value)  # type: ignore[union-attr]
        b = right.expr if isinstance(right, Column) else sa.literal(right.value)  # type: ignore[union-attr]
        if op == "/":
            # Division by zero is NULL on SQLite and an error on PostgreSQL: make it NULL on both.
            b = sa.func.nullif(b, 0, type_=b.type)
        expr = {"+": operator.add, "-": operator.sub, "*": operator.mul, "/": operator.truediv, "%": operator.mod}[op](a, b)
        return Column(expr, f"({shown_of(left)} {op} {shown_of(right)})")

    def shape(self, node: ShapeCall, kind: str, args: tuple[Value, ...]) -> Shape:
        numbers_: list[float] = []
        for arg in args:
            if isinstance(arg, Identifier) and arg.name not in self.bind:
                given = ", ".join(f":{key}" for key in sorted(self.bind)) or "none"
                raise self.fail(
                    arg, f"{kind}() takes numbers or bind values; {arg.name!r} is not in bind (binds given: {given})"
                )
            value = self.bound(arg, arg.name) if isinstance(arg, Identifier) else self.value(arg)
            if not (isinstance(value, Const) and type(value.value) in (int, float)):
                raise self.fail(arg, f"{kind}() takes numbers (degrees), not {shown_of(value)}")
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
