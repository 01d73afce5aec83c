"""Tables as Parquet: identity in schema metadata, reading only the columns and row groups asked for."""

from __future__ import annotations

import io
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from skybutler.errors import FormatError
from skybutler.formats import ParquetFormatter

from .conftest import ByteCountingFile, from_bytes, to_bytes


@pytest.fixture(scope="module")
def large_table() -> pa.Table:
    rng = np.random.default_rng(1)
    rows = 4 * ParquetFormatter.row_group_size
    return pa.table({name: rng.random(rows) for name in ("ra", "dec", "flux", "flux_err")})


def test_identity_is_in_the_schema_metadata_under_skybutler(identity):
    data = to_bytes(ParquetFormatter(), pa.table({"a": [1]}), identity)
    metadata = pq.read_schema(io.BytesIO(data)).metadata
    assert json.loads(metadata[b"skybutler"]) == identity


def test_identity_is_not_in_the_table_read_back_and_user_metadata_is_kept(identity):
    table = pa.table({"a": [1]}).replace_schema_metadata({"origin": "fgcm"})
    back = from_bytes(ParquetFormatter(), to_bytes(ParquetFormatter(), table, identity))
    assert back.schema.metadata == {b"origin": b"fgcm"}


def test_no_identity_reads_as_none():
    data = to_bytes(ParquetFormatter(), pa.table({"a": [1]}), {})
    assert ParquetFormatter().read_identity(io.BytesIO(data)) is None


def test_columns_reads_only_those_columns(large_table):
    fileobj = ByteCountingFile(to_bytes(ParquetFormatter(), large_table))
    part = ParquetFormatter().read(fileobj, parameters={"columns": ["flux"]})
    assert part.equals(large_table.select(["flux"]))
    assert fileobj.bytes_read < 0.4 * len(fileobj.getvalue())


def test_rows_reads_only_the_row_groups_that_hold_them(large_table):
    fileobj = ByteCountingFile(to_bytes(ParquetFormatter(), large_table))
    start = ParquetFormatter.row_group_size + 10
    part = ParquetFormatter().read(fileobj, parameters={"rows": (start, start + 100)})
    assert part.equals(large_table.slice(start, 100))
    assert fileobj.bytes_read < 0.4 * len(fileobj.getvalue())


def test_rows_across_row_groups_and_past_the_end(large_table):
    data = to_bytes(ParquetFormatter(), large_table)
    size = ParquetFormatter.row_group_size
    across = from_bytes(ParquetFormatter(), data, rows=(size - 5, size + 5), columns=["ra", "dec"])
    assert across.equals(large_table.select(["ra", "dec"]).slice(size - 5, 10))
    assert from_bytes(ParquetFormatter(), data, rows=(large_table.num_rows - 1, 10**9)).num_rows == 1
    beyond = from_bytes(ParquetFormatter(), data, rows=(10**9, 10**9 + 5), columns=["dec"])
    assert beyond.num_rows == 0
    assert beyond.column_names == ["dec"]


@pytest.mark.parametrize(
    ("parameters", "message"),
    [
        ({"columns": ["mag"]}, "unknown column 'mag'; the table has a, b"),
        ({"columns": "a"}, "columns must be a list of column names"),
        ({"rows": (5, 2)}, r"rows must satisfy 0 <= start <= stop; got \(5, 2\)"),
        ({"rows": (-1, 2)}, "rows must satisfy 0 <= start <= stop"),
        ({"rows": 3}, "rows must be two integers"),
        ({"bbox": (0, 1, 0, 1)}, "unknown read parameter 'bbox' for parquet tables; allowed: columns, rows"),
    ],
)
def test_bad_read_parameters_are_refused_clearly(parameters, message):
    data = to_bytes(ParquetFormatter(), pa.table({"a": [1, 2], "b": ["x", "y"]}))
    with pytest.raises(FormatError, match=message):
        from_bytes(ParquetFormatter(), data, **parameters)
