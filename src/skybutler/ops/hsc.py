"""The HSC raw-ingest plugin (``hsc-raw``): a raw's primary header in, its data id, records and metadata out.

It is a built-in plugin (`skybutler.ops.plugins.BUILTIN_PLUGINS`); the demo's synthetic
raws (`skybutler.demo.synthetic`) are written to be read by it. `header_to_data_id` holds
the header logic; `HscRawPlugin` turns its result into what ingest needs.

Examples
--------
>>> header_to_data_id({"INSTRUME": "HSC", "EXP-ID": "HSCE00903334", "FILTER01": "HSC-R", "DET-ID": 16,
...                    "DATE-OBS": "2024-03-10T08:00:00", "EXPTIME": 150.0})["visit"]
903334
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from .plugins import IngestPlugin, footprint, observation_records

__all__ = ["DETECTOR_MAX", "FILTER_BANDS", "INSTRUMENT", "PHYSICAL_FILTER_BANDS", "HscRawPlugin", "day_obs", "header_to_data_id"]

INSTRUMENT = "HSC"
PHYSICAL_FILTER_BANDS: dict[str, str] = {"HSC-R": "r", "HSC-I": "i"}
"""Physical filter -> band of the two broad-band filters the demo's synthetic raws use."""

_NARROW = ("NB0387", "NB0400", "NB0468", "NB0515", "NB0527", "NB0656", "NB0718", "NB0816", "NB0921", "NB0926",
           "NB0973", "NB1010")
FILTER_BANDS: dict[str, str] = {
    "HSC-G": "g", "HSC-R": "r", "HSC-R2": "r", "HSC-I": "i", "HSC-I2": "i", "HSC-Z": "z", "HSC-Y": "y",
    **{f: f"N{int(f[2:])}" for f in _NARROW}, "IB0945": "I945"}
"""Physical filter -> band of every HSC filter this plugin reads: the broad bands (the second R and I
filters are the same bands) and the narrow (``NB0921`` -> ``N921``) and intermediate ones."""
DETECTOR_MAX = 112
"""Detector ids are below this: 0-103 are science CCDs, 104-111 focus CCDs."""
_SCIENCE_DETECTORS = 104


def day_obs(when: datetime) -> int:
    """The observing day of ``when`` as ``YYYYMMDD``; it rolls over at 12:00 UTC-12h (the Rubin rule)."""
    return int((when - timedelta(hours=12)).strftime("%Y%m%d"))


_OBSERVATION_TYPES = {"OBJECT": "science", "BIAS": "bias", "DOMEFLAT": "flat", "DARK": "dark"}
_EXP_ID = re.compile(r"^HSCE(\d{8})$")
_FRAME_ID = re.compile(r"^HSCA(\d{8})$")


def header_to_data_id(header: Mapping[str, Any]) -> dict[str, Any]:
    """Read a raw header into the metadata a raw ingest records.

    This is the logic of the HSC raw-ingest plugin: one header in, the data id and
    exposure metadata out. ``EXP-ID`` (``HSCE00903334``) gives the exposure id; an
    old-style ``FRAMEID`` (``HSCA90333400``: exposure id times 100 plus a detector
    digit) is accepted when ``EXP-ID`` is missing.

    Parameters
    ----------
    header
        The raw's primary header.

    Returns
    -------
    dict
        ``instrument``, ``exposure``, ``visit``, ``detector``, ``detector_name``,
        ``physical_filter``, ``band``, ``day_obs``, ``exposure_time``,
        ``timespan_begin``, ``timespan_end`` (timezone-aware UTC datetimes),
        ``observation_type``, ``target_name``, ``tracking_ra``, ``tracking_dec``.

    Raises
    ------
    ValueError
        If the header is not an HSC raw or lacks a key the data id needs.
    """
    try:
        instrument = str(header["INSTRUME"]).strip()
        if instrument not in (INSTRUMENT, "Hyper Suprime-Cam"):
            raise ValueError(f"not an HSC raw: INSTRUME={instrument!r}")
        if "EXP-ID" in header:
            key, pattern, divisor = "EXP-ID", _EXP_ID, 1
        else:
            key, pattern, divisor = "FRAMEID", _FRAME_ID, 100
        value = str(header[key]).strip()
        if not (match := pattern.match(value)):
            raise ValueError(f"cannot read an exposure id from {key}={value!r}")
        exposure = int(match.group(1)) // divisor
        physical_filter = str(header["FILTER01"]).strip()
        exposure_time = float(header["EXPTIME"])
        begin, end = _exposure_times(header, exposure_time)
        detector = int(header["DET-ID"])
    except KeyError as err:
        raise ValueError(f"raw header lacks {err.args[0]!r}") from None
    if physical_filter not in FILTER_BANDS:
        raise ValueError(f"unknown HSC filter FILTER01={physical_filter!r}; known: {', '.join(FILTER_BANDS)}")
    tracking_ra = tracking_dec = None
    if "RA2000" in header and "DEC2000" in header:
        from astropy.coordinates import Angle  # here: `ingest --help` lists this plugin without astropy

        tracking_ra = float(Angle(header["RA2000"], unit="hourangle").deg)
        tracking_dec = float(Angle(header["DEC2000"], unit="deg").deg)
    return {
        "instrument": INSTRUMENT,
        "exposure": exposure,
        "visit": exposure,
        "detector": detector,
        "detector_name": str(header.get("DETNAME", "")),
        "physical_filter": physical_filter,
        "band": FILTER_BANDS[physical_filter],
        "day_obs": day_obs(begin),
        "exposure_time": exposure_time,
        "timespan_begin": begin,
        "timespan_end": end,
        "observation_type": _OBSERVATION_TYPES.get(str(header.get("DATA-TYP", "OBJECT")).strip(), "unknown"),
        "target_name": str(header.get("OBJECT", "")).strip(),
        "tracking_ra": tracking_ra,
        "tracking_dec": tracking_dec,
    }


