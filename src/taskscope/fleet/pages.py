"""The fleet pages: login, team overview, clusters, one cluster (Dask or Parsl).

A visitor logs in with an API token; the token goes into an HttpOnly, SameSite=Strict cookie and is
hashed and looked up again on every request (the server never stores it in clear). Every page reads
only the logged-in account, through `taskscope.fleet.reads`. Text from clusters (code, tracebacks,
event messages) reaches a page only through Jinja2 autoescaping; chart labels through `plot_text`.
"""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import parse_qs

import jinja2
import pandas as pd
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse

from taskscope.fleet import profiles, reads
from taskscope.fleet.auth import SESSION_COOKIE, Caller, page_caller
from taskscope.fleet.protocol import DEFAULT_SINCE
from taskscope.fleet.security import same_origin
from taskscope.presenters.figures import bar_figure, gantt_figure, plot_text, steps_figure
from taskscope.presenters.format import missing, records
from taskscope.web.app import mount_static
from taskscope.web.render import SHARED_FILTERS, SHARED_GLOBALS, WEB_DIR

TEMPLATES_DIR = Path(__file__).parent / "templates"
STATIC_DIR = Path(__file__).parent / "static"
FLEET_SCRIPTS = frozenset({"cluster.js"})
#: a login form posts a token and nothing else: anything longer is not one
MAX_LOGIN_BYTES = 4096
#: the worker samples' columns as the charts' legends name them
SAMPLE_LEGENDS = {"n_workers": "workers", "n_threads": "threads", "memory_used": "memory used",
                  "memory_total": "memory total"}
#: task-group states (see `taskscope.fleet.protocol`) shown as "done" and "erred"; the rest is "other"
DONE_STATE, ERRED_STATE = "memory", "erred"

_environment = jinja2.Environment(
    loader=jinja2.ChoiceLoader([jinja2.FileSystemLoader(TEMPLATES_DIR), jinja2.FileSystemLoader(WEB_DIR / "templates")]),
    autoescape=True, trim_blocks=True, lstrip_blocks=True, undefined=jinja2.StrictUndefined,
)
# the dashboard's base template and macros, which these pages extend, need theirs too
_environment.filters.update(SHARED_FILTERS, json_text=lambda value: json.dumps(value),
                            outcomes=lambda states: group_outcomes(states), size=lambda n: byte_size(n),
                            code_lines=lambda frame: code_lines(frame))
_environment.globals.update(SHARED_GLOBALS)

router = APIRouter()


def page(template: str, context: dict, status_code: int = 200, headers: dict | None = None) -> HTMLResponse:
    """An HTML page from a fleet template."""
    return HTMLResponse(_environment.get_template(template).render(**context), status_code=status_code,
                        headers=headers)


def install(app: FastAPI) -> None:
    """Add the pages, the login form, the fleet's scripts and the shared static files (style, Plotly) to `app`."""
    app.include_router(router)
    mount_static(app)


@router.get("/fleet-static/{name}", include_in_schema=False)
def fleet_script(name: str) -> FileResponse:
    # the fleet pages' own scripts, files rather than inline (the Content-Security-Policy allows no inline script)
    if name not in FLEET_SCRIPTS:
        raise HTTPException(404, "no such file")
    return FileResponse(STATIC_DIR / name, media_type="text/javascript", headers={"Cache-Control": "max-age=3600"})


def login_refusal(request: Request) -> HTMLResponse:
    """What a visitor without a valid session gets instead of a page: the login form, status 401."""
    return page("fleet_login.html", {"title": "Log in", "caller": None, "error": None}, status_code=401)


@router.get("/login", include_in_schema=False)
def login_form():
    return page("fleet_login.html", {"title": "Log in", "caller": None, "error": None})


