"""The web view's pages through Starlette's test client: figures against the registry, escaping, the token."""

from __future__ import annotations

import json
import re
import uuid

import pytest

pytest.importorskip("starlette")
pytest.importorskip("httpx")

from starlette.testclient import TestClient  # noqa: E402

from skybutler import Butler, ConfigError  # noqa: E402
from skybutler.provenance import execution_summary  # noqa: E402
from skybutler.registry import batch_sql  # noqa: E402
from skybutler.web import COOKIE, make_app  # noqa: E402
from skybutler.web.server import check_bind, is_loopback  # noqa: E402
from skybutler.web.views import datasets_page  # noqa: E402

from .conftest import HOSTILE, make_submission  # noqa: E402

OWN_SCRIPT = '<script src="/static/live.js" defer></script>'


def _cells(html: str, row_attr: str, cls: str) -> dict[str, int]:
    """``{data-xxx value: integer in the cell of class cls}`` for the rows of a table."""
    out = {}
    for m in re.finditer(rf'<tr {row_attr}="([^"]*)".*?</tr>', html, re.S):
        cell = re.search(rf'class="[^"]*\b{cls}\b[^"]*">([^<]*)<', m.group(0))
        if cell:
            out[m.group(1)] = int(cell.group(1))
    return out


@pytest.fixture(scope="module")
def client(demo_repo):
    with TestClient(make_app(demo_repo)) as c:
        yield c


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    """A repository whose run, data id value, submission name, failure reason and QC line are all HTML."""
    root = tmp_path_factory.mktemp("hostile") / "repo"
    butler = Butler.create(root)
    butler.register_dataset_type("note", ("instrument",), "dict")
    butler.insert_dimension_records("instrument", [{"instrument": HOSTILE, "class_name": "X"}])
    ref = butler.put({"a": 1}, "note", {"instrument": HOSTILE}, run=f"u/{HOSTILE}")
    make_submission(butler, f"sub{HOSTILE}", run=f"u/{HOSTILE}", tasks={HOSTILE: 3}, reason=f"died: {HOSTILE}",
                    qc_line=f"log says {HOSTILE}")
    butler.close()
    with TestClient(make_app(root)) as c:
        yield c, ref


def test_campaigns_page_shows_each_tasks_quanta_per_state_as_the_registry_counts(client, demo_butler,
                                                                                  demo_submission):
    page = client.get("/")
    assert page.status_code == 200
    progress = batch_sql.progress(demo_butler.registry, demo_submission["id"])
    assert _cells(page.text, "data-task", "n-succeeded") == {t: c.get("succeeded", 0) for t, c in progress.items()}
    assert _cells(page.text, "data-task", "n-total") == {t: sum(c.values()) for t, c in progress.items()}
    assert f'data-state="{demo_submission["state"]}"' in page.text
    assert f'<b class="attempt">{demo_submission["attempt"]}</b>' in page.text


def test_campaigns_page_lists_tasks_in_pipeline_order(client):
    from skybutler.demo.run import STEPS

    tasks = re.findall(r'<tr data-task="([^"]+)"', client.get("/").text)
    assert tasks == list(STEPS)


def test_a_finished_submission_does_not_ask_to_be_polled_and_a_running_one_does(client, demo_submission,
                                                                                   tmp_path):
    name = demo_submission["name"]
    assert 'data-live="false"' in client.get(f"/fragments/submission/{name}").text
    butler = Butler.create(tmp_path / "repo")
    make_submission(butler, "busy", run="u/busy", tasks={"isr": 4})
    with TestClient(make_app(tmp_path / "repo")) as c:
        assert 'data-live="true"' in c.get("/fragments/submission/busy").text
        assert 'data-live="true"' in c.get("/fragments/submissions").text


def test_submission_page_answers_the_dmtn059_questions_as_the_registry_does(client, demo_butler, demo_submission):
    name, run = demo_submission["name"], demo_submission["run"]
    page = client.get(f"/submissions/{name}", params={"dataset_type": "deepCoadd_calexp"})
    assert page.status_code == 200
    executions = {task: n for task, status, n in execution_summary(demo_butler, run=run)}
    assert _cells(page.text, "data-task", "n-executions") == executions
    files = batch_sql.files_of_type(demo_butler.registry, run, "deepCoadd_calexp")
    assert f'<span id="files-total">{len(files)}</span>' in page.text
    for f in files:
        assert f["path"] in page.text
    times = batch_sql.time_per_task(demo_butler.registry, run)
    assert re.findall(r'<tr data-task="([^"]+)"><td>', page.text.split('id="time-table"')[1].split("</table>")[0]) \
        == [t["task_label"] for t in times]
    jobs = batch_sql.jobs(demo_butler.registry, demo_submission["id"])
    assert f'<span id="jobs-total">{len(jobs)}</span>' in page.text


