"""The HDUs of a FITS file: which holds the image and its planes, selecting one, and reading pixels.

Split from `skybutler.formats._fits` (the `FitsFormatter`). Every lookup reads headers only
as far as it needs (``len(hdul)`` would read them all), so a cutout of a large
multi-extension file reads a few kilobytes.
"""

from __future__ import annotations

import operator
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import FormatError
from ..model import Image
from ._fits_header import ORIGIN_CARDS, from_header, to_header
from .base import CountingReader

if TYPE_CHECKING:
    from astropy.io import fits

__all__ = ["clip", "hdu_at", "holds_table", "image_hdu_index", "image_hdus", "image_header", "image_shape", "native",
           "plane_hdu_index", "plane_hdus", "plane_shape", "read_pixels", "require_complete", "require_pixels",
           "select_hdu"]

_PIXEL_TYPES = frozenset(["u1", "i1", "i2", "u2", "i4", "u4", "i8", "u8", "f4", "f8"])


def image_hdus(image: Image, primary_header: fits.Header) -> list[Any]:
    """The HDUs of an image's file: the primary one with its pixels and cards, then one per plane."""
    from astropy.io import fits

    for plane, pixels in {"data": image.data, **image.planes}.items():
        if pixels.dtype.str[1:] not in _PIXEL_TYPES:
            raise FormatError(
                f"fits cannot store {pixels.dtype} pixels (in {plane!r}); "
                "use an integer type or float32/float64 (a mask as uint8, say)"
            )
    header = to_header(image.header)
    header.extend(primary_header)
    if image.origin != (0, 0):
        for card, value in zip(ORIGIN_CARDS, image.origin, strict=True):
            header[card] = int(value)
    hdus = [fits.PrimaryHDU(data=image.data, header=header)]
    hdus += [fits.ImageHDU(data=pixels, name=plane.upper()) for plane, pixels in image.planes.items()]
    return hdus


def image_hdu_index(hdul: fits.HDUList) -> int | None:
    """Return the index of the HDU holding the image: the primary one, or the first image extension."""
    for index, hdu in enumerate(hdul):
        if _is_image(hdu) and hdu.header.get("NAXIS"):
            return index
        if index > 0 and not _is_image(hdu):
            return None
    return None


def image_header(hdul: fits.HDUList, index: int) -> tuple[dict[str, Any], tuple[int, int]]:
    """Return the image's header values (primary, then its extension's) and its stored origin."""
    primary = hdul[0].header
    header = from_header(primary)
    if index > 0:
        header.update(from_header(hdul[index].header))
    origin = (int(primary.get(ORIGIN_CARDS[0], 0)), int(primary.get(ORIGIN_CARDS[1], 0)))
    return header, origin


def hdu_at(hdul: fits.HDUList, index: int) -> Any | None:
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


def plane_hdus(hdul: fits.HDUList, image_index: int) -> Iterator[tuple[str, int]]:
    """Yield ``(plane name, HDU index)`` of every image extension with pixels after the image.

    The name is the ``EXTNAME`` in lower case, with ``,<EXTVER>`` appended when its
    ``EXTVER`` is not 1 (so four ``SCI`` extensions give ``sci``, ``sci,2``, ...), or
    ``hdu<index>`` when the HDU has no name or an earlier plane took it. Names
    depend only on earlier HDUs, so a caller looking for one plane can stop at it
    without reading the headers after it.
    """
    taken: set[str] = set()
    index = image_index + 1
    while (hdu := hdu_at(hdul, index)) is not None:
        if _is_image(hdu) and hdu.header.get("NAXIS"):
            extname = str(hdu.header.get("EXTNAME", "")).strip().lower()
            version = _extver(hdu)
            name = extname if version == 1 else f"{extname},{version}"
            if not extname or name in taken:
                name = f"hdu{index}"
            taken.add(name)
            yield name, index
        index += 1


def plane_hdu_index(hdul: fits.HDUList, image_index: int, plane: str) -> int:
    """The index of the HDU holding ``plane`` (named as `planes` names it), or `FormatError`."""
    names = []
    for name, index in plane_hdus(hdul, image_index):
        if name == plane.lower():
            return index
        names.append(name)
    raise FormatError(f"no plane {plane!r} in this image; it has {', '.join(names) or 'none'}")


def plane_shape(hdul: fits.HDUList, index: int, shape: tuple[int, int]) -> None:
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


