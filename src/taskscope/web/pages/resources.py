"""Resources: worker slots (total and busy) over time and CPU / memory per task try (the
numbers come from `taskscope.analyses.resources`, through the run's digest)."""

from __future__ import annotations

import duckdb
from fastapi import APIRouter, Depends, Request

from taskscope.analyses.runs import resolve_run
from taskscope.digests import section
from taskscope.web.dashboard import Dashboard, read_connection
from taskscope.presenters.figures import histogram_figure, steps_figure
from taskscope.web.pages.runs import run_row
from taskscope.web.render import json_response, render

router = APIRouter()


def resources_data(con: duckdb.DuckDBPyConnection, dashboard: Dashboard, run_id: str) -> dict:
    """Everything the resources page shows (and `/api/runs/{run}/resources` returns), from the
    run's digest or computed, kept until an ingest adds events."""
    parts = dashboard.cached(("resources", run_id), lambda: section(con, run_id, "resources"))
    totals = parts["capacity"].iloc[0].to_dict()
    monitored = int(totals.pop("monitored_tries"))
    measured = int(totals.pop("cpu_measured_tries"))
    return {"capacity": totals, **{name: frame for name, frame in parts.items() if name != "capacity"},
            "monitored_tries": monitored, "cpu_measured_tries": measured}


@router.get("/api/runs/{run}/resources")
def resources_json(request: Request, run: str, con=Depends(read_connection)):
    """Capacity totals, managers, slots over time, CPU / memory histograms of one run."""
    return json_response(resources_data(con, request.app.state.dashboard, resolve_run(con, run)))


@router.get("/runs/{run}/resources")
def resources_page(request: Request, run: str, con=Depends(read_connection)):
    run_id = resolve_run(con, run)
    data = resources_data(con, request.app.state.dashboard, run_id)
    charts = {
        "slots": steps_figure(data["slots"], "worker slots: total (from managers) and busy", "slots"),
        "cpu": histogram_figure(data["cpu_bins"], "CPU time per task try (user + system, last sample minus first)", "seconds"),
        "memory_mean": histogram_figure(data["memory_mean_bins"], "resident memory per task try (mean)", "MiB"),
        "memory_max": histogram_figure(data["memory_max_bins"], "resident memory per task try (peak)", "MiB"),
    }
    return render(request, "resources.html", {
        "title": "Resources", "run": run_row(con, request.app.state.dashboard, run_id),
        "capacity": data["capacity"], "hosts": data["hosts"].to_dict("records"),
        "managers": data["managers"].to_dict("records"),
        "monitored_tries": data["monitored_tries"], "cpu_measured_tries": data["cpu_measured_tries"], "charts": charts,
    })
