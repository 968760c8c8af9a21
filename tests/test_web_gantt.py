"""The whole-run Gantt and CPU / memory in use over time, checked against what they are made of.

Real runs: `truth_workflow.py` (HTEX, two managers on this host, resource monitoring, a task
that burns a known amount of CPU, a task that fails on every try), its monitoring.db read with
sqlite3 as the independent truth of CPU use; and real DuckDB stores of 300 and 100,000 tasks
written with SQL, whose stage times the test knows. Pages load in real Chromium.
"""

from __future__ import annotations

import os
import re
import sqlite3
from pathlib import Path
from urllib.parse import urlencode

import pandas as pd
import pytest
from conftest import shared_once
from test_truth import Served, make_truth_run, only_run, total_memory_bytes
from test_web import Server, Watched, browser, followed_live  # noqa: F401 (browser is a fixture)
from truth_workflow import BURN_CPU_S

import taskscope
from taskscope.analyses.gantt import STAGES, TASK_LIMIT, aggregated
from taskscope.analyses.resources import per_task, utilization
from taskscope.analyses.tasks import earlier_tries, tasks
from taskscope.analyses.utilization import utilization_totals

# a run of `$tasks` tasks in three apps on four slots, each pending -> launched -> running ->
# exec_done (every 50th failed), times known in closed form
SYNTHETIC = """
    INSERT INTO events (ts, source, file, line, file_id, event, run_id, task_id, try_id, app_name, task_state,
                        executor_label, manager_id, worker_id)
    WITH t AS (
        SELECT i, 1.8e9 + i * 0.002 AS submit_ts, 1.8e9 + i * 0.002 + (i % 7) * 0.1 AS launch_ts,
               1.8e9 + i * 0.002 + (i % 7) * 0.1 + 0.05 + (i % 5) * 0.01 AS start_ts,
               1.8e9 + i * 0.002 + (i % 7) * 0.1 + 0.25 + (i % 5) * 0.01 + (i % 11) * 0.03 AS end_ts
        FROM range($tasks) r(i)
    ),
    s AS (
        SELECT i, submit_ts AS ts, 'pending' AS state, 0 AS k FROM t
        UNION ALL SELECT i, launch_ts, 'launched', 1 FROM t
        UNION ALL SELECT i, start_ts, 'running', 2 FROM t
        UNION ALL SELECT i, end_ts, CASE WHEN i % 50 = 7 THEN 'failed' ELSE 'exec_done' END, 3 FROM t
    )
    SELECT ts, 'parsl', 'synthetic.log', i * 4 + k + 1, 1, 'task.state', 'synthetic-run', CAST(i AS VARCHAR), 0,
           $app || (i % 3), state, 'htex', $manager || (i % 4), CAST(i % 2 AS VARCHAR)
    FROM s
"""
SYNTHETIC_RUN = "synthetic-run"


def synthetic_store(base: Path, count: int, app: str = "app_", manager: str = "manager") -> Path:
    """A store of `SYNTHETIC`'s run of `count` tasks, apps and managers named `app` and
    `manager` followed by a number."""
    path = base / f"synthetic{count}.duckdb"
    with taskscope.open(str(path)) as store:
        store.con.execute(SYNTHETIC, {"tasks": count, "app": app, "manager": manager})
    return path


@pytest.fixture(scope="module")
def truth_store(tmp_path_factory):
    """The truth run ingested (logs and monitoring.db) into a store, and its runinfo folder."""
    runinfo = shared_once(tmp_path_factory, "truth_run", make_truth_run) / "runinfo"
    with taskscope.open(":memory:") as store:
        store.ingest(runinfo)
        yield store, runinfo


@pytest.fixture(scope="module")
def large_store(tmp_path_factory) -> Path:
    return synthetic_store(tmp_path_factory.mktemp("gantt_large"), 100_000)


