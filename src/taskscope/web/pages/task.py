"""Task: one task's whole journey: its cross-log timeline (table and a Gantt of its stages),
tries, dependencies, resource samples and stdout/stderr files."""

from __future__ import annotations

import duckdb
import pandas as pd
from fastapi import APIRouter, Depends, Request

from taskscope import queries
from taskscope.queries import FINAL_STATES, STATE_ORDER, WORKER_STATES, resolve_run
from taskscope.web.app import Dashboard, read_connection
from taskscope.web.digest import section
from taskscope.web.figures import gantt_figure, iso, time_layout
from taskscope.web.pages.runs import run_row
from taskscope.web.render import json_response, render

router = APIRouter()

_TRIES = """
    SELECT try_id,
           min(ts) FILTER (WHERE event IN ('task.launched', 'try.info')) AS launch_ts,
           min(ts) FILTER (WHERE event = 'htex.worker.received' OR task_state = 'running') AS worker_start_ts,
           max(ts) FILTER (WHERE event IN ('htex.worker.finished', 'task.try_failed')
                           OR task_state IN ('running_ended', 'exec_done', 'failed')) AS end_ts,
           any_value(executor_label) AS executor_label, any_value(executor_task_id) AS executor_task_id,
           any_value(block_id) AS block_id, any_value(manager_id) AS manager_id,
           any_value(worker_id) AS worker_id, any_value(host) FILTER (WHERE source <> 'parsl') AS host,
           any_value(attrs->>'exception_type') FILTER (WHERE event = 'task.try_failed') AS exception_type,
           any_value(nullif(attrs->>'task_fail_history', '')) FILTER (WHERE event = 'try.info') AS fail_history
    FROM events WHERE run_id = $run AND task_id = $task AND try_id IS NOT NULL
    GROUP BY try_id ORDER BY try_id
"""

# dependencies from the DFK's "Task N has dependency task M" lines and monitoring's task_depends
_DEPENDENCIES = """
    WITH edges AS (
        SELECT task_id, TRY_CAST(attrs->>'dependency_task_id' AS BIGINT) AS depends_on
        FROM events WHERE run_id = $run AND event = 'task.dependency'
        UNION
        SELECT task_id, TRY_CAST(trim(d) AS BIGINT) FROM (
            SELECT task_id, unnest(string_split(attrs->>'task_depends', ',')) AS d
            FROM events WHERE run_id = $run AND event = 'task.info' AND coalesce(attrs->>'task_depends', '') <> '')
    )
    SELECT DISTINCT task_id, depends_on FROM edges WHERE depends_on IS NOT NULL
    ORDER BY task_id, depends_on  -- the same order every time: the digest stores it, pages compare it
"""

# DFK states (logs, else monitoring) and executor-side stages of one task, as intervals
_STAGES = f"""
    WITH has_logs AS (
        SELECT count(*) > 0 AS yes FROM events
        WHERE run_id = $run AND task_id = $task AND event = 'task.state' AND source <> 'monitoring'
    ),
    states AS (
        SELECT ts, task_state, try_id, file_id, line FROM events, has_logs
        WHERE run_id = $run AND task_id = $task AND event = 'task.state' AND task_state NOT IN {WORKER_STATES}
          AND (source <> 'monitoring') = has_logs.yes
    ),
    state_intervals AS (
        SELECT 'DFK state' AS "group", task_state AS label, ts AS start_ts,
               lead(ts) OVER (ORDER BY ts, file_id, line) AS end_ts
        FROM states
    ),
    executor_marks AS (
        SELECT try_id,
               min(ts) FILTER (WHERE event = 'htex.interchange.queued') AS queued_ts,
               min(ts) FILTER (WHERE event = 'htex.interchange.sent') AS sent_ts,
               min(ts) FILTER (WHERE event = 'htex.worker.received' OR task_state = 'running') AS run_ts,
               max(ts) FILTER (WHERE event = 'htex.worker.finished' OR task_state = 'running_ended') AS done_ts
        FROM events WHERE run_id = $run AND task_id = $task GROUP BY try_id
    )
    SELECT "group", label, start_ts, end_ts FROM state_intervals
    WHERE end_ts IS NOT NULL OR label NOT IN {FINAL_STATES}
    UNION ALL
    SELECT 'executor', 'try ' || coalesce(CAST(try_id AS VARCHAR), '?') || ': queued in interchange', queued_ts, sent_ts
    FROM executor_marks WHERE queued_ts IS NOT NULL AND sent_ts IS NOT NULL
    UNION ALL
    SELECT 'executor', 'try ' || coalesce(CAST(try_id AS VARCHAR), '?') || ': running on worker', run_ts, done_ts
    FROM executor_marks WHERE run_ts IS NOT NULL AND done_ts IS NOT NULL
    ORDER BY start_ts
"""

_RESOURCES = """
    SELECT ts, try_id,
           TRY_CAST(attrs->>'psutil_process_memory_resident' AS DOUBLE) / 1048576 AS memory_resident_mib,
           TRY_CAST(attrs->>'psutil_process_time_user' AS DOUBLE) AS cpu_user_s,
           TRY_CAST(attrs->>'psutil_process_time_system' AS DOUBLE) AS cpu_system_s,
           TRY_CAST(attrs->>'psutil_process_cpu_percent' AS DOUBLE) AS cpu_percent
    FROM events WHERE run_id = $run AND task_id = $task AND event = 'task.resource' ORDER BY ts
"""

