"""The web dashboard in real headless Chromium (Playwright), served by the real app over HTTP
on loopback, over the corpus runs and fresh real Parsl runs."""

from __future__ import annotations

import html
import json
import re
import shutil
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from contextlib import ExitStack, contextmanager
from pathlib import Path

import markupsafe
import pytest
import uvicorn

from conftest import CORPUS, parsl_env
import taskscope
from taskscope.schema import natural_sort_key
from taskscope.web.app import create_app
from taskscope.web.dashboard import Dashboard, open_dashboard
from taskscope.web.server import is_loopback, listen_tcp

pytest.importorskip("playwright")
from playwright.sync_api import sync_playwright  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
SCRIPT = "<script>alert(1)</script>"
IMG = "<img src=x onerror=alert(1)>"

# A real Parsl workflow (threads) whose app logs both payloads and raises with them.
# With a gate folder (argv[4]), tasks after the first OPEN wait for its `release` file and the
# last task also for its `finish` file (each up to 300 s, then they go on anyway), so a test
# can look at the live run before it moves on, however slowly the machine runs.
HOSTILE_WORKFLOW = '''
import logging, os, sys
import parsl
from parsl.config import Config
from parsl.executors import ThreadPoolExecutor

SCRIPT = "<script>alert(1)</script>"
IMG = "<img src=x onerror=alert(1)>"
OPEN = 4

@parsl.python_app
def shout(i, pause, gates):
    import logging, os, time
    for gate in gates:
        deadline = time.time() + 300
        while not os.path.exists(gate) and time.time() < deadline:
            time.sleep(0.1)
    time.sleep(pause)
    logging.getLogger("parsl.app.shout").warning("task says %s and %s", SCRIPT, IMG)
    if i % 3 == 0:
        raise ValueError(f"bad input {IMG} {SCRIPT}")
    return i

def gates(i, n):
    if len(sys.argv) < 5 or i < OPEN:
        return []
    release, finish = os.path.join(sys.argv[4], "release"), os.path.join(sys.argv[4], "finish")
    return [release, finish] if i == n - 1 else [release]

runinfo, n, pause = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
config = Config(executors=[ThreadPoolExecutor(label="threads", max_threads=2)], run_dir=runinfo, strategy="none")
with parsl.load(config):
    futures = [shout(i, pause, gates(i, n)) for i in range(n)]
    for future in futures:
        try:
            future.result()
        except ValueError:
            pass
'''


# A real Parsl workflow (threads): three tasks fail, one depends on a failed one (dep_fail).
FAILING_WORKFLOW = '''
import sys
import parsl
from parsl.config import Config
from parsl.executors import ThreadPoolExecutor

@parsl.python_app
def step(i, pause):
    import time
    time.sleep(pause)
    if i in (1, 2, 3):
        raise ValueError(f"step {i} fails")
    return i

@parsl.python_app
def after(value):
    return value

runinfo, n, pause = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
config = Config(executors=[ThreadPoolExecutor(label="threads", max_threads=2)], run_dir=runinfo, strategy="none")
with parsl.load(config):
    steps = [step(i, pause) for i in range(n)]
    for future in steps + [after(steps[1])]:
        try:
            future.result()
        except Exception:
            pass
'''


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """The real app under uvicorn in a background thread, on a free loopback port."""

    def __init__(self, dashboard: Dashboard):
        self.dashboard = dashboard
        # bound here, on a port the kernel picks: no other test process can take it in between
        sock = listen_tcp("127.0.0.1", 0)
        self.port = sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(create_app(dashboard), host="127.0.0.1", port=self.port,
                                                    log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]}, daemon=True)
        self.thread.start()
        deadline = time.time() + 120
        while not self.server.started:
            assert time.time() < deadline, "server did not start"
            time.sleep(0.05)

    def json(self, path: str):
        with urllib.request.urlopen(self.url + path, timeout=60) as response:
            return json.loads(response.read())

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(30)
        if self.dashboard.live:
            self.dashboard.live.stop()


def run_parsl_script(script: Path, runinfo: Path, n: int, pause: float, wait: bool = True,
                     gate: Path | None = None):
    env = parsl_env()
    command = [sys.executable, str(script), str(runinfo), str(n), str(pause)] + ([str(gate)] if gate else [])
    if not wait:
        return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        pytest.fail(f"Parsl run failed:\n{done.stdout}\n{done.stderr}")
    return done


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install -y chromium")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM,
                                              args=["--headless", "--no-sandbox", "--disable-gpu"])
        yield launched
        launched.close()


