"""The query expression language of ``where`` clauses.

An expression constrains dimension values and metadata, for example::

    visit > 903000 AND band IN ('r', 'i')
    instrument = 'HSC' AND detector IN (0..9, 20..40:2)
    NOT (visit = :v)
    visit.exposure_time >= 30.0 AND visit.timespan_begin > T'2026-01-01T00:00:00'
    tract = 0 OR (tract = 1 AND patch != '8,6')
    visit BETWEEN 100 AND 200

Grammar (keywords are case-insensitive; precedence OR < AND < NOT < comparison)::

    expression  := or
    or          := and ("OR" and)*
    and         := not ("AND" not)*
    not         := "NOT" not | predicate
    predicate   := "(" expression ")"
                 | operand ("=" | "!=" | "<>" | "<" | "<=" | ">" | ">=") operand
                 | operand ["NOT"] "IN" ("(" item ("," item)* ")" | bind)
                 | operand ["NOT"] "BETWEEN" value "AND" value
    item        := value | integer ".." integer [":" integer]
    operand     := name | value
    value       := number | string | T'ISO-8601' | TRUE | FALSE | bind
    name        := word ["." word]            e.g. visit, visit.exposure_time
    bind        := ":" word                   its value is given by the caller

Text is parsed by `parse` into a small tree of frozen dataclasses and turned
into a SQLAlchemy expression by `compile_expression`; every value becomes a
bound parameter, so no text of the expression ever reaches SQL.
"""

from __future__ import annotations

import datetime
import numbers
import operator
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from skybutler.errors import QueryError

__all__ = [
    "And",
    "BindParam",
    "Between",
    "Compare",
    "Identifier",
    "In",
    "Literal",
    "Node",
    "Not",
    "Or",
    "Range",
    "compile_expression",
    "compile_where",
    "identifiers",
    "parse",
]

LiteralValue = int | float | str | bool | datetime.datetime


# --- The syntax tree ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Literal:
    """A literal value: number, string, time (naive UTC `datetime`) or boolean."""

    value: LiteralValue


@dataclass(frozen=True)
class Identifier:
    """A dimension or metadata name, ``visit`` or ``visit.exposure_time``."""

    name: str


@dataclass(frozen=True)
class BindParam:
    """A value supplied by the caller, written ``:name`` in the expression."""

    name: str


@dataclass(frozen=True)
class Range:
    """An inclusive integer range ``start..stop:stride``, allowed only inside ``IN``."""

    start: int
    stop: int
    stride: int = 1


@dataclass(frozen=True)
class Compare:
    """A binary comparison; ``op`` is one of ``=, !=, <, <=, >, >=`` (``<>`` is read as ``!=``)."""

    op: str
    left: Identifier | Literal | BindParam
    right: Identifier | Literal | BindParam


@dataclass(frozen=True)
class In:
    """``operand [NOT] IN (items)``; an item is a value, a bind parameter or a `Range`."""

    operand: Identifier
    items: tuple[Literal | BindParam | Range, ...]
    negated: bool = False


@dataclass(frozen=True)
class Between:
    """``operand [NOT] BETWEEN low AND high``, both bounds inclusive."""

    operand: Identifier
    low: Literal | BindParam
    high: Literal | BindParam
    negated: bool = False


@dataclass(frozen=True)
class Not:
    """Logical negation."""

    operand: Node


@dataclass(frozen=True)
class And:
    """Logical conjunction of two or more operands."""

    operands: tuple[Node, ...]


@dataclass(frozen=True)
class Or:
    """Logical disjunction of two or more operands."""

    operands: tuple[Node, ...]


Node = Literal | Identifier | BindParam | Range | Compare | In | Between | Not | And | Or
"""Any node of the syntax tree; `parse` returns a predicate (`Compare` to `Or`)."""


# --- Tokens ---------------------------------------------------------------------------------------

