"""The dashboard over awkward data, served by the real app over HTTP on loopback (and in real
headless Chromium where the browser is what shows it): run and task ids that are no plain URL
segment, a task with tens of thousands of events, runs without the data a chart needs, a very
long app name, bad query parameters, and a page opened before a live run exists.
"""

from __future__ import annotations

import html
import json
import re
import shutil
import urllib.parse
from pathlib import Path

from conftest import CORPUS
import taskscope
from taskscope.web.dashboard import Dashboard, open_dashboard
from test_web import Server, Watched, browser, fetch  # noqa: F401 (browser is a fixture)

#: ids a log may hold that need encoding in a URL: a slash, a query, a fragment, a percent sign
ODD_RUN_IDS = ["a/b", "r?x=1", "r#1", "r%2F"]
ODD_TASK_IDS = ["t/../3", "1", "q?x#y", "p%2F"]


def jsonl_log(path: Path, runs: dict[str, list[str]], start: float = 1_700_000_000.0) -> Path:
    """A JSON-lines log where each run's tasks are submitted, run and end, each task after the
    one before it depending on it."""
    lines = []
    for r, (run_id, task_ids) in enumerate(runs.items()):
        for n, task_id in enumerate(task_ids):
            ts = start + 100 * r + n
            common = {"run_id": run_id, "task_id": task_id, "app_name": "work"}
            depends = {"depends_on": [task_ids[n - 1]]} if n else {}
            lines += [{"ts": ts, "event": "task submitted", "task_state": "pending", **common, **depends},
                      {"ts": ts + 0.2, "event": "task launched", "task_state": "launched", **common},
                      {"ts": ts + 0.4, "event": "task running", "task_state": "running", **common},
                      {"ts": ts + 0.9, "message": f"working on {task_id}", **common},
                      {"ts": ts + 1.0, "event": "task done", "task_state": "exec_done", **common}]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def served_log(path: Path) -> Server:
    store = taskscope.open(":memory:")
    store.ingest(path)
    return Server(Dashboard(store))


def links(body: str) -> list[str]:
    """The hrefs of a page's links, as the browser reads them (entities decoded)."""
    return [html.unescape(href) for href in re.findall(r'<a [^>]*href="([^"]*)"', body)]


def test_every_link_to_a_run_or_task_with_an_odd_id_opens_its_page(tmp_path):
    log = jsonl_log(tmp_path / "odd.jsonl", {run_id: ODD_TASK_IDS for run_id in ODD_RUN_IDS})
    server = served_log(log)
    try:
        # from the runs page, follow every link under /runs/ and /api/runs/ (and the log
        # explorer's, which link tasks), resolving each as a browser does
        seen, queue = set(), ["/"] + [f"/logs?run_id={urllib.parse.quote(r, safe='')}" for r in ODD_RUN_IDS]
        opened = {}
        while queue:
            path = queue.pop()
            if path in seen:
                continue
            seen.add(path)
            status, _, body = fetch(server.url + path)
            assert status == 200, path
            opened[path] = body
            for href in links(body):
                target = urllib.parse.urlsplit(urllib.parse.urljoin(server.url + path, href))
                resolved = target.path + (f"?{target.query}" if target.query else "")
                if target.path.startswith(("/runs/", "/api/runs/")) and resolved not in seen:
                    queue.append(resolved)
        for run_id in ODD_RUN_IDS:
            run_path = "/runs/" + urllib.parse.quote(run_id, safe="")
            assert run_path in opened and html.escape(run_id) in opened[run_path], run_id
            assert server.json("/api" + run_path)["run"]["run_id"] == run_id
            for task_id in ODD_TASK_IDS:
                task_path = f"{run_path}/tasks/{urllib.parse.quote(task_id, safe='')}"
                assert task_path in opened, task_path  # linked from the task list
                assert f"working on {task_id}" in html.unescape(opened[task_path]), task_path
                assert server.json("/api" + task_path)["task_id"] == task_id
    finally:
        server.stop()


#: the most a page may weigh however many events one task logged
PAGE_BYTES_LIMIT = 2_000_000


def test_a_task_with_20000_events_keeps_its_run_and_task_pages_small(tmp_path):
    log = jsonl_log(tmp_path / "chatty.jsonl", {"chatty": ["7"]})
    with log.open("a") as out:  # task 7 logs 20,000 lines while it runs
        for n in range(20_000):
            out.write(json.dumps({"ts": 1_700_000_000.5 + n * 0.00002, "run_id": "chatty", "task_id": "7",
                                  "app_name": "work", "event": f"tick {n}", "level": "debug"}) + "\n")
    server = served_log(log)
    try:
        status, _, run_page = fetch(f"{server.url}/runs/chatty")
        assert status == 200 and len(run_page.encode()) < PAGE_BYTES_LIMIT, len(run_page)
        height = int(re.search(r'id="chart-common-path" style="height: (\d+)px"', run_page).group(1))
        assert height < 2000, height
        assert "of the common path&#39;s" in run_page or "of the common path's" in run_page
        status, _, task_page = fetch(f"{server.url}/runs/chatty/tasks/7")
        assert status == 200 and len(task_page.encode()) < PAGE_BYTES_LIMIT, len(task_page)
        more = re.search(r'<p class="hint" id="timeline-more">(.*?)</p>', task_page).group(1)
        assert "20005 events" in more  # the 20,000 ticks and the task's own 5
        rest = html.unescape(re.search(r'href="([^"]*)"', more).group(1))
        assert server.json("/api" + rest)["total"] == 20_005
    finally:
        server.stop()


