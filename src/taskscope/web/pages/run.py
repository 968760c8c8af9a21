"""Run: one run's summary: apps by final state, states over time, queues, the common path,
throughput, failure causes, and the executors / blocks / managers / workers it used."""

from __future__ import annotations

import duckdb
import pandas as pd
from fastapi import APIRouter, Depends, Request

from taskscope.analyses.between import missing_queues
from taskscope.analyses.runs import resolve_run
from taskscope.digests import section
from taskscope.web.dashboard import Dashboard, read_connection
from taskscope.presenters.figures import bar_figure, steps_figure, throughput_figure, waterfall_figure
from taskscope.web.pages.runs import run_row
from taskscope.web.render import json_response, render

router = APIRouter()

#: steps of the common path the run page draws (a task logging thousands of lines makes a path
#: of thousands of steps); the JSON has them all
COMMON_PATH_STEPS = 60


#: the parts of the digest's "run" section the page draws (the exact curves only go to the JSON)
PAGE_PARTS = ("infrastructure", "totals", "apps", "failures", "throughput", "states_sampled", "queues_sampled",
              "variants", "common_path")
JSON_PARTS = ("infrastructure", "totals", "apps", "failures", "throughput", "states", "queues", "variants",
              "common_path")


def run_data(con: duckdb.DuckDBPyConnection, dashboard: Dashboard, run_id: str,
             parts: tuple[str, ...] = JSON_PARTS) -> dict:
    """Everything the run page shows (and `/api/runs/{run}` returns), as DataFrames and dicts.

    The analyses come from the run's stored digest when it is current (see
    `taskscope.digests`), and are kept in memory until an ingest adds events.
    """
    frames = dashboard.cached(con, ("run", run_id, parts), lambda: section(con, run_id, "run", parts))
    return {
        "run": run_row(con, dashboard, run_id),
        "infrastructure": frames["infrastructure"].iloc[0].to_dict(),
        **{name: frame for name, frame in frames.items() if name != "infrastructure"},
    }


@router.get("/api/runs/{run:run_id}")
def run_json(request: Request, run: str, con=Depends(read_connection)):
    """One run: status, infrastructure, per-app outcomes, failures, throughput, states and
    queues over time (exact step functions), path variants and the common path's steps."""
    return json_response(run_data(con, request.app.state.dashboard, resolve_run(con, run)))


def ended_counts(apps: pd.DataFrame) -> dict[str, int]:
    """Tasks per final state that the run page links to the task list filtered by that state
    (the same counts as the list: both come from `taskscope.analyses.tasks.tasks`)."""
    return {state: int(apps[state].sum()) if state in apps else 0 for state in ("failed", "dep_fail")}


@router.get("/runs/{run:run_id}")
def run_page(request: Request, run: str, con=Depends(read_connection)):
    run_id = resolve_run(con, run)
    data = run_data(con, request.app.state.dashboard, run_id, PAGE_PARTS)
    apps = data["apps"]
    state_columns = [c for c in ("exec_done", "memo_done", "failed", "dep_fail", "unfinished") if c in apps]
    charts = {
        "apps": bar_figure(apps.app_name.tolist(), {c: apps[c].tolist() for c in state_columns},
                           "tasks per app by final state", "tasks"),
        "states": steps_figure(data["states_sampled"], "tasks in each state", "tasks"),
        "queues": steps_figure(data["queues_sampled"], "queues: tasks waiting, queued, running", "tasks"),
        "throughput": throughput_figure(data["throughput"], (data["run"].get("start_ts"), data["run"].get("end_ts"))),
        "common_path": waterfall_figure(data["common_path"].head(COMMON_PATH_STEPS)),
    }
    drawn_steps = min(len(data["common_path"]), COMMON_PATH_STEPS)
    path_height = max(300, 120 + 22 * drawn_steps)  # a short path still has room for its labels
    return render(request, "run.html", {
        "title": f"Run {data['run'].get('workflow_name') or ''} {run_id}".replace("  ", " "),
        "run": data["run"], "infra": data["infrastructure"],
        "totals": data["totals"].to_dict("records")[0] if not data["totals"].empty else {},
        "apps": apps.to_dict("records"), "failures": data["failures"].to_dict("records"),
        "ended": ended_counts(apps),
        "variants": data["variants"].to_dict("records"), "charts": charts, "path_height": path_height,
        "path_steps": len(data["common_path"]), "drawn_steps": drawn_steps,
        "missing_queues": request.app.state.dashboard.cached(con, ("missing queues", run_id),
                                                             lambda: missing_queues(con, run_id)),
    })
