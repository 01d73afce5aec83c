"""Dicts of plain values as JSON or YAML.

Neither format has a place for metadata outside the user's dict, and putting
the identity inside it would change what ``get`` returns, so the identity is
left to the datastore's per-run manifest.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, BinaryIO

import numpy as np

from ..errors import FormatError
from .base import Formatter, check_parameters, type_name

# No indent: an indented dump runs the pure-Python encoder, several times slower. One
# encoder for every file (``json.dumps`` with any option makes a new one per call).
_JSON = json.JSONEncoder(sort_keys=True, ensure_ascii=False).encode


class JsonFormatter(Formatter):
    """A dict as UTF-8 JSON with sorted keys, so equal dicts give equal bytes.

    Keys must be strings and values str, int, float, bool, None, lists or
    dicts (numpy scalars are written as the Python numbers they hold). Floats
    round-trip exactly; NaN and infinities are written as JavaScript's ``NaN``
    and ``Infinity``, which Python reads back.
    """

    name = "json"
    extension = ".json"
    storage_classes = ("dict",)

    def write(self, obj: Any, fileobj: BinaryIO, *, identity: Mapping[str, str]) -> None:
        fileobj.write(self.to_bytes(obj, identity=identity))

    def to_bytes(self, obj: Any, *, identity: Mapping[str, str]) -> bytes:
        self.check(obj, "dict")
        return _JSON(plain_values(obj, self.name)).encode("utf-8") + b"\n"

    def read(self, fileobj: BinaryIO, *, parameters: Mapping[str, Any] | None = None) -> Any:
        check_parameters(parameters, (), what=self.name)
        with self._wrap_errors("read"):
            value = json.loads(fileobj.read().decode("utf-8"))
        return _require_dict(value, self.name)

    def check_file(self, fileobj: BinaryIO, storage_class: str) -> None:
        """Check that the file holds a dict, by reading it (such files are small)."""
        super().check_file(fileobj, storage_class)
        self.read(fileobj)


class YamlFormatter(Formatter):
    """A dict as UTF-8 YAML (block style, sorted keys), for files people edit by hand.

    Accepts the same values as `JsonFormatter`. The file ends with YAML's
    document end marker ``...`` after a first comment line saying so; a file
    that starts with that comment but lacks the marker was cut short, which
    YAML alone cannot tell (a truncated YAML file is often valid YAML).
    """

    name = "yaml"
    extension = ".yaml"
    recognised = (".yml",)
    storage_classes = ("dict",)

    _FIRST_LINE = "# skybutler dict; a complete file ends with '...'\n"

    def write(self, obj: Any, fileobj: BinaryIO, *, identity: Mapping[str, str]) -> None:
        import yaml

        self.check(obj, "dict")
        text = yaml.safe_dump(
            plain_values(obj, self.name),
            sort_keys=True,
            allow_unicode=True,
            default_flow_style=False,
            explicit_end=True,
        )
        fileobj.write((self._FIRST_LINE + text).encode("utf-8"))

    def read(self, fileobj: BinaryIO, *, parameters: Mapping[str, Any] | None = None) -> Any:
        import yaml

        check_parameters(parameters, (), what=self.name)
        with self._wrap_errors("read"):
            text = fileobj.read().decode("utf-8")
            if text.startswith(self._FIRST_LINE) and not text.rstrip().endswith("\n..."):
                raise FormatError(f"cannot read {self.name} file: it is truncated (no '...' end marker)")
            value = yaml.safe_load(text)
        return _require_dict(value, self.name)

    def check_file(self, fileobj: BinaryIO, storage_class: str) -> None:
        """Check that the file holds a dict, by reading it (such files are small)."""
        super().check_file(fileobj, storage_class)
        self.read(fileobj)


_SCALARS = (str, int, float, bool, type(None))


def _fast_plain(value: Any) -> Any:
    """`plain_values` without error paths; raises TypeError on anything unusual."""
    kind = type(value)
    if kind in _SCALARS:
        return value
    if kind is dict:
        out = {}
        for key, item in value.items():
            if type(key) is not str:
                raise TypeError
            out[key] = _fast_plain(item)
        return out
    if kind is list or kind is tuple:
        return [_fast_plain(item) for item in value]
    raise TypeError


def plain_values(value: Any, format_name: str, path: str = "") -> Any:
    """Return ``value`` with numpy scalars made Python numbers and tuples made lists.

    Raises
    ------
    FormatError
        Naming the first key that is not a string or value of another type, by its path.
    """
    if not path:
        try:
            return _fast_plain(value)
        except (TypeError, RecursionError):
            pass  # the careful walk below converts numpy scalars or names the bad key
    return _plain_values(value, format_name, path)


def _plain_values(value: Any, format_name: str, path: str = "") -> Any:
    """The careful walk of `plain_values`, keeping the path of each value for messages.

    Raises
    ------
    FormatError
        Naming the first key that is not a string or value of another type, by its path.
    """
    kind = type(value)
    if kind is str or kind is int or kind is float or kind is bool or value is None:
        return value
    if isinstance(value, dict):
        result = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise FormatError(
                    f"{format_name} needs string keys; key {key!r} at {path or 'top level'} "
                    f"is {type_name(key)}"
                )
            result[key] = _plain_values(item, format_name, f"{path}.{key}" if path else key)
        return result
    if isinstance(value, list | tuple):
        return [_plain_values(item, format_name, f"{path}[{i}]") for i, item in enumerate(value)]
    if isinstance(value, np.generic):  # before float: numpy.float64 is a float subclass YAML cannot dump
        return _plain_values(value.item(), format_name, path)
    if value is None or isinstance(value, str | bool | int | float):
        return value
    raise FormatError(
        f"{format_name} cannot store {type_name(value)} (at {path or 'top level'}); "
        "values must be str, int, float, bool, None, lists or dicts"
    )


def _require_dict(value: Any, format_name: str) -> dict:
    if not isinstance(value, dict):
        raise FormatError(f"cannot read {format_name} file: it holds {type_name(value)}, not a dict")
    return value
