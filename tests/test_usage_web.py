"""The /usage dashboard page and its JSON endpoints, in real headless Chromium, over a store a real
collector on 127.0.0.1 filled from real Parsl runs and the real client at levels 1, 2 and 3."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

import taskscope
from taskscope.usage import UsageTracker, reports
from taskscope.usage.collector import Collector
from taskscope.web.dashboard import Dashboard, open_dashboard
from test_usage import PROJECT, endpoint_of, run_parsl
from test_web import IMG, SCRIPT, Server, Watched, announced_url, browser  # noqa: F401 (browser is a fixture)

#: what the client runs send: (product, version, level, project_name, tasks as failed flags)
CLIENT_RUNS = [
    ("mytool", "1.0", 1, SCRIPT, []),
    ("mytool", "1.1", 2, SCRIPT, []),
    ("mytool", "1.1", 3, SCRIPT, [False, False, True]),
    ("mytool", "1.1", 3, IMG, [False] * 12),
    ("othertool", "0.3", 2, "beta-project", []),
    ("othertool", "0.3", 3, None, [True, False]),
]


@pytest.fixture(scope="module")
def usage_store(tmp_path_factory) -> Path:
    """A store the real collector wrote: real Parsl runs at levels 1, 2, 3, client runs, one bad datagram."""
    folder = tmp_path_factory.mktemp("usage_web")
    collector = Collector(folder / "usage.duckdb", port=0, commit_interval=0.1).start()
    try:
        for level in (1, 2, 3):
            run_parsl(endpoint_of(collector), level, "threads", folder / f"runinfo{level}")
        for product, version, level, project, tasks in CLIENT_RUNS:
            with UsageTracker(product, version, level=level, project_name=project, endpoint=endpoint_of(collector),
                              components=[f"{product}.executors.Pool", f"{product}.providers.Local"]) as tracker:
                for failed in tasks:
                    tracker.record_task(failed=failed)
            assert tracker.close(5)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.sendto(b"1{not json", collector.address)
    finally:
        stats = collector.stop()
    assert stats.rejected == 1 and stats.parsed == 3 + 1 + sum(2 if run[2] == 3 else 1 for run in CLIENT_RUNS)
    return folder / "usage.duckdb"


@pytest.fixture(scope="module")
def server(usage_store):
    running = Server(open_dashboard(str(usage_store)))
    yield running
    running.stop()


@pytest.fixture
def watched(browser):
    """A fresh watched browser page, closed after the test."""
    opened = Watched(browser)
    yield opened
    opened.close()


def table_rows(page, selector: str) -> list[list[str]]:
    """The body cells of the table inside `selector`, as text."""
    return [row.locator("td").all_inner_texts() for row in page.locator(f"{selector} tbody tr").all()]


def expected_leaderboard(store, **filters) -> list[list[str]]:
    board = reports.leaderboard(store, **filters)
    return [[str(v) for v in row] for row in board[["rank", "project_name", "runs", "level3_runs", "points"]]
            .itertuples(index=False)]


def test_usage_page_shows_what_the_queries_compute(server, watched):
    store = server.dashboard.store
    page = watched.page
    watched.visit(server.url + "/")
    assert page.locator("a.run-link").count() == 0  # usage correlators are not workflow runs
    page.locator("header nav a", has_text="Usage").click()
    page.wait_for_load_state("networkidle")
    assert page.url.endswith("/usage") and not watched.problems, watched.problems
    # every embedded figure was drawn by Plotly
    charts = page.locator("div.chart")
    assert charts.count() == 9 and page.locator("div.chart.js-plotly-plot").count() == 9
    # adoption is a table of weeks per release, not a line per version
    assert page.locator("#adoption-summary tbody tr").count() == len(
        reports.adoption_summary(store)) > 0

    shown = table_rows(page, "#leaderboard")
    assert shown == expected_leaderboard(store)
    points = {row[1]: int(row[4]) for row in shown}
    assert points == {PROJECT: 1 + 1 + 2, SCRIPT: 1 + 1 + 2, IMG: 2, "beta-project": 1}

    runs = reports.usage_runs(store)
    assert int(page.locator("#total-runs").inner_text()) == len(runs) == 3 + len(CLIENT_RUNS)
    assert int(page.locator("#total-level3").inner_text()) == int(runs.has_end.sum()) == 4
    assert int(page.locator("#total-rejected").inner_text()) == 1
    versions = reports.product_versions(store)
    assert [row[:3] for row in table_rows(page, "#versions")] == [
        [row.product, row.version, str(row.runs)] for row in versions.itertuples()]
    failures = table_rows(page, "#failures")
    assert sum(int(row[3]) for row in failures) == 5 + 3 + 12 + 2  # Parsl's 5 apps, the client's tasks
    assert sum(int(row[4]) for row in failures) == 1 + 1 + 0 + 1

    # the JSON endpoints say what the page says
    data = server.json("/api/usage")
    assert [[str(r[c]) for c in ("rank", "project_name", "runs", "level3_runs", "points")]
            for r in data["reports"]["leaderboard"]] == shown
    assert data["summary"]["runs"] == len(runs) and data["collected"]["rejected"] == 1
    assert server.json("/api/usage/leaderboard")["rows"] == data["reports"]["leaderboard"]
    assert {r["correlator"] for r in server.json("/api/usage/runs")["rows"]} == set(runs.correlator)


def test_usage_filters_product_and_since(server, watched):
    store = server.dashboard.store
    page = watched.page
    watched.visit(server.url + "/usage")
    page.select_option("#filter-product", "mytool")
    page.locator("form.filters button").click()
    page.wait_for_load_state("networkidle")
    assert "product=mytool" in page.url and not watched.problems, watched.problems
    mine = reports.usage_runs(store, product="mytool")
    assert int(page.locator("#total-runs").inner_text()) == len(mine) == 4
    assert table_rows(page, "#leaderboard") == expected_leaderboard(store, product="mytool")
    assert [r["project_name"] for r in server.json("/api/usage/leaderboard?product=mytool")["rows"]] == [
        row[1] for row in table_rows(page, "#leaderboard")]

    # since tomorrow: nothing matches, the page says so and stays whole
    tomorrow = time.strftime("%Y-%m-%d", time.gmtime(time.time() + 86400))
    watched.visit(server.url + f"/usage?since={tomorrow}")
    assert page.locator("#usage-no-match").is_visible()
    assert table_rows(page, "#leaderboard") == []
    assert server.json(f"/api/usage?since={tomorrow}")["summary"]["runs"] == 0
    yesterday = time.strftime("%Y-%m-%d", time.gmtime(time.time() - 86400))
    assert server.json(f"/api/usage?since={yesterday}")["summary"]["runs"] == len(reports.usage_runs(store))


@pytest.mark.parametrize("query", ["since=last+tuesday", "period=fortnight", "weeks=0"])
def test_bad_filters_are_a_clear_400(server, query):
    for path in ("/usage", "/api/usage", "/api/usage/leaderboard"):
        with pytest.raises(urllib.error.HTTPError) as raised:
            server.json(f"{path}?{query}")
        assert raised.value.code in (400, 422)
        assert raised.value.read()


def test_unknown_report_is_a_404(server):
    with pytest.raises(urllib.error.HTTPError) as raised:
        server.json("/api/usage/nonsense")
    assert raised.value.code == 404 and "leaderboard" in json.loads(raised.value.read())["error"]


def test_project_names_are_shown_as_text_and_never_run(server, watched):
    page = watched.page
    for url in ("/usage", "/usage?" + urllib.parse.urlencode({"product": SCRIPT, "since": ""})):
        watched.visit(server.url + url)
        assert page.locator("img[src='x']").count() == 0
        scripts = page.locator("script").all_text_contents()
        assert not any("alert(1)" in s for s in scripts if "application/json" not in s), url
    watched.visit(server.url + "/usage")
    text = page.locator("#leaderboard").inner_text()
    assert SCRIPT in text and IMG in text
    assert page.locator("#leaderboard script, #leaderboard img").count() == 0
    assert watched.dialogs == []


def test_store_without_usage_shows_an_empty_state(tmp_path, watched):
    path = tmp_path / "empty.duckdb"
    taskscope.open(str(path)).close()
    server = Server(Dashboard(taskscope.open(str(path), read_only=True)))
    try:
        watched.visit(server.url + "/usage")
        assert "No usage messages in this store" in watched.page.locator("#usage-empty").inner_text()
        assert watched.page.locator("div.chart").count() == 0
        assert server.json("/api/usage")["summary"]["runs"] == 0
    finally:
        server.stop()


def test_cli_ui_serves_the_collector_store(usage_store):
    command = [sys.executable, "-m", "taskscope.cli", "ui", "--store", str(usage_store), "--port", "0"]
    server = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        url = announced_url(server, "taskscope dashboard on ")
        with urllib.request.urlopen(f"{url}/usage", timeout=60) as response:
            page = response.read().decode()
        with urllib.request.urlopen(f"{url}/api/usage/leaderboard", timeout=60) as response:
            board = json.loads(response.read())["rows"]
        assert PROJECT in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page and SCRIPT not in page
        assert {row["project_name"] for row in board} == {PROJECT, SCRIPT, IMG, "beta-project"}
    finally:
        server.terminate()
        server.communicate(timeout=30)


def test_a_10000_character_project_name_stays_within_the_viewport(tmp_path, watched):
    """Names come from senders and can be any length: the page shortens them (the whole text on
    hover) and stays as wide as the window, in Chromium."""
    from taskscope.usage import protocol

    long_name = "p" * 9_990 + "-the-end"
    long_component = "parsl.executors." + "sub." * 40 + "VeryLongExecutorName"
    with Collector(tmp_path / "usage.duckdb", port=0, commit_interval=0.1) as collector:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            for number in range(2):
                sock.sendto(protocol.encode({
                    "correlator": f"long-{number}", "parsl_v": "2026.10.26", "python_v": "3.12.2",
                    "platform.system": "Linux", "tracking_level": 2, "project_name": long_name,
                    "components": [long_component]}), collector.address)
        deadline = time.monotonic() + 30
        while collector.stats.parsed < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
    assert collector.stats.parsed == 2
    server = Server(open_dashboard(str(tmp_path / "usage.duckdb")))
    try:
        watched.visit(server.url + "/usage")
        page = watched.page
        assert not watched.problems, watched.problems
        widths = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
        assert widths[0] <= widths[1], widths
        cell = page.locator("#leaderboard tbody td span.short")
        assert cell.get_attribute("title") == long_name
        assert len(cell.inner_text()) <= 40
        assert server.json("/api/usage/leaderboard")["rows"][0]["project_name"] == long_name  # the data is whole
    finally:
        server.stop()
