"""The registry: SQL on SQLite or PostgreSQL (the only layer that runs SQL)."""

from ._datasets import FileRecord
from ._db import normalise_url, sqlite_file
from ._expr_sql import compile_expression, compile_where
from ._migrate import MigrationStep, upgrade
from ._query_results import DataIdQueryResults, DatasetQueryResults
from ._registry import Registry
from ._values import tuple_getter
from .expr import parse as parse_expression
from .origin_sql import DatasetOrigin
from .queries import find_dataset, query_data_ids, query_datasets

__all__ = ["DataIdQueryResults", "DatasetOrigin", "DatasetQueryResults", "FileRecord", "MigrationStep", "Registry",
           "compile_expression", "compile_where", "find_dataset", "normalise_url", "parse_expression", "query_data_ids",
           "query_datasets", "sqlite_file", "tuple_getter", "upgrade"]
