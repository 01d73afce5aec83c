"""The batch tables and their SQL (skybutler.registry.batch_sql), on SQLite and PostgreSQL.

A submission is written as the batch service writes it (submission, jobs, dependencies,
quanta, then state changes and QC matches) and read back through the report functions;
the SQL statements of docs/batch_sql.md run on the same repository.
"""

from __future__ import annotations

import contextlib
import datetime
import re
import sqlite3
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa

from skybutler import SkyButlerError
from skybutler.errors import BatchError
from skybutler.model import new_id
from skybutler.registry import batch_sql, provenance_sql
from skybutler.registry.batch_sql import StateChange

DOC = Path(__file__).resolve().parents[2] / "docs" / "batch_sql.md"
T0 = datetime.datetime(2026, 11, 30, 1, 0, 0)
RUN = "demo/run"


@pytest.fixture(params=["sqlite-local", "postgresql-local"])
def backend(request):
    return request.param


# For behaviour decided before any SQL runs (argument checks), one database is enough.
sqlite_only = pytest.mark.parametrize("backend", ["sqlite-local"])


def at(seconds: float) -> datetime.datetime:
    return T0 + datetime.timedelta(seconds=seconds)


def new_submission(registry, name: str = "demo-1", *, run: str | None = RUN) -> uuid.UUID:
    return batch_sql.create_submission(registry, name=name, campaign="dmtn059", run=run, engine="local",
                                       directory=f"/scratch/{name}", config="pipeline: dmtn059.yaml\n",
                                       n_jobs=3, n_quanta=4, time=T0)


def demo_submission(registry):
    """A submission with three jobs: isr for two visits, then calibrate waiting for one of them."""
    sid = new_submission(registry)
    jobs = batch_sql.insert_jobs(registry, sid, [
        {"name": "isr-903334", "cluster": "visit", "tasks": ["isr"], "n_quanta": 2, "memory_mb": 2048,
         "manifest": "jobs/isr-903334/manifest.json"},
        {"name": "isr-903338", "cluster": "visit", "tasks": ["isr"], "n_quanta": 1},
        {"name": "calibrate-903334", "cluster": "visit", "tasks": ["calibrate", "make_warp"], "n_quanta": 1},
    ])
    batch_sql.insert_dependencies(registry, [(jobs["calibrate-903334"], jobs["isr-903334"])])
    quanta = {f"{task}-{visit}-{det}": new_id() for task, visit, det in
              [("isr", 903334, 0), ("isr", 903334, 1), ("isr", 903338, 0), ("calibrate", 903334, 0)]}
    batch_sql.insert_quanta(registry, sid, [
        {"quantum_id": qid, "job_id": jobs[f"{key.split('-')[0]}-{key.split('-')[1]}"],
         "task_label": key.split("-")[0],
         "data_id": {"instrument": "HSC", "visit": int(key.split("-")[1]), "detector": int(key.split("-")[2])}}
        for key, qid in quanta.items()])
    return sid, jobs, quanta


# -- submissions and jobs -------------------------------------------------------------------


def test_a_submission_is_read_back_by_name_or_id_with_its_run_and_job_counts(make_butler):
    registry = make_butler().registry
    sid, jobs, _ = demo_submission(registry)
    by_name = batch_sql.get_submission(registry, "demo-1")
    assert by_name is not None
    assert (by_name["id"], by_name["run"], by_name["attempt"], by_name["state"], by_name["n_jobs"]) == \
        (sid, RUN, 1, "pending", 3)
    assert by_name["created"] == by_name["updated"] == T0
    assert by_name["config"] == "pipeline: dmtn059.yaml\n"
    assert by_name["jobs"] == {"pending": 3}
    assert batch_sql.get_submission(registry, sid) == by_name
    assert batch_sql.get_submission(registry, str(sid)) == by_name
    assert batch_sql.get_submission(registry, "no-such") is None
    # The run it writes is registered with it.
    assert registry.collection_type(RUN).value == "RUN"


