"""The basic questions: which runs, which tasks, and what happened to one task.

Each is a function of a DuckDB connection returning a pandas DataFrame; `Store` exposes
them as methods. The work is SQL; Python only picks parameters.
"""

from __future__ import annotations

import duckdb
import pandas as pd

#: DFK states that end a task (Parsl's `parsl.dataflow.states.FINAL_STATES` plus memo_done)
FINAL_STATES = ("exec_done", "failed", "dep_fail", "memo_done")
#: states monitoring.db records from workers, not DFK state changes
WORKER_STATES = ("running", "running_ended")


class RunNotFound(LookupError):
    """No run, or more than one, matches what the user typed."""


def resolve_run(con: duckdb.DuckDBPyConnection, text: str | None) -> str | None:
    """A full run id from a run id, a unique prefix of one, or a run folder name ("000").

    None stays None (meaning: every run).
    """
    if text is None:
        return None
    matches = [
        row[0]
        for row in con.execute(
            # starts_with / ends_with, not LIKE: `_` and `%` in what the user typed are literal
            """SELECT DISTINCT run_id FROM events WHERE starts_with(run_id, ?)
               UNION SELECT run_id FROM run_dirs WHERE run_id IS NOT NULL
                     AND (run_dir = ? OR ends_with(run_dir, '/' || ?))""",
            [text, text, text],
        ).fetchall()
    ]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise RunNotFound(f"no run matches {text!r} (see `taskscope runs`)")
    raise RunNotFound(f"{text!r} matches {len(matches)} runs: {', '.join(sorted(matches)[:5])}; give more of the id")


#: the order of a task's states: by time; within one timestamp (text logs have milliseconds) a
#: final state comes last, then the line order, so the final state never depends on a tie
STATE_ORDER = f"(ts, task_state IN {FINAL_STATES}, line)"

_TASK_STATES = f"""
    SELECT run_id, task_id,
           arg_max(task_state, {STATE_ORDER}) FILTER (WHERE task_state NOT IN {WORKER_STATES}) AS final_state
    FROM events WHERE task_state IS NOT NULL AND task_id IS NOT NULL AND run_id IS NOT NULL
    GROUP BY run_id, task_id
"""


def runs(con: duckdb.DuckDBPyConnection, run_id: str | None = None) -> pd.DataFrame:
    """One row per run (or only the row of `run_id`, a full id): name, user, host, folder,
    start, end, duration, tasks by outcome.

    >>> runs(con).columns[:3].tolist()  # doctest: +SKIP
    ['run_id', 'workflow_name', 'user']
    """
    return con.execute(
        f"""
        WITH extent AS (
            SELECT run_id, min(ts) AS start_ts, max(ts) AS end_ts, count(*) AS events,
                   bool_or(event IN ('workflow.end', 'workflow.shutdown')) AS ended,
                   string_agg(DISTINCT source, ',' ORDER BY source) AS sources
            -- usage messages carry their correlator as run_id: they are not workflow runs here
            FROM events WHERE run_id IS NOT NULL AND source IS DISTINCT FROM 'usage'
                              AND ($run IS NULL OR run_id = $run)
            GROUP BY run_id
        ),
        startup AS (
            -- JSON read from the few start events only (a FILTER clause would parse every event's attrs)
            SELECT run_id,
                   any_value(coalesce(attrs->>'workflow_name', attrs->>'$."parsl.workflow_info.workflow_name"'))
                       AS workflow_name,
                   any_value(coalesce(attrs->>'user', attrs->>'$."parsl.workflow_info.user"')) AS "user",
                   any_value(host) AS host
            FROM events WHERE run_id IS NOT NULL AND ($run IS NULL OR run_id = $run)
                              AND event IN ('workflow.start', 'workflow.startup')
            GROUP BY run_id
        ),
        info AS (SELECT * FROM extent LEFT JOIN startup USING (run_id)),
        outcome AS (
            SELECT run_id, count(*) AS tasks,
                   count(*) FILTER (WHERE final_state IN ('exec_done', 'memo_done')) AS tasks_done,
                   count(*) FILTER (WHERE final_state IN ('failed', 'dep_fail')) AS tasks_failed
            FROM ({_TASK_STATES}) WHERE $run IS NULL OR run_id = $run GROUP BY run_id
        )
        SELECT i.run_id, i.workflow_name, i."user", i.host,
               (SELECT any_value(run_dir) FROM run_dirs d WHERE d.run_id = i.run_id) AS run_dir,
               to_timestamp(i.start_ts) AS start, to_timestamp(i.end_ts) AS "end",
               round(i.end_ts - i.start_ts, 3) AS duration_s,
               CASE WHEN i.ended THEN 'completed' ELSE 'unfinished' END AS status,
               coalesce(o.tasks, 0) AS tasks, coalesce(o.tasks_done, 0) AS tasks_done,
               coalesce(o.tasks_failed, 0) AS tasks_failed, i.events, i.sources
        FROM info i LEFT JOIN outcome o USING (run_id)
        ORDER BY i.start_ts
        """,
        {"run": run_id},
    ).df()


