"""Images and tables as FITS files (astropy), the identity in the primary header.

An image is written as a primary HDU holding its pixels and header cards,
followed by one image extension per plane (``EXTNAME`` = the plane's name in
upper case). A table is written as an empty primary HDU followed by a binary
table. Files are never compressed, so a box of pixels can be read by seeking
to its rows: `FitsFormatter.read_cutouts` reads a few kilobytes of a large
image, even on an object store.

astropy is imported on first use: it takes a quarter of a second to import,
which commands that never touch a FITS file should not pay.
"""

from __future__ import annotations

import contextlib
import copy
import io
import operator
import re
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, BinaryIO

import numpy as np

from ..errors import FormatError, StorageClassError
from ..model import Image
from .base import (
    CountingReader,
    Formatter,
    as_box,
    as_columns,
    as_rows,
    check_parameters,
    type_name,
    validated_identity,
)

if TYPE_CHECKING:
    import pyarrow
    from astropy.io import fits
    from astropy.table import Table

IDENTITY_CARDS: dict[str, str] = {
    "dataset_id": "SB_ID",
    "dataset_type": "SB_TYPE",
    "data_id": "SB_DATAID",
    "run": "SB_RUN",
}
"""Primary header keyword holding each identity key (long values continue on CONTINUE cards)."""

ORIGIN_CARDS = ("SB_Y0", "SB_X0")
"""Primary header keywords holding a non-zero `Image.origin`."""

# Cards that describe the file's layout rather than the image; astropy writes
# them from the data, so copying them from (or into) Image.header would be wrong.
_STRUCTURAL = frozenset(
    {"", "SIMPLE", "BITPIX", "NAXIS", "EXTEND", "XTENSION", "PCOUNT", "GCOUNT", "BSCALE", "BZERO",
     "BLANK", "EXTNAME", "CHECKSUM", "DATASUM", "END"}
)
_NAXIS_N = re.compile(r"NAXIS\d+$")
_RESERVED = frozenset(IDENTITY_CARDS.values()) | frozenset(ORIGIN_CARDS)
_COMMENTARY = frozenset({"COMMENT", "HISTORY"})
_PLAIN_KEYWORD = re.compile(r"[A-Z0-9_-]{1,8}$")
_PIXEL_TYPES = frozenset(["u1", "i1", "i2", "u2", "i4", "u4", "i8", "u8", "f4", "f8"])


