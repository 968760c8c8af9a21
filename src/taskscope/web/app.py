"""The web app: one `Dashboard` (store, live ingest) shared by every page.

Reads and the live ingest share one DuckDB database in this process (DuckDB allows one
writing process per file): the ingest thread writes through the store's own connection, and
every request reads through a `cursor()` of it, a connection of its own that sees the last
committed ingest. The usage collector shares its connection the same way
(`taskscope usage collect --ui-port`, `BackgroundServer`). Pages run only parameterised SELECTs.
Without anything to ingest, the store is opened read-only.
"""

from __future__ import annotations

import errno
import ipaddress
import socket
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from http import HTTPStatus
from pathlib import Path

import duckdb
from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler, request_validation_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

import taskscope
from taskscope.analyses.runs import RunNotFound
from taskscope.store import Store
from taskscope.web.live import LiveIngest
from taskscope.web.render import STATIC_DIR, render

#: seconds between two live ingests
DEFAULT_INGEST_INTERVAL_S = 3.0


class Dashboard:
    """What the pages share: the store, the live ingest (if any), and a read connection per request.

    >>> dashboard = Dashboard(taskscope.open("run.duckdb", read_only=True))  # doctest: +SKIP
    >>> with dashboard.reader() as con: con.execute("SELECT count(*) FROM events").fetchall()  # doctest: +SKIP
    """

    def __init__(self, store: Store, live: LiveIngest | None = None, committed: Callable[[], int] | None = None):
        """`committed`, when another writer of this process (the usage collector) shares `store`:
        a count that grows with each of its commits, so cached pages follow what it stored."""
        self.store = store
        self.live = live
        self._committed = committed
        self._cursor_lock = threading.Lock()
        self._cache: OrderedDict[tuple, object] = OrderedDict()
        self._cache_lock = threading.Lock()

    @property
    def watching(self) -> bool:
        """True while new lines of the ingested folders are being read."""
        return self.live is not None and self.live.is_alive()

    @property
    def generation(self) -> int:
        """Grows whenever an ingest (or the writer sharing the store) added events (a cache key for
        anything derived)."""
        if self.live:
            return self.live.generation
        return self._committed() if self._committed else 0

    def cached(self, key: tuple, compute: Callable[[], object], size: int = 16):
        """`compute()`, remembered until an ingest adds events (the few last keys are kept)."""
        key = (self.generation, *key)
        with self._cache_lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        value = compute()
        with self._cache_lock:
            self._cache[key] = value
            while len(self._cache) > size:
                self._cache.popitem(last=False)
        return value

    def reader(self) -> "_Reader":
        """A read connection of its own for one request (a context manager)."""
        with self._cursor_lock:  # cursor() itself is not safe to call from two threads at once
            con = self.store.con.cursor()
        con.execute("SET TimeZone = 'UTC'")
        return _Reader(con)


class _Reader:
    def __init__(self, con: duckdb.DuckDBPyConnection):
        self.con = con

    def __enter__(self) -> duckdb.DuckDBPyConnection:
        return self.con

    def __exit__(self, *exc) -> None:
        self.con.close()


def read_connection(request: Request) -> Iterator[duckdb.DuckDBPyConnection]:
    """FastAPI dependency: a read connection for this request."""
    with request.app.state.dashboard.reader() as con:
        yield con


def create_app(dashboard: Dashboard) -> FastAPI:
    """The FastAPI app over `dashboard`: every page and its `/api/...` JSON twin.

    >>> app = create_app(Dashboard(taskscope.open("run.duckdb", read_only=True)))  # doctest: +SKIP
    """
    from taskscope.web.pages import ROUTERS

    app = FastAPI(title="taskscope", docs_url="/api/docs", redoc_url=None, openapi_url="/api/openapi.json")
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
    return app


def mount_static(app: FastAPI) -> None:
    """Serve /static (style, scripts) and /static/plotly.min.js on `app` (also used by the fleet server)."""

    @app.get("/static/plotly.min.js", include_in_schema=False)
    def plotly_js() -> FileResponse:
        # served straight from the installed plotly package: the same version the server uses
        return FileResponse(_plotly_js_path(), media_type="text/javascript",
                            headers={"Cache-Control": "public, max-age=86400"})

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")


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
    import plotly

    return Path(plotly.__file__).parent / "package_data" / "plotly.min.js"


