"""Logs: every event of the store, filtered on any column, searched, paginated on the server
(`taskscope.analyses.logs`). Every value shown is a link that adds `column = value` to the filters."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request

from taskscope.analyses.logs import FILTERABLE, SHOWN, search
from taskscope.presenters.format import records
from taskscope.web.dashboard import read_connection
from taskscope.web.pages.runs import run_table
from taskscope.web.render import json_response, render

router = APIRouter()

_CONTROL = {"q", "page", "per_page", "desc"}


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
        "newest_first": newest_first, "refresh_live": False,  # logs.js works on the page as loaded
    })
