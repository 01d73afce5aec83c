"""What each page of the web view shows, as plain data (no HTML): the pages' only source of numbers.

Every function reads through the same library calls as the command line
(`skybutler.batch.api.status` and `report`, `Butler.query_datasets` with the
``where`` language, `skybutler.provenance.provenance_of` and `lineage`), so a number
on a page is the number ``skybutler batch report`` prints. The templates only lay
these out; the benchmark (``benchmarks/bench_web.py``) and the tests read them too.
"""

from __future__ import annotations

import datetime
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..batch import api
from ..errors import BatchError, CollectionError, DatasetTypeError, DimensionError, QueryError
from ..pipeline.graph import QuantumGraph
from ..provenance import lineage, provenance_of
from ..provenance.query import as_dataset_id, execution_summary
from ..registry import batch_sql

if TYPE_CHECKING:
    from ..butler import Butler

__all__ = [
    "FAILED",
    "JOBS_PER_PAGE",
    "LIVE_STATES",
    "RUNNING",
    "DatasetPage",
    "DatasetsPage",
    "SubmissionPage",
    "SubmissionSummary",
    "TaskProgress",
    "dataset_page",
    "datasets_page",
    "graph_file",
    "submission_for_graph",
    "submission_page",
    "submission_summary",
    "submissions",
]

RUNNING = frozenset({"submitted", "staging_in", "running", "staging_out", "merging"})
"""Quantum states drawn as "running" in a progress bar (handed over and not finished)."""

FAILED = frozenset({"failed", "blocked", "cancelled"})
"""Quantum states drawn as "failed" (a restart runs them again)."""

LIVE_STATES = frozenset({"pending", "running"})
"""Submission states whose page refreshes itself."""

JOBS_PER_PAGE = 200
"""Jobs shown per page of a submission (a submission of 10^4 quanta may have thousands)."""

QC_SHOWN = 500
"""QC matches listed at most (all are counted per severity)."""

FILES_SHOWN = 1000
"""Files of a dataset type listed at most (all are counted)."""

LINEAGE_SHOWN = 200
"""Ancestors and descendants listed at most, each."""


@dataclass(frozen=True)
class TaskProgress:
    """Quanta of one task in a submission, per state, grouped the way the progress bar draws them."""

    task: str
    counts: Mapping[str, int]

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def succeeded(self) -> int:
        return self.counts.get("succeeded", 0)

    @property
    def running(self) -> int:
        return sum(n for s, n in self.counts.items() if s in RUNNING)

    @property
    def failed(self) -> int:
        return sum(n for s, n in self.counts.items() if s in FAILED)

    @property
    def pending(self) -> int:
        return self.total - self.succeeded - self.running - self.failed

    def percent(self, part: str) -> float:
        """Share of the bar (0-100) of ``"succeeded"``, ``"running"``, ``"failed"`` or ``"pending"``."""
        total = self.total
        return round(100.0 * getattr(self, part) / total, 2) if total else 0.0


@dataclass(frozen=True)
class SubmissionSummary:
    """One row of the campaigns page: a submission, its progress per task, wall time, attempt."""

    name: str
    campaign: str
    run: str | None
    state: str
    attempt: int
    engine: str
    created: datetime.datetime
    updated: datetime.datetime
    jobs: Mapping[str, int]
    tasks: list[TaskProgress]
    directory: str

    @property
    def live(self) -> bool:
        """Whether the submission may still change (its page refreshes itself)."""
        return self.state in LIVE_STATES

    @property
    def wall_seconds(self) -> float:
        """From its creation to its last change (to now while it runs)."""
        end = _utc_now() if self.live else self.updated
        return max(0.0, (end - self.created).total_seconds())

    @property
    def quanta_total(self) -> int:
        return sum(t.total for t in self.tasks)

    @property
    def quanta_succeeded(self) -> int:
        return sum(t.succeeded for t in self.tasks)

    @property
    def quanta_failed(self) -> int:
        return sum(t.failed for t in self.tasks)


def _utc_now() -> datetime.datetime:
    # The registry keeps naive UTC.
    return datetime.datetime.now(datetime.UTC).replace(tzinfo=None)


def graph_file(submission: Mapping[str, Any] | SubmissionSummary) -> Path:
    """Where a submission keeps its quantum graph (it may be gone, or on another machine)."""
    directory = submission.directory if isinstance(submission, SubmissionSummary) else submission["directory"]
    return Path(directory) / "graph.qgraph"


