"""SQL constructs of the ``where`` compiler that differ by database.

Value lists are one array parameter on PostgreSQL (``column = ANY(:values)``) and, on
SQLite, inline literals past its parameter limit; glob matches are SQLite's GLOB and
LIKE elsewhere (both case-sensitive).
"""

from __future__ import annotations

import re
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.compiler import compiles

__all__ = ["GlobMatch", "ValueList"]

# SQLite refuses statements with more parameters than its limit (32766 by default, less on
# older builds); above this many values a list is rendered inline by SQLAlchemy's literal
# processors.  PostgreSQL gets one array parameter however long the list.
_SQLITE_MAX_BOUND_VALUES = 1000


class ValueList(sa.sql.expression.ColumnElement[bool]):
    """``column IN (values)``, as one array parameter on PostgreSQL."""

    inherit_cache = False  # the values are data; a list of 100,000 must not become a cache key
    type = sa.Boolean()

    def __init__(self, column: sa.ColumnElement[Any], values: list[Any]):
        """Match ``column`` against ``values``, bound as its type."""
        self.column = column
        self.values = values


@compiles(ValueList)
def _compile_value_list(element: ValueList, compiler: Any, **kw: Any) -> str:
    values = element.values
    param = sa.bindparam(
        None,
        values,
        expanding=True,
        literal_execute=len(values) > _SQLITE_MAX_BOUND_VALUES,
        type_=element.column.type,
    )
    return str(compiler.process(element.column.in_(param), **kw))


@compiles(ValueList, "postgresql")
def _compile_value_list_postgresql(element: ValueList, compiler: Any, **kw: Any) -> str:
    array = sa.bindparam(None, list(element.values), type_=postgresql.ARRAY(element.column.type))
    return str(compiler.process(element.column == sa.any_(array), **kw))


class GlobMatch(sa.sql.expression.ColumnElement[bool]):
    """A case-sensitive wildcard match: SQLite's GLOB, LIKE elsewhere (case-sensitive on PostgreSQL)."""

    inherit_cache = False
    type = sa.Boolean()

    def __init__(self, column: sa.ColumnElement[Any], pattern: str):
        """Match ``column`` against ``pattern`` (``*`` any run of characters, ``?`` any one)."""
        self.column = column
        self.pattern = pattern


@compiles(GlobMatch)
def _compile_glob_like(element: GlobMatch, compiler: Any, **kw: Any) -> str:
    escaped = re.sub(r"([\\%_])", r"\\\1", element.pattern).replace("*", "%").replace("?", "_")
    return str(compiler.process(element.column.like(escaped, escape="\\"), **kw))


@compiles(GlobMatch, "sqlite")
def _compile_glob_sqlite(element: GlobMatch, compiler: Any, **kw: Any) -> str:
    # SQLite's LIKE ignores case; its GLOB does not, and only "[" needs escaping ("[[]").
    pattern = element.pattern.replace("[", "[[]")
    return f"{compiler.process(element.column, **kw)} GLOB {compiler.process(sa.bindparam(None, pattern), **kw)}"