_STREAMS = r"""
    SELECT 'stdout' AS stream, nullif(attrs->>'task_stdout', '') AS path FROM events
    WHERE run_id = $run AND task_id = $task AND event = 'task.info'
    UNION ALL
    SELECT 'stderr', nullif(attrs->>'task_stderr', '') FROM events
    WHERE run_id = $run AND task_id = $task AND event = 'task.info'
    UNION ALL
    SELECT CASE event WHEN 'task.stdout' THEN 'stdout' ELSE 'stderr' END,
           nullif(regexp_extract(message, 'redirected to (.+)$', 1), '')
    FROM events WHERE run_id = $run AND task_id = $task AND event IN ('task.stdout', 'task.stderr')
"""


def run_dependencies(con: duckdb.DuckDBPyConnection, dashboard: Dashboard, run_id: str) -> pd.DataFrame:
    """Every dependency of the run (`task_id` waited for `depends_on`), from its digest or
    computed, kept until an ingest adds events."""
    return dashboard.cached(("dag", run_id), lambda: section(con, run_id, "dag")["edges"])


def dependencies(edges: pd.DataFrame, task_id: int) -> dict[str, list[int]]:
    """`depends_on` (tasks this one waited for) and `dependents` (tasks that waited for it),
    from the run's `edges` (see `run_dependencies`)."""
    return {"depends_on": sorted(int(d) for d in set(edges.depends_on[edges.task_id == task_id])),
            "dependents": sorted(int(t) for t in set(edges.task_id[edges.depends_on == task_id]))}


def task_data(con: duckdb.DuckDBPyConnection, dashboard: Dashboard, run_id: str, task_id: int) -> dict:
    """Everything the task page shows (and `/api/runs/{run}/tasks/{task_id}` returns)."""
    params = {"run": run_id, "task": task_id}
    timeline = queries.timeline(con, task_id, run_id)
    if timeline.empty:
        raise LookupError(f"run {run_id} has no task {task_id}")
    streams = con.execute(_STREAMS, params).df().dropna().drop_duplicates()
    return {
        "run_id": run_id, "task_id": task_id,
        "app_name": _app_name(con, run_id, task_id),
        "final_state": _final_state(con, run_id, task_id),
        "tries": con.execute(_TRIES, params).df(),
        "dependencies": dependencies(run_dependencies(con, dashboard, run_id), task_id),
        "stages": con.execute(_STAGES, params).df(),
        "resources": con.execute(_RESOURCES, params).df(),
        "streams": streams,
        "timeline": timeline,
    }


def _app_name(con, run_id: str, task_id: int) -> str | None:
    rows = con.execute("SELECT any_value(app_name) FROM events WHERE run_id = ? AND task_id = ?",
                       [run_id, task_id]).fetchall()
    return rows[0][0] if rows else None


def _final_state(con, run_id: str, task_id: int) -> str:
    rows = con.execute(
        f"""SELECT arg_max(task_state, {STATE_ORDER}) FROM events WHERE run_id = ? AND task_id = ?
            AND task_state IS NOT NULL AND task_state NOT IN {WORKER_STATES}""",
        [run_id, task_id]).fetchall()
    return (rows[0][0] if rows else None) or "unfinished"


def _resource_figure(samples: pd.DataFrame) -> dict:
    x = iso(samples.ts)
    data = [{"type": "scatter", "mode": "lines+markers", "name": "resident memory (MiB)", "x": x,
             "y": samples.memory_resident_mib.tolist()},
            {"type": "scatter", "mode": "lines+markers", "name": "CPU user time (s)", "x": x,
             "y": samples.cpu_user_s.tolist(), "yaxis": "y2"}]
    layout = time_layout("resource samples", "MiB",
                         yaxis2={"title": {"text": "seconds"}, "overlaying": "y", "side": "right"})
    return {"data": data, "layout": layout}


@router.get("/api/runs/{run}/tasks/{task_id}")
def task_json(request: Request, run: str, task_id: int, con=Depends(read_connection)):
    """One task: tries, dependencies, stages (intervals), resource samples, stdout/stderr
    paths and its whole cross-log timeline."""
    return json_response(task_data(con, request.app.state.dashboard, resolve_run(con, run), task_id))


@router.get("/runs/{run}/tasks/{task_id}")
def task_page(request: Request, run: str, task_id: int, con=Depends(read_connection)):
    run_id = resolve_run(con, run)
    data = task_data(con, request.app.state.dashboard, run_id, task_id)
    stages = data["stages"].copy()
    if not stages.empty:
        stages["end_ts"] = stages["end_ts"].fillna(stages["start_ts"])
    charts = {"stages": gantt_figure(stages, "stages")}
    if not data["resources"].empty:
        charts["resources"] = _resource_figure(data["resources"])
    return render(request, "task.html", {
        "title": f"Task {task_id}" + (f" ({data['app_name']})" if data["app_name"] else ""),
        "run": run_row(con, request.app.state.dashboard, run_id), "task": data, "charts": charts,
        "tries": data["tries"].to_dict("records"), "timeline": data["timeline"].to_dict("records"),
        "streams": data["streams"].to_dict("records"),
        "gantt_height": 140 + 26 * len(stages),
    })