def test_a_page_opened_before_any_run_follows_the_runs_a_live_ingest_adds(tmp_path, browser):  # noqa: F811
    runinfo = tmp_path / "runinfo"
    runinfo.mkdir()
    dashboard = open_dashboard(str(tmp_path / "live.duckdb"), [str(runinfo)], interval_s=1)
    server = Server(dashboard)
    watched = Watched(browser)
    try:
        watched.visit(server.url + "/")
        assert "No runs in this store yet" in watched.page.locator("main").inner_text()
        watched.page.evaluate("() => { window.loadedOnce = true; }")
        shutil.copytree(CORPUS / "parsl-2025-textlog" / "000", runinfo / "000")  # a run's logs appear
        watched.page.wait_for_selector("a.run-link", timeout=120_000)
        assert watched.page.locator("a.run-link").inner_text() in [row["run_id"] for row in server.json("/api/runs")["runs"]]
        assert watched.page.evaluate("() => window.loadedOnce === true"), "the page was reloaded"
        assert not watched.problems and not watched.dialogs, (watched.problems, watched.dialogs)
    finally:
        watched.close()
        server.stop()
        dashboard.store.close()


def test_a_300_character_app_name_never_makes_a_page_scroll_sideways(tmp_path, browser):  # noqa: F811
    app = "A" * 300
    log = jsonl_log(tmp_path / "long.jsonl", {"long-name": ["1", "2"]})
    log.write_text(log.read_text().replace('"app_name": "work"', f'"app_name": "{app}"'))
    server = served_log(log)
    watched = Watched(browser, viewport={"width": 1366, "height": 768})
    try:
        for path in ("/runs/long-name", "/runs/long-name/tasks", "/runs/long-name/tasks/1", "/runs/long-name/gantt",
                     "/runs/long-name/dag", "/runs/long-name/resources", "/logs?run_id=long-name"):
            watched.visit(server.url + path)
            width = watched.page.evaluate("() => document.documentElement.scrollWidth")
            assert width <= 1366, (path, width)
            if path in ("/runs/long-name", "/runs/long-name/tasks", "/runs/long-name/tasks/1"):
                # cut short, the whole name in its title
                assert watched.page.locator(f'span.name[title="{app}"]').count(), path
    finally:
        watched.close()
        server.stop()


def test_a_chart_without_data_says_so_instead_of_drawing_empty_axes(tmp_path):
    # a program's tasks that log no state: no state, queue or worker slot to draw
    log = tmp_path / "plain.jsonl"
    log.write_text("".join(json.dumps({"ts": 1_700_000_000.0 + n, "run_id": "plain", "task_id": task,
                                       "message": f"working on {task}"}) + "\n" for n, task in enumerate("12")))
    server = served_log(log)
    try:
        _, _, run_page = fetch(f"{server.url}/runs/plain")
        _, _, resources = fetch(f"{server.url}/runs/plain/resources")
        for page, chart in ((run_page, "chart-states"), (run_page, "chart-queues"), (resources, "chart-slots")):
            assert f'data-target="{chart}"' not in page, chart  # no figure to draw
            assert re.search(rf'<p class="hint no-data" id="{chart}"><strong>[^<]+</strong>: nothing to draw', page)
        cards = re.findall(r'<div class="value"[^>]*>(.*?)</div><div class="label">', resources)
        assert cards and all(value.strip() for value in cards), cards  # "—" where the logs say nothing
    finally:
        server.stop()
    stated = served_log(jsonl_log(tmp_path / "stated.jsonl", {"stated": ["1", "2"]}))  # records with task_state
    try:
        assert 'data-target="chart-states"' in fetch(f"{stated.url}/runs/stated")[2]
    finally:
        stated.stop()


def test_the_run_page_says_why_a_queue_is_not_drawn():
    from test_web import corpus_server

    server = corpus_server(CORPUS / "parsl-2025-textlog")  # Parsl's default text logs: no DEBUG lines
    run_id = server.dashboard.store.runs().run_id.iloc[0]
    _, _, page = fetch(f"{server.url}/runs/{urllib.parse.quote(run_id)}")
    missing = html.unescape(re.search(r'<ul class="hint" id="queues-missing">(.*?)</ul>', page, re.DOTALL).group(1))
    assert "<strong>queued in interchange</strong>: no htex.interchange.queued" in missing
    assert "only at DEBUG level" in missing


def test_bad_dag_gantt_and_logs_parameters_get_400_and_an_asked_app_level_is_said_so(tmp_path):
    server = served_log(jsonl_log(tmp_path / "params.jsonl", {"params": ["1", "2", "3"]}))
    try:
        for path in ("/runs/params/dag?level=bogus", "/runs/params/gantt?by=bogus", "/logs?foo=1"):
            status, content_type, body = fetch(server.url + path)
            assert (status, content_type) == (400, "text/html"), path
            assert '<p class="error">' in body, path
        for path in ("/api/runs/params/dag?level=bogus", "/api/runs/params/gantt?by=bogus"):
            assert fetch(server.url + path)[:2] == (422, "application/json"), path
        status, _, body = fetch(server.url + "/runs/params/dag?level=app")
        assert status == 200 and "3 tasks, one node per app as asked" in body and "more than" not in body
        for path in ("/runs/params/dag?level=task", "/runs/params/gantt?by=slot", "/logs?run_id=params"):
            assert fetch(server.url + path)[0] == 200, path
    finally:
        server.stop()