class FitsFormatter(Formatter):
    """`Image` (storage class ``image``) or `pyarrow.Table` (``table``) as an uncompressed FITS file.

    Images: ``Image.header`` becomes primary header cards (keys in upper case;
    longer than 8 characters become HIERARCH cards; ``COMMENT`` and ``HISTORY``
    hold a list of lines); cards that describe the file layout (``SIMPLE``,
    ``BITPIX``, ``NAXISn``, ``EXTEND``, ``BZERO``, ...) are skipped both ways.
    Reading accepts ``bbox=(y0, y1, x0, x1)`` and reads only those rows
    and columns of every plane.

    Any HDU of any FITS file (a multi-extension file of another pipeline
    too) can be read with ``hdu``: an index (``3``), an ``EXTNAME``
    (``"SCI"``, the first HDU of that name) or an ``(EXTNAME, EXTVER)`` pair
    (``("SCI", 2)``). The result is that HDU alone: an `Image` of its pixels
    (header cards of the primary HDU, then its own; no planes; ``bbox``
    allowed) or a table (``columns`` and ``rows`` allowed). Without ``hdu``,
    the image is the primary HDU's pixels, or the first image extension's
    when the primary holds none, and every later image extension is a plane
    named by its ``EXTNAME`` in lower case, with ``,<EXTVER>`` when its
    ``EXTVER`` is not 1 (``"sci,2"``), or ``hdu<index>`` when it has no name
    or its name is taken; `read_cutouts` uses the same names and the same
    ``hdu`` selection.

    Tables: columns of numbers, bools, strings and fixed-size lists of
    numbers; nulls in integer columns round-trip, nulls in float columns come
    back as NaN, and nulls in string or bool columns are refused. Reading
    accepts ``columns`` and ``rows`` (the whole table is read, then cut).

    The identity goes into primary header cards ``SB_ID``, ``SB_TYPE``,
    ``SB_DATAID`` and ``SB_RUN``; a non-zero image origin into ``SB_Y0`` and ``SB_X0``.
    """

    name = "fits"
    extension = ".fits"
    recognised = (".fit", ".fz", ".fts")
    storage_classes = ("image", "table")
    stores_identity = True

    def check(self, obj: Any, storage_class: str) -> None:
        """Check the type as `Formatter.check` does, and that an image's arrays are 2-d and alike.

        Raises
        ------
        StorageClassError
            If ``obj`` is not of the storage class's type, or is an `Image`
            whose data is not a 2-d array or whose planes differ from it in shape.
        """
        super().check(obj, storage_class)
        if storage_class != "image":
            return
        if not isinstance(obj.data, np.ndarray) or obj.data.ndim != 2:
            shape = getattr(obj.data, "shape", None)
            raise StorageClassError(
                f"storage class 'image' needs Image.data to be a 2-d numpy array; "
                f"got {type_name(obj.data)}" + (f" of shape {shape}" if shape is not None else "")
            )
        seen: dict[str, str] = {}
        for plane, pixels in obj.planes.items():
            if not isinstance(plane, str) or not plane:
                raise StorageClassError(f"Image plane names must be non-empty strings; got {plane!r}")
            if plane.upper() in seen:
                raise StorageClassError(
                    f"Image planes {seen[plane.upper()]!r} and {plane!r} differ only in case; "
                    "FITS extension names do not"
                )
            seen[plane.upper()] = plane
            if not isinstance(pixels, np.ndarray) or pixels.shape != obj.data.shape:
                raise StorageClassError(
                    f"Image plane {plane!r} must be a numpy array of the image's shape {obj.data.shape}; "
                    f"got {type_name(pixels)} of shape {getattr(pixels, 'shape', None)}"
                )

    def write(self, obj: Any, fileobj: BinaryIO, *, identity: Mapping[str, str]) -> None:
        from astropy.io import fits

        if isinstance(obj, Image):
            self.check(obj, "image")
        else:
            try:
                self.check(obj, "table")
            except StorageClassError:
                raise StorageClassError(
                    f"format 'fits' stores skybutler.Image or pyarrow.Table; got {type_name(obj)}"
                ) from None
        identity = validated_identity(identity)
        with self._wrap_errors("write"):
            primary_header = _identity_header(identity)
            if isinstance(obj, Image):
                hdus = _image_hdus(obj, primary_header)
            else:
                hdus = [fits.PrimaryHDU(header=primary_header), fits.table_to_hdu(_to_astropy(obj))]
            buffer = io.BytesIO()  # astropy may seek while writing; the target need not allow it
            fits.HDUList(hdus).writeto(buffer, output_verify="exception")
        fileobj.write(buffer.getbuffer())

    def read(self, fileobj: BinaryIO, *, parameters: Mapping[str, Any] | None = None) -> Any:
        from astropy.io import fits

        reader = CountingReader(fileobj)
        with self._open(reader) as hdul:
            if parameters and "hdu" in parameters:
                selected = _select_hdu(hdul, parameters["hdu"])
                if _holds_table(hdul[selected]):
                    given = check_parameters(parameters, ("columns", "rows", "hdu"), what="fits tables")
                    return self._read_table(hdul, selected, reader, given)
                _require_pixels(hdul, selected)
                given = check_parameters(parameters, ("bbox", "hdu"), what="fits images")
                return self._read_image(hdul, selected, reader, given.get("bbox"), with_planes=False)
            index = _image_index(hdul)
            if index is not None:
                given = check_parameters(parameters, ("bbox", "hdu"), what="fits images")
                return self._read_image(hdul, index, reader, given.get("bbox"), with_planes=True)
            if _hdu_at(hdul, 1) is not None and isinstance(hdul[1], fits.BinTableHDU):
                given = check_parameters(parameters, ("columns", "rows", "hdu"), what="fits tables")
                return self._read_table(hdul, 1, reader, given)
            raise FormatError(f"cannot read {self.name} file: it holds neither an image nor a binary table")

    def check_file(self, fileobj: BinaryIO, storage_class: str) -> None:
        """Check, from its headers alone, that a FITS file reads as ``storage_class``.

        ``image`` needs the HDU `read` takes for the image to be 2-d, with every
        plane of its shape; ``table`` needs the file to hold no image and a
        binary table in its first extension (what `read` returns as a table).

        Raises
        ------
        StorageClassError
            If the file holds the other kind of content, or an image that is not 2-d.
        FormatError
            If it is not a FITS file, is truncated, or holds neither an image nor a table.
        """
        super().check_file(fileobj, storage_class)
        from astropy.io import fits

        reader = CountingReader(fileobj)
        with self._open(reader) as hdul:
            index = _image_index(hdul)
            table = index is None and _hdu_at(hdul, 1) is not None and isinstance(hdul[1], fits.BinTableHDU)
            if index is None and not table:
                raise FormatError(f"cannot read {self.name} file: it holds neither an image nor a binary table")
            if storage_class == "table":
                if not table:
                    assert index is not None
                    raise StorageClassError(
                        f"storage class 'table' needs a FITS binary table; the file holds an image "
                        f"(HDU {index}, shape {tuple(hdul[index].shape)}), which would be read instead"
                    )
                _require_complete(hdul, 1, reader)
                return
            if index is None:
                raise StorageClassError(
                    "storage class 'image' needs a 2-d FITS image; the file holds a binary table "
                    f"(HDU 1, {hdul[1].header.get('NAXIS2', 0)} rows) and no image"
                )
            shape = tuple(hdul[index].shape)
            if len(shape) != 2:
                raise StorageClassError(
                    f"storage class 'image' needs a 2-d FITS image; HDU {index} holds an image of shape {shape}"
                )
            for _, plane_index in _planes(hdul, index):
                _plane_shape(hdul, plane_index, shape)  # read refuses planes of another shape
            _require_complete(hdul, index, reader)

    def read_identity(self, fileobj: BinaryIO) -> dict[str, str] | None:
        with self._open(CountingReader(fileobj)) as hdul:
            header = hdul[0].header
            identity = {key: str(header[card]) for key, card in IDENTITY_CARDS.items() if card in header}
        return identity or None

    def read_cutouts(
        self,
        fileobj: BinaryIO,
        boxes: Sequence[tuple[int, int, int, int]],
        *,
        plane: str | None = None,
        hdu: int | str | tuple[str, int] | None = None,
    ) -> tuple[list[Image], int]:
        """Read many small boxes of one image, reading only the rows of each box.

        Only the headers up to the HDU read are read (and the primary one).

        Parameters
        ----------
        fileobj
            A readable, seekable binary file object holding an image.
        boxes
            Boxes ``(y0, y1, x0, x1)`` in the stored image's pixels (end
            exclusive), clipped to the image.
        plane
            Read this plane's pixels instead of the image's own: the same plane
            as ``read(...).planes[plane]``.
        hdu
            Read this HDU's pixels instead, selected as the ``hdu`` read parameter
            selects it (an index, an ``EXTNAME`` or an ``(EXTNAME, EXTVER)`` pair).

        Returns
        -------
        cutouts : list[Image]
            One per box, with the image's header and ``origin`` at the box's
            clipped corner (plus the stored image's own origin).
        bytes_read : int
            How many bytes were read from ``fileobj``, headers included.

        Raises
        ------
        FormatError
            If a box lies wholly outside the image or is empty, the plane or HDU
            does not exist or holds no pixels, both ``plane`` and ``hdu`` are
            given, or the file is not a readable FITS image.

        Examples
        --------
        >>> stars = [(y - 10, y + 11, x - 10, x + 11) for y, x in positions]  # doctest: +SKIP
        >>> cutouts, bytes_read = FitsFormatter().read_cutouts(fileobj, stars)  # doctest: +SKIP
        >>> sci2, _ = FitsFormatter().read_cutouts(fileobj, stars, hdu=("SCI", 2))  # doctest: +SKIP
        """
        if plane is not None and hdu is not None:
            raise FormatError("give a plane or an hdu to cut out of, not both")
        reader = CountingReader(fileobj)
        with self._open(reader) as hdul:
            if hdu is not None:
                index = _select_hdu(hdul, hdu)
                _require_pixels(hdul, index)
            else:
                found = _image_index(hdul)
                if found is None:
                    raise FormatError(f"cannot read cutouts from {self.name} file: it holds no image")
                index = found
            header, origin = _image_header(hdul, index)
            if plane is not None:
                index = _plane_index(hdul, index, plane)
            _require_complete(hdul, index, reader)
            pixels = hdul[index]
            shape = _image_shape(pixels)
            cutouts = []
            for box in boxes:
                y0, y1, x0, x1 = _clip(as_box(box, what="a cutout box"), shape)
                cutouts.append(
                    Image(
                        _native(pixels.section[y0:y1, x0:x1]),
                        header=copy.deepcopy(header),  # HISTORY lists are not shared
                        origin=(origin[0] + y0, origin[1] + x0),
                    )
                )
        return cutouts, reader.bytes_read

    @contextlib.contextmanager
    def _open(self, reader: CountingReader) -> Iterator[fits.HDUList]:
        """Open the file reading headers only; data is read when asked for."""
        from astropy.io import fits

        with (
            self._wrap_errors("read"),
            fits.open(reader, mode="readonly", memmap=False, lazy_load_hdus=True) as hdul,
        ):
            yield hdul

    def _read_image(
        self, hdul: fits.HDUList, index: int, reader: CountingReader, bbox: Any, *, with_planes: bool
    ) -> Image:
        header, origin = _image_header(hdul, index)
        shape = _image_shape(hdul[index])
        box = (0, shape[0], 0, shape[1]) if bbox is None else _clip(as_box(bbox, what="bbox"), shape)
        y0, y1, x0, x1 = box
        planes = {}
        for name, plane_index in _planes(hdul, index) if with_planes else ():
            _plane_shape(hdul, plane_index, shape)
            _require_complete(hdul, plane_index, reader)
            planes[name] = _pixels(hdul[plane_index], box, shape)
        _require_complete(hdul, index, reader)
        data = _pixels(hdul[index], box, shape)
        return Image(data, header=header, planes=planes, origin=(origin[0] + y0, origin[1] + x0))

    def _read_table(
        self, hdul: fits.HDUList, index: int, reader: CountingReader, given: dict[str, Any]
    ) -> pyarrow.Table:
        from astropy.table import Table

        _require_complete(hdul, index, reader)
        table = _to_arrow(Table.read(hdul[index], character_as_bytes=False, mask_invalid=False))
        if "columns" in given:
            table = table.select(as_columns(given["columns"], table.column_names))
        if "rows" in given:
            start, stop = as_rows(given["rows"])
            table = table.slice(start, max(0, min(stop, table.num_rows) - start))
        return table


