"""The web app: every page and its `/api/...` JSON twin over one `Dashboard`, the static
files, and the error pages (HTML for people, JSON under `/api/`)."""

from __future__ import annotations

import functools
import gzip
from http import HTTPStatus
from pathlib import Path

import plotly
from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler, request_validation_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from taskscope.analyses.runs import RunNotFound
from taskscope.web.dashboard import Dashboard
from taskscope.web.ids import RawRunSegment
from taskscope.web.pages import ROUTERS
from taskscope.web.render import PLOTLY_JS_URL, STATIC_DIR, render
from taskscope.web.api_schema import declare_error_replies
from taskscope.web.security import LoopbackHostsOnly, SecurityHeaders


def create_app(dashboard: Dashboard, loopback_only: bool = False) -> FastAPI:
    """The FastAPI app over `dashboard`: every page and its `/api/...` JSON twin. `loopback_only`
    (for a server listening on a loopback address) refuses requests naming another host
    (`LoopbackHostsOnly`).

    >>> app = create_app(Dashboard(taskscope.open("run.duckdb", read_only=True)))  # doctest: +SKIP
    """
    # no Swagger page: it needs inline scripts and a CDN, which the Content-Security-Policy forbids
    app = FastAPI(title="taskscope", docs_url=None, redoc_url=None, openapi_url="/api/openapi.json")
    app.add_middleware(SecurityHeaders)
    app.add_middleware(RawRunSegment)  # a run id may hold a slash: route on its segment as sent
    if loopback_only:
        app.add_middleware(LoopbackHostsOnly)
    app.state.dashboard = dashboard
    for router in ROUTERS:
        app.include_router(router)

    mount_static(app)

    @app.get("/favicon.ico", include_in_schema=False)
    def favicon() -> FileResponse:
        # browsers ask for it even though every page links /static/favicon.svg
        return FileResponse(STATIC_DIR / "favicon.svg", media_type="image/svg+xml")

    @app.exception_handler(RunNotFound)
    def run_not_found(request: Request, exc: RunNotFound):
        return _not_found(request, str(exc))

    @app.exception_handler(LookupError)
    def lookup_error(request: Request, exc: LookupError):
        return _not_found(request, str(exc))

    app.add_exception_handler(RequestValidationError, _bad_parameter)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    declare_error_replies(app)
    return app


def mount_static(app: FastAPI) -> None:
    """Serve /static (style, scripts) and plotly.js on `app` (also used by the fleet server):
    plotly.js at `PLOTLY_JS_URL`, named by its version so browsers keep it a year, and at the old
    /static/plotly.min.js for a day; gzip'd (4.8 MB as 1.5) to a client that accepts it."""

    @app.get(PLOTLY_JS_URL, include_in_schema=False)
    def plotly_js_versioned(request: Request) -> Response:
        return _plotly_js(request, "public, max-age=31536000, immutable")

    @app.get("/static/plotly.min.js", include_in_schema=False)
    def plotly_js(request: Request) -> Response:
        return _plotly_js(request, "public, max-age=86400")

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")


def _plotly_js(request: Request, cache_control: str) -> Response:
    """plotly.js from the installed plotly package (the same version the server uses), gzip'd
    when the client accepts it."""
    headers = {"Cache-Control": cache_control, "Vary": "Accept-Encoding"}
    if "gzip" in request.headers.get("accept-encoding", "").lower():
        return Response(_plotly_js_gzip(), media_type="text/javascript",
                        headers={**headers, "Content-Encoding": "gzip"})
    return FileResponse(_plotly_js_path(), media_type="text/javascript", headers=headers)


@functools.cache
def _plotly_js_gzip() -> bytes:
    """plotly.js gzip'd, made once per process (0.2 CPU seconds) and kept in memory."""
    return gzip.compress(_plotly_js_path().read_bytes(), compresslevel=9, mtime=0)


def _is_api(request: Request) -> bool:
    return request.url.path.startswith("/api/")


def _not_found(request: Request, message: str):
    if _is_api(request):
        return JSONResponse({"error": message}, status_code=404)
    return _error_page(request, 404, message)


def _error_page(request: Request, status_code: int, message: str) -> HTMLResponse:
    """The HTML error page: `message` (one sentence, escaped by the template) under the status's name."""
    return render(request, "error.html", {"title": _status_name(status_code), "message": message},
                  status_code=status_code)


def _status_name(status_code: int) -> str:
    try:
        return HTTPStatus(status_code).phrase
    except ValueError:
        return "Error"


async def _bad_parameter(request: Request, exc: RequestValidationError):
    """A path or query parameter of the wrong type or range: JSON 422 under /api/, else the error page (400)."""
    if _is_api(request):
        return await request_validation_exception_handler(request, exc)
    return _error_page(request, 400, explain_invalid(exc.errors()))


async def _http_error(request: Request, exc: StarletteHTTPException):
    """An unknown path (404) or another HTTP error: JSON under /api/, else the error page."""
    if _is_api(request):
        return await http_exception_handler(request, exc)
    message = f"There is no page at {request.url.path}." if exc.status_code == 404 else f"{exc.detail}."
    response = _error_page(request, exc.status_code, message)
    response.headers.update(exc.headers or {})  # e.g. Allow on 405
    return response


def explain_invalid(errors: list[dict]) -> str:
    """The first of FastAPI's validation `errors` as one sentence for people.

    >>> explain_invalid([{"type": "int_parsing", "loc": ("query", "page"), "input": "abc",
    ...                   "msg": "Input should be a valid integer"}])
    'The query parameter page=abc is not valid: input should be a valid integer.'
    """
    first = errors[0] if errors else {}
    where, name = (tuple(first.get("loc", ())) + ("", ""))[:2]
    if first.get("type") == "missing":
        return f"The {where} parameter {name} is required."
    reason = str(first.get("msg", "invalid value"))
    return f"The {where} parameter {name}={first.get('input')} is not valid: {reason[:1].lower()}{reason[1:]}."


def _plotly_js_path() -> Path:
    return Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
