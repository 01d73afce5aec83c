"""Formats: objects to bytes and back, by storage class.

Each format is a `Formatter` known by a short name (``"fits"``, ``"parquet"``).
Storage classes list the formats that can store them, the first being the
default; `formatter_for` picks one, and refuses pickle unless the repository
opted in::

    >>> from skybutler.formats import formatter_for
    >>> formatter_for("table")
    ParquetFormatter()
    >>> formatter_for("table", "fits")
    FitsFormatter()
"""

from __future__ import annotations

from ..errors import FormatError
from ..model import storage_class as _lookup_storage_class
from ._dict import JsonFormatter, YamlFormatter
from ._fits import FitsFormatter
from ._npy import NpyFormatter
from ._parquet import ParquetFormatter
from ._pickle import PickleFormatter
from ._plain import RawFormatter, TextFormatter
from .base import IDENTITY_KEYS, Formatter

__all__ = [
    "FORMATS",
    "IDENTITY_KEYS",
    "FitsFormatter",
    "Formatter",
    "JsonFormatter",
    "NpyFormatter",
    "ParquetFormatter",
    "PickleFormatter",
    "RawFormatter",
    "TextFormatter",
    "YamlFormatter",
    "file_suffixes",
    "formatter_for",
    "get_formatter",
    "guess_format",
    "last_extension",
]

FORMATS: dict[str, type[Formatter]] = {
    cls.name: cls
    for cls in (
        JsonFormatter,
        YamlFormatter,
        NpyFormatter,
        FitsFormatter,
        ParquetFormatter,
        RawFormatter,
        TextFormatter,
        PickleFormatter,
    )
}
"""Every format by its short name. Importing this package imports none of astropy or pyarrow."""


def get_formatter(name: str) -> Formatter:
    """Return the formatter for a format's short name.

    Parameters
    ----------
    name
        A key of `FORMATS`, such as ``"fits"``.

    Raises
    ------
    FormatError
        If no format has that name; the message lists those that do.
    """
    try:
        cls = FORMATS[name]
    except KeyError:
        raise FormatError(f"unknown format {name!r}; known: {', '.join(sorted(FORMATS))}") from None
    return cls()


def formatter_for(storage_class: str, format: str | None = None, *, allow_pickle: bool = False) -> Formatter:
    """Return the formatter that stores ``storage_class`` in ``format``.

    Parameters
    ----------
    storage_class
        Name of a storage class (``"image"``, ``"table"``, ...).
    format
        Short name of the format; by default the storage class's first.
    allow_pickle
        Whether the repository opted in to pickle (``formats.allow_pickle: true``).

    Raises
    ------
    StorageClassError
        If the storage class is unknown.
    FormatError
        If the format is unknown, cannot store the storage class, or is pickle
        without ``allow_pickle``.
    """
    known = _lookup_storage_class(storage_class)
    name = known.formats[0] if format is None else format
    formatter = get_formatter(name)
    if name not in known.formats:
        raise FormatError(
            f"format {name!r} cannot store storage class {storage_class!r}; "
            f"allowed: {', '.join(known.formats)}"
        )
    if formatter.executes_code and not allow_pickle:
        raise FormatError(
            f"format {name!r} is off: reading it (unpickling) executes code from the file, "
            "so a repository must opt in with `formats.allow_pickle: true` in its configuration"
        )
    return formatter


def file_suffixes(path: str) -> str:
    """All extensions of a file name (``".fits.fz"``), like `pathlib.PurePath.suffixes` joined."""
    name = path.rsplit("/", 1)[-1].lstrip(".")
    return "." + name.split(".", 1)[1] if "." in name else ""


def last_extension(path: str) -> str:
    """The last extension of a file name, lower case, with its dot (``".fz"`` for ``x.FITS.FZ``); "" for none."""
    return "." + path.rsplit(".", 1)[-1].lower() if "." in path.rsplit("/", 1)[-1] else ""


def guess_format(path: str) -> str | None:
    """The short name of the format a file name suggests (``"fits"`` for ``x.fits.fz``), or None.

    The last extension decides (`last_extension`); the formats' own ``extension`` and
    ``recognised`` ones are the only table of them.
    """
    last = last_extension(path)
    for name, cls in FORMATS.items():
        if cls.executes_code or name == "raw":
            continue
        if last == cls.extension or last in cls.recognised:
            return name
    return None
