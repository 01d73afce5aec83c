"""File templates: how data ids become safe, unique, readable paths."""

from __future__ import annotations

import posixpath
import uuid
from urllib.parse import unquote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from skybutler.datastore import DEFAULT_TEMPLATE, Datastore, FileTemplate, FileTemplates, sanitize
from skybutler.errors import TemplateError
from skybutler.model import DataId, DatasetRef, DatasetType

CALEXP = DatasetType("calexp", ("instrument", "visit", "detector"), "image")
DEEP_COADD = DatasetType("deepCoadd", ("skymap", "tract", "patch", "band"), "image")
ID = uuid.UUID("018f0000-0000-7000-8000-000000000001")


def calexp(run: str = "HSC/runs/RC2", band: str | None = "r", **data_id) -> DatasetRef:
    values = {"instrument": "HSC", "visit": 903334, "detector": 16, **data_id}
    implied = {"band": band} if band is not None else {}
    return DatasetRef(ID, CALEXP, DataId(values, implied=implied), run)


def coadd(patch: str = "8,6", band: str = "i", run: str = "RC2") -> DatasetRef:
    data_id = DataId(skymap="hsc_rings_v1", tract=9813, patch=patch, band=band)
    return DatasetRef(ID, DEEP_COADD, data_id, run)


# -- formatting --------------------------------------------------------------------------


def test_format_specs_pad_numbers_and_the_extension_is_appended():
    template = FileTemplate("{run}/{dataset_type}/{band}/{dataset_type}_{visit:08d}_{detector:03d}")

    assert template.format(calexp(), extension=".fits") == "HSC%2Fruns%2FRC2/calexp/r/calexp_00903334_016.fits"
    assert template.format(calexp(), extension="fits") == "HSC%2Fruns%2FRC2/calexp/r/calexp_00903334_016.fits"
    assert template.format(calexp()) == "HSC%2Fruns%2FRC2/calexp/r/calexp_00903334_016"


def test_the_default_template_is_run_dataset_type_and_data_id_values_in_dimension_order():
    assert DEFAULT_TEMPLATE == "{run}/{dataset_type}/{dataset_type}_{data_id}"
    assert FileTemplate(DEFAULT_TEMPLATE).format(calexp(), extension=".fits") == (
        "HSC%2Fruns%2FRC2/calexp/calexp_HSC_903334_16.fits"
    )
    assert FileTemplate(DEFAULT_TEMPLATE).format(coadd(), extension=".fits") == (
        "RC2/deepCoadd/deepCoadd_hsc_rings_v1_9813_8,6_i.fits"
    )


def test_id_is_the_dataset_id():
    assert FileTemplate("{run}/{id}").format(calexp(run="r1")) == f"r1/{ID}"


def test_values_fill_implied_dimensions_of_a_data_id_that_is_not_expanded():
    template = FileTemplate("{run}/{band}/{dataset_type}_{visit}")

    assert template.format(calexp(band=None), values={"band": "g"}) == "HSC%2Fruns%2FRC2/g/calexp_903334"


def test_specials_cannot_be_overridden_by_values_or_variables():
    template = FileTemplate("{run}/{dataset_type}_{visit}")

    path = template.format(calexp(run="real"), values={"run": "fake"}, variables={"dataset_type": "fake"})

    assert path == "real/calexp_903334"


def test_operator_variables_fill_their_fields():
    template = FileTemplate("{run}/r{reqnum:04d}/a{attnum}/{unitname}/{site}/{dataset_type}_{visit}")

    path = template.format(
        calexp(run="w01"), variables={"reqnum": 42, "attnum": 2, "unitname": "D0001", "site": "ncsa"}
    )

    assert path == "w01/r0042/a2/D0001/ncsa/calexp_903334"


# -- optional segments -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "band", "expected"),
    [
        ("{run}/{band?}/{dataset_type}_{visit}", "r", "run/r/calexp_903334"),
        ("{run}/{band?}/{dataset_type}_{visit}", None, "run/calexp_903334"),
        ("{run}/{dataset_type}_{visit}_{band?}", None, "run/calexp_903334"),
        ("{run}/{dataset_type}_{band?}_{visit}", None, "run/calexp_903334"),
        ("{band?}/{run}/{dataset_type}_{visit}", None, "run/calexp_903334"),
        ("{band?}_{run}/{dataset_type}_{visit}", None, "run/calexp_903334"),
        ("{run}/b{band?}/{dataset_type}_{visit}", None, "run/b/calexp_903334"),
    ],
)
def test_a_missing_optional_field_is_dropped_with_the_separator_before_it(text, band, expected):
    assert FileTemplate(text).format(calexp(run="run", band=band)) == expected