def monitoring_cpu_s(database: Path) -> tuple[float, int]:
    """From monitoring.db's resource table: the sum over worker processes of the rises of their
    CPU running total (user + system) between consecutive samples, and how many processes."""
    with sqlite3.connect(database) as db:
        rows = pd.read_sql("SELECT timestamp, psutil_process_pid AS pid, "
                           "psutil_process_time_user + psutil_process_time_system AS cpu FROM resource", db)
    rows = rows.sort_values(["pid", "timestamp", "cpu"])
    rises = rows.groupby("pid").cpu.diff()
    return float(rises[rises > 0].sum()), rows.pid.nunique()


# item 7: CPU and memory in use over time

def test_cpu_over_time_adds_up_to_each_processes_cpu_and_stays_within_capacity(truth_store):
    store, runinfo = truth_store
    run_id = only_run(store)
    per_host = utilization(store.con, run_id)
    totals = utilization_totals(per_host)
    expected, processes = monitoring_cpu_s(runinfo / "monitoring.db")
    assert per_host.host.nunique() == 1 and processes >= 2
    assert per_host.cpu_s.sum() == pytest.approx(expected, abs=1e-6)
    burn = per_task(store.con, run_id).merge(tasks(store.con, run_id), on="task_id").query("app_name == 'burn'")
    assert burn.cpu_s.max() >= 0.8 * BURN_CPU_S and per_host.cpu_s.sum() >= burn.cpu_s.max()
    cores, memory = os.cpu_count(), total_memory_bytes()
    span = totals.bin_s.iloc[0] * len(totals)
    assert per_host.cpu_s.sum() <= cores * span
    # psutil's times tick in 0.01 s: a bin may be off by two ticks per process
    assert (totals.cpu_s <= cores * totals.bin_s + 0.02 * processes).all(), totals
    assert (totals.capacity_cpu_cores == cores).all() and (totals.capacity_memory_bytes == memory).all()
    assert (totals.memory_bytes <= memory).all() and totals.memory_bytes.max() > 0


def test_cpu_over_time_from_monitoring_db_alone_is_the_same(truth_store, tmp_path):
    store, runinfo = truth_store
    database = tmp_path / "monitoring.db"
    database.write_bytes((runinfo / "monitoring.db").read_bytes())
    with taskscope.open(":memory:") as alone:
        alone.ingest(database)
        per_host = utilization(alone.con, only_run(alone))
    both = utilization(store.con, only_run(store))
    assert per_host.cpu_s.sum() == pytest.approx(both.cpu_s.sum(), abs=1e-6)
    assert per_host.host.tolist() == both.host.tolist()


def test_resources_page_draws_use_over_time(truth_store, browser):  # noqa: F811
    store, _ = truth_store
    run_id = only_run(store)
    per_host = utilization(store.con, run_id)
    with Served(store) as served:
        data = served.json(f"/api/runs/{run_id}/utilization")
        watched = Watched(browser)
        watched.page.goto(f"{served.url}/runs/{run_id}/resources")
        watched.page.wait_for_selector("#chart-cpu-use .main-svg")
        watched.page.wait_for_selector("#chart-memory-use .main-svg")
        shown = watched.page.inner_text("#use-cpu-s")
        watched.page.close()
    assert watched.problems == []
    assert [row["cpu_s"] for row in data["hosts"]] == pytest.approx(per_host.cpu_s.tolist(), abs=1e-9)
    assert data["cpu_s"] == pytest.approx(per_host.cpu_s.sum()) and shown == f"{per_host.cpu_s.sum():.2f}"


# item 8: the Gantt

