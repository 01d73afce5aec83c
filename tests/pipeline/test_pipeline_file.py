"""Pipeline files: loading, subsets, the printed form, and validation errors that name task and connection."""

from __future__ import annotations

import textwrap

import pytest

from skybutler import PipelineError
from skybutler.pipeline import Pipeline
from support.pipeline_repo import PIPELINE_YAML


def _load(text: str) -> Pipeline:
    return Pipeline.from_yaml(textwrap.dedent(text), source="test.yaml")


def test_a_pipeline_file_gives_configured_tasks_in_dependency_order(pipeline):
    assert list(pipeline.tasks) == ["make_calexp", "gather_visit", "make_warp", "coadd"]
    assert pipeline.tasks["make_calexp"].config.scale == 3.0
    assert pipeline.description == "Toy pipeline for tests"


def test_tasks_are_ordered_by_what_they_read_not_by_file_order():
    p = _load("""
        tasks:
          coadd: support.toy_tasks:Coadd
          make_warp: support.toy_tasks:MakeWarp
          make_calexp: support.toy_tasks:MakeCalexp
    """)
    assert list(p.tasks) == ["make_calexp", "make_warp", "coadd"]


def test_the_printed_form_reproduces_the_pipeline(pipeline):
    again = Pipeline.from_yaml(pipeline.to_yaml())
    assert again.to_mapping() == pipeline.to_mapping()
    assert again.tasks["make_calexp"].config == pipeline.tasks["make_calexp"].config


def test_named_subsets_and_label_lists_select_tasks(pipeline, tmp_path):
    assert list(pipeline.subset("single_frame").tasks) == ["make_calexp", "gather_visit"]
    assert list(pipeline.subset("make_warp,coadd").tasks) == ["make_warp", "coadd"]
    path = tmp_path / "p.yaml"
    path.write_text(PIPELINE_YAML)
    assert list(Pipeline.from_file(f"{path}#coaddition").tasks) == ["make_warp", "coadd"]
    with pytest.raises(PipelineError, match="neither a subset"):
        pipeline.subset("nope")


def test_describe_lists_tasks_and_the_dataset_types_between_them(pipeline):
    d = pipeline.describe()
    assert [t["label"] for t in d["tasks"]] == list(pipeline.tasks)
    flows = {f["name"]: f for f in d["dataset_types"]}
    assert flows["calexp"]["produced_by"] == "make_calexp.calexp"
    assert sorted(flows["calexp"]["consumed_by"]) == ["gather_visit.calexps", "make_warp.calexps"]
    assert flows["raw"]["produced_by"] is None
    assert "make_calexp [support.toy_tasks:MakeCalexp]" in str(pipeline)


@pytest.mark.parametrize("spec, message", [
    ("support.toy_tasks:Nope", r"task 'a'.*has no 'Nope'.*support.toy_tasks:Nope"),
    ("no_such_module.tasks:Task", r"task 'a'.*cannot import module 'no_such_module.tasks'"),
    ("support.toy_tasks:NotATask", r"task 'a'.*not a skybutler Task"),
    ("NoModuleSeparator", r"task 'a'.*not of the form"),
])
def test_an_unknown_task_or_bad_import_path_names_the_label_and_the_path(spec, message):
    with pytest.raises(PipelineError, match=f"(?i){message}"):
        _load(f"tasks:\n  a: {spec}\n")


def test_a_bad_config_override_names_the_task_and_field():
    with pytest.raises(PipelineError, match=r"'calib'.*scale"):
        _load("""
            tasks:
              calib:
                class: support.toy_tasks:MakeCalexp
                config: {scale: not-a-number}
        """)


def test_unknown_keys_are_errors_not_silently_ignored():
    with pytest.raises(PipelineError, match="unknown key"):
        _load("tasks:\n  a: {class: 'support.toy_tasks:MakeCalexp', confg: {}}\n")
    with pytest.raises(PipelineError, match="unknown key"):
        _load("tasks:\n  a: support.toy_tasks:MakeCalexp\nsubset: {}\n")


def _task_module(tmp_path, monkeypatch, body: str) -> str:
    (tmp_path / "bad_tasks.py").write_text(textwrap.dedent("""
        from skybutler.pipeline import Input, Output, PrerequisiteInput, Task
    """) + textwrap.dedent(body))
    monkeypatch.syspath_prepend(str(tmp_path))
    import sys

    sys.modules.pop("bad_tasks", None)
    return "bad_tasks"


