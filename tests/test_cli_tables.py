"""CLI output a person reads in a normal terminal, and the CLI's JSON beside the web's.

In-process with Typer's CliRunner (the output is the point, not the process), except the
missing-extra checks: a user without an extra has a Python in which the import fails, so those
run `taskscope` in a fresh interpreter where the module is blocked.
"""

from __future__ import annotations

import csv
import io
import json
import re
import subprocess
import sys

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

import taskscope
from taskscope.cli import app
from taskscope.commands.common import TABLE_ROWS
from taskscope.web.app import Dashboard, create_app

from conftest import corpus_path

TASKS_IN_STORE = 88  # parsl-htex-jsonlog (27) and parsl-mixed-textlog (61)


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory) -> str:
    """A store of two corpus runs (one with failed tasks), ingested once for this module."""
    path = str(tmp_path_factory.mktemp("tables") / "two.duckdb")
    with taskscope.open(path) as store:
        store.ingest(corpus_path("parsl-htex-jsonlog"), corpus_path("parsl-mixed-textlog"))
    return path


def cli(*args: str, columns: int = 100):
    """`taskscope ARGS` in this process, in a terminal `columns` wide."""
    return CliRunner().invoke(app, list(args), env={"COLUMNS": str(columns)})


def one_error_line(result) -> str:
    assert result.exit_code == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


def run_ids(store: str) -> list[str]:
    with taskscope.open(store, read_only=True) as opened:
        return sorted(opened.runs().run_id)


# ---------------------------------------------------------------------------------------------
# widths


@pytest.mark.parametrize("columns", [80, 100])
def test_tasks_table_fits_the_terminal_one_line_per_task(two_runs, columns):
    result = cli("tasks", "--limit", "3", "--store", two_runs, columns=columns)
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.rstrip("\n").splitlines()
    assert max(len(line) for line in lines) <= columns
    assert len(lines) == 3 + 3, result.stdout  # title, header, rule, then one line per task
    for line in lines[3:]:
        assert "exec_done" in line and re.search(r"\binc\b", line), line  # whole words, not folded


def test_tasks_table_at_100_columns_shows_the_default_columns_with_short_times(two_runs):
    result = cli("tasks", "--store", two_runs, "--run", run_ids(two_runs)[0][:8])
    assert result.exit_code == 0, result.stderr
    title, header = result.stdout.splitlines()[:2]
    assert header.split() == ["task", "app", "state", "tries", "submitted", "duration_s", "executor", "exception"]
    assert re.search(r"\(UTC, \d{4}-\d\d-\d\d\)", title)  # the day is said once, in the title
    first_row = result.stdout.splitlines()[3]
    assert re.search(r"\s\d\d:\d\d:\d\d\.\d{3}\s", first_row) and "2026-" not in first_row
    assert "columns left out" not in result.stderr


def test_wide_shows_every_column_and_json_csv_always_have_them(two_runs):
    wide = cli("tasks", "--wide", "--limit", "2", "--store", two_runs, columns=80)
    header = wide.stdout.splitlines()[1].split()
    assert {"host", "manager_id", "worker_id", "block_id", "launch_ts", "end_ts"} <= set(header)
    assert "left out" not in wide.stderr and "…" not in wide.stdout  # as wide as it needs, nothing cut
    rows = json.loads(cli("tasks", "--limit", "2", "--store", two_runs, "--format", "json").stdout)
    assert {"host", "manager_id", "worker_id", "launch_ts", "worker_start_ts", "end_ts"} <= set(rows[0])
    csv_header = cli("tasks", "--limit", "2", "--store", two_runs, "--format", "csv").stdout.splitlines()[0]
    assert csv_header.split(",") == list(rows[0])


def test_columns_that_do_not_fit_are_named(two_runs):
    result = cli("runs", "--store", two_runs, columns=60)
    assert result.exit_code == 0, result.stderr
    assert max(len(line) for line in result.stdout.splitlines()) <= 60
    assert "columns left out to fit 60 columns" in result.stderr and "--wide" in result.stderr
    assert "events" in result.stderr.split("(")[1]


# ---------------------------------------------------------------------------------------------
# long tables


