"""``skybutler batch``: submit a campaign, follow it, report on it, restart or cancel it; and run one job."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import click
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table

if TYPE_CHECKING:
    from ..batch.api import Status

console = Console()

__all__ = ["batch_group"]

_STATE_ORDER = ("succeeded", "running", "staging_in", "staging_out", "merging", "submitted", "pending", "failed",
                "blocked", "cancelled")


@click.group("batch")
def batch_group() -> None:
    """Batch processing: campaigns run as shared-nothing jobs on an engine (local or Parsl).

    \b
    skybutler batch config CAMPAIGN              print the campaign with every default
    skybutler batch submit REPO CAMPAIGN         plan, write the jobs, run them, merge the results
    skybutler batch status REPO [SUBMISSION]     progress per task (--watch to follow it)
    skybutler batch report REPO SUBMISSION       counts, failures, time per task, files, QC matches
    skybutler batch restart REPO SUBMISSION      a new attempt of what did not succeed
    skybutler batch cancel REPO SUBMISSION       stop a submission
    skybutler batch run-job MANIFEST             what an engine runs on a worker (one job)
    """


@batch_group.command("config")
@click.argument("campaign_file", metavar="CAMPAIGN", type=click.Path(dir_okay=False))
def config_cmd(campaign_file: str) -> None:
    """Print a campaign file read and checked, with every default filled in.

    The output is itself a valid campaign file that gives the same campaign.
    """
    from ..batch.campaign import Campaign

    click.echo(Campaign.from_file(campaign_file).to_yaml(), nl=False)


def _progress_table(progress: Mapping[str, Mapping[str, int]], title: str) -> Table:
    table = Table(title=title)
    table.add_column("task")
    table.add_column("progress", min_width=22)
    for state in _STATE_ORDER:
        if any(progress[t].get(state) for t in progress):
            table.add_column(state, justify="right")
    shown = [s for s in _STATE_ORDER if any(progress[t].get(s) for t in progress)]
    for task, counts in progress.items():
        total = sum(counts.values()) or 1
        done = counts.get("succeeded", 0)
        bad = sum(counts.get(s, 0) for s in ("failed", "blocked", "cancelled"))
        width = 20
        n_done = round(width * done / total)
        n_bad = round(width * bad / total)
        bar = f"[green]{'█' * n_done}[/][red]{'█' * n_bad}[/][dim]{'░' * max(0, width - n_done - n_bad)}[/]"
        table.add_row(task, bar, *(str(counts.get(s, 0)) for s in shown))
    return table


def _status_view(statuses: list[Status]) -> Any:
    if len(statuses) != 1:
        table = Table(title="Submissions")
        for col in ("name", "run", "state", "attempt", "jobs", "quanta done", "created"):
            table.add_column(col)
        for st in statuses:
            row = st.submission
            done = sum(c.get("succeeded", 0) for c in st.progress.values())
            total = sum(sum(c.values()) for c in st.progress.values())
            jobs = ", ".join(f"{k} {v}" for k, v in sorted(st.jobs.items()))
            table.add_row(row["name"], str(row.get("run")), row["state"], str(row.get("attempt")), jobs,
                          f"{done}/{total}", str(row.get("created", ""))[:19])
        return table
    st = statuses[0]
    row = st.submission
    jobs = ", ".join(f"{k}: {v}" for k, v in sorted(st.jobs.items()))
    title = f"{row['name']} — {row['state']} (attempt {row.get('attempt')}; jobs {jobs})"
    return _progress_table(st.progress, title)


@batch_group.command("submit")
@click.argument("repo", type=click.Path())
@click.argument("campaign_file", metavar="CAMPAIGN", type=click.Path(dir_okay=False))
@click.option("--dry-run", is_flag=True, help="Plan only: print the jobs per cluster and task, write nothing.")
@click.option("--quiet", is_flag=True, help="No live progress; print the summary at the end.")
def submit_cmd(repo: str, campaign_file: str, dry_run: bool, quiet: bool) -> None:
    """Submit a campaign to the repository REPO and run it to its end.

    Builds the quantum graph, cuts it into jobs (see the campaign's clustering), writes
    the submission directory (per job a manifest and a small SQLite registry subset),
    records every job and quantum, then runs the jobs on the campaign's engine, merging
    each job's outputs, provenance and statistics as it ends. Every state change is in
    the repository's database as it happens: follow it from another terminal with
    `skybutler batch status REPO NAME --watch`. If this process is stopped, `skybutler
    batch restart REPO NAME` continues.
    """
    from ..batch import api
    from ..butler import Butler

    butler = Butler(repo)
    if dry_run:
        result = api.submit(butler, campaign_file, dry_run=True)
        table = Table(title=f"Dry run: submission {result.name} -> run {result.run}")
        for col in ("cluster", "tasks", "jobs", "quanta"):
            table.add_column(col, justify="right" if col in ("jobs", "quanta") else "left")
        for row in result.clusters:
            table.add_row(str(row["cluster"]), ", ".join(row["tasks"]) if isinstance(row["tasks"], list)
                          else str(row["tasks"]), str(row["jobs"]), str(row["quanta"]))
        console.print(table)
        console.print(f"{result.jobs} jobs, {result.quanta} quanta"
                      + (f" ({result.excluded_quanta} excluded)" if result.excluded_quanta else ""))
        return
    result = _with_live(butler, quiet, lambda refresh: api.submit(butler, campaign_file, progress=refresh))
    assert result.summary is not None
    _print_summary(result.name, result.summary)
    if result.summary.state.value != "succeeded":
        sys.exit(1)


def _with_live(butler: Any, quiet: bool, call: Callable[[Callable[[], None]], Any]) -> Any:
    """Run ``call`` with a live progress table refreshed at most four times a second."""
    from ..batch import api

    if quiet or not console.is_terminal:
        return call(lambda: None)
    last = [0.0]
    with Live(console=console, refresh_per_second=4, transient=False) as live:
        def refresh() -> None:
            now = time.monotonic()
            if now - last[0] < 0.25:
                return
            last[0] = now
            running = [s for s in api.status(butler) if s.submission["state"] in ("running", "pending")]
            if running:
                live.update(Group(*(_status_view([s]) for s in running)))

        return call(refresh)


def _print_summary(name: str, summary: Any) -> None:
    jobs = ", ".join(f"{k} {v}" for k, v in sorted(summary.jobs.items()))
    colour = "green" if summary.state.value == "succeeded" else "red"
    console.print(f"[{colour}]Submission {name}: {summary.state.value}[/] (jobs: {jobs}; "
                  f"{summary.merged_datasets} datasets merged; {summary.wall_time:.1f} s)")


@batch_group.command("status")
@click.argument("repo", type=click.Path())
@click.argument("submission", required=False)
@click.option("--watch", is_flag=True, help="Refresh every second until the submission ends (Ctrl-C to stop).")
def status_cmd(repo: str, submission: str | None, watch: bool) -> None:
    """Progress of one submission per task (or a list of all submissions), like DESDM's desstat."""
    from ..batch import api
    from ..butler import Butler

    butler = Butler(repo, writeable=False)
    if not watch:
        console.print(_status_view(api.status(butler, submission)))
        return
    with Live(_status_view(api.status(butler, submission)), console=console, refresh_per_second=2) as live:
        while True:
            statuses = api.status(butler, submission)
            live.update(_status_view(statuses))
            if all(s.submission["state"] not in ("running", "pending") for s in statuses):
                break
            time.sleep(1.0)


@batch_group.command("report")
@click.argument("repo", type=click.Path())
@click.argument("submission")
@click.option("--dataset-type", "dataset_type", help="Also list the files of this dataset type in the run.")
@click.option("--qc", is_flag=True, help="Also list the log lines that matched the campaign's QC patterns.")
@click.option("--severity", help="With --qc: only matches of this severity.")
def report_cmd(repo: str, submission: str, dataset_type: str | None, qc: bool, severity: str | None) -> None:
    """Counts per task and state, failures with reasons and exit codes, wall and CPU time per task."""
    from ..batch import api
    from ..butler import Butler

    butler = Butler(repo, writeable=False)
    rep = api.report(butler, submission, dataset_type=dataset_type, qc=qc or severity is not None, severity=severity)
    row = rep.submission
    console.print(_progress_table(rep.progress, f"{row['name']} (run {row.get('run')}): {row['state']}"))
    times = Table(title="Time per task (executions of the run)")
    for col in ("task", "executions", "wall s", "mean s", "max s", "cpu s", "peak MiB"):
        times.add_column(col, justify="left" if col == "task" else "right")
    for t in rep.time_per_task:
        times.add_row(str(t["task_label"]), str(t["executions"]), _num(t.get("wall_sum")), _num(t.get("wall_mean")),
                      _num(t.get("wall_max")), _num(t.get("cpu_sum")),
                      _num((t.get("peak_memory_max") or 0) / 2**20) if t.get("peak_memory_max") else "")
    console.print(times)
    if rep.failures:
        fails = Table(title="Failures")
        for col in ("job", "tasks", "attempt", "class", "exit", "reason"):
            fails.add_column(col)
        for f in rep.failures:
            fails.add_row(str(f.get("job")), str(f.get("tasks")), str(f.get("attempt")), str(f.get("failure_class")),
                          str(f.get("exit_code")), str(f.get("reason"))[:200])
        console.print(fails)
    if rep.qc is not None:
        table = Table(title="QC matches")
        for col in ("severity", "task", "line", "text"):
            table.add_column(col)
        for m in rep.qc:
            table.add_row(m["severity"], str(m.get("task_label")), str(m["line_number"]), m["line"][:160])
        console.print(table)
    if rep.files is not None:
        table = Table(title=f"{dataset_type} files of run {row.get('run')} ({len(rep.files)} rows)")
        for col in ("data id", "path", "size"):
            table.add_column(col)
        for f in rep.files:
            table.add_row(str(f["data_id"]), str(f["path"]), str(f["size"]))
        console.print(table)


def _num(x: Any) -> str:
    return "" if x is None else f"{x:.2f}"


@batch_group.command("restart")
@click.argument("repo", type=click.Path())
@click.argument("submission")
@click.option("--quiet", is_flag=True, help="No live progress; print the summary at the end.")
def restart_cmd(repo: str, submission: str, quiet: bool) -> None:
    """Run again what did not succeed (failed, blocked, cancelled, or left running by a stopped submit).

    A new attempt: succeeded work is kept, each job re-runs only its unfinished quanta,
    and a job killed for memory asks for more (campaign `retry.memory_factor`).
    """
    from ..batch import api
    from ..butler import Butler

    butler = Butler(repo)
    summary = _with_live(butler, quiet, lambda refresh: api.restart(butler, submission, progress=refresh))
    _print_summary(submission, summary)
    if summary.state.value != "succeeded":
        sys.exit(1)


@batch_group.command("cancel")
@click.argument("repo", type=click.Path())
@click.argument("submission")
def cancel_cmd(repo: str, submission: str) -> None:
    """Cancel a submission: its running jobs are stopped, pending ones never start."""
    from ..batch import api
    from ..butler import Butler

    n = api.cancel(Butler(repo), submission)
    console.print(f"Cancelling {submission}: {n} unfinished job(s)")


@batch_group.command("run-job")
@click.argument("manifest", type=click.Path(dir_okay=False))
@click.option("--attempt-dir", required=True, type=click.Path(file_okay=False),
              help="Where this attempt's status, outcome and scratch directory go.")
def run_job_cmd(manifest: str, attempt_dir: str) -> None:
    """Run one job from its manifest (what an engine runs on a worker; never opens the central database).

    Exit status 0 means an outcome was written (the job's state is inside it).
    """
    from ..batch.runner import job_main

    sys.exit(job_main(manifest, attempt_dir))
