"""Gantt: the whole run's tasks over time (`taskscope.analyses.gantt`), drawn in the browser
(static/gantt.js, SVG): one bar per task with its stages (a retried task's earlier tries inside
its wait), rows per task or per worker slot; a
run of more than `TASK_LIMIT` tasks is aggregated per app or per slot, and clicking an app
shows its tasks, `TASK_LIMIT` to a page."""

from __future__ import annotations

from typing import Literal

import duckdb
from fastapi import APIRouter, Depends, Query, Request

from taskscope.analyses.gantt import STAGES, TASK_LIMIT, gantt
from taskscope.analyses.runs import resolve_run
from taskscope.analyses.tasks import earlier_tries
from taskscope.presenters.figures import STATE_COLOURS
from taskscope.web.dashboard import Dashboard, read_connection
from taskscope.web.pages.runs import run_row
from taskscope.web.pages.tasks import all_tasks
from taskscope.web.render import json_response, render

router = APIRouter()


def gantt_data(con: duckdb.DuckDBPyConnection, dashboard: Dashboard, run_id: str, by: str = "task",
               app: str | None = None, page: int = 1) -> dict:
    """The run's Gantt (see `taskscope.analyses.gantt.gantt`) from its task table, kept until
    an ingest adds events.

    >>> gantt_data(con, dashboard, run_id)["mode"]  # doctest: +SKIP
    'tasks'
    """
    def compute() -> dict:
        frame = all_tasks(con, dashboard, run_id)
        retried = frame.task_id[frame.tries > 1].astype(str).tolist()
        return gantt(frame, by, app or None, page, tries=earlier_tries(con, run_id, retried) if retried else None)

    return dashboard.cached(con, ("gantt", run_id, by, app, page), compute)


@router.get("/api/runs/{run:run_id}/gantt")
def gantt_json(request: Request, run: str, by: Literal["task", "slot"] = "task", app: str | None = None,
               page: int = Query(1, ge=1), con=Depends(read_connection)):
    """The run's Gantt: `by=task|slot` (rows per task or per worker slot; aggregated per app or
    per slot above the task limit), `app=NAME` (that app's tasks, `page=N`)."""
    run_id = resolve_run(con, run)
    return json_response(gantt_data(con, request.app.state.dashboard, run_id, by, app, page))


#: what every Gantt page shows beside its data
_PAGE = {"stages": [name for name, _ in STAGES], "limit": TASK_LIMIT, "state_colours": STATE_COLOURS}
# while the run is live, live.js swaps in the page anew every ingest and gantt.js draws it again


@router.get("/runs/{run:run_id}/gantt")
def gantt_page(request: Request, run: str, by: Literal["task", "slot"] = "task", app: str | None = None,
               page: int = Query(1, ge=1), con=Depends(read_connection)):
    dashboard = request.app.state.dashboard
    run_id = resolve_run(con, run)
    return render(request, "gantt.html", {**_PAGE, "title": "Gantt" + (f": {app}" if app else ""),
                                          "run": run_row(con, dashboard, run_id),
                                          "gantt": gantt_data(con, dashboard, run_id, by, app, page)})
