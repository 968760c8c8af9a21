"""A real Parsl run in which one task fails on every try and one more depends on it, so Parsl
never runs it (dep_fail): taskscope's demo workflow, HTEX with monitoring. Pages load in real
Chromium from a real server on 127.0.0.1, checked against monitoring.db (read with sqlite3) and
the workers' own log lines.

- Every count of tasks and tries the runs page and the run's page show, and their JSON twins,
  is monitoring.db's, under a label that says what it counts: `failed` alone is the state
  failed, "failed or dep_fail" both.
- The per-slot Gantt has a row for each worker slot that ran something and none for the
  dep_fail task, which ran nowhere; the per-task Gantt has a row for every task.
"""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

import pandas as pd
import pytest
from checks import monitoring_final_states
from conftest import make_real_run, shared_once
from test_web import Server, Watched, browser  # noqa: F401 (browser is a fixture)

import taskscope
from taskscope.analyses.gantt import aggregated
from taskscope.analyses.tasks import task_detail
from taskscope.web.dashboard import Dashboard

DONE = ("exec_done", "memo_done")
FAILED_OR_DEP_FAIL = ("failed", "dep_fail")


@pytest.fixture(scope="module")
def dep_fail_run(tmp_path_factory) -> Path:
    """A fresh real run with a task that fails (retried once) and one that depends on it."""
    folder = shared_once(tmp_path_factory, "web_counts_run",
                         lambda base: make_real_run(base / "runinfo", n_inputs=4, dependent_of_failure=True))
    return folder / "runinfo"


def exception_of(fail_history: str | None) -> str | None:
    """The exception type a monitoring.db fail history names: "ValueError('x')" -> ValueError."""
    found = re.match(r"\W*([A-Za-z_][\w.]*)\(", fail_history or "")
    return found.group(1) if found else None


def monitoring_tasks(db: Path) -> pd.DataFrame:
    """One row per task, from monitoring.db alone: `app`, `state` (final), `tries` (its try
    rows), `failed_tries` (those with a fail history), `exceptions` (per failed try) and
    `last_exception` (its last try's, if that one failed)."""
    finals = monitoring_final_states(db)
    with sqlite3.connect(db) as con:
        apps = {(run, str(task)): app for run, task, app in
                con.execute("SELECT run_id, task_id, task_func_name FROM task")}
        tries = con.execute("SELECT run_id, task_id, try_id, task_fail_history FROM try ORDER BY try_id").fetchall()
    rows = []
    for key, app in apps.items():
        histories = [history for run, task, _, history in tries if (run, str(task)) == key]
        exceptions = [exception_of(history) for history in histories if history]
        rows.append({"run_id": key[0], "task_id": key[1], "app": app, "state": finals.get(key, "unfinished"),
                     "tries": len(histories), "failed_tries": len(exceptions), "exceptions": exceptions,
                     "last_exception": exception_of(histories[-1]) if histories and histories[-1] else None})
    return pd.DataFrame(rows)


def app_counts(tasks: pd.DataFrame) -> dict[str, dict[str, int]]:
    """Per app, what each column of the apps table counts, by the column's header."""
    counts = {}
    for app, of_app in tasks.groupby("app"):
        state = of_app.state
        counts[app] = {"tasks": len(of_app), **{name: int((state == name).sum()) for name in (*DONE, *FAILED_OR_DEP_FAIL)},
                       "unfinished": int((~state.isin(DONE + FAILED_OR_DEP_FAIL)).sum()),
                       "tries": int(of_app.tries.sum()), "retried": int((of_app.tries > 1).sum()),
                       "failed tries": int(of_app.failed_tries.sum())}
    return counts


def failure_counts(tasks: pd.DataFrame) -> dict[tuple[str, str], dict[str, int]]:
    """Per (app, exception type), what each count column of the failure causes table counts."""
    counts: dict[tuple[str, str], dict[str, int]] = {}
    for task in tasks.itertuples():
        for exception in set(task.exceptions):
            row = counts.setdefault((task.app, exception), {"failed tries": 0, "tasks with such a try": 0,
                                                            "tasks it ended failed or dep_fail (last try)": 0})
            row["failed tries"] += task.exceptions.count(exception)
            row["tasks with such a try"] += 1
            ended = task.state in FAILED_OR_DEP_FAIL and task.last_exception == exception
            row["tasks it ended failed or dep_fail (last try)"] += int(ended)
    return counts


