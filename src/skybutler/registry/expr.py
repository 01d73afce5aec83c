"""The query expression language of ``where`` clauses.

An expression constrains dimension values and metadata, for example::

    visit > 903000 AND band IN ('r', 'i')
    instrument = 'HSC' AND detector IN (0..9, 20..40:2)
    NOT (visit = :v) AND visit % 2 = 1
    visit.timespan OVERLAPS (T'2026-03-15T00:00:00', T'2026-03-16T00:00:00')
    visit.region OVERLAPS CIRCLE(150.1, 2.2, 0.5) AND glob(physical_filter, 'HSC-*')
    ingest_date > T'61000.0' OR id = UUID('0193a4f1-7a3e-7c1e-9b0c-1d2e3f405162')

The language is the one daf_butler users write; docs/queries.md describes it
whole, with the few differences.  Grammar (keywords and function names are
case-insensitive; precedence OR < AND < NOT < comparison < + - < * / % < unary)::

    expression  := or
    or          := and ("OR" and)*
    and         := not ("AND" not)*
    not         := "NOT" not | predicate
    predicate   := sum [ ("=" | "!=" | "<>" | "<" | "<=" | ">" | ">=" | "OVERLAPS") sum
                       | ["NOT"] "IN" ("(" item ("," item)* ")" | bind)
                       | ["NOT"] "BETWEEN" sum "AND" sum ]
                   (without a tail the sum must itself be a condition: "(" condition ")" or glob)
    sum         := product (("+" | "-") product)*
    product     := unary (("*" | "/" | "%") unary)*
    unary       := ("+" | "-") unary | primary
    primary     := "(" expression ")" | "(" sum "," sum ")"          a time range
                 | function "(" [sum ("," sum)*] ")" | name | value
    function    := POINT | CIRCLE | BOX | POLYGON | GLOB | UUID
    item        := sum | integer ".." integer [":" integer]
    value       := number | string | T'time' | TRUE | FALSE | bind
    name        := word ["." word ["." word]]   visit, visit.exposure_time, visit.timespan.begin
    bind        := ":" word                     its value is given by the caller

A bare name that is no column but is a key of ``bind`` is a bind as well
(``visit = my_visit``); when a name is both, the column wins (daf_butler lets
the bind win; here ``visit = :visit`` with ``bind={"visit": ...}`` is common).

Text is parsed by `parse` into a small tree of frozen dataclasses and turned
into a SQLAlchemy expression by `compile_expression`; every value becomes a
bound parameter (or, for lists too long for SQLite's parameter limit, a
literal rendered by SQLAlchemy's own type processors), so no text of the
expression ever reaches SQL.  On PostgreSQL a value list is one array
parameter (``column = ANY(:values)``), so 100,000 visit ids are no problem.
The compiler (`compile_expression`, `compile_where`) lives in `skybutler.registry._expr_sql` and is
exported by `skybutler.registry`; this module only reads text into a tree.
"""

from __future__ import annotations

import datetime
import math
import re
import uuid
import warnings
from dataclasses import dataclass, field, fields
from typing import Any, NamedTuple

from ..errors import QueryError

__all__ = [
    "And",
    "Arithmetic",
    "Between",
    "BindParam",
    "Compare",
    "Glob",
    "Identifier",
    "In",
    "Literal",
    "Negate",
    "Node",
    "Not",
    "Or",
    "Overlaps",
    "Range",
    "ShapeCall",
    "TimeRange",
    "identifiers",
    "parse",
]

LiteralValue = int | float | str | bool | datetime.datetime | uuid.UUID

INT64_MAX = 2**63 - 1
INT64_MIN = -(2**63)


def _pos() -> Any:
    """Offset of a node in the expression text, for carets; not part of a node's identity."""
    return field(default=-1, compare=False, repr=False)


# --- The syntax tree ------------------------------------------------------------------------------


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

_CONDITIONS = (Compare, Overlaps, In, Between, Glob, Not, And, Or)


# --- Tokens ---------------------------------------------------------------------------------------