def test_a_long_table_shows_its_first_rows_and_says_how_to_see_all(two_runs):
    result = cli("tasks", "--store", two_runs)
    assert result.exit_code == 0, result.stderr
    assert len(result.stdout.splitlines()) == 3 + TABLE_ROWS
    assert f"showing {TABLE_ROWS} of {TASKS_IN_STORE} rows" in result.stderr and "--limit 0" in result.stderr
    everything = cli("tasks", "--limit", "0", "--store", two_runs, columns=250)
    assert len(everything.stdout.splitlines()) == 3 + TASKS_IN_STORE and "showing" not in everything.stderr
    assert len(json.loads(cli("tasks", "--store", two_runs, "--format", "json").stdout)) == TASKS_IN_STORE

    events = cli("sql", "SELECT ts, source, message FROM events", "--store", two_runs)
    assert events.exit_code == 0, events.stderr
    rows = [line for line in events.stdout.splitlines() if re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} ", line)]
    assert len(rows) == TABLE_ROWS and "--format csv" in events.stderr
    assert max(len(line) for line in events.stdout.splitlines()) <= 100  # messages wrap at spaces


# ---------------------------------------------------------------------------------------------
# options that name something that is not there


def test_run_ids_that_are_not_uuids_are_shown_whole(tmp_path):
    # Parsl's run ids (UUIDs) read by their first 8 characters; `nightly-7` and `nightly-8` must
    # not both read `nightly-`, in any table that names runs
    log = tmp_path / "runs.jsonl"
    log.write_text("".join(
        json.dumps({"run_id": run, "task_id": "t1", "task_state": state, "event": "task.state",
                    "message": f"t1 {state}", "ts": 1.8e9 + i + 10 * n}) + "\n"
        for n, run in enumerate(["nightly-7", "nightly-8"]) for i, state in enumerate(["pending", "exec_done"])))
    store = str(tmp_path / "runs.duckdb")
    assert cli("ingest", str(log), "--store", store).exit_code == 0
    for args in (["runs"], ["states"], ["summary", "--part", "runs"], ["latency", "state:pending", "state:exec_done"]):
        shown = cli(*args, "--store", store, columns=160)
        assert shown.exit_code == 0, shown.stdout
        assert "nightly-7" in shown.stdout and "nightly-8" in shown.stdout, (args, shown.stdout)
    tasks = cli("tasks", "--run", "nightly-8", "--store", store, columns=160)
    assert "tasks of run nightly-8" in tasks.stdout
    parsl_store = str(tmp_path / "parsl.duckdb")
    assert cli("ingest", str(corpus_path("parsl-htex-jsonlog")), "--store", parsl_store).exit_code == 0
    (run_id,) = run_ids(parsl_store)
    shown = cli("runs", "--store", parsl_store, columns=160).stdout
    assert run_id[:8] in shown and run_id[:9] not in shown


def test_unknown_state_or_app_lists_what_exists(two_runs):
    line = one_error_line(cli("tasks", "--state", "bogus", "--store", two_runs))
    assert "'bogus'" in line and "exec_done, failed" in line
    line = one_error_line(cli("tasks", "--app", "nosuchapp", "--store", two_runs))
    assert "'nosuchapp'" in line and "add, boom, echo, flaky, inc" in line
    # a state Parsl has, that no task ended in, is an empty answer, not an error
    assert cli("tasks", "--state", "dep_fail", "--store", two_runs).exit_code == 0
    failed = json.loads(cli("tasks", "--state", "failed", "--store", two_runs, "--format", "json").stdout)
    assert {row["app_name"] for row in failed} == {"boom"}
    # each is checked against every task, not against those the other one left
    line = one_error_line(cli("tasks", "--state", "failed", "--app", "nosuchapp", "--store", two_runs))
    assert "add, boom, echo, flaky, inc" in line
    both = cli("tasks", "--state", "failed", "--app", "inc", "--store", two_runs, "--format", "json")
    assert both.exit_code == 0 and json.loads(both.stdout) == []


@pytest.mark.parametrize("command", [["tasks"], ["states"], ["summary"], ["timeline", "--task", "1"],
                                     ["bottlenecks"]])
def test_an_empty_run_is_an_error_not_every_run(two_runs, command):
    line = one_error_line(cli(*command, "--run", "", "--store", two_runs))
    assert "--run is empty" in line


