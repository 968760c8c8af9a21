"""The `taskscope` command and the Python API, as a user runs them."""

from __future__ import annotations

import json
import subprocess
import sys

import pandas as pd
import pytest

import taskscope
from conftest import corpus_path, invoke, run_cli

JSON_RUN = corpus_path("parsl-htex-jsonlog")


def test_cli_ingest_runs_tasks_timeline_sql(tmp_path):
    store = str(tmp_path / "run.duckdb")
    done = run_cli("ingest", str(JSON_RUN), "--store", store)
    assert done.returncode == 0, done.stderr
    assert "100.0% of executor-side task events joined to a task" in done.stdout

    runs = json.loads(run_cli("runs", "--store", store, "--format", "json").stdout)
    assert [r["run_id"] for r in runs] == ["f8b4b588-852e-474f-b8d3-a08a9b790dad"]
    assert runs[0]["tasks_done"] == 25 and runs[0]["tasks_failed"] == 2 and runs[0]["status"] == "failed"

    tasks = json.loads(run_cli("tasks", "--run", "f8b4", "--store", store, "--format", "json").stdout)
    assert len(tasks) == 27
    assert {t["final_state"] for t in tasks if t["app_name"] == "boom"} == {"failed"}

    failed = json.loads(run_cli("tasks", "--run", "000", "--state", "failed", "--store", store, "-f", "json").stdout)
    assert len(failed) == 2

    timeline = run_cli("timeline", "--task", "3", "--store", store)
    assert timeline.returncode == 0, timeline.stderr
    lines = timeline.stdout.splitlines()
    assert lines[0] == "=== About task 3 ==="
    assert any("HTEX-Worker-1/MainThread  Received executor task 4  (worker)" in line for line in lines)
    assert any("launched on executor htex_local with executor id 4  (parsl)" in line for line in lines)

    sql = run_cli("sql", "SELECT source, count(*) AS n FROM events GROUP BY 1 ORDER BY 1", "--store", store, "-f", "csv")
    frame = pd.read_csv(pd.io.common.StringIO(sql.stdout))
    assert set(frame.source) >= {"parsl", "interchange", "manager", "worker", "monitoring", "dbm"}


def test_cli_user_errors_are_one_line_and_exit_2(tmp_path):
    store = tmp_path / "s.duckdb"
    not_a_store = tmp_path / "garbage.duckdb"
    not_a_store.write_bytes(b"this is not a database" * 100)
    bad_rules = tmp_path / "bad.toml"
    bad_rules.write_text("[[rule]\nevent = ")
    invoke("ingest", str(JSON_RUN), "--store", str(store))
    cases = [
        ("ingest", str(tmp_path / "missing"), "--store", str(store)),
        ("runs", "--store", str(tmp_path / "nowhere.duckdb")),
        ("runs", "--store", str(not_a_store)),
        ("tasks", "--run", "nope", "--store", str(store)),
        ("timeline", "--task", "99999", "--store", str(store)),
        ("sql", "SELECT * FROM no_such_table", "--store", str(store)),
        ("sql", "  ", "--store", str(store)),
        ("tasks", "--run", "%", "--store", str(store)),  # a LIKE wildcard is no run prefix
        ("ingest", str(JSON_RUN), "--store", str(tmp_path / "new.duckdb"), "--rules", str(tmp_path / "none.toml")),
        ("ingest", str(JSON_RUN), "--store", str(tmp_path / "new.duckdb"), "--rules", str(bad_rules)),
    ]
    for args in cases:
        done = invoke(*args)
        assert done.returncode == 2, (args, done.stdout, done.stderr)
        assert "Traceback" not in done.stderr
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr
        assert done.stderr.startswith("error:")
    assert not (tmp_path / "new.duckdb").exists()  # a bad rules file stops the ingest before the store
    assert invoke("tasks", "--limit", "-1", "--store", str(store)).returncode == 2


