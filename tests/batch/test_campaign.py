"""Campaign files: typed settings, printed whole, checked before anything is submitted."""

from __future__ import annotations

import shutil
import uuid

import pytest
import yaml

from skybutler import BatchError, Butler, ConfigError, TemplateError
from skybutler.batch.campaign import Campaign, check_campaign, exclusion_where
from skybutler.batch.manifest import QCPattern, Resources
from skybutler.datastore import FileTemplates
from skybutler.model import DataId, DatasetRef, DatasetType
from skybutler.pipeline import build_quantum_graph
from support.pipeline_repo import CALIB, PIPELINE_YAML, RAW_RUN, filled_repo_template  # noqa: F401
from support.records import DETECTORS, VISITS

MINIMAL = {"campaign": "toy", "pipeline": "pipelines/toy.yaml", "input_collections": [RAW_RUN, CALIB]}

FULL = {
    **MINIMAL,
    "tasks": ["make_calexp", "gather_visit"],
    "calibration_collections": [CALIB],
    "where": "visit IN (:visits)",
    "bind": {"visits": [903334, 903336]},
    "variables": {"reqnum": 7, "attnum": 2, "unitname": "u1"},
    "output_run": "{campaign}/r{reqnum:04d}/a{attnum}",
    "templates": {"calexp": "{run}/{dataset_type}/{band}/{dataset_type}_{instrument}_{visit:08d}_{detector:03d}_r{reqnum}"},
    "exclude": {"data_ids": [{"instrument": "HSC", "visit": 903334, "detector": 3}],
                "datasets": ["0193a4f1-7a3e-7c1e-9b0c-1d2e3f405162"]},
    "clustering": {"clusters": [{"name": "per_visit", "tasks": ["make_calexp", "gather_visit"],
                                 "dimensions": ["visit"]}], "parallel": 4},
    "resources": {"default": {"memory_mb": 2000, "cores": 1}, "tasks": {"gather_visit": {"cores": 4}}},
    "retry": {"max_attempts": 2, "retry_task_failures": True, "memory_factor": 1.5},
    "qc": [{"pattern": "level [0-9.]+", "severity": "info", "tasks": ["make_calexp"]},
           {"pattern": "(?i)nan", "severity": "error"}],
    "metadata": {"calexp": ["EXPTIME"]},
    "environment": ["HOME"],
    "engine": {"name": "parsl", "settings": {"provider": {"type": "slurm", "partition": "normal"}}},
    "merge": {"max_concurrent": 3},
    "stage_mode": "copy",
    "submission_dir": "/scratch/submissions",
}


@pytest.fixture(scope="module")
def repo(filled_repo_template, tmp_path_factory):  # noqa: F811
    """One copy of the filled test repository for the module, opened read-only: checks and graph building only read.

    A copy (not the template itself): other modules copy the template while this is open.
    """
    root = tmp_path_factory.mktemp("campaign") / "repo"
    shutil.copytree(filled_repo_template, root)
    butler = Butler(root, writeable=False)
    yield butler
    butler.close()


def _write(tmp_path, data, name="campaign.yaml", text=None):
    (tmp_path / "pipelines").mkdir(exist_ok=True)
    (tmp_path / "pipelines" / "toy.yaml").write_text(PIPELINE_YAML)
    path = tmp_path / name
    path.write_text(text if text is not None else yaml.safe_dump(data, sort_keys=False))
    return path


def _campaign(tmp_path, **changes):
    return Campaign.from_file(_write(tmp_path, {**MINIMAL, **changes}))


# -- reading and printing ----------------------------------------------------------------


