"""Fresh runs made with the installed Parsl during the test session."""

from __future__ import annotations

from checks import assert_executor_events_joined, assert_tasks_match_monitoring


def test_text_run_is_fully_joined_and_matches_monitoring(store, text_run):
    report = store.ingest(text_run)
    assert report.bad_lines == 0
    assert assert_executor_events_joined(store) > 0
    assert_tasks_match_monitoring(store, text_run / "monitoring.db")
    tasks = store.tasks()
    assert set(tasks.executor_label) <= {"htex_local", "threads"}
    failing = tasks[tasks.app_name == "always_fails"].iloc[0]
    assert failing.final_state == "failed" and failing.tries == 2 and failing.exception_type == "ValueError"


def test_text_run_timeline_crosses_every_component(store, text_run):
    store.ingest(text_run)
    htex_tasks = store.tasks().query("executor_label == 'htex_local'")
    task = htex_tasks.task_id.iloc[-1]
    timeline = store.timeline(task_id=task)
    assert {"parsl", "interchange", "manager", "worker", "monitoring"} <= set(timeline.source)
    assert timeline.ts.is_monotonic_increasing
    worker = timeline[timeline.source == "worker"]
    assert worker.host.notna().all() and worker.block_id.notna().all() and worker.worker_id.notna().all()


def test_two_htex_executors_are_never_confused(store, json_two_htex_run):
    """Both executors number their tasks from 1; the label keeps the joins apart."""
    store.ingest(json_two_htex_run)
    assert_executor_events_joined(store)
    assert_tasks_match_monitoring(store, json_two_htex_run / "monitoring.db")
    bindings = store.sql(
        """SELECT executor_label, executor_task_id, task_id, try_id FROM events WHERE event = 'task.launched'"""
    )
    assert set(bindings.executor_label) == {"htex_a", "htex_b"}
    for label in ("htex_a", "htex_b"):
        assert "1" in set(bindings[bindings.executor_label == label].executor_task_id)
    # every worker event's (task, try) is the one the DFK bound to that label and executor task id
    mismatched = store.sql(
        """SELECT w.file, w.line FROM events w
           JOIN events b ON b.event = 'task.launched' AND b.run_id = w.run_id
                AND b.executor_label = w.executor_label AND b.executor_task_id = w.executor_task_id
           WHERE w.source = 'worker' AND w.executor_task_id IS NOT NULL
             AND (w.task_id <> b.task_id OR w.try_id <> b.try_id)"""
    )
    assert mismatched.empty
    per_task = store.sql(
        """SELECT task_id, count(DISTINCT executor_label) AS labels FROM events
           WHERE source IN ('interchange', 'manager', 'worker') AND task_id IS NOT NULL GROUP BY 1"""
    )
    assert (per_task.labels == 1).all()


def test_json_run_carries_process_stamps_and_parsl_fields(store, json_two_htex_run):
    store.ingest(json_two_htex_run)
    fields = store.sql(
        """SELECT count(*) FILTER (WHERE pid IS NULL OR thread IS NULL OR logger IS NULL OR level IS NULL) AS missing,
                  count(*) FILTER (WHERE event = 'task.state' AND task_state IS NULL) AS stateless
           FROM events WHERE source <> 'monitoring'"""
    )
    assert fields.missing[0] == 0 and fields.stateless[0] == 0
    interchange = store.sql("SELECT DISTINCT executor_label FROM events WHERE source = 'interchange'")
    assert set(interchange.executor_label) == {"htex_a", "htex_b"}
