"""Turning query results into pages and JSON: templates, value formatting, links.

Log text only ever reaches a page through Jinja2 autoescaping (never `|safe`) or, in the
browser, through `textContent`; chart data goes through `tojson`, which escapes `<`, `>`, `&`.
"""

from __future__ import annotations

import math
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import urlencode

import jinja2
import numpy as np
import orjson
import pandas as pd
from fastapi import Request
from fastapi.responses import HTMLResponse, Response

WEB_DIR = Path(__file__).parent
STATIC_DIR = WEB_DIR / "static"

_environment = jinja2.Environment(
    loader=jinja2.FileSystemLoader(WEB_DIR / "templates"),
    autoescape=True,
    trim_blocks=True,
    lstrip_blocks=True,
    undefined=jinja2.StrictUndefined,
)


def missing(value) -> bool:
    """True for None, NaN, NaT and pandas NA."""
    if value is None or value is pd.NaT or value is pd.NA:
        return True
    return isinstance(value, float) and math.isnan(value)


def clock(ts) -> str:
    """Seconds since the epoch as `YYYY-MM-DD HH:MM:SS.mmm` (UTC); empty when missing."""
    if missing(ts):
        return ""
    if isinstance(ts, (pd.Timestamp, datetime)):
        ts = ts.timestamp()
    return datetime.fromtimestamp(float(ts), timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def seconds(value, digits: int = 3) -> str:
    """A duration in seconds, readable: `0.012 s`, `4.5 min`, `2.1 h`."""
    if missing(value):
        return ""
    value = float(value)
    if abs(value) >= 7200:
        return f"{value / 3600:.1f} h"
    if abs(value) >= 120:
        return f"{value / 60:.1f} min"
    return f"{value:.{digits}f} s"


def cell(value) -> str:
    """Any table value as text (empty for missing, integers without `.0`)."""
    if missing(value):
        return ""
    if isinstance(value, (float, np.floating)):
        return str(int(value)) if float(value).is_integer() and abs(value) < 1e15 else f"{value:.6g}"
    return str(value)


def percent(fraction) -> str:
    """A fraction as a percentage with 3 significant digits: `0.307692` -> `30.8 %`; empty when missing."""
    if missing(fraction):
        return ""
    return f"{float(fraction) * 100:.3g} %"


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


_environment.filters.update(clock=clock, seconds=seconds, cell=cell, percent=percent)
_environment.globals.update(logs_url=logs_url, filter_url=filter_url, url_with=url_with, missing=missing)


def render(request: Request, template: str, context: dict, status_code: int = 200) -> HTMLResponse:
    """An HTML page from `template` with `context` (plus `request` and the dashboard's state)."""
    dashboard = request.app.state.dashboard
    page = _environment.get_template(template).render(
        request=request, watching=dashboard.watching, live=dashboard.live, **context
    )
    return HTMLResponse(page, status_code=status_code)


def records(frame: pd.DataFrame) -> list[dict]:
    """A DataFrame as JSON-ready rows (missing values as None)."""
    if frame.empty:
        return []
    return frame.astype(object).where(frame.notna(), None).to_dict("records")


def _default(value):
    if isinstance(value, (pd.Timestamp, datetime)):
        return value.isoformat()
    if isinstance(value, np.generic):
        return value.item()
    if missing(value):
        return None
    if isinstance(value, pd.DataFrame):
        return records(value)
    return str(value)


def json_response(data, status_code: int = 200) -> Response:
    """`data` (dicts, lists, DataFrames, numpy values) as a JSON response."""
    body = orjson.dumps(data, default=_default, option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS)
    return Response(body, status_code=status_code, media_type="application/json")
