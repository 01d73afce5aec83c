"""The work `test_crash` kills: each function is idempotent, so running it again is the retry.

Kept out of the test module so that worker processes (forkserver) import only this.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from skybutler import Butler, FileDataset, Image

DATA_IDS = [{"instrument": "HSC", "visit": v, "detector": d} for v in (903334, 903336, 903338, 903340)
            for d in range(4)]
PUT_RUN = "crash/put"
MANY_RUNS = [f"crash/many/{k}" for k in range(4)]
INGEST_RUN = "crash/ingest"
DOOMED_RUNS = [f"crash/doomed/{k}" for k in range(4)]
PIPELINE_RUN = "crash/pipeline"
GRAPH_FILE = "graph.qg"
INGEST_DIR = "incoming"


def _image(seed: int) -> Image:
    return Image(np.random.default_rng(seed).normal(size=(48, 48)).astype("f4"), {"SEED": seed})


def _key(data_id: Any) -> tuple[int, int]:
    return int(data_id["visit"]), int(data_id["detector"])


def existing(butler: Butler, dataset_type: str, run: str) -> set[tuple[int, int]]:
    """Data ids of ``dataset_type`` already in ``run`` (none when the run does not exist yet)."""
    if run not in {c["name"] for c in butler.registry.collections()}:
        return set()
    return {_key(r.data_id) for r in butler.query_datasets(dataset_type, collections=[run])}


def expected(op: str, trial_dir: Path) -> dict[str, dict[str, set[tuple[int, int]]]]:
    """What ``op`` leaves when it completes: run -> dataset type -> data ids (pipeline: checked apart)."""
    every = {_key(d) for d in DATA_IDS}
    if op == "put":
        return {PUT_RUN: {"meta": every, "img": every}}
    if op == "put_many":
        return {run: {"meta": every} for run in MANY_RUNS}
    if op == "ingest":
        return {INGEST_RUN: {"meta": every}}
    return {}


def put(root: str) -> None:
    butler = Butler(root)
    have = {dataset_type: existing(butler, dataset_type, PUT_RUN) for dataset_type in ("meta", "img")}
    for i, data_id in enumerate(DATA_IDS):
        for dataset_type in ("meta", "img"):
            if _key(data_id) in have[dataset_type]:
                continue
            obj = {"i": i} if dataset_type == "meta" else _image(i)
            butler.put(obj, dataset_type, data_id, run=PUT_RUN)


def put_many(root: str, runs: list[str] = MANY_RUNS) -> None:  # noqa: B006 - never mutated
    butler = Butler(root)
    for k, run in enumerate(runs):
        have = existing(butler, "meta", run)
        todo = [({"k": k, "i": i}, "meta", d) for i, d in enumerate(DATA_IDS) if _key(d) not in have]
        if todo:
            butler.put_many(todo, run=run)


def ingest(root: str) -> None:
    butler = Butler(root)
    incoming = Path(root).parent / INGEST_DIR
    files = [FileDataset(str(incoming / f"meta_{d['visit']}_{d['detector']}.json"), "meta", d) for d in DATA_IDS]
    for start in range(0, len(files), 4):  # several commits: a kill can land between them
        butler.ingest(files[start:start + 4], run=INGEST_RUN, transfer="copy")


def prepare_ingest(trial_dir: Path) -> None:
    incoming = trial_dir / INGEST_DIR
    incoming.mkdir(parents=True, exist_ok=True)
    for d in DATA_IDS:
        (incoming / f"meta_{d['visit']}_{d['detector']}.json").write_text(json.dumps({"ingested": _key(d)}))


def remove_runs(root: str) -> None:
    butler = Butler(root)
    names = {c["name"] for c in butler.registry.collections()}
    left = [r for r in DOOMED_RUNS if r in names]
    if left:
        butler.remove_runs(left)  # also finishes the file deletions of an interrupted call
    else:
        butler.finish_removals()


def pipeline(root: str) -> None:
    from skybutler.cli import main

    graph = str(Path(root).parent / GRAPH_FILE)
    try:
        main.main(["pipeline", "run", root, graph], standalone_mode=False)
    except SystemExit as exc:  # the command exits 1 when a quantum failed
        if exc.code:
            raise


WORK: dict[str, Any] = {"put": put, "put_many": put_many, "ingest": ingest, "remove_runs": remove_runs, "pipeline": pipeline}


def child(op: str, root: str, *args: Any) -> None:
    """Entry point of the killed process (`support.forkserver.start_process`): work until killed (or done)."""
    os.environ["SKYBUTLER_CRASH_CHILD"] = "1"
    WORK[op](root, *args)
