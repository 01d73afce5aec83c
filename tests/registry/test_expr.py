"""The query expression language: what it parses to, how it fails, what it selects."""

from __future__ import annotations

import datetime
import operator
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa
import sqlalchemy.dialects.postgresql.psycopg  # sa.dialects.X exists only once X is imported
import sqlalchemy.dialects.sqlite
from hypothesis import given, settings
from hypothesis import strategies as st

from skybutler.dimensions.regions import Circle, Region
from skybutler.errors import QueryError
from skybutler.registry import compile_expression, compile_where
from skybutler.registry.expr import (
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
    Not,
    Or,
    Overlaps,
    Range,
    ShapeCall,
    TimeRange,
    identifiers,
    parse,
)

visit, band, detector = Identifier("visit"), Identifier("band"), Identifier("detector")


# --- Parsing: every construct -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "tree"),
    [
        ("visit = 903000", Compare("=", visit, Literal(903000))),
        ("visit != 1", Compare("!=", visit, Literal(1))),
        ("visit <> 1", Compare("!=", visit, Literal(1))),
        ("visit < 1", Compare("<", visit, Literal(1))),
        ("visit <= 1", Compare("<=", visit, Literal(1))),
        ("visit > 1", Compare(">", visit, Literal(1))),
        ("visit >= 1", Compare(">=", visit, Literal(1))),
        ("903000 < visit", Compare("<", Literal(903000), visit)),
        (
            "visit.day_obs = exposure.day_obs",
            Compare("=", Identifier("visit.day_obs"), Identifier("exposure.day_obs")),
        ),
        ("visit = :v", Compare("=", visit, BindParam("v"))),
        ("band IN ('r', 'i')", In(band, (Literal("r"), Literal("i")))),
        ("band NOT IN ('r')", In(band, (Literal("r"),), negated=True)),
        ("detector IN (0..9)", In(detector, (Range(0, 9),))),
        ("detector IN (0..9:3, 50, :more)", In(detector, (Range(0, 9, 3), Literal(50), BindParam("more")))),
        ("detector IN (-5..-1)", In(detector, (Range(-5, -1),))),
        ("visit IN (:visits)", In(visit, (BindParam("visits"),))),
        ("visit IN :visits", In(visit, (BindParam("visits"),))),
        ("visit BETWEEN 100 AND 200", Between(visit, Literal(100), Literal(200))),
        ("visit NOT BETWEEN :lo AND :hi", Between(visit, BindParam("lo"), BindParam("hi"), negated=True)),
        ("NOT visit = 1", Not(Compare("=", visit, Literal(1)))),
        ("NOT NOT visit = 1", Not(Not(Compare("=", visit, Literal(1))))),
        ("NOT (visit = :v)", Not(Compare("=", visit, BindParam("v")))),
        ("((visit = 1))", Compare("=", visit, Literal(1))),
    ],
)
def test_each_construct_parses_to_its_node(text: str, tree: Any) -> None:
    assert parse(text) == tree


@pytest.mark.parametrize(
    ("written", "value"),
    [
        ("42", 42),
        ("-42", -42),
        ("30.0", 30.0),
        ("30.", 30.0),
        (".5", 0.5),
        ("1e3", 1000.0),
        ("2.5E-2", 0.025),
        ("-1.5e+2", -150.0),
        ("'r'", "r"),
        ('"r"', "r"),
        ("'8,6'", "8,6"),
        ("'it''s'", "it's"),
        ('"say ""hi"""', 'say "hi"'),
        ("''", ""),
        ("'AND visit = 1'", "AND visit = 1"),
        ("TRUE", True),
        ("false", False),
        ("T'2026-01-01T00:00:00'", datetime.datetime(2026, 1, 1)),
        ("t'2026-01-01'", datetime.datetime(2026, 1, 1)),
        ("T'2026-01-01T12:30:00.5'", datetime.datetime(2026, 1, 1, 12, 30, 0, 500000)),
        ('T"2026-01-01T02:00:00+02:00"', datetime.datetime(2026, 1, 1)),  # converted to naive UTC
        ("T'2026-01-01T00:00:00Z'", datetime.datetime(2026, 1, 1)),
    ],
)
def test_literals_are_read_as_python_values(written: str, value: Any) -> None:
    tree = parse(f"x = {written}")
    assert isinstance(tree, Compare) and isinstance(tree.right, Literal)
    assert tree.right.value == value
    assert type(tree.right.value) is type(value)


def test_keywords_are_case_insensitive() -> None:
    assert parse("visit in (1) and not band = 'r' or visit between 1 and 2") == parse(
        "visit IN (1) AND NOT band = 'r' OR visit BETWEEN 1 AND 2"
    )


def test_names_may_hold_digits_underscores_and_one_dot() -> None:
    assert parse("visit_2.exposure_time_1 > 0") == Compare(
        ">", Identifier("visit_2.exposure_time_1"), Literal(0)
    )


def test_whitespace_is_optional_between_tokens_and_may_span_lines() -> None:
    assert parse("visit>=1 AND(band='r')") == And(
        (Compare(">=", visit, Literal(1)), Compare("=", band, Literal("r")))
    )
    assert parse("visit = 1\n  AND\tband = 'r'\n") == parse("visit = 1 AND band = 'r'")


@pytest.mark.parametrize("text", [None, "", "   ", "\n\t"])
def test_an_empty_expression_is_no_constraint(text: str | None) -> None:
    assert parse(text) is None


# --- Parsing: precedence ----------------------------------------------------------------------------

a1, b2, c3 = (
    Compare("=", Identifier(name), Literal(value)) for name, value in (("a", 1), ("b", 2), ("c", 3))
)


@pytest.mark.parametrize(
    ("text", "tree"),
    [
        ("a = 1 OR b = 2 AND c = 3", Or((a1, And((b2, c3))))),
        ("a = 1 AND b = 2 OR c = 3", Or((And((a1, b2)), c3))),
        ("(a = 1 OR b = 2) AND c = 3", And((Or((a1, b2)), c3))),
        ("NOT a = 1 AND b = 2", And((Not(a1), b2))),
        ("NOT (a = 1 AND b = 2)", Not(And((a1, b2)))),
        ("NOT a = 1 OR NOT b = 2", Or((Not(a1), Not(b2)))),
        ("a = 1 AND b = 2 AND c = 3", And((a1, b2, c3))),
        ("a = 1 OR b = 2 OR c = 3", Or((a1, b2, c3))),
        ("a BETWEEN 1 AND 2 AND c = 3", And((Between(Identifier("a"), Literal(1), Literal(2)), c3))),
    ],
)
def test_or_binds_loosest_then_and_then_not_then_comparison(text: str, tree: Any) -> None:
    assert parse(text) == tree


