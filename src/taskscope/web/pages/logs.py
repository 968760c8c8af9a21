"""Logs: every event of the store, filtered on any column, searched, paginated on the server
(`taskscope.analyses.logs`). Every value shown is a link that adds `column = value` to the
filters (keeping the text search and the chosen columns); the table shows a chosen set of
columns (8 by default), each message's first line, and a click on a row opens all of the
event's columns and attrs (static/logs.js, from the rows embedded as JSON)."""

from __future__ import annotations

import json
import posixpath

import pandas as pd
from fastapi import APIRouter, Depends, Request

from taskscope.analyses.logs import COLUMNS, DEFAULT_COLUMNS, FILTERABLE, MAX_PER_PAGE, choose_columns, search
from taskscope.presenters.format import cell, clock, missing, records
from taskscope.web.dashboard import read_connection
from taskscope.web.pages.runs import run_table
from taskscope.web.render import json_response, render

router = APIRouter()

_CONTROL = {"q", "page", "per_page", "desc", "cols"}
#: each column's width in the table (em); the message takes the rest
WIDTHS = {"ts": 7.5, "source": 6.5, "level": 4.8, "event": 12, "run_id": 5.6, "task_id": 5, "try_id": 3,
          "pid": 4.5, "file:line": 15, "template": 13, "logger": 11, "thread": 8, "app_name": 7}
OTHER_WIDTH = 6.5
MESSAGE_MIN_WIDTH = 28


def _split(request: Request) -> tuple[dict[str, str], str | None, bool]:
    """The query's filters, text and order (newest first)."""
    query = request.query_params
    filters = {k: v for k, v in query.items() if k not in _CONTROL and v != ""}
    return filters, (query.get("q") or None), query.get("desc") in ("1", "true")


def _paging(request: Request) -> tuple[int, int]:
    """The query's page and page size; raises ValueError for one that is not a whole number in
    range (it was quietly taken as another: `per_page=0` as 1, `-5` as 100)."""
    query = request.query_params
    return (_whole_number(query.get("page"), "page", 1),
            _whole_number(query.get("per_page"), "per_page", 100, MAX_PER_PAGE))


def _whole_number(text: str | None, name: str, default: int, highest: int | None = None) -> int:
    """`text` as a whole number from 1 (to `highest`), `default` when not given.

    >>> _whole_number(None, "page", 1), _whole_number("7", "page", 1)
    (1, 7)
    """
    if text in (None, ""):
        return default
    if not text.isdigit() or int(text) < 1 or (highest is not None and int(text) > highest):
        limits = f"from 1 to {highest}" if highest is not None else "from 1"
        raise ValueError(f"{name} must be a whole number {limits}, not {text!r}")
    return int(text)


@router.get("/api/logs")
def logs_json(request: Request, con=Depends(read_connection)):
    """Events matching every `COLUMN=VALUE` parameter (any events column but ts and attrs) and
    `q` (substring of the message, any case); `page`, `per_page` (≤ 1000), `desc=true` for
    newest first."""
    filters, text, newest_first = _split(request)
    try:
        page, per_page = _paging(request)
        result = search(con, filters, text, page, per_page, newest_first)
    except ValueError as exc:
        return json_response({"error": str(exc)}, status_code=400)
    return json_response({**result, "rows": records(result["rows"]), "filters": filters, "q": text})


def table_rows(rows: pd.DataFrame) -> list[dict]:
    """The events as the table shows them: each value as text, the message's first line and
    how many lines follow, the file's name (its path in `file`).

    >>> table_rows(pd.DataFrame({"ts": [0.0], "message": ["Config(\\n  a=1\\n)"], "file": ["000/parsl.log"],
    ...                          "line": [7.0], "attrs": [None]}))[0]["first_line"]
    'Config('
    """
    shown = []
    for row in rows.to_dict("records"):
        lines = cell(row.get("message")).split("\n")
        shown.append({**{c: cell(v) for c, v in row.items() if c != "ts"}, "ts": clock(row.get("ts")),
                      "first_line": lines[0], "more_lines": len(lines) - 1,
                      "file_name": posixpath.basename(cell(row.get("file")))})
    return shown


def event_details(rows: pd.DataFrame) -> list[dict]:
    """For each event, what its detail view shows: `columns` ([name, text] of every column that
    has a value), `attrs` ([key, text], values that are not text as JSON) and the whole `message`.

    >>> event_details(pd.DataFrame({"ts": [0.0], "message": ["hi"], "level": ["INFO"], "host": [None],
    ...                             "attrs": ['{"n": 3}']}))[0]["attrs"]
    [['n', '3']]
    """
    details = []
    for row in rows.to_dict("records"):
        columns = [[c, clock(v) if c == "ts" else cell(v)] for c, v in row.items()
                   if c not in ("attrs", "message") and not missing(v) and cell(v) != ""]
        details.append({"columns": columns, "attrs": _attrs(row.get("attrs")), "message": cell(row.get("message"))})
    return details


def _attrs(value) -> list[list[str]]:
    if missing(value) or value in ("", "{}"):
        return []
    try:
        parsed = json.loads(value) if isinstance(value, str) else value
    except ValueError:
        return [["attrs", str(value)]]
    if not isinstance(parsed, dict):
        return [["attrs", json.dumps(parsed)]]
    return [[str(k), v if isinstance(v, str) else json.dumps(v, default=str)] for k, v in parsed.items()]


def _kept(filters: dict[str, str], text: str | None, columns: list[str], per_page: int,
          newest_first: bool) -> dict[str, str]:
    """The query a filter link keeps: the filters, the text search, the chosen columns, the order."""
    kept = dict(filters, q=text or "")
    if columns != choose_columns([], filters):
        kept["cols"] = ",".join(columns)
    if per_page != 100:
        kept["per_page"] = str(per_page)
    if newest_first:
        kept["desc"] = "true"
    return kept


@router.get("/logs")
def logs_page(request: Request, con=Depends(read_connection)):
    error, status_code = None, 200
    filters, text, newest_first = _split(request)
    try:
        page, per_page = _paging(request)
    except ValueError as exc:  # a bad page or page size: 400, as /api/logs answers, with the first page
        (error, status_code), (page, per_page) = (str(exc), 400), (1, 100)
    try:
        result = search(con, filters, text, page, per_page, newest_first)
    except ValueError as exc:
        # a bad parameter: 400, as /api/logs answers, with the page of the valid filters
        error, status_code = str(exc), 400
        filters = {k: v for k, v in filters.items() if k in FILTERABLE}
        result = search(con, filters, text, page, per_page, newest_first)
    columns = choose_columns(request.query_params.getlist("cols"), filters)
    run = None
    if "run_id" in filters:
        table = run_table(con, request.app.state.dashboard)
        matches = table[table.run_id == filters["run_id"]]
        run = matches.iloc[0].to_dict() if not matches.empty else None
    widths = {c: WIDTHS.get(c, OTHER_WIDTH) for c in columns if c != "message"}
    return render(request, "logs.html", {
        "title": "Logs", "run": run, "result": result, "rows": table_rows(result["rows"]),
        "details": event_details(result["rows"]), "filters": filters, "q": text or "", "error": error,
        "columns": columns, "all_columns": COLUMNS, "default_columns": DEFAULT_COLUMNS, "widths": widths,
        "table_min_width": sum(widths.values()) + MESSAGE_MIN_WIDTH, "filterable": list(FILTERABLE),
        "kept": _kept(filters, text, columns, result["per_page"], newest_first),
        "newest_first": newest_first, "refresh_live": False,  # logs.js works on the page as loaded
    }, status_code=status_code)
