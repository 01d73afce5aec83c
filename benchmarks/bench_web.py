"""Page load times of the web view (skybutler.web, issue 12) on a submission of 10,000 quanta.

Usage::

    python benchmarks/bench_web.py                         # 10,000 quanta in 1,000 jobs, SQLite
    python benchmarks/bench_web.py --quanta 100000         # another size
    python benchmarks/bench_web.py --postgresql postgresql://postgres@127.0.0.1:5432/test

Running 10,000 real quanta takes far longer than the pages it is about, so the submission
is recorded synthetically through the library's own batch and provenance tables, as
the batch service writes them: a submission of N quanta over 8 tasks in N/10 jobs
(`batch_sql.insert_jobs`, `insert_quanta`), their states moved by `record_states` (most
succeeded, some running, failed and pending), a failure reason and exit code on the
failed jobs, a QC match per failed job, and one execution per finished quantum
(`provenance_sql.insert_executions`), so that "executions per step" and "wall time per
step" aggregate N rows as they would after a real run.

Each page is requested ``--repeat`` times after one warm-up, over real HTTP from
uvicorn on loopback in its own process (httpx client) and in process (Starlette's
TestClient, no socket):
the figure is the whole answer, queries and template included. Prints min / median /
max in milliseconds per page, and the target (<= 300 ms for the submission page).
The machine is shared: a wide min-max range means load, not the code.
"""

from __future__ import annotations

import argparse
import datetime
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _records import throwaway_schema

TASKS = ("isr", "characterizeImage", "calibrate", "makeWarp", "assembleCoadd", "detection", "measure", "forcedPhot")
TARGET_MS = 300.0