def test_identifiers_lists_every_name_used() -> None:
    tree = parse(
        "visit > 903000 AND band IN ('r', 'i') OR NOT (visit.exposure_time BETWEEN 1 AND 2)"
        " OR 5 < detector OR visit.day_obs = exposure.day_obs OR patch = :patch"
    )
    assert identifiers(tree) == {
        "visit",
        "band",
        "visit.exposure_time",
        "detector",
        "visit.day_obs",
        "exposure.day_obs",
        "patch",
    }
    assert identifiers(None) == set()


# --- Parsing: errors --------------------------------------------------------------------------------


def error_for(text: str) -> str:
    with pytest.raises(QueryError) as info:
        parse(text)
    return str(info.value)


def test_a_syntax_error_names_the_column_and_token_and_points_at_it() -> None:
    assert error_for("visit = AND band = 'r'") == (
        "Invalid query expression: expected a value after '=' at column 9, found 'AND'\n"
        "  visit = AND band = 'r'\n"
        "          ^"
    )


def test_a_syntax_error_in_a_multi_line_expression_names_the_line() -> None:
    assert error_for("visit = 1\nAND band = = 'r'").splitlines() == [
        "Invalid query expression: expected a value after '=' at line 2, column 12, found '='",
        "  AND band = = 'r'",
        "             ^",
    ]


def test_query_errors_are_value_errors() -> None:
    with pytest.raises(ValueError, match="Invalid query expression"):
        parse("visit =")


@pytest.mark.parametrize(
    ("text", "message", "column"),
    [
        ("band = 'r", "unterminated string (no closing ')", 8),
        ('band = "r', 'unterminated string (no closing ")', 8),
        ("band = 'it''s", "unterminated string", 8),
        ("t > T'2026-13-01'", "bad time literal T'2026-13-01'", 5),
        ("t > T'yesterday'", "write ISO-8601 such as T'2026-01-01T00:00:00'", 5),
        ("t > T'2026-01-01", "unterminated string", 6),
        ("(visit = 1", "unbalanced parenthesis: this '(' is never closed", 1),
        ("visit IN (1, 2", "unbalanced parenthesis: this '(' is never closed", 10),
        ("visit = 1)", "unbalanced parenthesis: this ')' has no matching '('", 10),
        ("((visit = 1) AND band = 'r'", "unbalanced parenthesis", 1),
        ("1 = 1", "a comparison needs a dimension or metadata name on one side", 1),
        ("'r' != :band", "a comparison needs a dimension or metadata name on one side", 1),
        ("visit = 1 band = 'r'", "expected AND, OR or the end of the expression", 11),
        ("visit = 1 AND", "expected a condition such as visit = 1", 14),
        ("visit", "expected a comparison operator", 6),
        ("visit == 1", "expected a value after '='", 8),
        ("visit = band.", "unexpected character '.'", 13),
        ("visit = 903000abc", "malformed number '903000abc'", 9),
        ("visit = 1.2.3", "malformed number '1.2.3'", 9),
        ("visit = #1", "unexpected character '#'", 9),
        ("visit IN ()", "expected a value in the IN list", 11),
        ("visit IN 1, 2", "expected '(' or a bind parameter after IN", 10),
        ("visit IN (1 2)", "expected ',' or ')' in the IN list", 13),
        ("visit IN (1, AND)", "expected a value in the IN list", 14),
        ("visit IN (9..0)", "range 9..0 is empty: write the smaller bound first", 11),
        ("visit IN (1.5..3)", "range bounds and strides must be integer literals", 11),
        ("visit IN (:a..3)", "range bounds and strides must be integer literals", 11),
        ("visit IN (1..3:0)", "a range stride must be a positive integer", 16),
        ("visit BETWEEN 1 OR 2", "expected AND between the two bounds of BETWEEN", 17),
        ("visit BETWEEN 1 AND", "expected a value after BETWEEN ... AND", 20),
        ("visit = :", "expected a value after '=' at column 9, found ':'", 9),
    ],
)
def test_syntax_errors_say_what_is_wrong_and_where(text: str, message: str, column: int) -> None:
    error = error_for(text)
    first, shown, caret = error.splitlines()
    assert message in first
    assert f"at column {column}" in first
    assert shown == f"  {text}"
    assert caret == " " * (column + 1) + "^"


def test_deep_nesting_is_a_query_error_not_a_crash() -> None:
    assert "nested more than 100 levels" in error_for("(" * 500 + "visit = 1" + ")" * 500)
    assert "nested more than 100 levels" in error_for("NOT " * 500 + "visit = 1")


# --- Compiling against a real database --------------------------------------------------------------

metadata = sa.MetaData()
table = sa.Table(
    "data",
    metadata,
    sa.Column("instrument", sa.String(16)),
    sa.Column("visit", sa.Integer),
    sa.Column("detector", sa.Integer),
    sa.Column("band", sa.String(32)),
    sa.Column("exposure_time", sa.Float),
    sa.Column("timespan_begin", sa.DateTime),
    sa.Column("patch", sa.String(16)),
)
VISITS = {  # visit: (instrument, band, exposure_time, timespan_begin)
    903000: ("HSC", "g", 15.0, datetime.datetime(2025, 12, 31, 23, 0)),
    903002: ("HSC", "r", 30.0, datetime.datetime(2026, 1, 1, 0, 0)),
    903004: ("HSC", "i", 30.0, datetime.datetime(2026, 1, 2, 3, 0)),
    903006: ("HSC", "z", 200.0, datetime.datetime(2026, 2, 1, 0, 0)),
    1001: ("LSSTCam", "r", 30.5, datetime.datetime(2026, 3, 1, 0, 0)),
}
PATCHES = ["8,6", "8,7", "3", "it's"]
ROWS = [
    dict(
        instrument=instrument,
        visit=v,
        detector=d,
        band=b,
        exposure_time=e,
        timespan_begin=t,
        patch=PATCHES[d],
    )
    for v, (instrument, b, e, t) in VISITS.items()
    for d in range(4)
]
NAMES = {
    **{column.name: column for column in table.columns},
    "visit.exposure_time": table.c.exposure_time,
    "visit.timespan_begin": table.c.timespan_begin,
}


def resolve(name: str) -> sa.ColumnElement[Any]:
    try:
        return NAMES[name]
    except KeyError:
        raise QueryError(f"unknown name {name!r}") from None


@pytest.fixture(scope="module")
def engine() -> Iterator[sa.Engine]:
    engine = sa.create_engine("sqlite://")
    metadata.create_all(engine)
    with engine.begin() as connection:
        connection.execute(table.insert(), ROWS)
    yield engine
    engine.dispose()


