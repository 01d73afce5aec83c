"""Fuzzing the ``where`` language: any input compiles (and then runs) or is one clear QueryError.

Inputs are random token strings (mostly nonsense), random characters, and random
well-formed expressions.  Whatever comes in, the outcome is a SQL expression
that SQLite executes without complaint, or a `QueryError` whose message is one
line, optionally followed by the expression and a caret under the problem;
never another exception, never a driver error.
"""

from __future__ import annotations

import datetime
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from skybutler.dimensions.regions import Circle, Point, Region
from skybutler.errors import QueryError
from skybutler.registry import compile_where

metadata = sa.MetaData()
visits = sa.Table(
    "visits",
    metadata,
    sa.Column("visit", sa.BigInteger),
    sa.Column("detector", sa.BigInteger),
    sa.Column("band", sa.String(128)),
    sa.Column("exposure_time", sa.Float),
    sa.Column("timespan_begin", sa.DateTime),
    sa.Column("timespan_end", sa.DateTime),
    sa.Column("id", sa.Uuid),
    sa.Column("ingest_date", sa.DateTime),
    sa.Column("is_science", sa.Boolean),
)
T0 = datetime.datetime(2026, 3, 15)
ROWS = [
    dict(
        visit=v,
        detector=v % 4,
        band="gri"[v % 3],
        exposure_time=15.0 * v,
        timespan_begin=T0 + datetime.timedelta(hours=v),
        timespan_end=T0 + datetime.timedelta(hours=v + 1),
        id=uuid.UUID(int=v),
        ingest_date=T0,
        is_science=bool(v % 2),
    )
    for v in range(8)
]


class Resolver:
    """The columns of ``visits``, qualified by ``visit.`` or not, and regions by Python geometry."""

    def __call__(self, name: str) -> sa.ColumnElement[Any]:
        column = name.removeprefix("visit.")
        if column in visits.c:
            return visits.c[column]
        raise QueryError(f"Unknown name {name!r} in query expression; allowed: {', '.join(visits.c.keys())}")

    def region_overlaps(self, element: str, shape: Any) -> sa.ColumnElement[bool]:
        if element != "visit":
            raise QueryError(f"Unknown name '{element}.region' in query expression")
        regions = {v: Region.from_box(10.5 + v, 0.0, 1.0, 1.0) for v in range(8)}
        return visits.c.visit.in_([v for v, region in regions.items() if region.overlaps(shape)])


BIND = {
    "v": 3,
    "vs": [1, 2, 3],
    "big": 2**70,
    "empty": [],
    "b": "r",
    "nul": "r\x00",
    "t": T0,
    "span": (T0, T0 + datetime.timedelta(hours=2)),
    "r": Circle(12.0, 0.0, 1.0),
    "p": Point(12.5, 0.5),
    "u": uuid.UUID(int=3),
    "f": 2.5,
    "none": None,
    "obj": object(),
    "ra": 12.5,
    "dec": 0.2,
    "my_visit": 4,
}

TOKENS = [
    # names, qualified names, bind-like bare names, unknown names
    "visit", "detector", "band", "exposure_time", "visit.exposure_time", "visit.region", "visit.timespan",
    "visit.timespan.begin", "visit.timespan.end", "timespan", "id", "ingest_date", "is_science", "ra", "dec",
    "my_visit", "colour", "tract.region", "a.b.c",
    # keywords and functions
    "AND", "OR", "NOT", "IN", "BETWEEN", "OVERLAPS", "and", "not", "POINT", "CIRCLE", "BOX", "POLYGON", "glob",
    "UUID", "TRUE", "FALSE",
    # literals
    "0", "1", "3", "-3", "2.5", "1e3", "99999999999999999999", "1e999", "'r'", "'it''s'", "''", "'HSC-*'",
    "T'2026-03-15T02:00:00'", "T'61114.1'", "T'mjd/61114.1/tai'", "T'yesterday'", "T'2026-03-15/tai'",
    "'00000000-0000-0000-0000-000000000003'",
    # binds, present and missing
    ":v", ":vs", ":big", ":empty", ":b", ":nul", ":t", ":span", ":r", ":p", ":u", ":f", ":none", ":obj", ":missing",
    # punctuation
    "(", ")", ",", "=", "!=", "<>", "<", "<=", ">", ">=", "+", "-", "*", "/", "%", "..", ":",
]


@pytest.fixture(scope="module")
def engine() -> Iterator[sa.Engine]:
    engine = sa.create_engine("sqlite://")
    metadata.create_all(engine)
    with engine.begin() as connection:
        connection.execute(visits.insert(), ROWS)
    yield engine
    engine.dispose()