def test_a_second_submission_of_a_name_is_refused_naming_it_and_restart(make_butler):
    registry = make_butler().registry
    new_submission(registry)
    with pytest.raises(BatchError, match="Submission 'demo-1' exists; use batch restart") as info:
        new_submission(registry, run="other/run")
    assert isinstance(info.value, SkyButlerError)
    # Nothing of the refused one was kept, not even its run.
    assert [c["name"] for c in registry.collections()] == [RUN]


def test_list_submissions_counts_jobs_per_state_oldest_first(make_butler):
    registry = make_butler().registry
    sid, jobs, _ = demo_submission(registry)
    batch_sql.create_submission(registry, name="later", campaign="c", run=None, engine="parsl", directory="/d",
                                config="", n_jobs=0, n_quanta=0, time=at(60))
    batch_sql.record_states(registry, [StateChange("job", jobs["isr-903334"], "running", at(1), sid)])
    listed = batch_sql.list_submissions(registry)
    assert [(s["name"], s["run"], s["jobs"]) for s in listed] == [
        ("demo-1", RUN, {"pending": 2, "running": 1}), ("later", None, {})]


def test_jobs_and_their_dependencies_read_back_by_name(make_butler):
    registry = make_butler().registry
    sid, jobs, _ = demo_submission(registry)
    rows = batch_sql.jobs(registry, sid)
    assert [r["name"] for r in rows] == ["calibrate-903334", "isr-903334", "isr-903338"]
    assert rows[0]["tasks"] == ["calibrate", "make_warp"] and rows[0]["id"] == jobs["calibrate-903334"]
    assert (rows[1]["memory_mb"], rows[1]["manifest"], rows[1]["attempt"]) == \
        (2048, "jobs/isr-903334/manifest.json", 1)
    assert batch_sql.job_dependencies(registry, sid) == {
        "calibrate-903334": ["isr-903334"], "isr-903334": [], "isr-903338": []}
    # Recording an edge again changes nothing.
    batch_sql.insert_dependencies(registry, [(jobs["calibrate-903334"], jobs["isr-903334"])])
    assert batch_sql.job_dependencies(registry, sid)["calibrate-903334"] == ["isr-903334"]


def test_jobs_filter_by_state_and_by_whole_task_labels(make_butler):
    registry = make_butler().registry
    sid, jobs, _ = demo_submission(registry)
    batch_sql.record_states(registry, [StateChange("job", jobs["isr-903338"], "failed", at(5), sid)])
    assert [r["name"] for r in batch_sql.jobs(registry, sid, states=["failed"])] == ["isr-903338"]
    assert [r["name"] for r in batch_sql.jobs(registry, sid, tasks=["make_warp"])] == ["calibrate-903334"]
    assert [r["name"] for r in batch_sql.jobs(registry, sid, tasks=["isr", "calibrate"])] == \
        ["calibrate-903334", "isr-903334", "isr-903338"]
    # A label is matched whole: "make" is not "make_warp", and "_" is no wildcard.
    assert batch_sql.jobs(registry, sid, tasks=["make"]) == []
    assert batch_sql.jobs(registry, sid, tasks=["make%warp"]) == []
    assert batch_sql.jobs(registry, sid, tasks=[]) == []


@sqlite_only
def test_a_job_name_given_twice_or_already_there_is_refused_naming_it(make_butler):
    registry = make_butler().registry
    sid, _, _ = demo_submission(registry)
    with pytest.raises(BatchError, match="'a' is given twice"):
        batch_sql.insert_jobs(registry, sid, [{"name": "a"}, {"name": "a"}])
    with pytest.raises(BatchError, match="'isr-903338' exists"):
        batch_sql.insert_jobs(registry, sid, [{"name": "b"}, {"name": "isr-903338"}])
    with pytest.raises(BatchError, match="unknown column.*colour"):
        batch_sql.insert_jobs(registry, sid, [{"name": "c", "colour": "red"}])
    assert len(batch_sql.jobs(registry, sid)) == 3