Key = tuple[int, int]


def select(engine: sa.Engine, text: str, bind: dict[str, Any] | None = None) -> set[Key]:
    """(visit, detector) of the rows the expression selects."""
    clause = compile_where(text, resolve, bind)
    query = sa.select(table.c.visit, table.c.detector)
    if clause is not None:
        query = query.where(clause)
    with engine.connect() as connection:
        return {(v, d) for v, d in connection.execute(query)}


def rows_where(predicate: Callable[[dict[str, Any]], bool]) -> set[Key]:
    return {(row["visit"], row["detector"]) for row in ROWS if predicate(row)}


@pytest.mark.parametrize(
    ("text", "predicate"),
    [
        ("visit > 903000 AND band IN ('r', 'i')", lambda r: r["visit"] > 903000 and r["band"] in ("r", "i")),
        (
            "instrument = 'HSC' AND detector IN (0..2)",
            lambda r: r["instrument"] == "HSC" and r["detector"] <= 2,
        ),
        ("detector IN (0..3:2)", lambda r: r["detector"] in (0, 2)),
        ("detector IN (1..3:2, 0)", lambda r: r["detector"] in (0, 1, 3)),
        ("detector NOT IN (0..2)", lambda r: r["detector"] == 3),
        ("visit.exposure_time >= 30.0", lambda r: r["exposure_time"] >= 30.0),
        ("visit.exposure_time < 1e2", lambda r: r["exposure_time"] < 100),
        (
            "visit.timespan_begin >= T'2026-01-01T00:00:00'",
            lambda r: r["timespan_begin"] >= datetime.datetime(2026, 1, 1),
        ),
        (
            "timespan_begin < T'2026-01-01T01:00:00+01:00'",
            lambda r: r["timespan_begin"] < datetime.datetime(2026, 1, 1),
        ),
        ("patch = '8,6'", lambda r: r["patch"] == "8,6"),
        ("patch = 'it''s'", lambda r: r["patch"] == "it's"),
        ("patch = 3", lambda r: r["patch"] == "3"),  # an integer against a string column means its digits
        (
            "visit = 903000 OR (visit = 903002 AND patch != '8,6')",
            lambda r: r["visit"] == 903000 or (r["visit"] == 903002 and r["patch"] != "8,6"),
        ),
        ("visit BETWEEN 903002 AND 903004", lambda r: 903002 <= r["visit"] <= 903004),
        ("visit NOT BETWEEN 903002 AND 903004", lambda r: not 903002 <= r["visit"] <= 903004),
        ("NOT band = 'r'", lambda r: r["band"] != "r"),
        ("NOT (band = 'r' OR detector = 0)", lambda r: not (r["band"] == "r" or r["detector"] == 0)),
        ("903004 <= visit", lambda r: r["visit"] >= 903004),
        ("band <> 'g' AND band != 'z'", lambda r: r["band"] not in ("g", "z")),
        ("visit = -1", lambda r: False),
        ("", lambda r: True),
    ],
)
def test_an_expression_selects_the_rows_python_would(engine: sa.Engine, text: str, predicate: Any) -> None:
    assert select(engine, text) == rows_where(predicate)


def test_bind_parameters_supply_values(engine: sa.Engine) -> None:
    assert select(engine, "NOT (visit = :v)", {"v": 903000}) == rows_where(lambda r: r["visit"] != 903000)
    assert select(engine, "visit BETWEEN :lo AND :hi", {"lo": 903001, "hi": 903003}) == rows_where(
        lambda r: r["visit"] == 903002
    )
    begin = datetime.datetime(2026, 1, 1, 1, tzinfo=datetime.timezone(datetime.timedelta(hours=1)))
    assert select(engine, "timespan_begin = :t", {"t": begin}) == rows_where(lambda r: r["visit"] == 903002)


@pytest.mark.parametrize(
    "visits",
    [[903000, 1001], (903000, 1001), {903000, 1001}, np.array([903000, 1001]), range(1001, 903001, 901999)],
)
def test_a_collection_bound_after_in_is_expanded(engine: sa.Engine, visits: Any) -> None:
    expected = rows_where(lambda r: r["visit"] in (903000, 1001))
    assert select(engine, "visit IN (:visits)", {"visits": visits}) == expected
    assert select(engine, "visit IN :visits", {"visits": visits}) == expected
    assert select(engine, "visit IN (:visits, 903002)", {"visits": visits}) == expected | rows_where(
        lambda r: r["visit"] == 903002
    )


def test_an_empty_collection_after_in_selects_nothing_and_after_not_in_everything(engine: sa.Engine) -> None:
    assert select(engine, "visit IN (:visits)", {"visits": []}) == set()
    assert select(engine, "visit NOT IN (:visits)", {"visits": []}) == rows_where(lambda r: True)


def test_every_value_is_a_bound_parameter_never_sql_text() -> None:
    clause = compile_where("band = 'r' AND visit IN (903000, 1..5:2) AND visit BETWEEN 7 AND 8", resolve)
    assert clause is not None
    sql = str(clause.compile(dialect=sa.dialects.sqlite.dialect()))
    assert "'r'" not in sql and "903000" not in sql
    params = list(clause.compile().params.values())
    assert "r" in params and [903000] in params and 7 in params


# --- Injection --------------------------------------------------------------------------------------


def table_exists(engine: sa.Engine) -> bool:
    return sa.inspect(engine).has_table("data")


@pytest.mark.parametrize(
    "text",
    [
        "visit = 1; DROP TABLE data",
        "band = 'r' OR 1=1 --",
        "band = 'r' -- AND visit = 1",
        "band = 'r'/* */",
        "visit = 1 UNION SELECT * FROM data",
    ],
)
def test_sql_injection_attempts_are_syntax_errors(engine: sa.Engine, text: str) -> None:
    with pytest.raises(QueryError):
        select(engine, text)
    assert table_exists(engine)


def test_sql_in_a_string_literal_or_bind_is_just_a_value(engine: sa.Engine) -> None:
    attack = "r'; DROP TABLE data; --"
    assert select(engine, "band = 'r''; DROP TABLE data; --'") == set()
    assert select(engine, "band = :band OR visit = 1001", {"band": attack}) == rows_where(
        lambda r: r["visit"] == 1001
    )
    assert select(engine, "band IN (:bands)", {"bands": [attack, "g"]}) == rows_where(
        lambda r: r["band"] == "g"
    )
    assert table_exists(engine)
    assert len(select(engine, "")) == len(ROWS)


# --- Compile errors ---------------------------------------------------------------------------------


def compile_error_for(text: str, bind: dict[str, Any] | None = None) -> str:
    with pytest.raises(QueryError) as info:
        compile_where(text, resolve, bind)
    return str(info.value)


