"""Fuzzing the way data ids, runs and templates become file names.

Every input either works — put then get gives the object back, and its file lies
under the datastore root — or is refused with one `SkyButlerError` line. Never
another exception, never a file written outside the root. SQLite and local files
in a temporary directory; a few hundred examples in all.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from skybutler import Butler, SkyButlerError

HOSTILE = ["..", ".", "/", "../..", "a/../../b", "/etc/passwd", "\\", "\0", "%", "%2F", "a_b", "a/b", "~",
           "~root", "C:\\x", "::", "s3://bucket/key", "file:///tmp/x", "\n", " ", "\u2028", "\ud800", "é", "λ",
           "\u0301", "👍", "." * 300, "x" * 300, "x" * 64, "-", "*", "?", "#", "'", '"', "<>", "|", "$HOME"]

hostile_text = st.one_of(
    st.sampled_from(HOSTILE),
    st.lists(st.sampled_from(HOSTILE) | st.text(st.characters(exclude_categories=()), max_size=4), max_size=5)
    .map("".join),
)
hostile_int = st.one_of(st.integers(-(2**63), 2**63 - 1), st.sampled_from([0, -1, 2**63 - 1, -(2**63), 2**63, 10**30]))
runs = st.one_of(st.sampled_from(["run", "u/me/run1", "HSC/runs/RC2/w_2024_10"]), hostile_text)

DATASET_TYPE_TEMPLATE = "{run}/{instrument}/{dataset_type}_{detector:05d}"

def bounded(examples: int) -> settings:
    return settings(max_examples=examples, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def assert_one_line(error: SkyButlerError) -> None:
    message = str(error)
    assert message and "\n" not in message and "Traceback" not in message, repr(message)


def files_outside(directory: Path, root: Path) -> set[str]:
    """Files and links under ``directory`` but not under ``root``, a directory in it.

    Walks only what lies beside ``root``: listing the growing repository twice per example
    made the test quadratic in its examples.
    """
    beside = [top for top in directory.iterdir() if top != root]
    found = [p for top in beside for p in ([top] if top.is_symlink() or not top.is_dir() else top.rglob("*"))]
    return {str(p.relative_to(directory)) for p in found if p.is_file() or p.is_symlink()}


def assert_under_root(butler: Butler, ref, root: Path) -> None:
    record = butler.registry.get_files([ref.id])[ref.id]
    assert ".." not in record.path.split("/") and not record.path.startswith("/")
    full = Path(butler.uri(ref)).resolve()
    assert full.is_relative_to(root.resolve()), (record.path, full)


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory):
    """A repository in a directory of its own: any file outside the repository is a write outside the root."""
    sandbox = tmp_path_factory.mktemp("fuzz_paths")
    root = sandbox / "repo"
    butler = Butler.create(root, run="run", config={"templates": {"dataset_types": {"stamp": DATASET_TYPE_TEMPLATE}}})
    butler.register_dataset_type("fuzz", ["instrument", "detector"], "dict")
    butler.register_dataset_type("stamp", ["instrument", "detector"], "text")
    yield sandbox, root, butler
    butler.close()


@bounded(200)
@given(instrument=hostile_text, detector=hostile_int, run=runs, dataset_type=st.sampled_from(["fuzz", "stamp"]))
def test_data_id_values_and_runs_round_trip_under_the_root_or_are_refused(
    sandbox, instrument, detector, run, dataset_type
):
    directory, root, butler = sandbox
    data_id = {"instrument": instrument, "detector": detector}
    obj = {"instrument": instrument, "detector": detector} if dataset_type == "fuzz" else f"{instrument}\n"
    outside_before = files_outside(directory, root)
    try:
        butler.insert_dimension_records("instrument", [{"instrument": instrument}], skip_existing=True)
        butler.insert_dimension_records("detector", [data_id], skip_existing=True)
        writer = butler.with_run(run)
        try:
            ref = writer.put(obj, dataset_type, data_id)
        except SkyButlerError:
            ref = writer.find_dataset(dataset_type, data_id, collections=[run])
            if ref is None:
                raise
        assert writer.get(ref) == obj
        assert_under_root(butler, ref, root)
        event("stored and read back")
    except SkyButlerError as error:
        assert_one_line(error)
        event(f"refused: {type(error).__name__}")
    outside_after = files_outside(directory, root)
    assert outside_after == outside_before


template_pieces = st.sampled_from([
    "{run}", "{dataset_type}", "{instrument}", "{detector}", "{detector:03d}", "{data_id}", "{id}", "{band?}",
    "{reqnum}", "{instrument:.2}", "{detector:/>8}", "{run!r}", "{0}", "{", "}", "{{", "/", "_", "-", ".", "..",
    "\\", "\0", "%", "x", "~", "/..", "../", "//",
])
PLAUSIBLE = [
    "{run}/{dataset_type}/{instrument}/{detector}", "{run}/{instrument}_{detector:03d}", "{id}",
    "{run}/{dataset_type}_{data_id}", "{run}/{reqnum}/{band?}/{dataset_type}_{instrument}-{detector}",
    "{run}/{instrument}.{detector}", "{run}/{instrument}{detector}", "{run}/{detector:/>8}_{instrument}",
    "{run}/{detector:.>8}/{instrument}", "{run}/{instrument:.2}_{detector}", "{run}/{instrument:%>300}{detector}",
]
templates = st.one_of(
    st.sampled_from(PLAUSIBLE),
    st.tuples(st.sampled_from(PLAUSIBLE), template_pieces).map("".join),
    st.lists(template_pieces, min_size=1, max_size=8).map("".join),
)


@bounded(40)
@given(template=templates, instrument=st.sampled_from(["HSC", "a/b", "..", "%2F", "é"]) | hostile_text,
       detector=hostile_int)
def test_any_template_either_names_files_under_the_root_or_is_refused(tmp_path_factory, template, instrument,
                                                                     detector):
    directory = tmp_path_factory.mktemp("fuzz_template")
    root = directory / "repo"
    try:
        butler = Butler.create(root, run="u/me/run", config={"templates": {"default": template}})
    except SkyButlerError as error:
        assert_one_line(error)
        event(f"refused at create: {type(error).__name__}")
        assert not any(p.is_file() for p in directory.rglob("*") if "repo" not in p.parts)
        return
    with butler.with_run("u/me/run", template_variables={"reqnum": 7}) as butler:
        try:
            butler.register_dataset_type("fuzz", ["instrument", "detector"], "dict")
            butler.insert_dimension_records("instrument", [{"instrument": instrument}])
            butler.insert_dimension_records("detector", [{"instrument": instrument, "detector": detector}])
            first = butler.put({"n": 1}, "fuzz", instrument=instrument, detector=detector)
            assert butler.get(first) == {"n": 1}
            assert_under_root(butler, first, root)
            if detector < 2**63 - 1:  # a second data id gets a second file, never the first one's
                butler.insert_dimension_records("detector", [{"instrument": instrument, "detector": detector + 1}])
                second = butler.put({"n": 2}, "fuzz", instrument=instrument, detector=detector + 1)
                assert butler.get(first) == {"n": 1} and butler.get(second) == {"n": 2}
                assert_under_root(butler, second, root)
            event("stored and read back")
        except SkyButlerError as error:
            assert_one_line(error)
            event(f"refused: {type(error).__name__}")
    assert {p.name for p in directory.iterdir()} <= {"repo"}
    assert not [p for p in directory.rglob("*") if os.path.islink(p)]