def test_only_literal_separators_are_dropped_never_part_of_a_value():
    template = FileTemplate("{run}/{dataset_type}{band?}_{visit}")

    assert template.format(calexp(run="run", band=None), values={"dataset_type": "x"}) == "run/calexp_903334"
    assert FileTemplate("{run}/{unitname}{band?}/{visit}").format(
        calexp(run="run", band=None), variables={"unitname": "u_"}
    ) == "run/u_/903334"


def test_a_missing_required_field_names_the_field_the_dataset_type_and_the_values_available():
    template = FileTemplate("{run}/{band}/{dataset_type}_{visit}")

    with pytest.raises(TemplateError, match=r"\{band\}.*'calexp'.*available: .*visit=903334"):
        template.format(calexp(band=None))


def test_an_empty_value_counts_as_missing():
    with pytest.raises(TemplateError, match=r"needs \{band\}"):
        FileTemplate("{run}/{band}/{id}").format(calexp(run="run", band=""))
    assert FileTemplate("{run}/{band?}/{id}").format(calexp(run="run", band="")) == f"run/{ID}"


# -- sanitisation ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("8,6", "8,6"),
        ("HSC-R+i=2.5", "HSC-R+i=2.5"),
        ("-leading-dash", "-leading-dash"),
        ("903334", "903334"),
        ("hsc_rings_v1", "hsc_rings_v1"),
        ("../../etc", "%2E.%2F..%2Fetc"),
        ("/abs", "%2Fabs"),
        ("a\0b", "a%00b"),
        ("a\\b", "a%5Cb"),
        ("line\nbreak\ttab\x7f", "line%0Abreak%09tab%7F"),
        ("..", "%2E."),
        (".", "%2E"),
        (".hidden", "%2Ehidden"),
        ("", "%"),
        ("100%", "100%25"),
        ("a%2Fb", "a%252Fb"),
        ("unicodé λ", "unicod%C3%A9%20%CE%BB"),
        ("\ud800", "%ED%A0%80"),
    ],
)
def test_sanitize_escapes_every_character_outside_a_safe_set_and_keeps_ordinary_punctuation(value, expected):
    assert sanitize(value) == expected


def test_values_that_an_earlier_version_collapsed_to_one_name_get_distinct_names():
    assert len({sanitize(v) for v in ("a/b/c", "a_b_c", "a\\b\\c", "a\0b\0c")}) == 4
    template = FileTemplate("{run}/{patch}/{dataset_type}")
    assert template.format(coadd(patch="a/b/c")) != template.format(coadd(patch="a_b_c"))


any_text = st.text(st.characters(exclude_categories=()), max_size=12) | st.sampled_from(
    ["", ".", "..", "/", "%", "%2F", "a/b", "a_b", "a%2Fb", "_", "\0"])


@given(first=any_text, second=any_text, escape=st.sampled_from(["", "_", "-", ","]))
def test_distinct_values_always_give_distinct_names(first, second, escape):
    if first != second:
        assert sanitize(first, escape) != sanitize(second, escape)


@given(value=any_text, escape=st.sampled_from(["", "_", "."]))
def test_a_name_is_one_harmless_segment_that_unquotes_to_the_value(value, escape):
    name = sanitize(value, escape)
    assert "/" not in name and "\\" not in name and "\0" not in name and name not in (".", "..")
    assert not name.startswith(".") and name.isascii() and name.isprintable()
    assert name == "%" if value == "" else unquote(name, errors="surrogatepass") == value


def test_a_value_followed_by_another_in_the_segment_escapes_the_separator_between_them():
    template = FileTemplate("{run}/{band}_{physical_filter}-{visit}")
    ref = calexp(run="r")
    assert template.format(ref, values={"band": "a_b", "physical_filter": "c"}) == "r/a%5Fb_c-903334"
    assert template.format(ref, values={"band": "a", "physical_filter": "b_c"}) == "r/a_b_c-903334"
    assert template.format(ref, values={"band": "a", "physical_filter": "b-c"}) == "r/a_b%2Dc-903334"


def test_data_id_values_after_the_first_escape_the_underscore_joining_them():
    first = DatasetRef(ID, DEEP_COADD, DataId(skymap="s_1", tract=1, patch="2", band="i"), "r")
    second = DatasetRef(ID, DEEP_COADD, DataId(skymap="s", tract=1, patch="1_2", band="i"), "r")
    template = FileTemplate(DEFAULT_TEMPLATE)
    assert template.format(first) == "r/deepCoadd/deepCoadd_s_1_1_2_i"
    assert template.format(second) == "r/deepCoadd/deepCoadd_s_1_1%5F2_i"


@given(patches=st.lists(any_text.filter(bool), min_size=2, max_size=2, unique=True),
       bands=st.lists(any_text.filter(bool), min_size=2, max_size=2))
