"""The log explorer, the DAG layout and the charts, in real headless Chromium at 1366 x 768 over
the corpus runs and fresh real Parsl runs: the log table fits the window and breaks no word, shows
file:line, opens each event's columns and attrs, and a clicked value keeps the text search; a
layer of 250 independent tasks is drawn as one layer; plotly.js comes gzip'd and cached a year;
a task's resource chart has one line per try, its legend clear of the right axis; common-path
labels are whole.
"""

from __future__ import annotations

import gzip
import json
import posixpath
import re
import subprocess
import sys
import urllib.parse
import urllib.request
from pathlib import Path

import plotly
import pytest
from conftest import CORPUS, parsl_env, shared_once
from test_web import Server, Watched, browser, corpus_server  # noqa: F401 (browser is a fixture)

import taskscope
from taskscope.web.dashboard import Dashboard

VIEWPORT = {"width": 1366, "height": 768}
PLOTLY_JS = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"

# A real Parsl run (threads): WIDE independent tasks, one task that needs them all, one after it.
WIDE_WORKFLOW = '''
import sys
import parsl
from parsl.config import Config
from parsl.executors import ThreadPoolExecutor

@parsl.python_app
def one(i):
    return i

@parsl.python_app
def total(*values):
    return sum(values)

@parsl.python_app
def report(value):
    return value

if __name__ == "__main__":
    runinfo, n = sys.argv[1], int(sys.argv[2])
    config = Config(executors=[ThreadPoolExecutor(label="threads", max_threads=2)], run_dir=runinfo, strategy="none")
    with parsl.load(config):
        print(report(total(*[one(i) for i in range(n)])).result())
'''
WIDE = 250

# A real Parsl run (HTEX, resource monitoring every 0.5 s): one task whose first try fails after
# 3 s and whose second try (retries=1) succeeds after 3 s, so both tries have two samples or more
# even when the monitor starts late on a loaded machine.
RETRY_WORKFLOW = '''
import os, sys
import parsl
from parsl.config import Config
from parsl.executors import HighThroughputExecutor
from parsl.launchers import SingleNodeLauncher
from parsl.monitoring.monitoring import MonitoringHub
from parsl.providers import LocalProvider

@parsl.python_app
def flaky(marker):
    import os, time
    time.sleep(3)
    if not os.path.exists(marker):
        open(marker, "w").close()
        raise ValueError("the first try fails")
    return 1

if __name__ == "__main__":
    runinfo = sys.argv[1]
    executor = HighThroughputExecutor(label="htex_local", max_workers_per_node=1, cores_per_worker=1,
                                      loopback_address="127.0.0.1", encrypted=False,
                                      provider=LocalProvider(init_blocks=1, min_blocks=1, max_blocks=1,
                                                             launcher=SingleNodeLauncher()))
    config = Config(executors=[executor], run_dir=runinfo, retries=1, strategy="none",
                    monitoring=MonitoringHub(resource_monitoring_interval=0.5))
    with parsl.load(config):
        print(flaky(os.path.join(os.path.dirname(runinfo), "marker")).result())
    parsl.clear()
'''


def run_workflow(base: Path, workflow: str, *args: str) -> None:
    """Run `workflow` (a script's text) in its own Python process with runinfo `base/runinfo`."""
    script = base / "workflow.py"
    script.write_text(workflow)
    done = subprocess.run([sys.executable, str(script), str(base / "runinfo"), *args], capture_output=True,
                          text=True, timeout=300, env=parsl_env(), cwd=base, check=False)
    if done.returncode != 0:
        pytest.fail(f"real Parsl run failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")


@pytest.fixture(scope="module")
def wide_dag_run(tmp_path_factory) -> Path:
    return shared_once(tmp_path_factory, "wide_dag_run",
                       lambda base: run_workflow(base, WIDE_WORKFLOW, str(WIDE))) / "runinfo"


@pytest.fixture(scope="module")
def retry_resources_run(tmp_path_factory) -> Path:
    return shared_once(tmp_path_factory, "retry_resources_run",
                       lambda base: run_workflow(base, RETRY_WORKFLOW)) / "runinfo"


def jsonlog_run() -> tuple[Server, str]:
    """The corpus's JSON-logged HTEX run, served (shared by the tests), and its run id."""
    server = corpus_server(CORPUS / "parsl-htex-jsonlog")
    return server, server.dashboard.store.runs().run_id.iloc[0]


def served(path: Path) -> Server:
    store = taskscope.open(":memory:")
    store.ingest(path)
    return Server(Dashboard(store))


