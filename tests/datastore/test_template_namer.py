"""Compiled namers: the names `FileTemplate.format`'s rules give, for a million refs at a time."""

from __future__ import annotations

import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from skybutler.datastore import DEFAULT_TEMPLATE, FileTemplate
from skybutler.errors import TemplateError
from skybutler.model import DataId, DatasetRef, DatasetType

CALEXP = DatasetType("calexp", ("instrument", "visit", "detector"), "image")
ID = uuid.UUID("018f0000-0000-7000-8000-000000000001")


def ref(run: str = "RC2", implied: dict | None = None, dataset_type: DatasetType = CALEXP, **values) -> DatasetRef:
    data_id = {"instrument": "HSC", "visit": 903334, "detector": 16, **values}
    return DatasetRef(ID, dataset_type, DataId(data_id, implied=implied), run)


def outcome(name, r):
    """The path, or the error's message: a namer must refuse what the general rules refuse, the same way."""
    try:
        return name(r)
    except TemplateError as err:
        return f"TemplateError: {err}"


TEMPLATES = [
    DEFAULT_TEMPLATE,
    "{run}/{dataset_type}/{band?}/{dataset_type}_{visit:08d}_{detector:03d}",
    "{band?}_{run}/{dataset_type}_{visit}",
    "{run}/{band}_{physical_filter}-{visit}/{detector:>4}",
    "{run}/{unitname}{band?}/{id}_{visit}",
    "{run}/{id}-{visit}/{id:.>40}",
    "{run}/{id:d}",
    "{run}/r{reqnum:04d}/{dataset_type}_{data_id}_{band?}",
    "{run}/{data_id:>30}/{dataset_type}",
    "{run}/{visit}/{dataset_type}/{visit:x}_{detector}",
    "{run}/{{literal}}/{dataset_type}_{data_id}",
    "{run}/ünïcode/{dataset_type}_{data_id}",
]
KEYS = ("instrument", "visit", "detector")
# Values that are plain, need escaping, are empty, do not fit a numeric spec, or make segments too long.
values = st.one_of(
    st.integers(-5, 10**6), st.sampled_from(["HSC", "8,6", "a_b", "../x", "", ".", "p" * 260, "λ", "%"]),
    st.text(max_size=4),
)
implied_values = st.dictionaries(st.sampled_from(["band", "physical_filter"]), values, max_size=2)
variables = st.dictionaries(st.sampled_from(["reqnum", "unitname", "band"]), values, max_size=3)


@settings(max_examples=100, deadline=None)
@given(text=st.sampled_from(TEMPLATES), order=st.permutations(KEYS), rows=st.lists(
    st.tuples(values, values, values, implied_values), min_size=1, max_size=4),
    variables=variables, run=st.sampled_from(["RC2", "u/someone/w_01", ""]),
    extension=st.sampled_from(["", ".fits", "json"]))
def test_a_namer_names_every_ref_as_the_general_rules_do(text, order, rows, variables, run, extension):
    template = FileTemplate(text)
    name = template.namer(CALEXP, run, variables=variables, extension=extension)
    refs = [DatasetRef(ID, CALEXP, DataId(dict(zip(order, row[:3], strict=True)), implied=row[3]), run)
            for row in rows]
    # Twice: once as values are first seen, once from the namer's caches.
    for r in refs + refs:
        assert outcome(name, r) == outcome(lambda r: template.format_directly(r, variables, extension), r)


def test_data_ids_with_their_keys_in_another_order_get_the_same_name():
    name = FileTemplate("{run}/{dataset_type}_{visit:08d}_{detector:03d}_{instrument}").namer(CALEXP, "RC2")
    first = DatasetRef(ID, CALEXP, DataId(instrument="HSC", visit=1, detector=2), "RC2")
    second = DatasetRef(ID, CALEXP, DataId(detector=2, visit=1, instrument="HSC"), "RC2")

    assert name(first) == name(second) == "RC2/calexp_00000001_002_HSC"


def test_an_implied_value_fills_its_field_and_without_it_an_optional_field_is_dropped():
    name = FileTemplate("{run}/{band?}/{dataset_type}_{visit}").namer(CALEXP, "RC2")

    assert name(ref(implied={"band": "r"})) == "RC2/r/calexp_903334"
    assert name(ref()) == "RC2/calexp_903334"
    assert name(ref(implied={"band": "i"})) == "RC2/i/calexp_903334"