def gantt_bars(watched: Watched, url: str) -> list[dict]:
    """The Gantt page's task bars as drawn: task id, state and each stage's bounds."""
    watched.page.goto(url)
    watched.page.wait_for_selector("#gantt-svg")
    return watched.page.eval_on_selector_all("g.task-bar", """bars => bars.map(bar => ({
        task: bar.dataset.task, state: bar.dataset.state,
        stages: Object.fromEntries([...bar.querySelectorAll(':scope > rect.stage')].map(
            r => [r.dataset.stage, [Number(r.dataset.start), Number(r.dataset.end)]])),
        tries: [...bar.querySelectorAll('g.try-bar')].map(g => ({try: Number(g.dataset.try),
            stages: Object.fromEntries([...g.querySelectorAll('rect.stage')].map(
                r => [r.dataset.stage, [Number(r.dataset.start), Number(r.dataset.end)]]))}))}))""")


def slot_try_bars(watched: Watched) -> list[dict]:
    """The per-slot Gantt's bars of earlier tries (it is open in `watched`): task, try, row, bounds."""
    return watched.page.eval_on_selector_all("a > g.try-bar", """bars => bars.map(g => {
        const r = g.querySelector('rect.stage');
        return {task: g.dataset.task, try: Number(g.dataset.try), y: Number(r.getAttribute('y')),
                stage: r.dataset.stage, bounds: [Number(r.dataset.start), Number(r.dataset.end)]};
    })""")


def assert_bars_match_the_task_table(bars: list[dict], table: pd.DataFrame) -> None:
    """Each bar's stages start at the task table's times and the last ends at its end; a stage
    that the table says starts after the next one (another process logged the next one first:
    the DFK logs a launch after the executor took the task, which on a busy machine can be
    milliseconds after the worker started it) starts with the next one, lasting 0 s."""
    by_task = table.set_index(table.task_id.astype(str))
    for bar in bars:
        row = by_task.loc[bar["task"]]
        assert bar["state"] == row.final_state
        following = row.end_ts
        for name, column in reversed(STAGES):
            if pd.isna(row[column]):
                assert name not in bar["stages"], bar
                continue
            start, end = bar["stages"][name]
            assert start == pytest.approx(min(row[column], following), abs=1e-6), (bar, name)
            assert end == pytest.approx(following, abs=1e-6), (bar, name)
            following = start


def test_gantt_draws_one_bar_per_task_with_the_analyses_stage_times(truth_store, browser):  # noqa: F811
    store, _ = truth_store
    run_id = only_run(store)
    (count,), = store.con.execute("SELECT count(DISTINCT task_id) FROM events WHERE run_id = ? "
                                  "AND task_id IS NOT NULL", [run_id]).fetchall()
    table = tasks(store.con, run_id)
    with Served(store) as served:
        watched = Watched(browser)
        bars = gantt_bars(watched, f"{served.url}/runs/{run_id}/gantt")
        slot_bars = gantt_bars(watched, f"{served.url}/runs/{run_id}/gantt?by=slot")
        slot_rows = watched.page.eval_on_selector_all("text.row-label", "ts => ts.map(t => t.textContent)")
        slot_tries = slot_try_bars(watched)
        watched.page.goto(f"{served.url}/runs/{run_id}")
        watched.page.click("#run-gantt")
        watched.page.wait_for_selector("#gantt-svg")
        watched.page.close()
    assert watched.problems == []
    assert len(bars) == count == len(table) and sorted(b["task"] for b in bars) == sorted(table.task_id)
    assert_bars_match_the_task_table(bars, table)
    assert {b["state"] for b in bars} == {"exec_done", "failed"}
    # per slot: each task that ran on a worker, its running time in its manager/worker's row, and
    # the earlier try of the task that failed on every try in the row of the slot it ran in
    ran = table[table.worker_start_ts.notna()]
    earlier = earlier_tries(store.con, run_id, table.task_id[table.tries > 1].tolist())
    assert len(slot_bars) == len(ran) and all(list(b["stages"]) == ["running"] for b in slot_bars)
    slots = {f"{m}/{w}" for m, w in zip(ran.manager_id, ran.worker_id)}
    slots |= {f"{m}/{w}" for m, w in zip(earlier.manager_id, earlier.worker_id)}
    assert sorted(slot_rows) == sorted(slots)
    assert [(b["task"], b["try"], b["stage"]) for b in slot_tries] == [
        (t, int(k), "running") for t, k in zip(earlier.task_id, earlier.try_id)]