def _exposure_times(header: Mapping[str, Any], exposure_time: float) -> tuple[datetime, datetime]:
    """The exposure's start and end (aware, UTC) from its header.

    A real HSC raw gives the UT date in ``DATE-OBS`` (``2016-03-07``) and the UT times of
    start and end in ``UT-STR`` and ``UT-END`` (older ones: ``UT``); the date with a time
    (``2016-03-07T08:16:40.567``) is read as it is. Without an end time it is the start
    plus ``EXPTIME``; an end before the start crossed midnight UT.
    """
    date = str(header["DATE-OBS"]).strip()
    with_time = "T" in date
    start = None if with_time else header.get("UT-STR", header.get("UT"))
    if not with_time and start is None:
        raise ValueError(f"DATE-OBS={date!r} has no time of day and the header has no UT-STR (or UT)")
    try:
        begin = datetime.fromisoformat(date if with_time else f"{date}T{str(start).strip()}")
        begin = begin.astimezone(UTC) if begin.tzinfo else begin.replace(tzinfo=UTC)
        if with_time or "UT-END" not in header:
            return begin, begin + timedelta(seconds=exposure_time)
        end = datetime.fromisoformat(f"{begin.date().isoformat()}T{str(header['UT-END']).strip()}").replace(tzinfo=UTC)
    except ValueError as err:
        raise ValueError(f"cannot read the exposure's time from DATE-OBS={date!r}, UT-STR/UT/UT-END: {err}") from None
    return begin, end if end >= begin else end + timedelta(days=1)


class HscRawPlugin(IngestPlugin):
    """Hyper Suprime-Cam raws: data ids from ``EXP-ID``/``DET-ID``/``FILTER01``, regions from the WCS.

    The records it gives: the instrument (``HSC``), each filter found with its band
    (`FILTER_BANDS`), each detector found (``DET-ID``, named by ``DETNAME``,
    purpose SCIENCE or FOCUS), and the observation records of `observation_records`.
    """

    name = "hsc-raw"
    description = ("Hyper Suprime-Cam raw frames (FITS): EXP-ID, DET-ID, FILTER01, DATE-OBS with UT-STR/UT-END; "
                   "regions from the WCS")
    metadata_keys = {"object": "OBJECT", "airmass": "AIRMASS", "seeing": "SEEING", "mjd": "MJD",
                     "gain": "GAIN", "read_noise": "RDNOISE", "ra": "RA2000", "dec": "DEC2000"}

    def data_id(self, header: Mapping[str, Any], path: str) -> dict[str, Any]:
        """``instrument``, ``exposure``, ``visit``, ``detector``, ``physical_filter``, ``band``, ``day_obs``."""
        values = header_to_data_id(header)
        return {k: values[k] for k in ("instrument", "exposure", "visit", "detector", "physical_filter", "band",
                                       "day_obs")}

    def records(self, header: Mapping[str, Any], path: str) -> dict[str, list[dict[str, Any]]]:
        """Instrument, band, physical filter and detector records, then the observation records."""
        values = header_to_data_id(header)
        detector = values["detector"]
        if not 0 <= detector < DETECTOR_MAX:
            raise ValueError(f"DET-ID={detector} is not an HSC detector (0-{DETECTOR_MAX - 1})")
        return {
            "instrument": [{"instrument": INSTRUMENT, "class_name": "HSC", "detector_max": DETECTOR_MAX}],
            "band": [{"band": values["band"]}],
            "physical_filter": [{"instrument": INSTRUMENT, "physical_filter": values["physical_filter"],
                                 "band": values["band"]}],
            "detector": [{"instrument": INSTRUMENT, "detector": detector, "name": values["detector_name"] or None,
                          "purpose": "SCIENCE" if detector < _SCIENCE_DETECTORS else "FOCUS"}],
            **observation_records(values, footprint(header)),
        }