def test_quanta_carry_the_data_id_key_of_the_dataset_tables(make_butler):
    butler = make_butler(run=RUN, records=True)
    butler.register_dataset_type("metadata", ["visit", "detector"], "dict")
    ref = butler.put({}, "metadata", instrument="HSC", visit=903334, detector=1)
    registry = butler.registry
    sid, jobs, quanta = demo_submission(registry)
    rows = batch_sql.quanta(registry, sid, job_id=jobs["isr-903334"])
    assert [(r["task_label"], r["job"], r["state"], r["attempt"]) for r in rows] == [
        ("isr", "isr-903334", "pending", 1)] * 2
    d = registry.tables.dataset
    with registry.database.read() as conn:
        stored = conn.execute(sa.select(d.c.data_id_key).where(d.c.id == ref.id)).scalar_one()
    assert rows[1]["data_id_key"] == stored == ref.data_id.key()
    assert rows[1]["quantum_id"] == quanta["isr-903334-1"]


# -- states ---------------------------------------------------------------------------------


def test_record_states_sets_state_and_fields_and_appends_an_event_each(make_butler):
    registry = make_butler().registry
    sid, jobs, quanta = demo_submission(registry)
    job, q = jobs["isr-903334"], quanta["isr-903334-0"]
    execution = new_id()
    batch_sql.record_states(registry, [
        StateChange("submission", sid, "running", at(1), sid, attempt=1),
        StateChange("job", job, "running", at(2), sid, attempt=1, detail="on node7",
                    fields={"host": "node7", "start_time": at(2), "submit_time": at(1)}),
        StateChange("quantum", q, "succeeded", at(3), sid, attempt=1, fields={"execution_id": execution}),
        StateChange("job", job, "failed", at(4), sid, attempt=1,
                    fields={"failure_class": "out_of_memory", "reason": "killed at 2 GiB", "exit_code": -9,
                            "end_time": at(4), "wall_time": 2.0, "peak_memory": 2 << 30}),
    ])
    row = batch_sql.jobs(registry, sid, states=["failed"])[0]
    assert (row["name"], row["host"], row["start_time"], row["submit_time"], row["end_time"]) == \
        ("isr-903334", "node7", at(2), at(1), at(4))
    assert (row["failure_class"], row["reason"], row["exit_code"], row["wall_time"], row["peak_memory"]) == \
        ("out_of_memory", "killed at 2 GiB", -9, 2.0, 2 << 30)
    quantum = [r for r in batch_sql.quanta(registry, sid) if r["quantum_id"] == q][0]
    assert (quantum["state"], quantum["execution_id"], quantum["updated"]) == ("succeeded", execution, at(3))
    submission = batch_sql.get_submission(registry, sid)
    assert (submission["state"], submission["updated"]) == ("running", at(4))
    history = batch_sql.events(registry, sid)
    assert [(e["kind"], e["job"], e["state"], e["time"], e["attempt"]) for e in history] == [
        ("submission", None, "running", at(1), 1),
        ("job", "isr-903334", "running", at(2), 1),
        ("quantum", "isr-903334", "succeeded", at(3), 1),  # a quantum's event names its job
        ("job", "isr-903334", "failed", at(4), 1),
    ]
    assert history[1]["detail"] == "on node7" and history[2]["quantum_id"] == q


def test_a_row_changed_twice_in_one_call_ends_in_its_last_state_with_every_field(make_butler):
    registry = make_butler().registry
    sid, jobs, _ = demo_submission(registry)
    job = jobs["isr-903338"]
    batch_sql.record_states(registry, [
        StateChange("job", job, "running", at(1), sid, fields={"host": "a", "start_time": at(1)}),
        StateChange("job", job, "succeeded", at(2), sid, fields={"end_time": at(2)}),
        StateChange("job", job, "failed", at(3), sid, attempt=2, fields={"host": "b"}),
    ])
    row = batch_sql.jobs(registry, sid, states=["failed"])[0]
    assert (row["host"], row["start_time"], row["end_time"], row["attempt"]) == ("b", at(1), at(2), 2)
    assert [e["state"] for e in batch_sql.events(registry, sid)] == ["running", "succeeded", "failed"]