_KEYWORDS = frozenset({"AND", "OR", "NOT", "IN", "BETWEEN", "OVERLAPS"})
_FUNCTIONS = frozenset({"POINT", "CIRCLE", "BOX", "POLYGON", "GLOB", "UUID"})
_COMPARISONS = {"=": "=", "!=": "!=", "<>": "!=", "<": "<", "<=": "<=", ">": ">", ">=": ">="}
_WORD = r"[A-Za-z_][A-Za-z0-9_]*"
_NAME_RE = re.compile(rf"{_WORD}(?:\.{_WORD}){{0,2}}")
_BIND_RE = re.compile(rf":({_WORD})")
# "0..9" is two integers around "..", never the float "0." followed by ".9".
_NUMBER_RE = re.compile(r"(?:[0-9]+\.(?!\.)[0-9]*|\.[0-9]+|[0-9]+)(?:[eE][+-]?[0-9]+)?")
_GLUED_TO_NUMBER_RE = re.compile(r"[A-Za-z0-9_]|\.(?!\.)")
_MALFORMED_NUMBER_RE = re.compile(r"[A-Za-z0-9_.]*")
_MJD_RE = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_MAX_DEPTH = 100


class _Token(NamedTuple):
    kind: str  # "name", "keyword", "bind", "value", a punctuation string, or "end"
    text: str  # as written, for messages
    pos: int  # 0-based offset into the expression
    value: Any = None

    def describe(self) -> str:
        if self.kind == "end":
            return "the end of the expression"
        text = self.text if len(self.text) <= 30 else self.text[:27] + "..."
        text = text.replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t")  # messages are one line
        return text if text[-1:] in "'\"" else f"'{text}'"


def _syntax_error(text: str, pos: int, what: str, found: _Token | None = None) -> QueryError:
    """Build the error for a problem at ``pos``, with the expression and a caret under it."""
    return QueryError(with_caret(text, pos, f"Invalid query expression: {what}", found))


def with_caret(text: str, pos: int, message: str, found: _Token | None = None) -> str:
    pos = max(0, min(pos, len(text)))
    line_start = text.rfind("\n", 0, pos) + 1
    line_end = text.find("\n", pos)
    line = text[line_start : len(text) if line_end < 0 else line_end].replace("\t", " ").replace("\r", " ")
    column = pos - line_start + 1
    where = f"column {column}"
    if "\n" in text:
        where = f"line {text.count(chr(10), 0, pos) + 1}, {where}"
    message = f"{message} at {where}"
    if found is not None:
        message += f", found {found.describe()}"
    return f"{message}\n  {line}\n  {' ' * (column - 1)}^"


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


# daf_butler's defaults: UTC for calendar formats, TT for Chandra seconds, TAI for the rest (MJD).
_UTC_FORMATS = frozenset({"iso", "isot", "fits", "yday", "unix", "datetime"})


def _parse_time(text: str, start: int, raw: str) -> datetime.datetime:
    """Read ``T'[format/]value[/scale]'`` as daf_butler does, into a naive UTC `datetime`.

    ISO text without a scale is UTC (an offset such as ``+02:00`` or ``Z`` is
    honoured); a bare number is an MJD in TAI; ``T'mjd/61000.5/tai'`` names both.
    """
    from astropy.time import Time

    def bad(why: str = "") -> QueryError:
        hint = "write ISO-8601 such as T'2026-01-01T00:00:00' or an MJD such as T'61000.5' (TAI)"
        return _syntax_error(text, start, f"bad time literal T'{raw}'{why}: {hint}")

    parts = raw.strip().split("/")
    fmt = scale = None
    if len(parts) == 3:
        fmt, value, scale = parts
    elif len(parts) == 2 and parts[0].lower() in Time.FORMATS:
        fmt, value = parts
    elif len(parts) == 2:
        value, scale = parts
    elif len(parts) == 1:
        value = parts[0]
    else:
        raise bad()
    fmt = fmt.lower() if fmt is not None else None
    scale = scale.lower() if scale is not None else None
    if fmt is not None and fmt not in Time.FORMATS:
        raise bad(f" (unknown time format {fmt!r})")
    if scale is not None and scale not in Time.SCALES:
        raise bad(f" (unknown time scale {scale!r}; one of {', '.join(Time.SCALES)})")
    if fmt is None and not _MJD_RE.fullmatch(value):
        try:  # ISO-8601 read by Python keeps offsets such as +02:00, which astropy refuses
            parsed = datetime.datetime.fromisoformat(value)
        except ValueError:
            raise bad() from None
        if parsed.tzinfo is not None:
            if scale not in (None, "utc"):
                raise bad(" (a UTC offset and a time scale cannot both be given)")
            return parsed.astimezone(datetime.UTC).replace(tzinfo=None)
        if scale in (None, "utc"):
            return parsed
        fmt, value = "datetime", parsed  # type: ignore[assignment]
    if fmt is None:
        fmt = "mjd"
    if scale is None:
        scale = "utc" if fmt in _UTC_FORMATS else "tt" if fmt == "cxcsec" else "tai"
    given: Any = value
    if isinstance(value, str) and _MJD_RE.fullmatch(value):
        given = float(value)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "dubious year" for dates beyond the leap-second table
            result = Time(given, format=fmt, scale=scale).utc.to_datetime()
    except Exception:  # astropy raises several types, with long messages; ours says what to write
        raise bad() from None
    if not isinstance(result, datetime.datetime):
        raise bad()
    return result.replace(tzinfo=None)