def test_sql_with_two_statements_shows_both_or_refuses(two_runs):
    result = cli("sql", "SELECT 1 AS one; SELECT 'a;b' AS two", "--store", two_runs)
    assert result.exit_code == 0, result.stderr
    assert "-- 1/2: SELECT 1 AS one" in result.stdout and "-- 2/2: SELECT 'a;b' AS two" in result.stdout
    assert re.search(r"^one\s*$", result.stdout, re.M) and re.search(r"^a;b\s*$", result.stdout, re.M)
    line = one_error_line(cli("sql", "SELECT 1; SELECT 2", "--store", two_runs, "--format", "json"))
    assert "2 statements" in line
    one_error_line(cli("sql", " ; ", "--store", two_runs))


@pytest.mark.parametrize("export_format", ["perfetto", "otlp"])
def test_file_exports_refuse_to_overwrite(two_runs, tmp_path, export_format):
    out = tmp_path / "existing.json"
    out.write_text("keep me")
    line = one_error_line(cli("export", "--format", export_format, "--out", str(out), "--store", two_runs))
    assert "already exists" in line and "--overwrite" in line
    assert out.read_text() == "keep me"
    run = run_ids(two_runs)[0]
    result = cli("export", "--format", export_format, "--out", str(out), "--run", run, "--overwrite",
                 "--store", two_runs)
    assert result.exit_code == 0, result.stderr
    assert out.read_text() != "keep me"


# ---------------------------------------------------------------------------------------------
# missing extras: the import fails in the user's Python, so block it in a fresh one


def cli_without(module: str, *args: str, cwd) -> subprocess.CompletedProcess:
    """`taskscope ARGS` in a fresh interpreter in which `import MODULE` fails, as without its extra."""
    code = (f"import sys; sys.modules[{module!r}] = None\n"
            "from taskscope.cli import main\n"
            f"sys.argv = ['taskscope', *{list(args)!r}]\n"
            "main()\n")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=cwd, timeout=300)


def test_png_without_kaleido_names_the_extra(two_runs, tmp_path):
    done = cli_without("kaleido", "states", "--store", two_runs, "--plot", str(tmp_path / "states.png"), cwd=tmp_path)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert done.stderr.strip().splitlines() == [
        "error: a PNG plot needs kaleido, which is not installed: pip install 'taskscope[png]' "
        "(or write the plot to a .html file)"]
    assert not (tmp_path / "states.png").exists()


def test_fleet_upload_without_httpx_names_the_extra(tmp_path):
    done = cli_without("httpx", "fleet", "upload", str(corpus_path("parsl-htex-jsonlog")),
                       "--server", "http://127.0.0.1:9", "--token", "tsf_x", cwd=tmp_path)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert done.stderr.strip().splitlines() == [
        "error: this needs httpx, which is not installed: pip install 'taskscope[fleet]'"]


# ---------------------------------------------------------------------------------------------
# the CLI's JSON is the web's JSON


@pytest.fixture(scope="module")
def web(two_runs):
    with taskscope.open(two_runs, read_only=True) as store, TestClient(create_app(Dashboard(store))) as client:
        yield client


def test_cli_json_rows_equal_the_web_api_rows(two_runs, web):
    for run in run_ids(two_runs):
        cli_rows = json.loads(cli("tasks", "--run", run, "--store", two_runs, "--format", "json").stdout)
        api_rows = web.get(f"/api/runs/{run}/tasks", params={"per_page": 1000}).json()["rows"]
        assert sorted(cli_rows, key=lambda row: row["task_id"]) == sorted(api_rows, key=lambda row: row["task_id"])
        assert len(cli_rows) > 20
    timeline = json.loads(cli("timeline", "--task", "3", "--run", run, "--store", two_runs, "--format", "json").stdout)
    assert timeline == web.get(f"/api/runs/{run}/tasks/3").json()["timeline"] and len(timeline) > 5
    a, b = run_ids(two_runs)
    cli_compare = json.loads(cli("compare", a, b, "--store", two_runs, "--format", "json").stdout)
    assert cli_compare == web.get("/api/compare", params={"a": a, "b": b}).json()["rows"]


