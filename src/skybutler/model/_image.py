from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # numpy only names the fields' types: importing the model costs no numpy
    import numpy as np


@dataclass
class Image:
    """An image: a 2-d pixel array, a header, and optional named planes.

    Parameters
    ----------
    data
        The pixels, shape ``(ny, nx)``.
    header
        FITS-style header cards (WCS, exposure time, ...). Keys are case-insensitive
        in FITS, so use upper case.
    planes
        Extra arrays of the same shape, e.g. ``{"variance": ..., "mask": ...}``.
    origin
        ``(y0, x0)`` of pixel ``[0, 0]`` in the parent image; non-zero for cutouts.
    """

    data: np.ndarray
    header: dict[str, Any] = field(default_factory=dict)
    planes: dict[str, np.ndarray] = field(default_factory=dict)
    origin: tuple[int, int] = (0, 0)

    def __post_init__(self) -> None:
        if not isinstance(self.header, dict) and isinstance(self.header, Mapping):
            self.header = dict(self.header)

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.data.shape)  # type: ignore[return-value]
