"""Any Python object, pickled: only where a repository opts in."""

from __future__ import annotations

import pickle
from collections.abc import Mapping
from typing import Any, BinaryIO

from .base import Formatter, check_parameters


class PickleFormatter(Formatter):
    """Any object, with `pickle` at its highest protocol.

    Reading a pickle runs code named in the file, so `skybutler.formats.formatter_for`
    only hands this formatter out to repositories that opted in
    (``formats.allow_pickle: true``). The formatter itself just pickles.
    """

    name = "pickle"
    extension = ".pickle"
    storage_classes = ("object",)
    executes_code = True

    def write(self, obj: Any, fileobj: BinaryIO, *, identity: Mapping[str, str]) -> None:
        with self._wrap_errors("write"):  # pickle whole before writing, so a failure writes nothing
            data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
        fileobj.write(data)

    def read(self, fileobj: BinaryIO, *, parameters: Mapping[str, Any] | None = None) -> Any:
        check_parameters(parameters, (), what=self.name)
        with self._wrap_errors("read"):
            return pickle.load(fileobj)