# the places where a cell of a table of events is broken across lines inside a word (between two
# letters or digits: "DEB|UG"), leaving out a message's words wider than the whole message
# column; a line may still end after a hyphen or a slash, as text does
BROKEN_WORDS = """(cells = "#events > tbody > tr.event > td") => {
    const broken = [];
    const top = (node, i) => {
        const range = document.createRange();
        range.setStart(node, i);
        range.setEnd(node, i + 1);
        const rect = [...range.getClientRects()].find(r => r.width > 0);
        return rect ? Math.round(rect.top) : null;
    };
    for (const td of document.querySelectorAll(cells)) {
        const walker = document.createTreeWalker(td, NodeFilter.SHOW_TEXT);
        for (let node = walker.nextNode(); node; node = walker.nextNode()) {
            const re = /\\S+/g;
            for (let m = re.exec(node.data); m; m = re.exec(node.data)) {
                const range = document.createRange();
                range.setStart(node, m.index);
                range.setEnd(node, m.index + m[0].length);
                const style = getComputedStyle(td);
                const room = td.clientWidth - parseFloat(style.paddingLeft) - parseFloat(style.paddingRight);
                const width = [...range.getClientRects()].reduce((sum, r) => sum + r.width, 0);  // unbroken
                if (td.classList.contains("msg") && width >= room - 1) { continue; }
                for (let i = m.index + 1; i < m.index + m[0].length; i++) {
                    const before = node.data[i - 1], after = node.data[i];
                    if (/[A-Za-z0-9]/.test(before) && /[A-Za-z0-9]/.test(after) && top(node, i - 1) !== top(node, i)) {
                        broken.push(m[0] + " at " + (i - m.index));
                    }
                }
            }
        }
    }
    return broken;
}"""


def first_page(store, where: str = "true", params: list | None = None):
    """The events of the explorer's first page (100, in time order), from SQL."""
    return store.sql(f"SELECT * FROM events WHERE {where} ORDER BY ts, file, line LIMIT 100", params or [])


def test_log_table_fits_1366_px_and_breaks_no_word(corpus_run, browser):
    server = corpus_server(corpus_run)
    store = server.dashboard.store
    expected = first_page(store)
    watched = Watched(browser, viewport=VIEWPORT)
    page = watched.page
    try:
        watched.visit(server.url + "/logs")
        headers = page.locator("#events thead th").all_inner_texts()
        assert len(headers) <= 9 and "file:line" in headers and "message" in headers, headers
        layout = page.evaluate("""() => {
            const box = document.querySelector(".table-scroll");
            return {page: document.documentElement.scrollWidth, box: box.scrollWidth - box.clientWidth,
                    right: document.querySelector("#events").getBoundingClientRect().right,
                    styles: [...document.querySelectorAll("#events > tbody > tr.event > td")].map(td => {
                        const s = getComputedStyle(td); return s.wordBreak + " " + s.overflowWrap; })};
        }""")
        assert layout["page"] <= VIEWPORT["width"] and layout["box"] <= 0 and layout["right"] <= VIEWPORT["width"]
        assert set(layout["styles"]) <= {"normal normal", "normal break-word"}, set(layout["styles"])
        assert page.evaluate(BROKEN_WORDS) == []
        # file:line of every row, as the events say
        column = headers.index("file:line") + 1
        shown = page.locator(f"#events > tbody > tr.event > td:nth-child({column})").all_inner_texts()
        assert shown == [f"{posixpath.basename(f)}:{int(n)}" for f, n in zip(expected.file, expected.line)]
        # the longest event name on the page: one line, inside the window, its whole text in the title
        longest = int(expected.event.fillna("").str.len().idxmax())
        event_column = headers.index("event") + 1
        cell = page.locator(f"#events > tbody > tr.event >> nth={longest}").locator(f"td:nth-child({event_column})")
        box, text = cell.bounding_box(), cell.locator("a").bounding_box()
        line_height = page.evaluate("td => parseFloat(getComputedStyle(td).lineHeight) || 18", cell.element_handle())
        assert box["x"] + box["width"] <= VIEWPORT["width"] and text["height"] < 1.5 * line_height
        # what does not fit is hidden behind an ellipsis, not drawn over the next column
        clipped = cell.evaluate("td => [td.scrollWidth > td.clientWidth, getComputedStyle(td).overflowX, "
                                "getComputedStyle(td).textOverflow]")
        assert clipped == [text["width"] > box["width"], "hidden", "ellipsis"], clipped
        assert cell.locator("a").get_attribute("title").endswith(expected.event.iloc[longest])
        # a message of many lines shows its first line and how many follow
        messages = expected.message.fillna("")
        many = messages[messages.str.count("\n") >= 3]
        if not many.empty:
            row = int(many.index[0])
            text = page.locator(f"#events > tbody > tr.event >> nth={row}").locator("td.msg").inner_text()
            lines = messages.iloc[row].split("\n")
            assert text == f"{lines[0]} +{len(lines) - 1} lines"
        assert not watched.problems
    finally:
        watched.close()