# --- images -----------------------------------------------------------------


def _image_hdus(image: Image, primary_header: fits.Header) -> list[Any]:
    from astropy.io import fits

    for plane, pixels in {"data": image.data, **image.planes}.items():
        if pixels.dtype.str[1:] not in _PIXEL_TYPES:
            raise FormatError(
                f"fits cannot store {pixels.dtype} pixels (in {plane!r}); "
                "use an integer type or float32/float64 (a mask as uint8, say)"
            )
    header = _to_header(image.header)
    header.extend(primary_header)
    if image.origin != (0, 0):
        for card, value in zip(ORIGIN_CARDS, image.origin, strict=True):
            header[card] = int(value)
    hdus = [fits.PrimaryHDU(data=image.data, header=header)]
    hdus += [fits.ImageHDU(data=pixels, name=plane.upper()) for plane, pixels in image.planes.items()]
    return hdus


def _image_index(hdul: fits.HDUList) -> int | None:
    """Return the index of the HDU holding the image: the primary one, or the first image extension."""
    for index, hdu in enumerate(hdul):
        if _is_image(hdu) and hdu.header.get("NAXIS"):
            return index
        if index > 0 and not _is_image(hdu):
            return None
    return None


def _image_header(hdul: fits.HDUList, index: int) -> tuple[dict[str, Any], tuple[int, int]]:
    """Return the image's header values (primary, then its extension's) and its stored origin."""
    primary = hdul[0].header
    header = _from_header(primary)
    if index > 0:
        header.update(_from_header(hdul[index].header))
    origin = (int(primary.get(ORIGIN_CARDS[0], 0)), int(primary.get(ORIGIN_CARDS[1], 0)))
    return header, origin