def test_a_bad_lines_head_reads_as_text_in_every_format(tmp_path):
    """`bad_lines.head` holds a line's first bytes: each format shows them as text, escapes where
    they are not UTF-8 (it printed Python's `bytearray(b'...')`)."""
    log = tmp_path / "app.jsonl"
    log.write_bytes(b'{"ts": 1796090400, "message": "ok"}\nnot json \xff\n')
    store = str(tmp_path / "s.duckdb")
    with taskscope.open(store) as opened:
        opened.ingest(log)
    query = "SELECT head FROM bad_lines"
    head = "not json \\xff\n"  # the line's bytes as read, its newline too
    assert json.loads(cli("sql", query, "--store", store, "--format", "json").stdout) == [{"head": head}]
    assert list(csv.reader(io.StringIO(cli("sql", query, "--store", store, "--format", "csv").stdout))) == [
        ["head"], [head]]
    table = cli("sql", query, "--store", store).stdout
    assert "not json \\xff" in table and "bytearray" not in table


# ---------------------------------------------------------------------------------------------
# a run killed half way: its tasks that reached no final state are `unfinished` everywhere

FINAL = {"exec_done", "memo_done", "failed", "dep_fail"}


def test_tasks_left_on_the_way_by_a_killed_run_are_unfinished_as_summary_counts_them(tmp_path):
    import shutil

    run = tmp_path / "runinfo" / "000"
    run.mkdir(parents=True)
    lines = (corpus_path("parsl-htex-jsonlog") / "000" / "parsl.jsonlog").read_text().splitlines(keepends=True)
    (run / "parsl.jsonlog").write_text("".join(lines[: 3 * len(lines) // 4]))  # the DFK's log as a SIGKILL left it
    shutil.copytree(corpus_path("parsl-htex-jsonlog") / "000" / "htex_local", run / "htex_local")
    records = [json.loads(line) for line in lines[: 3 * len(lines) // 4]]
    states: dict[str, set] = {}
    for record in records:
        if record.get("parsl.task") is not None and record.get("parsl.task_state"):
            states.setdefault(str(record["parsl.task"]), set()).add(record["parsl.task_state"])
    truth = sorted((task for task, seen in states.items() if not seen & FINAL), key=int)
    assert truth and len(truth) < len(states), states  # the half run has both kinds
    store = str(tmp_path / "killed.duckdb")
    assert cli("ingest", str(tmp_path / "runinfo"), "--store", store).exit_code == 0
    listed = json.loads(cli("tasks", "--state", "unfinished", "--store", store, "--format", "json").stdout)
    assert [task["task_id"] for task in listed] == truth
    assert {task["final_state"] for task in listed} == {"unfinished"}
    summary = json.loads(cli("summary", "--store", store, "--format", "json").stdout)
    assert summary["runs"][0]["unfinished"] == len(truth)


def test_task_ids_are_in_natural_order_in_latency_and_series(two_runs):
    """Task 9 before task 10 wherever tasks are listed: latency's rows (every format) and the
    series table's groups."""
    def natural(ids):
        return sorted(ids, key=int)

    rows = json.loads(cli("latency", "task.launched", "state:exec_done", "--store", two_runs,
                          "--format", "json").stdout)
    per_run: dict[str, list[str]] = {}
    for row in rows["latencies"]:
        per_run.setdefault(row["run_id"], []).append(row["task_id"])
    assert per_run and all(len(ids) > 10 and ids == natural(ids) for ids in per_run.values()), per_run
    table = cli("series", "psutil_process_memory_resident", "--by", "task_id", "--store", two_runs,
                "--format", "table", columns=200).stdout
    shown = re.findall(r"^\S+\s+task\.resource\s+(\d+)\s", table, re.M)
    assert len(shown) > 10 and shown == natural(shown), table


def test_the_tasks_page_counts_in_words_and_the_resource_histograms_say_they_count_tries(two_runs, web, tmp_path):
    run = run_ids(two_runs)[0]
    listed = json.loads(cli("tasks", "--run", run, "--store", two_runs, "--format", "json").stdout)
    assert f'<span id="task-count">{len(listed)} tasks</span>' in web.get(f"/runs/{run}/tasks").text
    stream = tmp_path / "one.jsonl"  # a run of one task: "1 task"
    stream.write_text(json.dumps({"ts": 1_780_000_000, "run_id": "r1", "task_id": "t1", "message": "hi"}) + "\n")
    with taskscope.open(str(tmp_path / "one.duckdb")) as store:
        store.ingest(stream)
        with TestClient(create_app(Dashboard(store))) as client:
            assert '<span id="task-count">1 task</span>' in client.get("/runs/r1/tasks").text
    figures = web.get(f"/runs/{run}/resources").text
    assert figures.count('"text": "task tries"') + figures.count('"text":"task tries"') >= 3, figures[:500]
