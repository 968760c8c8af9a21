"""A real structlog program's JSON log, read as generic JSON lines.

structlog writes the human message as `event` and the level in lower case (`"info"`); a record
carries whatever the program bound (`run_id`, `task_id` as strings). The events must read as a
user reads the log: the message, the level as the contract names it, tasks per run, and a clear
word when the records name tasks but no run.
"""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from pathlib import Path

import taskscope
from conftest import invoke
from taskscope.web.dashboard import Dashboard
from test_web import Server, Watched, browser  # noqa: F401 - browser is a fixture

# a real program: each task logs a few lines through structlog's JSON renderer, into a file
PROGRAM = r'''
import sys
import structlog

path, run_id = sys.argv[1], sys.argv[2]
with open(path, "w") as out:
    log = structlog.wrap_logger(
        structlog.PrintLogger(out),
        processors=[structlog.processors.add_log_level, structlog.processors.TimeStamper(fmt="iso", utc=True),
                    structlog.processors.JSONRenderer()],
    )
    if run_id:
        log = log.bind(run_id=run_id)
    log.info("pipeline starting", stages=3)
    for task in ["sample-A", "sample-10", "sample-9"]:
        one = log.bind(task_id=task)
        one.info("task submitted")
        one.debug("task started", worker="w-1")
        if task == "sample-10":
            one.warning("task retrying", attempt=1)
            one.error("task failed", error="boom")
        else:
            one.info("task finished")
    log.info("pipeline finished")
'''


def run_program(path: Path, run_id: str = "") -> list[dict]:
    """Run the structlog program; return its records as it wrote them (the truth)."""
    subprocess.run([sys.executable, "-c", PROGRAM, str(path), run_id], check=True, timeout=120)
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_structlog_records_read_with_their_message_level_and_tasks(tmp_path):
    written = run_program(tmp_path / "pipeline.jsonl", run_id="nightly-7")
    store_file = tmp_path / "s.duckdb"
    assert invoke("ingest", tmp_path / "pipeline.jsonl", "--store", store_file).returncode == 0
    with taskscope.open(store_file, read_only=True) as store:
        events = store.sql("SELECT message, template, level, task_id, run_id FROM events ORDER BY line")
        runs = store.runs()
        tasks = store.tasks()
    assert list(events.message) == [r["event"] for r in written]
    assert list(events.template) == [r["event"] for r in written]  # these messages have no variable parts
    assert list(events.level) == [r["level"].upper() for r in written]
    assert set(events.level) == {"INFO", "DEBUG", "WARNING", "ERROR"}
    assert list(events.task_id.fillna("")) == [r.get("task_id", "") for r in written]
    task_ids = {r["task_id"] for r in written if "task_id" in r}
    # one answer to "how many tasks": the runs list counts the tasks the tasks list lists
    assert list(runs.run_id) == ["nightly-7"] and list(runs.tasks) == [len(task_ids)]
    assert list(tasks.task_id) == ["sample-9", "sample-10", "sample-A"]  # natural order

    # structlog's `event` is the message: the record is unnamed (its name is its template) until a rule names it
    with taskscope.open(store_file, read_only=True) as store:
        assert store.sql("SELECT count(*) AS n FROM events WHERE event IS DISTINCT FROM template").n.iloc[0] == 0
    rules = tmp_path / "states.toml"
    rules.write_text("".join(
        f'[[rule]]\nevent = "task.state"\npattern = "^task {said}$"\nset = {{ task_state = "{state}" }}\n\n'
        for said, state in [("submitted", "pending"), ("finished", "exec_done"), ("failed", "failed")])
        + '[[rule]]\nevent = "workflow.end"\npattern = "^pipeline finished$"\n')
    assert invoke("ingest", tmp_path / "pipeline.jsonl", "--rules", rules, "--store", store_file).returncode == 0
    with taskscope.open(store_file, read_only=True) as store:
        states = dict(zip(store.tasks().task_id, store.tasks().final_state))
        status = store.runs().status.tolist()
    failed = {r["task_id"] for r in written if r["event"] == "task failed"}
    assert states == {task: "failed" if task in failed else "exec_done" for task in task_ids}
    assert status == ["failed" if failed else "completed"]  # the run ends at the message a rule calls workflow.end

    timeline = invoke("timeline", "--task", "sample-10", "--store", store_file)
    said = [r["event"] for r in written if r.get("task_id") == "sample-10"]
    assert timeline.returncode == 0 and all(text in timeline.stdout for text in said), timeline.stdout
    assert "None" not in timeline.stdout