def test_cli_shows_any_number_sql_returns(tmp_path):
    store = str(tmp_path / "s.duckdb")
    invoke("ingest", str(JSON_RUN), "--store", store)
    done = invoke("sql", "SELECT 1e300 AS big, 'inf'::DOUBLE AS endless, 1.7e9 AS epoch, 12.5 AS small",
                  "--store", store)
    assert done.returncode == 0, done.stderr
    assert "1e+300" in done.stdout and "inf" in done.stdout and "2023-11-14 22:13:20.000" in done.stdout
    # text is data, not Rich markup: it is shown as it is and never crashes the table
    done = invoke("sql", "SELECT 'x [/]' AS a, 'done [/tmp]' AS b, '[red]kept[/red] [true]' AS c", "--store", store)
    assert done.returncode == 0, done.stderr
    assert all(text in done.stdout for text in ("x [/]", "done [/tmp]", "[red]kept[/red] [true]"))


def test_port_options_refuse_ports_that_do_not_exist(tmp_path):
    for args in (("ui", "--store", str(tmp_path / "s.duckdb"), "--port", "70000"),
                 ("usage", "collect", "--store", str(tmp_path / "u.duckdb"), "--port", "70000")):
        done = invoke(*args)
        assert done.returncode == 2 and "Traceback" not in done.stderr and "65535" in done.stderr, done.stderr


def test_every_command_has_help_with_an_example():
    for command in ("ingest", "runs", "tasks", "timeline", "sql"):
        done = invoke(command, "--help")
        assert done.returncode == 0 and "Example: taskscope" in done.stdout, command


def test_python_api(tmp_path):
    store = taskscope.open(tmp_path / "run.duckdb")
    store.ingest(JSON_RUN)
    timeline = store.timeline(task_id=3)
    assert isinstance(timeline, pd.DataFrame) and timeline.task_id.eq("3").all() | timeline.task_id.isna().any()
    assert store.con.execute("SELECT count(*) FROM events").fetchone()[0] > 3000
    assert list(store.runs().run_id) == ["f8b4b588-852e-474f-b8d3-a08a9b790dad"]
    columns = store.sql("DESCRIBE events").column_name.tolist()
    assert columns[:24] == [
        "ts", "source", "file", "line", "level", "logger", "event", "template", "message", "host", "pid", "thread",
        "run_id", "task_id", "try_id", "app_name", "task_state", "executor_label", "executor_task_id", "block_id",
        "job_id", "manager_id", "worker_id", "attrs",
    ]
    store.close()
    with taskscope.open(tmp_path / "run.duckdb", read_only=True) as again:
        assert len(again.tasks("f8b4")) == 27


def test_importing_taskscope_needs_neither_parsl_nor_dask():
    code = "import sys, taskscope, taskscope.cli; print(any(m.split('.')[0] in ('parsl', 'dask') for m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.stdout.strip() == "False", done.stderr


def test_final_state_does_not_depend_on_ties_in_time(tmp_path):
    """Logs with millisecond times give a task's last two states one timestamp: the final state wins
    the tie, whatever the line order, and the same input gives the same answer every time."""
    header = "1795294615.285000 2026-11-21 20:56:55 MainProcess-4245 Task-Launch_0-1 parsl.dataflow.dflow:565 _update_task_state INFO: "
    lines = ["1795294613.964624 2026-11-21 20:56:53 MainProcess-4245 MainThread-1 parsl.dataflow.dflow:147 __init__ "
             "INFO: Run id is: eb1db099-75d2-4b5e-a434-372918121189"]
    for task_id in range(60):
        first, second = ("launched", "exec_done"), ("pending", "launched")
        if task_id % 2:  # half of them in the order Parsl logs them
            first, second = second, first
        lines += [f"{header}Task {task_id} changing state from {first[0]} to {first[1]}",
                  f"{header}Task {task_id} changing state from {second[0]} to {second[1]}"]
    (tmp_path / "run" / "000").mkdir(parents=True)
    (tmp_path / "run" / "000" / "parsl.log").write_text("\n".join(lines) + "\n")
    store = taskscope.open(":memory:")
    store.ingest(tmp_path / "run")
    tasks = store.tasks()
    assert len(tasks) == 60
    assert (tasks.final_state == "exec_done").all(), tasks.final_state.value_counts()


