"""How the pages write values: times, durations, sizes, data ids, and the links between pages."""

from __future__ import annotations

import datetime
import urllib.parse
import uuid
from collections.abc import Mapping
from typing import Any

__all__ = ["FILTERS", "dataset_url", "duration", "size", "submission_url", "utc_time"]


def dataset_url(dataset_id: uuid.UUID | str) -> str:
    """The page of a dataset."""
    return f"/datasets/{urllib.parse.quote(str(dataset_id), safe='')}"


def submission_url(name: str, what: str = "submissions") -> str:
    """The page of a submission (``what``: ``"submissions"``, ``"graph"`` or ``"fragments/submission"``)."""
    # A name is made of anything its campaign's run allowed; quoted whole, slashes included.
    return f"/{what}/{urllib.parse.quote(name, safe='')}"


def utc_time(value: datetime.datetime | None) -> str:
    """A registry time (naive UTC) to the second, marked UTC."""
    if value is None:
        return ""
    return value.strftime("%Y-%m-%d %H:%M:%S") + " UTC"


def duration(seconds: float | None) -> str:
    """Seconds as ``0.12 s``, ``42.0 s``, ``3 min 05 s`` or ``2 h 03 min``."""
    if seconds is None:
        return ""
    if seconds < 1:
        return f"{seconds:.2f} s"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def size(n: int | None) -> str:
    """Bytes in binary units (``512.6 KiB``)."""
    if n is None:
        return ""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


def data_id(value: Mapping[str, Any] | None) -> str:
    """``band=r, patch=0, tract=0`` (keys in the data id's order)."""
    if not value:
        return "(none)"
    return ", ".join(f"{k}={v}" for k, v in dict(value).items())


def number(value: float | None, digits: int = 2) -> str:
    """A float with ``digits`` decimals, blank for None."""
    return "" if value is None else f"{value:.{digits}f}"


FILTERS = {"utc_time": utc_time, "duration": duration, "size": size, "data_id": data_id, "number": number}
"""The Jinja filters of the pages."""
