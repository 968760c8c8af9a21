"""Assertions shared by the corpus tests and the fresh-run tests."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from taskscope import Store

WORKER_STATES = ("running", "running_ended")


def monitoring_final_states(db: Path) -> dict[tuple[str, str], str]:
    """(run_id, task_id as text) -> final DFK state, read straight from monitoring.db's status table."""
    with sqlite3.connect(db) as con:
        rows = con.execute(
            f"""SELECT run_id, task_id, task_status_name, timestamp FROM status
                WHERE task_status_name NOT IN {WORKER_STATES} ORDER BY timestamp, rowid"""
        ).fetchall()
    final: dict[tuple[str, str], str] = {}
    for run_id, task_id, state, _ in rows:
        final[(run_id, str(task_id))] = state
    return final


def assert_executor_events_joined(store: Store) -> int:
    """Every interchange/manager/worker event naming an executor task carries task and try."""
    unjoined = store.sql(
        """SELECT source, file, line, message FROM events
           WHERE executor_task_id IS NOT NULL AND source IN ('interchange', 'manager', 'worker')
             AND (task_id IS NULL OR try_id IS NULL)"""
    )
    assert unjoined.empty, f"executor-side events without a task:\n{unjoined.head(10)}"
    unlinked = store.sql("SELECT * FROM event_task_links WHERE task_id IS NULL OR try_id IS NULL")
    assert unlinked.empty, f"multi-task events not joined:\n{unlinked.head(10)}"
    return int(store.sql(
        "SELECT count(*) AS n FROM events WHERE executor_task_id IS NOT NULL AND source IN ('interchange', 'manager', 'worker')"
    ).n[0])


def assert_tasks_match_monitoring(store: Store, db: Path) -> None:
    """Every task of monitoring.db is in tasks() with the same final state."""
    expected = monitoring_final_states(db)
    assert expected, "monitoring.db has no task states"
    tasks = store.tasks()
    got = {(r.run_id, r.task_id): r.final_state for r in tasks.itertuples()}
    missing = set(expected) - set(got)
    assert not missing, f"tasks of monitoring.db missing from tasks(): {sorted(missing)[:5]}"
    differ = {key: (expected[key], got[key]) for key in expected if expected[key] != got[key]}
    assert not differ, f"final states differ (monitoring.db, taskscope): {differ}"