_KEYWORDS = frozenset({"AND", "OR", "NOT", "IN", "BETWEEN"})
_COMPARISONS = {"=": "=", "!=": "!=", "<>": "!=", "<": "<", "<=": "<=", ">": ">", ">=": ">="}
_PUNCTUATION = ("..", "<=", ">=", "<>", "!=", "=", "<", ">", "(", ")", ",", ":", "-")
_WORD = r"[A-Za-z_][A-Za-z0-9_]*"
_NAME_RE = re.compile(rf"{_WORD}(?:\.{_WORD})?")
_BIND_RE = re.compile(rf":({_WORD})")
# "0..9" is two integers around "..", never the float "0." followed by ".9".
_NUMBER_RE = re.compile(r"(?:[0-9]+\.(?!\.)[0-9]*|\.[0-9]+|[0-9]+)(?:[eE][+-]?[0-9]+)?")
_GLUED_TO_NUMBER_RE = re.compile(r"[A-Za-z0-9_]|\.(?!\.)")
_MALFORMED_NUMBER_RE = re.compile(r"[A-Za-z0-9_.]*")
_MAX_DEPTH = 100


@dataclass(frozen=True)
class _Token:
    kind: str  # "name", "keyword", "bind", "value", a punctuation string, or "end"
    text: str  # as written, for messages
    pos: int  # 0-based offset into the expression
    value: Any = None

    def describe(self) -> str:
        if self.kind == "end":
            return "the end of the expression"
        text = self.text if len(self.text) <= 30 else self.text[:27] + "..."
        return text if text[-1:] in "'\"" else f"'{text}'"


def _syntax_error(text: str, pos: int, what: str, found: _Token | None = None) -> QueryError:
    """Build the error for a problem at ``pos``, with the expression and a caret under it."""
    line_start = text.rfind("\n", 0, pos) + 1
    line_end = text.find("\n", pos)
    line = text[line_start : len(text) if line_end < 0 else line_end].replace("\t", " ")
    column = pos - line_start + 1
    where = f"column {column}"
    if "\n" in text:
        where = f"line {text.count(chr(10), 0, pos) + 1}, {where}"
    message = f"Invalid query expression: {what} at {where}"
    if found is not None:
        message += f", found {found.describe()}"
    return QueryError(f"{message}\n  {line}\n  {' ' * (column - 1)}^")


def _read_string(text: str, start: int) -> tuple[str, int]:
    """Read a quoted string whose opening quote is at ``start``; return it and the end offset."""
    quote = text[start]
    pieces = []
    i = start + 1
    while True:
        end = text.find(quote, i)
        if end < 0:
            raise _syntax_error(text, start, f"unterminated string (no closing {quote})")
        pieces.append(text[i:end])
        if text.startswith(quote, end + 1):  # a doubled quote stands for one quote
            pieces.append(quote)
            i = end + 2
        else:
            return "".join(pieces), end + 1


def _parse_time(text: str, start: int, raw: str) -> datetime.datetime:
    try:
        value = datetime.datetime.fromisoformat(raw.strip())
    except ValueError:
        raise _syntax_error(
            text, start, f"bad time literal T'{raw}': write ISO-8601 such as T'2026-01-01T00:00:00'"
        ) from None
    if value.tzinfo is not None:
        value = value.astimezone(datetime.UTC).replace(tzinfo=None)
    return value