class Watched:
    """A browser page that records console errors, page errors, failed requests and dialogs."""

    def __init__(self, browser, viewport: dict | None = None):
        self.page = browser.new_page(viewport=viewport)
        # Playwright's 30 s default for each goto and wait is too short on a loaded machine
        self.page.set_default_timeout(120_000)
        self.problems: list[str] = []
        self.dialogs: list[str] = []
        self.page.on("console", lambda m: m.type == "error" and self.problems.append(f"console: {m.text}"))
        self.page.on("pageerror", lambda e: self.problems.append(f"page error: {e}"))
        self.page.on("requestfailed", self._request_failed)
        self.page.on("response", lambda r: r.status >= 400 and self.problems.append(f"HTTP {r.status}: {r.url}"))
        self.page.on("dialog", self._dialog)

    def _request_failed(self, request) -> None:
        # ERR_ABORTED: the browser dropped a request itself, as when the next page is opened while
        # the last one's favicon is still loading; a server failing shows as a status or another error
        if request.failure != "net::ERR_ABORTED":
            self.problems.append(f"request failed: {request.url} ({request.failure})")

    def _dialog(self, dialog) -> None:
        self.dialogs.append(dialog.message)
        dialog.dismiss()

    def visit(self, url: str) -> None:
        self.page.goto(url, wait_until="load")
        self.page.wait_for_load_state("networkidle")
        assert not self.problems, f"{url}: {self.problems}"

    def close(self) -> None:
        self.page.close()


_servers: dict[str, Server] = {}


def corpus_server(corpus_run: Path, only_monitoring: bool = False) -> Server:
    """One server per corpus run (and kind), shared by the tests of this module."""
    key = f"{corpus_run}:{only_monitoring}"
    if key not in _servers:
        store = taskscope.open(":memory:")
        store.ingest(corpus_run / "monitoring.db" if only_monitoring else corpus_run)
        _servers[key] = Server(Dashboard(store))
    return _servers[key]


@pytest.fixture(scope="module", autouse=True)
def _stop_servers():
    yield
    for server in _servers.values():
        server.stop()
    _servers.clear()


def page_urls(server: Server, store) -> list[str]:
    """Every page of every run in `store`, including a failed task where there is one."""
    urls = ["/", "/logs", "/compare"]
    runs = store.runs().run_id.tolist()
    if len(runs) >= 1:
        urls.append(f"/compare?a={runs[0]}&b={runs[-1]}")
    for run_id in runs:
        tasks = store.tasks(run=run_id)
        chosen = {tasks.task_id.iloc[0], tasks.task_id.iloc[-1]}
        failed = tasks[tasks.final_state == "failed"]
        if not failed.empty:
            chosen.add(failed.task_id.iloc[0])
        urls += [f"/runs/{run_id}", f"/runs/{run_id}/tasks", f"/runs/{run_id}/tasks?sort=duration_s&desc=true",
                 f"/runs/{run_id}/dag", f"/runs/{run_id}/dag?level=app", f"/runs/{run_id}/resources",
                 f"/logs?run_id={run_id}", f"/logs?run_id={run_id}&q=task&page=2"]
        urls += [f"/runs/{run_id}/tasks/{task_id}" for task_id in sorted(chosen, key=natural_sort_key)]
    return urls


def check_every_page(browser, server: Server) -> None:
    watched = Watched(browser)
    try:
        for url in page_urls(server, server.dashboard.store):
            watched.visit(server.url + url)
            charts = watched.page.locator("div.chart")
            # every embedded figure was drawn by Plotly (served from the package)
            assert charts.count() == watched.page.locator("div.chart.js-plotly-plot").count(), url
    finally:
        watched.close()


def test_every_page_loads_without_console_errors(corpus_run, browser):
    check_every_page(browser, corpus_server(corpus_run))


def test_every_page_loads_from_monitoring_db_alone(corpus_run, browser):
    check_every_page(browser, corpus_server(corpus_run, only_monitoring=True))


def test_dag_draws_every_task_and_dependency(corpus_run, browser):
    server = corpus_server(corpus_run)
    run_id = server.dashboard.store.runs().run_id.iloc[0]
    tasks = server.dashboard.store.tasks(run=run_id)
    dependency_lines = server.dashboard.store.sql(
        "SELECT count(DISTINCT (task_id, attrs->>'dependency_task_id')) AS n FROM events "
        "WHERE run_id = ? AND event = 'task.dependency'", [run_id]).n.iloc[0]
    watched = Watched(browser)
    try:
        watched.visit(f"{server.url}/runs/{run_id}/dag")
        assert watched.page.locator("#dag svg circle").count() == len(tasks)
        assert watched.page.locator("#dag svg path").count() >= dependency_lines
    finally:
        watched.close()


def test_click_path_runs_run_task_manager_logs(browser):
    corpus = CORPUS / "parsl-htex-jsonlog"
    server = corpus_server(corpus)
    store = server.dashboard.store
    watched = Watched(browser)
    page = watched.page
    try:
        watched.visit(server.url + "/")
        page.locator("a.run-link").first.click()
        page.wait_for_load_state("networkidle")
        run_id = page.url.rstrip("/").split("/")[-1]
        assert run_id in store.runs().run_id.tolist()
        page.locator("header nav a", has_text="Tasks").click()
        page.wait_for_load_state("networkidle")
        page.locator("a.task-link").first.click()
        page.wait_for_load_state("networkidle")
        assert "/tasks/" in page.url
        manager_link = page.locator("#tries a.filter[href*='manager_id=']").first
        manager_id = manager_link.inner_text()
        manager_link.click()
        page.wait_for_load_state("networkidle")
        assert "/logs?" in page.url and f"manager_id={manager_id}" in page.url
        expected = store.sql("SELECT count(*) AS n FROM events WHERE run_id = ? AND manager_id = ?",
                             [run_id, manager_id]).n.iloc[0]
        assert expected > 0
        assert page.locator("#event-count").inner_text() == f"{expected} events"
        column = [h.inner_text() for h in page.locator("#events thead th").all()].index("manager_id")
        cells = page.locator(f"#events tbody tr td:nth-child({column + 1})").all_inner_texts()
        assert cells and set(cells) == {manager_id}
        assert not watched.problems
    finally:
        watched.close()