def test_a_missing_bind_parameter_lists_the_binds_given() -> None:
    assert compile_error_for("visit = :v", {"visits": [1], "band": "r"}).splitlines() == [
        "Invalid query expression: no value given for bind parameter ':v' (binds given: :band, :visits)"
        " at column 9",
        "  visit = :v",
        "          ^",
    ]
    assert "(binds given: none)" in compile_error_for("visit IN (:visits)")


def test_a_collection_bound_outside_in_is_an_error_that_suggests_in() -> None:
    assert "use it with IN, e.g. visit IN (:v)" in compile_error_for("visit = :v", {"v": [1, 2]})


def test_a_bind_of_an_unsupported_type_is_an_error() -> None:
    assert "bind parameter ':v' is None" in compile_error_for("visit = :v", {"v": None})
    assert "bind parameter ':v' is {}" in compile_error_for("visit IN (:v)", {"v": [{}]})


def test_numpy_scalars_bind_like_python_numbers(engine: sa.Engine) -> None:
    assert select(
        engine, "visit = :v AND exposure_time = :e", {"v": np.int64(1001), "e": np.float32(30.5)}
    ) == (rows_where(lambda r: r["visit"] == 1001))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("visit = 'r'", "visit holds numbers, but it is compared with 'r'"),
        ("band = 1.5", "band holds strings, but it is compared with 1.5"),
        ("band = T'2026-01-01'", "band holds strings, but it is compared with T'2026-01-01T00:00:00'"),
        ("timespan_begin > '2026-01-01'", "write a time literal such as T'2026-01-01T00:00:00'"),
        ("timespan_begin > 5", "timespan_begin holds times, but it is compared with 5"),
        ("band IN (1..3)", "the range 1..3 needs an integer column, but band holds VARCHAR(32)"),
    ],
)
def test_a_value_that_cannot_match_the_column_type_is_an_error(text: str, message: str) -> None:
    assert message in compile_error_for(text)


def test_an_unknown_name_fails_in_resolve() -> None:
    assert "unknown name 'colour'" in compile_error_for("colour = 'red'")


def test_a_bare_value_is_not_a_condition() -> None:
    with pytest.raises(QueryError, match="is a value, not a condition"):
        compile_expression(Literal(1), resolve)


# --- Properties -------------------------------------------------------------------------------------

numbers_table = sa.Table("numbers", metadata, sa.Column("n", sa.Integer))
NUMBERS = range(-30, 131)


@pytest.fixture(scope="module")
def numbers(engine: sa.Engine) -> sa.Engine:
    with engine.begin() as connection:
        connection.execute(numbers_table.insert(), [{"n": n} for n in NUMBERS])
    return engine


def select_numbers(engine: sa.Engine, text: str, bind: dict[str, Any] | None = None) -> set[int]:
    clause = compile_where(text, lambda name: numbers_table.c[name], bind)
    with engine.connect() as connection:
        return set(connection.scalars(sa.select(numbers_table.c.n).where(clause)))


ranges = st.builds(
    lambda start, length, stride: (start, start + length, stride),
    st.integers(-40, 140),
    st.integers(0, 60),
    st.integers(1, 7),
)
in_items = st.lists(st.one_of(st.integers(-40, 140), ranges), min_size=1, max_size=6)


def in_list(items: list[Any]) -> tuple[str, set[int]]:
    """The IN list as text, and the integers it contains."""
    texts, members = [], set()
    for item in items:
        if isinstance(item, tuple):
            start, stop, stride = item
            texts.append(f"{start}..{stop}" + (f":{stride}" if stride > 1 else ""))
            members.update(range(start, stop + 1, stride))
        else:
            texts.append(str(item))
            members.add(item)
    return ", ".join(texts), members


@settings(max_examples=150, deadline=None)
@given(items=in_items, negated=st.booleans())
def test_in_lists_with_ranges_select_what_python_filtering_selects(
    numbers: sa.Engine, items: list[Any], negated: bool
) -> None:
    text, members = in_list(items)
    expression = f"n {'NOT ' if negated else ''}IN ({text})"
    expected = {n for n in NUMBERS if (n in members) != negated}
    assert select_numbers(numbers, expression) == expected


@settings(max_examples=100, deadline=None)
@given(
    values=st.lists(st.integers(-40, 140), max_size=10), low=st.integers(-40, 140), high=st.integers(-40, 140)
)
def test_bound_lists_and_between_select_what_python_filtering_selects(
    numbers: sa.Engine, values: list[int], low: int, high: int
) -> None:
    expected = {n for n in NUMBERS if n in values or low <= n <= high}
    assert (
        select_numbers(
            numbers, "n IN (:values) OR n BETWEEN :low AND :high", dict(values=values, low=low, high=high)
        )
        == expected
    )


@settings(max_examples=100, deadline=None)
@given(
    op=st.sampled_from(["=", "!=", "<>", "<", "<=", ">", ">="]),
    value=st.integers(-40, 140),
    flip=st.booleans(),
)
def test_comparisons_select_what_python_comparisons_select(
    numbers: sa.Engine, op: str, value: int, flip: bool
) -> None:
    compare = {
        "=": operator.eq,
        "!=": operator.ne,
        "<>": operator.ne,
        "<": operator.lt,
        "<=": operator.le,
        ">": operator.gt,
        ">=": operator.ge,
    }[op]
    expression = f"{value} {op} n" if flip else f"n {op} {value}"
    expected = {n for n in NUMBERS if (compare(value, n) if flip else compare(n, value))}
    assert select_numbers(numbers, expression) == expected


@settings(max_examples=300, deadline=None)
@given(
    text=st.text(alphabet=st.sampled_from(list("visit band0123 .,:;'\"()=<>!-*/TNOADRIBEW\n")), max_size=40)
)
def test_any_text_either_parses_or_raises_query_error(text: str) -> None:
    try:
        parse(text)
    except QueryError as error:
        assert str(error).startswith("Invalid query expression: ")


# --- The forms daf_butler users write ----------------------------------------------------------------

MJD_EPOCH = datetime.datetime(1858, 11, 17)
TAI_MINUS_UTC = datetime.timedelta(seconds=37)  # since 2017