def table(page, selector: str) -> tuple[list[str], list[list[str]]]:
    """A table's header texts and its rows' cell texts."""
    headers = page.locator(f"{selector} thead th").all_inner_texts()
    rows = [row.locator("td").all_inner_texts() for row in page.locator(f"{selector} tbody tr").all()]
    return headers, rows


def test_every_count_of_the_runs_and_run_pages_is_monitoring_dbs_under_a_label_saying_what(dep_fail_run, browser):
    tasks = monitoring_tasks(dep_fail_run / "monitoring.db")
    state = tasks.state
    assert (state == "failed").sum() == 1 and (state == "dep_fail").sum() == 1, "the run did not fail as designed"
    done, failed, dep_fail = int(state.isin(DONE).sum()), int((state == "failed").sum()), int((state == "dep_fail").sum())
    store = taskscope.open(":memory:")
    store.ingest(dep_fail_run)
    server = Server(Dashboard(store))
    watched = Watched(browser)
    page = watched.page
    try:
        run_id = tasks.run_id.iloc[0]
        watched.visit(server.url + "/")
        headers, rows = table(page, "#runs")
        shown = dict(zip(headers, rows[0]))
        assert {name: int(shown[name]) for name in ("tasks", "done", "failed or dep_fail")} == \
            {"tasks": len(tasks), "done": done, "failed or dep_fail": failed + dep_fail}
        assert shown["status"] == "failed"
        statuses = page.locator("main").inner_text()
        assert "completed (ended, no task failed or dep_fail)" in statuses
        assert "failed (ended with tasks failed or dep_fail)" in statuses

        watched.visit(f"{server.url}/runs/{run_id}")
        info = dict(zip(page.locator("#run-info th").all_inner_texts(), page.locator("#run-info td").all_inner_texts()))
        assert info["status"] == "failed ended with tasks failed or dep_fail"
        cards = {card.locator(".label").inner_text(): card.locator(".value").inner_text()
                 for card in page.locator(".cards .card").all()}
        tries = next(label for label in cards if label.startswith("tries ("))
        assert {"tasks": int(cards["tasks · Gantt"]), "done": int(cards["done"]), "failed": int(cards["failed"]),
                "dep_fail": int(cards["dep_fail"]), "tries": int(cards[tries]), tries: tries} == \
            {"tasks": len(tasks), "done": done, "failed": failed, "dep_fail": dep_fail,
             "tries": int(tasks.tries.sum()), tries: f"tries ({int(tasks.failed_tries.sum())} failed)"}

        headers, rows = table(page, "#apps")
        expected = app_counts(tasks)
        assert {row[0]: {h: int(v) for h, v in zip(headers, row) if h in expected[row[0]]} for row in rows} == expected

        headers, rows = table(page, "#failures")
        assert headers == ["app", "exception type", "failed tries", "tasks with such a try",
                           "tasks it ended failed or dep_fail (last try)"]
        assert {(row[0], row[1]): {h: int(v) for h, v in zip(headers[2:], row[2:])} for row in rows} == \
            failure_counts(tasks)
        assert not watched.problems

        # the JSON twins: `tasks_failed` and the totals' `failed` count failed or dep_fail, an app's
        # `failed` the state failed, a failure cause's `tasks_failed` the tasks it ended either way
        run_row = server.json("/api/runs")["runs"][0]
        run_json = server.json(f"/api/runs/{run_id}")
        assert (run_row["tasks_done"], run_row["tasks_failed"]) == (done, failed + dep_fail) == \
            (run_json["totals"][0]["done"], run_json["totals"][0]["failed"])
        assert {app["app_name"]: (app["failed"], app["dep_fail"]) for app in run_json["apps"]} == \
            {app: (counts["failed"], counts["dep_fail"]) for app, counts in app_counts(tasks).items()}
        assert {(f["app_name"], f["exception_type"]): f["tasks_failed"] for f in run_json["failures"]} == \
            {key: counts["tasks it ended failed or dep_fail (last try)"] for key, counts in failure_counts(tasks).items()}
    finally:
        watched.close()
        server.stop()
        store.close()


def ran_somewhere(db: Path) -> dict[str, bool]:
    """Per task id, whether monitoring.db says any of its tries started running on a worker."""
    with sqlite3.connect(db) as con:
        return {str(task): bool(ran) for task, ran in con.execute(
            "SELECT task_id, max(task_try_time_running IS NOT NULL) FROM try GROUP BY task_id")}


