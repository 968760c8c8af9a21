"""Runs: every run in the store, with its status (completed, failed, unfinished, live)."""

from __future__ import annotations

import time

import duckdb
import pandas as pd
from fastapi import APIRouter, Depends, Request

from taskscope.analyses.runs import runs
from taskscope.digests import section
from taskscope.web.dashboard import Dashboard, read_connection
from taskscope.web.render import json_response, render

router = APIRouter()

#: a run that logged nothing for this long is no longer shown as live, only as unfinished
LIVE_QUIET_S = 120.0


def run_table(con: duckdb.DuckDBPyConnection, dashboard: Dashboard) -> pd.DataFrame:
    """`taskscope.analyses.runs.runs` with `status`: `completed` (ended, no failed task), `failed`
    (ended with failed tasks), `live` (not ended, still logging while the dashboard ingests) or
    `unfinished` (not ended: still running elsewhere, killed or abandoned).

    >>> run_table(con, dashboard)[["run_id", "status"]]  # doctest: +SKIP
    """
    # the per-run aggregate is cached until an ingest adds events; the status (which depends
    # on the clock for `live`) is computed on every call
    return _with_status(dashboard.cached(("runs",), lambda: runs(con)), dashboard)


def run_row(con: duckdb.DuckDBPyConnection, dashboard: Dashboard, run_id: str) -> dict:
    """The `run_table` row of one run (a full id) as a dict, from the run's digest when current."""
    rows = _with_status(dashboard.cached(("run row", run_id), lambda: section(con, run_id, "row")["row"]), dashboard)
    if rows.empty:
        raise LookupError(f"no run {run_id}")
    return rows.iloc[0].to_dict()


def _with_status(runs: pd.DataFrame, dashboard: Dashboard) -> pd.DataFrame:
    table = runs.copy()
    if table.empty:
        return table.assign(end_ts=pd.Series(dtype="float64"))
    end_ts = table["end"].map(lambda t: t.timestamp() if not pd.isna(t) else None).astype("float64")
    ended = table.status == "completed"
    recent = (time.time() - end_ts) < LIVE_QUIET_S
    table["status"] = "unfinished"
    table.loc[ended & (table.tasks_failed == 0), "status"] = "completed"
    table.loc[ended & (table.tasks_failed > 0), "status"] = "failed"
    if dashboard.watching:
        table.loc[~ended & recent, "status"] = "live"
    table["start_ts"] = table["start"].map(lambda t: t.timestamp() if not pd.isna(t) else None).astype("float64")
    table["end_ts"] = end_ts
    return table.drop(columns=["start", "end"])


@router.get("/api/runs")
def runs_json(request: Request, con=Depends(read_connection)):
    """Every run: name, user, host, folder, start/end (epoch s), duration, status, task counts."""
    return json_response({"runs": run_table(con, request.app.state.dashboard)})


@router.get("/")
def runs_page(request: Request, con=Depends(read_connection)):
    table = run_table(con, request.app.state.dashboard)
    return render(request, "runs.html", {"title": "Runs", "runs": table.to_dict("records")})