def _hdu_at(hdul: fits.HDUList, index: int) -> Any | None:
    """Return HDU ``index``, or None past the last one, reading headers only up to it.

    ``len(hdul)`` would read every header of the file; this reads as far as needed.
    """
    try:
        return hdul[index]
    except IndexError:
        return None


def _extver(hdu: Any) -> int:
    """Return the HDU's ``EXTVER`` (1 when absent, as FITS defines it)."""
    try:
        return int(hdu.header.get("EXTVER", 1))
    except (TypeError, ValueError):
        return 1


def _planes(hdul: fits.HDUList, image_index: int) -> Iterator[tuple[str, int]]:
    """Yield ``(plane name, HDU index)`` of every image extension with pixels after the image.

    The name is the ``EXTNAME`` in lower case, with ``,<EXTVER>`` appended when its
    ``EXTVER`` is not 1 (so four ``SCI`` extensions give ``sci``, ``sci,2``, ...), or
    ``hdu<index>`` when the HDU has no name or an earlier plane took it. Names
    depend only on earlier HDUs, so a caller looking for one plane can stop at it
    without reading the headers after it.
    """
    taken: set[str] = set()
    index = image_index + 1
    while (hdu := _hdu_at(hdul, index)) is not None:
        if _is_image(hdu) and hdu.header.get("NAXIS"):
            extname = str(hdu.header.get("EXTNAME", "")).strip().lower()
            version = _extver(hdu)
            name = extname if version == 1 else f"{extname},{version}"
            if not extname or name in taken:
                name = f"hdu{index}"
            taken.add(name)
            yield name, index
        index += 1