def test_jobs_filter_by_state_and_task(client, demo_butler, demo_submission):
    name, sid = demo_submission["name"], demo_submission["id"]
    page = client.get(f"/submissions/{name}", params={"task": "assembleCoadd", "state": "succeeded"})
    expected = batch_sql.jobs(demo_butler.registry, sid, states=["succeeded"], tasks=["assembleCoadd"])
    assert 0 < len(expected) < len(batch_sql.jobs(demo_butler.registry, sid))
    assert sorted(re.findall(r'<tr data-job="([^"]+)"', page.text)) == sorted(j["name"] for j in expected)
    none = client.get(f"/submissions/{name}", params={"state": "failed"})
    assert re.findall(r'<tr data-job="', none.text) == []
    assert '<span id="jobs-total">0</span>' in none.text


def test_failures_show_reason_and_exit_code_and_qc_counts_per_severity(tmp_path):
    butler = Butler.create(tmp_path / "repo")
    make_submission(butler, "bad", run="u/bad", tasks={"isr": 2, "calibrate": 2}, reason="Traceback: ValueError",
                    qc_line="Traceback (most recent call last)")
    with TestClient(make_app(tmp_path / "repo")) as c:
        page = c.get("/submissions/bad").text
        assert 'class="num exit-code">3<' in page and "Traceback: ValueError" in page
        assert 'data-severity="error">error: <b>1</b>' in page
        only_warnings = c.get("/submissions/bad", params={"severity": "warning"}).text
        assert 'id="qc-table"' not in only_warnings


def test_datasets_query_uses_the_where_language_and_shows_paths_and_sizes(client, demo_butler):
    page = client.get("/datasets", params={"dataset_type": "calexp", "where": "detector = 1"})
    assert page.status_code == 200
    refs = list(demo_butler.query_datasets("calexp", collections=demo_butler.collections.runs(),
                                           where="detector = 1"))
    assert refs
    assert f'<span id="total">{len(refs)}</span>' in page.text
    assert sorted(re.findall(r'<tr data-id="([^"]+)"', page.text)) == sorted(str(r.id) for r in refs)
    files = demo_butler.registry.get_files([r.id for r in refs])
    for f in files.values():
        assert f.path in page.text


def test_an_invalid_expression_is_shown_with_its_caret(client):
    page = client.get("/datasets", params={"dataset_type": "calexp", "where": "visit >"})
    assert page.status_code == 400
    error = re.search(r'<pre class="error" id="query-error">(.*?)</pre>', page.text, re.S).group(1)
    assert "column 8" in error
    lines = error.splitlines()
    assert lines[-2].strip() == "visit &gt;" and lines[-1] == "  " + " " * 7 + "^"


def test_unknown_dataset_type_and_collection_are_messages_not_errors(client):
    assert "nope" in client.get("/datasets", params={"dataset_type": "nope"}).text
    page = client.get("/datasets", params={"dataset_type": "calexp", "collections": "no/such/run"})
    assert page.status_code == 400 and "no/such/run" in page.text