def test_a_minimal_campaign_file_gets_the_documented_defaults(tmp_path):
    text = "# the toy campaign\n" + yaml.safe_dump(MINIMAL)
    campaign = Campaign.from_file(_write(tmp_path, None, text=text))
    assert campaign.output_run_name() == "toy/r1/a1"
    assert campaign.variables_all() == {"reqnum": 1, "attnum": 1, "campaign": "toy"}
    assert campaign.pipeline_path() == tmp_path / "pipelines" / "toy.yaml"
    assert campaign.pipeline_path().is_absolute()
    assert campaign.source_text == text
    assert campaign.clustering.parallel == 1 and campaign.clustering.clusters == []
    assert campaign.resources_for("make_calexp") == Resources(memory_mb=None, cores=1, wall_time_s=None)
    assert (campaign.retry.max_attempts, campaign.retry.retry_task_failures, campaign.retry.memory_factor) == \
        (3, False, 2.0)
    assert (campaign.engine.name, campaign.engine.settings) == ("local", {})
    assert (campaign.merge.max_concurrent, campaign.stage_mode, campaign.submission_dir) == (2, "link", None)


def test_to_yaml_prints_every_setting_and_loads_back_to_an_equal_campaign(tmp_path):
    campaign = Campaign.from_file(_write(tmp_path, FULL))
    printed = yaml.safe_load(campaign.to_yaml())
    assert set(printed) == set(Campaign.model_fields)
    again = Campaign.from_mapping(printed, base_dir=tmp_path)
    assert again == campaign
    assert again.resources_for("gather_visit") == Resources(memory_mb=2000, cores=4)
    minimal = Campaign.from_file(_write(tmp_path, MINIMAL, name="minimal.yaml"))
    assert Campaign.from_mapping(yaml.safe_load(minimal.to_yaml()), base_dir=tmp_path) == minimal
    assert minimal != campaign
    assert Campaign.from_mapping(printed, base_dir=tmp_path / "elsewhere") != campaign  # another pipeline file


def test_a_task_resource_printed_keeps_only_what_it_overrides(tmp_path):
    campaign = Campaign.from_file(_write(tmp_path, FULL))
    printed = yaml.safe_load(campaign.to_yaml())
    assert printed["resources"]["tasks"] == {"gather_visit": {"cores": 4}}
    printed["resources"]["default"]["memory_mb"] = 8000
    assert Campaign.from_mapping(printed, base_dir=tmp_path).resources_for("gather_visit").memory_mb == 8000


def test_an_unknown_key_is_refused_naming_the_file_and_the_key_path(tmp_path):
    data = {**MINIMAL, "clustering": {"clusters": [{"name": "a", "taskz": ["make_calexp"]}]}}
    path = _write(tmp_path, data)
    with pytest.raises(ConfigError, match=f"^{path}: clustering.clusters.0.taskz: unknown key$"):
        Campaign.from_file(path)


@pytest.mark.parametrize(("changes", "message"), [
    ({"campaign": None}, "campaign: required key is missing"),
    ({"input_collections": []}, "input_collections: should have at least 1 item"),
    ({"variables": {"reqnum": 1.5, "attnum": 1}}, r"variables.reqnum: should be a string or an integer \(got 1.5\)"),
    ({"variables": {"campaign": "x"}}, "variables.campaign: is set from the campaign's name"),
    ({"variables": {"run": "x"}}, "variables.run: is a file template field filled by skybutler"),
    ({"output_run": "{campaign}/{unit}"}, "output_run: .*'{campaign}/{unit}' uses variable 'unit', which is not set"),
    ({"output_run": "{campaign"}, "output_run: .*not a valid format string"),
    ({"where": "visit >"}, "where: Invalid query expression"),
    ({"exclude": {"data_ids": [{}]}}, "exclude.data_ids.0: an empty data id would exclude everything"),
    ({"exclude": {"datasets": ["nope"]}}, "exclude.datasets.0: should be a valid UUID"),
    ({"clustering": {"clusters": [{"name": "a", "tasks": ["make_calexp"]}, {"name": "a", "tasks": ["coadd"]}]}},
     "clustering.clusters.1.name: cluster name 'a' is used twice"),
    ({"clustering": {"clusters": [{"name": "a", "tasks": ["make_calexp"]},
                                  {"name": "b", "tasks": ["coadd", "make_calexp"]}]}},
     "clustering.clusters.1.tasks: task 'make_calexp' is in clusters 'a' and 'b'"),
    ({"clustering": {"parallel": 0}}, r"clustering.parallel: should be greater than or equal to 1 \(got 0\)"),
    ({"qc": [{"pattern": "level (", "severity": "warning"}]}, "qc.0.pattern: 'level \\(' is not a valid regular"),
    ({"qc": [{"pattern": "x", "severity": "loud"}]}, "qc.0.severity: 'loud' is not one of debug, info, warning"),
    ({"resources": {"tasks": {"coadd": {"memory_mb": 0}}}}, "resources.tasks.coadd.memory_mb: should be greater"),
    ({"retry": {"max_attempts": 0}}, "retry.max_attempts: should be greater than or equal to 1"),
    ({"stage_mode": "move"}, "stage_mode: should be 'link' or 'copy'"),
    ({"engine": {"name": "sge"}}, "engine.name: unknown engine 'sge'; choose one of local, parsl, slurm"),
])
def test_an_invalid_setting_is_a_config_error_naming_the_file_and_the_key(tmp_path, changes, message):
    data = {**MINIMAL, **changes}
    path = _write(tmp_path, {k: v for k, v in data.items() if v is not None})
    with pytest.raises(ConfigError, match=f"^{path}: {message}"):
        Campaign.from_file(path)