@pytest.mark.parametrize(
    ("text", "tree"),
    [
        ("visit + 1 = 3", Compare("=", Arithmetic("+", visit, Literal(1)), Literal(3))),
        (
            "visit + detector * 2 = 3",
            Compare("=", Arithmetic("+", visit, Arithmetic("*", detector, Literal(2))), Literal(3)),
        ),
        ("(visit + 1) % 2 = 0", Compare("=", Arithmetic("%", Arithmetic("+", visit, Literal(1)), Literal(2)), Literal(0))),
        ("-visit = -3", Compare("=", Negate(visit), Literal(-3))),
        ("+visit = +3", Compare("=", visit, Literal(3))),
        ("visit - -1 = 2", Compare("=", Arithmetic("-", visit, Literal(-1)), Literal(2))),
        (
            "visit.region OVERLAPS POINT(150.5, -2)",
            Overlaps(Identifier("visit.region"), ShapeCall("POINT", (Literal(150.5), Literal(-2)))),
        ),
        (
            "patch.region overlaps circle(:ra, dec, 0.1)",
            Overlaps(Identifier("patch.region"), ShapeCall("CIRCLE", (BindParam("ra"), Identifier("dec"), Literal(0.1)))),
        ),
        ("visit.region OVERLAPS :r", Overlaps(Identifier("visit.region"), BindParam("r"))),
        (
            "visit.timespan OVERLAPS (T'2026-01-01', T'2026-01-02')",
            Overlaps(
                Identifier("visit.timespan"),
                TimeRange(Literal(datetime.datetime(2026, 1, 1)), Literal(datetime.datetime(2026, 1, 2))),
            ),
        ),
        ("visit.timespan.begin < T'2026-01-01'", Compare("<", Identifier("visit.timespan.begin"), Literal(datetime.datetime(2026, 1, 1)))),
        ("glob(band, 'r*')", Glob(band, Literal("r*"))),
        ("GLOB(band, :p)", Glob(band, BindParam("p"))),
        (
            "id = UUID('0193a4f1-7a3e-7c1e-9b0c-1d2e3f405162')",
            Compare("=", Identifier("id"), Literal(uuid.UUID("0193a4f1-7a3e-7c1e-9b0c-1d2e3f405162"))),
        ),
        ("903334 IN (visit, exposure)", In(Literal(903334), (visit, Identifier("exposure")))),
        (":v IN (1, 2)", In(BindParam("v"), (Literal(1), Literal(2)))),
        ("visit = my_visit", Compare("=", visit, Identifier("my_visit"))),
    ],
)
def test_daf_butler_forms_parse_to_their_nodes(text: str, tree: Any) -> None:
    assert parse(text) == tree


@pytest.mark.parametrize(
    ("written", "value"),
    [
        ("T'61000.0'", MJD_EPOCH + datetime.timedelta(days=61000) - TAI_MINUS_UTC),  # an MJD is TAI
        ("T'mjd/61000.0'", MJD_EPOCH + datetime.timedelta(days=61000) - TAI_MINUS_UTC),
        ("T'61000.5/tai'", MJD_EPOCH + datetime.timedelta(days=61000.5) - TAI_MINUS_UTC),
        ("T'mjd/61000.0/utc'", MJD_EPOCH + datetime.timedelta(days=61000)),
        ("T'2026-03-15T06:00:00/tai'", datetime.datetime(2026, 3, 15, 6) - TAI_MINUS_UTC),
        ("T'2026-03-15 06:00:00'", datetime.datetime(2026, 3, 15, 6)),
        ("T'isot/2026-03-15T06:00:00/utc'", datetime.datetime(2026, 3, 15, 6)),
    ],
)
def test_time_literals_read_mjd_formats_and_scales_as_daf_butler(written: str, value: datetime.datetime) -> None:
    tree = parse(f"x = {written}")
    assert isinstance(tree, Compare) and isinstance(tree.right, Literal)
    assert abs(tree.right.value - value) < datetime.timedelta(milliseconds=1)  # type: ignore[operator]


@pytest.mark.parametrize(
    ("text", "message", "column"),
    [
        ("visit = 99999999999999999999", "integer 99999999999999999999 does not fit a 64-bit column", 9),
        ("e > 1e999", "number 1e999 is too large", 5),
        ("t > T'61000.0/martian'", "unknown time scale 'martian'", 5),
        ("t > T'2026-01-01T00:00:00+01:00/tai'", "a UTC offset and a time scale cannot both be given", 5),
        ("id = UUID('not-a-uuid')", "'not-a-uuid' is not a UUID", 11),
        ("id = UUID(1)", "UUID() takes a string literal", 6),
        ("visit.region OVERLAPS POINT(1)", "POINT() takes 2 arguments (ra, dec), got 1", 23),
        ("visit.region OVERLAPS CIRCLE(1, 2)", "CIRCLE() takes 3 arguments (ra, dec, radius), got 2", 23),
        ("visit.region OVERLAPS POLYGON(1, 2, 3, 4, 5)", "POLYGON() takes ra, dec pairs of at least 3 vertices", 23),
        ("glob('r*', band)", "glob() takes a name first", 1),
        ("glob(band, 1)", "glob() takes a string pattern second", 1),
        ("visit.timespan OVERLAPS (T'2026-01-01', T'2026-01-02', T'2026-01-03')", "a time range has two items", 54),
        ("visit +", "expected a value after '+'", 8),
        ("(visit = 1, 2) = 3", "expected ')' after the condition", 11),
    ],
)
def test_errors_in_the_new_forms_point_at_the_problem(text: str, message: str, column: int) -> None:
    error = error_for(text)
    first, shown, caret = error.splitlines()
    assert message in first
    assert f"at column {column}" in first
    assert caret == " " * (column + 1) + "^"


# A table of visits with timespans, regions, ids and ingest dates, and a resolver like the registry's.

sky = sa.MetaData()
visits = sa.Table(
    "visits",
    sky,
    sa.Column("visit", sa.BigInteger),
    sa.Column("band", sa.String(128)),
    sa.Column("physical_filter", sa.String(128)),
    sa.Column("timespan_begin", sa.DateTime),
    sa.Column("timespan_end", sa.DateTime),
    sa.Column("exposure_time", sa.Float),
    sa.Column("id", sa.Uuid),
    sa.Column("ingest_date", sa.DateTime),
)
T0 = datetime.datetime(2026, 3, 15)
HOUR = datetime.timedelta(hours=1)
SKY_ROWS = [
    dict(
        visit=v,
        band="gri"[v % 3],
        physical_filter=["HSC-G", "HSC-R2", "hsc-i", "HSC_I", "HSC%Z", "HSC[Y]"][v % 6],
        timespan_begin=T0 + v * HOUR,
        timespan_end=T0 + (v + 1) * HOUR,  # end exclusive: visit v covers [v h, v+1 h)
        exposure_time=30.0 * (1 + v % 2),
        id=uuid.UUID(int=v + 1),
        ingest_date=T0 + v * 24 * HOUR,
    )
    for v in range(12)
]
REGIONS = {row["visit"]: Region.from_box(10.5 + row["visit"], 0.0, 1.0, 1.0) for row in SKY_ROWS}  # side by side


