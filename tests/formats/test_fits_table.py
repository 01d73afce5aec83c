"""Tables as FITS binary tables."""

from __future__ import annotations

import io

import numpy as np
import pyarrow as pa
import pytest
from astropy.io import fits

from skybutler.errors import FormatError
from skybutler.formats import FitsFormatter

from .conftest import from_bytes, to_bytes


@pytest.fixture
def table() -> pa.Table:
    return pa.table(
        {
            "id": pa.array([1, 2, 3, 4], pa.int64()),
            "detector": pa.array([16, 16, 17, 17], pa.int32()),
            "flux": pa.array([1.5, -2.0, 3.25, 0.0], pa.float32()),
            "ra": [150.1, 150.2, 150.3, 150.4],
            "good": [True, False, True, True],
            "band": ["r", "i", "N921", ""],
            "shape": pa.array([[1.0, 0.0], [0.5, 0.5], [2.0, 1.0], [0.0, 0.0]], pa.list_(pa.float64(), 2)),
            "flags": pa.array([0, 1, 2, 65535], pa.uint16()),
        }
    )


def test_table_goes_in_hdu_1_with_identity_in_the_primary_header(table, identity):
    with fits.open(io.BytesIO(to_bytes(FitsFormatter(), table, identity))) as hdul:
        assert hdul[0].data is None
        assert hdul[0].header["SB_TYPE"] == identity["dataset_type"]
        assert isinstance(hdul[1], fits.BinTableHDU)
        assert hdul[1].columns.names == table.column_names


def test_column_types_round_trip(table):
    back = from_bytes(FitsFormatter(), to_bytes(FitsFormatter(), table))
    assert back.schema == table.schema
    assert back.equals(table)


def test_integer_nulls_round_trip_even_when_zero_and_extremes_are_values():
    table = pa.table({"n": pa.array([0, None, np.iinfo(np.int64).max, -1], pa.int64())})
    assert from_bytes(FitsFormatter(), to_bytes(FitsFormatter(), table)).equals(table)


def test_float_nulls_come_back_as_nan():
    back = from_bytes(FitsFormatter(), to_bytes(FitsFormatter(), pa.table({"x": [1.0, None]})))
    assert back.column("x").null_count == 0
    assert np.isnan(back.column("x").to_numpy()[1])


def test_integer_column_using_every_value_cannot_mark_nulls():
    table = pa.table({"b": pa.array([0, 255, None], pa.uint8())})
    with pytest.raises(FormatError, match="column 'b' .* none to mark nulls; use parquet"):
        to_bytes(FitsFormatter(), table)


@pytest.mark.parametrize(
    "column",
    [pa.array(["a", None]), pa.array([[1], [2, 3]]), pa.array([{"a": 1}, {"a": 2}]), pa.array([True, None])],
    ids=["null-string", "variable-list", "struct", "null-bool"],
)
def test_columns_fits_cannot_hold_are_refused_pointing_to_parquet(column):
    with pytest.raises(FormatError, match=r"column 'c' \(.*\) cannot be stored in a FITS table: .*; use parquet"):
        to_bytes(FitsFormatter(), pa.table({"c": column}))


def test_columns_and_rows_select_part_of_the_table(table):
    data = to_bytes(FitsFormatter(), table)
    part = from_bytes(FitsFormatter(), data, columns=["band", "id"], rows=(1, 3))
    assert part.equals(table.select(["band", "id"]).slice(1, 2))


def test_rows_past_the_end_are_clipped(table):
    data = to_bytes(FitsFormatter(), table)
    assert from_bytes(FitsFormatter(), data, rows=(3, 100)).num_rows == 1
    assert from_bytes(FitsFormatter(), data, rows=(10, 100)).num_rows == 0


def test_unknown_column_names_the_table_columns(table):
    with pytest.raises(FormatError, match="unknown column 'mag'; the table has id, detector, flux"):
        from_bytes(FitsFormatter(), to_bytes(FitsFormatter(), table), columns=["mag"])


def test_table_parameters_do_not_include_bbox(table):
    with pytest.raises(FormatError, match="unknown read parameter 'bbox' for fits tables; allowed: columns, rows, hdu"):
        from_bytes(FitsFormatter(), to_bytes(FitsFormatter(), table), bbox=(0, 1, 0, 1))
