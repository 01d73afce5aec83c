"""Dicts as JSON and YAML."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from skybutler.errors import FormatError
from skybutler.formats import JsonFormatter, YamlFormatter

from .conftest import from_bytes, to_bytes

DICT_FORMATS = [JsonFormatter(), YamlFormatter()]


@pytest.mark.parametrize("formatter", DICT_FORMATS, ids=lambda f: f.name)
def test_numbers_round_trip_exactly(formatter):
    values = {"tiny": 1e-300, "third": 1 / 3, "big": 2**62, "negative": -17, "huge": 1.7976931348623157e308,
              "inf": math.inf, "minus_inf": -math.inf, "zero": 0.0}
    back = from_bytes(formatter, to_bytes(formatter, values))
    assert back == values
    assert all(type(back[key]) is type(values[key]) for key in values)


@pytest.mark.parametrize("formatter", DICT_FORMATS, ids=lambda f: f.name)
def test_nan_round_trips(formatter):
    assert math.isnan(from_bytes(formatter, to_bytes(formatter, {"x": math.nan}))["x"])


@pytest.mark.parametrize("formatter", DICT_FORMATS, ids=lambda f: f.name)
def test_strings_that_look_like_other_values_stay_strings(formatter):
    values = {"a": "yes", "b": "null", "c": "1e3", "d": "", "e": "0x10", "f": "~", "g": "2024-03-01", "h": "- x"}
    assert from_bytes(formatter, to_bytes(formatter, values)) == values


@pytest.mark.parametrize("formatter", DICT_FORMATS, ids=lambda f: f.name)
def test_key_order_does_not_change_the_bytes(formatter):
    assert to_bytes(formatter, {"b": 1, "a": {"d": 2, "c": 3}}) == to_bytes(formatter, {"a": {"c": 3, "d": 2}, "b": 1})


@pytest.mark.parametrize("formatter", DICT_FORMATS, ids=lambda f: f.name)
def test_numpy_scalars_are_written_as_python_numbers(formatter):
    back = from_bytes(formatter, to_bytes(formatter, {"n": np.int64(3), "x": np.float32(0.5), "ok": np.bool_(True)}))
    assert back == {"n": 3, "x": 0.5, "ok": True}
    assert type(back["n"]) is int


@pytest.mark.parametrize("formatter", DICT_FORMATS, ids=lambda f: f.name)
def test_non_string_keys_are_refused_by_path(formatter):
    with pytest.raises(FormatError, match=r"needs string keys; key 3 at stats is int"):
        to_bytes(formatter, {"stats": {3: "x"}})


@pytest.mark.parametrize("formatter", DICT_FORMATS, ids=lambda f: f.name)
def test_values_of_other_types_are_refused_by_path(formatter):
    with pytest.raises(FormatError, match=r"cannot store numpy.ndarray \(at qc.values\[1\]\)"):
        to_bytes(formatter, {"qc": {"values": [1, np.zeros(3)]}})


@pytest.mark.parametrize("formatter", DICT_FORMATS, ids=lambda f: f.name)
def test_identity_is_not_put_inside_the_dict(formatter, identity):
    data = to_bytes(formatter, {"seeing": 0.7}, identity)
    assert from_bytes(formatter, data) == {"seeing": 0.7}
    assert identity["run"].encode() not in data


def test_json_is_plain_sorted_utf8():
    data = to_bytes(JsonFormatter(), {"b": "é", "a": 1})
    assert json.loads(data) == {"a": 1, "b": "é"}
    assert data.index(b'"a"') < data.index(b'"b"')
    assert "é".encode() in data


@pytest.mark.parametrize("formatter", DICT_FORMATS, ids=lambda f: f.name)
def test_a_file_holding_a_list_is_not_a_dict(formatter):
    with pytest.raises(FormatError, match=rf"cannot read {formatter.name} file: it holds list, not a dict"):
        from_bytes(formatter, b"[1, 2]\n")


def test_yaml_written_elsewhere_without_the_end_marker_is_read():
    assert from_bytes(YamlFormatter(), b"a: 1\nb: [x, y]\n") == {"a": 1, "b": ["x", "y"]}
