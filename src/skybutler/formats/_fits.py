"""Images and tables as FITS files (astropy), the identity in the primary header.

An image is written as a primary HDU holding its pixels and header cards,
followed by one image extension per plane (``EXTNAME`` = the plane's name in
upper case). A table is written as an empty primary HDU followed by a binary
table. Files are never compressed, so a box of pixels can be read by seeking
to its rows: `FitsFormatter.read_cutouts` reads a few kilobytes of a large
image, even on an object store.

astropy is imported on first use: it takes a quarter of a second to import,
which commands that never touch a FITS file should not pay.

The formatter is here; its helpers are beside it: ``_fits_header`` (header cards),
``_fits_hdus`` (which HDU holds what, and reading pixels) and ``_fits_table`` (tables).
"""

from __future__ import annotations

import contextlib
import copy
import io
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, BinaryIO

import numpy as np

from ..errors import FormatError, StorageClassError
from ..model import Image
from ._fits_hdus import (
    clip,
    hdu_at,
    holds_table,
    image_hdu_index,
    image_hdus,
    image_header,
    image_shape,
    native,
    plane_hdu_index,
    plane_hdus,
    plane_shape,
    read_pixels,
    require_complete,
    require_pixels,
    select_hdu,
)
from ._fits_header import IDENTITY_CARDS, ORIGIN_CARDS, identity_header
from ._fits_table import to_arrow, to_astropy
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

__all__ = ["IDENTITY_CARDS", "ORIGIN_CARDS", "FitsFormatter"]


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
            primary_header = identity_header(identity)
            if isinstance(obj, Image):
                hdus = image_hdus(obj, primary_header)
            else:
                hdus = [fits.PrimaryHDU(header=primary_header), fits.table_to_hdu(to_astropy(obj))]
            buffer = io.BytesIO()  # astropy may seek while writing; the target need not allow it
            fits.HDUList(hdus).writeto(buffer, output_verify="exception")
        fileobj.write(buffer.getbuffer())

    def read(self, fileobj: BinaryIO, *, parameters: Mapping[str, Any] | None = None) -> Any:
        from astropy.io import fits

        reader = CountingReader(fileobj)
        with self._open(reader) as hdul:
            if parameters and "hdu" in parameters:
                selected = select_hdu(hdul, parameters["hdu"])
                if holds_table(hdul[selected]):
                    given = check_parameters(parameters, ("columns", "rows", "hdu"), what="fits tables")
                    return self._read_table(hdul, selected, reader, given)
                require_pixels(hdul, selected)
                given = check_parameters(parameters, ("bbox", "hdu"), what="fits images")
                return self._read_image(hdul, selected, reader, given.get("bbox"), with_planes=False)
            index = image_hdu_index(hdul)
            if index is not None:
                given = check_parameters(parameters, ("bbox", "hdu"), what="fits images")
                return self._read_image(hdul, index, reader, given.get("bbox"), with_planes=True)
            if hdu_at(hdul, 1) is not None and isinstance(hdul[1], fits.BinTableHDU):
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
            index = image_hdu_index(hdul)
            table = index is None and hdu_at(hdul, 1) is not None and isinstance(hdul[1], fits.BinTableHDU)
            if index is None and not table:
                raise FormatError(f"cannot read {self.name} file: it holds neither an image nor a binary table")
            if storage_class == "table":
                if not table:
                    assert index is not None
                    raise StorageClassError(
                        f"storage class 'table' needs a FITS binary table; the file holds an image "
                        f"(HDU {index}, shape {tuple(hdul[index].shape)}), which would be read instead"
                    )
                require_complete(hdul, 1, reader)
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
            for _, plane_index in plane_hdus(hdul, index):
                plane_shape(hdul, plane_index, shape)  # read refuses planes of another shape
            require_complete(hdul, index, reader)

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
                index = select_hdu(hdul, hdu)
                require_pixels(hdul, index)
            else:
                found = image_hdu_index(hdul)
                if found is None:
                    raise FormatError(f"cannot read cutouts from {self.name} file: it holds no image")
                index = found
            header, origin = image_header(hdul, index)
            if plane is not None:
                index = plane_hdu_index(hdul, index, plane)
            require_complete(hdul, index, reader)
            pixels = hdul[index]
            shape = image_shape(pixels)
            clipped = [clip(as_box(box, what="a cutout box"), shape) for box in boxes]
            # Named before they are read, the rows of every box come from a remote store in
            # one batch of concurrent requests, rather than one request after another.
            reader.prefetch([part for box in clipped for part in box_ranges(pixels, box, shape)])
            cutouts = [
                Image(
                    native(pixels.section[y0:y1, x0:x1]),
                    header=copy.deepcopy(header),  # HISTORY lists are not shared
                    origin=(origin[0] + y0, origin[1] + x0),
                )
                for y0, y1, x0, x1 in clipped
            ]
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
        header, origin = image_header(hdul, index)
        shape = image_shape(hdul[index])
        box = (0, shape[0], 0, shape[1]) if bbox is None else clip(as_box(bbox, what="bbox"), shape)
        y0, y1, x0, x1 = box
        plane_indexes = dict(plane_hdus(hdul, index)) if with_planes else {}
        for plane_index in plane_indexes.values():
            plane_shape(hdul, plane_index, shape)
            require_complete(hdul, plane_index, reader)
        require_complete(hdul, index, reader)
        if bbox is not None:  # a whole image is read in one piece per HDU anyway
            reader.prefetch([part for i in (*plane_indexes.values(), index) for part in box_ranges(hdul[i], box, shape)])
        planes = {name: read_pixels(hdul[i], box, shape) for name, i in plane_indexes.items()}
        data = read_pixels(hdul[index], box, shape)
        return Image(data, header=header, planes=planes, origin=(origin[0] + y0, origin[1] + x0))

    def _read_table(
        self, hdul: fits.HDUList, index: int, reader: CountingReader, given: dict[str, Any]
    ) -> pyarrow.Table:
        from astropy.table import Table

        require_complete(hdul, index, reader)
        table = to_arrow(Table.read(hdul[index], character_as_bytes=False, mask_invalid=False))
        if "columns" in given:
            table = table.select(as_columns(given["columns"], table.column_names))
        if "rows" in given:
            start, stop = as_rows(given["rows"])
            table = table.slice(start, max(0, min(stop, table.num_rows) - start))
        return table


def box_ranges(hdu: Any, box: tuple[int, int, int, int], shape: tuple[int, int]) -> list[tuple[int, int]]:
    """The byte ranges ``(start, end)`` of the file that hold ``box`` (clipped) of an image HDU.

    FITS stores an image row after row (the last axis varies fastest), uncompressed: one
    range per row of the box, or one for the box when it spans whole rows.
    """
    y0, y1, x0, x1 = box
    start = int(hdu.fileinfo()["datLoc"])
    pixel = abs(int(hdu.header["BITPIX"])) // 8  # as stored; BZERO/BSCALE apply after reading
    row = shape[1] * pixel
    if (x0, x1) == (0, shape[1]):
        return [(start + y0 * row, start + y1 * row)]
    return [(start + y * row + x0 * pixel, start + y * row + x1 * pixel) for y in range(y0, y1)]
