from __future__ import annotations

import io
from typing import Any

import numpy as np
import pytest

from skybutler.formats import Formatter
from skybutler.model import Image

IDENTITY = {
    "dataset_id": "0190f3b2-7c1e-7a4d-9e5f-1b2c3d4e5f60",
    "dataset_type": "calexp",
    "data_id": "instrument=HSC, visit=903334, detector=16",
    "run": "HSC/runs/RC2/w_2024_10/DM-43210/20240301T000000Z",
}


@pytest.fixture
def identity() -> dict[str, str]:
    return dict(IDENTITY)


@pytest.fixture
def image() -> Image:
    rng = np.random.default_rng(42)
    data = rng.normal(size=(40, 30)).astype(np.float32)
    return Image(
        data,
        header={"EXPTIME": 30.0, "FILTER": "HSC-R", "VISIT": 903334, "PHOTOMETRIC": True},
        planes={"variance": np.abs(data).astype(np.float64), "mask": (data > 1).astype(np.uint16)},
    )


def to_bytes(formatter: Formatter, obj: Any, identity: dict[str, str] | None = None) -> bytes:
    buffer = io.BytesIO()
    formatter.write(obj, buffer, identity=identity if identity is not None else IDENTITY)
    return buffer.getvalue()


def from_bytes(formatter: Formatter, data: bytes, **parameters: Any) -> Any:
    return formatter.read(io.BytesIO(data), parameters=parameters or None)


class ByteCountingFile(io.BytesIO):
    """An in-memory file that counts the bytes read from it."""

    bytes_read = 0

    def read(self, size: int | None = -1) -> bytes:
        data = super().read(size)
        self.bytes_read += len(data)
        return data

    def readinto(self, buffer: Any) -> int:
        count = super().readinto(buffer)
        self.bytes_read += count
        return count