def test_a_state_change_of_an_unknown_row_records_nothing(make_butler):
    registry = make_butler().registry
    sid, jobs, quanta = demo_submission(registry)
    ghost = new_id()
    with pytest.raises(BatchError, match=f"unknown quantum {ghost}"):
        batch_sql.record_states(registry, [
            StateChange("job", jobs["isr-903334"], "running", at(1), sid),
            StateChange("quantum", quanta["isr-903334-0"], "running", at(1), sid),
            StateChange("quantum", ghost, "running", at(1), sid),
        ])
    assert batch_sql.events(registry, sid) == []
    assert batch_sql.get_submission(registry, sid)["jobs"] == {"pending": 3}


@sqlite_only
def test_a_state_change_setting_an_unknown_or_fixed_column_is_refused_naming_it(make_butler):
    registry = make_butler().registry
    sid, jobs, _ = demo_submission(registry)
    with pytest.raises(BatchError, match="cannot set colour"):
        batch_sql.record_states(registry, [StateChange("job", jobs["isr-903334"], "running", at(1), sid,
                                                       fields={"colour": "red"})])
    with pytest.raises(BatchError, match="cannot set submission_id"):
        batch_sql.record_states(registry, [StateChange("job", jobs["isr-903334"], "running", at(1), sid,
                                                       fields={"submission_id": new_id()})])
    with pytest.raises(BatchError, match="unknown kind 'task'"):
        batch_sql.record_states(registry, [StateChange("task", sid, "running", at(1), sid)])  # type: ignore[arg-type]


def test_times_are_stored_as_naive_utc(make_butler):
    registry = make_butler().registry
    sid, jobs, _ = demo_submission(registry)
    paris = datetime.timezone(datetime.timedelta(hours=1))
    batch_sql.record_states(registry, [
        StateChange("job", jobs["isr-903334"], "running", datetime.datetime(2026, 11, 30, 3, 0, tzinfo=paris), sid,
                    fields={"start_time": datetime.datetime(2026, 11, 30, 3, 0, 30, tzinfo=paris)})])
    assert batch_sql.events(registry, sid)[0]["time"] == datetime.datetime(2026, 11, 30, 2, 0)
    assert batch_sql.jobs(registry, sid, states=["running"])[0]["start_time"] == \
        datetime.datetime(2026, 11, 30, 2, 0, 30)


def test_many_state_changes_take_as_many_statements_as_a_few(make_butler):
    # One executemany per kind of row and set of fields, not one statement per change.
    registry = make_butler().registry
    sid = new_submission(registry)
    job = batch_sql.insert_jobs(registry, sid, [{"name": "all"}])["all"]
    ids = [new_id() for _ in range(2000)]
    batch_sql.insert_quanta(registry, sid, [{"quantum_id": q, "job_id": job, "task_label": "isr",
                                             "data_id_key": f"visit={i}"} for i, q in enumerate(ids)])

    def statements(quanta: list[uuid.UUID], state: str) -> int:
        seen = []
        listener = lambda *args: seen.append(args[2])  # noqa: E731
        sa.event.listen(registry.engine, "before_cursor_execute", listener)
        try:
            batch_sql.record_states(registry, [StateChange("quantum", q, state, at(1), sid, attempt=1,
                                                           fields={"execution_id": new_id()}) for q in quanta])
        finally:
            sa.event.remove(registry.engine, "before_cursor_execute", listener)
        return len(seen)

    few, many = statements(ids[:5], "running"), statements(ids[5:], "running")
    # PostgreSQL sends a multi-row INSERT per 1,000 rows: a handful more, never one per row.
    assert many <= few + 4
    assert batch_sql.progress(registry, sid) == {"isr": {"running": 2000}}
    assert len(batch_sql.events(registry, sid)) == 2000


# -- reports --------------------------------------------------------------------------------


def test_progress_counts_quanta_per_task_and_state(make_butler):
    registry = make_butler().registry
    sid, jobs, quanta = demo_submission(registry)
    batch_sql.record_states(registry, [
        StateChange("quantum", quanta["isr-903334-0"], "succeeded", at(1), sid),
        StateChange("quantum", quanta["isr-903334-1"], "failed", at(1), sid),
        StateChange("quantum", quanta["calibrate-903334-0"], "blocked", at(2), sid),
    ])
    assert batch_sql.progress(registry, sid) == {"isr": {"succeeded": 1, "failed": 1, "pending": 1}, "calibrate": {"blocked": 1}}


