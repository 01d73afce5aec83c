"""Campaign files for the toy pipeline (`support.pipeline_repo`), for the batch service tests."""

from __future__ import annotations

import yaml

from .pipeline_repo import INPUTS, PIPELINE_YAML

# One job per visit, then one for every warp and coadd: five jobs, not the default's sixteen
# (one per visit, per patch and per coadd quantum), for tests where their number is not the
# point; still jobs that stage in what earlier jobs staged out.
FEW_JOBS = {"clusters": [
    {"name": "visit", "tasks": ["make_calexp", "gather_visit"], "dimensions": ["visit"]},
    {"name": "coaddition", "tasks": ["make_warp", "coadd"], "dimensions": []}]}


def make_campaign(directory, name: str = "campaign.yaml", *, pipeline_config: dict | None = None, **overrides):
    """Write a campaign for the toy pipeline (plus overrides) in ``directory``; returns its path.

    The default campaign runs every toy task, one job per visit for the single-frame
    steps, one per patch for the warps, one per quantum for the coadds, on the local
    engine with two workers.
    """
    pipe = yaml.safe_load(PIPELINE_YAML)
    for label, config in (pipeline_config or {}).items():
        spec = pipe["tasks"][label]
        if isinstance(spec, str):
            spec = pipe["tasks"][label] = {"class": spec}
        spec.setdefault("config", {}).update(config)
    (directory / "toy_pipeline.yaml").write_text(yaml.safe_dump(pipe))
    data = {
        "campaign": "toy",
        "pipeline": "toy_pipeline.yaml",
        "input_collections": list(INPUTS),
        "variables": {"reqnum": 1, "attnum": 1},
        "clustering": {"clusters": [
            {"name": "visit", "tasks": ["make_calexp", "gather_visit"], "dimensions": ["visit"]},
            {"name": "warp", "tasks": ["make_warp"], "dimensions": ["patch"]}]},
        "engine": {"name": "local", "settings": {"max_workers": 2}},
        "retry": {"max_attempts": 2},
    }
    data.update(overrides)
    path = directory / name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path