class Resolver:
    """Names to columns of ``visits``; regions by Python geometry (the registry uses its overlap tables)."""

    def __init__(self) -> None:
        self.asked: list[tuple[str, Any]] = []

    def __call__(self, name: str) -> sa.ColumnElement[Any]:
        column = name.removeprefix("visit.")
        if column in visits.c:
            return visits.c[column]
        raise QueryError(f"Unknown name {name!r} in query expression")

    def region_overlaps(self, element: str, shape: Any) -> sa.ColumnElement[bool]:
        self.asked.append((element, shape))
        return visits.c.visit.in_([v for v, region in REGIONS.items() if region.overlaps(shape)])


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def sky_engine(request: pytest.FixtureRequest) -> Iterator[sa.Engine]:
    """The visits on SQLite, and on PostgreSQL in a schema of their own: every answer must agree."""
    if request.param == "sqlite":
        engine = sa.create_engine("sqlite://")
        sky.create_all(engine)
        with engine.begin() as connection:
            connection.execute(visits.insert(), SKY_ROWS)
        yield engine
        engine.dispose()
        return
    base = request.getfixturevalue("pg_engine")
    schema = f"t_{uuid.uuid4().hex[:12]}"
    with base.begin() as connection:
        connection.execute(sa.schema.CreateSchema(schema))
    engine = base.execution_options(schema_translate_map={None: schema})
    try:
        sky.create_all(engine)
        with engine.begin() as connection:
            connection.execute(visits.insert(), SKY_ROWS)
        yield engine
    finally:
        with base.begin() as connection:
            connection.execute(sa.schema.DropSchema(schema, cascade=True))


def visits_where(engine: sa.Engine, text: str, bind: dict[str, Any] | None = None, resolve: Any = None) -> set[int]:
    clause = compile_where(text, resolve or Resolver(), bind)
    with engine.connect() as connection:
        return set(connection.scalars(sa.select(visits.c.visit).where(clause)))


def visits_with(predicate: Callable[[dict[str, Any]], bool]) -> set[int]:
    return {row["visit"] for row in SKY_ROWS if predicate(row)}


def at(hours: float) -> str:
    return f"T'{(T0 + hours * HOUR).isoformat()}'"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # A time t overlaps [begin, end) when begin <= t < end.
        (f"visit.timespan OVERLAPS {at(3)}", {3}),
        (f"visit.timespan OVERLAPS {at(3.5)}", {3}),
        (f"{at(3)} OVERLAPS visit.timespan", {3}),
        # A range [t1, t2) when begin < t2 and end > t1: ranges that only touch do not overlap.
        (f"visit.timespan OVERLAPS ({at(3)}, {at(5)})", {3, 4}),
        (f"visit.timespan OVERLAPS ({at(2.5)}, {at(5.5)})", {2, 3, 4, 5}),
        (f"visit.timespan OVERLAPS ({at(5)}, {at(3)})", set()),  # empty
        (f"visit.timespan OVERLAPS ({at(3)}, {at(3)})", set()),
        (f"NOT visit.timespan OVERLAPS ({at(1)}, {at(11)})", {0, 11}),
        (f"visit.timespan.begin >= {at(10)}", {10, 11}),
        (f"visit.timespan.end <= {at(2)}", {0, 1}),
        (f"timespan OVERLAPS {at(7)}", {7}),
        (f"visit.timespan OVERLAPS (visit.timespan.begin, {at(1)})", {0}),
    ],
)
def test_timespans_overlap_as_half_open_ranges(sky_engine: sa.Engine, text: str, expected: set[int]) -> None:
    assert visits_where(sky_engine, text) == expected


def test_a_bound_time_or_time_range_overlaps_like_a_literal(sky_engine: sa.Engine) -> None:
    from astropy.time import Time

    assert visits_where(sky_engine, "visit.timespan OVERLAPS :t", {"t": T0 + 4 * HOUR}) == {4}
    assert visits_where(sky_engine, "visit.timespan OVERLAPS t", {"t": Time(T0 + 4 * HOUR, scale="utc")}) == {4}
    assert visits_where(sky_engine, "visit.timespan OVERLAPS :r", {"r": (T0 + 4 * HOUR, T0 + 6 * HOUR)}) == {4, 5}
    assert "after OVERLAPS a bound time range is (begin, end)" in compile_error_for_sky(
        "visit.timespan OVERLAPS :r", {"r": [T0, T0, T0]}
    )


def compile_error_for_sky(text: str, bind: dict[str, Any] | None = None, resolve: Any = None) -> str:
    with pytest.raises(QueryError) as info:
        compile_where(text, resolve or Resolver(), bind)
    return str(info.value)


@pytest.mark.parametrize(
    ("text", "bind", "expected"),
    [
        ("visit.region OVERLAPS POINT(15.5, 0.2)", {}, {5}),
        ("visit.region OVERLAPS POINT(15.0, 0.2)", {}, set()),  # on the edge between visits 4 and 5
        ("visit.region OVERLAPS POINT(ra, dec)", {"ra": 15.5, "dec": 0.2}, {5}),
        ("visit.region OVERLAPS POINT(:ra, :dec)", {"ra": 15.5, "dec": 0.2}, {5}),
        ("visit.region OVERLAPS CIRCLE(15.0, 0.0, 0.6)", {}, {4, 5}),
        ("visit.region OVERLAPS CIRCLE(15.0, 0.0, 1.6)", {}, {3, 4, 5, 6}),
        ("visit.region OVERLAPS BOX(15.0, 0.0, 2.0, 0.5)", {}, {4, 5}),  # its edges at 14 and 16 only touch
        ("visit.region OVERLAPS POLYGON(14.2, -0.1, 16.8, -0.1, 16.8, 0.1, 14.2, 0.1)", {}, {4, 5, 6}),
        ("visit.region OVERLAPS :r", {"r": Region.from_box(12.5, 0.0, 0.5, 0.5)}, {2}),
        ("visit.region OVERLAPS r AND visit > 2", {"r": Circle(12.5, 0.0, 1.0)}, {3}),
        ("POINT(15.5, 0.2) OVERLAPS visit.region", {}, {5}),
        ("visit.region OVERLAPS POINT(-345 + 0.5, 0.2)", {}, {5}),  # arithmetic of numbers is allowed
    ],
)
def test_region_predicates_reach_the_resolver_with_the_shape(
    sky_engine: sa.Engine, text: str, bind: dict[str, Any], expected: set[int]
) -> None:
    assert visits_where(sky_engine, text, bind) == expected


def test_the_resolver_is_asked_for_the_element_and_the_shape() -> None:
    resolver = Resolver()
    compile_where("visit_detector_region.region OVERLAPS CIRCLE(1, 2, 0.5)", resolver)
    assert resolver.asked == [("visit_detector_region", Circle(1.0, 2.0, 0.5))]