def test_failures_list_failed_jobs_with_class_reason_and_exit_code(make_butler):
    registry = make_butler().registry
    sid, jobs, _ = demo_submission(registry)
    batch_sql.record_states(registry, [
        StateChange("job", jobs["calibrate-903334"], "failed", at(9), sid, attempt=2,
                    fields={"failure_class": "task", "reason": "ValueError: no stars", "exit_code": 1,
                            "host": "node3"}),
        StateChange("job", jobs["isr-903334"], "succeeded", at(5), sid)])
    assert batch_sql.failures(registry, sid) == [{
        "job": "calibrate-903334", "tasks": ["calibrate", "make_warp"], "failure_class": "task",
        "reason": "ValueError: no stars", "exit_code": 1, "attempt": 2, "host": "node3", "end_time": None}]


def test_qc_matches_read_back_in_order_and_by_severity(make_butler):
    registry = make_butler().registry
    sid, jobs, quanta = demo_submission(registry)
    assert batch_sql.record_qc(registry, sid, jobs["isr-903334"], [
        {"severity": "warning", "pattern": "saturated", "line_number": 12, "line": "12 pixels saturated",
         "task_label": "isr", "quantum_id": quanta["isr-903334-0"]},
        {"severity": "error", "pattern": "NaN", "line_number": 40, "line": "NaN in variance plane",
         "task_label": "isr"},
    ]) == 2
    matches = batch_sql.qc_matches(registry, sid)
    assert [(m["job"], m["severity"], m["line_number"]) for m in matches] == [
        ("isr-903334", "warning", 12), ("isr-903334", "error", 40)]
    assert matches[0]["quantum_id"] == quanta["isr-903334-0"] and matches[1]["quantum_id"] is None
    assert [m["line"] for m in batch_sql.qc_matches(registry, sid, severity="error")] == ["NaN in variance plane"]
    with pytest.raises(BatchError, match="severity is 17 characters"):
        batch_sql.record_qc(registry, sid, jobs["isr-903334"], [
            {"severity": "x" * 17, "pattern": "p", "line_number": 1, "line": "l"}])


def test_qc_matches_recorded_again_are_kept_once(make_butler):
    # An outcome merged again (the process that merged it died before recording the job's
    # state) gives the same matches a second time.
    registry = make_butler().registry
    sid, jobs, quanta = demo_submission(registry)
    execution = uuid.uuid4()
    matches = [{"severity": "warning", "pattern": "saturated", "line_number": 12, "line": "12 pixels saturated",
                "task_label": "isr", "quantum_id": quanta["isr-903334-0"], "execution_id": execution},
               {"severity": "error", "pattern": "NaN", "line_number": 40, "line": "NaN", "task_label": "isr"}]
    assert batch_sql.record_qc(registry, sid, jobs["isr-903334"], matches) == 2
    assert batch_sql.record_qc(registry, sid, jobs["isr-903334"], matches) == 0
    again = [{**matches[0], "execution_id": uuid.uuid4()}]  # a later attempt's execution: its own match
    assert batch_sql.record_qc(registry, sid, jobs["isr-903334"], again) == 1
    assert len(batch_sql.qc_matches(registry, sid)) == 3


def test_events_since_an_id_are_only_the_newer_ones(make_butler):
    registry = make_butler().registry
    sid, jobs, _ = demo_submission(registry)
    job = jobs["isr-903334"]
    batch_sql.record_states(registry, [StateChange("job", job, "submitted", at(1), sid)])
    seen = batch_sql.events(registry, sid)
    batch_sql.record_states(registry, [StateChange("job", job, "running", at(2), sid),
                                       StateChange("job", job, "succeeded", at(3), sid)])
    newer = batch_sql.events(registry, sid, since_id=seen[-1]["id"])
    assert [e["state"] for e in newer] == ["running", "succeeded"]
    assert [e["state"] for e in batch_sql.events(registry, sid, since_id=seen[-1]["id"], limit=1)] == ["running"]