def _tokenize(text: str) -> list[_Token]:
    tokens = []
    pos = 0
    while pos < len(text):
        char = text[pos]
        if char.isspace():
            pos += 1
            continue
        if char in "'\"":
            value, end = _read_string(text, pos)
            tokens.append(_Token("value", text[pos:end], pos, value))
        elif char in "Tt" and text[pos + 1 : pos + 2] in ("'", '"'):
            raw, end = _read_string(text, pos + 1)
            tokens.append(_Token("value", text[pos:end], pos, _parse_time(text, pos, raw)))
        elif match := _NAME_RE.match(text, pos):
            word = match.group()
            end = match.end()
            if word.upper() in _KEYWORDS:
                tokens.append(_Token("keyword", word, pos, word.upper()))
            elif word.upper() in ("TRUE", "FALSE"):
                tokens.append(_Token("value", word, pos, word.upper() == "TRUE"))
            else:
                tokens.append(_Token("name", word, pos, word))
        elif match := _BIND_RE.match(text, pos):
            end = match.end()
            tokens.append(_Token("bind", match.group(), pos, match.group(1)))
        elif (match := _NUMBER_RE.match(text, pos)) and not text.startswith("..", pos):
            end = match.end()
            if _GLUED_TO_NUMBER_RE.match(text, end):  # "903000abc", "1.2.3"; but "0..9" is a range
                glued = _MALFORMED_NUMBER_RE.match(text, pos)
                raise _syntax_error(text, pos, f"malformed number '{glued.group() if glued else ''}'")
            number = match.group()
            numeric = float(number) if any(c in number for c in ".eE") else int(number)
            tokens.append(_Token("value", number, pos, numeric))
        else:
            punctuation = next((p for p in _PUNCTUATION if text.startswith(p, pos)), None)
            if punctuation is None:
                raise _syntax_error(text, pos, f"unexpected character {char!r}")
            end = pos + len(punctuation)
            tokens.append(_Token(punctuation, punctuation, pos))
        pos = end
    tokens.append(_Token("end", "", len(text)))
    return tokens


# --- Parser ---------------------------------------------------------------------------------------