def _task_order(directory: str, progress: Mapping[str, Mapping[str, int]]) -> list[str]:
    """The submission's tasks in pipeline order (from its graph's header) when it can be read, else by label."""
    order: list[str] = []
    try:
        order = [str(t) for t in QuantumGraph.read_header(Path(directory) / "graph.qgraph").get("task_order", [])]
    except Exception:  # noqa: BLE001 - the directory may be elsewhere; label order is a fine fallback
        order = []
    known = [t for t in order if t in progress]
    return known + sorted(t for t in progress if t not in known)


def _summary(status: api.Status) -> SubmissionSummary:
    row = status.submission
    order = _task_order(row["directory"], status.progress)
    return SubmissionSummary(
        name=row["name"], campaign=row["campaign"], run=row.get("run"), state=row["state"],
        attempt=int(row["attempt"]), engine=row["engine"], created=row["created"], updated=row["updated"],
        jobs=dict(status.jobs), tasks=[TaskProgress(t, dict(status.progress[t])) for t in order],
        directory=row["directory"])


def submissions(butler: Butler) -> list[SubmissionSummary]:
    """Every submission, newest first, with its progress per task (`skybutler batch status`)."""
    return sorted((_summary(s) for s in api.status(butler)), key=lambda s: (s.created, s.name), reverse=True)


def submission_summary(butler: Butler, name: str) -> SubmissionSummary:
    """One submission's row (`skybutler batch status REPO NAME`).

    Raises
    ------
    BatchError
        No submission has that name.
    """
    return _summary(api.status(butler, name)[0])


@dataclass
class SubmissionPage:
    """Everything the page of one submission shows."""

    summary: SubmissionSummary
    jobs: list[dict[str, Any]]
    jobs_total: int
    page: int
    pages: int
    job_states: list[str]
    failures: list[dict[str, Any]]
    qc_counts: dict[str, int]
    qc: list[dict[str, Any]]
    executions: list[tuple[str, str, int]]
    time_per_task: list[dict[str, Any]]
    dataset_types: list[str]
    files: list[dict[str, Any]] | None = None
    files_total: int = 0
    files_error: str | None = None
    filters: dict[str, str | None] = field(default_factory=dict)