@router.post("/login", include_in_schema=False)
async def login(request: Request):
    """Log in with a token from this site's form; past `security.MAX_FAILED_LOGINS` failures a minute
    from one client, further failures are answered 429 (a valid token is always accepted)."""
    if not same_origin(request.headers, request.url):
        return page("fleet_login.html", {"title": "Log in", "caller": None,
                                         "error": "log in from this server's own login form"}, status_code=403)
    body = await request.body()
    token = (parse_qs(body[:MAX_LOGIN_BYTES].decode("utf-8", "replace")).get("token") or [""])[0].strip()
    if request.app.state.db.account_for_token(token) is None:
        failures, client = request.app.state.failed_logins, request.client.host if request.client else "?"
        if failures.limited(client):
            return page("fleet_login.html", {"title": "Log in", "caller": None,
                                             "error": "too many failed logins from here: wait a minute"},
                        status_code=429, headers={"Retry-After": str(failures.retry_after(client))})
        failures.add(client)
        return page("fleet_login.html", {"title": "Log in", "caller": None, "error": "unknown or revoked token"},
                    status_code=401)
    response = RedirectResponse("/", status_code=303)
    response.set_cookie(SESSION_COOKIE, token, httponly=True, samesite="strict",
                        secure=request.url.scheme == "https", max_age=30 * 86400)
    return response


@router.post("/logout", include_in_schema=False)
def logout(request: Request):
    if not same_origin(request.headers, request.url):
        return page("fleet_error.html", {"title": "Refused", "caller": None,
                                         "message": "log out from this server's own pages"}, 403)
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE)
    return response


@router.get("/", include_in_schema=False)
def overview(request: Request, since: str = DEFAULT_SINCE, caller: Caller = Depends(page_caller)):
    db = request.app.state.db
    try:
        since_ts = reads.parse_since(since)
    except ValueError as exc:
        return since_refusal(caller, exc)
    weeks = reads.team_weeks(db, caller.account, since=since_ts)
    members = weeks.groupby("user_name", as_index=False)[
        ["clusters", "cluster_hours", "core_hours", "compute_hours", "cost"]].sum() if not weeks.empty else weeks
    weeks, members = with_durations(weeks), with_durations(members)
    charts = {
        "time": bar_figure(members.user_name.tolist() if not members.empty else [],
                           {"core-hours held (threads × wall time)": _values(members, "core_hours"),
                            "core-hours computing (task compute time)": _values(members, "compute_hours")},
                           "core-hours held against core-hours computing, per member", "core-hours", stacked=False),
        "cost": cost_heatmap(weeks, request.app.state.currency),
    }
    return page("fleet_overview.html", {"title": f"Team overview ({caller.account})", "caller": caller,
                                        "currency": request.app.state.currency,
                                        "since": since, "members": records(members), "weeks": records(weeks),
                                        "charts": charts})


@router.get("/clusters", include_in_schema=False)
def clusters_page(request: Request, since: str = DEFAULT_SINCE, user: str | None = None,
                  caller: Caller = Depends(page_caller)):
    try:
        since_ts = reads.parse_since(since)
    except ValueError as exc:
        return since_refusal(caller, exc)
    table = reads.clusters(request.app.state.db, caller.account, since=since_ts, user=user or None)
    return page("fleet_clusters.html", {"title": "Clusters", "caller": caller, "since": since, "user": user or "",
                                        "currency": request.app.state.currency,
                                        "clusters": records(table), "charts": None})


