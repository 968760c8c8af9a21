"""Task: one task's whole journey: its cross-log timeline (table and a Gantt of its stages),
tries, dependencies, resource samples and stdout/stderr files."""

from __future__ import annotations

import duckdb
import pandas as pd
from fastapi import APIRouter, Depends, Request

from taskscope.analyses.runs import resolve_run
from taskscope.analyses.tasks import task_detail
from taskscope.digests import section
from taskscope.web.dashboard import Dashboard, read_connection
from taskscope.presenters.figures import gantt_figure, resource_samples_figure
from taskscope.web.pages.runs import run_row
from taskscope.web.render import json_response, render

router = APIRouter()

#: timeline rows the task page lists; the log explorer pages through the rest
TIMELINE_ROWS = 1000


def run_dependencies(con: duckdb.DuckDBPyConnection, dashboard: Dashboard, run_id: str) -> pd.DataFrame:
    """Every dependency of the run (`task_id` waited for `depends_on`), from its digest or
    computed, kept until an ingest adds events."""
    return dashboard.cached(con, ("dag", run_id), lambda: section(con, run_id, "dag")["edges"])


def task_data(con: duckdb.DuckDBPyConnection, dashboard: Dashboard, run_id: str, task_id: str) -> dict:
    """Everything the task page shows (and `/api/runs/{run}/tasks/{task_id}` returns): see
    `taskscope.analyses.tasks.task_detail`; the run's dependencies come from its digest."""
    return task_detail(con, run_id, task_id, edges=run_dependencies(con, dashboard, run_id))


@router.get("/api/runs/{run:run_id}/tasks/{task_id:path}")  # ids are text: a Dask key may hold a slash
def task_json(request: Request, run: str, task_id: str, con=Depends(read_connection)):
    """One task: tries, dependencies, stages (intervals), resource samples, stdout/stderr
    paths and its whole cross-log timeline."""
    return json_response(task_data(con, request.app.state.dashboard, resolve_run(con, run), task_id))


@router.get("/runs/{run:run_id}/tasks/{task_id:path}")
def task_page(request: Request, run: str, task_id: str, con=Depends(read_connection)):
    run_id = resolve_run(con, run)
    data = task_data(con, request.app.state.dashboard, run_id, task_id)
    stages = data["stages"].copy()
    if not stages.empty:
        stages["end_ts"] = stages["end_ts"].fillna(stages["start_ts"])
    charts = {"stages": gantt_figure(stages, "stages")}
    if not data["resources"].empty:
        charts["resources"] = resource_samples_figure(data["resources"])
    return render(request, "task.html", {
        "title": f"Task {task_id}" + (f" ({data['app_name']})" if data["app_name"] else ""),
        "run": run_row(con, request.app.state.dashboard, run_id), "task": data, "charts": charts,
        "tries": data["tries"].to_dict("records"),
        "timeline": data["timeline"].head(TIMELINE_ROWS).to_dict("records"), "timeline_events": len(data["timeline"]),
        "streams": data["streams"].to_dict("records"),
        "gantt_height": 140 + 26 * len(stages),
    })