def _plane_index(hdul: fits.HDUList, image_index: int, plane: str) -> int:
    names = []
    for name, index in _planes(hdul, image_index):
        if name == plane.lower():
            return index
        names.append(name)
    raise FormatError(f"no plane {plane!r} in this image; it has {', '.join(names) or 'none'}")


def _plane_shape(hdul: fits.HDUList, index: int, shape: tuple[int, int]) -> None:
    """Raise `FormatError` if the plane in HDU ``index`` differs in shape from the image."""
    hdu = hdul[index]
    if tuple(hdu.shape) != shape:
        raise FormatError(
            f"cannot read fits file: extension {hdu.name or index} has shape "
            f"{tuple(hdu.shape)}, not the image's {shape}"
        )


def _hdu_spec(value: Any) -> tuple[int | None, str | None, int | None]:
    """Return the ``hdu`` read parameter as ``(index, EXTNAME, EXTVER)``, or raise `FormatError`."""
    form = "an HDU index (3), an EXTNAME ('SCI') or an (EXTNAME, EXTVER) pair (('SCI', 2))"
    if isinstance(value, str):
        if value.strip():
            return None, value.strip().upper(), None
    elif isinstance(value, tuple | list):
        if len(value) == 2 and isinstance(value[0], str) and value[0].strip() and not isinstance(value[1], bool):
            try:
                version = operator.index(value[1])
            except TypeError:
                pass
            else:
                return None, value[0].strip().upper(), version
    elif not isinstance(value, bool):
        try:
            index = operator.index(value)
        except TypeError:
            pass
        else:
            if index < 0:
                raise FormatError(f"hdu index must be 0 or more (0 is the primary HDU); got {index}")
            return index, None, None
    raise FormatError(f"hdu must be {form}; got {value!r}")