def test_distinct_data_ids_always_give_distinct_paths_under_the_root(patches, bands):
    paths = set()
    for patch, band in zip(patches, bands, strict=True):
        for text in (DEFAULT_TEMPLATE, "{run}/{band}_{patch}/{dataset_type}_{tract}_{skymap}"):
            try:
                path = FileTemplate(text).format(coadd(patch=patch, band=band))
            except TemplateError as err:
                assert "longer than 255 bytes" in str(err)
                continue
            assert posixpath.normpath(posixpath.join("/root", path)).startswith("/root/RC2/")
            assert path not in paths
            paths.add(path)


def test_touching_identifying_fields_are_refused_when_validated():
    with pytest.raises(TemplateError, match=r"\{visit\} and \{detector\} touch"):
        FileTemplate("{run}/{instrument}_{visit}{detector}").validate(CALEXP, CALEXP_KEYS)


@pytest.mark.parametrize("value", ["../../etc", "/abs", "a\0b", "..", "."])
def test_no_data_id_value_can_escape_the_root_or_break_the_path(value):
    template = FileTemplate("{run}/{patch}/{dataset_type}_{patch}")

    path = template.format(coadd(patch=value))

    assert path.startswith("RC2/") and path.count("/") == 2
    assert ".." not in path.split("/") and "\0" not in path


def test_a_patch_value_with_a_comma_appears_unchanged():
    assert FileTemplate("{run}/{tract}/{patch}/{band}/{dataset_type}").format(coadd()) == (
        "RC2/9813/8,6/i/deepCoadd"
    )


def test_a_run_with_slashes_becomes_one_directory():
    assert FileTemplate("{run}/{id}").format(calexp(run="u/someone/DM-1234")) == f"u%2Fsomeone%2FDM-1234/{ID}"


def test_a_path_segment_longer_than_255_bytes_is_refused():
    with pytest.raises(TemplateError, match="longer than 255 bytes"):
        FileTemplate("{run}/{patch}").format(coadd(patch="p" * 300))


def test_a_value_that_does_not_fit_its_format_spec_is_a_template_error():
    with pytest.raises(TemplateError, match="'8,6'.*format spec '03d'"):
        FileTemplate("{run}/{patch:03d}").format(coadd())


# Any characters (control characters and lone surrogates too) mixed with path-breaking pieces.
text_values = st.lists(
    st.text(st.characters(exclude_categories=()), max_size=5) | st.sampled_from(["/", "..", ".", "\\", "\0"]),
    max_size=8,
).map("".join)


@given(patch=text_values.filter(bool), band=text_values, run=text_values.filter(bool), unit=text_values.filter(bool))
def test_no_value_whatsoever_produces_a_path_outside_the_root(patch, band, run, unit):
    template = FileTemplate("{run}/{band?}/{unitname}_{patch}/{dataset_type}_{data_id}")
    try:
        path = template.format(coadd(patch=patch, band=band, run=run), variables={"unitname": unit},
                               extension=".fits")
    except TemplateError as err:  # allowed only for over-long segments
        assert "longer than 255 bytes" in str(err)
        return

    assert not path.startswith("/") and posixpath.normpath(path) == path
    assert all(segment not in ("", ".", "..") for segment in path.split("/"))
    assert "\0" not in path and "\\" not in path
    assert posixpath.normpath(posixpath.join("/root", path)).startswith("/root/")
    assert not Datastore("memory://skybutler-test-hypothesis").exists(path)  # the store accepts the path


# -- parsing -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("{run}/{visit.x}", "Attribute or index access"),
        ("{run}/{a[0]}", "Attribute or index access"),
        ("{run}/{band!r}", "Conversion"),
        ("{run}/{}", "positional"),
        ("{run}/{0}", "positional"),
        ("{run}/{visit:{width}}", "Nested"),
        ("{run}/{visit:08q}", "Format spec"),
        ("/{run}/{id}", "relative POSIX path"),
        ("{run}\\{id}", "relative POSIX path"),
        ("{run}/../{id}", "'..' segment"),
        ("../{run}/{id}", "'..' segment"),
        ("{run}//{id}", "'empty' segment"),
        ("{run}/./{id}", "'.' segment"),
        ("{run}/{id}/", "'empty' segment"),
        ("constant/name", "no fields"),
        ("{run", "not a valid format string"),
    ],
)
def test_invalid_or_unsafe_templates_are_refused_when_constructed(text, reason):
    with pytest.raises(TemplateError, match=reason):
        FileTemplate(text)