def test_region_predicates_without_a_resolver_method_are_an_error_with_a_caret() -> None:
    assert compile_error_for_sky("band = 'r' AND visit.region OVERLAPS POINT(1, 2)", resolve=Resolver().__call__) == (
        "Invalid query expression: region predicates are not supported here at column 29\n"
        "  band = 'r' AND visit.region OVERLAPS POINT(1, 2)\n"
        "                              ^"
    )


@pytest.mark.parametrize(
    ("text", "bind", "message"),
    [
        ("visit.region OVERLAPS CIRCLE(1, 2, -1)", {}, "CIRCLE(): A circle's radius must be in (0, 180]"),
        ("visit.region OVERLAPS POINT(1, 95)", {}, "POINT(): A point has dec=95.0, outside [-90, 90]"),
        ("visit.region OVERLAPS POLYGON(0, 0, 1, 1, 1, 0, 0, 1)", {}, "POLYGON() needs the vertices of a convex"),
        ("visit.region OVERLAPS POINT(ra, 1)", {}, "POINT() takes numbers or bind values; 'ra' is not in bind"),
        ("visit.region OVERLAPS POINT(:ra, 1)", {"ra": "north"}, "POINT() takes numbers (degrees), not :ra"),
        ("visit.region OVERLAPS 5", {}, "OVERLAPS with a region needs a shape"),
        ("visit.region OVERLAPS visit.region", {}, "a query joins regions of the dimensions it spans by itself"),
        ("visit.region = 1", {}, "visit.region can only be used with OVERLAPS"),
        ("visit = POINT(1, 2)", {}, "POINT(...) is a sky shape; compare it with a region using OVERLAPS"),
        ("visit.timespan = T'2026-01-01'", {}, "visit.timespan is a time range: compare visit.timespan.begin"),
        ("visit.timespan OVERLAPS 5", {}, "5 is none of these"),
        ("visit.timespan.begin OVERLAPS T'2026-01-01'", {}, "OVERLAPS needs a time range on one side"),
        ("visit.timespan OVERLAPS (1, 2)", {}, "a time range holds times such as T'2026-01-01T00:00:00', not 1"),
        ("visit IN (visit.timespan)", {}, "an IN list holds single values, not visit.timespan"),
    ],
)
def test_misused_regions_and_timespans_are_clear_errors(text: str, bind: dict[str, Any], message: str) -> None:
    first = compile_error_for_sky(text, bind).splitlines()[0]
    assert first.startswith("Invalid query expression: ")
    assert message in first


@pytest.mark.parametrize(
    ("pattern", "matches"),
    [
        ("HSC-*", {"HSC-G", "HSC-R2"}),
        ("HSC-?", {"HSC-G"}),  # case-sensitive: not hsc-i
        ("hsc-*", {"hsc-i"}),
        ("HSC_I", {"HSC_I"}),  # _ and % are plain characters
        ("HSC%Z", {"HSC%Z"}),
        ("HSC[Y]", {"HSC[Y]"}),  # so are brackets
        ("*", {"HSC-G", "HSC-R2", "hsc-i", "HSC_I", "HSC%Z", "HSC[Y]"}),
        ("HSC", set()),
    ],
)
def test_glob_matches_star_and_question_mark_only(sky_engine: sa.Engine, pattern: str, matches: set[str]) -> None:
    assert visits_where(sky_engine, f"glob(physical_filter, '{pattern}')") == visits_with(
        lambda r: r["physical_filter"] in matches
    )
    assert visits_where(sky_engine, "glob(physical_filter, :p)", {"p": pattern}) == visits_with(
        lambda r: r["physical_filter"] in matches
    )


def test_glob_needs_a_string_column() -> None:
    assert "glob() needs a column of strings, but visit is not one" in compile_error_for_sky("glob(visit, '1*')")


@pytest.mark.parametrize(
    ("text", "predicate"),
    [
        ("visit + 1 = 4", lambda r: r["visit"] == 3),
        ("visit % 3 = 1", lambda r: r["visit"] % 3 == 1),
        ("visit * 2 - 1 > 15", lambda r: r["visit"] * 2 - 1 > 15),
        ("visit / 4 = 2.5", lambda r: r["visit"] == 10),  # true division on both databases
        ("visit / 0 = 1", lambda r: False),  # NULL on both databases, not an error
        ("-visit < -9", lambda r: r["visit"] > 9),
        ("exposure_time * 2 >= visit.exposure_time + 30", lambda r: r["exposure_time"] >= 30),
        ("2 * 3 = visit", lambda r: r["visit"] == 6),
    ],
)
def test_arithmetic_selects_what_python_arithmetic_selects(sky_engine: sa.Engine, text: str, predicate: Any) -> None:
    assert visits_where(sky_engine, text) == visits_with(predicate)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("visit = 1 / 0", "division by zero in 1 / 0"),
        ("band + 1 = 2", "'+' needs numbers on both sides, but band is not a number"),
        ("exposure_time % 2 = 0", "'%' needs integers on both sides, but exposure_time is not an integer"),
        ("-band = 'r'", "unary minus needs a number, not band"),
        ("visit = 9223372036854775807 + 1", "does not fit a 64-bit integer"),
    ],
)
def test_arithmetic_on_what_is_not_a_number_is_an_error(text: str, message: str) -> None:
    assert message in compile_error_for_sky(text)


def test_uuid_literals_and_ingest_dates_compare_with_their_columns(sky_engine: sa.Engine) -> None:
    assert visits_where(sky_engine, f"id = UUID('{uuid.UUID(int=4)}')") == {3}
    assert visits_where(sky_engine, "id IN (UUID('00000000-0000-0000-0000-000000000001'), :u)", {"u": uuid.UUID(int=2)}) == {0, 1}
    assert visits_where(sky_engine, f"ingest_date >= {at(24 * 10)}") == {10, 11}
    assert visits_where(sky_engine, "ingest_date <= T'mjd/61114.0/utc'") == {0}  # 2026-03-15T00:00
    assert "write UUID('00000000-0000-0000-0000-000000000004')" in compile_error_for_sky(
        f"id = '{uuid.UUID(int=4)}'"
    )
    assert "ingest_date holds times, but it is compared with 5" in compile_error_for_sky("ingest_date > 5")