def parsl_log_times(runinfo: Path, pattern: str) -> dict[tuple[str, int], float]:
    """(task, try) -> the time (Parsl's `created`, the line's first field) of each DFK log line
    matching `pattern` (groups: task, try): read from the run's parsl.log, not from the store."""
    found = {}
    for log in runinfo.glob("*/parsl.log"):
        for line in log.read_text().splitlines():
            match = re.search(pattern, line)
            if match:
                found[(match.group(1), int(match.group(2)))] = float(line.split(" ", 1)[0])
    return found


def test_gantt_draws_a_retried_tasks_earlier_try_inside_its_wait(truth_store, browser):  # noqa: F811
    store, runinfo = truth_store
    run_id = only_run(store)
    table = tasks(store.con, run_id)
    retried = table[table.tries > 1]
    earlier = earlier_tries(store.con, run_id, retried.task_id.tolist())
    # the truth run's failing task, retried once: one earlier try, try 0, whose launch and failure
    # are the DFK's own log lines (monitoring may note the launch a moment earlier, and the try's
    # end, its last mark, a moment after the DFK's line)
    launched = parsl_log_times(runinfo, r"Parsl task (\d+) try (\d+) launched on executor")
    failed = parsl_log_times(runinfo, r"Task (\d+) try (\d+) failed with exception")
    assert len(retried) == 1 and earlier[["task_id", "try_id"]].values.tolist() == [[retried.task_id.iloc[0], 0]]
    one = earlier.iloc[0]
    key = (one.task_id, 0)
    assert one.launch_ts == pytest.approx(launched[key], abs=0.5) and one.launch_ts <= launched[key]
    assert one.end_ts == pytest.approx(failed[key], abs=0.5) and one.end_ts >= failed[key]
    assert one.launch_ts < one.worker_start_ts < one.end_ts <= launched[(one.task_id, 1)]
    with Served(store) as served:
        data = served.json(f"/api/runs/{run_id}/gantt")
        watched = Watched(browser)
        bars = gantt_bars(watched, f"{served.url}/runs/{run_id}/gantt")
        title = watched.page.text_content(f'g.task-bar[data-task="{one.task_id}"] > title')
        watched.page.close()
    assert watched.problems == []
    tries = data["tries"]
    row = data["tasks"]["task_id"].index(one.task_id)
    assert tries["task"] == [row] and tries["try_id"] == [0] and tries["row"] == [row]
    assert tries["launched_start"] == [pytest.approx(one.launch_ts, abs=1e-6)]
    assert tries["running_start"] == [pytest.approx(one.worker_start_ts, abs=1e-6)]
    assert tries["launched_end"] == tries["running_start"] and tries["running_end"] == [pytest.approx(one.end_ts, abs=1e-6)]
    bar = next(b for b in bars if b["task"] == one.task_id)
    assert bar["tries"] == [{"try": 0, "stages": {
        "launched": [tries["launched_start"][0], tries["launched_end"][0]],
        "running": [tries["running_start"][0], tries["running_end"][0]]}}]
    # inside the task's wait, which is pending only outside the try
    pending_start, pending_end = bar["stages"]["pending"]
    assert pending_start <= tries["launched_start"][0] and tries["running_end"][0] <= pending_end
    pending = (pending_end - pending_start) - (tries["running_end"][0] - tries["launched_start"][0])
    assert f"pending {pending:.3f} s" in title or f"pending {pending * 1000:.1f} ms" in title, title
    assert "try 0 (retried" in title
    # aggregated, the try's time moves from the wait to the try's stages, and nothing else changes
    retried_table = table.assign(app_name="all")
    plain, with_tries = aggregated(retried_table, bins=40), aggregated(retried_table, bins=40, tries=earlier)
    launched_s, running_s = (one.worker_start_ts - one.launch_ts), (one.end_ts - one.worker_start_ts)
    assert with_tries["seconds"]["launched"] == pytest.approx(plain["seconds"]["launched"] + launched_s, abs=1e-6)
    assert with_tries["seconds"]["running"] == pytest.approx(plain["seconds"]["running"] + running_s, abs=1e-6)
    assert with_tries["seconds"]["pending"] == pytest.approx(
        plain["seconds"]["pending"] - launched_s - running_s, abs=1e-6)