def test_datasets_are_paged_without_losing_or_repeating_any(demo_butler):
    everything = datasets_page(demo_butler, "calexp", page_size=1000)
    pages = [datasets_page(demo_butler, "calexp", page=p, page_size=3) for p in range(1, 5)]
    assert pages[0].pages == -(-everything.total // 3) > 1
    seen = [r["id"] for p in pages[:pages[0].pages] for r in p.rows]
    assert sorted(seen) == sorted(r["id"] for r in everything.rows)


def test_dataset_page_shows_file_checksum_and_the_execution_that_made_it(client, demo_butler):
    ref = next(iter(demo_butler.query_datasets("deepCoadd_calexp", collections=["demo/PROTO-0.1"])))
    page = client.get(f"/datasets/{ref.id}")
    assert page.status_code == 200
    file = demo_butler.registry.get_files([ref.id])[ref.id]
    assert f'<code id="checksum">{file.checksum}</code>' in page.text
    assert f'<code id="path">{file.path}</code>' in page.text
    from skybutler.provenance import provenance_of

    ex = provenance_of(demo_butler, ref.id).execution
    assert f'<td id="host">{ex["host"]}</td>' in page.text
    assert f'<code id="config-hash">{ex["config_hash"]}</code>' in page.text
    assert f'data-bytes="{ex["peak_memory"]}"' in page.text
    assert f'<td id="task">{ex["task_label"]}</td>' in page.text


def test_dataset_page_links_its_ancestors(client, demo_butler):
    from skybutler.provenance import lineage

    ref = next(iter(demo_butler.query_datasets("deepCoadd_calexp", collections=["demo/PROTO-0.1"])))
    page = client.get(f"/datasets/{ref.id}").text
    table = page.split('id="ancestors"')[1].split("</table>")[0]
    linked = set(re.findall(r'href="/datasets/([0-9a-f-]{36})"', table))
    assert linked == {str(e.dataset.id) for e in lineage(demo_butler, ref.id)}


def test_prov_download_is_the_w3c_document_of_the_dataset(client, demo_butler):
    ref = next(iter(demo_butler.query_datasets("calexp", collections=["demo/PROTO-0.1"])))
    answer = client.get(f"/datasets/{ref.id}/prov")
    assert answer.status_code == 200 and "attachment" in answer.headers["content-disposition"]
    doc = json.loads(answer.text)
    assert f"skybutler:dataset-{ref.id}" in doc["entity"]
    provn = client.get(f"/datasets/{ref.id}/prov", params={"format": "provn"})
    assert provn.text.startswith("document")
    assert client.get(f"/datasets/{ref.id}/prov", params={"format": "xml"}).status_code == 400


def test_graph_page_counts_quanta_per_task_as_the_graph_file(client, demo_submission):
    from pathlib import Path

    from skybutler.pipeline.graph import QuantumGraph

    page = client.get(f"/graph/{demo_submission['name']}")
    assert page.status_code == 200
    header = QuantumGraph.read_header(Path(demo_submission["directory"]) / "graph.qgraph")
    assert _cells(page.text, "data-task", "n-quanta") == header["counts"]


def test_unknown_things_answer_404(client):
    assert client.get("/submissions/no-such").status_code == 404
    assert client.get("/graph/no-such").status_code == 404
    assert client.get(f"/datasets/{uuid.uuid4()}").status_code == 404
    assert client.get("/datasets/not-a-uuid").status_code == 404


def test_the_view_is_read_only(client, demo_repo):
    assert client.post("/datasets").status_code == 405
    assert client.delete("/submissions/x").status_code == 405
    app = make_app(demo_repo)
    assert app.state.butler.writeable is False and app.state.butler.registry.writeable is False


def test_every_value_is_escaped(hostile):
    c, ref = hostile
    pages = {"campaigns": c.get("/"), "submission": c.get(f"/submissions/sub{HOSTILE}"),
             "datasets": c.get("/datasets", params={"dataset_type": "note"}), "dataset": c.get(f"/datasets/{ref.id}"),
             "query error": c.get("/datasets", params={"dataset_type": "note", "where": f"{HOSTILE} AND"})}
    for what, page in pages.items():
        assert page.status_code in (200, 400), what
        body = page.text.replace(OWN_SCRIPT, "")
        assert "<script" not in body, what
        assert "&lt;script&gt;" in body, what


def test_pages_forbid_inline_script(client):
    policy = client.get("/").headers["content-security-policy"]
    assert "script-src 'self'" in policy and "unsafe-inline" not in policy.split("script-src")[1].split(";")[0]


def test_with_a_token_every_request_needs_it(demo_repo):
    with TestClient(make_app(demo_repo, token="s3cret")) as c:
        assert c.get("/").status_code == 401
        assert c.get("/static/skybutler.css").status_code == 401
        assert c.get("/", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert c.get("/datasets", headers={"Authorization": "Bearer s3cret"}).status_code == 200
        first = c.get("/datasets?token=s3cret&dataset_type=calexp", follow_redirects=False)
        assert first.status_code == 303 and first.headers["location"] == "/datasets?dataset_type=calexp"
        cookie = first.headers["set-cookie"]
        assert cookie.startswith(f"{COOKIE}=s3cret") and "HttpOnly" in cookie and "SameSite=strict" in cookie
        assert c.get("/datasets?dataset_type=calexp").status_code == 200  # the cookie now
        c.cookies.clear()
        assert c.get("/?token=wrong", follow_redirects=False).status_code == 401


@pytest.mark.parametrize("host, loopback", [("127.0.0.1", True), ("127.3.2.1", True), ("::1", True),
                                            ("[::1]", True), ("localhost", True), ("0.0.0.0", False),
                                            ("::", False), ("10.1.2.3", False), ("example.org", False)])
def test_loopback_addresses(host, loopback):
    assert is_loopback(host) is loopback


def test_any_address_but_loopback_requires_a_token():
    check_bind("127.0.0.1", None)
    check_bind("0.0.0.0", "s3cret")
    with pytest.raises(ConfigError, match="--token"):
        check_bind("0.0.0.0", None)
    with pytest.raises(ConfigError, match="empty"):
        check_bind("127.0.0.1", "  ")


def test_serve_command_refuses_a_public_address_without_token_and_explains_itself(demo_repo):
    from click.testing import CliRunner

    from skybutler.cli.web_cmds import serve

    refused = CliRunner().invoke(serve, [str(demo_repo), "--host", "0.0.0.0"])
    assert isinstance(refused.exception, ConfigError) and "--token" in str(refused.exception)
    helped = CliRunner().invoke(serve, ["--help"])
    assert helped.exit_code == 0
    for word in ("--host", "--port", "--token", "127.0.0.1", "/datasets", "Bearer", "read-only"):
        assert word in helped.output