def outcome(engine: sa.Engine, text: str) -> str:
    """Compile and run ``text``; return "ran" or "refused", failing the test on anything else."""
    try:
        clause = compile_where(text, Resolver(), BIND)
    except QueryError as error:
        lines = str(error).splitlines()
        assert lines, text
        assert lines[0].startswith(("Invalid query expression: ", "Unknown name ")), (text, str(error))
        assert len(lines[0]) < 400, (text, lines[0])
        assert len(lines) in (1, 3), (text, str(error))
        if len(lines) == 3:
            assert lines[2].strip() == "^", (text, str(error))
        return "refused"
    with engine.connect() as connection:
        query = sa.select(visits.c.visit)
        if clause is not None:
            query = query.where(clause)
        connection.execute(query).all()  # a database error here is a bug in the compiler
    return "ran"


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.sampled_from(TOKENS), max_size=12))
def test_random_token_strings_compile_or_raise_one_query_error(engine: sa.Engine, tokens: list[str]) -> None:
    outcome(engine, " ".join(tokens))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(alphabet=st.sampled_from(list("visitbandT0123456789 .,:;'\"()=<>!-+*/%_\n\t\x00é")), max_size=40))
@example("T'\n'")  # a time literal holding a line break: its message quoted it raw, on two lines
def test_random_characters_compile_or_raise_one_query_error(engine: sa.Engine, text: str) -> None:
    outcome(engine, text)


# --- Well-formed expressions: each part of the grammar, combined at random ---------------------------

numbers = st.one_of(st.integers(-10, 10), st.floats(-100, 100, allow_nan=False).map(lambda f: round(f, 3)))
number_text = numbers.map(str)
times = st.integers(-48, 48).map(lambda h: f"T'{(T0 + datetime.timedelta(hours=h)).isoformat()}'")
integer_names = st.sampled_from(["visit", "detector", ":v", "my_visit"])
operand = st.one_of(
    st.sampled_from(["visit", "detector", "exposure_time", "visit.exposure_time", ":v", ":f", "my_visit"]),
    number_text,
    st.builds(lambda a, op, b: f"({a} {op} {b})", integer_names, st.sampled_from("+-*/%"), number_text),
)
comparison = st.builds(
    lambda a, op, b: f"{a} {op} {b}", operand, st.sampled_from(["=", "!=", "<>", "<", "<=", ">", ">="]), operand
)
in_list = st.builds(
    lambda a, neg, items: f"{a} {'NOT ' if neg else ''}IN ({', '.join(items)})",
    st.one_of(integer_names, st.integers(0, 8).map(str)),
    st.booleans(),
    st.lists(
        st.one_of(
            st.integers(-3, 10).map(str),
            st.sampled_from(["0..3", "2..7:2", ":vs", ":empty", "visit", "detector", "my_visit"]),
        ),
        min_size=1,
        max_size=5,
    ),
)
between = st.builds(lambda a, lo, hi: f"{a} BETWEEN {lo} AND {hi}", operand, operand, operand)
strings = st.builds(
    lambda op, s: f"band {op} {s}",
    st.sampled_from(["=", "!=", "<"]),
    st.sampled_from(["'r'", "'g'", ":b", "'x'", "1", "'it''s'"]),
)
globs = st.sampled_from(["glob(band, 'r*')", "glob(band, '?')", "glob(band, :b)", "glob(band, 'a%_[')"])
time_predicates = st.one_of(
    st.builds(lambda t: f"visit.timespan OVERLAPS {t}", times),
    st.builds(lambda a, b: f"visit.timespan OVERLAPS ({a}, {b})", times, times),
    st.builds(lambda op, t: f"visit.timespan.begin {op} {t}", st.sampled_from(["<", ">=", "="]), times),
    st.builds(lambda t: f"ingest_date < {t}", times),
    st.sampled_from(["visit.timespan OVERLAPS :t", "visit.timespan OVERLAPS :span", "timespan OVERLAPS t"]),
)
shapes = st.one_of(
    st.builds(lambda ra, dec: f"POINT({ra}, {dec})", st.floats(0, 360).map(str), st.floats(-90, 90).map(str)),
    st.builds(lambda r: f"CIRCLE(12, 0, {r})", st.floats(0.01, 5).map(str)),
    st.builds(lambda w: f"BOX(14, 0.5, {w}, 1)", st.floats(0.1, 10).map(str)),
    st.sampled_from(["POLYGON(12, 0, 14, 0, 13, 1)", ":r", "r", ":p", "POINT(ra, dec)", "POINT(:ra, -1 * :dec)"]),
)
region_predicates = st.builds(lambda s: f"visit.region OVERLAPS {s}", shapes)
uuids = st.sampled_from(["id = UUID('00000000-0000-0000-0000-000000000003')", "id = :u", "id IN (:u)"])
predicates = st.one_of(comparison, in_list, between, strings, globs, time_predicates, region_predicates, uuids)
expressions = st.recursive(
    predicates,
    lambda inner: st.one_of(
        st.builds(lambda a, op, b: f"{a} {op} {b}", inner, st.sampled_from(["AND", "OR"]), inner),
        inner.map(lambda e: f"NOT ({e})"),
        inner.map(lambda e: f"({e})"),
    ),
    max_leaves=6,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(expressions)
def test_well_formed_expressions_compile_and_run_or_raise_one_query_error(engine: sa.Engine, text: str) -> None:
    outcome(engine, text)


@settings(max_examples=1, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(expressions, min_size=40, max_size=40))
def test_the_well_formed_generator_mostly_produces_expressions_that_run(engine: sa.Engine, texts: list[str]) -> None:
    """The property above would pass vacuously if nearly everything were refused."""
    assert sum(outcome(engine, text) == "ran" for text in texts) > len(texts) // 2