def open_dashboard(store_path: str, paths: list[str] | None = None,
                   interval_s: float = DEFAULT_INGEST_INTERVAL_S, on_progress=None) -> Dashboard:
    """Open the store; with `paths`, ingest them now and keep ingesting in the background.

    >>> dashboard = open_dashboard("run.duckdb", ["runinfo/"])  # doctest: +SKIP
    """
    if not paths:
        return Dashboard(taskscope.open(store_path, read_only=True))
    store = taskscope.open(store_path)
    store.ingest(*paths, on_progress=on_progress)
    live = LiveIngest(store, paths, interval_s)
    live.start()
    return Dashboard(store, live)


def is_loopback(host: str) -> bool:
    """True if `host` (a name or an address) only ever resolves to loopback addresses."""
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(host, None)}
    except socket.gaierror:
        return False
    return bool(addresses) and all(ipaddress.ip_address(a.split("%")[0]).is_loopback for a in addresses)


class CannotListen(Exception):
    """The dashboard cannot listen where asked (the port is taken, the address is not this machine's)."""


def listen(host: str, port: int) -> socket.socket:
    """The dashboard's listening socket: bind it first, so that a taken port is reported before
    anything is ingested or announced (warns when `host` is not loopback; raises `CannotListen`).

    >>> serve(open_dashboard("run.duckdb"), sock=listen("127.0.0.1", 8080))  # doctest: +SKIP
    """
    warn_unless_loopback(host)
    try:
        return listen_tcp(host, port)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise CannotListen(f"port {port} on {host} is in use: stop what listens there "
                               "or choose another port with --port") from exc
        raise CannotListen(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc


def serve(dashboard: Dashboard, host: str = "127.0.0.1", port: int = 8080, sock: socket.socket | None = None) -> None:
    """Run the dashboard with uvicorn until interrupted, on `sock` (from `listen`) or else on
    `host:port` (warns when `host` is not loopback; raises `CannotListen`).

    >>> serve(open_dashboard("run.duckdb"), port=8080)  # doctest: +SKIP
    """
    import uvicorn

    try:
        sock = sock if sock is not None else listen(host, port)
        server = uvicorn.Server(uvicorn.Config(create_app(dashboard), log_level="warning"))
        server.run(sockets=[sock])
    except KeyboardInterrupt:
        pass
    finally:
        if sock is not None:
            sock.close()
        if dashboard.live:
            dashboard.live.stop()
        dashboard.store.close()


def warn_unless_loopback(host: str) -> None:
    """Warn on stderr that the dashboard (which has no login) is reachable from other machines."""
    if not is_loopback(host):
        print(f"warning: listening on {host}, not a loopback address: anyone who can reach this "
              "machine can read these logs (taskscope ui has no login)", file=sys.stderr)


def listen_tcp(host: str, port: int) -> socket.socket:
    """A TCP socket bound to `host:port` (port 0: any free port), for `BackgroundServer`; raises
    OSError at once when the port is taken, before anything else has started."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


class BackgroundServer:
    """The dashboard under uvicorn in a daemon thread of this process, e.g. next to the usage
    collector, whose store it then reads through cursors of the collector's own connection.

    >>> server = BackgroundServer(dashboard, listen_tcp("127.0.0.1", 8080)).start()  # doctest: +SKIP
    >>> server.stop()                                                               # doctest: +SKIP
    """

    def __init__(self, dashboard: Dashboard, sock: socket.socket):
        import uvicorn

        self.sock = sock
        self.address: tuple[str, int] = sock.getsockname()[:2]
        warn_unless_loopback(self.address[0])
        self.server = uvicorn.Server(uvicorn.Config(create_app(dashboard), log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]},
                                       name="taskscope-dashboard", daemon=True)

    def start(self, timeout_s: float = 30.0) -> "BackgroundServer":
        """Start serving; return once the server accepts connections."""
        self.thread.start()
        deadline = time.monotonic() + timeout_s
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the dashboard did not start on {self.address[0]}:{self.address[1]}")
            time.sleep(0.02)
        return self

    def stop(self, timeout_s: float = 30.0) -> None:
        """Finish the requests in progress, then stop serving."""
        self.server.should_exit = True
        self.thread.join(timeout_s)
        self.sock.close()


def serve_beside_collector(collector, sock: socket.socket) -> BackgroundServer:
    """Serve the web app over a running `taskscope.usage.collector.Collector`'s store, from its process.

    Pages read through cursors of the collector's connection and are cached until its next
    commit; the collector stops the server after its last commit. Its receiving thread never
    touches the store, so page queries never hold up a datagram.

    >>> server = serve_beside_collector(collector, listen_tcp("127.0.0.1", 8080))  # doctest: +SKIP
    """
    dashboard = Dashboard(collector.store, committed=lambda: collector.stats.commits)
    server = BackgroundServer(dashboard, sock).start()
    collector.before_close(server.stop)
    return server