def _select_hdu(hdul: fits.HDUList, value: Any) -> int:
    """Return the index of the HDU the ``hdu`` read parameter names, reading headers only up to it.

    Raises
    ------
    FormatError
        If the file has no such HDU; the message lists those it has.
    """
    index, name, version = _hdu_spec(value)
    if index is not None:
        if _hdu_at(hdul, index) is not None:
            return index
    else:
        at = 0
        while (hdu := _hdu_at(hdul, at)) is not None:
            if hdu.name.upper() == name and (version is None or _extver(hdu) == version):
                return at
            at += 1
    wanted = index if index is not None else (name if version is None else f"({name!r}, {version})")
    raise FormatError(f"no HDU {wanted!r} in this file; it has {_describe_hdus(hdul)}")


def _describe_hdus(hdul: fits.HDUList) -> str:
    """Return a list of a file's HDUs for messages: ``0 PRIMARY (no data), 1 SCI,1 (image 5x5), ...``."""
    parts = []
    at = 0
    while (hdu := _hdu_at(hdul, at)) is not None:
        if _is_image(hdu):
            shape = tuple(hdu.shape)
            what = f"image {'x'.join(map(str, shape))}" if shape else "no data"
        elif _holds_table(hdu):
            what = f"table, {hdu.header.get('NAXIS2', 0)} rows"
        else:
            what = type(hdu).__name__
        parts.append(f"{at} {hdu.name or '(no name)'},{_extver(hdu)} ({what})")
        at += 1
    return ", ".join(parts)


def _holds_table(hdu: Any) -> bool:
    from astropy.io import fits

    return isinstance(hdu, fits.BinTableHDU | fits.TableHDU)


def _require_pixels(hdul: fits.HDUList, index: int) -> None:
    """Raise `FormatError` unless HDU ``index`` is an image with pixels."""
    hdu = hdul[index]
    if not _is_image(hdu) or not hdu.header.get("NAXIS"):
        what = "a table" if _holds_table(hdu) else ("no data" if _is_image(hdu) else type(hdu).__name__)
        raise FormatError(f"HDU {index} ({hdu.name or 'no name'}) holds {what}, not an image's pixels")


def _is_image(hdu: Any) -> bool:
    from astropy.io import fits

    return isinstance(hdu, fits.PrimaryHDU | fits.ImageHDU | fits.CompImageHDU)


def _image_shape(hdu: Any) -> tuple[int, int]:
    shape = tuple(hdu.shape)  # from the header; no pixels are read
    if len(shape) != 2:
        raise FormatError(f"cannot read fits file: its image has shape {shape}; skybutler.Image is 2-d")
    return shape  # type: ignore[return-value]


def _clip(box: tuple[int, int, int, int], shape: tuple[int, int]) -> tuple[int, int, int, int]:
    """Clip a box ``(y0, y1, x0, x1)`` to an image, refusing one that is empty or wholly outside."""
    y0, y1, x0, x1 = box
    if y0 >= y1 or x0 >= x1:
        raise FormatError(f"box {box} is empty; a box is (y0, y1, x0, x1) with y0 < y1 and x0 < x1")
    clipped = (max(y0, 0), min(y1, shape[0]), max(x0, 0), min(x1, shape[1]))
    if clipped[0] >= clipped[1] or clipped[2] >= clipped[3]:
        raise FormatError(f"box {box} (y0, y1, x0, x1) lies outside the image of shape {shape}")
    return clipped


