"""What a job is given (its manifest) and what it hands back (its outcome): plain, versioned JSON.

The two files are the whole interface between the central side (submission, engines,
merge-back) and a worker running ``skybutler batch run-job MANIFEST``. A job reads
nothing else of the central repository: its quanta come from the submission's graph
file (only its own are read), its registry from a small SQLite subset beside the
manifest, its inputs from the locations listed here.

Layout of a submission directory (paths in a manifest are relative to the manifest's
directory unless absolute or URLs)::

    SUBMISSION/
        campaign.yaml            the campaign as submitted
        graph.qgraph             the whole quantum graph
        jobs.json                the job dependency graph: {job: [upstream jobs]}
        jobs/NAME/manifest.json  one directory per job
        jobs/NAME/subset.sqlite3 its registry subset
        jobs/NAME/attempt_N/     one per attempt: status.jsonl (events, appended by the job),
                                 outcome/ (outcome.json last, registry.sqlite3, logs/, junk.tar.gz),
                                 scratch/ (the job's working directory, removed on success),
                                 job.pid ("HOST PID" of the runner, for cancelling it)
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import tempfile
import uuid
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..errors import ConfigError

__all__ = [
    "MANIFEST_VERSION",
    "OUTCOME_VERSION",
    "JobManifest",
    "JobOutcome",
    "OutputFile",
    "PlannedOutput",
    "QCMatch",
    "QCPattern",
    "QuantumResult",
    "Resources",
    "StagedInput",
    "StatusEvent",
    "read_json_model",
    "write_json_atomic",
]

M = TypeVar("M", bound=BaseModel)

MANIFEST_VERSION = 1
OUTCOME_VERSION = 1


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=False)


class Resources(_Model):
    """What one job asks of a worker (passed to the engine; the local engine enforces memory)."""

    memory_mb: int | None = Field(None, ge=1, description="Memory limit per job, MiB")
    cores: int = Field(1, ge=1, description="Cores per job")
    wall_time_s: int | None = Field(None, ge=1, description="Wall-clock limit per job, seconds")


class QCPattern(_Model):
    """An operator's log pattern: a regular expression, its severity, and the tasks it applies to (all if empty)."""

    pattern: str
    severity: str = "warning"
    tasks: list[str] = Field(default_factory=list)


class StagedInput(_Model):
    """One input file of a job: where it is, where it goes in scratch, what it must be."""

    dataset_id: uuid.UUID
    source: str = Field(description="Absolute path or URL of the file as the central datastore holds it")
    path: str = Field(description="Path relative to the scratch datastore root")
    size: int | None = Field(None, description="None until known (an output of an upstream job not merged yet)")
    checksum: str | None = None
    checksum_algorithm: str | None = None
    storage_options: dict[str, Any] = Field(default_factory=dict,
                                            description="fsspec options for an URL source (no secrets: from env)")


class PlannedOutput(_Model):
    """An output the job will make: its pre-assigned id and file name (the same relative path in scratch and centrally)."""

    dataset_id: uuid.UUID
    dataset_type: str
    quantum_id: uuid.UUID
    path: str


class JobManifest(_Model):
    """Everything a job needs; written by the submission, read by ``batch run-job``."""

    format: Literal["skybutler-job-manifest"] = "skybutler-job-manifest"
    version: int = MANIFEST_VERSION
    submission: str = Field(description="Submission name")
    job: str = Field(description="Job name, unique in the submission")
    run: str = Field(description="The output run")
    graph: str = Field(description="The submission's quantum graph file (the job reads only its own quanta)")
    quanta: list[uuid.UUID] = Field(description="The job's quanta, in an order that respects their dependencies")
    subset: str = Field("subset.sqlite3", description="The registry subset (SQLite file)")
    inputs: list[StagedInput] = Field(default_factory=list)
    outputs: list[PlannedOutput] = Field(default_factory=list)
    destination: str = Field(description="Root (path or URL) of the central datastore outputs are staged to")
    destination_options: dict[str, Any] = Field(default_factory=dict, description="fsspec options (no secrets)")
    repository_config: dict[str, Any] = Field(
        default_factory=dict, description="Sections of the central configuration the scratch repository copies "
                                          "(templates, formats, datastore.checksum) so files get the same names")
    template_variables: dict[str, Any] = Field(default_factory=dict)
    stage_mode: Literal["link", "copy"] = Field("link", description="Local inputs: hard link when possible, else copy")
    parallel: int = Field(1, ge=1, description="Quanta run at the same time inside the job")
    memory_limit_mb: int | None = Field(None, ge=1, description="Per-quantum address-space limit, MiB")
    qc: list[QCPattern] = Field(default_factory=list)
    metadata_keys: dict[str, list[str]] = Field(
        default_factory=dict, description="dataset type -> science metadata keys to gather (FITS header keys)")
    environment: list[str] = Field(default_factory=list, description="Environment variables recorded with the job")
    resources: Resources = Field(default_factory=Resources)
    keep_scratch: bool = Field(False, description="Keep the scratch directory after a successful job")


