"""Compare: two runs side by side, step by step of the common path (`taskscope.analyses.compare`)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request

from taskscope.analyses.compare import compare
from taskscope.analyses.runs import resolve_run
from taskscope.web.dashboard import read_connection
from taskscope.web.pages.runs import run_table
from taskscope.web.render import json_response, render

router = APIRouter()


@router.get("/api/compare")
def compare_json(a: str, b: str, con=Depends(read_connection)):
    """Run `b` against run `a` (ids, prefixes or folder names): one row per common-path step,
    then task duration and the end rate (tasks ended per second), with medians, A's spread and whether it changed."""
    run_a, run_b = resolve_run(con, a), resolve_run(con, b)
    return json_response({"a": run_a, "b": run_b, "rows": compare(con, run_a, run_b)})


@router.get("/compare")
def compare_page(request: Request, a: str | None = None, b: str | None = None, con=Depends(read_connection)):
    runs = run_table(con, request.app.state.dashboard)
    context = {"title": "Compare runs", "runs": runs.to_dict("records"), "a": a or "", "b": b or "", "rows": None}
    if a and b:
        run_a, run_b = resolve_run(con, a), resolve_run(con, b)
        context.update(a=run_a, b=run_b, rows=compare(con, run_a, run_b).to_dict("records"))
    return render(request, "compare.html", context)