def _pixels(hdu: Any, box: tuple[int, int, int, int], shape: tuple[int, int]) -> np.ndarray:
    y0, y1, x0, x1 = box
    if box == (0, shape[0], 0, shape[1]):
        return _native(hdu.data)
    return _native(hdu.section[y0:y1, x0:x1])  # reads only these rows, each from x0 to x1


def _native(array: Any) -> np.ndarray:
    """Return ``array`` in the machine's byte order (FITS stores big-endian)."""
    array = np.asarray(array)
    return array if array.dtype.isnative else array.astype(array.dtype.newbyteorder("="))


def _require_complete(hdul: fits.HDUList, index: int, reader: CountingReader) -> None:
    """Raise `FormatError` if the file ends before HDU ``index`` does, padding included.

    astropy only warns about this, then fails in some later call, or not at all
    when the pixels asked for happen to lie before the cut.
    """
    # The HDU's own fileinfo: HDUList.fileinfo also checks every HDU for resizing,
    # reading every header of the file.
    info = hdul[index].fileinfo()
    end = info["datLoc"] + info["datSpan"]
    file_size = reader.size()
    if end > file_size:
        raise FormatError(f"cannot read fits file: it is truncated ({file_size} bytes; HDU {index} ends at {end})")


# --- headers ----------------------------------------------------------------


def _is_skipped(keyword: str) -> bool:
    return keyword in _STRUCTURAL or keyword in _RESERVED or bool(_NAXIS_N.match(keyword))


def _identity_header(identity: dict[str, str]) -> fits.Header:
    from astropy.io import fits

    header = fits.Header()
    for key, value in identity.items():
        header[_keyword(IDENTITY_CARDS[key])] = value
    return header


def _to_header(values: Mapping[str, Any]) -> fits.Header:
    """Return FITS header cards for `Image.header` values, skipping structural and reserved keys."""
    from astropy.io import fits

    header = fits.Header()
    for key, value in values.items():
        keyword = str(key).upper()
        if _is_skipped(keyword):
            continue
        if keyword in _COMMENTARY:
            lines = [value] if isinstance(value, str) else value
            if not isinstance(lines, list | tuple) or not all(isinstance(line, str) for line in lines):
                raise FormatError(f"header card {key!r} must hold a str or a list of str lines")
            for line in lines:
                header.append(fits.Card(keyword, line), end=True)
            continue
        if isinstance(value, np.generic):
            value = value.item()
        if not (value is None or isinstance(value, str | bool | int | float | complex)):
            raise FormatError(
                f"header card {key!r} holds {type_name(value)}; "
                "FITS cards hold str, int, float, bool, complex or None"
            )
        header.append(fits.Card(_keyword(keyword), value), end=True)
    return header


def _from_header(header: fits.Header) -> dict[str, Any]:
    """Return the values of a FITS header as Python values, commentary cards as lists of lines."""
    values: dict[str, Any] = {}
    for keyword, value in header.items():
        if _is_skipped(keyword):
            continue
        if keyword in _COMMENTARY:
            values.setdefault(keyword, []).append(str(value))
        else:
            values[keyword] = value
    return values


def _keyword(keyword: str) -> str:
    """Return ``keyword`` as astropy wants it, marked HIERARCH when it is not a plain 8-character one."""
    return keyword if _PLAIN_KEYWORD.match(keyword) else f"HIERARCH {keyword}"


# --- tables -----------------------------------------------------------------


def _to_astropy(table: pyarrow.Table) -> Table:
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


def _to_arrow(table: Table) -> pyarrow.Table:
    import pyarrow as pa
    from astropy.table import MaskedColumn

    arrays = []
    for name in table.colnames:
        column = table[name]
        values = _native(np.ma.getdata(column))
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
