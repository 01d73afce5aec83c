"""Building quantum graphs: one quantum per task per data id, exact inputs, ids and file names assigned."""

from __future__ import annotations

import collections

import pytest

from skybutler import GraphError, PipelineError
from skybutler.pipeline import QuantumGraphBuilder, build_quantum_graph, execute_graph
from support.pipeline_repo import BIAS_SPLIT, INPUTS, PIPELINE_YAML, fill_repository
from support.records import DETECTORS, VISITS

RUN = "u/test/run1"


def _build(repo, pipeline, **kwargs):
    kwargs.setdefault("input_collections", INPUTS)
    kwargs.setdefault("output_run", RUN)
    return build_quantum_graph(repo, pipeline, **kwargs)


def _overlaps(repo):
    """(visit, patch) -> detectors overlapping, from the registry's overlap rows."""
    out = collections.defaultdict(set)
    for di in repo.query_data_ids(["visit", "detector", "tract", "patch"]):
        out[(di["visit"], di["patch"])].add(di["detector"])
    return out


def test_one_quantum_per_task_per_data_id(repo, pipeline):
    graph = _build(repo, pipeline)
    overlaps = _overlaps(repo)
    assert graph.counts() == {
        "make_calexp": len(VISITS) * len(DETECTORS),
        "gather_visit": len(VISITS),
        "make_warp": len(overlaps),
        "coadd": len({(p, VISITS[v]) for v, p in overlaps}),  # (patch, band): 4 patches x 2 bands
    }


def test_inputs_are_exactly_the_existing_or_upstream_datasets(repo, pipeline):
    graph = _build(repo, pipeline)
    raws = {r.data_id: r for r in repo.query_datasets("raw", collections=INPUTS)}
    calexps = {}
    for q in graph.by_task("make_calexp"):
        (raw,) = q.inputs["raw"]
        assert raw == raws[raw.data_id] and raw.data_id == q.data_id
        calexps[q.data_id] = (q.id, q.outputs["calexp"][0])
    for q in graph.by_task("gather_visit"):
        expected = sorted((v for k, v in calexps.items() if k["visit"] == q.data_id["visit"]),
                          key=lambda x: x[1].data_id["detector"])
        assert [r.id for r in q.inputs["calexps"]] == [ref.id for _, ref in expected]
        assert set(q.upstream) == {qid for qid, _ in expected}
    overlaps = _overlaps(repo)
    for q in graph.by_task("make_warp"):
        detectors = [r.data_id["detector"] for r in q.inputs["calexps"]]
        assert detectors == sorted(overlaps[(q.data_id["visit"], q.data_id["patch"])])
        assert q.data_id.implied["band"] == {"HSC-R": "r", "HSC-I": "i"}[VISITS[q.data_id["visit"]]]
    for q in graph.by_task("coadd"):
        assert {r.data_id["visit"] for r in q.inputs["warps"]} == {
            v for (v, p) in overlaps if p == q.data_id["patch"] and VISITS[v][-1].lower() == q.data_id["band"]}


def test_output_ids_are_new_uuid7s_and_file_names_come_from_the_templates(repo, pipeline):
    graph = _build(repo, pipeline)
    ids = [r.id for q in graph for r in q.output_refs()]
    assert len(set(ids)) == len(ids) and all(i.version == 7 for i in ids)
    assert len({q.id for q in graph}) == len(graph)
    for q in graph.by_task("make_calexp"):
        ref = q.outputs["calexp"][0]
        assert ref.run == RUN
        assert ref.extra["path"] == repo.templates.template_for("calexp", RUN).format(
            ref, values=ref.data_id.full, extension=".npy")
        assert q.log.dataset_type.name == "make_calexp_log" and q.log.extra["path"].endswith(".txt")
    assert set(graph.init_outputs) == set(pipeline.tasks)


