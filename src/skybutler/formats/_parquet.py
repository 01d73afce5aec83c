"""Tables as Parquet files (pyarrow), the identity in the schema's key-value metadata."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, BinaryIO

from ..errors import FormatError
from .base import (
    Formatter,
    as_columns,
    as_rows,
    check_parameters,
    validated_identity,
)

if TYPE_CHECKING:
    import pyarrow

IDENTITY_METADATA_KEY = b"skybutler"
"""Key of the schema metadata entry holding the identity, as a JSON object."""


class ParquetFormatter(Formatter):
    """A `pyarrow.Table` as Parquet.

    Read parameters ``columns`` (a list of names) and ``rows`` (``(start, stop)``,
    ``stop`` clipped to the table's length) read only the column chunks and row
    groups they need.
    """

    name = "parquet"
    extension = ".parquet"
    recognised = (".pq",)
    storage_classes = ("table",)
    stores_identity = True

    row_group_size = 65536
    """Rows per row group: the unit a ``rows`` read fetches."""

    def write(self, obj: Any, fileobj: BinaryIO, *, identity: Mapping[str, str]) -> None:
        import pyarrow.parquet as pq

        self.check(obj, "table")
        metadata = dict(obj.schema.metadata or {})
        if identity:
            metadata[IDENTITY_METADATA_KEY] = json.dumps(validated_identity(identity)).encode()
        with self._wrap_errors("write"):
            pq.write_table(obj.replace_schema_metadata(metadata), fileobj, row_group_size=self.row_group_size)

    def read(self, fileobj: BinaryIO, *, parameters: Mapping[str, Any] | None = None) -> pyarrow.Table:
        import pyarrow.parquet as pq

        given = check_parameters(parameters, ("columns", "rows"), what=f"{self.name} tables")
        with self._wrap_errors("read"):
            parquet_file = pq.ParquetFile(fileobj)
            names = parquet_file.schema_arrow.names
            columns = as_columns(given["columns"], names) if "columns" in given else None
            if "rows" in given:
                start, stop = as_rows(given["rows"])
                table = _read_rows(parquet_file, start, stop, columns)
            else:
                table = parquet_file.read(columns=columns)
        metadata = dict(table.schema.metadata or {})
        metadata.pop(IDENTITY_METADATA_KEY, None)
        return table.replace_schema_metadata(metadata or None)

    def check_file(self, fileobj: BinaryIO, storage_class: str) -> None:
        """Check that the file is Parquet by reading its footer (schema and row groups) only."""
        import pyarrow.parquet as pq

        super().check_file(fileobj, storage_class)
        with self._wrap_errors("read"):
            pq.ParquetFile(fileobj).schema_arrow  # noqa: B018 - parsing the footer is the check

    def read_identity(self, fileobj: BinaryIO) -> dict[str, str] | None:
        import pyarrow.parquet as pq

        with self._wrap_errors("read"):
            metadata = pq.ParquetFile(fileobj).schema_arrow.metadata or {}
            if IDENTITY_METADATA_KEY not in metadata:
                return None
            identity = json.loads(metadata[IDENTITY_METADATA_KEY])
        if not isinstance(identity, dict):
            raise FormatError(f"cannot read {self.name} file: its identity metadata is not a JSON object")
        return {str(key): str(value) for key, value in identity.items()}


def _read_rows(parquet_file: Any, start: int, stop: int, columns: list[str] | None) -> pyarrow.Table:
    """Read rows ``[start, stop)`` from only the row groups that hold them."""
    metadata = parquet_file.metadata
    first_rows = [0]  # first_rows[i] is the index of row group i's first row; one more for the end
    for index in range(metadata.num_row_groups):
        first_rows.append(first_rows[-1] + metadata.row_group(index).num_rows)
    groups = [i for i in range(metadata.num_row_groups) if first_rows[i] < stop and first_rows[i + 1] > start]
    if not groups:
        schema = parquet_file.schema_arrow
        return schema.empty_table().select(columns if columns is not None else schema.names)
    table = parquet_file.read_row_groups(groups, columns=columns)
    return table.slice(start - first_rows[groups[0]], stop - start)
