"""Runs: which runs a store holds, how a run is named on the command line, and each run's
outcome (start, end, duration, status, tasks by final state).

`runs` is the one definition of a run's status, start, end and duration, and its columns are
the fields everything shows (`taskscope runs --format json` and `/api/runs` give the same rows).

Each is a function of a DuckDB connection returning a pandas DataFrame; `Store` exposes
them as methods. The work is SQL; Python only picks parameters.
"""

from __future__ import annotations

import time

import duckdb
import pandas as pd

from taskscope._sql import of_run, scalar

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

TASK_STATES = f"""
    SELECT run_id, task_id,
           arg_max(task_state, {STATE_ORDER}) FILTER (WHERE task_state NOT IN {WORKER_STATES}) AS final_state
    FROM events WHERE task_state IS NOT NULL AND task_id IS NOT NULL AND run_id IS NOT NULL
    GROUP BY run_id, task_id
"""


#: run statuses: ended with every task done; ended with failed tasks; not ended and still
#: logging while a live ingest reads it; not ended (still running elsewhere, killed or abandoned)
RUN_STATUSES = ("completed", "failed", "live", "unfinished")
#: a run that logged nothing for this long is no longer live, only unfinished
LIVE_QUIET_S = 120.0


def task_events_without_run(con: duckdb.DuckDBPyConnection) -> int:
    """How many events name a task but no run. Tasks are listed per run, so these tasks are in
    no list: a generic stream whose records carry no `run_id` (the presenters say so).

    >>> task_events_without_run(con)  # doctest: +SKIP
    6
    """
    return int(scalar(
        con, "SELECT count(*) FROM events WHERE task_id IS NOT NULL AND run_id IS NULL AND source IS DISTINCT FROM 'usage'"
    ))


#: what to do about `task_events_without_run`, for the presenters
NO_RUN_HINT = ("name a task but no run, and tasks are listed per run: give the records a `run_id` field "
               "(or ingest them inside their Parsl run folder)")


def runs(con: duckdb.DuckDBPyConnection, run_id: str | None = None) -> pd.DataFrame:
    """One row per run (or only the row of `run_id`, a full id): `run_id`, `workflow_name`,
    `user`, `host`, `run_dir` (the run folder, else the one monitoring.db recorded), `start_ts`,
    `end_ts` (the run's first and last event, epoch seconds), `duration_s` (end - start),
    `status` (`completed`, `failed` = ended with failed tasks, or `unfinished`; see
    `mark_live` for `live`), `tasks`, `tasks_done` (exec_done or memo_done), `tasks_failed` (failed or
    dep_fail), `events`, `sources`.

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
                              AND {of_run()}
            GROUP BY run_id
        ),
        startup AS (
            -- JSON read from the few start events only (a FILTER clause would parse every event's attrs)
            SELECT run_id,
                   any_value(coalesce(attrs->>'workflow_name', attrs->>'$."parsl.workflow_info.workflow_name"'))
                       AS workflow_name,
                   any_value(coalesce(attrs->>'user', attrs->>'$."parsl.workflow_info.user"')) AS "user",
                   any_value(host) AS host,
                   any_value(attrs->>'rundir') FILTER (WHERE source = 'monitoring') AS monitoring_run_dir
            FROM events WHERE run_id IS NOT NULL AND {of_run()}
                              AND event IN ('workflow.start', 'workflow.startup')
            GROUP BY run_id
        ),
        info AS (SELECT * FROM extent LEFT JOIN startup USING (run_id)),
        -- every task with an event counts, as `tasks` lists them, whether or not it logged a state
        -- (a generic stream's tasks may name no state at all)
        outcome AS (
            SELECT run_id, count(*) AS tasks,
                   count(*) FILTER (WHERE final_state IN ('exec_done', 'memo_done')) AS tasks_done,
                   count(*) FILTER (WHERE final_state IN ('failed', 'dep_fail')) AS tasks_failed
            FROM (SELECT DISTINCT run_id, task_id FROM events
                  WHERE task_id IS NOT NULL AND run_id IS NOT NULL AND {of_run()})
                 LEFT JOIN ({TASK_STATES}) USING (run_id, task_id)
            GROUP BY run_id
        )
        SELECT i.run_id, i.workflow_name, i."user", i.host,
               coalesce((SELECT any_value(run_dir) FROM run_dirs d WHERE d.run_id = i.run_id),
                        i.monitoring_run_dir) AS run_dir,
               i.start_ts, i.end_ts, round(i.end_ts - i.start_ts, 6) AS duration_s,
               CASE WHEN NOT i.ended THEN 'unfinished'
                    WHEN coalesce(o.tasks_failed, 0) > 0 THEN 'failed' ELSE 'completed' END AS status,
               coalesce(o.tasks, 0) AS tasks, coalesce(o.tasks_done, 0) AS tasks_done,
               coalesce(o.tasks_failed, 0) AS tasks_failed, i.events, i.sources
        FROM info i LEFT JOIN outcome o USING (run_id)
        ORDER BY i.start_ts
        """,
        {"run": run_id},
    ).df()




def mark_live(table: pd.DataFrame, ingesting: bool, now: float | None = None) -> pd.DataFrame:
    """`table` (rows of `runs`) with `status` `live` for the unfinished runs that logged within
    `LIVE_QUIET_S` while `ingesting` (a live ingest reads their folders); a copy.

    >>> mark_live(runs(con), ingesting=True).status.tolist()  # doctest: +SKIP
    ['completed', 'live']
    """
    table = table.copy()
    if ingesting and not table.empty:
        recent = ((now if now is not None else time.time()) - table.end_ts) < LIVE_QUIET_S
        table.loc[(table.status == "unfinished") & recent, "status"] = "live"
    return table