def test_gantt_of_300_tasks_draws_each_and_a_run_without_samples_has_no_use_chart(tmp_path, browser):  # noqa: F811
    path = synthetic_store(tmp_path, 300)
    with taskscope.open(str(path), read_only=True) as store, Served(store) as served:
        table = tasks(store.con, SYNTHETIC_RUN)
        data = served.json(f"/api/runs/{SYNTHETIC_RUN}/gantt")
        watched = Watched(browser)
        bars = gantt_bars(watched, f"{served.url}/runs/{SYNTHETIC_RUN}/gantt")
        labels = watched.page.locator("text.row-label").count()
        watched.page.goto(f"{served.url}/runs/{SYNTHETIC_RUN}/resources")  # a run without resource samples
        no_use = watched.page.locator("#no-use-over-time").count()
        use = served.json(f"/api/runs/{SYNTHETIC_RUN}/utilization")
        watched.page.close()
    assert watched.problems == []
    assert data["mode"] == "tasks" and len(bars) == 300 == labels
    assert no_use == 1 and use["hosts"] == [] and use["cpu_s"] == 0
    assert_bars_match_the_task_table(bars, table)


def test_gantt_of_100k_tasks_is_aggregated_exact_and_small(large_store, browser):  # noqa: F811
    with taskscope.open(str(large_store), read_only=True) as store, Served(store) as served:
        truth = store.con.execute("""
            WITH t AS (
                SELECT app_name, task_id, max(ts) FILTER (WHERE task_state = 'pending') AS submitted,
                       max(ts) FILTER (WHERE task_state = 'launched') AS launched,
                       max(ts) FILTER (WHERE task_state = 'running') AS running,
                       max(ts) FILTER (WHERE task_state IN ('exec_done', 'failed')) AS ended
                FROM events WHERE run_id = ? GROUP BY app_name, task_id)
            SELECT app_name, count(*), sum(launched - submitted), sum(running - launched), sum(ended - running)
            FROM t GROUP BY app_name ORDER BY app_name""", [SYNTHETIC_RUN]).fetchall()
        data = served.json(f"/api/runs/{SYNTHETIC_RUN}/gantt")
        by_slot = served.json(f"/api/runs/{SYNTHETIC_RUN}/gantt?by=slot")
        page = served.get(f"/runs/{SYNTHETIC_RUN}/gantt")
        watched = Watched(browser)
        watched.page.goto(f"{served.url}/runs/{SYNTHETIC_RUN}/gantt")
        watched.page.wait_for_selector("#gantt-svg")
        rows = watched.page.eval_on_selector_all("g.group-row", "rows => rows.map(r => [r.dataset.label, "
                                                 "Number(r.dataset.tasks)])")
        watched.page.click("g.group-row a >> nth=0")  # an app: its tasks, a page at a time
        watched.page.wait_for_selector("g.task-bar")
        app_bars = watched.page.locator("g.task-bar").count()
        watched.page.close()
    assert watched.problems == []
    assert data["mode"] == "aggregated" and len(page) < 2_000_000 and b"so one row per app," in page
    assert sorted(map(tuple, rows)) == sorted((app, count) for app, count, *_ in truth)
    seconds = [sum(row[2 + i] for row in truth) for i in range(3)]
    assert [data["seconds"][name] for name, _ in STAGES] == pytest.approx(seconds, rel=1e-6)
    in_bins = [sum(sum(g[name]) for g in data["groups"]) * data["bin_s"] for name, _ in STAGES]
    assert in_bins == pytest.approx(seconds, rel=1e-3)  # the bins' means are rounded to 3 decimals
    assert sorted((g["label"], g["tasks"]) for g in by_slot["groups"]) == [(f"manager{i}/{i % 2}", 25_000)
                                                                            for i in range(4)]
    assert app_bars == TASK_LIMIT


