"""Usage: who runs which versions where, from the messages `taskscope usage collect` stored
(events with `source = 'usage'`).

Every number on the page comes from a `taskscope.usage.reports` report; `/api/usage` returns
them all and `/api/usage/{report}` one of them (the names of `usage_reports.REPORTS`; `.json` or
`.csv` after the name for that format, the CSV as `taskscope usage report --format csv` prints it),
with the same query parameters as the page: `product`, `since` and `until` (UTC dates), `period`
(of runs over time), `weeks` (of adoption). Installation ages use the release-date table the
environment variable TASKSCOPE_USAGE_RELEASES names (see `usage_reports.release_dates`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import duckdb
import pandas as pd
from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import Response

from taskscope.usage import reports as usage_reports
from taskscope.web.dashboard import Dashboard, read_connection
from taskscope.presenters.figures import bar_figure, plot_text
from taskscope.presenters.format import csv_text, records
from taskscope.web.render import json_response, render

router = APIRouter()

#: the reports the page shows (every one but the list of runs, which `/api/usage/runs` gives)
PAGE_REPORTS = [name for name in usage_reports.REPORTS if name != "runs"]


@dataclass(frozen=True)
class UsageSelection:
    """The query parameters of the page and its JSON endpoints, checked."""

    product: str | None
    since: str | None
    period: str
    weeks: int
    until: str | None = None

    @property
    def since_ts(self) -> float | None:
        """`since` as epoch seconds."""
        return usage_reports.parse_since(self.since) if self.since else None

    @property
    def until_ts(self) -> float | None:
        """`until` as epoch seconds."""
        return usage_reports.parse_since(self.until, "until") if self.until else None


def usage_selection(product: str | None = None, since: str | None = None, period: str = "week",
                    weeks: int = Query(12, ge=1, le=104), until: str | None = None) -> UsageSelection:
    """FastAPI dependency: `product` (e.g. parsl), `since` and `until` (2026-01-31: runs dated
    from `since` and before `until`), `period` of runs over time (hour, day, week, month,
    quarter, year), `weeks` of adoption (1-104); 400 when invalid."""
    selection = UsageSelection(product or None, since or None, period, weeks, until or None)
    if period not in usage_reports.PERIODS:
        raise HTTPException(400, f"period must be one of {', '.join(usage_reports.PERIODS)}, not {period!r}")
    try:
        selection.since_ts, selection.until_ts
    except ValueError as exc:
        raise HTTPException(400, str(exc)) from None  # it names the bound it refuses
    return selection


def cached_report(con: duckdb.DuckDBPyConnection, dashboard: Dashboard, name: str,
                  selection: UsageSelection) -> pd.DataFrame:
    """`usage_reports.report` under `selection`, computed once per state of the store (the one
    `con`, a reader's connection, sees: see `Dashboard.cached`).

    >>> cached_report(con, dashboard, "leaderboard", UsageSelection("parsl", None, "week", 12))  # doctest: +SKIP
    """
    key = ("usage", name, selection)
    return dashboard.cached(con, key, lambda: usage_reports.report(
        con, name, product=selection.product, since=selection.since_ts, until=selection.until_ts,
        period=selection.period, weeks=selection.weeks), size=64)


def collected(con: duckdb.DuckDBPyConnection, dashboard: Dashboard) -> dict:
    """What the store holds overall: usage `messages`, `rejected` datagrams (when the collector
    wrote the store), and the `products` seen."""
    every_run = cached_report(con, dashboard, "over-time", UsageSelection(None, None, "year", 12))
    return {**usage_reports.stored_messages(con),
            "products": sorted(every_run["product"].dropna().unique().tolist())}


def usage_data(con: duckdb.DuckDBPyConnection, dashboard: Dashboard, selection: UsageSelection) -> dict:
    """Everything the page shows (and `/api/usage` returns): `collected`, `summary`, `reports`."""
    with usage_reports.snapshot(con):  # one view of the store, its runs table checked once
        reports = {name: cached_report(con, dashboard, name, selection) for name in PAGE_REPORTS}
        overall = collected(con, dashboard)
    totals = reports["totals"].iloc[0]
    summary = {"runs": int(totals.runs), "projects": len(reports["leaderboard"]),
               "points": int(reports["leaderboard"].points.sum()) if not reports["leaderboard"].empty else 0,
               "level3_runs": int(totals.level3_runs), "level3_unfinished": int(totals.level3_unfinished),
               "tasks": int(totals.tasks), "failures": int(totals.failures),
               "execution_hours": float(totals.execution_hours),
               "runs_with_invalid_fields": int(totals.runs_with_invalid_fields)}
    return {"collected": overall, "summary": summary, "reports": reports}


#: characters of a label a chart shows; the whole label is in its hover text
LABEL_CHARS = 28


def short_label(text: str, limit: int = LABEL_CHARS) -> str:
    """`text` cut to `limit` characters, keeping its end (a class name, a version), marked with "…".

    >>> short_label("parsl.executors.high_throughput.executor.HighThroughputExecutor")
    '…utor.HighThroughputExecutor'
    """
    return text if len(text) <= limit else "…" + text[-(limit - 1):]


def _category_axis(figure: dict, labels: list[str], title: str | None = None) -> dict:
    """A category x axis whose ticks show `labels` shortened (the bars keep the whole text for hover)."""
    figure["layout"]["xaxis"] = {"type": "category", "automargin": True,
                                 "tickvals": [plot_text(label) for label in labels],  # as bar_figure sends x
                                 "ticktext": [plot_text(short_label(label)) for label in labels]}
    if title:
        figure["layout"]["xaxis"]["title"] = {"text": title}
    return figure


def _bars(frame: pd.DataFrame, x: str, title: str, y: str = "runs") -> dict:
    labels = frame[x].astype(str).tolist()  # "3.10" and level "1" are labels, not numbers
    return _category_axis(bar_figure(labels, {y: frame[y].tolist()}, title, y), labels)


_PERIOD_FORMATS = {"hour": "%Y-%m-%d %H:00", "day": "%Y-%m-%d", "week": "%Y-%m-%d", "month": "%Y-%m",
                   "quarter": "%Y-%m", "year": "%Y"}


def _over_time(frame: pd.DataFrame, period: str) -> dict:
    if frame.empty:
        return bar_figure([], {}, f"runs per {period}", "runs")
    wide = frame.pivot_table(index="period", columns="product", values="runs", aggfunc="sum", fill_value=0)
    # periods as labels: a date axis with one or two periods draws ticks like 23:59:59.9996
    x = [stamp.strftime(_PERIOD_FORMATS[period]) for stamp in wide.index]
    figure = bar_figure(x, {str(product): wide[product].tolist() for product in wide.columns}, f"runs per {period}",
                        "runs")
    return _category_axis(figure, x, f"{period} starting (UTC)")


def charts(reports: dict[str, pd.DataFrame], selection: UsageSelection) -> dict:
    """The page's Plotly figures, from `usage_data`'s reports."""
    components = reports["components"].head(30)
    return {
        "over_time": _over_time(reports["over-time"], selection.period),
        "python": _bars(reports["python"], "python_version", "Python versions"),
        "versions": _bars(reports["versions"].assign(label=reports["versions"]["product"] + " "
                                                    + reports["versions"]["version"]), "label", "product versions"),
        "platforms": _bars(reports["platforms"], "platform", "platforms"),
        "levels": _bars(reports["levels"], "tracking_level", "tracking levels"),
        "components": _bars(components, "component", "components (executors, providers, launchers, ...)"),
        "execution_times": _bars(reports["execution-times"], "bucket", "execution time of level-3 runs"),
        "task_counts": _bars(reports["task-counts"], "bucket", "tasks per level-3 run"),
        "installation_age": _bars(reports["installation-age"], "bucket",
                                  "age of installations: run time minus its version's release date"),
    }


@router.get("/api/usage")
def usage_json(request: Request, selection: UsageSelection = Depends(usage_selection), con=Depends(read_connection)):
    """Every usage report (all of `usage_reports.REPORTS` but the run list), with the overall counts."""
    data = usage_data(con, request.app.state.dashboard, selection)
    return json_response({"filters": asdict(selection), "collected": data["collected"], "summary": data["summary"],
                          "reports": {name: records(frame) for name, frame in data["reports"].items()}})


@router.get("/api/usage/{name}")
def usage_report_json(request: Request, name: str, selection: UsageSelection = Depends(usage_selection),
                      con=Depends(read_connection)):
    """One usage report by name (runs, over-time, python, versions, platforms, components, levels,
    execution-times, task-counts, failures, leaderboard, installation-age, adoption, totals,
    unfinished, invalid), as JSON; `NAME.csv` gives it as CSV, `NAME.json` as JSON."""
    name, _, suffix = name.partition(".") if name.endswith((".csv", ".json")) else (name, "", "json")
    frame = cached_report(con, request.app.state.dashboard, name, selection)
    if suffix == "csv":
        return Response(csv_text(frame), media_type="text/csv")
    return json_response({"filters": asdict(selection), "report": name, "rows": records(frame)})


@router.get("/usage")
def usage_page(request: Request, selection: UsageSelection = Depends(usage_selection), con=Depends(read_connection)):
    data = usage_data(con, request.app.state.dashboard, selection)
    reports = data["reports"]
    return render(request, "usage.html", {
        "title": "Usage", "selection": selection, "periods": usage_reports.PERIODS, "collected": data["collected"],
        "summary": data["summary"], "charts": charts(reports, selection) if data["collected"]["messages"] else {},
        "tables": {name: frame.to_dict("records") for name, frame in reports.items()},
        "api_url": "/api/usage" + (f"?{request.url.query}" if request.url.query else ""),
    })
