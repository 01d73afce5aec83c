"""FITS binary tables: Arrow tables to astropy tables FITS can hold, and back.

Split from `skybutler.formats._fits` (the `FitsFormatter`); astropy and pyarrow are
imported on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import FormatError
from ._fits_hdus import native

if TYPE_CHECKING:
    import pyarrow
    from astropy.table import Table

__all__ = ["to_arrow", "to_astropy"]


def to_astropy(table: pyarrow.Table) -> Table:
    """Convert an Arrow table to an astropy table FITS can hold, refusing what it cannot."""
    import pyarrow as pa
    import pyarrow.compute as pc
    from astropy.table import MaskedColumn, Table

    columns: list[Any] = []
    for name, column in zip(table.column_names, table.columns, strict=True):
        kind = column.type
        if pa.types.is_string(kind) or pa.types.is_large_string(kind):
            if column.null_count:
                raise _unsupported(name, kind, "FITS has no null strings")
            columns.append(np.array(column.to_pylist(), dtype=str))
        elif pa.types.is_boolean(kind):
            if column.null_count:
                raise _unsupported(name, kind, "FITS tables here have no null bools")
            columns.append(column.to_numpy())
        elif pa.types.is_integer(kind) or pa.types.is_floating(kind):
            if column.null_count:
                values = column.fill_null(0).to_numpy()
                mask = column.is_null().to_numpy()
                null = _null_value(values, mask)
                if null is None:
                    raise _unsupported(name, kind, "it holds every value of its type, leaving none to mark nulls")
                columns.append(MaskedColumn(values, mask=mask, fill_value=null))
            else:
                columns.append(column.to_numpy())
        elif pa.types.is_fixed_size_list(kind) and (
            pa.types.is_integer(kind.value_type) or pa.types.is_floating(kind.value_type)
        ):
            flat = pc.list_flatten(column.combine_chunks())
            if column.null_count or flat.null_count:
                raise _unsupported(name, kind, "FITS has no null array cells")
            columns.append(flat.to_numpy().reshape(len(column), kind.list_size))
        else:
            raise _unsupported(name, kind, "FITS holds numbers, bools, strings and fixed-size lists of numbers")
    return Table(columns, names=table.column_names, copy=False)


def _unsupported(name: str, kind: Any, why: str) -> FormatError:
    return FormatError(f"column {name!r} ({kind}) cannot be stored in a FITS table: {why}; use parquet")


def _null_value(values: np.ndarray, mask: np.ndarray) -> Any:
    """Pick the ``TNULL`` value of a masked column: one no real value in it equals (None if none is free)."""
    if values.dtype.kind == "f":
        return np.nan
    limits = np.iinfo(values.dtype)
    present = values[~mask]
    for candidate in (limits.min, limits.max):
        if not (present == candidate).any():
            return candidate
    return None


def to_arrow(table: Table) -> pyarrow.Table:
    """Convert an astropy table read from FITS to Arrow (masked integers become nulls)."""
    import pyarrow as pa
    from astropy.table import MaskedColumn

    arrays = []
    for name in table.colnames:
        column = table[name]
        values = native(np.ma.getdata(column))
        mask = np.ma.getmaskarray(column) if isinstance(column, MaskedColumn) else None
        if mask is not None and not mask.any():
            mask = None
        if values.ndim == 1:
            arrays.append(pa.array(values, mask=mask))
        elif values.ndim == 2 and mask is None:
            arrays.append(pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1)), values.shape[1]))
        else:
            raise FormatError(f"cannot read fits table column {name!r} of shape {values.shape[1:]} per row")
    return pa.table(arrays, names=table.colnames)