@router.get("/clusters/{cluster_id}", include_in_schema=False)
def cluster_page(request: Request, cluster_id: str, caller: Caller = Depends(page_caller)):
    db, account = request.app.state.db, caller.account
    try:
        found = reads.cluster(db, account, cluster_id)
    except LookupError as exc:
        return page("fleet_error.html", {"title": "Not found", "caller": caller, "message": str(exc)}, 404)
    computations = reads.computations(db, account, cluster_id)
    idle = reads.idle_intervals(db, account, cluster_id)
    samples = reads.worker_samples(db, account, cluster_id)
    samples = held_until(samples, found["stopped"]).astype("float64")
    samples[["memory_used", "memory_total"]] /= 2**30
    samples = samples.astype(object).where(samples.notna(), None)  # a missing value is a gap, never NaN in JSON
    samples = samples.rename(columns=SAMPLE_LEGENDS)
    charts = {
        "workers": steps_figure(samples[["ts", "workers", "threads"]], "workers and threads", "count"),
        "memory": steps_figure(samples[["ts", "memory used", "memory total"]], "memory", "GiB"),
        "timeline": timeline_figure(computations, idle, found),
    } if not samples.empty or computations or idle else {}
    return page("fleet_cluster.html", {
        "title": f"{found['kind']} cluster {found['name'] or cluster_id}", "caller": caller, "cluster": found,
        "currency": request.app.state.currency,
        "computations": computations, "shared_groups": shared_groups(computations), "idle": idle, "charts": charts,
        "exceptions": reads.exceptions(db, account, cluster_id=cluster_id),
        "events": reads.events(db, account, cluster_id),
        "changes": reads.worker_changes(db, account, cluster_id),
        "mismatches": reads.version_mismatches(db, account, cluster_id),
        "parsl_run": reads.parsl_run(db, account, cluster_id),
        "profiled": reads.profiled_computations(db, account, cluster_id),
    })


@router.get("/clusters/{cluster_id}/profile", include_in_schema=False)
def profile_page(request: Request, cluster_id: str, computation_id: str | None = None,
                 caller: Caller = Depends(page_caller)):
    db, account = request.app.state.db, caller.account
    try:
        found = reads.cluster(db, account, cluster_id)
    except LookupError as exc:
        return page("fleet_error.html", {"title": "Not found", "caller": caller, "message": str(exc)}, 404)
    profile = reads.profile(db, account, cluster_id, computation_id or None)
    subject = f"computation {computation_id}" if computation_id else f"cluster {found['name'] or cluster_id}"
    return page("fleet_profile.html", {
        "title": f"Profile of {subject}", "caller": caller, "cluster": found, "profile": profile,
        "figure": profiles.icicle_figure(profile["nodes"], "samples per frame (callers above callees)")})


def group_outcomes(states: dict[str, int] | None) -> dict:
    """A task group's ``states`` as the cluster page shows them: tasks done, erred, and the others by state.

    >>> group_outcomes({"memory": 7, "erred": 1, "processing": 2})
    {'done': 7, 'erred': 1, 'other': {'processing': 2}}
    """
    other = dict(states or {})
    return {"done": other.pop(DONE_STATE, 0), "erred": other.pop(ERRED_STATE, 0), "other": other}


