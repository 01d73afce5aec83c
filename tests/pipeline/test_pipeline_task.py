"""The Task API: declared connections, typed configuration, and what a running quantum sees."""

from __future__ import annotations

import numpy as np
import pytest

from skybutler import DataId, ExecutionError, PipelineError
from skybutler.pipeline import Input, Output, PrerequisiteInput, QuantumContext, Task
from support.toy_tasks import Coadd, MakeCalexp, MakeCalexpConfig


def test_connections_are_collected_in_declaration_order_with_their_names():
    task = MakeCalexp()
    assert list(task.connections) == ["raw", "bias", "calexp"]
    assert isinstance(task.connections["bias"], PrerequisiteInput)
    assert task.connections["calexp"].name == "calexp"
    assert list(task.inputs) == ["raw"] and list(task.prerequisites) == ["bias"] and list(task.outputs) == ["calexp"]
    assert task.label == "make_calexp"
    assert task.log_dataset_type == "make_calexp_log" and task.config_dataset_type == "make_calexp_config"


def test_config_is_typed_keyword_only_and_its_printed_form_rebuilds_it():
    config = MakeCalexpConfig(scale=4.0)
    assert eval(repr(config), {"MakeCalexpConfig": MakeCalexpConfig}) == config
    assert MakeCalexpConfig.model_validate(config.to_dict()) == config
    with pytest.raises(TypeError):
        MakeCalexpConfig(4.0)  # keyword-only
    task = MakeCalexp({"scale": 5.0})
    assert task.config.scale == 5.0 and task.config.fail_detector is None


def test_a_bad_config_names_the_task_and_the_field():
    with pytest.raises(PipelineError, match=r"'calib'.*scale"):
        MakeCalexp({"scale": "lots"}, label="calib")
    with pytest.raises(PipelineError, match="nonsense"):
        MakeCalexp({"nonsense": 1})


def test_dataset_types_can_be_renamed_per_connection_but_not_unknown_ones():
    task = MakeCalexp(dataset_types={"calexp": "calexp_v2"})
    assert task.connections["calexp"].dataset_type == "calexp_v2"
    assert MakeCalexp.calexp.dataset_type == "calexp"  # the class declaration is untouched
    with pytest.raises(PipelineError, match="no connection"):
        MakeCalexp(dataset_types={"calexpp": "x"})


def test_a_subclass_inherits_connections_and_may_drop_one():
    class NoBias(MakeCalexp):
        bias = None

        def run(self, raw):
            return {"calexp": np.zeros(1)}

    assert list(NoBias().connections) == ["raw", "calexp"]


def test_config_class_must_be_a_task_config():
    with pytest.raises(PipelineError, match="TaskConfig"):
        class Bad(Task):  # noqa: F841
            config_class = dict


class _FakeButler:
    """Just enough of a butler for a QuantumContext: objects by ref id."""

    def __init__(self, objects):
        self.objects = objects

    def get_many(self, refs):
        return [self.objects[r.id] for r in refs]

    def get(self, ref, parameters=None):
        return self.objects[ref.id]


def _refs(n, name="warp"):
    import uuid

    from skybutler import DatasetRef, DatasetType

    dt = DatasetType(name, ("instrument", "visit", "skymap", "tract", "patch"), "array")
    return [DatasetRef(uuid.uuid4(), dt, DataId(instrument="HSC", visit=v, skymap="s", tract=0, patch=1), "r")
            for v in range(n)]


def _coadd_context(n=3):
    import uuid

    from skybutler import DatasetRef, DatasetType

    warps = _refs(n)
    out_dt = DatasetType("coadd", ("band", "skymap", "tract", "patch"), "dict")
    out = DatasetRef(uuid.uuid4(), out_dt, DataId(band="r", skymap="s", tract=0, patch=1), "r")
    butler = _FakeButler({r.id: np.full((2, 2), float(i)) for i, r in enumerate(warps)})
    task = Coadd()
    return QuantumContext(butler, task, out.data_id, {"warps": warps}, {"coadd": [out]}), warps, out


def test_a_task_reports_the_inputs_it_used_and_the_rest_are_only_contributing():
    context, warps, out = _coadd_context(3)
    result = context.task.run_quantum(context)
    assert result["coadd"]["visits"] == [0, 1]  # the brightest (visit 2) was dropped
    assert context.used_inputs() == warps[:2]
    assert context.match_outputs(result) == [(result["coadd"], out)]


def test_used_inputs_can_be_reported_by_ref_data_id_or_handle_and_must_be_inputs():
    context, warps, _ = _coadd_context(3)
    context.report_used("warps", [warps[1], warps[2].data_id])
    assert context.used_inputs() == warps[1:]
    context.report_used("warps", context.handles("warps")[:1])
    assert context.used_inputs() == warps[:1]
    with pytest.raises(ExecutionError, match="not one of its 'warps' inputs"):
        context.report_used("warps", _refs(1, "other"))
    with pytest.raises(ExecutionError, match="no connection"):
        context.report_used("nope", [0])


def test_returned_outputs_must_match_the_declared_ones():
    context, _, _ = _coadd_context(2)
    with pytest.raises(ExecutionError, match="returned no 'coadd'"):
        context.match_outputs({})
    with pytest.raises(ExecutionError, match="unknown output"):
        context.match_outputs({"coadd": {}, "extra": 1})
    with pytest.raises(ExecutionError, match="must return a mapping"):
        context.match_outputs(None)


def test_run_receives_loaded_objects_and_handles_for_deferred_connections():
    seen = {}

    class Peek(Task):
        dimensions = ("tract", "patch", "band")
        warps = Input("warp", ("visit", "tract", "patch"), "array", multiple=True, deferred=True)
        coadd = Output("coadd", ("tract", "patch", "band"), "dict")

        def run(self, warps):
            seen["warps"] = warps
            return {"coadd": {"n": len(warps)}}

    context, warps, _ = _coadd_context(2)
    context.task = Peek()
    assert context.task.run_quantum(context) == {"coadd": {"n": 2}}
    assert [h.ref for h in seen["warps"]] == warps
    assert seen["warps"][1].get().mean() == 1.0
