"""Logs: every event of the store, filtered on any column, searched, paginated on the server.
Every value shown is a link that adds `column = value` to the filters."""

from __future__ import annotations

import math

import duckdb
from fastapi import APIRouter, Depends, Request

from taskscope.presenters.format import records
from taskscope.schema import EVENT_COLUMNS
from taskscope.web.dashboard import read_connection
from taskscope.web.pages.runs import run_table
from taskscope.web.render import json_response, render

router = APIRouter()

#: columns a filter may name, with their SQL type (user values are cast, never pasted)
FILTERABLE: dict[str, str] = {name: sql_type for name, sql_type in EVENT_COLUMNS
                              if name not in ("ts", "attrs", "file_id")}
#: what the table shows, in this order
SHOWN = ["ts", "source", "level", "event", "message", "run_id", "task_id", "try_id", "app_name", "task_state",
         "executor_label", "executor_task_id", "block_id", "manager_id", "worker_id", "host", "pid", "thread",
         "logger", "file", "line"]
MAX_PER_PAGE = 1000
_CONTROL = {"q", "page", "per_page", "desc"}


def where_clause(filters: dict[str, str], text: str | None) -> tuple[str, list]:
    """SQL condition and parameters for `filters` (column -> value, exact) and `text` (a
    case-insensitive substring of the message)."""
    conditions, params = [], []
    for column, value in filters.items():
        if column not in FILTERABLE:
            raise ValueError(f"cannot filter on {column!r}; columns: {', '.join(FILTERABLE)}")
        conditions.append(f'"{column}" = TRY_CAST(? AS {FILTERABLE[column]})')
        params.append(value)
    if text:
        conditions.append("contains(lower(message), lower(?))")
        params.append(text)
    return (" AND ".join(conditions) or "true"), params


def search(con: duckdb.DuckDBPyConnection, filters: dict[str, str], text: str | None = None,
           page: int = 1, per_page: int = 100, newest_first: bool = False) -> dict:
    """One page of matching events in time order: `rows`, `total`, `page`, `pages`.

    >>> search(con, {"manager_id": "36094ce03926"}, "Sent tasks")["total"]  # doctest: +SKIP
    """
    where, params = where_clause(filters, text)
    total = con.execute(f"SELECT count(*) FROM events WHERE {where}", params).fetchall()[0][0]
    per_page = max(1, min(per_page, MAX_PER_PAGE))
    pages = max(1, math.ceil(total / per_page))
    page = max(1, min(page, pages))
    order = "DESC" if newest_first else "ASC"
    rows = con.execute(
        f"""SELECT {", ".join(f'"{c}"' for c in SHOWN)}, attrs FROM events WHERE {where}
            ORDER BY ts {order}, file {order}, line {order} LIMIT ? OFFSET ?""",
        [*params, per_page, (page - 1) * per_page],
    ).df()
    return {"rows": rows, "total": int(total), "page": page, "pages": pages, "per_page": per_page}


def _split(request: Request) -> tuple[dict[str, str], str | None, int, int, bool]:
    query = request.query_params
    filters = {k: v for k, v in query.items() if k not in _CONTROL and v != ""}
    page = int(query.get("page") or 1) if (query.get("page") or "1").isdigit() else 1
    per_page = int(query.get("per_page") or 100) if (query.get("per_page") or "100").isdigit() else 100
    return filters, (query.get("q") or None), page, per_page, query.get("desc") in ("1", "true")


@router.get("/api/logs")
def logs_json(request: Request, con=Depends(read_connection)):
    """Events matching every `COLUMN=VALUE` parameter (any events column but ts and attrs) and
    `q` (substring of the message, any case); `page`, `per_page` (≤ 1000), `desc=true` for
    newest first."""
    filters, text, page, per_page, newest_first = _split(request)
    try:
        result = search(con, filters, text, page, per_page, newest_first)
    except ValueError as exc:
        return json_response({"error": str(exc)}, status_code=400)
    return json_response({**result, "rows": records(result["rows"]), "filters": filters, "q": text})


@router.get("/logs")
def logs_page(request: Request, con=Depends(read_connection)):
    filters, text, page, per_page, newest_first = _split(request)
    error = None
    try:
        result = search(con, filters, text, page, per_page, newest_first)
    except ValueError as exc:
        error, filters = str(exc), {k: v for k, v in filters.items() if k in FILTERABLE}
        result = search(con, filters, text, page, per_page, newest_first)
    run = None
    if "run_id" in filters:
        table = run_table(con, request.app.state.dashboard)
        matches = table[table.run_id == filters["run_id"]]
        run = matches.iloc[0].to_dict() if not matches.empty else None
    return render(request, "logs.html", {
        "title": "Logs", "run": run, "result": result, "rows": result["rows"].to_dict("records"),
        "filters": filters, "q": text or "", "error": error, "columns": SHOWN, "filterable": list(FILTERABLE),
        "newest_first": newest_first,
    })
