"""The web view in a real browser (Debian's chromium through Selenium), served by uvicorn on loopback.

Each page of the demo's repository is loaded, its figures read off the page and checked
against the registry; a query is typed; a lineage link is followed; a campaign page
follows a submission that changes while it is open. Screenshots go to
``$SKYBUTLER_TEST_ARTEFACTS/web`` (or the test's temporary directory).
"""

from __future__ import annotations

import datetime
import os
import shutil
import socket
import threading
from pathlib import Path

import pytest

from skybutler import Butler
from skybutler.provenance import execution_summary, lineage
from skybutler.registry import batch_sql

from .conftest import make_submission, service_missing

# The tests share a browser and a server (module fixtures): on one xdist worker (--dist loadgroup
# in pyproject.toml) chromium starts once per run, not once per worker.
pytestmark = [pytest.mark.browser, pytest.mark.xdist_group("browser")]

TOKEN = "browser-test-token"
WAIT = 20  # seconds a condition may take on a loaded machine (a bound on waiting, not a speed check)


def _find(name: str, *candidates: str) -> str | None:
    for c in candidates:
        if os.path.exists(c):
            return c
    return shutil.which(name)


class Server:
    """uvicorn serving an app in a thread, on a free loopback port."""

    def __init__(self, app):
        import uvicorn

        self.socket = socket.socket()
        self.socket.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.socket.getsockname()[1]}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.socket]}, daemon=True)

    def __enter__(self) -> Server:
        self.thread.start()
        ready = threading.Event()
        for _ in range(600):
            if self.server.started:
                ready.set()
                break
            ready.wait(0.05)
        assert ready.is_set(), "uvicorn did not start"
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.socket.close()


@pytest.fixture(scope="module")
def browser():
    chromium = _find("chromium", "/usr/bin/chromium")
    driver_path = _find("chromedriver", "/usr/bin/chromedriver")
    if chromium is None or driver_path is None:
        service_missing("chromium and chromedriver (apt-get install chromium chromium-driver)")
    pytest.importorskip("uvicorn")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1000",
                "--disable-gpu", "--disable-extensions"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def site(demo_repo):
    from skybutler.web import make_app

    with Server(make_app(demo_repo, token=TOKEN)) as server:
        yield server.url


@pytest.fixture(scope="module")
def signed_in(browser, site):
    """The browser after its first load with ?token= (the cookie holds it from then on)."""
    browser.get(f"{site}/?token={TOKEN}")
    assert "token" not in browser.current_url
    return browser


@pytest.fixture
def shot(request, tmp_path):
    """``shot(name)`` saves a screenshot of the browser as a test artefact."""
    base = os.environ.get("SKYBUTLER_TEST_ARTEFACTS")
    directory = Path(base) / "web" if base else tmp_path
    directory.mkdir(parents=True, exist_ok=True)

    def take(driver, name: str) -> Path:
        path = directory / f"{request.node.name}-{name}.png"
        assert driver.save_screenshot(str(path)), f"no screenshot at {path}"
        return path

    return take


def _wait(driver, condition):
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    # A polling page replaces its live block while it is read: read it again.
    return WebDriverWait(driver, WAIT, ignored_exceptions=[StaleElementReferenceException]).until(
        lambda d: condition(d))


def _numbers(driver, row_selector: str, attr: str, cell: str) -> dict[str, int]:
    from selenium.webdriver.common.by import By

    return {row.get_attribute(attr): int(row.find_element(By.CSS_SELECTOR, cell).text)
            for row in driver.find_elements(By.CSS_SELECTOR, row_selector)}


def test_a_browser_without_the_token_is_refused(browser, site):
    browser.delete_all_cookies()
    browser.get(f"{site}/datasets")
    assert "needs its token" in browser.page_source
    browser.get(f"{site}/?token={TOKEN}")  # signed in again for the tests that follow


def test_campaigns_page_shows_the_registry_figures(signed_in, site, demo_butler, demo_submission, shot):
    signed_in.get(f"{site}/")
    progress = batch_sql.progress(demo_butler.registry, demo_submission["id"])
    assert _numbers(signed_in, "tr[data-task]", "data-task", "td.n-succeeded") == {
        t: c.get("succeeded", 0) for t, c in progress.items()}
    assert _numbers(signed_in, "tr[data-task]", "data-task", "td.n-total") == {
        t: sum(c.values()) for t, c in progress.items()}
    shot(signed_in, "campaigns")


def test_submission_page_filters_jobs_and_answers_the_dmtn059_questions(signed_in, site, demo_butler,
                                                                         demo_submission, shot):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    signed_in.get(f"{site}/submissions/{demo_submission['name']}")
    executions = {task: n for task, _, n in execution_summary(demo_butler, run=demo_submission["run"])}
    assert _numbers(signed_in, "#executions-table tr[data-task]", "data-task", "td.n-executions") == executions
    shot(signed_in, "submission")
    Select(signed_in.find_element(By.ID, "job-task")).select_by_visible_text("assembleCoadd")
    signed_in.find_element(By.CSS_SELECTOR, "form.filters button").click()
    _wait(signed_in, lambda d: "task=assembleCoadd" in d.current_url)
    shown = sorted(r.get_attribute("data-job") for r in signed_in.find_elements(By.CSS_SELECTOR, "tr[data-job]"))
    expected = batch_sql.jobs(demo_butler.registry, demo_submission["id"], tasks=["assembleCoadd"])
    assert shown == sorted(j["name"] for j in expected)
    shot(signed_in, "jobs-filtered")


