"""Run: one run's summary: apps by final state, states over time, queues, the common path,
throughput, failure causes, and the executors / blocks / managers / workers it used."""

from __future__ import annotations

import duckdb
import pandas as pd
from fastapi import APIRouter, Depends, Request

from taskscope.analyses import states as states_module
from taskscope.analyses.between import standard_queues
from taskscope.analyses.common_path import common_path
from taskscope.analyses.summary import summary
from taskscope.queries import resolve_run
from taskscope.web.app import read_connection
from taskscope.web.figures import bar_figure, iso, steps_figure, time_layout, waterfall_figure
from taskscope.web.pages.resources import capacity
from taskscope.web.pages.runs import run_row
from taskscope.web.render import json_response, render

router = APIRouter()

_INFRASTRUCTURE = """
    SELECT count(DISTINCT executor_label) AS executors,
           count(DISTINCT (executor_label, block_id)) FILTER (WHERE block_id IS NOT NULL) AS blocks,
           count(DISTINCT manager_id) AS managers_seen,
           count(DISTINCT (manager_id, worker_id)) FILTER (WHERE worker_id IS NOT NULL) AS workers_seen,
           count(DISTINCT host) FILTER (WHERE source <> 'parsl') AS hosts,
           string_agg(DISTINCT executor_label, ', ' ORDER BY executor_label) AS executor_labels
    FROM events WHERE run_id = $run
"""


def infrastructure(con: duckdb.DuckDBPyConnection, run_id: str) -> dict:
    """Executors, blocks, managers, worker slots and hosts of a run, each counted once.

    `workers_seen` counts the distinct (manager, worker) slots that logged anything;
    `workers` is the managers' reported capacity (see `resources.capacity`).
    """
    row = con.execute(_INFRASTRUCTURE, {"run": run_id}).df().iloc[0].to_dict()
    totals = capacity(con, run_id)
    return {**row, "managers": max(totals["managers"], int(row["managers_seen"])),
            "workers": totals["workers"], "cpu_cores": totals["cpu_cores"]}


def _states_wide(con, run_id: str) -> pd.DataFrame:
    curve = states_module.states(con, run_id)
    if curve.empty:  # no DFK logs: monitoring.db only
        curve = states_module.states_from_monitoring(con, run_id)
    return states_module.states_wide(curve).drop(columns=["run_id", "step"], errors="ignore")


def _queues_wide(con, run_id: str) -> pd.DataFrame:
    long = standard_queues(con, run_id)
    if long.empty:
        return pd.DataFrame({"ts": pd.Series(dtype="float64")})
    wide = long.pivot_table(index="ts", columns="queue", values="count", aggfunc="last").sort_index()
    wide.columns.name = None
    return wide.ffill().fillna(0).reset_index()


def _throughput_figure(throughput: pd.DataFrame) -> dict:
    data = [{"type": "bar", "name": app, "x": iso(rows.bin_start_ts + rows.bin_s / 2), "y": rows.per_s.tolist()}
            for app, rows in throughput.groupby("app_name")]
    return {"data": data, "layout": time_layout("throughput: tasks completed per second", "tasks / s",
                                                barmode="stack", bargap=0)}


def run_data(con: duckdb.DuckDBPyConnection, dashboard, run_id: str) -> dict:
    """Everything the run page shows (and `/api/runs/{run}` returns), as DataFrames and dicts."""
    result = summary(con, run_id)
    path = common_path(con, run_id)
    return {
        "run": run_row(con, dashboard, run_id),
        "infrastructure": infrastructure(con, run_id),
        "totals": result.runs,
        "apps": result.apps,
        "failures": result.failures,
        "throughput": result.throughput,
        "states": _states_wide(con, run_id),
        "queues": _queues_wide(con, run_id),
        "variants": path.variants.head(10),
        "common_path": path.dominant,
    }


@router.get("/api/runs/{run}")
def run_json(request: Request, run: str, con=Depends(read_connection)):
    """One run: status, infrastructure, per-app outcomes, failures, throughput, states and
    queues over time (exact step functions), path variants and the common path's steps."""
    return json_response(run_data(con, request.app.state.dashboard, resolve_run(con, run)))


@router.get("/runs/{run}")
def run_page(request: Request, run: str, con=Depends(read_connection)):
    run_id = resolve_run(con, run)
    data = run_data(con, request.app.state.dashboard, run_id)
    apps = data["apps"]
    state_columns = [c for c in ("exec_done", "memo_done", "failed", "dep_fail", "unfinished") if c in apps]
    charts = {
        "apps": bar_figure(apps.app_name.tolist(), {c: apps[c].tolist() for c in state_columns},
                           "tasks per app by final state", "tasks"),
        "states": steps_figure(data["states"], "tasks in each state", "tasks"),
        "queues": steps_figure(data["queues"], "queues: tasks waiting, queued, running", "tasks"),
        "throughput": _throughput_figure(data["throughput"]),
        "common_path": waterfall_figure(data["common_path"]),
    }
    path_height = 120 + 22 * len(data["common_path"])
    return render(request, "run.html", {
        "title": f"Run {data['run'].get('workflow_name') or ''} {run_id}".replace("  ", " "),
        "run": data["run"], "infra": data["infrastructure"],
        "totals": data["totals"].to_dict("records")[0] if not data["totals"].empty else {},
        "apps": apps.to_dict("records"), "failures": data["failures"].to_dict("records"),
        "variants": data["variants"].to_dict("records"), "charts": charts, "path_height": path_height,
    })
