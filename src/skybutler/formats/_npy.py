"""Numpy arrays as ``.npy`` files (never pickled)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, BinaryIO

import numpy as np

from ..errors import FormatError
from .base import Formatter, check_parameters, type_name


class NpyFormatter(Formatter):
    """A numpy array in numpy's own ``.npy`` format.

    Object arrays are refused on write and on read (``allow_pickle=False``):
    loading them would run code from the file.
    """

    name = "npy"
    extension = ".npy"
    storage_classes = ("array",)

    def write(self, obj: Any, fileobj: BinaryIO, *, identity: Mapping[str, str]) -> None:
        self.check(obj, "array")
        if obj.dtype.hasobject:
            raise FormatError(f"{self.name} cannot store arrays of Python objects (dtype {obj.dtype})")
        with self._wrap_errors("write"):
            np.save(fileobj, obj, allow_pickle=False)

    def read(self, fileobj: BinaryIO, *, parameters: Mapping[str, Any] | None = None) -> np.ndarray:
        check_parameters(parameters, (), what=self.name)
        with self._wrap_errors("read"):
            value = np.load(fileobj, allow_pickle=False)
        if not isinstance(value, np.ndarray):  # an .npz archive
            raise FormatError(f"cannot read {self.name} file: it holds {type_name(value)}, not one array")
        return value

    def check_file(self, fileobj: BinaryIO, storage_class: str) -> None:
        """Check the ``.npy`` header alone: one array, of a dtype that needs no pickle."""
        super().check_file(fileobj, storage_class)
        with self._wrap_errors("read"):
            version = np.lib.format.read_magic(fileobj)
            if version == (1, 0):
                _, _, dtype = np.lib.format.read_array_header_1_0(fileobj)
            elif version == (2, 0):
                _, _, dtype = np.lib.format.read_array_header_2_0(fileobj)
            else:  # numpy has no public reader for the headers of later versions
                fileobj.seek(0)
                dtype = self.read(fileobj).dtype
        if dtype.hasobject:
            raise FormatError(f"cannot read {self.name} file: it holds Python objects (dtype {dtype}), which needs pickle")