def test_a_template_with_bad_syntax_is_a_template_error_naming_the_dataset_type(tmp_path):
    path = _write(tmp_path, {**MINIMAL, "templates": {"calexp": "{run}/{visit.x}"}})
    with pytest.raises(TemplateError, match=f"^{path}: templates.calexp: Attribute or index access"):
        Campaign.from_file(path)


def test_a_missing_pipeline_file_is_a_config_error_naming_its_path(tmp_path):
    path = _write(tmp_path, {**MINIMAL, "pipeline": "pipelines/nope.yaml"})
    with pytest.raises(ConfigError, match=f"pipeline: no pipeline file {tmp_path / 'pipelines' / 'nope.yaml'}"):
        Campaign.from_file(path)
    campaign = Campaign.from_mapping({**MINIMAL, "pipeline": "nope.yaml"}, base_dir=tmp_path)
    with pytest.raises(ConfigError, match=f"no pipeline file {tmp_path / 'nope.yaml'}"):
        campaign.load_pipeline()


def test_a_file_that_is_not_a_mapping_or_not_yaml_is_refused_naming_it(tmp_path):
    with pytest.raises(ConfigError, match="expected a mapping of campaign settings, got list"):
        Campaign.from_file(_write(tmp_path, None, text="- a\n"))
    with pytest.raises(ConfigError, match="expected a mapping of campaign settings, got an empty document"):
        Campaign.from_file(_write(tmp_path, None, text="# nothing yet\n"))
    with pytest.raises(ConfigError, match="is not valid YAML: line 2"):
        Campaign.from_file(_write(tmp_path, None, text="campaign: [\n"))


# -- derived values ----------------------------------------------------------------------


def test_the_output_run_is_formatted_with_the_variables_and_the_campaign_name(tmp_path):
    campaign = Campaign.from_file(_write(tmp_path, FULL))
    assert campaign.output_run_name() == "toy/r0007/a2"
    campaign.variables["attnum"] = 3
    assert campaign.output_run_name() == "toy/r0007/a3"


def test_calibration_collections_are_searched_before_the_inputs(tmp_path):
    campaign = _campaign(tmp_path, calibration_collections=["HSC/calib/new", CALIB])
    assert campaign.search_collections() == ["HSC/calib/new", CALIB, RAW_RUN]


def test_resources_of_a_task_override_only_the_fields_it_sets(tmp_path):
    campaign = Campaign.from_file(_write(tmp_path, FULL))
    assert campaign.resources_for("gather_visit") == Resources(memory_mb=2000, cores=4, wall_time_s=None)
    assert campaign.resources_for("make_calexp") == Resources(memory_mb=2000, cores=1, wall_time_s=None)