def longest_message_task(store) -> tuple[str, str]:
    """The first run of `store` and the task of it that logged the longest message."""
    run_id = store.runs().run_id.iloc[0]
    return run_id, store.sql("SELECT task_id FROM events WHERE run_id = ? AND task_id IS NOT NULL "
                             "ORDER BY length(message) DESC, natural_key(task_id) LIMIT 1", [run_id]).task_id.iloc[0]


def test_a_task_timeline_fits_1366_px_and_breaks_no_word(corpus_run, browser):
    server = corpus_server(corpus_run)
    store = server.dashboard.store
    run_id, task_id = longest_message_task(store)
    files = store.sql("SELECT file, line FROM events WHERE run_id = ? AND task_id = ?", [run_id, task_id])
    watched = Watched(browser, viewport=VIEWPORT)
    page = watched.page
    try:
        watched.visit(f"{server.url}/runs/{run_id}/tasks/{task_id}")
        assert page.evaluate(BROKEN_WORDS, "#timeline > tbody > tr > td") == []
        fit = page.evaluate("""() => { const box = document.querySelector("#timeline").parentElement;
                                      return [box.scrollWidth - box.clientWidth, document.documentElement.scrollWidth]; }""")
        assert fit[0] <= 0 and fit[1] <= VIEWPORT["width"], fit
        shown = set(page.locator("#timeline > tbody > tr > td:last-child").all_inner_texts())
        assert shown == {f"{posixpath.basename(f)}:{int(n)}" for f, n in zip(files.file, files.line)}
    finally:
        watched.close()


def test_a_click_on_a_row_opens_all_its_columns_and_attrs(browser):
    server = corpus_server(CORPUS / "parsl-htex-jsonlog")
    expected = first_page(server.dashboard.store)
    with_attrs = expected[expected["attrs"].notna() & expected.message.str.contains("\n", regex=False)]
    row = int(with_attrs.index[0]) if not with_attrs.empty else int(expected["attrs"].notna().idxmax())
    event = expected.iloc[row]
    attrs = json.loads(event["attrs"])
    assert attrs, "the corpus event has no attrs"
    watched = Watched(browser, viewport=VIEWPORT)
    page = watched.page
    try:
        watched.visit(server.url + "/logs")
        page.locator(f"#events > tbody > tr.event >> nth={row}").locator("td.msg").click()
        detail = page.locator("#events tr.detail")
        assert detail.count() == 1
        assert detail.locator("pre.message").inner_text() == event.message
        tables = {t.locator("caption").inner_text(): t for t in detail.locator("table.kv").all()}
        shown_attrs = dict(zip(tables["attrs"].locator("th").all_inner_texts(),
                               tables["attrs"].locator("td").all_inner_texts()))
        assert shown_attrs == {k: v if isinstance(v, str) else json.dumps(v) for k, v in attrs.items()}
        shown_columns = dict(zip(tables["columns"].locator("th").all_inner_texts(),
                                 tables["columns"].locator("td").all_inner_texts()))
        for column in ("source", "level", "event", "logger", "run_id", "file"):
            if isinstance(event[column], str) and event[column]:
                assert shown_columns[column] == event[column], column
        assert shown_columns["line"] == str(int(event.line))
        # a second click closes it
        page.locator(f"#events > tbody > tr.event >> nth={row}").locator("td.msg").click()
        assert page.locator("#events tr.detail").count() == 0
        assert not watched.problems
    finally:
        watched.close()


