"""Turning query results into pages and JSON: templates, links (values read as in
`taskscope.presenters.format`, shared with the CLI).

Log text only ever reaches a page through Jinja2 autoescaping (never `|safe`) or, in the
browser, through `textContent`; chart data goes through `tojson`, which escapes `<`, `>`, `&`.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlencode

import jinja2
import plotly
from fastapi import Request
from fastapi.responses import HTMLResponse, Response

from taskscope.presenters.format import cell, clock, json_bytes, missing, percent, seconds, short_run_id
from taskscope.web.ids import url_id

WEB_DIR = Path(__file__).parent
STATIC_DIR = WEB_DIR / "static"
#: where pages load plotly.js: named by its version, so browsers may keep it for a year
#: (served by `taskscope.web.app.mount_static`)
PLOTLY_JS_URL = f"/static/plotly-{plotly.__version__}.min.js"
#: what each run status (`taskscope.analyses.runs.RUN_STATUSES`) says, as the pages explain it:
#: `failed` counts dep_fail tasks too, as the runs table's "failed or dep_fail" column does
RUN_STATUS_MEANINGS = {
    "completed": "ended, no task failed or dep_fail",
    "failed": "ended with tasks failed or dep_fail",
    "live": "not ended and still logging",
    "unfinished": "not ended: killed, abandoned or running where this dashboard does not ingest",
}

_environment = jinja2.Environment(
    loader=jinja2.FileSystemLoader(WEB_DIR / "templates"),
    autoescape=True,
    trim_blocks=True,
    lstrip_blocks=True,
    undefined=jinja2.StrictUndefined,
)


def logs_url(**filters) -> str:
    """The log explorer's URL filtered by `filters` (missing values left out)."""
    kept = {k: cell(v) for k, v in filters.items() if not missing(v) and cell(v) != ""}
    return "/logs" + ("?" + urlencode(kept) if kept else "")


def filter_url(scope: dict, column: str, value) -> str:
    """The log explorer filtered by `scope` (e.g. the run) and `column` = `value`."""
    return logs_url(**{**scope, column: value})


def url_with(request: Request, **changes) -> str:
    """This page's URL with some query parameters changed (None removes one)."""
    params = dict(request.query_params)
    for key, value in changes.items():
        if value is None:
            params.pop(key, None)
        else:
            params[key] = str(value)
    return request.url.path + ("?" + urlencode(params) if params else "")


def has_points(figure: dict) -> bool:
    """True if one of the Plotly `figure`'s traces has a point to draw.

    >>> has_points({"data": [{"type": "bar", "x": [], "y": []}]}), has_points({"data": [{"x": [1], "y": [2]}]})
    (False, True)
    """
    return any(len(trace.get("x") or trace.get("y") or ()) for trace in figure.get("data", ()))


def figure_title(figure: dict) -> str:
    """The title text of a Plotly `figure` ("chart" without one)."""
    title = figure.get("layout", {}).get("title") or {}
    return (title.get("text") if isinstance(title, dict) else str(title)) or "chart"


#: what the shared templates (`base.html`, `_macros.html`) use: every environment rendering them
#: installs these (the fleet pages' too, which extend them)
SHARED_FILTERS = {"clock": clock, "seconds": seconds, "cell": cell, "percent": percent, "url_id": url_id,
                  "short_run": short_run_id}
SHARED_GLOBALS = {"missing": missing, "has_points": has_points, "figure_title": figure_title}

_environment.filters.update(SHARED_FILTERS)
_environment.globals.update(SHARED_GLOBALS, logs_url=logs_url, filter_url=filter_url, url_with=url_with,
                            plotly_js_url=PLOTLY_JS_URL, run_status_meanings=RUN_STATUS_MEANINGS)


def render(request: Request, template: str, context: dict, status_code: int = 200) -> HTMLResponse:
    """An HTML page from `template` with `context` (plus `request` and the dashboard's state)."""
    dashboard = request.app.state.dashboard
    # the generation of the store state the request read (`read_connection`): live.js swaps in
    # the next page when an ingest adds more
    generation = getattr(request.state, "generation", dashboard.generation)
    page = _environment.get_template(template).render(
        request=request, watching=dashboard.watching, live=dashboard.live, generation=generation, **context
    )
    return HTMLResponse(page, status_code=status_code)


def json_response(data, status_code: int = 200) -> Response:
    """`data` (dicts, lists, DataFrames, numpy values) as a JSON response."""
    return Response(json_bytes(data), status_code=status_code, media_type="application/json")