def executions_of(registry, run: str) -> None:
    """Three executions of two tasks: isr 2 s and 4 s, calibrate 10 s (one without an end)."""
    rows = [("isr", at(0), at(2), 1.5, 100), ("isr", at(1), at(5), 3.0, 300), ("calibrate", at(6), at(16), 9.0, 200),
            ("calibrate", at(20), None, None, None)]
    provenance_sql.insert_executions(registry, [
        {"id": new_id(), "run": run, "task_label": task, "data_id_key": f"visit={i}", "status": "succeeded",
         "start_time": start, "end_time": end, "cpu_time": cpu, "peak_memory": mem}
        for i, (task, start, end, cpu, mem) in enumerate(rows)])


def test_time_per_task_sums_wall_and_cpu_time_of_the_runs_executions(make_butler):
    registry = make_butler().registry
    registry.register_collection(RUN)
    registry.register_collection("other")
    executions_of(registry, RUN)
    executions_of(registry, "other")
    got = batch_sql.time_per_task(registry, RUN)
    assert [g["task_label"] for g in got] == ["isr", "calibrate"]
    isr, calibrate = got
    assert (isr["executions"], isr["cpu_seconds_sum"], isr["peak_memory_max"]) == (2, 4.5, 300)
    assert isr["wall_seconds_sum"] == pytest.approx(6.0, abs=1e-3)
    assert isr["wall_seconds_mean"] == pytest.approx(3.0, abs=1e-3)
    assert isr["wall_seconds_max"] == pytest.approx(4.0, abs=1e-3)
    # An execution without an end counts as an execution, not as time.
    assert calibrate["executions"] == 2 and calibrate["wall_seconds_sum"] == pytest.approx(10.0, abs=1e-3)


def test_files_of_type_gives_data_ids_paths_and_sizes_of_one_run(make_butler):
    butler = make_butler(run=RUN, records=True)
    butler.register_dataset_type("metadata", ["visit", "detector"], "dict")
    refs = [butler.put({"d": d}, "metadata", instrument="HSC", visit=903334, detector=d) for d in (1, 0)]
    butler.put({}, "metadata", instrument="HSC", visit=903334, detector=0, run="other")
    files = batch_sql.files_of_type(butler.registry, RUN, "metadata")
    assert [(f["dataset_id"], dict(f["data_id"])) for f in files] == [
        (refs[1].id, {"instrument": "HSC", "visit": 903334, "detector": 0}),
        (refs[0].id, {"instrument": "HSC", "visit": 903334, "detector": 1})]
    stored = butler.registry.get_files([r.id for r in refs])
    assert [(f["path"], f["size"]) for f in files] == [(stored[r.id].path, stored[r.id].size) for r in refs[::-1]]
    with pytest.raises(SkyButlerError, match="nothing"):
        batch_sql.files_of_type(butler.registry, RUN, "nothing")


# -- removal --------------------------------------------------------------------------------


def test_removing_the_run_keeps_the_submissions_history_with_its_run_gone(make_butler):
    butler = make_butler(run=RUN, records=True)
    registry = butler.registry
    sid, jobs, quanta = demo_submission(registry)
    executions_of(registry, RUN)
    execution = provenance_sql.executions(registry, run=RUN)[0]["id"]
    batch_sql.record_states(registry, [StateChange("quantum", quanta["isr-903334-0"], "succeeded", at(1), sid,
                                                   fields={"execution_id": execution})])
    batch_sql.record_qc(registry, sid, jobs["isr-903334"], [
        {"severity": "warning", "pattern": "p", "line_number": 1, "line": "l", "execution_id": execution}])
    registry.remove_run(RUN)
    submission = batch_sql.get_submission(registry, "demo-1")
    assert submission["run"] is None and submission["run_id"] is None
    # The report of such a submission has no executions and no files, and no error.
    assert batch_sql.time_per_task(registry, submission["run"]) == []
    butler.register_dataset_type("metadata", ["visit", "detector"], "dict")
    assert batch_sql.files_of_type(registry, submission["run"], "metadata") == []
    assert len(batch_sql.jobs(registry, sid)) == 3 and len(batch_sql.events(registry, sid)) == 1
    assert len(batch_sql.qc_matches(registry, sid)) == 1