class _Parser:
    """Recursive descent over the token list, one method per grammar rule."""

    def __init__(self, text: str):
        self.text = text
        self.tokens = _tokenize(text)
        self.index = 0
        self.depth = 0

    @property
    def token(self) -> _Token:
        return self.tokens[self.index]

    def advance(self) -> _Token:
        token = self.tokens[self.index]
        self.index += 1
        return token

    def is_keyword(self, *words: str, offset: int = 0) -> bool:
        token = self.tokens[min(self.index + offset, len(self.tokens) - 1)]
        return token.kind == "keyword" and token.value in words

    def fail(self, what: str, token: _Token | None = None) -> QueryError:
        token = token or self.token
        return _syntax_error(self.text, token.pos, what, token)

    def parse(self) -> Node:
        node = self.parse_or()
        token = self.token
        if token.kind == ")":
            raise _syntax_error(self.text, token.pos, "unbalanced parenthesis: this ')' has no matching '('")
        if token.kind != "end":
            raise self.fail("expected AND, OR or the end of the expression")
        return node

    def parse_or(self) -> Node:
        operands = [self.parse_and()]
        while self.is_keyword("OR"):
            self.advance()
            operands.append(self.parse_and())
        return operands[0] if len(operands) == 1 else Or(tuple(operands))

    def parse_and(self) -> Node:
        operands = [self.parse_not()]
        while self.is_keyword("AND"):
            self.advance()
            operands.append(self.parse_not())
        return operands[0] if len(operands) == 1 else And(tuple(operands))

    def parse_not(self) -> Node:
        if not self.is_keyword("NOT"):
            return self.parse_predicate()
        self.enter()
        self.advance()
        node = Not(self.parse_not())
        self.depth -= 1
        return node

    def enter(self) -> None:
        self.depth += 1
        if self.depth > _MAX_DEPTH:
            raise self.fail(f"the expression is nested more than {_MAX_DEPTH} levels deep")

    def parse_predicate(self) -> Node:
        if self.token.kind == "(":
            self.enter()
            opening = self.advance()
            node = self.parse_or()
            if self.token.kind != ")":
                if self.token.kind == "end":
                    raise _syntax_error(
                        self.text, opening.pos, "unbalanced parenthesis: this '(' is never closed"
                    )
                raise self.fail("expected ')', AND or OR")
            self.advance()
            self.depth -= 1
            return node
        left_token = self.token
        left = self.parse_operand("expected a condition such as visit = 1")
        token = self.token
        if token.kind in _COMPARISONS:
            self.advance()
            right = self.parse_operand(f"expected a value after '{token.text}'")
            if not isinstance(left, Identifier) and not isinstance(right, Identifier):
                raise _syntax_error(
                    self.text, left_token.pos, "a comparison needs a dimension or metadata name on one side"
                )
            return Compare(_COMPARISONS[token.kind], left, right)
        negated = self.is_keyword("NOT") and self.is_keyword("IN", "BETWEEN", offset=1)
        if negated:
            self.advance()
        if self.is_keyword("IN", "BETWEEN"):
            if not isinstance(left, Identifier):
                raise _syntax_error(
                    self.text,
                    left_token.pos,
                    f"{self.token.value} needs a dimension or metadata name on its left",
                    left_token,
                )
            if self.advance().value == "IN":
                return In(left, self.parse_in_items(), negated)
            low = self.parse_value("expected a value after BETWEEN")
            if not self.is_keyword("AND"):
                raise self.fail("expected AND between the two bounds of BETWEEN")
            self.advance()
            return Between(left, low, self.parse_value("expected a value after BETWEEN ... AND"), negated)
        what = "a comparison operator (=, !=, <, <=, >, >=, IN or BETWEEN)"
        raise self.fail(f"expected {what} after '{left_token.text}'")

    def parse_operand(self, what: str) -> Identifier | Literal | BindParam:
        if self.token.kind == "name":
            return Identifier(self.advance().value)
        return self.parse_value(what)

    def parse_value(self, what: str) -> Literal | BindParam:
        token = self.token
        if token.kind == "bind":
            self.advance()
            return BindParam(token.value)
        if token.kind == "value":
            self.advance()
            return Literal(token.value)
        if token.kind == "-":
            number = self.tokens[self.index + 1]
            if number.kind == "value" and type(number.value) in (int, float):
                self.index += 2
                return Literal(-number.value)
        if token.kind == "name":
            raise self.fail(f"{what} (names cannot appear here)")
        raise self.fail(what)

    def parse_in_items(self) -> tuple[Literal | BindParam | Range, ...]:
        if self.token.kind == "bind":
            return (BindParam(self.advance().value),)
        if self.token.kind != "(":
            raise self.fail("expected '(' or a bind parameter after IN")
        opening = self.advance()
        items: list[Literal | BindParam | Range] = []
        while True:
            items.append(self.parse_in_item())
            if self.token.kind == ")":
                self.advance()
                return tuple(items)
            if self.token.kind == "end":
                raise _syntax_error(
                    self.text, opening.pos, "unbalanced parenthesis: this '(' is never closed"
                )
            if self.token.kind != ",":
                raise self.fail("expected ',' or ')' in the IN list")
            self.advance()

    def parse_in_item(self) -> Literal | BindParam | Range:
        start_token = self.token
        start = self.parse_value("expected a value in the IN list")
        if self.token.kind != "..":
            return start
        self.advance()
        stop_token = self.token
        stop = self.parse_value("expected an integer after '..'")
        stride, stride_token = 1, None
        if self.token.kind == ":":
            self.advance()
            stride_token = self.token
            stride = self._integer(self.parse_value("expected an integer stride after ':'"), stride_token)
            if stride < 1:
                raise self.fail("a range stride must be a positive integer", stride_token)
        first = self._integer(start, start_token)
        last = self._integer(stop, stop_token)
        if first > last:
            raise _syntax_error(
                self.text, start_token.pos, f"range {first}..{last} is empty: write the smaller bound first"
            )
        return Range(first, last, stride)

    def _integer(self, node: Literal | BindParam, token: _Token) -> int:
        if isinstance(node, Literal) and type(node.value) is int:
            return node.value
        raise _syntax_error(self.text, token.pos, "range bounds and strides must be integer literals", token)


