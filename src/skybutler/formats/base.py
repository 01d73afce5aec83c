"""The seam every file format implements: `Formatter`.

A formatter turns one in-memory object into bytes and back. It knows nothing
of paths, URLs or the registry: the datastore hands it an open binary file
object (an fsspec file, which may be local, in memory or on S3) and adds the
file name to any error it raises.

A new format is a subclass with ``name``, ``extension`` and
``storage_classes`` set and ``write`` and ``read`` implemented, plus a row
in `skybutler.formats.FORMATS`.
"""

from __future__ import annotations

import abc
import contextlib
import io
import operator
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, BinaryIO, ClassVar

from ..errors import FormatError, SkyButlerError, StorageClassError
from ..model import storage_class as _lookup_storage_class

__all__ = ["IDENTITY_KEYS", "Formatter"]

IDENTITY_KEYS: tuple[str, ...] = ("dataset_id", "dataset_type", "data_id", "run")
"""Keys of the identity a formatter stores in files that have room for metadata."""


class Formatter(abc.ABC):
    """Writes objects of some storage classes to binary files and reads them back.

    Formatters hold no state: one instance may serve any number of calls, from
    any number of threads.

    Examples
    --------
    >>> import io
    >>> from skybutler.formats import get_formatter
    >>> json_format = get_formatter("json")
    >>> buffer = io.BytesIO()
    >>> json_format.write({"seeing": 0.7}, buffer, identity={})
    >>> _ = buffer.seek(0)
    >>> json_format.read(buffer)
    {'seeing': 0.7}
    """

    name: ClassVar[str]
    """Short name used in configuration and the ``FORMATS`` table (``"fits"``)."""

    extension: ClassVar[str]
    """File name extension, with its dot (``".fits"``)."""

    recognised: ClassVar[tuple[str, ...]] = ()
    """Other extensions of files in this format, as others name them (``".fit"``, ``".fz"``);
    `guess_format` reads a file's format from ``extension`` and these."""

    storage_classes: ClassVar[tuple[str, ...]]
    """Names of the storage classes this format can store."""

    executes_code: ClassVar[bool] = False
    """Whether reading a file runs code from it (pickle), so a repository must opt in."""

    stores_identity: ClassVar[bool] = False
    """Whether files of this format carry the dataset's identity themselves (else the
    datastore records it in a per-run manifest beside the files)."""

    @abc.abstractmethod
    def write(self, obj: Any, fileobj: BinaryIO, *, identity: Mapping[str, str]) -> None:
        """Write ``obj`` to ``fileobj``.

        Parameters
        ----------
        obj
            The object; its type must fit one of ``storage_classes``.
        fileobj
            A binary file object open for writing. It need not be seekable and
            is left open.
        identity
            The dataset's ``dataset_id``, ``dataset_type``, ``data_id`` (text
            form) and ``run``. Formats with room for metadata store it in the
            file; the others ignore it.

        Raises
        ------
        StorageClassError
            If ``obj`` is of a type this format cannot store.
        FormatError
            If ``obj`` cannot be written in this format (a value it cannot represent).
        """

    def to_bytes(self, obj: Any, *, identity: Mapping[str, str]) -> bytes | None:
        """The whole file `write` would write for ``obj``, as bytes; None to be written through `write`.

        For formats of small objects (a dict as JSON): the datastore then writes the file
        with one system call and hashes it in one go, without a file object and a hashing
        wrapper around each write (a third of a small put's file writing). The default,
        None, suits formats of large objects, which are streamed. Raises as `write`.
        """
        return None

    @abc.abstractmethod
    def read(self, fileobj: BinaryIO, *, parameters: Mapping[str, Any] | None = None) -> Any:
        """Read the object stored in ``fileobj``.

        Parameters
        ----------
        fileobj
            A readable, seekable binary file object, positioned at the start of
            the file. It is left open.
        parameters
            Read parameters that select part of the object (``bbox`` for images,
            ``columns`` and ``rows`` for tables).

        Raises
        ------
        FormatError
            If the file is corrupt or truncated, or a parameter is unknown or invalid.
        """

    def read_identity(self, fileobj: BinaryIO) -> dict[str, str] | None:
        """Return the identity stored by `write`, or None if this file holds none.

        Parameters
        ----------
        fileobj
            A readable, seekable binary file object, positioned at the start of the file.
        """
        return None

    def check(self, obj: Any, storage_class: str) -> None:
        """Raise `StorageClassError` if ``obj`` does not fit ``storage_class``.

        The message names the storage class, the type it holds and the type of
        ``obj``; callers put the dataset type in front of it
        (``"dataset type 'calexp' has " + message``).

        Parameters
        ----------
        obj
            The object about to be written.
        storage_class
            Name of the storage class of its dataset type.

        Raises
        ------
        StorageClassError
            If ``obj`` is not of the type the storage class holds.
        FormatError
            If this format cannot store ``storage_class`` at all.
        """
        if storage_class not in self.storage_classes:
            raise FormatError(
                f"format {self.name!r} cannot store storage class {storage_class!r}; "
                f"it stores {', '.join(self.storage_classes)}"
            )
        if not isinstance(obj, python_types(storage_class)):
            expected = _lookup_storage_class(storage_class).python_type
            raise StorageClassError(
                f"storage class {storage_class!r} which holds {expected}; got {type_name(obj)}"
            )

    def check_file(self, fileobj: BinaryIO, storage_class: str) -> None:
        """Raise if the file in ``fileobj`` would not read back as ``storage_class``.

        Ingest calls this before it registers a file written by someone else, so
        that a table ingested as an image, or a 3-d image, is refused then rather
        than failing (or returning the wrong kind of object) on every later read.
        Formats check cheaply: headers, footers or magic numbers where the format
        has them (FITS, Parquet, npy); small formats (JSON, YAML) are parsed. This
        default checks only that the format stores ``storage_class``: it suits
        formats that take any bytes (raw), and pickle, whose content cannot be
        checked without running it.

        Callers put the file's name in front of the message.

        Parameters
        ----------
        fileobj
            A readable, seekable binary file object, positioned at the start of the file.
        storage_class
            Name of the storage class of the dataset type the file is ingested as.

        Raises
        ------
        StorageClassError
            If the file holds content of another storage class (a table, not an image).
        FormatError
            If the file is not readable in this format, or the format cannot store
            ``storage_class`` at all.
        """
        if storage_class not in self.storage_classes:
            raise FormatError(
                f"format {self.name!r} cannot store storage class {storage_class!r}; "
                f"it stores {', '.join(self.storage_classes)}"
            )

    @contextlib.contextmanager
    def _wrap_errors(self, action: str) -> Iterator[None]:
        """Turn any library exception raised inside into a `FormatError` naming this format.

        Our own errors pass through unchanged; the library's stays attached as
        ``__cause__`` for whoever needs the detail.
        """
        try:
            yield
        except SkyButlerError:
            raise
        except Exception as exc:
            # A disk or network error under the library (disk full) is not a format problem:
            # surface the original OSError so callers see its errno.
            cause: BaseException | None = exc
            while cause is not None:
                if isinstance(cause, OSError) and cause.errno is not None:
                    raise cause from None
                cause = cause.__cause__ or cause.__context__
            detail = str(exc) or type(exc).__name__
            raise FormatError(f"cannot {action} {self.name} file: {detail}") from exc

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def python_types(storage_class: str) -> tuple[type, ...]:
    """Return the Python types an object of ``storage_class`` may have.

    Imports happen here, on first use, so that importing `skybutler.formats`
    does not pull in pyarrow.
    """
    if storage_class == "dict":
        return (dict,)
    if storage_class == "array":
        import numpy

        return (numpy.ndarray,)
    if storage_class == "image":
        from ..model import Image

        return (Image,)
    if storage_class == "table":
        import pyarrow

        return (pyarrow.Table,)
    if storage_class == "bytes":
        return (bytes, bytearray)
    if storage_class == "text":
        return (str,)
    if storage_class == "object":
        return (object,)
    _lookup_storage_class(storage_class)  # raises StorageClassError for unknown names
    raise StorageClassError(f"storage class {storage_class!r} has no Python type known to skybutler.formats")