class StatusEvent(_Model):
    """One line of a job's ``status.jsonl``: a state change of the job or of one of its quanta."""

    time: datetime.datetime
    state: str
    quantum_id: uuid.UUID | None = None
    detail: str | None = None


class QuantumResult(_Model):
    """How one quantum of the job ended."""

    quantum_id: uuid.UUID
    task_label: str
    data_id: dict[str, Any]
    status: str = Field(description="An ExecutionStatus value: succeeded, failed, not_run, skipped")
    reason: str | None = None
    execution_id: uuid.UUID | None = None
    seconds: float | None = None


class OutputFile(_Model):
    """An output the job made and staged out."""

    dataset_id: uuid.UUID
    dataset_type: str
    quantum_id: uuid.UUID
    path: str = Field(description="Relative to the central datastore root")
    size: int
    checksum: str | None = None
    checksum_algorithm: str | None = None
    format: str
    metadata: dict[str, Any] = Field(default_factory=dict)


class QCMatch(_Model):
    """A log line that matched an operator pattern."""

    quantum_id: uuid.UUID | None
    task_label: str | None
    execution_id: uuid.UUID | None = None
    severity: str
    pattern: str
    line_number: int
    line: str


class JobOutcome(_Model):
    """What a job hands back: ``outcome/outcome.json``, written last (its presence means complete)."""

    format: Literal["skybutler-job-outcome"] = "skybutler-job-outcome"
    version: int = OUTCOME_VERSION
    submission: str
    job: str
    attempt: int
    run: str
    state: str = Field(description="succeeded or failed (a JobState value)")
    failure_class: str | None = Field(None, description="A FailureClass value when failed")
    reason: str | None = None
    host: str
    start_time: datetime.datetime
    end_time: datetime.datetime
    wall_time: float
    cpu_time: float | None = None
    peak_memory: int | None = None
    software: dict[str, str] = Field(default_factory=dict)
    environment: dict[str, str] = Field(default_factory=dict)
    free_disk: int | None = Field(None, description="Bytes free in the scratch file system at the end")
    quanta: list[QuantumResult] = Field(default_factory=list)
    outputs: list[OutputFile] = Field(default_factory=list)
    qc: list[QCMatch] = Field(default_factory=list)
    registry: str = Field("registry.sqlite3", description="The scratch registry: executions and provenance rows")
    junk: str | None = Field(None, description="Tarball of unexpected files left in scratch")
    stage_seconds: dict[str, float] = Field(default_factory=dict, description="stage_in / run / stage_out seconds")


def write_json_atomic(path: str | Path, model: BaseModel) -> None:
    """Write a model as JSON: temporary file in the same directory, fsync, rename (never a half file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(model.model_dump_json(indent=1))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def read_json_model(path: str | Path, model: type[M], *, version: int) -> M:
    """Read a manifest or outcome; a newer version or a damaged file is a `ConfigError` naming the file."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: cannot be read as JSON ({exc})") from None
    if isinstance(data, dict) and isinstance(data.get("version"), int) and data["version"] > version:
        raise ConfigError(f"{path}: written by a newer skybutler (version {data['version']}; this one reads "
                          f"up to {version})")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ConfigError(f"{path}: {where}: {first['msg']}") from None