def test_file_names_follow_operator_templates_and_variables(tmp_path, pipeline):
    from skybutler import Butler

    config = {"templates": {"dataset_types": {
        "calexp": "{run}/r{reqnum}/{band}/{dataset_type}_{instrument}_{visit:08d}_{detector:03d}"}}}
    butler = Butler.create(tmp_path / "repo", config=config)
    fill_repository(butler)
    butler = butler.with_run("u/x", template_variables={"reqnum": 11})
    graph = _build(butler, pipeline.subset("make_calexp"))
    q = graph.by_task("make_calexp")[0]
    assert q.outputs["calexp"][0].extra["path"] == "u%2Ftest%2Frun1/r11/r/calexp_HSC_00903334_000.npy"
    assert graph.header["template_variables"] == {"reqnum": 11}
    report = execute_graph(butler, graph)
    assert report.ok
    ref = q.outputs["calexp"][0]
    assert repo_path(butler, ref) == ref.extra["path"]


def repo_path(butler, ref):
    return butler.registry.get_files([ref.id])[ref.id].path


def test_calibrations_are_chosen_by_the_observation_time(repo, pipeline):
    graph = _build(repo, pipeline.subset("make_calexp"))
    times = {r["visit"]: r["timespan_begin"] for r in repo.query_dimension_records("visit")}
    for q in graph:
        (bias,) = q.inputs["bias"]
        epoch = repo.get(bias)["epoch"]
        assert epoch == (1 if times[q.data_id["visit"]] < BIAS_SPLIT else 2)
        assert bias.data_id["detector"] == q.data_id["detector"]


def test_a_missing_calibration_is_an_error_naming_task_connection_and_data_id(repo, pipeline):
    with pytest.raises(GraphError, match=r"'make_calexp' prerequisite 'bias'.*detector.*valid at"):
        _build(repo, pipeline, input_collections=["HSC/raw/all"])


def test_where_selects_data_and_flows_down_the_pipeline(repo, pipeline):
    graph = _build(repo, pipeline, where="visit = :v AND detector IN (0, 1)", bind={"v": 903334})
    assert graph.counts()["make_calexp"] == 2 and graph.counts()["gather_visit"] == 1
    graph = _build(repo, pipeline, where="band = 'i'")
    assert {q.data_id["visit"] for q in graph.by_task("make_calexp")} == {903338, 903340}
    graph = _build(repo, pipeline, where="patch = 3")
    overlaps = _overlaps(repo)
    assert {(q.data_id["visit"], q.data_id["detector"]) for q in graph.by_task("make_calexp")} == {
        (v, d) for (v, p), dets in overlaps.items() if p == 3 for d in dets}
    assert {q.data_id["patch"] for q in graph.by_task("coadd")} == {3}


def test_an_empty_result_says_which_constraint_emptied_it(repo, pipeline):
    with pytest.raises(GraphError, match=r"where expression 'visit = 1' matches none"):
        _build(repo, pipeline, where="visit = 1")
    repo.registry.register_collection("empty")
    with pytest.raises(GraphError, match=r"no raw datasets in collections \[empty"):
        _build(repo, pipeline.subset("make_calexp"), input_collections=["empty", "HSC/calib"])


def test_an_input_neither_produced_nor_registered_is_a_pipeline_error(repo, pipeline):
    with pytest.raises(PipelineError, match=r"'make_warp' input connection 'calexps'.*'calexp'.*neither produced"):
        _build(repo, pipeline.subset("coaddition"))


def test_a_graph_over_the_size_limit_is_refused_unless_forced(repo, pipeline):
    builder = QuantumGraphBuilder(repo, pipeline, input_collections=INPUTS, output_run=RUN, max_quanta=10)
    assert builder.count()["make_calexp"] == 16
    with pytest.raises(GraphError, match=r"matches \d+ data ids .*make_calexp: 16.*limit of 10"):
        builder.build()
    assert len(builder.build(force=True)) > 10


def test_the_size_limit_defaults_to_the_repository_setting(repo, pipeline):
    config = repo.config.model_copy(deep=True)
    config.pipelines.max_quanta = 5
    limited = type(repo)(repo.root, _config=config, _registry=repo.registry)
    with pytest.raises(GraphError, match="limit of 5"):
        QuantumGraphBuilder(limited, pipeline, input_collections=INPUTS, output_run=RUN).build()


