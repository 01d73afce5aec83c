"""Bytes and text, stored as they are.

Neither has room for metadata, and neither can tell a truncated file from a
short one; the datastore's checksums and manifest cover both.
"""

from __future__ import annotations

import codecs
from collections.abc import Mapping
from typing import Any, BinaryIO

from .base import Formatter, check_parameters


class RawFormatter(Formatter):
    """Opaque bytes, written and read back unchanged."""

    name = "raw"
    extension = ".bin"
    storage_classes = ("bytes",)

    def write(self, obj: Any, fileobj: BinaryIO, *, identity: Mapping[str, str]) -> None:
        self.check(obj, "bytes")
        fileobj.write(obj)

    def read(self, fileobj: BinaryIO, *, parameters: Mapping[str, Any] | None = None) -> bytes:
        check_parameters(parameters, (), what=self.name)
        return fileobj.read()


class TextFormatter(Formatter):
    """A str as UTF-8, line endings kept as they are."""

    name = "txt"
    extension = ".txt"
    recognised = (".log",)
    storage_classes = ("text",)

    def write(self, obj: Any, fileobj: BinaryIO, *, identity: Mapping[str, str]) -> None:
        self.check(obj, "text")
        with self._wrap_errors("write"):  # lone surrogates cannot be encoded
            fileobj.write(obj.encode("utf-8"))

    def read(self, fileobj: BinaryIO, *, parameters: Mapping[str, Any] | None = None) -> str:
        check_parameters(parameters, (), what=self.name)
        with self._wrap_errors("read"):
            return fileobj.read().decode("utf-8")

    def check_file(self, fileobj: BinaryIO, storage_class: str) -> None:
        """Check that the file is UTF-8, a chunk at a time (logs can be large)."""
        super().check_file(fileobj, storage_class)
        decoder = codecs.getincrementaldecoder("utf-8")()
        with self._wrap_errors("read"):
            while chunk := fileobj.read(1 << 20):
                decoder.decode(chunk)
            decoder.decode(b"", final=True)
