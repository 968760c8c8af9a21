"""Tasks: one row per task of a run, paginated, sorted and filtered on the server."""

from __future__ import annotations

import math
from dataclasses import dataclass

import duckdb
import numpy as np
import pandas as pd
from fastapi import APIRouter, Depends, Query, Request

from taskscope.analyses.runs import resolve_run
from taskscope.digests import section
from taskscope.web.dashboard import Dashboard, read_connection
from taskscope.web.pages.runs import run_row
from taskscope.presenters.format import records, with_unfinished
from taskscope.web.render import json_response, render

router = APIRouter()

#: query parameter -> column of `taskscope.analyses.tasks.tasks` it filters (exact match)
FILTERS = {"app": "app_name", "state": "final_state", "executor": "executor_label", "host": "host",
           "manager": "manager_id", "block": "block_id", "exception": "exception_type"}
SORTABLE = ["task_id", "app_name", "final_state", "tries", "exception_type", "submit_ts", "launch_ts",
            "worker_start_ts", "end_ts", "duration_s", "executor_label", "block_id", "manager_id", "worker_id", "host"]
MAX_PER_PAGE = 1000


def all_tasks(con: duckdb.DuckDBPyConnection, dashboard: Dashboard, run_id: str) -> pd.DataFrame:
    """`taskscope.analyses.tasks.tasks` of one run, from its digest or computed, kept until an ingest
    adds events (`unfinished` as the final state of tasks that have none yet)."""
    def compute() -> pd.DataFrame:
        return with_unfinished(section(con, run_id, "tasks")["tasks"])

    return dashboard.cached(con, ("tasks", run_id), compute)


def task_page(frame: pd.DataFrame, filters: dict[str, str | None], sort: str = "task_id", descending: bool = False,
              page: int = 1, per_page: int = 100) -> dict:
    """One page of `frame` after `filters` (parameter -> value) and sorting: `rows`, `total`
    (after filtering), `page`, `pages`, and the values each filter can take.

    `frame` is in natural task order, as `taskscope.analyses.tasks.tasks` returns it: that is
    the default order as it is, and the order of ties in any other, so no task id is keyed
    per request (at 100k tasks that took most of the page's time).

    >>> task_page(frame, {}, sort="duration_s", descending=True)["rows"].task_id.head(3)  # doctest: +SKIP
    """
    options = {name: sorted(frame[column].dropna().astype(str).unique().tolist())[:500]
               for name, column in FILTERS.items()}
    for name, value in filters.items():
        if value not in (None, ""):
            frame = frame[frame[FILTERS[name]].astype(str) == value]
    sort = sort if sort in SORTABLE else "task_id"
    per_page = max(1, min(per_page, MAX_PER_PAGE))
    pages = max(1, math.ceil(len(frame) / per_page))
    page = max(1, min(page, pages))
    order = _order(frame, sort, descending)
    rows = frame.iloc[order[(page - 1) * per_page: page * per_page]]
    return {"rows": rows, "total": len(frame), "page": page, "pages": pages, "per_page": per_page,
            "sort": sort, "descending": descending, "options": options}


def _order(frame: pd.DataFrame, sort: str, descending: bool) -> np.ndarray:
    """Positions of `frame` (in natural task order) sorted by `sort`, missing values last, ties
    in task order."""
    position = np.arange(len(frame))
    if sort == "task_id":
        return position[::-1] if descending else position
    keyed = pd.DataFrame({"value": frame[sort].to_numpy(), "position": position})
    keyed = keyed.sort_values(["value", "position"], ascending=[not descending, True], na_position="last")
    return keyed["position"].to_numpy()


@dataclass
class TaskQuery:
    """The query parameters both the page and its JSON endpoint take."""

    filters: dict[str, str | None]
    sort: str
    desc: bool
    page: int
    per_page: int

    def of(self, tasks: pd.DataFrame) -> dict:
        """This query's page of `tasks` (see `task_page`)."""
        return task_page(tasks, self.filters, self.sort, self.desc, self.page, self.per_page)


def task_query(app: str | None = None, state: str | None = None, executor: str | None = None,
               host: str | None = None, manager: str | None = None, block: str | None = None,
               exception: str | None = None,
               sort: str = Query("task_id", pattern=f"^({'|'.join(SORTABLE)})$",
                                 description="a column: " + ", ".join(SORTABLE)),
               desc: bool = False,
               page: int = Query(1, ge=1), per_page: int = Query(100, ge=1, le=MAX_PER_PAGE)) -> TaskQuery:
    """FastAPI dependency: filters app, state (a final state or `unfinished`), executor, host,
    manager, block, exception; `sort` (a column), `desc`, `page`, `per_page` (≤ 1000)."""
    filters = {"app": app, "state": state, "executor": executor, "host": host, "manager": manager,
               "block": block, "exception": exception}
    return TaskQuery(filters, sort, desc, page, per_page)


@router.get("/api/runs/{run:run_id}/tasks")
def tasks_json(request: Request, run: str, query: TaskQuery = Depends(task_query), con=Depends(read_connection)):
    """A page of a run's tasks. Filters: app, state (a final state or `unfinished`), executor,
    host, manager, block, exception; `sort` (a column), `desc`, `page`, `per_page` (≤ 1000)."""
    run_id = resolve_run(con, run)
    result = query.of(all_tasks(con, request.app.state.dashboard, run_id))
    return json_response({**result, "rows": records(result["rows"]), "run_id": run_id})


@router.get("/runs/{run:run_id}/tasks")
def tasks_page(request: Request, run: str, query: TaskQuery = Depends(task_query), con=Depends(read_connection)):
    run_id = resolve_run(con, run)
    dashboard = request.app.state.dashboard
    filters = query.filters
    result = query.of(all_tasks(con, dashboard, run_id))
    return render(request, "tasks.html", {
        "title": "Tasks", "run": run_row(con, dashboard, run_id), "result": result,
        "rows": result["rows"].to_dict("records"), "filters": filters, "sortable": SORTABLE,
    })