def test_a_long_query_prints_no_duckdb_progress_bar_into_the_output(tmp_path):
    """DuckDB draws a progress bar on stdout for queries over two seconds; in `--json > file` it
    would corrupt the file. Here every connection is made with no wait before the bar, so any
    query draws it: it does on a plain DuckDB connection, and not on a taskscope store's."""
    script = (
        "import duckdb, sys\n"
        "connect = duckdb.connect\n"
        "def connect_with_no_wait(*args, **kwargs):\n"
        "    con = connect(*args, **kwargs)\n"
        "    con.execute('SET progress_bar_time = 0')\n"
        "    return con\n"
        "duckdb.connect = connect_with_no_wait\n"
        "import taskscope\n"
        "con = taskscope.open(sys.argv[2]).con if sys.argv[1] == 'store' else duckdb.connect()\n"
        "print('QUERY', flush=True)\n"
        "print(con.execute('SELECT sum(hash(i)) FROM range(20000000) t(i)').fetchall())\n"
    )

    def query_output(kind: str) -> str:
        done = subprocess.run([sys.executable, "-c", script, kind, str(tmp_path / "s.duckdb")],
                              capture_output=True, text=True, check=True)
        return done.stdout.split("QUERY\n", 1)[1]

    assert "\u2595" in query_output("plain duckdb")  # the bar's edge: the setup does draw it
    store_output = query_output("store")
    assert store_output.startswith("[(") and store_output.count("\n") == 1, store_output[:300]


def test_an_offset_no_time_zone_has_is_refused_before_the_store(tmp_path):
    log = tmp_path / "app.log"
    log.write_text("2026-01-02 03:04:05 INFO started\n2026-01-02 03:04:06 INFO done\n")
    store = tmp_path / "s.duckdb"
    for hours in ["nan", "inf", "-inf", "15", "-14.5", "1e300"]:
        done = invoke("ingest", str(log), "--store", str(store), f"--utc-offset={hours}")
        assert done.returncode == 2, (hours, done.stdout, done.stderr)
        assert done.stderr.startswith(f"error: --utc-offset {float(hours):g}: give the hours local time was ahead "
                                      "of UTC, a number from -14 to 14")
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert not store.exists()
    done = invoke("ingest", str(log), "--store", str(store), "--utc-offset=-5.5")
    assert done.returncode == 0, done.stderr
    with taskscope.open(store, read_only=True) as opened:  # 03:04:05 at UTC-5:30 is 08:34:05 UTC
        assert opened.sql("SELECT min(ts) AS ts FROM events").ts[0] == 1767342845.0
    # the API refuses it too, not with a SQL error
    with taskscope.open(tmp_path / "api.duckdb") as opened, pytest.raises(ValueError, match="finite number of seconds"):
        opened.ingest(log, utc_offset_seconds=float("nan"))


def test_ingest_format_csv_is_one_row_of_counts(tmp_path):
    store = str(tmp_path / "s.duckdb")
    done = invoke("ingest", str(JSON_RUN), "--store", store, "--format", "csv")
    assert done.returncode == 0, done.stderr
    frame = pd.read_csv(pd.io.common.StringIO(done.stdout))
    report = json.loads(invoke("ingest", str(JSON_RUN), "--store", str(tmp_path / "j.duckdb"), "-f", "json").stdout)
    assert len(frame) == 1
    row = frame.iloc[0]
    assert {name: row[name] for name in ("files_read", "events", "lines", "bad_lines")} == {
        name: report[name] for name in ("files_read", "events", "lines", "bad_lines")}
    assert row.executor_events_joined == report["relate"]["executor_events_joined"] > 0