def type_name(obj: Any) -> str:
    """Return the name users know ``obj``'s type by: ``dict``, ``numpy.ndarray``, ``skybutler.Image``."""
    cls = type(obj)
    package = cls.__module__.partition(".")[0]
    return cls.__qualname__ if package == "builtins" else f"{package}.{cls.__qualname__}"


def check_parameters(
    parameters: Mapping[str, Any] | None, allowed: Sequence[str], *, what: str
) -> dict[str, Any]:
    """Return ``parameters`` as a dict, or raise `FormatError` naming the allowed ones.

    Parameters
    ----------
    parameters
        Read parameters given by the caller (None for none).
    allowed
        Names this read accepts.
    what
        What is being read, for the message (``"fits image"``).
    """
    given = dict(parameters or {})
    unknown = sorted(set(given) - set(allowed))
    if unknown:
        accepted = ", ".join(allowed) if allowed else "none"
        raise FormatError(
            f"unknown read parameter{'s' if len(unknown) > 1 else ''} "
            f"{', '.join(map(repr, unknown))} for {what}; allowed: {accepted}"
        )
    return given


def validated_identity(identity: Mapping[str, str]) -> dict[str, str]:
    """Return the identity with text values, in `IDENTITY_KEYS` order.

    Raises
    ------
    FormatError
        If it has a key other than those in `IDENTITY_KEYS`.
    """
    unknown = sorted(set(identity) - set(IDENTITY_KEYS))
    if unknown:
        raise FormatError(
            f"unknown identity key{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}; "
            f"known: {', '.join(IDENTITY_KEYS)}"
        )
    return {key: str(identity[key]) for key in IDENTITY_KEYS if key in identity}