def select_hdu(hdul: fits.HDUList, value: Any) -> int:
    """Return the index of the HDU the ``hdu`` read parameter names, reading headers only up to it.

    Raises
    ------
    FormatError
        If the file has no such HDU; the message lists those it has.
    """
    index, name, version = _hdu_spec(value)
    if index is not None:
        if hdu_at(hdul, index) is not None:
            return index
    else:
        at = 0
        while (hdu := hdu_at(hdul, at)) is not None:
            if hdu.name.upper() == name and (version is None or _extver(hdu) == version):
                return at
            at += 1
    wanted = index if index is not None else (name if version is None else f"({name!r}, {version})")
    raise FormatError(f"no HDU {wanted!r} in this file; it has {_describe_hdus(hdul)}")


def _describe_hdus(hdul: fits.HDUList) -> str:
    """Return a list of a file's HDUs for messages: ``0 PRIMARY (no data), 1 SCI,1 (image 5x5), ...``."""
    parts = []
    at = 0
    while (hdu := hdu_at(hdul, at)) is not None:
        if _is_image(hdu):
            shape = tuple(hdu.shape)
            what = f"image {'x'.join(map(str, shape))}" if shape else "no data"
        elif holds_table(hdu):
            what = f"table, {hdu.header.get('NAXIS2', 0)} rows"
        else:
            what = type(hdu).__name__
        parts.append(f"{at} {hdu.name or '(no name)'},{_extver(hdu)} ({what})")
        at += 1
    return ", ".join(parts)


def holds_table(hdu: Any) -> bool:
    """Whether an HDU is a (binary or ASCII) table."""
    from astropy.io import fits

    return isinstance(hdu, fits.BinTableHDU | fits.TableHDU)


def require_pixels(hdul: fits.HDUList, index: int) -> None:
    """Raise `FormatError` unless HDU ``index`` is an image with pixels."""
    hdu = hdul[index]
    if not _is_image(hdu) or not hdu.header.get("NAXIS"):
        what = "a table" if holds_table(hdu) else ("no data" if _is_image(hdu) else type(hdu).__name__)
        raise FormatError(f"HDU {index} ({hdu.name or 'no name'}) holds {what}, not an image's pixels")


def _is_image(hdu: Any) -> bool:
    from astropy.io import fits

    return isinstance(hdu, fits.PrimaryHDU | fits.ImageHDU | fits.CompImageHDU)


def image_shape(hdu: Any) -> tuple[int, int]:
    """The shape of an image HDU, from its header; `FormatError` unless it is 2-d."""
    shape = tuple(hdu.shape)  # from the header; no pixels are read
    if len(shape) != 2:
        raise FormatError(f"cannot read fits file: its image has shape {shape}; skybutler.Image is 2-d")
    return shape  # type: ignore[return-value]


def clip(box: tuple[int, int, int, int], shape: tuple[int, int]) -> tuple[int, int, int, int]:
    """Clip a box ``(y0, y1, x0, x1)`` to an image, refusing one that is empty or wholly outside."""
    y0, y1, x0, x1 = box
    if y0 >= y1 or x0 >= x1:
        raise FormatError(f"box {box} is empty; a box is (y0, y1, x0, x1) with y0 < y1 and x0 < x1")
    clipped = (max(y0, 0), min(y1, shape[0]), max(x0, 0), min(x1, shape[1]))
    if clipped[0] >= clipped[1] or clipped[2] >= clipped[3]:
        raise FormatError(f"box {box} (y0, y1, x0, x1) lies outside the image of shape {shape}")
    return clipped


def read_pixels(hdu: Any, box: tuple[int, int, int, int], shape: tuple[int, int]) -> np.ndarray:
    """The pixels of ``box`` (clipped) of an image HDU of ``shape``, reading only its rows."""
    y0, y1, x0, x1 = box
    if box == (0, shape[0], 0, shape[1]):
        return native(hdu.data)
    return native(hdu.section[y0:y1, x0:x1])  # reads only these rows, each from x0 to x1


def native(array: Any) -> np.ndarray:
    """Return ``array`` in the machine's byte order (FITS stores big-endian)."""
    array = np.asarray(array)
    return array if array.dtype.isnative else array.astype(array.dtype.newbyteorder("="))


def require_complete(hdul: fits.HDUList, index: int, reader: CountingReader) -> None:
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