def test_tasks_that_name_no_run_are_explained_not_silently_missing(tmp_path):
    written = run_program(tmp_path / "pipeline.jsonl")
    orphans = sum(1 for r in written if "task_id" in r)
    store_file = tmp_path / "s.duckdb"
    assert invoke("ingest", tmp_path / "pipeline.jsonl", "--store", store_file).returncode == 0
    note = f"note: {orphans:,} events name a task but no run"
    for command in ("runs", "tasks"):
        done = invoke(command, "--store", store_file)
        assert done.returncode == 0 and note in done.stderr and "`run_id` field" in done.stderr, done.stderr
    path = invoke("common-path", "--store", store_file)
    assert path.returncode == 2 and f"{orphans:,} events name a task but no run" in path.stderr, path.stderr

    server = Server(Dashboard(taskscope.open(store_file, read_only=True)))
    try:
        with urllib.request.urlopen(server.url + "/", timeout=60) as response:
            page = response.read().decode()
    finally:
        server.stop()
        server.dashboard.store.close()
    assert "No runs in this store yet." in page and f"{orphans:,} events name a task but no run" in page

    # with a run, no note
    run_program(tmp_path / "other.jsonl", run_id="r-1")
    with_run = tmp_path / "with_run.duckdb"
    assert invoke("ingest", tmp_path / "other.jsonl", "--store", with_run).returncode == 0
    assert "note:" not in invoke("tasks", "--store", with_run).stderr


def test_run_page_of_a_small_generic_run_draws_what_it_says(tmp_path, browser):
    """A run with no user, host or executor and a single completed task: the page shows no
    stray separators, the throughput bar spans its bin over the run's own time axis, and the
    common path's two labels have room of their own."""
    written = run_program(tmp_path / "pipeline.jsonl", run_id="nightly-7")
    rules = tmp_path / "states.toml"
    rules.write_text('[[rule]]\nevent = "task.state"\npattern = "^task finished$"\nset = { task_state = "exec_done" }\n'
                     '[[rule]]\nevent = "task.state"\npattern = "^task submitted$"\nset = { task_state = "pending" }\n')
    store_file = tmp_path / "s.duckdb"
    assert invoke("ingest", tmp_path / "pipeline.jsonl", "--rules", rules, "--store", store_file).returncode == 0
    server = Server(Dashboard(taskscope.open(store_file, read_only=True)))
    watched = Watched(browser, viewport={"width": 1366, "height": 768})
    try:
        run = server.json("/api/runs")["runs"][0]
        bins = server.json("/api/runs/nightly-7")["throughput"]
        watched.visit(f"{server.url}/runs/nightly-7")
        page = watched.page
        user_host = page.locator("tr:has(th:text-is('user / host')) td").inner_text()
        assert user_host.strip() == ""  # no user, no host: not a lone "@"
        assert "executors:" not in page.locator("main").inner_text()
        watched.visit(f"{server.url}/runs/nightly-7/tasks/sample-10")
        where = page.locator("table.data >> nth=-1").evaluate(
            "t => [...t.querySelectorAll('tbody tr')].map(r => r.cells[6].innerText)")
        assert where == [""] * len([r for r in written if r.get("task_id") == "sample-10"])  # no process or thread: not "/"
        watched.visit(f"{server.url}/runs/nightly-7")
        drawn = page.evaluate("""() => {
            const plot = document.querySelector('#chart-throughput .nsewdrag').getBoundingClientRect();
            const bars = [...document.querySelectorAll('#chart-throughput .bars path')].map(b => b.getBoundingClientRect());
            const ticks = [...document.querySelectorAll('#chart-common-path .ytick text')].map(t => {
                const r = t.getBoundingClientRect(); return {top: r.top, bottom: r.bottom}; });
            return {plot: plot.width, bars: bars.map(b => b.width), ticks};
        }""")
    finally:
        watched.close()
        server.stop()
        server.dashboard.store.close()
    completed = [r for r in written if r["event"] == "task finished"]
    assert sum(b["completed"] for b in bins) == len(completed) and len(drawn["bars"]) == len(bins)
    span = run["end_ts"] - run["start_ts"]
    for bar, row in zip(drawn["bars"], bins):  # each bar as wide as its bin, on the run's time axis
        assert abs(bar - drawn["plot"] * row["bin_s"] / span) <= 2, (bar, drawn["plot"], row, span)
    ticks = sorted(drawn["ticks"], key=lambda t: t["top"])
    assert len(ticks) >= 2 and all(a["bottom"] <= b["top"] for a, b in zip(ticks, ticks[1:])), ticks