def test_an_input_with_dimensions_outside_the_tasks_must_be_multiple(tmp_path, monkeypatch):
    mod = _task_module(tmp_path, monkeypatch, """
        class PerVisit(Task):
            dimensions = ("visit",)
            calexp = Input("calexp", ("visit", "detector"), "array")
            out = Output("summary", ("visit",), "dict")
    """)
    with pytest.raises(PipelineError, match=r"'per_visit'.*input connection 'calexp'.*detector.*multiple=True"):
        _load(f"tasks:\n  per_visit: {mod}:PerVisit\n")


def test_an_output_must_have_the_tasks_dimensions(tmp_path, monkeypatch):
    mod = _task_module(tmp_path, monkeypatch, """
        class Wrong(Task):
            dimensions = ("visit", "detector")
            raw = Input("raw", ("visit", "detector"), "dict")
            out = Output("summary", ("visit",), "dict")
    """)
    with pytest.raises(PipelineError, match=r"'wrong'.*output connection 'out'.*task's dimensions"):
        _load(f"tasks:\n  wrong: {mod}:Wrong\n")


def test_an_unknown_dimension_names_task_and_connection(tmp_path, monkeypatch):
    mod = _task_module(tmp_path, monkeypatch, """
        class Odd(Task):
            dimensions = ("visit",)
            raw = Input("raw", ("visit", "ccd"), "dict", multiple=True)
            out = Output("summary", ("visit",), "dict")
    """)
    with pytest.raises(PipelineError, match=r"'odd'.*connection 'raw'.*ccd"):
        _load(f"tasks:\n  odd: {mod}:Odd\n")


def test_a_cycle_is_reported_with_its_tasks_and_connections(tmp_path, monkeypatch):
    mod = _task_module(tmp_path, monkeypatch, """
        class A(Task):
            dimensions = ("visit",)
            x = Input("b_out", ("visit",), "dict")
            y = Output("a_out", ("visit",), "dict")

        class B(Task):
            dimensions = ("visit",)
            x = Input("a_out", ("visit",), "dict")
            y = Output("b_out", ("visit",), "dict")
    """)
    with pytest.raises(PipelineError, match="cycle") as info:
        _load(f"tasks:\n  a: {mod}:A\n  b: {mod}:B\n")
    message = str(info.value)
    for part in ("task 'a' output 'y' (a_out)", "task 'b' input 'x'", "task 'b' output 'y' (b_out)",
                 "task 'a' input 'x'"):
        assert part in message


def test_two_producers_or_two_definitions_of_one_dataset_type_are_errors(tmp_path, monkeypatch):
    mod = _task_module(tmp_path, monkeypatch, """
        class Twin(Task):
            dimensions = ("visit", "detector")
            raw = Input("raw", ("visit", "detector"), "dict")
            out = Output("calexp", ("visit", "detector"), "array")

        class OtherKind(Task):
            dimensions = ("visit", "detector")
            raw = Input("raw", ("visit", "detector"), "dict")
            calexp = Input("calexp", ("visit", "detector"), "image")
            out = Output("other", ("visit", "detector"), "dict")
    """)
    with pytest.raises(PipelineError, match=r"also produced by task 'make_calexp' connection 'calexp'"):
        _load(f"tasks:\n  make_calexp: support.toy_tasks:MakeCalexp\n  twin: {mod}:Twin\n")
    with pytest.raises(PipelineError, match=r"'other'.*'calexp'.*\[image\] disagrees"):
        _load(f"tasks:\n  make_calexp: support.toy_tasks:MakeCalexp\n  other: {mod}:OtherKind\n")


def test_a_prerequisite_made_by_the_pipeline_is_an_error(tmp_path, monkeypatch):
    mod = _task_module(tmp_path, monkeypatch, """
        class UsesCalexpAsCalib(Task):
            dimensions = ("visit", "detector")
            calexp = PrerequisiteInput("calexp", ("visit", "detector"), "array")
            out = Output("other", ("visit", "detector"), "dict")
    """)
    with pytest.raises(PipelineError, match=r"prerequisite connection 'calexp'.*produced by task 'make_calexp'"):
        _load(f"tasks:\n  make_calexp: support.toy_tasks:MakeCalexp\n  u: {mod}:UsesCalexpAsCalib\n")