def test_fields_lists_every_field_and_required_fields_leaves_out_optional_ones():
    template = FileTemplate("{run}/{band?}/{dataset_type}_{visit:08d}")

    assert template.fields == {"run", "band", "dataset_type", "visit"}
    assert template.required_fields == {"run", "dataset_type", "visit"}


# -- validation --------------------------------------------------------------------------

CALEXP_KEYS = ("instrument", "visit", "detector", "band", "physical_filter", "day_obs")


@pytest.mark.parametrize(
    "text",
    [
        "{run}/{dataset_type}/{band}/{dataset_type}_{instrument}_{visit:08d}_{detector:03d}",
        "{run}/{dataset_type}_{data_id}",
        "{id}",
        "{run}/{reqnum}/{attnum}/{unitname}/{dataset_type}_{data_id}",
        "{run}/{tract?}/{dataset_type}_{data_id}",  # optional fields may name absent keys
        DEFAULT_TEMPLATE,
    ],
)
def test_templates_that_give_unique_names_are_accepted(text):
    FileTemplate(text).validate(CALEXP, CALEXP_KEYS)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("{run}/{dataset_type}_{visit}_{detector}", "dimension 'instrument' is not a field"),
        ("{run}/{dataset_type}_{instrument}_{visit}", "dimension 'detector' is not a field"),
        ("{dataset_type}/{data_id}", r"needs \{run\} or \{id\}"),
        ("{run}/{data_id}_{tract}", r"uses \{tract\}, which is neither a data id key"),
        ("{run}/{data_id}_{visti}", r"\{visti\}"),
        ("{run}/{instrument}_{visit:.3}_{detector}", r"precision in \{visit:.3\} truncates"),
    ],
)
def test_templates_that_cannot_give_unique_names_are_refused_with_the_reason(text, reason):
    with pytest.raises(TemplateError, match=reason) as caught:
        FileTemplate(text).validate(CALEXP, CALEXP_KEYS)

    assert "'calexp'" in str(caught.value)


@pytest.mark.parametrize("text", ["{run}/{data_id:.10}", "{run:.3}/{id}", "{id:.8}"])
def test_a_precision_that_truncates_an_identifying_special_is_refused(text):
    with pytest.raises(TemplateError, match="truncates"):
        FileTemplate(text).validate(CALEXP, CALEXP_KEYS)


def test_validation_accepts_extra_operator_variables_it_is_told_about():
    template = FileTemplate("{run}/{site}/{dataset_type}_{data_id}")

    with pytest.raises(TemplateError, match=r"\{site\}"):
        template.validate(CALEXP, CALEXP_KEYS)
    template.validate(CALEXP, CALEXP_KEYS, variables={"site"})


# -- per dataset type and per run --------------------------------------------------------

TEMPLATES = FileTemplates(
    default="{run}/{dataset_type}/{dataset_type}_{data_id}",
    per_dataset_type={"calexp": "{run}/calexp/{band}/calexp_{visit:08d}_{detector:03d}_{instrument}"},
    per_run={
        "reprocess": {"default": "{run}/r{reqnum}/{dataset_type}_{data_id}"},
        "special": {"calexp": "{run}/special/{id}"},
    },
)


@pytest.mark.parametrize(
    ("dataset_type", "run", "expected"),
    [
        ("deepCoadd", "ordinary", "{run}/{dataset_type}/{dataset_type}_{data_id}"),
        ("calexp", "ordinary", "{run}/calexp/{band}/calexp_{visit:08d}_{detector:03d}_{instrument}"),
        ("calexp", "reprocess", "{run}/r{reqnum}/{dataset_type}_{data_id}"),
        ("deepCoadd", "reprocess", "{run}/r{reqnum}/{dataset_type}_{data_id}"),
        ("calexp", "special", "{run}/special/{id}"),
        ("deepCoadd", "special", "{run}/{dataset_type}/{dataset_type}_{data_id}"),
    ],
)
def test_a_run_override_wins_then_the_run_default_then_the_dataset_type_then_the_default(
    dataset_type, run, expected
):
    assert TEMPLATES.template_for(dataset_type, run).text == expected


def test_file_templates_default_to_the_documented_default():
    assert FileTemplates().template_for("anything", "any run").text == DEFAULT_TEMPLATE


def test_file_templates_validate_every_template_that_can_apply_to_a_dataset_type():
    TEMPLATES.validate(CALEXP, CALEXP_KEYS)

    bad = FileTemplates(per_run={"oops": {"calexp": "{run}/{visit}"}})
    with pytest.raises(TemplateError, match="dimension 'instrument'"):
        bad.validate(CALEXP, CALEXP_KEYS)


def test_file_templates_refuse_a_malformed_template_when_constructed():
    with pytest.raises(TemplateError):
        FileTemplates(per_dataset_type={"calexp": "../{run}/{id}"})