def as_box(value: Any, *, what: str) -> tuple[int, int, int, int]:
    """Return ``value`` as a box ``(y0, y1, x0, x1)`` of ints, or raise `FormatError`."""
    try:
        y0, y1, x0, x1 = (operator.index(v) for v in value)
    except (TypeError, ValueError):
        raise FormatError(f"{what} must be four integers (y0, y1, x0, x1); got {value!r}") from None
    return y0, y1, x0, x1


class CountingReader(io.RawIOBase):
    """A read-only view of a binary file object that counts the bytes read through it.

    Closing it leaves the file it wraps open, so libraries that close what they
    are given (astropy does) cannot close the caller's file.

    A reader that knows which byte ranges it is about to read names them to `prefetch`:
    a file that can fetch many ranges at once (the datastore's remote files opened for
    a partial read) does so; other files ignore it.

    Parameters
    ----------
    fileobj
        A readable, seekable binary file object.
    """

    def __init__(self, fileobj: BinaryIO):
        super().__init__()
        self._fileobj = fileobj
        self.bytes_read = 0
        """How many bytes were read from the wrapped file so far."""

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        data = self._fileobj.read(-1 if size is None else size)
        self.bytes_read += len(data)
        return data

    def readall(self) -> bytes:
        return self.read(-1)

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(memoryview(buffer)))
        memoryview(buffer).cast("B")[: len(data)] = data
        return len(data)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        return self._fileobj.seek(offset, whence)

    def tell(self) -> int:
        return self._fileobj.tell()

    def prefetch(self, ranges: Sequence[tuple[int, int]]) -> None:
        """Let the wrapped file fetch the byte ranges ``(start, end)`` about to be read, if it can.

        Bytes it fetches are counted when they are read, not here.
        """
        prefetch = getattr(self._fileobj, "prefetch", None)
        if prefetch is not None:
            prefetch(ranges)

    def size(self) -> int:
        """Return the length of the wrapped file in bytes (the position is kept)."""
        here = self._fileobj.tell()
        try:
            return self._fileobj.seek(0, io.SEEK_END)
        finally:
            self._fileobj.seek(here)


def as_columns(value: Any, available: Sequence[str]) -> list[str]:
    """Return the ``columns`` read parameter as a list of names that exist in the table."""
    if isinstance(value, str) or not isinstance(value, Sequence):
        raise FormatError(f"columns must be a list of column names; got {value!r}")
    columns = list(value)
    missing = [c for c in columns if c not in available]
    if missing:
        raise FormatError(
            f"unknown column{'s' if len(missing) > 1 else ''} {', '.join(map(repr, missing))}; "
            f"the table has {', '.join(available)}"
        )
    return columns


def as_rows(value: Any) -> tuple[int, int]:
    """Return the ``rows`` read parameter, ``(start, stop)`` with ``0 <= start <= stop``."""
    try:
        start, stop = (operator.index(v) for v in value)
    except (TypeError, ValueError):
        raise FormatError(f"rows must be two integers (start, stop); got {value!r}") from None
    if not 0 <= start <= stop:
        raise FormatError(f"rows must satisfy 0 <= start <= stop; got {value!r}")
    return start, stop