def test_a_data_id_value_wins_over_a_variable_and_an_implied_value_over_a_variable():
    template = FileTemplate("{run}/{band}/{dataset_type}_{visit}")
    name = template.namer(CALEXP, "RC2", variables={"band": "var", "visit": 1})

    assert name(ref(implied={"band": "r"})) == "RC2/r/calexp_903334"
    assert name(ref()) == "RC2/var/calexp_903334"


def test_the_variables_are_those_given_when_the_namer_was_made():
    variables = {"unitname": "u1"}
    name = FileTemplate("{run}/{unitname}/{dataset_type}_{data_id}").namer(CALEXP, "RC2", variables=variables)
    variables["unitname"] = "u2"

    assert name(ref()) == "RC2/u1/calexp_HSC_903334_16"


def test_a_ref_of_another_run_or_dataset_type_gets_its_own_name():
    template = FileTemplate(DEFAULT_TEMPLATE)
    name = template.namer(CALEXP, "RC2", extension=".fits")
    other_type = DatasetType("src", CALEXP.dimensions, "table")

    assert name(ref(run="other")) == "other/calexp/calexp_HSC_903334_16.fits"
    assert name(ref(dataset_type=other_type)) == "RC2/src/src_HSC_903334_16.fits"


def test_a_value_seen_before_that_makes_a_segment_too_long_is_still_refused():
    template = FileTemplate("{run}/{instrument}_{visit}/{dataset_type}")
    name = template.namer(CALEXP, "RC2")
    assert name(ref(instrument="x" * 200)) == f"RC2/{'x' * 200}_903334/calexp"

    with pytest.raises(TemplateError, match="longer than 255 bytes") as first:
        name(ref(instrument="x" * 200, visit=10**60))
    with pytest.raises(TemplateError) as again:
        name(ref(instrument="x" * 200, visit=10**60))
    assert str(again.value) == str(first.value) == outcome(lambda r: template.format(r), ref(
        instrument="x" * 200, visit=10**60)).removeprefix("TemplateError: ")


def test_a_missing_required_value_is_refused_naming_the_field_and_the_dataset_type():
    name = FileTemplate("{run}/{band}/{dataset_type}_{visit}").namer(CALEXP, "RC2")
    assert name(ref(implied={"band": "r"})) == "RC2/r/calexp_903334"

    with pytest.raises(TemplateError, match=r"needs \{band\} for dataset type 'calexp'.*visit=903334"):
        name(ref())


def test_format_gives_what_a_namer_gives():
    template = FileTemplate("{run}/{reqnum}/{band?}/{dataset_type}_{data_id}")
    r = ref(implied={"band": "g"})

    assert template.format(r, variables={"reqnum": 7}, extension="fits") == (
        template.namer(CALEXP, "RC2", variables={"reqnum": 7}, extension="fits")(r)
    ) == "RC2/7/g/calexp_HSC_903334_16.fits"


# -- the contract a namer compiles through -------------------------------------------------


def test_assemble_gives_the_literal_text_and_the_callers_pieces_dropping_a_missing_field_with_its_separator():
    template = FileTemplate("{run}/{dataset_type}/{band?}/{dataset_type}_{visit:08d}")
    pieces = template.assemble(lambda f: None if f.optional else (f.name, f.spec))

    assert pieces == [("run", ""), "/", ("dataset_type", ""), "", "/", ("dataset_type", ""), "_", ("visit", "08d")]
    # Nothing before the missing field: the separator after it goes instead.
    assert FileTemplate("{band?}_{run}/{id}").assemble(lambda f: None if f.optional else f.name) == [
        "", "run", "/", "id"]


@pytest.mark.parametrize("path", ["", "a//b", "a/./b", "../a", "a/", "a/" + "é" * 128])
def test_check_path_refuses_an_unsafe_path_or_a_segment_over_255_bytes_naming_the_ref(path):
    template = FileTemplate(DEFAULT_TEMPLATE)

    with pytest.raises(TemplateError, match=r"unsafe path|longer than 255 bytes") as err:
        template.check_path(path, ref())
    assert str(ref()) in str(err.value)
    template.check_path("a/" + "é" * 127, ref())  # 254 bytes: fits