def submission_page(butler: Butler, name: str, *, state: str | None = None, task: str | None = None,
                    severity: str | None = None, dataset_type: str | None = None, page: int = 1,
                    ) -> SubmissionPage:
    """One submission: jobs (filtered by state and task, paged), failures, QC, the DMTN-059 answers.

    The DMTN-059 operator questions: executions per step (`execution_summary`), the files of a
    dataset type with their paths (``dataset_type``), wall time per step (`batch report`).

    Raises
    ------
    BatchError
        No submission has that name.

    An unknown ``dataset_type`` is not raised: ``files_error`` says so.
    """
    registry = butler.registry
    files_error = None
    if dataset_type:
        try:
            registry.get_dataset_type(dataset_type)
        except DatasetTypeError as exc:
            files_error, dataset_type = str(exc), None
    rep = api.report(butler, name, dataset_type=dataset_type or None, qc=True)
    # The report holds the submission's row and progress already: one reading of each.
    summary = _summary(api.Status(rep.submission, rep.progress, dict(rep.submission["jobs"])))
    sid = rep.submission["id"]
    jobs = batch_sql.jobs(registry, sid, states=[state] if state else None, tasks=[task] if task else None)
    pages = max(1, -(-len(jobs) // JOBS_PER_PAGE))
    page = min(max(1, page), pages)
    qc = rep.qc or []
    qc_counts: dict[str, int] = {}
    for m in qc:
        qc_counts[m["severity"]] = qc_counts.get(m["severity"], 0) + 1
    shown_qc = [m for m in qc if severity is None or m["severity"] == severity][:QC_SHOWN]
    out = SubmissionPage(
        summary=summary, jobs=jobs[(page - 1) * JOBS_PER_PAGE:page * JOBS_PER_PAGE], jobs_total=len(jobs),
        page=page, pages=pages, job_states=sorted(summary.jobs), failures=rep.failures, qc_counts=qc_counts,
        qc=shown_qc, executions=execution_summary(butler, run=summary.run) if summary.run else [],
        time_per_task=rep.time_per_task, dataset_types=sorted(dt.name for dt in registry.dataset_types()),
        filters={"state": state, "task": task, "severity": severity, "dataset_type": dataset_type},
        files_error=files_error)
    if rep.files is not None:
        out.files, out.files_total = rep.files[:FILES_SHOWN], len(rep.files)
    return out


@dataclass
class DatasetsPage:
    """A query's results, one page of them, or why the query is wrong."""

    dataset_types: list[str]
    runs: list[str]
    dataset_type: str | None
    collections: list[str]
    where: str
    columns: list[str] = field(default_factory=list)
    rows: list[dict[str, Any]] = field(default_factory=list)
    total: int = 0
    page: int = 1
    pages: int = 1
    error: str | None = None
    """The library's message, with the caret under the place in ``where`` for a parse error."""


def datasets_page(butler: Butler, dataset_type: str | None, *, collections: Sequence[str] = (),
                  where: str = "", page: int = 1, page_size: int = 100) -> DatasetsPage:
    """Datasets of a type in collections (searched in order; every run when none), one page of them.

    The query is `Butler.query_datasets` (the ``where`` language of `skybutler query datasets`);
    the table comes from its Arrow form with file paths and sizes. An invalid expression, an
    unknown dataset type or collection is not raised: ``error`` holds the message the command
    line prints (a parse error with its caret).
    """
    out = DatasetsPage(dataset_types=sorted(dt.name for dt in butler.registry.dataset_types()),
                       runs=butler.collections.runs(), dataset_type=dataset_type or None,
                       collections=[c for c in collections if c], where=where or "")
    if not out.dataset_type:
        return out
    try:
        table = butler.query_datasets(out.dataset_type, collections=out.collections or out.runs,
                                      where=out.where or None).to_arrow(files=True)
    except (QueryError, DatasetTypeError, CollectionError, DimensionError) as exc:
        out.error = str(exc)
        return out
    out.total = table.num_rows
    out.pages = max(1, -(-out.total // page_size))
    out.page = min(max(1, page), out.pages)
    part = table.slice((out.page - 1) * page_size, page_size)
    out.columns = [c for c in part.column_names if c not in ("id", "dataset_type")]
    ids = part.column("id").to_pylist()
    rows = part.to_pylist()
    for row, did in zip(rows, ids, strict=True):
        # Arrow's uuid extension gives bytes: the link needs the text form.
        row["id"] = str(uuid.UUID(bytes=did)) if isinstance(did, bytes) else str(did)
    out.rows = rows
    return out


@dataclass
class DatasetPage:
    """One dataset: identity, file, the execution that made it, lineage."""

    id: uuid.UUID
    ref: Any
    file: Any
    uri: str | None
    provenance: Any
    ancestors: list[Any]
    descendants: list[Any]
    ancestors_total: int
    descendants_total: int

    @property
    def execution(self) -> dict[str, Any] | None:
        return self.provenance.execution  # type: ignore[no-any-return]

    @property
    def wall_seconds(self) -> float | None:
        ex = self.execution
        if not ex or ex.get("start_time") is None or ex.get("end_time") is None:
            return None
        return float((ex["end_time"] - ex["start_time"]).total_seconds())


def dataset_page(butler: Butler, dataset_id: str | uuid.UUID) -> DatasetPage:
    """A dataset's data id, file and checksum, the execution that made it, its ancestors and descendants.

    Raises
    ------
    DatasetNotFoundError
        ``dataset_id`` is not a UUID, or neither a dataset nor any provenance has it.
    """
    did = as_dataset_id(dataset_id)
    prov = provenance_of(butler, did)
    ref = prov.dataset.ref
    file = butler.registry.get_files([did]).get(did)
    uri = None
    if ref is not None and file is not None:
        try:
            uri = butler.uri(ref)
        except Exception:  # noqa: BLE001 - the stored path is shown anyway
            uri = None
    up = lineage(butler, did, direction="up")
    down = lineage(butler, did, direction="down")
    return DatasetPage(id=did, ref=ref, file=file, uri=uri, provenance=prov, ancestors=up[:LINEAGE_SHOWN],
                       descendants=down[:LINEAGE_SHOWN], ancestors_total=len(up), descendants_total=len(down))


def submission_for_graph(butler: Butler, name: str) -> tuple[SubmissionSummary, Path]:
    """A submission and its quantum graph file (`BatchError` when the file cannot be read here)."""
    summary = submission_summary(butler, name)
    path = graph_file(summary)
    if not path.is_file():
        raise BatchError(f"The quantum graph of submission {name!r} is not readable here ({path})")
    return summary, path