def test_qc_patterns_of_a_task_are_the_global_ones_and_its_own(tmp_path):
    campaign = Campaign.from_file(_write(tmp_path, FULL))
    assert campaign.qc_for("make_calexp") == [
        QCPattern(pattern="level [0-9.]+", severity="info", tasks=["make_calexp"]),
        QCPattern(pattern="(?i)nan", severity="error")]
    assert campaign.qc_for("gather_visit") == [QCPattern(pattern="(?i)nan", severity="error")]


def test_load_pipeline_keeps_only_the_selected_tasks(tmp_path):
    assert list(_campaign(tmp_path).load_pipeline().tasks) == ["make_calexp", "gather_visit", "make_warp", "coadd"]
    assert list(_campaign(tmp_path, tasks=["make_calexp"]).load_pipeline().tasks) == ["make_calexp"]
    with pytest.raises(BatchError, match="tasks: pipeline .* has no task 'calibrate'"):
        _campaign(tmp_path, tasks=["calibrate"]).load_pipeline()


def test_campaign_templates_name_files_of_the_output_run_with_the_operator_variables(tmp_path):
    campaign = Campaign.from_file(_write(tmp_path, FULL))
    run = campaign.output_run_name()
    assert campaign.template_config() == FULL["templates"]  # variables left for the butler to fill
    templates = FileTemplates(per_dataset_type={"calexp": "{run}/old/{dataset_type}_{data_id}"},
                              per_run={run: campaign.template_config()})
    dt = DatasetType("calexp", ("instrument", "visit", "detector"), "array")
    ref = DatasetRef(uuid.uuid4(), dt, DataId(instrument="HSC", visit=903334, detector=3, implied={"band": "r"}), run)
    path = templates.template_for("calexp", run).format(ref, variables=campaign.variables_all())
    assert path == "toy%2Fr0007%2Fa2/calexp/r/calexp_HSC_00903334_003_r7"
    assert templates.template_for("calexp", "another/run").text == "{run}/old/{dataset_type}_{data_id}"


# -- the where clause --------------------------------------------------------------------


def test_exclusion_where_joins_the_campaign_where_and_one_not_per_excluded_data_id(tmp_path):
    campaign = _campaign(tmp_path, where="band = 'r'", bind={"x0_0": "mine"},
                         exclude={"data_ids": [{"instrument": "HSC", "visit": 903334},
                                               {"instrument": "HSC", "visit": 903336, "detector": 1}]})
    where, bind = exclusion_where(campaign)
    assert where == ("(band = 'r') AND NOT (instrument = :_x0_0 AND visit = :_x0_1) AND "
                     "NOT (instrument = :_x1_0 AND visit = :_x1_1 AND detector = :_x1_2)")
    assert bind == {"x0_0": "mine", "_x0_0": "HSC", "_x0_1": 903334, "_x1_0": "HSC", "_x1_1": 903336,
                    "_x1_2": 1}
    assert exclusion_where(_campaign(tmp_path)) == (None, {})


def test_the_graph_built_with_exclusion_where_has_no_quanta_of_the_excluded_data_ids(tmp_path, repo):
    campaign = _campaign(tmp_path, tasks=["make_calexp"], where="band = :band", bind={"band": "r"},
                         exclude={"data_ids": [{"instrument": "HSC", "visit": 903334, "detector": 3}]})
    where, bind = exclusion_where(campaign)
    graph = build_quantum_graph(repo, campaign.load_pipeline(), input_collections=campaign.search_collections(),
                                output_run=campaign.output_run_name(), where=where, bind=bind)
    expected = {(v, d) for v, f in VISITS.items() if f == "HSC-R" for d in DETECTORS} - {(903334, 3)}
    assert {(q.data_id["visit"], q.data_id["detector"]) for q in graph} == expected


