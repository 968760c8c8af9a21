"""Resources: worker slots (total and busy) over time, CPU and memory in use over time per host
against the hosts' capacity, and CPU / memory per task try (the numbers come from
`taskscope.analyses.resources`, through the run's digest, and `taskscope.analyses.utilization`)."""

from __future__ import annotations

import duckdb
from fastapi import APIRouter, Depends, Request

from taskscope.analyses.resources import utilization
from taskscope.analyses.runs import resolve_run
from taskscope.analyses.utilization import utilization_totals
from taskscope.digests import section
from taskscope.presenters.figures import (
    histogram_figure,
    iso,
    plot_text,
    steps_figure,
    time_layout,
)
from taskscope.web.dashboard import Dashboard, read_connection
from taskscope.web.pages.runs import run_row
from taskscope.web.render import json_response, render

router = APIRouter()


def _parts(con: duckdb.DuckDBPyConnection, dashboard: Dashboard, run_id: str) -> dict:
    """`taskscope.analyses.resources.resources` of the run, from its digest or computed, kept
    until an ingest adds events."""
    return dashboard.cached(con, ("resources", run_id), lambda: section(con, run_id, "resources"))


def resources_data(con: duckdb.DuckDBPyConnection, dashboard: Dashboard, run_id: str) -> dict:
    """Everything the resources page shows (and `/api/runs/{run}/resources` returns) but the
    use over time (`utilization_data`)."""
    parts = _parts(con, dashboard, run_id)
    totals = parts["capacity"].iloc[0].to_dict()
    monitored = int(totals.pop("monitored_tries"))
    measured = int(totals.pop("cpu_measured_tries"))
    return {"capacity": totals, **{name: frame for name, frame in parts.items() if name not in ("capacity", "utilization")},
            "monitored_tries": monitored, "cpu_measured_tries": measured}


def utilization_data(con: duckdb.DuckDBPyConnection, dashboard: Dashboard, run_id: str) -> dict:
    """CPU and memory in use over time (`/api/runs/{run}/utilization`): `bin_s`, `cpu_s` (in
    all), `hosts` (per host per bin) and `total` (per bin, all hosts), from the run's digest
    (computed when a digest of an older taskscope lacks it)."""
    def compute() -> dict:
        per_host = _parts(con, dashboard, run_id).get("utilization")
        per_host = utilization(con, run_id) if per_host is None else per_host
        return {"bin_s": float(per_host.bin_s.iloc[0]) if not per_host.empty else None,
                "cpu_s": float(per_host.cpu_s.sum()), "hosts": per_host, "total": utilization_totals(per_host)}

    return dashboard.cached(con, ("utilization", run_id), compute)


def _use_figure(data: dict, column: str, capacity: str, scale: float, title: str, unit: str) -> dict:
    """Step lines of `column` over time (each bin's value from its start to its end), one per
    host (and the total when there are several), each with its capacity as a dashed line (shown
    from the legend only while use stays under a tenth of it, so that the use is readable)."""
    per_host, total = data["hosts"], data["total"]
    lines = [(str(host), rows) for host, rows in per_host.groupby("host", sort=True)]
    if len(lines) > 1:
        lines.append(("all hosts", total))
    traces = []
    for name, rows in lines:
        x = iso([*rows.bin_start_ts, rows.bin_start_ts.iloc[-1] + rows.bin_s.iloc[-1]])
        used = (rows[column] / scale).round(4).tolist()
        traces.append({"type": "scatter", "mode": "lines", "line": {"shape": "hv"}, "name": plot_text(f"{name}: in use"),
                       "x": x, "y": [*used, used[-1]]})
        if rows[capacity].notna().any():
            limit = float(rows[capacity].max()) / scale
            traces.append({"type": "scatter", "mode": "lines", "line": {"dash": "dash"}, "x": [x[0], x[-1]],
                           "y": [limit, limit], "name": plot_text(f"{name}: capacity {limit:.4g} {unit}"),
                           **({} if max(used) >= limit / 10 else {"visible": "legendonly"})})
    return {"data": traces, "layout": time_layout(title, unit)}


def utilization_charts(data: dict) -> dict:
    """The CPU and memory over time charts of the resources page (empty without samples)."""
    if data["hosts"].empty:
        return {}
    width = data["bin_s"]
    return {"cpu_use": _use_figure(data, "cpu_cores", "capacity_cpu_cores", 1,
                                   f"CPU in use by sampled worker processes (mean per {width:g} s)", "cores"),
            "memory_use": _use_figure(data, "memory_bytes", "capacity_memory_bytes", 1073741824,
                                      f"resident memory of sampled worker processes (mean per {width:g} s)", "GiB")}


@router.get("/api/runs/{run:run_id}/utilization")
def utilization_json(request: Request, run: str, con=Depends(read_connection)):
    """CPU and memory in use over time per host and in total, with each host's capacity."""
    return json_response(utilization_data(con, request.app.state.dashboard, resolve_run(con, run)))


@router.get("/api/runs/{run:run_id}/resources")
def resources_json(request: Request, run: str, con=Depends(read_connection)):
    """Capacity totals, managers, slots over time, CPU / memory histograms of one run."""
    return json_response(resources_data(con, request.app.state.dashboard, resolve_run(con, run)))


@router.get("/runs/{run:run_id}/resources")
def resources_page(request: Request, run: str, con=Depends(read_connection)):
    run_id = resolve_run(con, run)
    data = resources_data(con, request.app.state.dashboard, run_id)
    charts = {
        "slots": steps_figure(data["slots"], "worker slots: total (from managers) and busy", "slots"),
        "cpu": histogram_figure(data["cpu_bins"], "CPU time per task try (user + system, last sample minus first)", "seconds",
                                "task tries"),
        "memory_mean": histogram_figure(data["memory_mean_bins"], "resident memory per task try (mean)", "MiB", "task tries"),
        "memory_max": histogram_figure(data["memory_max_bins"], "resident memory per task try (peak)", "MiB", "task tries"),
    }
    use = utilization_data(con, request.app.state.dashboard, run_id)
    charts.update(utilization_charts(use))
    return render(request, "resources.html", {
        "title": "Resources", "run": run_row(con, request.app.state.dashboard, run_id),
        "capacity": data["capacity"], "hosts": data["hosts"].to_dict("records"),
        "managers": data["managers"].to_dict("records"),
        "monitored_tries": data["monitored_tries"], "cpu_measured_tries": data["cpu_measured_tries"], "charts": charts,
        "use_bin_s": use["bin_s"], "use_cpu_s": use["cpu_s"],
    })