def test_deleting_a_submission_deletes_all_of_it_and_nothing_else(make_butler):
    registry = make_butler().registry
    sid, jobs, quanta = demo_submission(registry)
    other = new_submission(registry, "other")
    other_job = batch_sql.insert_jobs(registry, other, [{"name": "j"}])["j"]
    batch_sql.record_states(registry, [StateChange("job", jobs["isr-903334"], "running", at(1), sid),
                                       StateChange("job", other_job, "running", at(1), other)])
    batch_sql.record_qc(registry, sid, jobs["isr-903334"], [
        {"severity": "warning", "pattern": "p", "line_number": 1, "line": "l"}])
    assert batch_sql.delete_submission(registry, "demo-1")
    assert not batch_sql.delete_submission(registry, "demo-1")
    t = registry.tables
    with registry.database.read() as conn:
        counts = {table.name: conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one()
                  for table in (t.batch_submission, t.batch_job, t.batch_job_dependency, t.batch_quantum,
                                t.batch_event, t.batch_qc_match)}
    assert counts == {"batch_submission": 1, "batch_job": 1, "batch_job_dependency": 0, "batch_quantum": 0,
                      "batch_event": 1, "batch_qc_match": 0}


# -- the documented SQL ---------------------------------------------------------------------


def doc_statements() -> list[str]:
    return re.findall(r"```sql\n(.*?)```", DOC.read_text(), flags=re.S)


def test_the_documentation_has_a_statement_for_each_operator_question():
    assert len(doc_statements()) >= 6


def populated(butler):
    """A repository holding what every statement of docs/batch_sql.md asks about."""
    registry = butler.registry
    butler.register_dataset_type("metadata", ["visit", "detector"], "dict")
    butler.put({}, "metadata", instrument="HSC", visit=903334, detector=0)
    executions_of(registry, RUN)
    sid, jobs, quanta = demo_submission(registry)
    batch_sql.record_states(registry, [
        StateChange("job", jobs["calibrate-903334"], "running", at(1), sid, attempt=1),
        StateChange("quantum", quanta["calibrate-903334-0"], "failed", at(2), sid, attempt=1),
        StateChange("job", jobs["calibrate-903334"], "failed", at(3), sid, attempt=1,
                    fields={"failure_class": "task", "reason": "ValueError", "exit_code": 1})])
    batch_sql.record_qc(registry, sid, jobs["calibrate-903334"], [
        {"severity": "error", "pattern": "Error", "line_number": 3, "line": "ValueError", "task_label": "calibrate"}])


def test_every_documented_statement_runs_as_plain_sql_and_answers(make_butler, backend):
    butler = make_butler(run=RUN, records=True)
    populated(butler)
    statements = doc_statements()
    if backend.startswith("sqlite"):
        # The sqlite3 module, as the sqlite3 prompt would run them: no skybutler, no SQLAlchemy.
        path = sa.engine.make_url(butler.registry.url).database
        with contextlib.closing(sqlite3.connect(path)) as conn:
            answers = [conn.execute(statement).fetchall() for statement in statements]
    else:
        with butler.registry.engine.connect() as conn:
            conn.exec_driver_sql(f'SET search_path TO "{butler.config.registry.namespace}"')
            answers = [conn.exec_driver_sql(statement).fetchall() for statement in statements]
    for statement, rows in zip(statements, answers, strict=True):
        assert rows, f"no rows from:\n{statement}"
    by_question = dict(zip(("executions", "progress", "files", "wall", "failures", "qc", "history"), answers,
                           strict=True))
    assert [tuple(r) for r in by_question["executions"]] == [("isr", 2, 2), ("calibrate", 2, 2)]
    assert [r[0] for r in by_question["files"]] == ["detector=0|instrument=HSC|visit=903334"]
    assert by_question["wall"][0][2] == pytest.approx(6.0, abs=1e-3)
    assert [tuple(r[:5]) for r in by_question["failures"]] == [
        ("calibrate-903334", "calibrate,make_warp", "task", "ValueError", 1)]
    assert [r[3] for r in by_question["history"]] == ["running", "failed"]