def test_a_literal_or_bind_may_stand_left_of_in(sky_engine: sa.Engine) -> None:
    assert visits_where(sky_engine, "3 IN (visit, exposure_time)") == {3}
    assert visits_where(sky_engine, "60 IN (visit, exposure_time)") == visits_with(lambda r: r["exposure_time"] == 60)
    assert visits_where(sky_engine, ":v IN (1, 2, 5..9)", {"v": 7}) == visits_with(lambda r: True)
    assert visits_where(sky_engine, ":v IN (1, 2, 5..9:2)", {"v": 6}) == set()
    assert visits_where(sky_engine, "v NOT IN (vs)", {"v": 1, "vs": [2, 3]}) == visits_with(lambda r: True)


def test_a_bare_name_in_bind_is_a_bind_but_a_column_wins_a_clash(sky_engine: sa.Engine) -> None:
    assert visits_where(sky_engine, "visit = my_visit", {"my_visit": 4}) == {4}
    assert visits_where(sky_engine, "visit IN (my_visits)", {"my_visits": [4, 5]}) == {4, 5}
    # "visit" names the column, so bind={"visit": ...} is used only through :visit.
    assert visits_where(sky_engine, "visit = :visit", {"visit": 4}) == {4}
    assert visits_where(sky_engine, "visit = visit", {"visit": 4}) == visits_with(lambda r: True)
    assert "both sides are values" in compile_error_for_sky("a = b", {"a": 1, "b": 1})


def test_values_postgresql_could_not_hold_are_refused_on_every_database() -> None:
    assert "holds a NUL character, which no band can hold" in compile_error_for_sky("band = :b", {"b": "r\x00"})
    assert "band holds strings of at most 128 characters, but :b has 129" in compile_error_for_sky(
        "band IN (:b)", {"b": ["r", "x" * 129]}
    )
    assert "bind parameter ':v' is 36893488147419103232, which does not fit a 64-bit column" in (
        compile_error_for_sky("visit IN (:v)", {"v": [1, 2**65]})
    )


# --- Long lists: one array parameter on PostgreSQL, inline literals past SQLite's limit ---------------

LONG = list(range(0, 200_000, 2))  # 100,000 values


def long_list_answers(engine: sa.Engine, table: sa.Table, literal_list: Any) -> dict[str, set[int]]:
    resolve = lambda name: table.c[name]  # noqa: E731
    clauses = {
        "bound": compile_where("visit IN (:v)", resolve, {"v": LONG}),
        "negated": compile_where("visit NOT IN (:v) AND visit < 40", resolve, {"v": LONG}),
        "strings": compile_where("band IN (:b)", resolve, {"b": [f"b{n}" for n in LONG]}),
        "literals": compile_expression(literal_list, resolve),
    }
    with engine.connect() as connection:
        return {key: set(connection.scalars(sa.select(table.c.visit).where(clause))) for key, clause in clauses.items()}


def long_list_table(metadata: sa.MetaData) -> sa.Table:
    return sa.Table("long_lists", metadata, sa.Column("visit", sa.BigInteger), sa.Column("band", sa.String(128)))


LONG_ROWS = [{"visit": n, "band": f"b{n}"} for n in range(0, 3000, 3)]


def test_a_list_of_100000_values_gives_the_same_answer_on_postgresql_as_on_sqlite(
    pg_engine: sa.Engine, pg_namespace: str
) -> None:
    # 70,000 literals: more than PostgreSQL's 65,535 parameters, fewer to keep the test quick (parsing costs).
    literal_list = parse("visit IN (" + ", ".join(map(str, LONG[:70_000])) + ")")
    answers = {}
    for name, engine, schema in [("sqlite", sa.create_engine("sqlite://"), None), ("postgresql", pg_engine, pg_namespace)]:
        metadata = sa.MetaData(schema=schema)
        table = long_list_table(metadata)
        with engine.begin() as connection:
            if schema:
                connection.execute(sa.schema.CreateSchema(schema))
        metadata.create_all(engine)
        with engine.begin() as connection:
            connection.execute(table.insert(), LONG_ROWS)
        answers[name] = long_list_answers(engine, table, literal_list)
    expected = {n["visit"] for n in LONG_ROWS if n["visit"] % 2 == 0}
    assert answers["sqlite"]["bound"] == expected
    assert answers["sqlite"]["negated"] == {n for n in range(0, 40, 3) if n % 2}
    assert answers["sqlite"]["strings"] == expected
    assert answers["sqlite"]["literals"] == {n for n in expected if n < 140_000}
    assert answers["postgresql"] == answers["sqlite"]


def test_postgresql_gets_one_array_parameter_and_sqlite_inline_values_for_a_long_list() -> None:
    column = sa.table("t", sa.column("visit", sa.BigInteger)).c.visit
    clause = compile_where("visit IN (:v)", lambda name: column, {"v": LONG})
    assert clause is not None
    postgres = clause.compile(dialect=sa.dialects.postgresql.psycopg.dialect())
    assert "= ANY (" in str(postgres) and len(postgres.params) == 1
    sqlite = str(clause.compile(dialect=sa.dialects.sqlite.dialect()))
    assert "POSTCOMPILE" in sqlite  # expanded at execution, inline (SQLite allows 32,766 parameters by default)


def test_a_nul_character_never_reaches_postgresql(pg_engine: sa.Engine) -> None:
    column = sa.table("t", sa.column("band", sa.String(128))).c.band
    with pytest.raises(QueryError, match="NUL character"):
        compile_where("band = :b", lambda name: column, {"b": "r\x00"})


@pytest.mark.parametrize(
    ("column", "wanted", "decoys"),
    [
        ("id", [uuid.UUID(int=3), uuid.UUID(int=5)], [uuid.UUID(int=10_000 + n) for n in range(2000)]),
        ("timespan_begin", [T0 + 3 * HOUR], [T0 + n * datetime.timedelta(seconds=1.5) + 100 * HOUR for n in range(2000)]),
        ("exposure_time", [60.0], [0.25 + n for n in range(2000)]),
        ("band", ["g"], [f"it's {n}" for n in range(2000)]),
    ],
)
def test_long_lists_of_every_column_type_match_on_both_databases(
    sky_engine: sa.Engine, column: str, wanted: list[Any], decoys: list[Any]
) -> None:
    assert visits_where(sky_engine, f"{column} IN (:values)", {"values": decoys + wanted}) == visits_with(
        lambda r: r[column] in wanted
    )


def test_the_resolvers_own_region_errors_point_at_overlaps() -> None:
    class NoRegions(Resolver):
        def region_overlaps(self, element: str, shape: Any) -> sa.ColumnElement[bool]:
            raise QueryError(f"{element!r} has no region")

    assert compile_error_for_sky("band = 'r' OR band.region OVERLAPS POINT(1, 2)", resolve=NoRegions()).splitlines() == [
        "'band' has no region at column 27",
        "  band = 'r' OR band.region OVERLAPS POINT(1, 2)",
        "                            ^",
    ]