def byte_size(count) -> str:
    """A byte count in binary units: bytes below 1 KiB, else KiB, MiB, GiB or TiB; empty when missing.

    >>> byte_size(2 * 2**30), byte_size(1856), byte_size(28)
    ('2.00 GiB', '1.81 KiB', '28 B')
    """
    if missing(count):
        return ""
    value, unit = float(count), "B"
    for bigger in ("KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024:
            break
        value, unit = value / 1024, bigger
    return f"{value:.0f} B" if unit == "B" else f"{value:.2f} {unit}"


def code_lines(frame: dict) -> list[tuple[int, str, bool]]:
    """A calling-code frame's lines as (line number in the file, text, is the calling line).

    The plugin sends the calling line's place within ``code`` (``code_lineno``, from 1) and in the
    file (``lineno``); frames from older plugins lack the first and get no mark.

    >>> code_lines({"code": "def f():\\n    x.compute()\\n", "lineno": 11, "code_lineno": 2})
    [(10, 'def f():', False), (11, '    x.compute()', True)]
    """
    marked, lineno = frame.get("code_lineno"), frame.get("lineno")
    first = lineno - marked + 1 if marked is not None and lineno is not None else None
    return [(first + index if first is not None else index + 1, text, index + 1 == marked)
            for index, text in enumerate((frame.get("code") or "").splitlines())]


def shared_groups(computations: list[dict]) -> set[str]:
    """Task-group names that appear in more than one computation (Dask reuses names such as
    ``finalize-hlgfinalizecompute`` across overlapping computations, so the counts mix them).

    >>> sorted(shared_groups([{"groups": [{"name": "a"}, {"name": "f"}]}, {"groups": [{"name": "f"}]}]))
    ['f']
    """
    seen: dict[str, int] = {}
    for computation in computations:
        for name in {group["name"] for group in computation["groups"]}:
            seen[name] = seen.get(name, 0) + 1
    return {name for name, count in seen.items() if count > 1}


def with_durations(frame: pd.DataFrame) -> pd.DataFrame:
    """`frame` as the overview's tables show it: hours also in seconds (``cluster_s``, ``compute_s``) for
    the `seconds` filter, the cost to 4 decimals as on the clusters page."""
    return frame.assign(cluster_s=frame.get("cluster_hours", 0.0) * 3600.0,
                        core_s=frame.get("core_hours", 0.0) * 3600.0,
                        compute_s=frame.get("compute_hours", 0.0) * 3600.0, cost=frame.get("cost", 0.0).round(4))


def held_until(samples: pd.DataFrame, stopped: float | None) -> pd.DataFrame:
    """The worker samples with the last one repeated at the cluster's stop, so the steps reach it."""
    if samples.empty or stopped is None or stopped <= samples.ts.iloc[-1]:
        return samples
    return pd.concat([samples, samples.tail(1).assign(ts=stopped)], ignore_index=True)


def cost_heatmap(weeks: pd.DataFrame, currency: str = "USD") -> dict:
    """Cost per member (rows) per week (columns), in `currency`, as a Plotly heat map."""
    layout = {"title": {"text": f"estimated cost ({plot_text(currency)}) per member per week"},
              "xaxis": {"title": {"text": "week starting (UTC)"}, "type": "category"},
              "yaxis": {"automargin": True}}
    if weeks.empty:
        return {"data": [], "layout": layout}
    grid = weeks.pivot_table(index="user_name", columns="week", values="cost", aggfunc="sum").fillna(0.0)
    return {"data": [{"type": "heatmap", "x": [str(w) for w in grid.columns],
                      "y": [plot_text(u) for u in grid.index], "z": grid.round(4).values.tolist(),
                      "colorscale": "Blues", "reversescale": True,  # plotly.js's Blues runs dark to light
                      "zmin": 0,  # a cost is never negative, also when every cell holds the same value
                      "hovertemplate": "%{y}, week of %{x}: %{z}<extra></extra>"}],
            "layout": layout}


def timeline_figure(computations: list[dict], idle: list[dict], found: dict) -> dict:
    """Computations and idle intervals on one time axis (an idle interval still open ends now)."""
    end = found["stopped"] or (found["started"] or 0) + (found["duration_s"] or 0)
    rows = [{"label": "computation " + str(c["computation_id"])[:12], "start_ts": c["start"],
             "end_ts": c["stop"] or end, "group": "computation"} for c in computations if c["start"] is not None]
    rows += [{"label": "idle", "start_ts": i["start"], "end_ts": i["stop"] or end, "group": "idle"} for i in idle]
    stages = pd.DataFrame(rows, columns=["label", "start_ts", "end_ts", "group"])
    return gantt_figure(stages.astype({"start_ts": "float64", "end_ts": "float64"}), "computations and idle time")


def since_refusal(caller: Caller, refused: ValueError) -> HTMLResponse:
    """The page for a `since` it cannot read (400): what `since` takes, never another period's data."""
    return page("fleet_error.html", {"title": "Bad since", "caller": caller, "message": str(refused)}, 400)


def _values(frame: pd.DataFrame, column: str) -> list:
    return [] if frame.empty else frame[column].fillna(0.0).round(4).tolist()