def script_run(tmp_path_factory, name: str, workflow: str, seconds: float) -> Path:
    """The runinfo folder of a real Parsl run of `workflow` (a script template for `run_parsl_script`)."""
    base = tmp_path_factory.mktemp(name)
    script = base / f"{name}.py"
    script.write_text(workflow)
    run_parsl_script(script, base / "runinfo", 6, seconds)
    return base / "runinfo"


@pytest.fixture(scope="module")
def hostile_run(tmp_path_factory) -> Path:
    return script_run(tmp_path_factory, "hostile", HOSTILE_WORKFLOW, 0.05)


def test_log_text_is_shown_as_text_and_never_runs(hostile_run, browser):
    store = taskscope.open(":memory:")
    store.ingest(hostile_run)
    hostile = store.sql("SELECT run_id, task_id FROM events WHERE message LIKE '%<script>alert(1)</script>%' "
                        "AND task_id IS NOT NULL ORDER BY ts")
    assert not hostile.empty, "the run did not log the payloads"
    run_id, task_id = hostile.run_id.iloc[0], hostile.task_id.iloc[0]
    server = Server(Dashboard(store))
    watched = Watched(browser)
    page = watched.page
    try:
        urls = [f"/logs?q={urllib.request.quote('alert(1)')}", f"/logs?run_id={run_id}",
                f"/runs/{run_id}/tasks/{task_id}", f"/runs/{run_id}", f"/runs/{run_id}/tasks?state=failed",
                "/logs?" + urllib.parse.urlencode({"source": IMG, "q": SCRIPT}),
                f"/api/logs?q={urllib.request.quote(SCRIPT)}"]
        for index, url in enumerate(urls[:5]):
            watched.visit(server.url + url)
            if index < 3:  # the pages that show log messages
                text = page.locator("body").inner_text()
                assert SCRIPT in text and IMG in text, url
            assert page.locator("img[src='x']").count() == 0
            scripts = page.locator("script").all_text_contents()
            assert not any("alert(1)" in s for s in scripts if "application/json" not in s), url
        watched.visit(server.url + urls[5])  # the payload as a filter value and a search
        assert page.locator("#q").input_value() == SCRIPT
        assert IMG in page.locator("#active-filters").inner_text()
        assert page.locator("img[src='x']").count() == 0
        page.goto(server.url + urls[6])
        assert watched.dialogs == []
    finally:
        watched.close()
        server.stop()


def test_monitoring_db_totals_are_per_manager_not_per_row(corpus_run, browser):
    server = corpus_server(corpus_run, only_monitoring=True)
    with sqlite3.connect(corpus_run / "monitoring.db") as db:
        last = db.execute("""SELECT uid, worker_count, cpu_count, hostname FROM node
                             WHERE rowid IN (SELECT max(rowid) FROM node GROUP BY uid)""").fetchall()
        summed_rows = db.execute("SELECT sum(worker_count) FROM node").fetchall()[0][0]
    # worker slots per manager, cores per host (each host once, however many managers it runs)
    workers, cpus = sum(r[1] for r in last), sum({r[3]: r[2] for r in last}.values())
    run_id = server.dashboard.store.runs().run_id.iloc[0]
    watched = Watched(browser)
    try:
        watched.visit(f"{server.url}/runs/{run_id}/resources")
        assert watched.page.locator("#total-workers").inner_text() == str(workers)
        assert watched.page.locator("#total-cpus").inner_text() == str(cpus)
        assert watched.page.locator("#total-managers").inner_text() == str(len(last))
        if len(last) == 1 and summed_rows != workers:
            # the row sum is what parsl-visualize shows
            assert watched.page.locator("#total-workers").inner_text() != str(summed_rows)
    finally:
        watched.close()
    assert server.json(f"/api/runs/{run_id}/resources")["capacity"]["workers"] == workers


