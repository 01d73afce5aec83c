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
exported by `skybutler.registry`; this module only reads text into a tree: the tokens
come from ``_expr_lexer``, the nodes are defined in ``_expr_tree`` and exported here.
"""

from __future__ import annotations

import uuid

from ..errors import QueryError
from ._expr_lexer import COMPARISONS, FUNCTIONS, Token, syntax_error, tokenize
from ._expr_tree import (
    CONDITIONS,
    And,
    Arithmetic,
    Between,
    BindParam,
    Compare,
    Condition,
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
    identifiers,
)

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

_MAX_DEPTH = 100

# --- Parser ---------------------------------------------------------------------------------------

_COMPARISON_HINT = "a comparison operator (=, !=, <, <=, >, >=, IN, BETWEEN or OVERLAPS)"


class _Parser:
    """Recursive descent over the token list, one method per grammar rule."""

    def __init__(self, text: str):
        self.text = text
        self.tokens = tokenize(text)
        self.index = 0
        self.depth = 0
        # For a value parsed where a condition may stand: the token after it and its first token,
        # so "visit AND ..." can say a comparison was expected after 'visit'.
        self.value_ends: dict[int, tuple[Token, Token]] = {}

    @property
    def token(self) -> Token:
        return self.tokens[self.index]

    def advance(self) -> Token:
        token = self.tokens[self.index]
        self.index += 1
        return token

    def peek(self, offset: int = 1) -> Token:
        return self.tokens[min(self.index + offset, len(self.tokens) - 1)]

    def is_keyword(self, *words: str, offset: int = 0) -> bool:
        token = self.peek(offset)
        return token.kind == "keyword" and token.value in words

    def fail(self, what: str, token: Token | None = None) -> QueryError:
        token = token or self.token
        return syntax_error(self.text, token.pos, what, token)

    def enter(self) -> None:
        self.depth += 1
        if self.depth > _MAX_DEPTH:
            raise self.fail(f"the expression is nested more than {_MAX_DEPTH} levels deep")

    def condition(self, node: Node) -> Condition:
        """``node`` itself if it is a condition; otherwise the error a value standing alone deserves."""
        if isinstance(node, CONDITIONS):
            return node
        after, first = self.value_ends.get(id(node), (self.token, self.token))
        raise syntax_error(self.text, after.pos, f"expected {_COMPARISON_HINT} after {first.describe()}", after)

    def parse(self) -> Condition:
        node = self.condition(self.parse_or())
        token = self.token
        if token.kind == ")":
            raise syntax_error(self.text, token.pos, "unbalanced parenthesis: this ')' has no matching '('")
        if token.kind != "end":
            raise self.fail("expected AND, OR or the end of the expression")
        return node

    # parse_or and parse_and are written out alike: a shared helper would add two stack frames
    # per level of parentheses, and 100 levels (_MAX_DEPTH) must stay within Python's recursion limit.

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
        if token.kind in COMPARISONS:
            self.advance()
            right = self.parse_sum(f"expected a value after '{token.text}'")
            if not identifiers(left) and not identifiers(right):
                raise syntax_error(
                    self.text, first.pos, "a comparison needs a dimension or metadata name on one side"
                )
            return Compare(COMPARISONS[token.kind], left, right, token.pos)
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
        if not isinstance(left, CONDITIONS):
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
            if token.value.upper() in FUNCTIONS and self.peek().kind == "(":
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
            if isinstance(node, CONDITIONS):
                raise self.fail("expected ')' after the condition")
            self.advance()
            end = self.parse_sum("expected the end of the time range after ','")
            if self.token.kind == ",":
                raise self.fail("a time range has two items, (begin, end)")
            node = TimeRange(node, end, opening.pos)  # type: ignore[arg-type]
        self.close(opening, "expected ')', AND or OR")
        self.depth -= 1
        return node  # type: ignore[return-value]  # a condition in parentheses stands for itself

    def close(self, opening: Token, what: str) -> None:
        if self.token.kind == ")":
            self.advance()
            return
        if self.token.kind == "end":
            raise syntax_error(self.text, opening.pos, "unbalanced parenthesis: this '(' is never closed")
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
            raise syntax_error(self.text, name.pos, f"{kind}() takes {count} arguments ({names}), got {len(args)}")
        if kind == "POLYGON" and (len(args) < 6 or len(args) % 2):
            raise syntax_error(
                self.text, name.pos, f"POLYGON() takes ra, dec pairs of at least 3 vertices, got {len(args)} numbers"
            )
        if kind == "UUID":
            arg = args[0]
            if not (isinstance(arg, Literal) and isinstance(arg.value, str)):
                raise syntax_error(self.text, name.pos, "UUID() takes a string literal, e.g. UUID('...')")
            try:
                return Literal(uuid.UUID(arg.value), name.pos)
            except ValueError:
                raise syntax_error(self.text, arg.pos, f"{arg.value!r} is not a UUID") from None
        if kind == "GLOB":
            column, pattern = args
            if not isinstance(column, Identifier):
                raise syntax_error(self.text, name.pos, "glob() takes a name first, e.g. glob(band, 'r*')")
            if not isinstance(pattern, Literal | BindParam | Identifier) or (
                isinstance(pattern, Literal) and not isinstance(pattern.value, str)
            ):
                raise syntax_error(self.text, name.pos, "glob() takes a string pattern second, e.g. glob(band, 'r*')")
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
                raise syntax_error(self.text, opening.pos, "unbalanced parenthesis: this '(' is never closed")
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
            raise syntax_error(
                self.text, start_token.pos, f"range {first}..{last} is empty: write the smaller bound first"
            )
        return Range(first, last, stride, start_token.pos)

    def _integer(self, node: Value, token: Token) -> int:
        if isinstance(node, Literal) and type(node.value) is int:
            return node.value
        raise syntax_error(self.text, token.pos, "range bounds and strides must be integer literals", token)




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
