"""FITS header cards: the identity and origin cards, and `Image.header` values to cards and back.

Split from `skybutler.formats._fits` (the `FitsFormatter`); astropy is imported on first use.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import FormatError
from .base import type_name

if TYPE_CHECKING:
    from astropy.io import fits

__all__ = ["IDENTITY_CARDS", "ORIGIN_CARDS", "from_header", "identity_header", "to_header"]

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


def _is_skipped(keyword: str) -> bool:
    return keyword in _STRUCTURAL or keyword in _RESERVED or bool(_NAXIS_N.match(keyword))


def identity_header(identity: dict[str, str]) -> fits.Header:
    """The primary header cards holding a dataset's identity (see `IDENTITY_CARDS`)."""
    from astropy.io import fits

    header = fits.Header()
    for key, value in identity.items():
        header[_keyword(IDENTITY_CARDS[key])] = value
    return header


def to_header(values: Mapping[str, Any]) -> fits.Header:
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


def from_header(header: fits.Header) -> dict[str, Any]:
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