def test_a_clicked_value_adds_a_filter_and_keeps_the_text_search(browser):
    server = corpus_server(CORPUS / "parsl-htex-jsonlog")
    store = server.dashboard.store
    watched = Watched(browser, viewport=VIEWPORT)
    page = watched.page
    text = "Task"
    try:
        watched.visit(server.url + "/logs?" + urllib.parse.urlencode({"q": text}))
        headers = page.locator("#events thead th").all_inner_texts()
        link = page.locator(f"#events > tbody > tr.event > td:nth-child({headers.index('source') + 1}) a").first
        source = link.inner_text()
        link.click()
        page.wait_for_load_state("networkidle")
        assert page.locator("#q").input_value() == text
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(page.url).query)
        assert query["q"] == [text] and query["source"] == [source]
        expected = store.sql("SELECT count(*) AS n FROM events WHERE source = ? AND contains(lower(message), lower(?))",
                             [source, text]).n.iloc[0]
        assert page.locator("#event-count").inner_text() == f"{expected} events"
        rows = page.locator("#events > tbody > tr.event")
        details = [json.loads(d) for d in rows.evaluate_all("rows => rows.map(r => r.dataset.detail)")]
        assert details and all(text.lower() in d["message"].lower() for d in details)
        assert all(dict(d["columns"])["source"] == source for d in details)
        # a value in a row's detail adds its filter the same way
        rows.first.locator("td.msg").click()
        level_link = page.locator("#events tr.detail table.kv tr").filter(
            has=page.locator("th", has_text=re.compile("^level$"))).locator("a")
        level = level_link.inner_text()
        level_link.click()
        page.wait_for_load_state("networkidle")
        assert page.locator("#q").input_value() == text
        expected = store.sql("SELECT count(*) AS n FROM events WHERE source = ? AND level = ? "
                             "AND contains(lower(message), lower(?))", [source, level, text]).n.iloc[0]
        assert page.locator("#event-count").inner_text() == f"{expected} events"
        # other columns, chosen in the form: shown, and the search still kept
        page.locator("#choose-columns summary").click()
        page.locator("#choose-columns input[value=manager_id]").check()
        page.locator("#choose-columns input[value=run_id]").uncheck()
        page.locator("#choose-columns button").click()
        page.wait_for_load_state("networkidle")
        headers = page.locator("#events thead th").all_inner_texts()
        assert "manager_id" in headers and "run_id" not in headers
        assert page.locator("#q").input_value() == text
        assert page.locator("#event-count").inner_text() == f"{expected} events"
        assert not watched.problems
    finally:
        watched.close()


def test_a_layer_of_250_independent_tasks_is_drawn_as_one_layer(wide_dag_run, browser):
    server = served(wide_dag_run)
    store = server.dashboard.store
    run_id = store.runs().run_id.iloc[0]
    waiting = set(store.sql("SELECT DISTINCT task_id FROM events WHERE run_id = ? AND event = 'task.dependency'",
                            [run_id]).task_id)
    all_tasks = set(store.tasks(run=run_id).task_id)
    independent = all_tasks - waiting
    assert len(independent) == WIDE and len(all_tasks) == WIDE + 2
    watched = Watched(browser, viewport=VIEWPORT)
    try:
        watched.visit(f"{server.url}/runs/{run_id}/dag")
        circles = watched.page.evaluate("""() => [...document.querySelectorAll("#dag svg circle")].map(c =>
            ({id: c.dataset.id, x: +c.getAttribute("cx"), y: +c.getAttribute("cy")}))""")
        assert {c["id"] for c in circles} == all_tasks
        layer = sorted({c["x"] for c in circles if c["id"] in independent})
        others = [c["x"] for c in circles if c["id"] not in independent]
        # every other task (they all wait for the layer) lies to its right, farther from it than
        # three times the widest spacing inside it: the layer reads as one column of columns
        inside = max((b - a for a, b in zip(layer, layer[1:])), default=0)
        assert min(others) - max(layer) > 3 * inside, (layer, sorted(others))
        # and a band holds the whole layer and nothing else
        bands = watched.page.evaluate("""() => [...document.querySelectorAll("#dag svg rect.layer")].map(r =>
            ({x: +r.getAttribute("x"), width: +r.getAttribute("width")}))""")
        assert len(bands) == 1
        band = bands[0]
        assert all(band["x"] <= x <= band["x"] + band["width"] for x in layer)
        assert not any(band["x"] <= x <= band["x"] + band["width"] for x in others)
    finally:
        watched.close()
        server.stop()


