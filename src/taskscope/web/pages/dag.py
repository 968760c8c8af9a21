"""DAG: the dependency graph, laid out in the browser (static/dag.js, no Graphviz).

Up to `TASK_LEVEL_LIMIT` tasks it is the task graph, coloured by app or by final state;
beyond that, the app graph (one node per app with its tasks by state, one edge per app pair
with its number of task dependencies), and clicking an app shows that app's tasks and their
direct dependencies, `TASK_LEVEL_LIMIT` tasks of the app per page.
"""

from __future__ import annotations

import math
from typing import Literal

import duckdb
import pandas as pd
from fastapi import APIRouter, Depends, Query, Request

from taskscope.analyses.runs import resolve_run
from taskscope.presenters.figures import STATE_COLOURS
from taskscope.schema import natural_sort_key
from taskscope.web.dashboard import Dashboard, read_connection
from taskscope.web.pages.runs import run_row
from taskscope.web.pages.task import run_dependencies
from taskscope.web.pages.tasks import all_tasks
from taskscope.web.render import json_response, render

router = APIRouter()

#: above this many tasks the DAG is drawn per app
TASK_LEVEL_LIMIT = 2000


def dag_data(con: duckdb.DuckDBPyConnection, dashboard: Dashboard, run_id: str, app: str | None = None,
             level: str | None = None, page: int = 1) -> dict:
    """Nodes and edges of the run's DAG: `level` "task" (nodes `id`, `app`, `state`; edges
    `[from, to]`, from the dependency to the task that needed it) or "app" (nodes `id` = app,
    `tasks`, `states`; edges `[from, to, count]`). Default: task level up to
    `TASK_LEVEL_LIMIT` tasks. `app` keeps one app's tasks (page `page` of
    `TASK_LEVEL_LIMIT` of them, by task id) and their direct dependencies.

    >>> dag_data(con, dashboard, run_id)["level"]  # doctest: +SKIP
    'task'
    """
    tasks = all_tasks(con, dashboard, run_id)[["task_id", "app_name", "final_state"]]
    edges = run_dependencies(con, dashboard, run_id)
    paging = {"page": 1, "pages": 1, "app_tasks": None}
    if app:
        of_app = tasks.task_id[tasks.app_name == app].sort_values(key=lambda ids: ids.map(natural_sort_key))
        pages = max(1, math.ceil(len(of_app) / TASK_LEVEL_LIMIT))
        page = max(1, min(page, pages))
        chosen = set(of_app.iloc[(page - 1) * TASK_LEVEL_LIMIT: page * TASK_LEVEL_LIMIT])
        paging = {"page": page, "pages": pages, "app_tasks": len(of_app)}
        edges = edges[edges.task_id.isin(chosen) | edges.depends_on.isin(chosen)]
        tasks = tasks[tasks.task_id.isin(chosen | set(edges.task_id) | set(edges.depends_on))]
    level = level or ("task" if len(tasks) <= TASK_LEVEL_LIMIT or app else "app")
    if level == "task" and len(tasks) <= TASK_LEVEL_LIMIT * 5:
        return {"level": "task", "tasks": len(tasks), "app": app, **paging,
                "nodes": [{"id": t, "app": a, "state": s} for t, a, s in tasks.itertuples(index=False)],
                "edges": [[d, t] for t, d in edges.itertuples(index=False)]}
    return {**_app_level(tasks, edges, app), **paging}


def _app_level(tasks: pd.DataFrame, edges: pd.DataFrame, app: str | None) -> dict:
    apps = tasks.assign(app_name=tasks.app_name.fillna("?"))
    counts = apps.groupby(["app_name", "final_state"]).size().unstack(fill_value=0)
    app_of = apps.set_index("task_id").app_name  # a Series: map() looks up vectorised
    pairs = pd.DataFrame({"source": edges.depends_on.map(app_of), "target": edges.task_id.map(app_of)}).dropna()
    pair_counts = pairs.groupby(["source", "target"]).size()
    return {"level": "app", "tasks": len(tasks), "app": app,
            "nodes": [{"id": name, "tasks": int(row.sum()), "states": {k: int(v) for k, v in row.items() if v}}
                      for name, row in counts.iterrows()],
            "edges": [[s, t, int(n)] for (s, t), n in pair_counts.items()]}


@router.get("/api/runs/{run:run_id}/dag")
def dag_json(request: Request, run: str, app: str | None = None, level: Literal["task", "app"] | None = None,
             page: int = Query(1, ge=1), con=Depends(read_connection)):
    """The run's DAG (see `dag_data`): `level=task|app`, `app=NAME` for one app's neighbourhood
    (`page=N`: its tasks by the thousands)."""
    run_id = resolve_run(con, run)
    return json_response(dag_data(con, request.app.state.dashboard, run_id, app, level, page))


@router.get("/runs/{run:run_id}/dag")
def dag_page(request: Request, run: str, app: str | None = None, level: Literal["task", "app"] | None = None,
             page: int = Query(1, ge=1), con=Depends(read_connection)):
    run_id = resolve_run(con, run)
    dashboard = request.app.state.dashboard
    data = dag_data(con, dashboard, run_id, app, level, page)
    return render(request, "dag.html", {"title": "DAG" + (f": {app}" if app else ""),
                                        "run": run_row(con, dashboard, run_id), "dag": data,
                                        "limit": TASK_LEVEL_LIMIT, "asked_level": level, "state_colours": STATE_COLOURS,
                                        "refresh_live": False})  # dag.js draws the page as loaded