def test_tasks_page_paginates_sorts_and_filters_on_the_server(browser):
    corpus = CORPUS / "parsl-mixed-textlog"
    server = corpus_server(corpus)
    store = server.dashboard.store
    run_id = store.runs().run_id.iloc[0]
    tasks = store.tasks(run=run_id)
    page_one = server.json(f"/api/runs/{run_id}/tasks?per_page=7&sort=task_id&desc=true")
    assert page_one["total"] == len(tasks) and page_one["pages"] == -(-len(tasks) // 7)
    assert [r["task_id"] for r in page_one["rows"]] == sorted(tasks.task_id, key=natural_sort_key, reverse=True)[:7]
    app = tasks.app_name.mode().iloc[0]
    filtered = server.json(f"/api/runs/{run_id}/tasks?app={app}&per_page=1000")
    assert filtered["total"] == int((tasks.app_name == app).sum())
    watched = Watched(browser)
    try:
        watched.visit(f"{server.url}/runs/{run_id}/tasks?per_page=7")
        assert watched.page.locator("#tasks tbody tr").count() == 7
        watched.page.locator("#next-page").click()
        watched.page.wait_for_load_state("networkidle")
        first = watched.page.locator("#tasks tbody tr td a.task-link").first.inner_text()
        assert first == sorted(tasks.task_id, key=natural_sort_key)[7]  # '9' before '10'
        assert tasks.task_id.tolist() == sorted(tasks.task_id, key=natural_sort_key)
    finally:
        watched.close()


def start_live_hostile_run(tmp_path: Path, tasks: int) -> subprocess.Popen:
    """Start the hostile workflow with `tasks` tasks in `tmp_path/runinfo`, gated by the folder
    `tmp_path/gate`, and return once its parsl.log exists (the run is live), for the dashboard
    to follow."""
    script = tmp_path / "hostile.py"
    script.write_text(HOSTILE_WORKFLOW)
    runinfo = tmp_path / "runinfo"
    (tmp_path / "gate").mkdir()
    running = run_parsl_script(script, runinfo, tasks, 0.5, wait=False, gate=tmp_path / "gate")
    deadline = time.time() + 60
    while not (runinfo / "000" / "parsl.log").exists():
        if time.time() >= deadline or running.poll() is not None:
            running.kill()
            pytest.fail("the run did not start")
        time.sleep(0.2)
    return running


def shown_live(server: Server, running: subprocess.Popen) -> dict:
    """The run's row of the runs table once the dashboard shows it live."""
    while True:
        live = [row for row in server.json("/api/runs")["runs"] if row["status"] == "live"]
        if live:
            return live[0]
        assert running.poll() is None, "the run ended before the dashboard showed it live"
        time.sleep(0.2)


@contextmanager
def followed_live(tmp_path: Path, count: int):
    """A real Parsl run of `count` tasks (test_web's hostile workflow) that a live dashboard
    follows: yields (the run's process, the served dashboard, the run's id, release) once the
    runs table shows it live. Only the first few tasks run until `release()` is called."""
    running = start_live_hostile_run(tmp_path, count)
    with ExitStack() as cleanup:
        cleanup.callback(lambda: running.poll() is None and running.kill())
        dashboard = open_dashboard(str(tmp_path / "live.duckdb"), [str(tmp_path / "runinfo")], interval_s=0.5)
        cleanup.callback(dashboard.store.close)
        server = Server(dashboard)
        cleanup.callback(server.stop)
        run_id = shown_live(server, running)["run_id"]

        def release() -> None:
            (tmp_path / "gate" / "release").touch()
            (tmp_path / "gate" / "finish").touch()

        yield running, server, run_id, release


def test_live_run_is_shown_live_then_finished(tmp_path, browser):
    running = start_live_hostile_run(tmp_path, 24)
    try:
        dashboard = open_dashboard(str(tmp_path / "live.duckdb"), [str(tmp_path / "runinfo")], interval_s=0.5)
        server = Server(dashboard)
        first = shown_live(server, running)["tasks_done"]
        (tmp_path / "gate" / "release").touch()
        # the last task waits for `finish`: the run goes on until the count has grown
        deadline = time.time() + 240
        while (run := server.json("/api/runs")["runs"][0])["tasks_done"] == first:
            assert time.time() < deadline and run["status"] == "live", "the done count never grew while the run went on"
            time.sleep(0.3)
        assert running.poll() is None and run["status"] == "live", run
        (tmp_path / "gate" / "finish").touch()
        assert running.wait(300) == 0, running.stderr.read()
        deadline = time.time() + 30
        while server.json("/api/runs")["runs"][0]["status"] == "live":
            assert time.time() < deadline, "the finished run is still shown live"
            time.sleep(0.3)
        run = server.json("/api/runs")["runs"][0]
        assert run["status"] == "failed" and run["tasks"] == 24 and run["tasks_failed"] == 8
        watched = Watched(browser)
        try:
            watched.visit(server.url + "/")
            assert "ingesting every" in watched.page.locator("header").inner_text()
        finally:
            watched.close()
        server.stop()
        dashboard.store.close()
    finally:
        if running.poll() is None:
            running.kill()


def test_store_is_read_only_without_a_path_to_ingest(tmp_path):
    store_file = tmp_path / "ro.duckdb"
    corpus = CORPUS / "parsl-2025-textlog"
    with taskscope.open(store_file) as store:
        store.ingest(corpus)
    dashboard = open_dashboard(str(store_file))
    try:
        with dashboard.reader() as con:
            with pytest.raises(Exception, match="read-only"):
                con.execute("DELETE FROM events")
    finally:
        dashboard.store.close()


def test_only_loopback_counts_as_loopback():
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("::")


def announced_url(server: subprocess.Popen, prefix: str, timeout: float = 120) -> str:
    """The URL a server subprocess prints on its stderr line starting with `prefix` (read line by line)."""
    deadline = time.time() + timeout
    seen = []
    while time.time() < deadline:
        line = server.stderr.readline()
        if not line:  # the server ended before announcing itself
            break
        seen.append(line)
        if line.startswith(prefix):
            # what the server writes later is read on, so that a full pipe never blocks it
            threading.Thread(target=server.stderr.read, daemon=True).start()
            return re.search(r"https?://[^\s/]+", line).group(0)
    raise AssertionError(f"no line starting with {prefix!r}: {''.join(seen)}")


def test_cli_serves_a_monitoring_db_on_the_port_it_announces(tmp_path):
    corpus = CORPUS / "parsl-2025-textlog"
    database = tmp_path / "monitoring.db"
    shutil.copy(corpus / "monitoring.db", database)
    # --port 0: the system picks a free port, and the URL line says which
    command = [sys.executable, "-m", "taskscope.cli", "ui", str(database), "--store", str(tmp_path / "ui.duckdb"),
               "--port", "0"]
    server = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        url = announced_url(server, "taskscope dashboard on ")
        assert not url.endswith(":0")
        with urllib.request.urlopen(f"{url}/api/runs", timeout=60) as response:
            runs = json.loads(response.read())["runs"]
        with sqlite3.connect(database) as db:
            expected = db.execute("SELECT run_id FROM workflow").fetchall()
        assert [r["run_id"] for r in runs] == [row[0] for row in expected]
        # a page of another site pointing its own name at 127.0.0.1 (DNS rebinding) names its host:
        # refused; the loopback names of this machine are served
        port = url.rsplit(":", 1)[1]
        for host, status in ((f"evil.example:{port}", 403), ("evil.example", 403), (f"localhost:{port}", 200),
                             (f"127.0.0.1:{port}", 200), (f"[::1]:{port}", 200)):
            request = urllib.request.Request(f"{url}/api/runs", headers={"Host": host})
            try:
                with urllib.request.urlopen(request, timeout=60) as response:
                    got, body = response.status, response.read()
            except urllib.error.HTTPError as refused:
                got, body = refused.code, refused.read()
            assert got == status, (host, got)
            assert (b"run_id" in body) == (status == 200), (host, body[:200])
    finally:
        server.terminate()
        server.communicate(timeout=30)


def test_cli_warns_before_listening_on_a_non_loopback_address(tmp_path):
    corpus = CORPUS / "parsl-2025-textlog"
    store_file = tmp_path / "w.duckdb"
    with taskscope.open(store_file) as store:
        store.ingest(corpus / "monitoring.db")
    # 192.0.2.1 (TEST-NET-1) is no address of this machine: the bind fails after the warning,
    # so the test never exposes anything
    command = [sys.executable, "-m", "taskscope.cli", "ui", "--store", str(store_file), "--host", "192.0.2.1",
               "--port", str(free_port())]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert "warning: listening on 192.0.2.1, not a loopback address" in done.stderr


def test_pages_are_the_same_from_the_stored_digest_and_without_it(tmp_path, browser):
    store_file = tmp_path / "digest.duckdb"
    with taskscope.open(store_file) as store:
        store.ingest(CORPUS / "parsl-htex-jsonlog")
        run_id = store.runs().run_id.iloc[0]
        assert store.sql("SELECT count(*) AS n FROM run_digests WHERE run_id = ?", [run_id]).n.iloc[0] > 0
    paths = [f"/runs/{run_id}", f"/runs/{run_id}/tasks?sort=duration_s&desc=true", f"/runs/{run_id}/resources"]
    seen = []
    for drop_digest in (False, True):
        if drop_digest:
            with taskscope.open(store_file) as store:
                store.con.execute("DELETE FROM run_digests")
        server = Server(Dashboard(taskscope.open(store_file, read_only=True)))
        watched = Watched(browser)
        try:
            bodies = [server.json("/api" + path) for path in paths]
            texts = []
            for path in paths:
                watched.visit(server.url + path)
                texts.append(watched.page.locator("main").inner_text())
            seen.append((bodies, texts))
        finally:
            watched.close()
            server.stop()
            server.dashboard.store.close()
    (run, tasks, resources), _ = seen[0]
    assert run["totals"][0]["tasks"] > 0 and run["common_path"] and tasks["rows"] and resources["capacity"]["workers"]
    assert seen[0] == seen[1]


def test_dag_of_a_big_app_pages_through_its_tasks(corpus_run, browser, monkeypatch):
    from taskscope.web.pages import dag

    server = corpus_server(corpus_run)
    store = server.dashboard.store
    run_id = store.runs().run_id.iloc[0]
    tasks = store.tasks(run=run_id)
    app = tasks.app_name.mode().iloc[0]
    of_app = sorted(tasks.task_id[tasks.app_name == app], key=natural_sort_key)
    limit = max(1, len(of_app) // 3)  # stands for the 2,000 of a real big run: three pages or more
    monkeypatch.setattr(dag, "TASK_LEVEL_LIMIT", limit)
    whole = server.json(f"/api/runs/{run_id}/dag")
    assert whole["level"] == "app" and sum(n["tasks"] for n in whole["nodes"]) == len(tasks)
    watched = Watched(browser)
    try:
        watched.visit(f"{server.url}/runs/{run_id}/dag")
        watched.page.locator(f"#dag svg a[href$='/dag?app={app}']").click()
        watched.page.wait_for_load_state("networkidle")
        shown = watched.page.locator("#dag svg circle").count()
        first = server.json(f"/api/runs/{run_id}/dag?app={urllib.parse.quote(app)}")
        assert first["level"] == "task" and first["pages"] == -(-len(of_app) // limit)
        assert shown == len(first["nodes"])
        assert {n["id"] for n in first["nodes"] if n["app"] == app} >= set(of_app[:limit])
        watched.page.locator("#dag-next").click()
        watched.page.wait_for_load_state("networkidle")
        assert "page 2 of" in watched.page.locator("#dag-pages").inner_text()
        assert not watched.problems
    finally:
        watched.close()
    second = server.json(f"/api/runs/{run_id}/dag?app={urllib.parse.quote(app)}&page=2")
    assert {n["id"] for n in second["nodes"] if n["app"] == app} >= set(of_app[limit:2 * limit])


def test_logs_api_rejects_an_unknown_column_with_400(corpus_run):
    server = corpus_server(corpus_run)
    with pytest.raises(urllib.error.HTTPError) as error:
        server.json("/api/logs?no_such_column=1")
    assert error.value.code == 400
    assert "no_such_column" in json.loads(error.value.read())["error"]


def fetch(url: str) -> tuple[int, str, str]:
    """Status, content type and body of a GET, errors included."""
    try:
        with urllib.request.urlopen(url, timeout=60) as response:
            return response.status, response.headers.get_content_type(), response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.headers.get_content_type(), error.read().decode()


def test_run_page_counts_a_block_logged_without_its_executor_once(corpus_run, browser):
    server = corpus_server(corpus_run)
    store = server.dashboard.store
    run_id = store.runs().run_id.iloc[0]
    # block.scaled_in and manager.status name block 0 without an executor label
    unlabelled = store.sql("SELECT count(*) AS n FROM events WHERE run_id = ? AND block_id IS NOT NULL "
                           "AND executor_label IS NULL", [run_id]).n.iloc[0]
    assert unlabelled > 0
    blocks = store.sql("SELECT count(DISTINCT (executor_label, block_id)) AS n FROM events WHERE run_id = ? "
                       "AND block_id IS NOT NULL AND executor_label IS NOT NULL", [run_id]).n.iloc[0]
    assert server.json(f"/api/runs/{run_id}")["infrastructure"]["blocks"] == blocks
    watched = Watched(browser)
    try:
        watched.visit(f"{server.url}/runs/{run_id}")
        assert watched.page.locator("#run-blocks .value").inner_text() == str(blocks)
    finally:
        watched.close()


@pytest.fixture(scope="module")
def failing_run(tmp_path_factory) -> Path:
    return script_run(tmp_path_factory, "failing", FAILING_WORKFLOW, 0.01)


def test_run_page_failure_counts_match_the_task_lists_they_link_to(failing_run, browser):
    store = taskscope.open(":memory:")
    store.ingest(failing_run)
    run_id = store.runs().run_id.iloc[0]
    final_states = store.tasks(run=run_id).final_state.value_counts()
    assert final_states["failed"] == 3 and final_states["dep_fail"] == 1
    server = Server(Dashboard(store))
    watched = Watched(browser)
    page = watched.page
    try:
        for state in ("failed", "dep_fail"):
            watched.visit(f"{server.url}/runs/{run_id}")
            shown = int(page.locator(f"#run-{state} .value").inner_text())
            assert shown == final_states[state]
            page.locator(f"#run-{state} a").click()
            page.wait_for_load_state("networkidle")
            assert f"state={state}" in page.url
            assert page.locator("#tasks tbody tr").count() == shown
        assert not watched.problems
    finally:
        watched.close()
        server.stop()


def test_bad_urls_get_the_html_error_page_and_api_urls_json(browser):
    server = corpus_server(CORPUS / "parsl-htex-jsonlog")
    run_id = server.dashboard.store.runs().run_id.iloc[0]
    # task ids are text: "abc" is a task this run does not have
    pages = {f"/runs/{run_id}/tasks/abc": 404, "/tasks/1.5": 404, f"/runs/{run_id}/tasks?page=0": 400,
             f"/runs/{run_id}/tasks?page=-1": 400, f"/runs/{run_id}/tasks?page=abc": 400,
             f"/runs/{run_id}/tasks?desc=maybe": 400, f"/runs/{run_id}/dag?page=abc": 400,
             f"/runs/{run_id}/tasks?sort=bogus": 400, f"/runs/{run_id}/tasks?sort=(select%201)": 400,
             "/runs": 404, "/runs/": 404, "/nope": 404, "/usage/nope": 404, "/runs/no-such-run": 404}
    for path, expected in pages.items():
        status, content_type, body = fetch(server.url + path)
        assert (status, content_type) == (expected, "text/html"), path
        assert '<p class="error">' in body and "detail" not in body, path
    apis = {"/api/nope": 404, f"/api/runs/{run_id}/tasks?page=0": 422, f"/api/runs/{run_id}/tasks?sort=bogus": 422}
    for path, expected in apis.items():
        status, content_type, body = fetch(server.url + path)
        assert (status, content_type) == (expected, "application/json"), path
        assert json.loads(body)["detail"], path
    # the log explorer's paging is refused as the tasks' is (it quietly took per_page=0 as 1, -5 as 100)
    for query, message in (("per_page=0", "per_page must be a whole number from 1 to 1000, not '0'"),
                           ("per_page=-5", "per_page must be a whole number from 1 to 1000, not '-5'"),
                           ("per_page=5000", "per_page must be a whole number from 1 to 1000, not '5000'"),
                           ("page=-1", "page must be a whole number from 1, not '-1'"),
                           ("page=abc", "page must be a whole number from 1, not 'abc'")):
        status, content_type, body = fetch(f"{server.url}/api/logs?{query}")
        assert (status, content_type, json.loads(body)) == (400, "application/json", {"error": message}), query
        status, content_type, body = fetch(f"{server.url}/logs?{query}")  # the page: its first page, and why
        assert (status, content_type) == (400, "text/html") and str(markupsafe.escape(message)) in body, query
    status, content_type, body = fetch(f"{server.url}/api/runs/{run_id}/tasks/abc")  # not found, like a run
    assert (status, content_type) == (404, "application/json")
    assert json.loads(body) == {"error": f"run {run_id} has no task abc"}
    status, content_type, _ = fetch(server.url + "/favicon.ico")
    assert status == 200 and content_type.startswith("image/")
    watched = Watched(browser)
    try:  # the bad value is shown as text in one sentence, never run
        response = watched.page.goto(f"{server.url}/runs/{run_id}/tasks?page={urllib.parse.quote(SCRIPT)}")
        assert response.status == 400
        message = watched.page.locator("p.error").inner_text()
        assert message.startswith("The query parameter page=" + SCRIPT) and message.endswith(".")
        assert watched.dialogs == [] and watched.page.locator("script", has_text="alert(1)").count() == 0
    finally:
        watched.close()


def test_log_messages_keep_a_readable_width_and_the_page_fits_the_window(corpus_run, browser):
    server = corpus_server(corpus_run)
    run_id = server.dashboard.store.runs().run_id.iloc[0]
    task_id = server.dashboard.store.sql(
        "SELECT task_id FROM events WHERE run_id = ? AND task_id IS NOT NULL "
        "ORDER BY length(message) DESC, natural_key(task_id) LIMIT 1", [run_id]).task_id.iloc[0]
    watched = Watched(browser, viewport={"width": 1400, "height": 900})
    try:
        for path in (f"/runs/{run_id}/tasks/{task_id}", f"/logs?run_id={run_id}&task_id={task_id}", "/logs"):
            watched.visit(server.url + path)
            layout = watched.page.evaluate("""() => ({
                page: document.documentElement.scrollWidth,
                widths: [...document.querySelectorAll("td.msg")].map(td => td.getBoundingClientRect().width),
                overflowing: [...document.querySelectorAll("td.msg")].filter(td => td.scrollWidth > td.clientWidth).length,
            })""")
            assert layout["widths"], path
            assert layout["page"] <= 1400, path
            assert min(layout["widths"]) >= 300, path  # about 40 characters a line at least
            assert layout["overflowing"] == 0, path  # long unbroken tokens wrap
    finally:
        watched.close()


def test_cli_reports_a_port_in_use_in_one_line(tmp_path):
    corpus = CORPUS / "parsl-2025-textlog"
    store_file = tmp_path / "busy.duckdb"
    with taskscope.open(store_file) as store:
        store.ingest(corpus / "monitoring.db")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        command = [sys.executable, "-m", "taskscope.cli", "ui", "--store", str(store_file), "--port", str(port)]
        done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip() == (f"error: port {port} on 127.0.0.1 is in use: stop what listens there "
                                   "or choose another port with --port")
    assert "http://" not in done.stdout + done.stderr


def test_text_task_ids_are_listed_naturally_and_each_link_opens_its_task(tmp_path):
    """Ids of any system (a Dask key may hold a slash, a space, a '#' or a '?') reach their page."""
    ids = ["sample-10", "sample #1/a b?", "sample-2", "9", "10"]
    events = tmp_path / "app.jsonl"
    events.write_text("".join(json.dumps({"ts": 1_700_000_000.0 + n, "message": f"working on {task}",
                                          "run_id": "text-ids", "task_id": task, "app_name": "f"}) + "\n"
                              for n, task in enumerate(ids)))
    store = taskscope.open(":memory:")
    store.ingest(events)
    server = Server(Dashboard(store))
    try:
        status, _, body = fetch(f"{server.url}/runs/text-ids/tasks")
        assert status == 200
        links = re.findall(r'class="task-link" href="([^"]*)"[^>]*>([^<]*)</a>', body)
        assert [html.unescape(text) for _, text in links] == ["9", "10", "sample #1/a b?", "sample-2", "sample-10"]
        for href, text in links:
            status, _, page = fetch(server.url + href)
            assert status == 200 and f"working on {html.unescape(text)}" in html.unescape(page), href
            detail = server.json(href.replace("/runs/", "/api/runs/", 1))
            assert detail["task_id"] == html.unescape(text)
    finally:
        server.stop()


def test_one_state_palette_on_the_run_page_and_the_dag(corpus_run, browser):
    """Each state has one colour (colour-blind safe, STATE_COLOURS) on every chart and the DAG, and
    every legend names the state beside it: failed is never green in one place and red in another."""
    from taskscope.presenters.figures import STATE_COLOURS

    server = corpus_server(corpus_run)
    run_id = server.dashboard.store.runs().run_id.iloc[0]
    watched = Watched(browser)
    try:
        watched.visit(f"{server.url}/runs/{run_id}")
        drawn = watched.page.evaluate("""() => Array.from(document.querySelectorAll('#chart-apps, #chart-states'))
            .flatMap(chart => chart.data.map(trace => [trace.name, (trace.marker || {}).color || (trace.line || {}).color]))""")
        states = [(name, colour) for name, colour in drawn if name in STATE_COLOURS]
        assert states and all(colour == STATE_COLOURS[name] for name, colour in states), drawn
        apps_states = watched.page.evaluate("() => document.querySelector('#chart-apps').data.map(t => t.name)")
        legend = watched.page.locator("#chart-apps .legendtext").all_text_contents()
        assert apps_states and set(apps_states) <= set(legend) and set(apps_states) <= set(STATE_COLOURS)
        watched.visit(f"{server.url}/runs/{run_id}/dag")
        watched.page.check("input[name=colour][value=state]")
        fills = watched.page.evaluate("""() => Array.from(document.querySelectorAll('#dag svg circle'))
            .map(circle => [circle.querySelector('title').textContent.split(': ').pop(), circle.getAttribute('fill')])""")
        assert fills and all(fill.lower() == STATE_COLOURS[state].lower() for state, fill in fills if state in STATE_COLOURS)
        assert {state for state, _ in fills} <= set(watched.page.locator("#dag-legend span").all_inner_texts())
    finally:
        watched.close()


def test_live_run_page_refreshes_itself_until_the_run_ends(tmp_path, browser):
    """The run page of a live run shows a rising done count without a reload, then stops
    refreshing once the run has ended (the run's log lines carry markup: none of it runs)."""
    with followed_live(tmp_path, 40) as (running, server, run_id, release):
        watched = Watched(browser)
        try:
            watched.page.goto(f"{server.url}/runs/{run_id}", wait_until="load")
            assert watched.page.evaluate("() => document.body.dataset.live") == "1"
            first = int(watched.page.locator("#run-done").inner_text() or 0)
            watched.page.evaluate("() => { window.loadedOnce = true; }")
            release()
            watched.page.wait_for_function("first => Number(document.querySelector('#run-done').textContent) > first",
                                           arg=first, timeout=120_000)
            assert watched.page.evaluate("() => window.loadedOnce === true"), "the page was reloaded"
            assert running.wait(300) == 0, running.stderr.read()
            watched.page.wait_for_function("() => document.body.dataset.live === '0'", timeout=120_000)
            assert watched.page.locator("#run-status .badge").inner_text() == "failed"
            assert watched.page.locator("#run-done").inner_text() == "26"  # 40 tasks, 14 fail (i % 3 == 0)
            assert watched.page.evaluate("() => window.loadedOnce === true")
            assert not watched.problems and not watched.dialogs, (watched.problems, watched.dialogs)
        finally:
            watched.close()


def test_long_names_ids_and_exceptions_from_the_logs_never_make_a_page_scroll_sideways(tmp_path, browser):
    """A 300-character app name (run page: the throughput legend squeezed the plot to 63 px), a
    2,000-character exception in monitoring's fail history (task page: 16,531 px wide) and a
    5,000-character task id (tasks page: 39,899 px wide), from a real monitoring.db and a stream."""
    database = tmp_path / "monitoring.db"
    shutil.copy(CORPUS / "parsl-htex-jsonlog" / "monitoring.db", database)
    app_name, exception = "a" * 300, "ValueError('" + "x" * 2000 + "')"
    with sqlite3.connect(database) as db:
        db.execute("UPDATE task SET task_func_name = ? WHERE task_id % 2 = 0", [app_name])  # two apps: a legend
        run_id, task_id = db.execute("SELECT run_id, task_id FROM try LIMIT 1").fetchone()
        db.execute("UPDATE try SET task_fail_history = ? WHERE run_id = ? AND task_id = ?", [exception, run_id, task_id])
    stream = tmp_path / "long.jsonl"
    long_id = "t" * 5000
    stream.write_text("".join(json.dumps({"ts": 1_780_000_000 + n, "run_id": "r-long", "task_id": long_id if n == 1 else f"t{n}",
                                          "app_name": "step", "message": f"step {n}"}) + "\n" for n in range(3)))
    store = taskscope.open(str(tmp_path / "long.duckdb"))
    store.ingest(database, stream)
    server = Server(Dashboard(store))
    watched = Watched(browser, viewport={"width": 1366, "height": 900})
    try:
        for path in (f"/runs/{run_id}", f"/runs/{run_id}/tasks/{task_id}", "/runs/r-long/tasks"):
            watched.visit(server.url + path)
            width = watched.page.evaluate("document.documentElement.scrollWidth")
            assert width <= 1366, (path, width)
        watched.visit(f"{server.url}/runs/{run_id}")
        plots = watched.page.evaluate("""() => [...document.querySelectorAll(".nsewdrag")]
                                                    .map(r => Math.round(r.getBoundingClientRect().width))""")
        assert plots and min(plots) >= 300, plots  # every plot keeps its room beside its legend
    finally:
        watched.close()
        server.stop()
        store.close()