def test_an_excluded_dataset_excludes_its_data_id_when_the_repository_is_given(tmp_path, repo):
    raw = next(iter(repo.query_datasets("raw", collections=[RAW_RUN], where="visit = 903336 AND detector = 2")))
    campaign = _campaign(tmp_path, exclude={"datasets": [str(raw.id)]})
    assert exclusion_where(campaign) == (None, {})
    where, bind = exclusion_where(campaign, butler=repo)
    assert where == "NOT (instrument = :x0_0 AND detector = :x0_1 AND visit = :x0_2)"
    assert bind == {"x0_0": "HSC", "x0_1": 2, "x0_2": 903336}


# -- checks against the repository -------------------------------------------------------


def test_a_valid_campaign_passes_the_repository_checks(tmp_path, repo):
    campaign = Campaign.from_file(_write(tmp_path, {**FULL, "exclude": {"data_ids": FULL["exclude"]["data_ids"]}}))
    assert check_campaign(campaign, repo, campaign.load_pipeline()) is None


@pytest.mark.parametrize(("changes", "message"), [
    ({"clustering": {"clusters": [{"name": "c", "tasks": ["make_calexp", "calibrate"]}]}},
     "cluster 'c' names task 'calibrate', which the pipeline does not have"),
    ({"clustering": {"clusters": [{"name": "c", "tasks": ["make_calexp", "make_warp"],
                                   "dimensions": ["detector"]}]}},
     "cluster 'c' groups by instrument, detector, but task 'make_warp' has no 'detector'"),
    ({"clustering": {"clusters": [{"name": "c", "tasks": ["make_calexp"], "dimensions": ["ccd"]}]}},
     "cluster 'c': Unknown dimension 'ccd'"),
    ({"clustering": {"clusters": [{"name": "coadd", "tasks": ["make_warp"]}]}},
     "cluster 'coadd' has the name of task 'coadd', which it does not hold"),
    ({"resources": {"tasks": {"calibrate": {"cores": 2}}}},
     "resources.tasks names task 'calibrate', which the pipeline does not have"),
    ({"qc": [{"pattern": "x", "tasks": ["calibrate"]}]},
     "QC pattern 'x' names task 'calibrate', which the pipeline does not have"),
    ({"input_collections": [RAW_RUN, "HSC/nope"]}, "input_collections: .*HSC/nope"),
    ({"calibration_collections": ["HSC/calib/nope"]}, "calibration_collections: .*HSC/calib/nope"),
    ({"templates": {"calexp": "{run}/{dataset_type}_{instrument}_{visit}"}},
     "templates.calexp: .*cannot give unique names: dimension 'detector' is not a field"),
    ({"templates": {"calexp": "{run}/{dataset_type}_{visit}_{detector}_{unit}"}},
     "templates.calexp: .*uses {unit}"),
    ({"templates": {"calexpp": "{run}/{id}"}},
     "templates: dataset type 'calexpp' is neither read nor written by the pipeline"),
    ({"exclude": {"data_ids": [{"instrument": "HSC", "visit": 903335}]}},
     r"exclude.data_ids.0 \(instrument=HSC, visit=903335\) matches no dimension records"),
    ({"exclude": {"data_ids": [{"instrument": "HSC", "vist": 903334}]}}, "exclude.data_ids.0 .*vist"),
    ({"exclude": {"datasets": [str(uuid.UUID(int=5))]}},
     "exclude.datasets: the repository holds no dataset 00000000-0000-0000-0000-000000000005"),
])
def test_a_campaign_that_does_not_fit_the_repository_or_pipeline_is_a_batch_error(tmp_path, repo, changes,
                                                                                 message):
    campaign = _campaign(tmp_path, **changes)
    with pytest.raises(BatchError, match=f"^Campaign 'toy': {message}"):
        check_campaign(campaign, repo, campaign.load_pipeline())


def test_a_task_in_tasks_the_given_pipeline_lacks_is_a_batch_error(tmp_path, repo):
    campaign = _campaign(tmp_path, tasks=["make_calexp", "coadd"])
    subset = _campaign(tmp_path, tasks=["make_calexp"]).load_pipeline()
    with pytest.raises(BatchError, match="tasks names task 'coadd', which the pipeline does not have"):
        check_campaign(campaign, repo, subset)