def test_plotly_is_served_gzipped_and_cached_for_a_year(browser):
    server, run_id = jsonlog_run()
    watched = Watched(browser, viewport=VIEWPORT)
    page = watched.page
    responses = []
    page.on("response", lambda r: "plotly" in r.url and responses.append(r))
    try:
        watched.visit(f"{server.url}/runs/{run_id}")
        assert len(responses) == 1
        response = responses[0]
        assert urllib.parse.urlsplit(response.url).path == f"/static/plotly-{plotly.__version__}.min.js"
        headers = response.headers
        assert headers["content-encoding"] == "gzip"
        assert "max-age=31536000" in headers["cache-control"] and "immutable" in headers["cache-control"]
        wire = response.request.sizes()["responseBodySize"]
        assert 0 < wire < 1.5e6, wire
        assert response.body() == PLOTLY_JS.read_bytes()  # the browser's decoded body: the package's file
        assert page.evaluate("typeof Plotly") == "object"
    finally:
        watched.close()
    request = urllib.request.Request(f"{server.url}/static/plotly-{plotly.__version__}.min.js",
                                     headers={"Accept-Encoding": "gzip"})
    with urllib.request.urlopen(request, timeout=60) as reply:
        assert gzip.decompress(reply.read()) == PLOTLY_JS.read_bytes()
    with urllib.request.urlopen(f"{server.url}/static/plotly.min.js", timeout=60) as reply:  # no gzip asked
        assert reply.headers.get("Content-Encoding") is None and reply.read() == PLOTLY_JS.read_bytes()


def test_a_task_resource_chart_has_one_line_per_try_and_its_legend_clear_of_the_axis(retry_resources_run,
                                                                                       browser):
    server = served(retry_resources_run)
    store = server.dashboard.store
    run_id = store.runs().run_id.iloc[0]
    samples = store.sql("SELECT task_id, try_id, ts FROM events WHERE run_id = ? AND file LIKE '%#resource' "
                        "ORDER BY ts", [run_id])
    task_id = samples.task_id.iloc[0]
    tries = {int(t): sorted(rows.ts) for t, rows in samples[samples.task_id == task_id].groupby("try_id")}
    assert sorted(tries) == [0, 1] and all(len(ts) >= 2 for ts in tries.values()), tries
    watched = Watched(browser, viewport=VIEWPORT)
    page = watched.page
    try:
        watched.visit(f"{server.url}/runs/{run_id}/tasks/{task_id}")
        traces = page.evaluate("""() => document.getElementById("chart-resources").data.map(t =>
            ({name: t.name, axis: t.yaxis || "y", n: t.x.length}))""")
        memory = [t for t in traces if t["axis"] == "y"]
        cpu = [t for t in traces if t["axis"] == "y2"]
        # one memory line and one CPU line per try, each with exactly that try's samples
        assert [t["name"].split(":")[0] for t in memory] == [f"try {t}" for t in sorted(tries)]
        assert [t["n"] for t in memory] == [len(tries[t]) for t in sorted(tries)]
        assert [t["n"] for t in cpu] == [len(tries[t]) for t in sorted(tries)]
        boxes = page.evaluate("""() => {
            const chart = document.getElementById("chart-resources");
            const box = e => { const r = e.getBoundingClientRect(); return [r.left, r.top, r.right, r.bottom]; };
            return {chart: box(chart), legend: box(chart.querySelector(".legend")),
                    ticks: [...chart.querySelectorAll(".y2tick text")].map(box)};
        }""")
        legend, chart = boxes["legend"], boxes["chart"]
        assert boxes["ticks"]
        for tick in boxes["ticks"]:
            overlaps = not (tick[2] <= legend[0] or legend[2] <= tick[0] or tick[3] <= legend[1] or legend[3] <= tick[1])
            assert not overlaps, (tick, legend)
            assert tick[2] <= chart[2] + 1, (tick, chart)  # the right axis's labels are inside the chart
        assert not watched.problems
    finally:
        watched.close()
        server.stop()


def test_common_path_labels_are_whole(corpus_run, browser):
    server = corpus_server(corpus_run)
    run_id = server.dashboard.store.runs().run_id.iloc[0]
    steps = server.json(f"/api/runs/{run_id}")["common_path"]
    steps = [s for s in steps if s["variant"] == steps[0]["variant"]] if steps else []
    watched = Watched(browser, viewport=VIEWPORT)
    try:
        watched.visit(f"{server.url}/runs/{run_id}")
        labels = watched.page.evaluate("""() => [...document.querySelectorAll("#chart-common-path .ytick text")].map(t =>
            ({lines: [...t.querySelectorAll("tspan.line")].map(l => l.textContent), text: t.textContent,
              left: t.getBoundingClientRect().left}))""")
        shown = [" ".join(label["lines"]) if label["lines"] else label["text"] for label in labels]
        expected = [f"{s['position']}. {s['label']}" for s in steps]
        assert len(shown) == len(expected)
        for text, whole in zip(shown, expected):
            assert text == whole or (len(whole) > 180 and text.endswith("…")), (text, whole)
        assert all(label["left"] >= 0 for label in labels)
    finally:
        watched.close()
