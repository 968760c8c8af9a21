"""The security headers on all three web apps, each served for real on 127.0.0.1: `taskscope ui`
over a corpus run, the usage pages served by a running usage collector (its `--ui-port` app) and
`taskscope fleet serve`. Every page is opened in headless Chromium, which enforces the
Content-Security-Policy: no page may log a console error or report a `securitypolicyviolation`,
and every chart must still be drawn by Plotly. A script injected into a page is blocked and
reported, which shows the policy is enforced and the listener hears it."""

from __future__ import annotations

import uuid

import httpx
import pytest

import taskscope
from taskscope.usage import UsageTracker
from taskscope.usage.collector import Collector
from taskscope.web.dashboard import Dashboard
from taskscope.web.server import listen_tcp, serve_beside_collector

from conftest import corpus_path
from test_fleet_server import FleetServer, check_security_headers, dask_batch, make_token
from test_usage import endpoint_of, wait_until
from test_web import Server, browser, page_urls  # noqa: F401 - browser is a fixture

pytestmark = pytest.mark.slow

#: what each page records before any of its own scripts run: every CSP violation it reports
LISTEN_FOR_VIOLATIONS = """
window.__violations = [];
document.addEventListener("securitypolicyviolation", function (event) {
  window.__violations.push(event.violatedDirective + " " + (event.blockedURI || "inline"));
});
"""
INJECT_INLINE_SCRIPT = """() => {
  const script = document.createElement("script");
  script.textContent = "window.__ran = 1";
  document.body.appendChild(script);
  return new Promise(resolve => setTimeout(() => resolve([window.__ran, window.__violations]), 200));
}"""


class CheckedPage:
    """A Chromium page that records console errors, page errors and CSP violations of every page it opens."""

    def __init__(self, context):
        self.page = context.new_page()
        self.page.set_default_timeout(120_000)
        self.page.add_init_script(LISTEN_FOR_VIOLATIONS)
        self.problems: list[str] = []
        self.page.on("console", lambda m: m.type == "error" and self.problems.append(f"console: {m.text}"))
        self.page.on("pageerror", lambda e: self.problems.append(f"page error: {e}"))

    def visit(self, url: str) -> None:
        """Open `url`; fail on any problem, or if a chart on it was not drawn by Plotly."""
        self.page.goto(url, wait_until="load")
        self.page.wait_for_load_state("networkidle")
        violations = self.page.evaluate("window.__violations")
        assert not self.problems and not violations, f"{url}: {self.problems} {violations}"
        charts = self.page.locator("div.chart")
        assert charts.count() == self.page.locator("div.chart.js-plotly-plot").count(), url

    def check_an_inline_script_is_blocked(self) -> None:
        """An inline script added to the open page does not run and is reported as a violation."""
        ran, violations = self.page.evaluate(INJECT_INLINE_SCRIPT)
        assert ran is None and any(v.startswith("script-src") for v in violations), violations
        self.problems.clear()  # the console error Chromium logs for that blocked script


def check_every_response(base_url: str, paths: list[str], **request) -> list[httpx.Response]:
    """GET every path of `base_url` and check its security headers."""
    replies = [httpx.get(base_url + path, timeout=60, **request) for path in paths]
    for reply in replies:
        check_security_headers(reply)
    return replies


def test_every_dashboard_page_has_the_headers_and_runs_under_the_policy(browser):
    store = taskscope.open(":memory:")
    store.ingest(corpus_path("parsl-htex-jsonlog"))
    server = Server(Dashboard(store))
    try:
        run_id = store.runs().run_id.iloc[0]
        pages = page_urls(server, store) + [f"/runs/{run_id}/gantt", "/usage", "/no-such-page", "/runs/no-such-run"]
        api = ["/api/runs", f"/api/runs/{run_id}", f"/api/runs/{run_id}/tasks", f"/api/runs/{run_id}/tasks?page=abc",
               "/api/runs/no-such-run", "/api/openapi.json", "/static/charts.js", "/static/plotly.min.js"]
        replies = check_every_response(server.url, pages + api)
        assert {r.status_code for r in replies} >= {200, 404, 422}
        assert httpx.get(server.url + "/api/docs", timeout=60).status_code == 404  # Swagger needs inline scripts
        context = browser.new_context()
        checked = CheckedPage(context)
        for path in pages[:-2]:
            checked.visit(server.url + path)
        checked.check_an_inline_script_is_blocked()
        checked.visit(f"{server.url}/runs/{run_id}/tasks")
        state = checked.page.locator("select[name=state] option").nth(1).get_attribute("value")
        with checked.page.expect_navigation():  # the filter submits itself, with no inline handler
            checked.page.select_option("select[name=state]", state)
        assert f"state={state}" in checked.page.url and not checked.problems
        context.close()
    finally:
        server.stop()


def test_usage_pages_of_a_running_collector_have_the_headers_and_run_under_the_policy(tmp_path, browser):
    collector = Collector(tmp_path / "usage.duckdb", port=0, commit_interval=0.1).start()
    try:
        server = serve_beside_collector(collector, listen_tcp("127.0.0.1", 0))
        sent = 0
        for version, level, tasks in (("1.0", 1, 0), ("1.1", 3, 3)):
            with UsageTracker("mytool", version, level=level, project_name="<script>alert(1)</script>",
                              endpoint=endpoint_of(collector)) as tracker:
                for index in range(tasks):
                    tracker.record_task(failed=index == 0)
            assert tracker.close(60)
            sent += len(tracker.messages)
        # close() means sent, not stored: the pages must show what the collector committed
        assert wait_until(lambda: collector.stats.parsed == sent)
        url = "http://%s:%d" % server.address
        pages = ["/usage", "/usage?product=mytool&period=day", "/usage?period=never"]
        replies = check_every_response(url, pages + ["/api/usage", "/api/usage/leaderboard.csv", "/api/usage/nope"])
        assert [r.status_code for r in replies] == [200, 200, 400, 200, 200, 404]
        context = browser.new_context()
        checked = CheckedPage(context)
        for path in pages[:2]:
            checked.visit(url + path)
        assert checked.page.locator("div.chart.js-plotly-plot").count() > 0
        checked.check_an_inline_script_is_blocked()
        context.close()
    finally:
        collector.stop()


def test_every_fleet_page_runs_under_the_policy(tmp_path, browser):
    store = tmp_path / "fleet.duckdb"
    token = make_token(store, "team-a", "alice")
    server = FleetServer(store)
    try:
        cluster_id = uuid.uuid4().hex
        assert server.post(token, dask_batch(cluster_id, "alice")).status_code == 200
        context = browser.new_context()
        checked = CheckedPage(context)
        checked.visit(server.url + "/login")
        checked.page.fill("input[name=token]", token)
        checked.page.click("button[type=submit]")
        checked.page.wait_for_load_state()
        for path in ["/", "/?since=", "/clusters?since=", f"/clusters/{cluster_id}", f"/clusters/{cluster_id}/profile"]:
            checked.visit(server.url + path)
        assert checked.page.url.endswith("/profile")
        checked.check_an_inline_script_is_blocked()
        context.close()
    finally:
        server.stop()