def test_existing_outputs_are_skipped_and_feed_downstream(repo, pipeline):
    first = _build(repo, pipeline.subset("make_calexp"), where="visit = 903334")
    assert execute_graph(repo, first).ok
    made = {q.outputs["calexp"][0].data_id: q.outputs["calexp"][0].id for q in first}
    graph = _build(repo, pipeline.subset("single_frame"), output_run="u/test/run2", skip_existing_in=[RUN],
                   input_collections=[*INPUTS, RUN])
    assert graph.counts() == {"make_calexp": 12, "gather_visit": 4}
    assert graph.header["skipped"] == {"make_calexp": 4}
    gather = next(q for q in graph.by_task("gather_visit") if q.data_id["visit"] == 903334)
    assert [r.id for r in gather.inputs["calexps"]] == [made[r.data_id] for r in gather.inputs["calexps"]]
    assert gather.upstream == ()


def test_outputs_already_in_the_output_run_are_an_error_unless_skipped(repo, pipeline):
    sub = pipeline.subset("make_calexp")
    assert execute_graph(repo, _build(repo, sub, where="visit = 903334")).ok
    with pytest.raises(GraphError, match=r"already holds 8 dataset\(s\).*skip_existing_in"):
        _build(repo, sub)
    assert len(_build(repo, sub, skip_existing_in=[RUN])) == 12


def test_a_multiple_output_gets_one_ref_per_data_id(repo, pipeline):
    from skybutler.pipeline import Pipeline

    split = Pipeline.from_mapping({"tasks": {"make_calexp": "support.toy_tasks:MakeCalexp",
                                             "split": "support.toy_tasks:SplitVisit"}})
    graph = _build(repo, split)
    q = graph.by_task("split")[0]
    assert [r.data_id["detector"] for r in q.outputs["parts"]] == list(DETECTORS)
    report = execute_graph(repo, graph)
    assert report.ok
    assert repo.get(q.outputs["parts"][2]) == {"detector": 2}


def test_pipeline_text_round_trips_through_the_graph_header(repo, pipeline):
    graph = _build(repo, pipeline)
    assert graph.pipeline().to_mapping() == pipeline.to_mapping()
    assert graph.header["input_collections"] == INPUTS and graph.header["run"] == RUN
    assert PIPELINE_YAML  # the source file itself is not needed to run the graph


@pytest.mark.parametrize("backend", ["sqlite-local", "postgresql-local"])
def test_graph_build_is_the_same_on_sqlite_and_postgresql(make_butler, pipeline):
    butler = make_butler()
    fill_repository(butler)
    graph = _build(butler, pipeline)
    overlaps = _overlaps(butler)
    assert graph.counts()["make_warp"] == len(overlaps)
    assert graph.counts()["make_calexp"] == 16 and graph.counts()["coadd"] == 8
    assert sum(len(q.inputs["calexps"]) for q in graph.by_task("make_warp")) == sum(
        len(d) for d in overlaps.values())


def test_graph_queries_relate_visits_to_their_band_and_exposures(repo):
    # A band that a visit implies must be the visit's own band, not every band.
    rows = list(repo.query_data_ids(["visit", "band"]))
    assert sorted((r["visit"], r["band"]) for r in rows) == sorted(
        (v, pf[-1].lower()) for v, pf in VISITS.items())
    # Exposures relate to visits through visit_definition records only.
    repo.insert_dimension_records("exposure", [
        {"instrument": "HSC", "exposure": e, "physical_filter": "HSC-R", "day_obs": 20260315} for e in (1, 2, 3)])
    repo.insert_dimension_records("visit_definition", [
        {"instrument": "HSC", "exposure": 1, "visit": 903334}, {"instrument": "HSC", "exposure": 2, "visit": 903334}])
    assert [(r["exposure"], r["visit"]) for r in repo.query_data_ids(["exposure", "visit"])] == [
        (1, 903334), (2, 903334)]