def tasks(con: duckdb.DuckDBPyConnection, run_id: str | None = None) -> pd.DataFrame:
    """One row per task: app, final state, tries, the times of its stages, where it ran.

    Times are seconds since the epoch (UTC); `duration_s` is submit to end. `executor_label`,
    `block_id`, `manager_id`, `worker_id` and `host` are those of its last try.
    """
    return con.execute(
        f"""
        WITH states AS ({_TASK_STATES}),
        per_task AS (
            SELECT run_id, task_id,
                   any_value(app_name) AS app_name,
                   greatest(max(try_id) + 1, 1) AS tries,
                   min(ts) FILTER (WHERE event IN ('task.submitted', 'task.info')
                                   OR task_state IN ('unsched', 'pending')) AS submit_ts,
                   max(ts) FILTER (WHERE event IN ('task.launched', 'try.info')
                                   OR (event = 'task.state' AND task_state = 'launched')) AS launch_ts,
                   max(ts) FILTER (WHERE event = 'htex.worker.received'
                                   OR (event = 'task.state' AND task_state = 'running')) AS worker_start_ts,
                   max(ts) FILTER (WHERE task_state IN {FINAL_STATES}) AS end_ts,
                   arg_max(executor_label, coalesce(try_id, -1)) FILTER (WHERE executor_label IS NOT NULL) AS executor_label,
                   arg_max(block_id, coalesce(try_id, -1)) FILTER (WHERE block_id IS NOT NULL) AS block_id,
                   arg_max(manager_id, coalesce(try_id, -1)) FILTER (WHERE manager_id IS NOT NULL) AS manager_id,
                   arg_max(worker_id, coalesce(try_id, -1)) FILTER (WHERE worker_id IS NOT NULL) AS worker_id,
                   arg_max(host, coalesce(try_id, -1)) FILTER (WHERE host IS NOT NULL AND source <> 'parsl') AS host,
                   any_value(attrs->>'exception_type') FILTER (WHERE event = 'task.try_failed') AS exception_type
            FROM events
            WHERE task_id IS NOT NULL AND run_id IS NOT NULL AND ($run IS NULL OR run_id = $run)
            GROUP BY run_id, task_id
        )
        SELECT p.run_id, p.task_id, p.app_name, s.final_state, p.tries, p.exception_type,
               p.submit_ts, p.launch_ts, p.worker_start_ts, p.end_ts,
               round(p.end_ts - p.submit_ts, 6) AS duration_s,
               p.executor_label, p.block_id, p.manager_id, p.worker_id, p.host
        FROM per_task p LEFT JOIN states s USING (run_id, task_id)
        ORDER BY p.run_id, p.task_id
        """,
        {"run": run_id},
    ).df()


def latest_run_with_task(con: duckdb.DuckDBPyConnection, task_id: int) -> tuple[str | None, int]:
    """(the most recent run that has `task_id`, how many runs have it)."""
    rows = con.execute(
        """SELECT run_id FROM events WHERE task_id = ? AND run_id IS NOT NULL
           GROUP BY run_id ORDER BY max(ts) DESC""",
        [task_id],
    ).fetchall()
    return (rows[0][0] if rows else None), len(rows)


def timeline(con: duckdb.DuckDBPyConnection, task_id: int, run_id: str | None = None) -> pd.DataFrame:
    """Every event of one task across all sources, in time order, with time since the first.

    Without `run_id`, the most recent run that has the task is used.

    >>> timeline(con, task_id=358)[["since_first_s", "source", "message"]]  # doctest: +SKIP
    """
    if run_id is None:
        run_id, _ = latest_run_with_task(con, task_id)
    return con.execute(
        """
        WITH hits AS (
            SELECT * FROM events WHERE run_id = $run AND task_id = $task
            UNION ALL
            SELECT e.* FROM event_task_links l JOIN events e ON e.file_id = l.file_id AND e.line = l.line
            WHERE l.run_id = $run AND l.task_id = $task AND e.task_id IS NULL
        )
        SELECT ts, ts - min(ts) OVER () AS since_first_s, source, file, line, level, event, message,
               coalesce(attrs->>'process_name', attrs->>'processName', CAST(pid AS VARCHAR)) AS process,
               pid, thread, host, run_id, task_id, try_id, executor_label, executor_task_id,
               block_id, manager_id, worker_id
        FROM hits ORDER BY ts, file, line
        """,
        {"run": run_id, "task": task_id},
    ).df()
