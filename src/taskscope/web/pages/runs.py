"""Runs: every run in the store, with its status (completed, failed, unfinished, live)."""

from __future__ import annotations

import duckdb
import pandas as pd
from fastapi import APIRouter, Depends, Request

from taskscope.analyses.runs import NO_RUN_HINT, mark_live, runs, task_events_without_run
from taskscope.digests import section
from taskscope.web.dashboard import Dashboard, read_connection
from taskscope.web.render import json_response, render

router = APIRouter()


def run_table(con: duckdb.DuckDBPyConnection, dashboard: Dashboard) -> pd.DataFrame:
    """`taskscope.analyses.runs.runs` with `live` for the unfinished runs a live ingest is
    reading (`taskscope.analyses.runs.mark_live`): the rows `taskscope runs` gives.

    >>> run_table(con, dashboard)[["run_id", "status"]]  # doctest: +SKIP
    """
    # the per-run aggregate is cached until an ingest adds events; `live` (which depends on
    # the clock) is decided on every call
    return mark_live(dashboard.cached(con, ("runs",), lambda: runs(con)), dashboard.watching)


def run_row(con: duckdb.DuckDBPyConnection, dashboard: Dashboard, run_id: str) -> dict:
    """The `run_table` row of one run (a full id) as a dict, from the run's digest when current."""
    rows = mark_live(dashboard.cached(con, ("run row", run_id), lambda: section(con, run_id, "row")["row"]),
                     dashboard.watching)
    if rows.empty:
        raise LookupError(f"no run {run_id}")
    return rows.iloc[0].to_dict()


@router.get("/api/runs")
def runs_json(request: Request, con=Depends(read_connection)):
    """Every run: the rows of `taskscope runs --format json` (name, user, host, folder, start/end
    (epoch s), duration, status, task counts)."""
    return json_response({"runs": run_table(con, request.app.state.dashboard)})


@router.get("/")
def runs_page(request: Request, con=Depends(read_connection)):
    table = run_table(con, request.app.state.dashboard)
    orphans = task_events_without_run(con) if table.empty else 0
    return render(request, "runs.html", {"title": "Runs", "runs": table.to_dict("records"),
                                         "orphan_task_events": orphans, "no_run_hint": NO_RUN_HINT})