def build(root: Path, n: int, url: str | None, namespace: str | None) -> str:
    """A repository holding one synthetic submission of ``n`` quanta; returns its name."""
    from skybutler import Butler
    from skybutler.model import new_id
    from skybutler.registry import batch_sql, provenance_sql
    from skybutler.registry.batch_sql import StateChange

    butler = Butler.create(root, registry=url, namespace=namespace)
    butler.register_dataset_type("calexp", ("instrument", "visit", "detector"), "image")
    registry = butler.registry
    run = "HSC/runs/bench-web"
    name = "bench-web"
    n_jobs = max(1, n // 10)
    sid = batch_sql.create_submission(registry, name=name, campaign="bench", run=run, engine="local",
                                      directory=str(root / "submissions" / name), config="", n_jobs=n_jobs,
                                      n_quanta=n, state="running")
    per_task = n_jobs // len(TASKS) or 1
    jobs = [{"name": f"job{i:06d}", "tasks": [TASKS[min(i // per_task, len(TASKS) - 1)]], "n_quanta": 10,
             "cluster": "main"} for i in range(n_jobs)]
    ids = batch_sql.insert_jobs(registry, sid, jobs)
    job_ids = [ids[j["name"]] for j in jobs]
    quanta = []
    for i in range(n):
        job = jobs[min(i // 10, n_jobs - 1)]
        quanta.append({"quantum_id": new_id(), "job_id": job_ids[min(i // 10, n_jobs - 1)],
                       "task_label": job["tasks"][0], "data_id_key": f"detector={i % 100}|instrument=HSC|visit={i // 100}"})
    batch_sql.insert_quanta(registry, sid, quanta)

    start = datetime.datetime(2026, 11, 1, 12, 0, 0)
    changes, executions = [], []
    for i, q in enumerate(quanta):
        # 85 % succeeded, 5 % failed, 5 % running, 5 % pending (left as inserted).
        bucket = i % 20
        state = "succeeded" if bucket < 17 else "failed" if bucket == 17 else "running" if bucket == 18 else None
        if state is None:
            continue
        changes.append(StateChange("quantum", q["quantum_id"], state, start, sid, attempt=1))
        if state != "running":
            t0 = start + datetime.timedelta(seconds=i)
            executions.append({"id": new_id(), "run": run, "task_label": q["task_label"], "quantum_id": q["quantum_id"],
                               "data_id_key": q["data_id_key"], "status": state, "host": f"node{i % 16:02d}",
                               "start_time": t0, "end_time": t0 + datetime.timedelta(seconds=5 + i % 7),
                               "cpu_time": 4.0 + i % 5, "peak_memory": (200 + i % 300) * 2**20,
                               "software": "{}", "config_hash": "0" * 64})
    failed_jobs = job_ids[17::20]
    for k, jid in enumerate(job_ids):
        if jid in failed_jobs:
            changes.append(StateChange("job", jid, "failed", start, sid, attempt=1, fields={
                "failure_class": "task", "reason": "ValueError: PSF fit failed", "exit_code": 1, "host": "node01",
                "start_time": start, "end_time": start + datetime.timedelta(seconds=60), "wall_time": 60.0}))
        elif k % 20 < 17:
            changes.append(StateChange("job", jid, "succeeded", start, sid, attempt=1, fields={
                "host": f"node{k % 16:02d}", "start_time": start, "end_time": start + datetime.timedelta(seconds=50),
                "wall_time": 50.0, "cpu_time": 45.0, "peak_memory": 400 * 2**20}))
    batch_sql.record_states(registry, changes)
    for jid in failed_jobs:
        batch_sql.record_qc(registry, sid, jid, [{"severity": "error", "pattern": "PSF fit failed", "line_number": 42,
                                                  "line": "PSF fit failed on star 7", "task_label": "calibrate"}])
    provenance_sql.insert_executions(registry, executions)
    butler.close()
    return name


def _serve(root: Path) -> tuple[subprocess.Popen[bytes], str]:
    """uvicorn serving the repository in its own process (a client in the server's process would share its GIL)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    code = ("import sys, uvicorn; from skybutler.web import make_app; "
            "uvicorn.run(make_app(sys.argv[1]), host='127.0.0.1', port=int(sys.argv[2]), log_level='warning')")
    process = subprocess.Popen([sys.executable, "-W", "ignore", "-c", code, str(root), str(port)])
    url = f"http://127.0.0.1:{port}"
    import httpx

    for _ in range(1200):
        try:
            httpx.get(f"{url}/static/skybutler.css", timeout=1)
            return process, url
        except httpx.TransportError:
            if process.poll() is not None:
                raise RuntimeError("uvicorn exited") from None
            time.sleep(0.1)
    process.kill()
    raise RuntimeError("uvicorn did not start in 2 minutes")


def timings(get: Any, url: str, repeat: int) -> list[float]:
    answer = get(url)  # warm-up: templates compiled, connections opened
    assert answer.status_code == 200, (url, answer.status_code, answer.text[:500])
    out = []
    for _ in range(repeat):
        t = time.perf_counter()
        answer = get(url)
        out.append((time.perf_counter() - t) * 1000)
        assert answer.status_code == 200
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quanta", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--postgresql", metavar="URL", help="the registry on this PostgreSQL server instead of SQLite")
    args = parser.parse_args()

    import httpx
    from starlette.testclient import TestClient

    from skybutler.web import make_app

    with tempfile.TemporaryDirectory(prefix="bench_web_") as tmp, \
            throwaway_schema(args.postgresql, "bench_web") as namespace:
        root = Path(tmp) / "repo"
        t = time.perf_counter()
        name = build(root, args.quanta, args.postgresql, namespace)
        print(f"built a submission of {args.quanta:,} quanta in {max(1, args.quanta // 10):,} jobs "
              f"({time.perf_counter() - t:.1f} s, synthetic rows through batch_sql / provenance_sql)")
        pages = {"submission": f"/submissions/{name}",
                 "submission, failed jobs": f"/submissions/{name}?state=failed",
                 "submission + files of a type": f"/submissions/{name}?dataset_type=calexp",
                 "campaigns": "/", "campaigns fragment (poll)": "/fragments/submissions"}
        process, base = _serve(root)
        results: dict[str, dict[str, list[float]]] = {}
        try:
            with httpx.Client(base_url=base, timeout=60) as http, TestClient(make_app(root)) as local:
                for label, url in pages.items():
                    results[label] = {"http": timings(http.get, url, args.repeat),
                                      "in process": timings(local.get, url, args.repeat)}
        finally:
            process.terminate()
            process.wait(10)
    load = os.getloadavg()
    print(f"{'PostgreSQL' if args.postgresql else 'SQLite'}; {args.repeat} requests per page after a warm-up; "
          f"load average {load[0]:.1f} / {load[1]:.1f} on {os.cpu_count()} cores (a shared machine)")
    print(f"{'page':32s} {'via':11s} {'min ms':>8s} {'median ms':>10s} {'max ms':>8s}")
    for label, per in results.items():
        for via, values in per.items():
            print(f"{label:32s} {via:11s} {min(values):8.1f} {statistics.median(values):10.1f} {max(values):8.1f}")
    median = statistics.median(results["submission"]["http"])
    print(f"target: submission page <= {TARGET_MS:.0f} ms: median {median:.1f} ms over HTTP -> "
          f"{'met' if median <= TARGET_MS else 'MISSED'}")


if __name__ == "__main__":
    main()