def parse(text: str | None) -> Node | None:
    """Parse a ``where`` expression into a syntax tree.

    Parameters
    ----------
    text : `str` or `None`
        The expression; see the module docstring for the grammar.

    Returns
    -------
    node : `Node` or `None`
        The tree, or `None` for an empty expression (which means "no constraint").

    Raises
    ------
    QueryError
        The text is not a valid expression; the message names the column and
        shows the expression with a caret under the problem.

    Examples
    --------
    >>> parse("visit > 903000 AND band IN ('r', 'i')")  # doctest: +NORMALIZE_WHITESPACE
    And(operands=(Compare(op='>', left=Identifier(name='visit'), right=Literal(value=903000)),
                  In(operand=Identifier(name='band'), items=(Literal(value='r'), Literal(value='i')),
                     negated=False)))
    """
    if text is None or not text.strip():
        return None
    return _Parser(text).parse()


def identifiers(node: Node | None) -> set[str]:
    """Return every dimension or metadata name an expression uses.

    Parameters
    ----------
    node : `Node` or `None`
        A tree from `parse`.

    Returns
    -------
    names : `set` [`str`]
        Names as written, e.g. ``{"visit", "band", "visit.exposure_time"}``.
    """
    match node:
        case Identifier(name):
            return {name}
        case Compare(_, left, right):
            return identifiers(left) | identifiers(right)
        case In(operand, _, _) | Between(operand, _, _, _) | Not(operand):
            return identifiers(operand)
        case And(operands) | Or(operands):
            return set().union(*(identifiers(operand) for operand in operands))
    return set()


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


class _Compiler:
    def __init__(self, resolve: Callable[[str], sa.ColumnElement[Any]], bind: Mapping[str, Any]):
        self.resolve = resolve
        self.bind = bind

    def compile(self, node: Node) -> sa.ColumnElement[bool]:
        match node:
            case Compare(op, left, right):
                return self.compare(op, left, right)
            case In(operand, items, negated):
                clause = self.in_(operand, items)
                return sa.not_(clause) if negated else clause
            case Between(operand, low, high, negated):
                name = operand.name
                column = self.resolve(name)
                clause = column.between(self.value(column, name, low), self.value(column, name, high))
                return sa.not_(clause) if negated else clause
            case Not(operand):
                return sa.not_(self.compile(operand))
            case And(operands):
                return sa.and_(*(self.compile(operand) for operand in operands))
            case Or(operands):
                return sa.or_(*(self.compile(operand) for operand in operands))
        raise QueryError(f"Invalid query expression: {node!r} is a value, not a condition")

    def compare(
        self, op: str, left: Identifier | Literal | BindParam, right: Identifier | Literal | BindParam
    ) -> sa.ColumnElement[bool]:
        if not isinstance(left, Identifier):  # put the name on the left: 903000 < visit -> visit > 903000
            left, right, op = right, left, _MIRRORED[op]
        if not isinstance(left, Identifier):
            raise QueryError(
                "Invalid query expression: a comparison needs a dimension or metadata name on one side"
            )
        column = self.resolve(left.name)
        if isinstance(right, Identifier):
            other: Any = self.resolve(right.name)
        else:
            other = self.value(column, left.name, right)
        result: sa.ColumnElement[bool] = _OPERATORS[op](column, other)
        return result

    def in_(
        self, operand: Identifier, items: Iterable[Literal | BindParam | Range]
    ) -> sa.ColumnElement[bool]:
        name = operand.name
        column = self.resolve(name)
        values: list[Any] = []
        ranges: list[sa.ColumnElement[bool]] = []
        for item in items:
            if isinstance(item, Range):
                if not isinstance(column.type, sa.Integer | sa.types.NullType):
                    raise QueryError(
                        f"Invalid query expression: the range {item.start}..{item.stop} needs an integer "
                        f"column, but {name} holds {column.type}"
                    )
                clause: sa.ColumnElement[bool] = column.between(item.start, item.stop)
                if item.stride > 1:
                    # Within the range, (column - start) >= 0, so % behaves the same on every database.
                    clause = sa.and_(clause, (column - item.start) % item.stride == 0)
                ranges.append(clause)
            elif isinstance(item, BindParam) and _is_collection(given := self.lookup(item.name)):
                values.extend(
                    _check_type(column, name, _scalar(v, item.name), f":{item.name}") for v in given
                )
            else:
                values.append(self.value(column, name, item))
        clauses = ([column.in_(values)] if values or not ranges else []) + ranges
        return clauses[0] if len(clauses) == 1 else sa.or_(*clauses)

    def value(self, column: sa.ColumnElement[Any], name: str, node: Literal | BindParam) -> Any:
        if isinstance(node, Literal):
            return _check_type(column, name, node.value, _show(node.value))
        given = self.lookup(node.name)
        if _is_collection(given):
            raise QueryError(
                f"Invalid query expression: bind parameter ':{node.name}' holds several values; "
                f"use it with IN, e.g. {name} IN (:{node.name})"
            )
        return _check_type(column, name, _scalar(given, node.name), f":{node.name}")

    def lookup(self, name: str) -> Any:
        try:
            return self.bind[name]
        except KeyError:
            given = ", ".join(f":{key}" for key in sorted(self.bind)) or "none"
            raise QueryError(
                f"Invalid query expression: no value given for bind parameter ':{name}' (binds given: {given})"
            ) from None