HOSTILE = """<img src=x onerror=alert(1)>'"&"""


def test_gantt_shows_names_from_data_as_text(tmp_path, browser):  # noqa: F811
    """App and manager names that are markup: shown as text, in the aggregated Gantt, one app's
    bars and the slot rows; nothing runs."""
    path = synthetic_store(tmp_path, TASK_LIMIT + 100, app=HOSTILE, manager=HOSTILE)
    app = HOSTILE + "1"
    with taskscope.open(str(path), read_only=True) as store, Served(store) as served:
        watched = Watched(browser)
        shown = {}
        for name, query in {"aggregated": "", "one app": "?" + urlencode({"app": app}),
                            "slots": "?by=slot"}.items():
            watched.page.goto(f"{served.url}/runs/{SYNTHETIC_RUN}/gantt{query}")
            watched.page.wait_for_selector("#gantt-svg")
            shown[name] = watched.page.eval_on_selector_all("#gantt-svg title", "ts => ts.map(t => t.textContent)")
        images = watched.page.locator("img").count()
        watched.page.close()
    assert watched.problems == [] and watched.dialogs == [] and images == 0
    assert any(text.startswith(app + ": ") for text in shown["aggregated"]), shown["aggregated"][:3]
    assert all(f"({app})" in text for text in shown["one app"]) and len(shown["one app"]) > 0
    assert any(text.startswith(HOSTILE + "0/0: ") for text in shown["slots"]), shown["slots"][:3]


# item 9: live pages refresh themselves (the Gantt, like the run page)
ENDED_BARS = "() => document.querySelectorAll('#gantt g.task-bar rect.final').length"


def test_live_gantt_draws_each_ended_task_without_a_reload_until_the_run_ends(tmp_path, browser):  # noqa: F811
    """Opened from the run's navigation while a real Parsl run is live, the Gantt draws the
    tasks that end as they end (more bars with a final mark, no reload), then stops refreshing
    once the run has ended, with every task of the workflow (40, 14 failed: i % 3 == 0)."""
    with followed_live(tmp_path, 40) as (running, server, run_id, release):
        watched = Watched(browser)
        page = watched.page
        page.goto(f"{server.url}/runs/{run_id}", wait_until="load")
        page.locator("header nav a", has_text="Gantt").click()
        page.wait_for_url(f"**/runs/{run_id}/gantt")
        live_at_first = page.evaluate("() => document.body.dataset.live")
        first = page.evaluate(ENDED_BARS)
        page.evaluate("() => { window.loadedOnce = true; }")
        release()
        page.wait_for_function(f"first => ({ENDED_BARS})() > first", arg=first, timeout=120_000)
        grew_in_place = page.evaluate("() => window.loadedOnce === true")
        assert running.wait(300) == 0, running.stderr.read()
        page.wait_for_function("() => document.body.dataset.live === '0'", timeout=120_000)
        ended, svgs = page.evaluate(ENDED_BARS), page.locator("#gantt-svg").count()
        failed = page.locator("#gantt g.task-bar[data-state='failed']").count()
        still_same_page = page.evaluate("() => window.loadedOnce === true")
        watched.close()
    assert live_at_first == "1" and grew_in_place and still_same_page, "not refreshed in place"
    assert not watched.problems and not watched.dialogs, (watched.problems, watched.dialogs)
    assert (ended, failed, svgs) == (40, 14, 1)