def _tokenize(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    append = tokens.append
    pos = 0
    length = len(text)
    # Checked in order of frequency: a list of 100,000 numbers must tokenize in well under a second.
    while pos < length:
        char = text[pos]
        if char.isspace():
            pos += 1
            continue
        if char in _SINGLE:
            two = text[pos : pos + 2]
            if two in _DOUBLE:
                append(_Token(two, two, pos))
                pos += 2
            else:
                append(_Token(char, char, pos))
                pos += 1
            continue
        if char in "0123456789" or char == "." and text[pos + 1 : pos + 2].isdigit():
            pos = _read_number(text, pos, tokens)
            continue
        if char in "'\"":
            value, end = _read_string(text, pos)
            append(_Token("value", text[pos:end], pos, value))
        elif char in "Tt" and text[pos + 1 : pos + 2] in ("'", '"'):
            raw, end = _read_string(text, pos + 1)
            append(_Token("value", text[pos:end], pos, _parse_time(text, pos, raw)))
        elif match := _NAME_RE.match(text, pos):
            word = match.group()
            end = match.end()
            upper = word.upper()
            if upper in _KEYWORDS:
                append(_Token("keyword", word, pos, upper))
            elif upper in ("TRUE", "FALSE"):
                append(_Token("value", word, pos, upper == "TRUE"))
            else:
                append(_Token("name", word, pos, word))
        elif match := _BIND_RE.match(text, pos):
            end = match.end()
            append(_Token("bind", match.group(), pos, match.group(1)))
        elif text.startswith("..", pos) or char in "!:":
            two = text[pos : pos + 2]
            if two in _DOUBLE:
                append(_Token(two, two, pos))
                end = pos + 2
            elif char == ":":
                append(_Token(":", ":", pos))
                end = pos + 1
            else:
                raise _syntax_error(text, pos, f"unexpected character {char!r}")
        else:
            raise _syntax_error(text, pos, f"unexpected character {char!r}")
        pos = end
    tokens.append(_Token("end", "", len(text)))
    return tokens


_SINGLE = frozenset("=<>(),-+*/%")
_DOUBLE = frozenset({"..", "<=", ">=", "<>", "!="})


def _read_number(text: str, pos: int, tokens: list[_Token]) -> int:
    """Append the number at ``pos`` to ``tokens``; return the offset after it."""
    match = _NUMBER_RE.match(text, pos)
    assert match is not None
    end = match.end()
    if _GLUED_TO_NUMBER_RE.match(text, end):  # "903000abc", "1.2.3"; but "0..9" is a range
        glued = _MALFORMED_NUMBER_RE.match(text, pos)
        raise _syntax_error(text, pos, f"malformed number '{glued.group() if glued else ''}'")
    number = match.group()
    numeric: int | float
    if "." in number or "e" in number or "E" in number:
        numeric = float(number)
        if not math.isfinite(numeric):
            raise _syntax_error(text, pos, f"number {number} is too large")
    else:
        numeric = int(number)
        # Every integer column is 64-bit; a larger literal could only fail in the driver.
        if numeric > INT64_MAX:
            raise _syntax_error(
                text,
                pos,
                f"integer {number} does not fit a 64-bit column (largest {INT64_MAX}); "
                "write it as a float (e.g. 1e20) if you meant one",
            )
    tokens.append(_Token("value", number, pos, numeric))
    return end


# --- Parser ---------------------------------------------------------------------------------------

_COMPARISON_HINT = "a comparison operator (=, !=, <, <=, >, >=, IN, BETWEEN or OVERLAPS)"


class _Parser:
    """Recursive descent over the token list, one method per grammar rule."""

    def __init__(self, text: str):
        self.text = text
        self.tokens = _tokenize(text)
        self.index = 0
        self.depth = 0
        # For a value parsed where a condition may stand: the token after it and its first token,
        # so "visit AND ..." can say a comparison was expected after 'visit'.
        self.value_ends: dict[int, tuple[_Token, _Token]] = {}

    @property
    def token(self) -> _Token:
        return self.tokens[self.index]

    def advance(self) -> _Token:
        token = self.tokens[self.index]
        self.index += 1
        return token

    def peek(self, offset: int = 1) -> _Token:
        return self.tokens[min(self.index + offset, len(self.tokens) - 1)]

    def is_keyword(self, *words: str, offset: int = 0) -> bool:
        token = self.peek(offset)
        return token.kind == "keyword" and token.value in words

    def fail(self, what: str, token: _Token | None = None) -> QueryError:
        token = token or self.token
        return _syntax_error(self.text, token.pos, what, token)

    def enter(self) -> None:
        self.depth += 1
        if self.depth > _MAX_DEPTH:
            raise self.fail(f"the expression is nested more than {_MAX_DEPTH} levels deep")

    def condition(self, node: Node) -> Condition:
        """``node`` itself if it is a condition; otherwise the error a value standing alone deserves."""
        if isinstance(node, _CONDITIONS):
            return node
        after, first = self.value_ends.get(id(node), (self.token, self.token))
        raise _syntax_error(self.text, after.pos, f"expected {_COMPARISON_HINT} after {first.describe()}", after)

    def parse(self) -> Condition:
        node = self.condition(self.parse_or())
        token = self.token
        if token.kind == ")":
            raise _syntax_error(self.text, token.pos, "unbalanced parenthesis: this ')' has no matching '('")
        if token.kind != "end":
            raise self.fail("expected AND, OR or the end of the expression")
        return node

    def parse_or(self) -> Node:
        first = self.token
        operands = [self.parse_and()]
        while self.is_keyword("OR"):
            operands[0] = self.condition(operands[0])
            self.advance()
            operands.append(self.condition(self.parse_and()))
        return operands[0] if len(operands) == 1 else Or(tuple(operands), first.pos)  # type: ignore[arg-type]

    def parse_and(self) -> Node:
        first = self.token
        operands = [self.parse_not()]
        while self.is_keyword("AND"):
            operands[0] = self.condition(operands[0])
            self.advance()
            operands.append(self.condition(self.parse_not()))
        return operands[0] if len(operands) == 1 else And(tuple(operands), first.pos)  # type: ignore[arg-type]

    def parse_not(self) -> Node:
        if not self.is_keyword("NOT"):
            return self.parse_predicate()
        self.enter()
        token = self.advance()
        node = Not(self.condition(self.parse_not()), token.pos)
        self.depth -= 1
        return node

    def parse_predicate(self) -> Node:
        first = self.token
        if first.kind == "end" or first.kind == "keyword" and first.value != "NOT":
            raise self.fail("expected a condition such as visit = 1")
        left = self.parse_sum()
        token = self.token
        if token.kind in _COMPARISONS:
            self.advance()
            right = self.parse_sum(f"expected a value after '{token.text}'")
            if not _mentions_name(left) and not _mentions_name(right):
                raise _syntax_error(
                    self.text, first.pos, "a comparison needs a dimension or metadata name on one side"
                )
            return Compare(_COMPARISONS[token.kind], left, right, token.pos)
        if self.is_keyword("OVERLAPS"):
            self.advance()
            return Overlaps(left, self.parse_sum("expected a value after OVERLAPS"), token.pos)
        negated = self.is_keyword("NOT") and self.is_keyword("IN", "BETWEEN", offset=1)
        if negated:
            self.advance()
        if self.is_keyword("IN", "BETWEEN"):
            keyword = self.advance()
            if keyword.value == "IN":
                return In(left, self.parse_in_items(), negated, keyword.pos)
            low = self.parse_sum("expected a value after BETWEEN")
            if not self.is_keyword("AND"):
                raise self.fail("expected AND between the two bounds of BETWEEN")
            self.advance()
            high = self.parse_sum("expected a value after BETWEEN ... AND")
            return Between(left, low, high, negated, keyword.pos)
        if not isinstance(left, _CONDITIONS):
            self.value_ends[id(left)] = (token, first)
        return left

    def parse_sum(self, what: str = "expected a condition such as visit = 1") -> Value:
        left = self.parse_product(what)
        while self.token.kind in ("+", "-"):
            op = self.advance()
            right = self.parse_product(f"expected a value after '{op.text}'")
            left = Arithmetic(op.kind, left, right, op.pos)
        return left

    def parse_product(self, what: str) -> Value:
        left = self.parse_unary(what)
        while self.token.kind in ("*", "/", "%"):
            op = self.advance()
            right = self.parse_unary(f"expected a value after '{op.text}'")
            left = Arithmetic(op.kind, left, right, op.pos)
        return left

    def parse_unary(self, what: str) -> Value:
        token = self.token
        if token.kind not in ("+", "-"):
            return self.parse_primary(what)
        self.enter()
        self.advance()
        operand = self.parse_unary(f"expected a value after '{token.text}'")
        self.depth -= 1
        if token.kind == "+":
            return operand
        if isinstance(operand, Literal) and type(operand.value) in (int, float):
            return Literal(-operand.value, token.pos)  # type: ignore[operator]
        return Negate(operand, token.pos)

    def parse_primary(self, what: str) -> Value:
        token = self.token
        if token.kind == "(":
            return self.parse_parenthesis()
        if token.kind == "name":
            if token.value.upper() in _FUNCTIONS and self.peek().kind == "(":
                return self.parse_call()
            self.advance()
            return Identifier(token.value, token.pos)
        if token.kind == "bind":
            self.advance()
            return BindParam(token.value, token.pos)
        if token.kind == "value":
            self.advance()
            return Literal(token.value, token.pos)
        raise self.fail(what)

    def parse_parenthesis(self) -> Value:
        """``( condition )``, ``( value )`` or the time range ``( begin, end )``."""
        self.enter()
        opening = self.advance()
        node = self.parse_or()
        if self.token.kind == ",":
            if isinstance(node, _CONDITIONS):
                raise self.fail("expected ')' after the condition")
            self.advance()
            end = self.parse_sum("expected the end of the time range after ','")
            if self.token.kind == ",":
                raise self.fail("a time range has two items, (begin, end)")
            node = TimeRange(node, end, opening.pos)  # type: ignore[arg-type]
        self.close(opening, "expected ')', AND or OR")
        self.depth -= 1
        return node  # type: ignore[return-value]  # a condition in parentheses stands for itself

    def close(self, opening: _Token, what: str) -> None:
        if self.token.kind == ")":
            self.advance()
            return
        if self.token.kind == "end":
            raise _syntax_error(self.text, opening.pos, "unbalanced parenthesis: this '(' is never closed")
        raise self.fail(what)

    def parse_call(self) -> Value:
        name = self.advance()
        kind = name.value.upper()
        self.enter()
        opening = self.advance()
        args: list[Value] = []
        if self.token.kind != ")":
            while True:
                args.append(self.parse_sum(f"expected an argument of {kind}()"))
                if self.token.kind != ",":
                    break
                self.advance()
        self.close(opening, f"expected ',' or ')' in {kind}()")
        self.depth -= 1
        counts = {"POINT": (2, "ra, dec"), "CIRCLE": (3, "ra, dec, radius"), "BOX": (4, "ra, dec, width, height"),
                  "GLOB": (2, "name, 'pattern'"), "UUID": (1, "'uuid-string'")}
        if kind in counts and len(args) != counts[kind][0]:
            count, names = counts[kind]
            raise _syntax_error(self.text, name.pos, f"{kind}() takes {count} arguments ({names}), got {len(args)}")
        if kind == "POLYGON" and (len(args) < 6 or len(args) % 2):
            raise _syntax_error(
                self.text, name.pos, f"POLYGON() takes ra, dec pairs of at least 3 vertices, got {len(args)} numbers"
            )
        if kind == "UUID":
            arg = args[0]
            if not (isinstance(arg, Literal) and isinstance(arg.value, str)):
                raise _syntax_error(self.text, name.pos, "UUID() takes a string literal, e.g. UUID('...')")
            try:
                return Literal(uuid.UUID(arg.value), name.pos)
            except ValueError:
                raise _syntax_error(self.text, arg.pos, f"{arg.value!r} is not a UUID") from None
        if kind == "GLOB":
            column, pattern = args
            if not isinstance(column, Identifier):
                raise _syntax_error(self.text, name.pos, "glob() takes a name first, e.g. glob(band, 'r*')")
            if not isinstance(pattern, Literal | BindParam | Identifier) or (
                isinstance(pattern, Literal) and not isinstance(pattern.value, str)
            ):
                raise _syntax_error(self.text, name.pos, "glob() takes a string pattern second, e.g. glob(band, 'r*')")
            return Glob(column, pattern, name.pos)  # type: ignore[return-value]  # a condition
        return ShapeCall(kind, tuple(args), name.pos)

    def parse_in_items(self) -> tuple[Value | Range, ...]:
        if self.token.kind == "bind":
            token = self.advance()
            return (BindParam(token.value, token.pos),)
        if self.token.kind != "(":
            raise self.fail("expected '(' or a bind parameter after IN")
        self.enter()
        opening = self.advance()
        items: list[Value | Range] = []
        while True:
            items.append(self.parse_in_item())
            if self.token.kind == ")":
                self.advance()
                self.depth -= 1
                return tuple(items)
            if self.token.kind == "end":
                raise _syntax_error(self.text, opening.pos, "unbalanced parenthesis: this '(' is never closed")
            if self.token.kind != ",":
                raise self.fail("expected ',' or ')' in the IN list")
            self.advance()

    def parse_in_item(self) -> Value | Range:
        start_token = self.token
        if start_token.kind == "value" and self.tokens[self.index + 1].kind in (",", ")"):
            self.index += 1  # the common case, a plain value: no need to descend the grammar
            return Literal(start_token.value, start_token.pos)
        start = self.parse_sum("expected a value in the IN list")
        if self.token.kind != "..":
            return start
        self.advance()
        stop_token = self.token
        stop = self.parse_sum("expected an integer after '..'")
        stride, stride_token = 1, None
        if self.token.kind == ":":
            self.advance()
            stride_token = self.token
            stride = self._integer(self.parse_sum("expected an integer stride after ':'"), stride_token)
            if stride < 1:
                raise self.fail("a range stride must be a positive integer", stride_token)
        first = self._integer(start, start_token)
        last = self._integer(stop, stop_token)
        if first > last:
            raise _syntax_error(
                self.text, start_token.pos, f"range {first}..{last} is empty: write the smaller bound first"
            )
        return Range(first, last, stride, start_token.pos)

    def _integer(self, node: Value, token: _Token) -> int:
        if isinstance(node, Literal) and type(node.value) is int:
            return node.value
        raise _syntax_error(self.text, token.pos, "range bounds and strides must be integer literals", token)


def _mentions_name(node: Node) -> bool:
    return bool(identifiers(node))


def _children(node: Node) -> list[Node]:
    out: list[Node] = []
    for f in fields(node):  # type: ignore[arg-type]
        value = getattr(node, f.name)
        if isinstance(value, tuple):
            out.extend(v for v in value if hasattr(v, "__dataclass_fields__"))
        elif hasattr(value, "__dataclass_fields__"):
            out.append(value)
    return out


def parse(text: str | None) -> Condition | None:
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