def test_typing_a_query_shows_its_datasets_and_a_bad_one_its_caret(signed_in, site, demo_butler, shot):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    signed_in.get(f"{site}/datasets")
    Select(signed_in.find_element(By.ID, "dataset-type")).select_by_visible_text("calexp")
    where = signed_in.find_element(By.ID, "where")
    where.send_keys("detector = 1")
    signed_in.find_element(By.ID, "run-query").click()
    _wait(signed_in, lambda d: d.find_elements(By.ID, "total"))
    refs = list(demo_butler.query_datasets("calexp", collections=demo_butler.collections.runs(),
                                           where="detector = 1"))
    assert int(signed_in.find_element(By.ID, "total").text) == len(refs) > 0
    rows = signed_in.find_elements(By.CSS_SELECTOR, "#results tr[data-id]")
    assert sorted(r.get_attribute("data-id") for r in rows) == sorted(str(r.id) for r in refs)
    assert all(r.find_element(By.CSS_SELECTOR, "td.col-detector").text == "1" for r in rows)
    shot(signed_in, "query")

    where = signed_in.find_element(By.ID, "where")
    where.clear()
    where.send_keys("detector = 1 AND")
    signed_in.find_element(By.ID, "run-query").click()
    error = _wait(signed_in, lambda d: d.find_elements(By.ID, "query-error"))[0].text
    # The browser keeps the <pre>'s spaces: the caret stands under the end of the expression.
    lines = error.splitlines()
    assert lines[-2].strip() == "detector = 1 AND"
    assert lines[-1].index("^") == lines[-2].index("detector") + len("detector = 1 AND")
    shot(signed_in, "query-error")


def test_dataset_page_and_following_a_lineage_link(signed_in, site, demo_butler, shot):
    from selenium.webdriver.common.by import By

    ref = next(iter(demo_butler.query_datasets("deepCoadd_calexp", collections=["demo/PROTO-0.1"])))
    signed_in.get(f"{site}/datasets/{ref.id}")
    file = demo_butler.registry.get_files([ref.id])[ref.id]
    assert signed_in.find_element(By.ID, "checksum").text == file.checksum
    assert signed_in.find_element(By.ID, "path").text == file.path
    parents = [e for e in lineage(demo_butler, ref.id) if e.depth == 1]
    nodes = {a.get_dom_attribute("href").rsplit("/", 1)[1]: a
             for a in signed_in.find_elements(By.CSS_SELECTOR, "#lineage-picture svg a")}
    assert {str(e.dataset.id) for e in parents} <= set(nodes), "what it derives from is in the picture"
    shot(signed_in, "dataset")
    # Click a node of the picture: what the dataset was made from.
    nearest = parents[0]
    target = str(nearest.dataset.id)
    signed_in.execute_script("arguments[0].scrollIntoView({block: 'center', inline: 'center'});", nodes[target])
    nodes[target].click()
    _wait(signed_in, lambda d: d.find_elements(By.ID, "dataset-id") and d.find_element(By.ID, "dataset-id").text == target)
    assert signed_in.find_element(By.ID, "data-id").text == ", ".join(
        f"{k}={v}" for k, v in nearest.dataset.ref.data_id.items())
    shot(signed_in, "ancestor")


def test_quantum_graph_page_pictures_the_graph_with_its_counts(signed_in, site, demo_submission, shot):
    from selenium.webdriver.common.by import By

    from skybutler.pipeline.graph import QuantumGraph

    signed_in.get(f"{site}/graph/{demo_submission['name']}")
    header = QuantumGraph.read_header(Path(demo_submission["directory"]) / "graph.qgraph")
    assert _numbers(signed_in, "#graph-counts tr[data-task]", "data-task", "td.n-quanta") == header["counts"]
    assert signed_in.find_elements(By.CSS_SELECTOR, "#graph-picture svg")
    shot(signed_in, "graph")


def test_campaign_page_follows_a_running_submission(browser, tmp_path, shot):
    from skybutler.web import make_app

    butler = Butler.create(tmp_path / "repo")
    row = make_submission(butler, "live", run="u/live", tasks={"isr": 4, "calibrate": 2})
    with Server(make_app(tmp_path / "repo", poll_seconds=0.5)) as server:
        browser.get(f"{server.url}/")
        _wait(browser, lambda d: _numbers(d, "tr[data-task]", "data-task", "td.n-succeeded") == {
            "isr": 0, "calibrate": 0})
        now = datetime.datetime.now(datetime.UTC)
        batch_sql.record_states(butler.registry, [
            batch_sql.StateChange("quantum", q["quantum_id"], "succeeded", now, row["id"])
            for q in row["quanta"] if q["task_label"] == "isr"][:3])
        # The page was not reloaded: its poll brings the new counts.
        _wait(browser, lambda d: _numbers(d, "tr[data-task]", "data-task", "td.n-succeeded")["isr"] == 3)
        shot(browser, "live")
        batch_sql.record_states(butler.registry, [batch_sql.StateChange("submission", row["id"], "succeeded",
                                                                        now, row["id"])])
        _wait(browser, lambda d: d.find_element("css selector", ".fragment").get_attribute("data-live") == "false")
    butler.close()