def _is_collection(value: Any) -> bool:
    return isinstance(value, Iterable) and not isinstance(value, str | bytes)


def _scalar(value: Any, name: str) -> LiteralValue:
    """Normalise a bound value (numpy numbers included) to the types literals have."""
    if isinstance(value, bool | str):
        return value
    if isinstance(value, datetime.datetime):
        if value.tzinfo is not None:
            value = value.astimezone(datetime.UTC).replace(tzinfo=None)
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    raise QueryError(
        f"Invalid query expression: bind parameter ':{name}' is {value!r} of type {type(value).__name__}; "
        "expected a number, string, boolean or datetime"
    )


def _show(value: LiteralValue) -> str:
    if isinstance(value, datetime.datetime):
        return f"T'{value.isoformat()}'"
    return repr(value)


def _check_type(column: sa.ColumnElement[Any], name: str, value: LiteralValue, shown: str) -> Any:
    """Reject a value that cannot match the column's type, before the database does so cryptically.

    An integer compared with a string column is turned into a string, as SQLite would
    do, so ``patch = 3`` behaves the same on PostgreSQL.  Columns of a type not
    recognised here are passed through unchecked.
    """
    column_type = column.type
    if isinstance(column_type, sa.Boolean):
        expected = "booleans"
        fits = isinstance(value, bool | int)
    elif isinstance(column_type, sa.Integer | sa.Numeric):
        expected = "numbers"
        fits = isinstance(value, int | float)
    elif isinstance(column_type, sa.String):
        expected = "strings"
        if type(value) is int:
            return str(value)
        fits = isinstance(value, str)
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
        raise QueryError(
            f"Invalid query expression: {name} holds {expected}, but it is compared with {shown}"
        )
    return value


def compile_expression(
    node: Node,
    resolve: Callable[[str], sa.ColumnElement[Any]],
    bind: Mapping[str, Any] | None = None,
) -> sa.ColumnElement[bool]:
    """Turn a parsed expression into a SQLAlchemy boolean expression.

    Parameters
    ----------
    node : `Node`
        A tree from `parse`.
    resolve : `~collections.abc.Callable` [[`str`], `sqlalchemy.ColumnElement`]
        Returns the column for a name; raises `QueryError` itself for an unknown name.
    bind : `~collections.abc.Mapping` [`str`, `~typing.Any`], optional
        Values of bind parameters, by name without the colon.  After ``IN`` a
        value may be a collection (list, tuple, set, range, array), which is expanded.

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
    return _Compiler(resolve, bind or {}).compile(node)


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
    return None if node is None else compile_expression(node, resolve, bind)