def test_the_per_slot_gantt_has_a_row_only_for_slots_that_ran_something(dep_fail_run, browser):
    ran = ran_somewhere(dep_fail_run / "monitoring.db")
    assert sorted(task for task, did in ran.items() if not did) == \
        sorted(monitoring_tasks(dep_fail_run / "monitoring.db").query("state == 'dep_fail'").task_id)
    store = taskscope.open(":memory:")
    store.ingest(dep_fail_run)
    run_id = store.runs().run_id.iloc[0]
    # the slots where a worker logged receiving a task: the workers' own word on where tasks ran
    slots = sorted(store.sql("SELECT DISTINCT manager_id || '/' || worker_id AS slot FROM events "
                             "WHERE run_id = ? AND event = 'htex.worker.received'", [run_id]).slot)
    server = Server(Dashboard(store))
    watched = Watched(browser)
    try:
        watched.visit(f"{server.url}/runs/{run_id}/gantt?by=slot")
        assert watched.page.locator("#gantt-svg text.row-label").all_text_contents() == slots
        per_slot = server.json(f"/api/runs/{run_id}/gantt?by=slot")
        rows = dict(zip(per_slot["tasks"]["task_id"], per_slot["tasks"]["row"]))
        assert {task: rows[task] is not None for task in ran} == ran
        watched.visit(f"{server.url}/runs/{run_id}/gantt")
        assert sorted(watched.page.locator("#gantt-svg text.row-label").all_text_contents()) == sorted(ran)
        assert not watched.problems
    finally:
        watched.close()
        server.stop()
    # aggregated per slot (a run above the task limit), the same slots and only the tasks that ran
    groups = aggregated(store.tasks(run=run_id), by="slot")["groups"]
    assert sorted(group["label"] for group in groups) == slots
    assert sum(group["tasks"] for group in groups) == sum(ran.values())
    store.close()


def test_from_monitoring_db_alone_every_failed_try_counts_the_dep_fail_tasks_too(dep_fail_run, tmp_path):
    """A dep_fail task's try Parsl never launched has only a return time and its DependencyError
    in monitoring.db's `try` table; read from monitoring.db alone it was dropped (no launch time),
    and the run had fewer failed tries than monitoring.db. The truth: its `try` rows."""
    tasks = monitoring_tasks(dep_fail_run / "monitoring.db")
    with taskscope.open(str(tmp_path / "monitoring-only.duckdb")) as store:
        store.ingest(dep_fail_run / "monitoring.db")
        result = store.summary()
        run_id = tasks.run_id.iloc[0]
        [dep_fail_task] = tasks.task_id[tasks.state == "dep_fail"]
        tries = task_detail(store.con, run_id, dep_fail_task)["tries"]
        launched = store.tasks(run_id).set_index("task_id").launch_ts
    [run] = result.runs.to_dict("records")
    assert (run["tries"], run["failed_tries"]) == (int(tasks.tries.sum()), int(tasks.failed_tries.sum()))
    assert tries.exception_type.tolist() == ["DependencyError"]
    assert pd.isna(launched[dep_fail_task])  # never launched: no launch time read from its try


def test_a_parsl_dep_fail_task_has_its_dependency_error_row_and_the_rows_add_up_to_the_runs_failed(dep_fail_run):
    """Parsl counts a dep_fail task's one try as failed with DependencyError (the DFK logs it,
    monitoring.db keeps its fail history): the failures table's `tasks_failed` then adds up to the
    runs table's `failed` (failed plus dep_fail), as docs/analyses/summary.md says."""
    tasks = monitoring_tasks(dep_fail_run / "monitoring.db")
    store = taskscope.open(":memory:")
    store.ingest(dep_fail_run)
    result = store.summary()
    [run] = result.runs.to_dict("records")
    failures = result.failures
    assert run["failed"] == int(tasks.state.isin(FAILED_OR_DEP_FAIL).sum()) == int(failures.tasks_failed.sum())
    dependency = failures[failures.exception_type == "DependencyError"]
    assert int(dependency.tasks_failed.sum()) == int((tasks.state == "dep_fail").sum()) == 1
    assert int(failures.failed_tries.sum()) == int(tasks.failed_tries.sum())  # monitoring.db's try rows
    store.close()
